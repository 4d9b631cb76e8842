"""The domain model: sessions, the hops that saw them, their messages and how they ended.

Pure data, no I/O and no UI: the recorder fills it, the store persists it, the report and the
app read it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from enum import Enum


class MessageType(str, Enum):
    TEXT = "text"
    BINARY = "binary"
    PING = "ping"
    PONG = "pong"
    CLOSE = "close"


MAX_VIOLATIONS = 100  # per hop; a peer that breaks every frame does not grow the record


class Outcome(str, Enum):
    """How a handshake turned out, as the client on that hop experienced it."""

    OPEN = "open"  # handshake in progress or WebSocket live
    CLOSED = "closed"  # WebSocket ended (cleanly or not, see Close)
    REJECTED = "rejected"  # upgrade answered with something other than 101
    FAILED = "failed"  # no answer at all: connection or TLS error


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for_key(key: str) -> str:
    """The Sec-WebSocket-Accept value RFC 6455 derives from a Sec-WebSocket-Key."""
    digest = hashlib.sha1((key.strip() + WS_GUID).encode()).digest()
    return base64.b64encode(digest).decode()


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    lname = name.lower()
    return [v for k, v in headers if k.lower() == lname]


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    values = header_values(headers, name)
    return ", ".join(values) if values else None


def header_tokens(headers: list[tuple[str, str]], name: str) -> list[str]:
    """Comma-separated tokens of a header across all its lines, lower-cased."""
    return [
        token.strip().lower()
        for value in header_values(headers, name)
        for token in value.split(",")
        if token.strip()
    ]


@dataclass(slots=True)
class Message:
    """One WebSocket message (or control frame) as it passed one hop."""

    from_client: bool
    type: MessageType
    size: int  # full payload size on the wire, even when `payload` was capped
    payload: bytes
    timestamp: float
    injected: bool = False
    sha256: str | None = None  # set when the payload was capped, to identify the full one
    index: int = -1  # position within its hop, assigned by the store
    rtt: float | None = None  # a pong's: seconds since the ping it answers

    @property
    def truncated(self) -> bool:
        return len(self.payload) < self.size

    @property
    def direction(self) -> str:
        return "client" if self.from_client else "server"

    def text(self) -> str:
        """The payload as text; invalid UTF-8 is shown with replacement characters."""
        return self.payload.decode("utf-8", errors="replace")

    def close_code_reason(self) -> tuple[int | None, str]:
        """Code and reason of a close frame's payload."""
        if len(self.payload) < 2:
            return None, ""
        code = int.from_bytes(self.payload[:2], "big")
        return code, self.payload[2:].decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class RttSummary:
    """Round-trip times of a session's answered pings, in seconds."""

    count: int
    min: float
    mean: float
    max: float


@dataclass(slots=True)
class MessageStats:
    from_client: int = 0
    from_server: int = 0
    bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    last_timestamp: float | None = None
    rtt_count: int = 0
    rtt_total: float = 0.0
    rtt_min: float | None = None
    rtt_max: float | None = None

    @property
    def ping_rtt(self) -> RttSummary | None:
        if not self.rtt_count:
            return None
        return RttSummary(
            self.rtt_count, self.rtt_min, self.rtt_total / self.rtt_count, self.rtt_max
        )

    @property
    def count(self) -> int:
        return self.from_client + self.from_server

    def add(self, message: Message) -> None:
        if message.from_client:
            self.from_client += 1
        else:
            self.from_server += 1
        self.bytes += message.size
        self.by_type[message.type.value] = self.by_type.get(message.type.value, 0) + 1
        self.last_timestamp = message.timestamp
        if message.rtt is not None:
            self.rtt_count += 1
            self.rtt_total += message.rtt
            self.rtt_min = message.rtt if self.rtt_min is None else min(self.rtt_min, message.rtt)
            self.rtt_max = message.rtt if self.rtt_max is None else max(self.rtt_max, message.rtt)

    def to_json(self) -> dict:
        return {
            "from_client": self.from_client,
            "from_server": self.from_server,
            "bytes": self.bytes,
            "by_type": dict(self.by_type),
            "last_timestamp": self.last_timestamp,
            "rtt": [self.rtt_count, self.rtt_total, self.rtt_min, self.rtt_max],
        }

    @classmethod
    def from_json(cls, data: dict) -> MessageStats:
        return cls(
            from_client=data["from_client"],
            from_server=data["from_server"],
            bytes=data["bytes"],
            by_type=dict(data["by_type"]),
            last_timestamp=data.get("last_timestamp"),
            **dict(zip(("rtt_count", "rtt_total", "rtt_min", "rtt_max"), data.get("rtt", ()))),
        )


