"""The domain model: sessions, the hops that saw them, their messages and how they ended.

Pure data, no I/O and no UI: the recorder fills it, the store persists it, the report and the
app read it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum

# Header lookup is defined with the other HTTP rules; modules reading the model import it here
# too, as they always have.
from .http_rules import (  # noqa: F401
    close_code_reason,
    header_tokens,
    header_value,
    header_values,
)


class MessageType(str, Enum):
    TEXT = "text"
    BINARY = "binary"
    PING = "ping"
    PONG = "pong"
    CLOSE = "close"


class Outcome(str, Enum):
    """How a handshake turned out, as the client on that hop experienced it."""

    OPEN = "open"  # handshake in progress or WebSocket live
    CLOSED = "closed"  # WebSocket ended (cleanly or not, see Close)
    REJECTED = "rejected"  # upgrade answered with something other than 101
    FAILED = "failed"  # no answer at all: connection or TLS error


class Side(StrEnum):
    """Who did something to a WebSocket: one of its peers, or the proxy between them. A
    StrEnum, so it compares, formats and is written as its text ("client")."""

    CLIENT = "client"
    SERVER = "server"
    PROXY = "proxy"

    @classmethod
    def of(cls, from_client: bool) -> Side:
        return cls.CLIENT if from_client else cls.SERVER

    @property
    def peer(self) -> Side | None:
        """The other peer (None for the proxy)."""
        return {Side.CLIENT: Side.SERVER, Side.SERVER: Side.CLIENT}.get(self)


class ConnectionEnd(StrEnum):
    """How one side's TCP connection ended under the raw relay."""

    FIN = "fin"
    RESET = "reset"


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for_key(key: str) -> str:
    """The Sec-WebSocket-Accept value RFC 6455 derives from a Sec-WebSocket-Key."""
    digest = hashlib.sha1((key.strip() + WS_GUID).encode()).digest()
    return base64.b64encode(digest).decode()


# ----- validation of records read from files ---------------------------------------------------
#
# Everything a reader builds from a file (a capture, a HAR or flow file) is checked field by
# field against these rules before it reaches the store, so the rest of the program can trust
# that a status is an int and a payload is bytes. Values are described by type and size in
# errors, never quoted: they came from the file.

MAX_TIMESTAMP = 7_258_118_400.0  # 2200-01-01: later, negative or not finite is damage
MAX_COUNT = 1 << 53  # sizes, counts and ids: the largest a float still holds exactly
MAX_TEXT = 16 * 1024 * 1024  # one header value, URL or error text
MAX_MODE = 1000
MAX_SECONDS = 1e9  # a round-trip time, or a sum of them
MAX_VIOLATIONS = 100  # per hop; a peer that breaks every frame does not grow the record


class RecordError(ValueError):
    """A field of a record read from a file has the wrong type or is out of range; readers
    turn it into a CaptureError naming the file."""


Check = Callable[[object, str], None]


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _fail(what: str, problem: str) -> RecordError:
    return RecordError(f"{what} {problem}")


def integer(low: int, high: int) -> Check:
    def check(value: object, what: str) -> None:
        if type(value) is not int:
            raise _fail(what, f"is {_kind(value)}, not an integer")
        if not low <= value <= high:
            shown = str(value) if abs(value) < 10**20 else f"a {len(str(abs(value)))}-digit number"
            raise _fail(what, f"{shown} is out of range ({low} to {high})")

    return check


def timestamp(value: object, what: str) -> None:
    if type(value) not in (float, int):
        raise _fail(what, f"is {_kind(value)}, not a timestamp")
    if not 0 <= value <= MAX_TIMESTAMP:  # also false for NaN, infinities and huge integers
        raise _fail(what, "is not a timestamp between 1970 and 2200")


def text(value: object, what: str) -> None:
    if type(value) is not str:
        raise _fail(what, f"is {_kind(value)}, not text")
    if len(value) > MAX_TEXT:
        raise _fail(what, f"is {len(value)} characters long (at most {MAX_TEXT})")


def seconds(value: object, what: str) -> None:
    """A duration: a finite, non-negative number of seconds."""
    if type(value) not in (float, int):
        raise _fail(what, f"is {_kind(value)}, not a number of seconds")
    if not 0 <= value <= MAX_SECONDS:  # also false for NaN, infinities and huge integers
        raise _fail(what, "is not a duration in seconds")


