"""The replay's client: a wsproto WebSocket over asyncio streams (TLS for wss), straight to the
server or through a wsinspect proxy's CONNECT, that sends a plan's messages, listens for the
answers and closes, recording through wsinspect.replay.recording."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import wsproto
import wsproto.events as ws_events
from wsproto.connection import ConnectionState
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..errors import ReplayError
from ..http_rules import authority, close_payload, parse_head, parse_status_line
from ..model import CappedPayload, MessageType, Outcome, Session
from ..store import SessionStore
from ..text import printable
from .compare import Comparison, compare
from .plan import TIMINGS, ReplayPlan, server_answers
from .recording import CLOSE_WAIT, ReplayRecording

DEFAULT_TIMEOUT = 10.0  # connecting and the upgrade
DEFAULT_ANSWER_WAIT = 3.0  # silence after which no more answers are expected
DEFAULT_DEADLINE = 60.0  # the whole replay, plus the recorded span with timing "original"
_SETTLE = 0.25  # once all expected answers are in, how long to listen for extra ones


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
        self.recording = ReplayRecording(store, plan.original.id, proxied=via is not None)
        self.answers = 0
        self.activity = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_by: str | None = None
        self.writer: asyncio.StreamWriter | None = None
        # the server's message being received, and its type
        self._incoming: tuple[MessageType, CappedPayload] | None = None

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
                self._end_abnormally(passed)
            expected = len(self.plan.original_answers)
            raise ReplayError(
                f"the replay did not finish within its {self.deadline:g}s deadline "
                f"(--deadline SECONDS): {self._peer} kept the connection busy "
                f"({self.answers} answers, {expected} expected)"
            ) from None
        return await self.recording.finished_session()

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
                self._end_abnormally(f"{self._peer} did not answer the close")
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
            self.recording.request(
                self.plan.target.url,
                data,
                started,
                self.writer.get_extra_info("sockname"),
                self.writer.get_extra_info("peername"),
            )
        try:
            head, rest = await asyncio.wait_for(_read_head(reader, self._peer), self.timeout)
        except TimeoutError:
            self.recording.failed(f"no answer to the upgrade within {self.timeout:g}s")
            raise ReplayError(
                f"timed out after {self.timeout:g}s waiting for {self._peer} to answer the upgrade"
            ) from None
        except (ReplayError, OSError) as e:
            self.recording.failed(str(e))
            raise ReplayError(str(e)) from None
        status_line, headers = parse_head(head)
        if self.via:
            self.recording.link_proxied(self.writer.get_extra_info("sockname"))
        else:
            self.recording.answered(status_line, headers)
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
        if self.via and self.recording.hop.outcome is Outcome.FAILED:
            # mitmproxy answered for a server it could not reach; its recorder kept why.
            error = self.recording.hop.error or "no answer"
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
                await asyncio.wait_for(self.closed.wait(), CLOSE_WAIT)
            except (TimeoutError, OSError):
                pass

    def _send(self, event: ws_events.Event) -> None:
        self.writer.write(self.ws.send(event))
        if isinstance(event, ws_events.TextMessage):
            self.recording.frame(True, MessageType.TEXT, event.data.encode())
        elif isinstance(event, ws_events.BytesMessage):
            self.recording.frame(True, MessageType.BINARY, bytes(event.data))
        elif isinstance(event, (ws_events.Ping, ws_events.Pong)):
            kind = MessageType.PING if isinstance(event, ws_events.Ping) else MessageType.PONG
            self.recording.frame(True, kind, bytes(event.payload))
        elif isinstance(event, ws_events.CloseConnection):
            payload = close_payload(event.code, event.reason or "")
            self.recording.frame(True, MessageType.CLOSE, payload)

    def _end_abnormally(self, how: str) -> None:
        """The WebSocket was lost (or given up) without the close handshake completing."""
        self.recording.ended(self.close_by or "server", None, "", abnormal=how)

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
            self._end_abnormally(f"the connection to {self._peer} was lost")
            self.closed.set()

    def _handle(self, events: list[ws_events.Event]) -> None:
        for event in events:
            if isinstance(event, (ws_events.TextMessage, ws_events.BytesMessage)):
                text = isinstance(event, ws_events.TextMessage)
                if self._incoming is None:
                    kind = MessageType.TEXT if text else MessageType.BINARY
                    self._incoming = kind, CappedPayload(self.store.max_payload)
                kind, payload = self._incoming
                payload.add(event.data.encode() if text else bytes(event.data))
                if event.message_finished:
                    self.answers += 1
                    self.recording.message(payload.message(False, kind, time.time()))
                    self._incoming = None
                self.activity.set()
            elif isinstance(event, ws_events.Ping):
                self.recording.frame(False, MessageType.PING, bytes(event.payload))
                if self.ws.state is ConnectionState.OPEN:  # not once a close was sent
                    self._send(event.response())
            elif isinstance(event, ws_events.Pong):
                self.recording.frame(False, MessageType.PONG, bytes(event.payload))
            elif isinstance(event, ws_events.CloseConnection):
                self.recording.frame(False, MessageType.CLOSE, close_payload(event.code, event.reason or ""))
                if self.close_by is None:
                    self.close_by = "server"
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self._send(event.response())
                self.recording.ended(self.close_by, event.code, event.reason or "")
                self.closed.set()
                self.activity.set()


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