@dataclass(slots=True)
class Violation:
    """A frame that breaks RFC 6455, as the raw relay saw (and passed on) it."""

    from_client: bool
    rule: str  # the section and the rule in words
    detail: str
    opcode: int | None
    timestamp: float

    @property
    def sender(self) -> str:
        return "client" if self.from_client else "server"

    def to_json(self) -> dict:
        return {
            "from_client": self.from_client,
            "rule": self.rule,
            "detail": self.detail,
            "opcode": self.opcode,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_json(cls, data: dict) -> Violation:
        return cls(**data)


@dataclass(slots=True)
class Close:
    """How a WebSocket ended.

    `by` is "client", "server" or "proxy" (the proxy closes both sides when a frame breaks the
    protocol; `offender` then names the side that sent it). `abnormal` means one side vanished
    without a close frame (a reset, a crash, a timeout) and `abnormal_reason` says what
    happened. `told_client` and `told_server` are the close code and reason the proxy sent each
    side, which may differ from what happened: a survivor is told 1000 when its peer vanished."""

    code: int | None = None
    reason: str = ""
    by: str | None = None
    abnormal: bool = False
    abnormal_reason: str | None = None
    timestamp: float | None = None
    offender: str | None = None
    told_client: tuple[int | None, str] | None = None
    told_server: tuple[int | None, str] | None = None
    # Under the raw relay: how each side's connection ended, "fin" or "reset" (None: the
    # proxy closed it, passing on the other side's reset); each side received the other's.
    client_end: str | None = None
    server_end: str | None = None

    def to_json(self) -> dict:
        return {
            "code": self.code,
            "reason": self.reason,
            "by": self.by,
            "abnormal": self.abnormal,
            "abnormal_reason": self.abnormal_reason,
            "timestamp": self.timestamp,
            "offender": self.offender,
            "told_client": list(self.told_client) if self.told_client else None,
            "told_server": list(self.told_server) if self.told_server else None,
            "client_end": self.client_end,
            "server_end": self.server_end,
        }

    @classmethod
    def from_json(cls, data: dict) -> Close:
        close = cls(**data)
        close.told_client = tuple(close.told_client) if close.told_client else None
        close.told_server = tuple(close.told_server) if close.told_server else None
        return close


@dataclass(slots=True)
class Hop:
    """One listener's view of a session's handshake and traffic."""

    mode: str  # the listener's mitmproxy mode spec, e.g. "regular" or "reverse:http://…@8081"
    url: str
    request_line: str
    http_version: str
    request_headers: list[tuple[str, str]]  # wire order, original case
    timestamp_start: float
    client_addr: tuple[str, int] | None = None
    server_addr: tuple[str, int] | None = None
    response_status: int | None = None
    response_reason: str = ""
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_http_version: str | None = None
    timestamp_response: float | None = None
    timestamp_end: float | None = None
    outcome: Outcome = Outcome.OPEN
    error: str | None = None
    close: Close | None = None
    stats: MessageStats = field(default_factory=MessageStats)
    flow_id: str | None = None
    # "proxy" when this listener's proxy answered the handshake itself (it refused the request)
    answered_by: str | None = None
    replay_of: int | None = None  # the session this hop's session replays (wsinspect replay)
    # Frames that broke RFC 6455 (raw relay), the first MAX_VIOLATIONS of them
    violations: list[Violation] = field(default_factory=list)
    id: int = -1  # assigned by the store
    session_id: int = -1  # assigned by the store

    @property
    def websocket_key(self) -> str | None:
        return header_value(self.request_headers, "Sec-WebSocket-Key")

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "mode": self.mode,
            "url": self.url,
            "request_line": self.request_line,
            "http_version": self.http_version,
            "request_headers": [list(h) for h in self.request_headers],
            "timestamp_start": self.timestamp_start,
            "client_addr": list(self.client_addr) if self.client_addr else None,
            "server_addr": list(self.server_addr) if self.server_addr else None,
            "response_status": self.response_status,
            "response_reason": self.response_reason,
            "response_headers": [list(h) for h in self.response_headers],
            "response_http_version": self.response_http_version,
            "timestamp_response": self.timestamp_response,
            "timestamp_end": self.timestamp_end,
            "outcome": self.outcome.value,
            "error": self.error,
            "close": self.close.to_json() if self.close else None,
            "stats": self.stats.to_json(),
            "flow_id": self.flow_id,
            "answered_by": self.answered_by,
            "replay_of": self.replay_of,
            "violations": [v.to_json() for v in self.violations],
        }

    @classmethod
    def from_json(cls, data: dict) -> Hop:
        return cls(
            id=data["id"],
            session_id=data["session_id"],
            mode=data["mode"],
            url=data["url"],
            request_line=data["request_line"],
            http_version=data["http_version"],
            request_headers=[(k, v) for k, v in data["request_headers"]],
            timestamp_start=data["timestamp_start"],
            client_addr=tuple(data["client_addr"]) if data.get("client_addr") else None,
            server_addr=tuple(data["server_addr"]) if data.get("server_addr") else None,
            response_status=data.get("response_status"),
            response_reason=data.get("response_reason", ""),
            response_headers=[(k, v) for k, v in data.get("response_headers", [])],
            response_http_version=data.get("response_http_version"),
            timestamp_response=data.get("timestamp_response"),
            timestamp_end=data.get("timestamp_end"),
            outcome=Outcome(data["outcome"]),
            error=data.get("error"),
            close=Close.from_json(data["close"]) if data.get("close") else None,
            stats=MessageStats.from_json(data["stats"]),
            flow_id=data.get("flow_id"),
            answered_by=data.get("answered_by"),
            replay_of=data.get("replay_of"),
            violations=[Violation.from_json(v) for v in data.get("violations", [])],
        )