def flag(value: object, what: str) -> None:
    if type(value) is not bool:
        raise _fail(what, f"is {_kind(value)}, not true or false")


def payload(value: object, what: str) -> None:
    if type(value) is not bytes:
        raise _fail(what, f"is {_kind(value)}, not bytes")


def mode(value: object, what: str) -> None:
    """A listener's mitmproxy mode spec: short printable text."""
    text(value, what)
    if not 0 < len(value) <= MAX_MODE or not value.isprintable():
        raise _fail(what, "is not a proxy mode (printable text, at most 1000 characters)")


def one_of(*allowed: object) -> Check:
    def check(value: object, what: str) -> None:
        if type(value) not in (type(a) for a in allowed) or value not in allowed:
            raise _fail(what, f"is not one of {', '.join(map(str, allowed))}")

    return check


def optional(inner: Check) -> Check:
    def check(value: object, what: str) -> None:
        if value is not None:
            inner(value, what)

    return check


def instance(cls: type) -> Check:
    def check(value: object, what: str) -> None:
        if not isinstance(value, cls):
            raise _fail(what, f"is {_kind(value)}, not {cls.__name__}")
        if hasattr(value, "validate"):
            value.validate()

    return check


def pair(first: Check, second: Check) -> Check:
    def check(value: object, what: str) -> None:
        if type(value) is not tuple or len(value) != 2:
            raise _fail(what, "is not a pair")
        first(value[0], what)
        second(value[1], what)

    return check


def header_list(value: object, what: str) -> None:
    if type(value) is not list:
        raise _fail(what, f"is {_kind(value)}, not a list of headers")
    for number, header in enumerate(value, start=1):
        pair(text, text)(header, f"{what} {number}")


def sha256(value: object, what: str) -> None:
    text(value, what)
    if len(value) != 64 or value.strip("0123456789abcdef"):
        raise _fail(what, "is not a SHA-256 in hex")


def list_of(inner: Check, most: int) -> Check:
    def check(value: object, what: str) -> None:
        if type(value) is not list:
            raise _fail(what, f"is {_kind(value)}, not a list")
        if len(value) > most:
            raise _fail(what, f"has {len(value)} items (at most {most})")
        for number, item in enumerate(value, start=1):
            inner(item, f"{what} {number}")

    return check


def counts_by_type(value: object, what: str) -> None:
    """A count of messages by MessageType value."""
    if type(value) is not dict:
        raise _fail(what, f"is {_kind(value)}, not an object")
    for kind, count in value.items():
        member(MessageType, kind, what)
        COUNT(count, f"{what} {kind}")


def check_fields(record: object, rules: dict[str, Check]) -> None:
    """Check each of `record`'s fields against its rule; the error names the first bad one."""
    what = type(record).__name__.lower()
    for name, rule in rules.items():
        rule(getattr(record, name), f"{what} {name}")


COUNT = integer(0, MAX_COUNT)
ID = integer(-1, MAX_COUNT)  # -1 until the store assigns one
PORT = integer(0, 65535)
CLOSE_CODE = integer(0, 65535)
ADDRESS = pair(text, PORT)


def member_or_text(cls: type[StrEnum]) -> Check:
    """A member of `cls`, or its text (a field set from a plain string)."""
    allowed = frozenset(cls)  # holds each member and its text

    def check(value: object, what: str) -> None:
        if type(value) not in (cls, str) or value not in allowed:
            raise _fail(what, f"is not one of {', '.join(cls)}")

    return check


def field_of(data: object, key: str, what: str, default: object = ...) -> object:
    """`data[key]` of a JSON object read from a file."""
    if type(data) is not dict:
        raise _fail(what, f"is {_kind(data)}, not an object")
    if key in data:
        return data[key]
    if default is ...:
        raise _fail(what, f"has no {key} field")
    return default


def tuple_of(value: object, what: str, length: int) -> tuple | None:
    """A JSON array of `length` items as a tuple (null stays None)."""
    if value is None:
        return None
    if type(value) not in (list, tuple) or len(value) != length:
        raise _fail(what, f"is not a list of {length}")
    return tuple(value)


