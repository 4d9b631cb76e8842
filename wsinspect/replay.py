"""Replaying a recorded session on a new WebSocket connection, and comparing the answers.

mitmproxy cannot replay WebSocket sessions (upstream #5248); wsinspect opens a fresh
connection with wsproto over asyncio streams (TLS for wss), sends the recorded client messages
again and records what the server answers as a new session whose first hop has `replay_of` set
to the original session's id.

The Python API, for the app and scripts:

    plan = ReplayPlan.from_store(store, session_id, to=None, drop_headers=())
    result = await replay(plan, store, via=ProxyRoute.for_engine(engine), timing="fast")
    result.session       # the new session, in `store`
    result.comparison    # Comparison: .matched, .counts(), .entries, .lines()

- `via`: a `ProxyRoute` sends the replay through a running wsinspect proxy (HTTP CONNECT to a
  regular-mode listener), whose recorder records it into `store` like any session; None
  connects straight to the server and the replay records itself (hop mode "direct").
- `timing`: "fast" sends the messages back to back; "original" keeps their recorded spacing.
- `deadline`: seconds the whole replay may take (connecting, sending, listening); a server
  that keeps the connection busy (pings forever, answers endlessly) cannot keep it running.
  Default `DEFAULT_DEADLINE`, plus the recorded span of the client's messages for
  `timing="original"`.
- Errors (server gone, TLS failure, timeout, upgrade refused, the deadline passed) raise
  `ReplayError` with a one-line message. A refused upgrade is still recorded as a rejected
  session.
- An answer larger than the store's `max_payload` is kept as the proxy keeps it: the first
  `max_payload` bytes, its size and the SHA-256 of the whole, never buffered whole.

The request repeats the original's headers: a fresh Sec-WebSocket-Key, the hop-by-hop headers
(Connection, Upgrade, Proxy-*, …) rebuilt, cookies and authorization kept unless dropped
(`drop_headers`, `CREDENTIAL_HEADERS`).

How original and replay are compared (`compare`): only the server's text and binary messages
count (ping, pong and close frames do not, nor messages wsinspect injected), each taken as its
type plus payload (its size and SHA-256 when it was stored capped). The two
sequences are aligned in order by their longest runs of identical messages (Python's difflib);
between two runs, messages are paired in order as "differ", and the ones left over are "missing"
(only in the original) or "extra" (only in the replay). The answers match when every entry does.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import wsproto
import wsproto.events as ws_events
from wsproto.extensions import PerMessageDeflate
from wsproto.connection import ConnectionState
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .http_rules import (
    WEBSOCKET_HANDSHAKE,
    authority,
    close_payload,
    end_to_end,
    header_tokens,
    header_values,
    parse_head,
    parse_status_line,
    ws_url,
)
from .model import Close, Hop, Message, MessageType, Outcome, Session
from .report import printable
from .store import SessionStore

CREDENTIAL_HEADERS = ("Cookie", "Authorization")
TIMINGS = ("fast", "original")
DEFAULT_TIMEOUT = 10.0  # connecting and the upgrade
DEFAULT_ANSWER_WAIT = 3.0  # silence after which no more answers are expected
DEFAULT_DEADLINE = 60.0  # the whole replay, plus the recorded span with timing "original"

# Made anew by each connection, beside the hop-by-hop headers.
_REBUILT_HEADERS = ("host", "content-length", *WEBSOCKET_HANDSHAKE)
_DATA_TYPES = (MessageType.TEXT, MessageType.BINARY)
_SETTLE = 0.25  # once all expected answers are in, how long to listen for extra ones
_CLOSE_WAIT = 2.0


class ReplayError(Exception):
    """The replay could not run; the message says why in plain words, in one line."""


# ----- what to send -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where a replay connects: the WebSocket server, and the Host header it is sent."""

    secure: bool
    host: str
    port: int
    resource: str  # path and query
    host_header: str

    @property
    def url(self) -> str:
        return ws_url(self.secure, self.host, self.port, self.resource)

    @classmethod
    def parse(cls, url: str, host_header: str | None = None, resource: str | None = None):
        """A ws:// or wss:// URL (http/https also accepted); `resource` replaces its path when
        the URL has none."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ReplayError(f"{url!r} is not a ws:// or wss:// URL")
        secure = parts.scheme in ("wss", "https")
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError:
            raise ReplayError(f"{url!r} has an invalid port") from None
        own = parts.path + (f"?{parts.query}" if parts.query else "")
        return cls(
            secure=secure,
            host=parts.hostname,
            port=port,
            resource=own if own or resource is None else resource,
            host_header=host_header or parts.netloc.rpartition("@")[2],
        )


def rebuilt_headers(
    headers: Sequence[tuple[str, str]], drop: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """The original request's end-to-end headers, in order, without those named in `drop` and
    those that each connection makes anew (hop-by-hop ones, including any that the original
    Connection header listed, and the handshake's)."""
    return end_to_end(headers, drop=(*_REBUILT_HEADERS, *drop))


@dataclass
class ReplayPlan:
    """A recorded session turned into what a replay sends."""

    original: Session
    target: Target
    headers: list[tuple[str, str]]
    subprotocols: list[str]
    deflate: bool  # the original client offered permessage-deflate
    client_messages: list[Message]  # text, binary and ping, in order
    client_close: tuple[int, str] | None  # the close frame the original client sent, if any
    original_answers: list[Message]  # the original server's text and binary messages
    time_origin: float  # the moment the original messages' spacing is measured from

    def span(self) -> float:
        """Seconds from `time_origin` to the last client message: how long sending takes with
        the original timing."""
        if not self.client_messages:
            return 0.0
        return max(0.0, self.client_messages[-1].timestamp - self.time_origin)

    @classmethod
    def from_store(
        cls,
        store: SessionStore,
        session_id: int,
        *,
        to: str | None = None,
        drop_headers: Sequence[str] = (),
    ) -> ReplayPlan:
        try:
            session = store.session(session_id)
        except KeyError:
            raise ReplayError(f"there is no session #{session_id} in the capture") from None
        hop = session.first_hop
        original_host = next(iter(header_values(hop.request_headers, "Host")), None)
        if to:
            target = Target.parse(to, resource=Target.parse(hop.url).resource)
        else:
            target = Target.parse(hop.url, host_header=original_host)
        client_messages: list[Message] = []
        client_close = None
        for message in store.iter_messages(hop.id):
            if not message.from_client:
                continue
            if message.type in (*_DATA_TYPES, MessageType.PING):
                if message.truncated:
                    raise ReplayError(
                        f"client message {message.index} was stored truncated "
                        f"({len(message.payload)} of {message.size} bytes); it cannot be resent"
                    )
                client_messages.append(message)
            elif message.type is MessageType.CLOSE and client_close is None:
                client_close = message.close_code_reason()
        return cls(
            original=session,
            target=target,
            headers=rebuilt_headers(hop.request_headers, drop_headers),
            subprotocols=header_tokens(hop.request_headers, "Sec-WebSocket-Protocol"),
            deflate=any(
                t.split(";")[0].strip() == "permessage-deflate"
                for t in header_tokens(hop.request_headers, "Sec-WebSocket-Extensions")
            ),
            client_messages=client_messages,
            client_close=client_close if client_close and client_close[0] else None,
            original_answers=server_answers(store, session_id),
            time_origin=hop.timestamp_response or hop.timestamp_start,
        )


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    """A wsinspect proxy to replay through: a regular-mode listener and the CA it signs with."""

    address: tuple[str, int]
    cafile: Path

    @classmethod
    def for_engine(cls, engine) -> ProxyRoute:
        for spec, addrs in engine.servers():
            if spec.split("@")[0] == "regular" and addrs:
                host, port = addrs[0][:2]
                if host in ("", "0.0.0.0", "::"):
                    host = "::1" if host == "::" else "127.0.0.1"
                cafile = Path(engine.confdir).expanduser() / "mitmproxy-ca-cert.pem"
                return cls((host, port), cafile)
        raise ReplayError(
            "the proxy has no regular-mode listener to replay through; replay directly"
        )


# ----- comparing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComparedMessage:
    status: str  # "match", "differ", "missing" or "extra"
    original: Message | None
    replay: Message | None


@dataclass
class Comparison:
    entries: list[ComparedMessage] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return all(e.status == "match" for e in self.entries)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("match", "differ", "missing", "extra"), 0)
        for entry in self.entries:
            counts[entry.status] += 1
        return counts

    def lines(self) -> list[str]:
        """The comparison for people: one line per message that did not match, and a total."""
        lines = []
        for entry in self.entries:
            if entry.status == "differ":
                lines.append(
                    f"  ~ original #{entry.original.index} {preview(entry.original)}  "
                    f"replay #{entry.replay.index} {preview(entry.replay)}"
                )
            elif entry.status == "missing":
                lines.append(
                    f"  - missing: original #{entry.original.index} {preview(entry.original)}"
                )
            elif entry.status == "extra":
                lines.append(f"  + extra: replay #{entry.replay.index} {preview(entry.replay)}")
        counts = self.counts()
        verdict = "the server's answers matched" if self.matched else "the server's answers differ"
        lines.append(
            f"{verdict}: {counts['match']} match, {counts['differ']} differ, "
            f"{counts['missing']} missing, {counts['extra']} extra"
        )
        return lines