@dataclass(slots=True)
class Session:
    """One logical WebSocket conversation, seen by one or more hops (hop 1 is client-most).

    What the session "is" (URL, status, outcome, close) is what its client experienced, so it
    is read from the first hop; the messages shown are those of the first hop too."""

    id: int
    hops: list[Hop] = field(default_factory=list)

    @property
    def first_hop(self) -> Hop:
        return self.hops[0]

    @property
    def url(self) -> str:
        return self.first_hop.url

    @property
    def outcome(self) -> Outcome:
        return self.first_hop.outcome

    @property
    def status(self) -> int | None:
        return self.first_hop.response_status

    @property
    def close(self) -> Close | None:
        return self.first_hop.close

    @property
    def stats(self) -> MessageStats:
        return self.first_hop.stats

    @property
    def ping_rtt(self) -> RttSummary | None:
        """Round-trip times of the pings answered on the first hop."""
        return self.stats.ping_rtt

    @property
    def replay_of(self) -> int | None:
        """The id of the session this one replays, if it is a replay."""
        return self.first_hop.replay_of

    @property
    def timestamp_start(self) -> float:
        return min(h.timestamp_start for h in self.hops)

    @property
    def timestamp_end(self) -> float | None:
        return self.first_hop.timestamp_end

    @property
    def last_activity(self) -> float:
        times = [self.timestamp_start]
        for hop in self.hops:
            times += [
                t
                for t in (hop.timestamp_response, hop.timestamp_end, hop.stats.last_timestamp)
                if t is not None
            ]
        return max(times)

    def duration(self, now: float) -> float:
        end = self.timestamp_end if self.timestamp_end is not None else now
        return max(0.0, end - self.timestamp_start)