def member(cls: type[Enum], value: object, what: str) -> Enum:
    """The member of `cls` whose value is the text `value`."""
    if type(value) is not str:
        raise _fail(what, f"is {_kind(value)}, not text")
    try:
        return cls(value)
    except ValueError:
        raise _fail(what, f"is not one of {', '.join(m.value for m in cls)}") from None


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
    # a message an intercept rule held: "forwarded", "edited" or "dropped", after `held` seconds
    intercept: str | None = None
    held: float | None = None

    @property
    def truncated(self) -> bool:
        return len(self.payload) < self.size

    def validate(self) -> None:
        check_fields(self, MESSAGE_FIELDS)
        if len(self.payload) > self.size:
            raise RecordError(f"message payload is longer than its size {self.size}")

    @property
    def direction(self) -> Side:
        return Side.of(self.from_client)

    def text(self) -> str:
        """The payload as text; invalid UTF-8 is shown with replacement characters."""
        return self.payload.decode("utf-8", errors="replace")

    def close_code_reason(self) -> tuple[int | None, str]:
        """Code and reason of a close frame's payload."""
        return close_code_reason(self.payload)


class CappedPayload:
    """A message's payload arriving in pieces, kept as a stored one is: its first `keep`
    bytes, its size and the SHA-256 of the whole (the relay's streamed messages, a replay's
    answers)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.prefix = bytearray()
        self.size = 0
        self.sha256 = hashlib.sha256()

    def add(self, data: bytes) -> None:
        self.size += len(data)
        self.sha256.update(data)
        if len(self.prefix) < self.keep:
            self.prefix += data[: self.keep - len(self.prefix)]

    def message(self, from_client: bool, type: MessageType, timestamp: float) -> Message:
        """The whole message; its SHA-256 identifies the payload when only a prefix is kept."""
        capped = self.size > len(self.prefix)
        return Message(
            from_client, type, self.size, bytes(self.prefix), timestamp,
            sha256=self.sha256.hexdigest() if capped else None,
        )


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

    def validate(self) -> None:
        check_fields(self, STATS_FIELDS)

    @classmethod
    def from_json(cls, data: dict) -> MessageStats:
        stats = cls(
            from_client=field_of(data, "from_client", "stats"),
            from_server=field_of(data, "from_server", "stats"),
            bytes=field_of(data, "bytes", "stats"),
            by_type=field_of(data, "by_type", "stats"),
            last_timestamp=field_of(data, "last_timestamp", "stats", None),
        )
        rtt = tuple_of(field_of(data, "rtt", "stats", None), "stats rtt", 4)
        if rtt is not None:  # captures from before pong RTTs were recorded have none
            stats.rtt_count, stats.rtt_total, stats.rtt_min, stats.rtt_max = rtt
        stats.validate()
        stats.by_type = dict(stats.by_type)
        return stats


@dataclass(slots=True)
class Violation:
    """A frame that breaks RFC 6455, as the raw relay saw (and passed on) it."""

    from_client: bool
    rule: str  # the section and the rule in words
    detail: str
    opcode: int | None
    timestamp: float

    @property
    def sender(self) -> Side:
        return Side.of(self.from_client)

    def to_json(self) -> dict:
        return {
            "from_client": self.from_client,
            "rule": self.rule,
            "detail": self.detail,
            "opcode": self.opcode,
            "timestamp": self.timestamp,
        }

    def validate(self) -> None:
        check_fields(self, VIOLATION_FIELDS)

    @classmethod
    def from_json(cls, data: dict) -> Violation:
        violation = cls(
            from_client=field_of(data, "from_client", "violation"),
            rule=field_of(data, "rule", "violation"),
            detail=field_of(data, "detail", "violation"),
            opcode=field_of(data, "opcode", "violation", None),
            timestamp=field_of(data, "timestamp", "violation"),
        )
        violation.validate()
        return violation


@dataclass(slots=True)
class Close:
    """How a WebSocket ended.

    `by` is "client", "server" or "proxy" (the proxy closes both sides when a frame breaks the
    protocol; `offender` then names the side that sent it). `abnormal` means one side vanished
    without a close frame (a reset, a crash, a timeout) and `abnormal_reason` says what
    happened. `told_client` and `told_server` are the close code and reason the proxy sent each
    side, which may differ from what happened: a survivor is told 1000 when its peer vanished.
    `client_sent`/`server_sent` are the close frames each side sent itself, and the `*_end`
    fields how each connection ended (see `end_of`, which gathers one side's view)."""

    code: int | None = None
    reason: str = ""
    by: Side | None = None
    abnormal: bool = False
    abnormal_reason: str | None = None
    timestamp: float | None = None
    offender: Side | None = None
    told_client: tuple[int | None, str] | None = None
    told_server: tuple[int | None, str] | None = None
    # Under the raw relay: how each side's connection ended (None: the proxy closed it,
    # passing on the other side's reset); each side received the other's.
    client_end: ConnectionEnd | None = None
    server_end: ConnectionEnd | None = None
    # The close frame (code, reason) each side sent itself, None for none; and how the proxy
    # ended each side's connection, None where it did not (that side ended it, or vanished).
    client_sent: tuple[int | None, str] | None = None
    server_sent: tuple[int | None, str] | None = None
    told_client_end: ConnectionEnd | None = None
    told_server_end: ConnectionEnd | None = None

    def __post_init__(self) -> None:
        # Text given (by producers, or read from a file) becomes the member it names; other
        # text is left for validate() to name.
        for name, cls in _CLOSE_ENUMS.items():
            value = getattr(self, name)
            if type(value) is str and value in frozenset(cls):
                setattr(self, name, cls(value))

    @classmethod
    def lost(
        cls, by: str, timestamp: float | None, reason: str | None = None, **more: object
    ) -> Close:
        """`by`'s side vanished without a close frame; `reason` says how, when more is known
        than that (`more`: other fields)."""
        return cls(
            by=by,
            abnormal=True,
            abnormal_reason=reason or f"the {by} connection was lost without a close frame",
            timestamp=timestamp,
            **more,
        )

    @property
    def survivor(self) -> Side | None:
        """The side that outlived the other: the one `by` did not name (None when the proxy
        ended it, or nobody is named)."""
        return Side(self.by).peer if self.by in frozenset(Side) else None

    def told(self, to: str) -> tuple[int | None, str] | None:
        """The close code and reason the proxy sent `to` ("client" or "server"), if any."""
        return self.told_client if to == Side.CLIENT else self.told_server

    def told_survivor(self) -> tuple[int | None, str] | None:
        """What the survivor was told: a survivor is told 1000 when its peer vanished."""
        survivor = self.survivor
        return self.told(survivor) if survivor else None

    def sent(self, by: str) -> tuple[int | None, str] | None:
        """The close frame `by` ("client" or "server") sent, if any. Captures from before
        each side's was recorded know the first one's: the close's code and reason."""
        recorded = self.client_sent if by == Side.CLIENT else self.server_sent
        if recorded is None and self.by == by and not self.abnormal:
            return (self.code, self.reason)
        return recorded

    def end_of(self, side: str) -> SideEnd:
        """How `side` ("client" or "server") saw the end."""
        client = side == Side.CLIENT
        return SideEnd(
            sent=self.sent(side),
            told=self.told(side),
            connection_end=self.client_end if client else self.server_end,
            told_connection_end=self.told_client_end if client else self.told_server_end,
        )

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
            "client_sent": list(self.client_sent) if self.client_sent else None,
            "server_sent": list(self.server_sent) if self.server_sent else None,
            "told_client_end": self.told_client_end,
            "told_server_end": self.told_server_end,
        }

    def validate(self) -> None:
        check_fields(self, CLOSE_FIELDS)

    @classmethod
    def from_json(cls, data: dict) -> Close:
        close = cls(
            code=field_of(data, "code", "close", None),
            reason=field_of(data, "reason", "close", ""),
            by=field_of(data, "by", "close", None),
            abnormal=field_of(data, "abnormal", "close", False),
            abnormal_reason=field_of(data, "abnormal_reason", "close", None),
            timestamp=field_of(data, "timestamp", "close", None),
            offender=field_of(data, "offender", "close", None),
            told_client=tuple_of(field_of(data, "told_client", "close", None), "close told_client", 2),
            told_server=tuple_of(field_of(data, "told_server", "close", None), "close told_server", 2),
            client_end=field_of(data, "client_end", "close", None),
            server_end=field_of(data, "server_end", "close", None),
            client_sent=tuple_of(field_of(data, "client_sent", "close", None), "close client_sent", 2),
            server_sent=tuple_of(field_of(data, "server_sent", "close", None), "close server_sent", 2),
            told_client_end=field_of(data, "told_client_end", "close", None),
            told_server_end=field_of(data, "told_server_end", "close", None),
        )
        close.validate()
        return close