def preview(message: Message, limit: int = 60) -> str:
    if message.type is MessageType.TEXT:
        text = message.text()
        shown = printable(text[:limit]) + ("…" if len(text) > limit else "")
        return f'text "{shown}"'
    shown = message.payload[: limit // 2].hex(" ")
    return f"binary {message.size} B [{shown}{' …' if message.size > limit // 2 else ''}]"


def _identity(message: Message) -> tuple:
    digest = message.sha256 or hashlib.sha256(message.payload).hexdigest()
    return message.type, message.size, digest


def server_answers(store: SessionStore, session_id: int) -> list[Message]:
    """A session's text and binary messages from the server (its first hop's); not those
    wsinspect injected towards the client, which no server sent."""
    hop = store.session(session_id).first_hop
    return [
        m for m in store.iter_messages(hop.id)
        if not m.from_client and m.type in _DATA_TYPES and not m.injected
    ]


def compare(original: Sequence[Message], replayed: Sequence[Message]) -> Comparison:
    """Align two sequences of server messages (see the module docstring for the rule)."""
    matcher = difflib.SequenceMatcher(
        None, [_identity(m) for m in original], [_identity(m) for m in replayed], autojunk=False
    )
    entries = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pairs = zip(original[i1:i2], replayed[j1:j2])
            entries += [ComparedMessage("match", a, b) for a, b in pairs]
            continue
        paired = min(i2 - i1, j2 - j1)
        entries += [
            ComparedMessage("differ", original[i1 + k], replayed[j1 + k]) for k in range(paired)
        ]
        entries += [ComparedMessage("missing", m, None) for m in original[i1 + paired : i2]]
        entries += [ComparedMessage("extra", None, m) for m in replayed[j1 + paired : j2]]
    return Comparison(entries)


# ----- the connection -----------------------------------------------------------------------


@dataclass
class ReplayResult:
    session: Session
    comparison: Comparison


async def _read_head(reader: asyncio.StreamReader, what: str) -> tuple[bytes, bytes]:
    """Read an HTTP/1 message head; returns it and whatever came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await reader.read(65536)
        if not chunk:
            raise ReplayError(f"{what} closed the connection without answering")
        data += chunk
        if len(data) > 1024 * 1024:
            raise ReplayError(f"{what} sent an oversized answer")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _status_words(status_line: str) -> str:
    _, code, reason = parse_status_line(status_line)
    if code is None:
        return printable(status_line)
    return f"{code} {printable(reason)}".strip()


class _Replayer:
    def __init__(
        self,
        plan: ReplayPlan,
        store: SessionStore,
        via: ProxyRoute | None,
        timing: str,
        server_tls: ssl.SSLContext | None,
        timeout: float,
        answer_wait: float,
        deadline: float,
    ) -> None:
        if timing not in TIMINGS:
            raise ReplayError(f"unknown timing {timing!r}; use fast or original")
        self.plan = plan
        self.store = store
        self.via = via
        self.timing = timing
        self.server_tls = server_tls
        self.timeout = timeout
        self.answer_wait = answer_wait
        self.deadline = deadline
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.hop: Hop | None = None  # the replay's first hop, once it exists in the store
        self.answers = 0
        self.activity = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_by: str | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._incoming: _Incoming | None = None  # the server's message being received

    # Where the replay connects to, in words, for error messages.
    @property
    def _peer(self) -> str:
        target = self.plan.target
        return f"{target.host}:{target.port}"

    async def run(self) -> Session:
        try:
            async with asyncio.timeout(self.deadline):
                await self._converse()
        except TimeoutError:
            if not self.closed.is_set():
                passed = f"the replay's {self.deadline:g}s deadline passed"
                self._record_end(None, "", abnormal=passed)
            expected = len(self.plan.original_answers)
            raise ReplayError(
                f"the replay did not finish within its {self.deadline:g}s deadline "
                f"(--deadline SECONDS): {self._peer} kept the connection busy "
                f"({self.answers} answers, {expected} expected)"
            ) from None
        return await self._finished_session()

    async def _converse(self) -> None:
        reader, writer = await self._connect()
        self.writer = writer
        try:
            await self._handshake(reader)
            receiver = asyncio.create_task(self._receive(reader))
            try:
                await self._send_messages()
                await self._await_answers()
                await self._close()
            finally:
                receiver.cancel()
                try:
                    await receiver
                except asyncio.CancelledError:
                    pass
            if not self.closed.is_set():
                self._record_end(None, "", abnormal=f"{self._peer} did not answer the close")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        target = self.plan.target
        host, port = self.via.address if self.via else (target.host, target.port)
        what = f"the wsinspect proxy at {host}:{port}" if self.via else self._peer
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.timeout
            )
        except TimeoutError:
            raise ReplayError(f"timed out after {self.timeout:g}s connecting to {what}") from None
        except socket.gaierror as e:
            raise ReplayError(f"cannot resolve {host}: {e.strerror}") from None
        except ConnectionRefusedError:
            raise ReplayError(
                f"cannot connect to {what}: connection refused (is the server running?)"
            ) from None
        except OSError as e:
            raise ReplayError(f"cannot connect to {what}: {e.strerror or e}") from None
        try:
            if self.via:
                await self._tunnel(reader, writer)
            if target.secure:
                await self._start_tls(writer)
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _tunnel(self, reader, writer) -> None:
        target = authority(self.plan.target.host, self.plan.target.port)
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        try:
            head, body = await asyncio.wait_for(
                _read_head(reader, "the wsinspect proxy"), self.timeout
            )
        except TimeoutError:
            raise ReplayError(f"timed out after {self.timeout:g}s waiting for the proxy") from None
        status_line, _ = parse_head(head)
        _, status, _ = parse_status_line(status_line)
        if status == 407:
            raise ReplayError("the wsinspect proxy requires authentication; replay directly")
        if status != 200:
            # mitmproxy connects to the server on CONNECT and says in the body why it could not.
            said = printable(body.decode("utf-8", "replace").strip())
            if "Errno 111" in said or "refused" in said.lower():
                said = "connection refused (is the server running?)"
            raise ReplayError(
                f"the proxy could not reach {self._peer}: {_status_words(status_line)}"
                + (f": {said[:200]}" if said else "")
            )

    async def _start_tls(self, writer: asyncio.StreamWriter) -> None:
        if self.via:
            context = ssl.create_default_context(cafile=str(self.via.cafile))
        else:
            context = self.server_tls or ssl.create_default_context()
        try:
            await asyncio.wait_for(
                writer.start_tls(context, server_hostname=self.plan.target.host), self.timeout
            )
        except TimeoutError:
            raise ReplayError(
                f"timed out after {self.timeout:g}s in the TLS handshake with {self._peer}"
            ) from None
        except ssl.SSLCertVerificationError as e:
            raise ReplayError(
                f"TLS failure with {self._peer}: {e.verify_message or e.reason}"
            ) from None
        except (ssl.SSLError, ConnectionError) as e:
            detail = getattr(e, "reason", None) or str(e) or "the connection was closed"
            hint = " (does it speak TLS, with a certificate the proxy trusts?)" if self.via else ""
            raise ReplayError(f"TLS failure with {self._peer}: {detail}{hint}") from None

    async def _handshake(self, reader: asyncio.StreamReader) -> None:
        plan = self.plan
        request = ws_events.Request(
            host=plan.target.host_header,
            target=plan.target.resource,
            extra_headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in plan.headers],
            subprotocols=plan.subprotocols,
            extensions=[PerMessageDeflate()] if plan.deflate else [],
        )
        try:
            data = self.ws.send(request)
        except (LocalProtocolError, UnicodeEncodeError) as e:
            raise ReplayError(f"the recorded request headers cannot be sent again: {e}") from None
        started = time.time()
        self.writer.write(data)
        if not self.via:
            self._record_request(data, started)
        try:
            head, rest = await asyncio.wait_for(_read_head(reader, self._peer), self.timeout)
        except TimeoutError:
            self._record_failure(f"no answer to the upgrade within {self.timeout:g}s")
            raise ReplayError(
                f"timed out after {self.timeout:g}s waiting for {self._peer} to answer the upgrade"
            ) from None
        except (ReplayError, OSError) as e:
            self._record_failure(str(e))
            raise ReplayError(str(e)) from None
        status_line, headers = parse_head(head)
        if self.via:
            self._link_proxied_session()
        else:
            self._record_response(status_line, headers)
        try:
            self.ws.receive_data(head + b"\r\n\r\n" + rest)
            events = list(self.ws.events())
        except UnicodeError:  # wsproto reads the subprotocol and extensions as ASCII
            name, value = next(((k, v) for k, v in headers if not v.isascii()), ("a header", ""))
            shown = value.encode("latin-1").decode("utf-8", "replace")
            raise ReplayError(
                f"{self._peer} answered the upgrade with a header that is not ASCII: "
                f"{name}: {shown}"
            ) from None
        except (RemoteProtocolError, ValueError) as e:
            raise ReplayError(f"{self._peer} answered the upgrade wrongly: {e}") from None
        if self.via and self.hop.outcome is Outcome.FAILED:
            # mitmproxy answered for a server it could not reach; its recorder kept why.
            error = self.hop.error or "no answer"
            if any(word in error.lower() for word in ("tls", "ssl", "certificate", "handshake")):
                raise ReplayError(f"TLS failure with {self._peer}: {error}")
            raise ReplayError(f"the proxy could not reach {self._peer}: {error}")
        if not events or not isinstance(events[0], ws_events.AcceptConnection):
            raise ReplayError(f"{self._peer} refused the upgrade: {_status_words(status_line)}")
        self._handle(events[1:])

    # ----- messages -----

    async def _send_messages(self) -> None:
        started = time.monotonic()
        for message in self.plan.client_messages:
            if self.timing == "original":
                due = started + max(0.0, message.timestamp - self.plan.time_origin)
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.ws.state is not ConnectionState.OPEN:
                return  # the server closed early; the comparison shows what is missing
            if message.type is MessageType.TEXT:
                event = ws_events.TextMessage(data=message.text())
            elif message.type is MessageType.BINARY:
                event = ws_events.BytesMessage(data=message.payload)
            else:
                event = ws_events.Ping(payload=message.payload)
            self._send(event)
            try:
                await self.writer.drain()
            except OSError:
                return  # the connection is gone; the receiver records how it ended

    async def _await_answers(self) -> None:
        """Listen until the server closes, or goes quiet: `answer_wait` seconds before all the
        answers the original got are in, a moment after that (to see extra ones)."""
        while not self.closed.is_set():
            expected = len(self.plan.original_answers)
            quiet = _SETTLE if self.answers >= expected else self.answer_wait
            self.activity.clear()
            try:
                await asyncio.wait_for(self.activity.wait(), quiet)
            except TimeoutError:
                return

    async def _close(self) -> None:
        if self.ws.state is ConnectionState.OPEN:
            code, reason = self.plan.client_close or (1000, "")
            self.close_by = "client"
            self._send(ws_events.CloseConnection(code=code, reason=reason))
            try:
                await self.writer.drain()
                await asyncio.wait_for(self.closed.wait(), _CLOSE_WAIT)
            except (TimeoutError, OSError):
                pass

    def _send(self, event: ws_events.Event) -> None:
        self.writer.write(self.ws.send(event))
        self._record_sent(event)

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        try:
            while not self.closed.is_set():
                data = await reader.read(65536)
                self.ws.receive_data(data or None)
                self._handle(list(self.ws.events()))
                if not data:
                    break
        except (OSError, ssl.SSLError, RemoteProtocolError):
            pass
        if not self.closed.is_set():
            self._record_end(None, "", abnormal=f"the connection to {self._peer} was lost")
            self.closed.set()

    def _handle(self, events: list[ws_events.Event]) -> None:
        for event in events:
            if isinstance(event, (ws_events.TextMessage, ws_events.BytesMessage)):
                text = isinstance(event, ws_events.TextMessage)
                if self._incoming is None:
                    kind = MessageType.TEXT if text else MessageType.BINARY
                    self._incoming = _Incoming(kind, self.store.max_payload)
                self._incoming.add(event.data.encode() if text else bytes(event.data))
                if event.message_finished:
                    self.answers += 1
                    self._record_message(self._incoming.message())
                    self._incoming = None
                self.activity.set()
            elif isinstance(event, ws_events.Ping):
                self._record(False, MessageType.PING, bytes(event.payload))
                if self.ws.state is ConnectionState.OPEN:  # not once a close was sent
                    self._send(event.response())
            elif isinstance(event, ws_events.Pong):
                self._record(False, MessageType.PONG, bytes(event.payload))
            elif isinstance(event, ws_events.CloseConnection):
                self._record(False, MessageType.CLOSE, close_payload(event.code, event.reason or ""))
                if self.close_by is None:
                    self.close_by = "server"
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self._send(event.response())
                self._record_end(event.code, event.reason or "")
                self.closed.set()
                self.activity.set()

    # ----- recording -----
    # Through the proxy, its recorder records the replay and only the link is set here; a
    # direct replay records its own hop, from the client's side.

    def _link_proxied_session(self) -> None:
        sockname = self.writer.get_extra_info("sockname")
        for session in reversed(self.store.sessions()):
            hop = session.first_hop
            if hop.client_addr and tuple(hop.client_addr) == tuple(sockname[:2]):
                self.hop = hop
                hop.replay_of = self.plan.original.id
                self.store.hop_changed(hop)
                return
        raise ReplayError("the proxy did not record the replay's handshake")

    def _record_request(self, data: bytes, started: float) -> None:
        request_line, headers = parse_head(data)
        peer = self.writer.get_extra_info("peername")
        self.hop = Hop(
            mode="direct",
            url=self.plan.target.url,
            request_line=request_line,
            http_version="HTTP/1.1",
            request_headers=headers,
            timestamp_start=started,
            client_addr=tuple(self.writer.get_extra_info("sockname")[:2]),
            server_addr=tuple(peer[:2]) if peer else None,
            replay_of=self.plan.original.id,
        )
        self.store.add_hop(self.hop)

    def _record_response(self, status_line: str, headers: list[tuple[str, str]]) -> None:
        version, status, reason = parse_status_line(status_line)
        self.hop.answered(status, reason, headers, version, time.time())
        self.store.hop_changed(self.hop)

    def _record_failure(self, error: str) -> None:
        if self.via or self.hop is None:
            return
        self.hop.failed(error, time.time())
        self.store.hop_changed(self.hop)

    def _record_sent(self, event: ws_events.Event) -> None:
        if isinstance(event, ws_events.TextMessage):
            self._record(True, MessageType.TEXT, event.data.encode())
        elif isinstance(event, ws_events.BytesMessage):
            self._record(True, MessageType.BINARY, bytes(event.data))
        elif isinstance(event, (ws_events.Ping, ws_events.Pong)):
            kind = MessageType.PING if isinstance(event, ws_events.Ping) else MessageType.PONG
            self._record(True, kind, bytes(event.payload))
        elif isinstance(event, ws_events.CloseConnection):
            self._record(True, MessageType.CLOSE, close_payload(event.code, event.reason or ""))

    def _record(self, from_client: bool, kind: MessageType, payload: bytes) -> None:
        self._record_message(
            Message(from_client=from_client, type=kind, size=len(payload), payload=payload,
                    timestamp=time.time())
        )

    def _record_message(self, message: Message) -> None:
        if self.via or self.hop is None:
            return
        self.store.add_message(self.hop, message)

    def _record_end(self, code: int | None, reason: str, abnormal: str | None = None) -> None:
        if self.via or self.hop is None:
            return
        by, now = self.close_by or "server", time.time()
        self.hop.ended(
            Close.lost(by, now, abnormal)
            if abnormal
            else Close(code=code, reason=reason, by=by, timestamp=now)
        )
        self.store.hop_changed(self.hop)

    async def _finished_session(self) -> Session:
        """The replay's session, once the recorder has seen it end."""
        session = self.store.session(self.hop.session_id)
        deadline = time.monotonic() + _CLOSE_WAIT
        while session.outcome is Outcome.OPEN and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return session


class _Incoming:
    """A server message arriving in fragments, kept as the proxy keeps one: its first `keep`
    bytes, its size and the SHA-256 of the whole."""

    def __init__(self, kind: MessageType, keep: int) -> None:
        self.kind = kind
        self.keep = keep
        self.prefix = bytearray()
        self.size = 0
        self.sha256 = hashlib.sha256()

    def add(self, data: bytes) -> None:
        self.size += len(data)
        self.sha256.update(data)
        if len(self.prefix) < self.keep:
            self.prefix += data[: self.keep - len(self.prefix)]

    def message(self) -> Message:
        capped = self.size > len(self.prefix)
        return Message(
            from_client=False, type=self.kind, size=self.size, payload=bytes(self.prefix),
            timestamp=time.time(), sha256=self.sha256.hexdigest() if capped else None,
        )


async def replay(
    plan: ReplayPlan,
    store: SessionStore,
    *,
    via: ProxyRoute | None,
    timing: str = "fast",
    server_tls: ssl.SSLContext | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    answer_wait: float = DEFAULT_ANSWER_WAIT,
    deadline: float | None = None,
) -> ReplayResult:
    """Replay `plan` and record it into `store`; `server_tls` verifies the server on a direct
    wss replay (default: the system's CAs). `deadline`: see the module docstring."""
    if deadline is None:
        deadline = DEFAULT_DEADLINE + (plan.span() if timing == "original" else 0.0)
    session = await _Replayer(
        plan, store, via, timing, server_tls, timeout, answer_wait, deadline
    ).run()
    return ReplayResult(session, compare(plan.original_answers, server_answers(store, session.id)))