_CLOSE_ENUMS = {
    "by": Side,
    "offender": Side,
    "client_end": ConnectionEnd,
    "server_end": ConnectionEnd,
    "told_client_end": ConnectionEnd,
    "told_server_end": ConnectionEnd,
}


@dataclass(frozen=True, slots=True)
class SideEnd:
    """How one side of a hop saw its WebSocket end: the close frame it sent and the one it was
    told (code, reason; None: none), how it ended its connection and how the proxy ended it
    (ConnectionEnd; None: not that way, or not known)."""

    sent: tuple[int | None, str] | None
    told: tuple[int | None, str] | None
    connection_end: ConnectionEnd | None
    told_connection_end: ConnectionEnd | None

    def to_json(self) -> dict:
        return {
            "sent": list(self.sent) if self.sent else None,
            "told": list(self.told) if self.told else None,
            "connection_end": self.connection_end,
            "told_connection_end": self.told_connection_end,
        }


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
    # The capture file this hop was read from, when several are lined up (wsinspect.lineup)
    capture: str | None = None
    id: int = -1  # assigned by the store
    session_id: int = -1  # assigned by the store

    @property
    def websocket_key(self) -> str | None:
        return header_value(self.request_headers, "Sec-WebSocket-Key")

    # ----- the life cycle ---------------------------------------------------------------------
    # A hop starts OPEN with its request. Then the handshake is answered (a 101 keeps it open,
    # anything else rejects it), refused by the proxy itself or fails without an answer; an
    # open WebSocket ends with a Close. Every producer (the recorder, replay, the readers of
    # files) moves a hop through these, so each outcome means the same wherever it came from.

    def answered(
        self,
        status: int | None,
        reason: str,
        headers: list[tuple[str, str]],
        http_version: str | None,
        timestamp: float,
        *,
        finished: float | None = None,
    ) -> None:
        """The handshake's answer arrived at `timestamp`; an answer other than 101 rejects the
        upgrade, and the hop ends when that answer was `finished` (default: `timestamp`)."""
        self.response_status = status
        self.response_reason = reason
        self.response_headers = headers
        self.response_http_version = http_version
        self.timestamp_response = timestamp
        if status != 101:
            self.outcome = Outcome.REJECTED
            self.timestamp_end = finished if finished is not None else timestamp

    def refused(self, reason: str, timestamp: float) -> None:
        """The proxy answered the request itself with a 400 (it could not pass it on)."""
        self.answered(400, "Bad Request", [], None, timestamp)
        self.answered_by = Side.PROXY.value  # stored as text, compared with Side.PROXY
        self.error = reason or "refused by the proxy"

    def failed(self, error: str | None, timestamp: float) -> None:
        """No answer came: the connection or TLS failed, or the server was unreachable."""
        self.outcome = Outcome.FAILED
        self.error = error
        self.timestamp_end = timestamp

    def errored(self, error: str, timestamp: float) -> None:
        """The connection broke with `error`: before an answer the hop failed; after one, its
        WebSocket ended without a close frame (unless how it closed is known already)."""
        if self.response_status is None:
            self.failed(error, timestamp)
            return
        self.error = error
        self.timestamp_end = timestamp
        self.outcome = Outcome.CLOSED
        if self.close is None:
            self.close = Close(abnormal=True, abnormal_reason=error, timestamp=timestamp)

    def ended(self, close: Close) -> None:
        """The WebSocket ended as `close` says, at its timestamp."""
        self.outcome = Outcome.CLOSED
        self.close = close
        self.timestamp_end = close.timestamp

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
            "capture": self.capture,
        }

    def validate(self) -> None:
        check_fields(self, HOP_FIELDS)

    @classmethod
    def from_json(cls, data: dict) -> Hop:
        """A hop from its JSON record, every field checked (RecordError when damaged)."""

        def get(key: str, default: object = ...) -> object:
            return field_of(data, key, "hop", default)

        def pairs(key: str) -> list:
            value = get(key, [])
            if type(value) is not list:
                raise _fail(f"hop {key}", f"is {_kind(value)}, not a list")
            return [tuple_of(item, f"hop {key}", 2) for item in value]

        def violations(value: object) -> list[Violation]:
            list_of(lambda item, what: None, MAX_VIOLATIONS)(value, "hop violations")
            return [Violation.from_json(item) for item in value]

        close = get("close", None)
        hop = cls(
            id=get("id"),
            session_id=get("session_id"),
            mode=get("mode"),
            url=get("url"),
            request_line=get("request_line"),
            http_version=get("http_version"),
            request_headers=pairs("request_headers"),
            timestamp_start=get("timestamp_start"),
            client_addr=tuple_of(get("client_addr", None), "hop client_addr", 2),
            server_addr=tuple_of(get("server_addr", None), "hop server_addr", 2),
            response_status=get("response_status", None),
            response_reason=get("response_reason", ""),
            response_headers=pairs("response_headers"),
            response_http_version=get("response_http_version", None),
            timestamp_response=get("timestamp_response", None),
            timestamp_end=get("timestamp_end", None),
            outcome=member(Outcome, get("outcome"), "hop outcome"),
            error=get("error", None),
            close=Close.from_json(close) if close is not None else None,
            stats=MessageStats.from_json(get("stats")),
            flow_id=get("flow_id", None),
            answered_by=get("answered_by", None),
            replay_of=get("replay_of", None),
            violations=violations(get("violations", [])),
            capture=get("capture", None),
        )
        hop.validate()
        return hop


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

    def end_of(self, side: str) -> SideEnd | None:
        """How one end of the whole path saw the WebSocket end: the client ("client", hop 1's
        client side) or the backend ("server", the last hop's server side)."""
        hop = self.first_hop if side == Side.CLIENT else self.hops[-1]
        return hop.close.end_of(side) if hop.close else None

    @property
    def stats(self) -> MessageStats:
        return self.first_hop.stats

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

    @property
    def ping_rtt(self) -> RttSummary | None:
        """Round-trip times of the pings answered on the first hop."""
        return self.stats.ping_rtt

    def duration(self, now: float) -> float:
        end = self.timestamp_end if self.timestamp_end is not None else now
        return max(0.0, end - self.timestamp_start)


# The rule for each field of each record; tests check that every field has one.
MESSAGE_FIELDS: dict[str, Check] = {
    "from_client": flag,
    "type": instance(MessageType),
    "size": COUNT,
    "payload": payload,
    "timestamp": timestamp,
    "injected": flag,
    "sha256": optional(sha256),
    "index": ID,
    "rtt": optional(seconds),
    "intercept": optional(one_of("forwarded", "edited", "dropped")),
    "held": optional(seconds),
}
STATS_FIELDS: dict[str, Check] = {
    "from_client": COUNT,
    "from_server": COUNT,
    "bytes": COUNT,
    "by_type": counts_by_type,
    "last_timestamp": optional(timestamp),
    "rtt_count": COUNT,
    "rtt_total": seconds,
    "rtt_min": optional(seconds),
    "rtt_max": optional(seconds),
}
VIOLATION_FIELDS: dict[str, Check] = {
    "from_client": flag,
    "rule": text,
    "detail": text,
    "opcode": optional(integer(0, 15)),
    "timestamp": timestamp,
}
CLOSE_FIELDS: dict[str, Check] = {
    "code": optional(CLOSE_CODE),
    "reason": text,
    "by": optional(member_or_text(Side)),
    "abnormal": flag,
    "abnormal_reason": optional(text),
    "timestamp": optional(timestamp),
    "offender": optional(member_or_text(Side)),
    "told_client": optional(pair(optional(CLOSE_CODE), text)),
    "told_server": optional(pair(optional(CLOSE_CODE), text)),
    "client_end": optional(member_or_text(ConnectionEnd)),
    "server_end": optional(member_or_text(ConnectionEnd)),
    "client_sent": optional(pair(optional(CLOSE_CODE), text)),
    "server_sent": optional(pair(optional(CLOSE_CODE), text)),
    "told_client_end": optional(member_or_text(ConnectionEnd)),
    "told_server_end": optional(member_or_text(ConnectionEnd)),
}
HOP_FIELDS: dict[str, Check] = {
    "mode": mode,
    "url": text,
    "request_line": text,
    "http_version": text,
    "request_headers": header_list,
    "timestamp_start": timestamp,
    "client_addr": optional(ADDRESS),
    "server_addr": optional(ADDRESS),
    "response_status": optional(integer(0, 999)),
    "response_reason": text,
    "response_headers": header_list,
    "response_http_version": optional(text),
    "timestamp_response": optional(timestamp),
    "timestamp_end": optional(timestamp),
    "outcome": instance(Outcome),
    "error": optional(text),
    "close": optional(instance(Close)),
    "stats": instance(MessageStats),
    "flow_id": optional(text),
    "answered_by": optional(text),
    "replay_of": optional(integer(1, MAX_COUNT)),
    "violations": list_of(instance(Violation), MAX_VIOLATIONS),
    "capture": optional(text),
    "id": ID,
    "session_id": ID,
}
