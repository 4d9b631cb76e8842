"""Where wsinspect reaches into mitmproxy's proxy core, because its hooks do not report what
someone debugging a broken WebSocket must see.

- Frame tap: mitmproxy's WebSocket layer drains `events()` from one wsproto connection per
  side and `send()`s to the other. A subclass installed in its place sees every ping, pong and
  close frame, the close frames mitmproxy itself sends, and the protocol errors wsproto turns
  into a close (which mitmproxy's flow attributes to the side that sent the bad frame).
- ws:// scheme: clients such as aiohttp, curl and iOS send `GET ws://host/path` to an HTTP
  proxy; mitmproxy answers `400 Invalid request scheme: ws` before any hook. The request line
  is read as http(s):// instead, and the original scheme is remembered on the request.
- Refused requests: a handshake mitmproxy's HTTP/1 parser refuses (a header line without a
  colon, a control byte in a name) gets a 400 and no flow at all, only a log line.
- Streaming relay: mitmproxy holds a whole message in memory (growing it by quadratic
  concatenation) before its message hook; a 20 MiB message took its peak RSS to about 12 times
  the message size. A message that outgrows `wsinspect_max_payload` is relayed fragment by
  fragment instead, unchanged, keeping only the stored prefix, its size and its SHA-256; such
  a message does not reach mitmproxy's `websocket_message` hook (as with mitmproxy's own
  `stream_large_bodies` for HTTP bodies).
- Raw relay (`wsinspect_relay=raw`): where mitmproxy's HTTP layer hands a connection that
  upgraded to its WebSocket layer (`websocket.WebsocketLayer(context, flow)` in HttpStream's
  `flow_done`), a `RawRelayLayer` takes it instead: each direction's bytes are forwarded as
  they arrive, unchanged, and fed to a `wire.FrameParser` for the record. HttpStream's
  `passthrough` would turn the layer's commands into HTTP events (which can only close a
  connection whole); for this layer it hands events in and commands out unchanged, as
  mitmproxy's own TCP layer has them beneath TLS layers, so a FIN is passed on as a
  half-close. Two wrappers on the ConnectionHandler report a reset: `server_event` notes a
  watched connection whose reader ended with ConnectionResetError, and `close_connection`
  sets SO_LINGER 0 on a connection the relay asked to reset, so closing it (after its
  pending bytes) sends a reset. Injected messages wait for a message boundary. Under
  mitmproxy's relay, `server_event` tells the recorder how a frame-tapped side ended.
  Where both sides are plain TCP, the same `server_event` wrapper hands the bytes the handler
  read to the relay (`RawRelayLayer.forward`) before the layers, which would pass them through
  unchanged at a per-read cost; they go to the other side's writer as mitmproxy's SendData
  would, and the handler drains its writers after this event as after any other. From then
  on that connection is read by a `_RelayProtocol` set on its asyncio transport in place of
  mitmproxy's StreamReaderProtocol: asyncio's reads go to the relay without passing the
  StreamReader and the handler's read task, and the read pauses while the other side's
  writes back up; the end of the stream, a reset and write flow control still reach the
  StreamReaderProtocol, so the handler's read loop ends as before.
- TLS ends under the raw relay: mitmproxy's TLS layer closes a connection with a bare FIN
  (its `send_close` never shuts the OpenSSL connection down), which a TLS peer sees as a
  truncation, not the close the other side sent. A FIN the relay passes on toward a TLS peer
  goes out after that layer's close_notify; a side that ended without close_notify (a
  truncation, seen in `receive_close`) is passed on as a bare FIN. A CONNECT tunnel's
  `passthrough` turns every half-close from inside it into a full close; the relay's stay
  half-closes.

Each seam is installed once per process and dispatches to the recorder that owns the
connection, through the `RelayRecorder` protocol below (seams never imports the recorder).
tests/test_seams.py fails if a mitmproxy release moves one of them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Protocol

import wsproto.events
from OpenSSL import SSL

from mitmproxy import websocket
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, layer, server, tunnel
from mitmproxy.proxy import events as proxy_events
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers import tls as tls_layer
from mitmproxy.proxy.layers import websocket as websocket_layer
from mitmproxy.proxy.layers.websocket import Fragmentizer, WebSocketMessageInjected
from mitmproxy.proxy.utils import expect
from mitmproxy.proxy.layers.http import _http1
from wsproto import ConnectionState
from wsproto.events import CloseConnection
from wsproto.frame_protocol import Opcode

from . import intercept, wire
from .http_rules import close_code_reason
from .model import CappedPayload

logger = logging.getLogger("wsinspect")


class RelayRecorder(Protocol):
    """What the seams tell the recorder (wsinspect.recorder.Recorder is the one there is)."""

    def relay_path(self) -> str:
        """"raw" or "mitmproxy": which relay carries WebSockets after the 101."""

    def max_payload(self) -> int:
        """Bytes of a payload that are stored."""

    def on_refused_request(self, client, head: bytes, reason: str) -> None: ...

    def on_frame_event(
        self, conn_id: str, from_client: bool, event: wsproto.events.Event, protocol_error: bool
    ) -> None: ...

    def on_close_sent(
        self, conn_id: str, to_client: bool, code: int | None, reason: str
    ) -> None: ...

    def on_connection_end(self, conn_id: str, how: str) -> None:
        """Under mitmproxy's relay: a side of a WebSocket ended its connection ("fin" or
        "reset") before the proxy closed it."""

    def on_streamed_message(self, flow, message: StreamedMessage) -> None: ...

    def on_wire_events(self, flow, events: list) -> None:
        """What a direction's FrameParser made of the bytes the raw relay forwarded."""

    def on_injected(self, flow, from_client: bool, is_text: bool, payload: bytes) -> None:
        """The raw relay sent an injected message (toward the server when `from_client`)."""

    def on_relay_end(self, flow, end: RelayEnd) -> None:
        """Both directions of a raw-relayed WebSocket have ended."""

    def on_intercepted(self, flow, held: intercept.Held) -> None:
        """A message an intercept rule held was forwarded, edited or dropped."""


class RelayInterceptor(Protocol):
    """What the raw relay asks of wsinspect.interceptor.Interceptor."""

    def rule(self) -> intercept.Rule | None: ...

    def matches(self, flow, message: wire.DataMessage) -> bool:
        """Whether the rule holds `message`."""

    def hold(self, flow, message: wire.DataMessage) -> intercept.Held:
        """Hold `message` (the interceptor tells the user and starts its timeout)."""

    def settled(self, flow, held: intercept.Held) -> None:
        """`held` went out (or did not, dropped): it is off the interceptor's list."""


@dataclass
class HoldDecided(proxy_events.MessageInjected[intercept.Decision]):
    """The user (or the timeout) decided a held message's fate (set on it): injected into its
    connection like a WebSocket message, so the relay acts on it on the proxy's loop."""


# Recorders by the id of their mitmproxy Options object (one per Master), for seams that only
# see a layer's context.
_recorders_by_options: dict[int, RelayRecorder] = {}


def register(recorder: RelayRecorder, options) -> None:
    _recorders_by_options[id(options)] = recorder


def unregister(options) -> None:
    _recorders_by_options.pop(id(options), None)


_interceptors_by_options: dict[int, RelayInterceptor] = {}


def register_interceptor(interceptor: RelayInterceptor, options) -> None:
    _interceptors_by_options[id(options)] = interceptor


def unregister_interceptor(options) -> None:
    _interceptors_by_options.pop(id(options), None)


def frame_taps() -> dict[str, RelayRecorder]:
    """Connection id -> the recorder that wants that connection's frames."""
    return websocket_layer.WebsocketConnection.wsinspect_taps


def parse_close_frame(data: bytes) -> tuple[int | None, str] | None:
    """Code and reason of the close frame `data` starts with (masked or not), else None."""
    if len(data) < 2 or data[0] & 0x0F != 0x8:
        return None
    length = data[1] & 0x7F
    offset = 2
    payload = bytes(data[offset + (4 if data[1] & 0x80 else 0) :][:length])
    if data[1] & 0x80:
        key = data[2:6]
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return close_code_reason(payload)


def _install_frame_tap() -> None:
    base = websocket_layer.WebsocketConnection
    if getattr(base, "wsinspect_taps", None) is not None:
        return

    class TappedWebsocketConnection(base):  # type: ignore[misc, valid-type]
        wsinspect_taps: dict[str, RelayRecorder] = {}

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # bytearrays grow in place where mitmproxy's bytes are copied on every fragment
            self.frame_buf = [bytearray()]

        def events(self):
            for event in super().events():
                recorder = self.wsinspect_taps.get(self.conn.id)
                if recorder is not None:
                    # wsproto turns a frame it cannot parse into a CloseConnection while the
                    # connection is still OPEN; a received close frame moves it on first.
                    protocol_error = (
                        isinstance(event, CloseConnection) and self.state is ConnectionState.OPEN
                    )
                    # A wsproto SERVER-side connection faces the client.
                    recorder.on_frame_event(self.conn.id, not self.client, event, protocol_error)
                yield event

        def send(self, event):
            data = super().send(event)
            recorder = self.wsinspect_taps.get(self.conn.id)
            if recorder is not None and isinstance(event, CloseConnection):
                told = parse_close_frame(data)
                if told is not None:
                    recorder.on_close_sent(self.conn.id, not self.client, *told)
            return data

    websocket_layer.WebsocketConnection = TappedWebsocketConnection


_WS_SCHEME = re.compile(rb"^([A-Za-z]+ )(wss?)(://)", re.IGNORECASE)


def _install_ws_scheme() -> None:
    original = http1.read_request_head
    if getattr(original, "wsinspect_seam", False):
        return

    def read_request_head(lines):
        match = _WS_SCHEME.match(lines[0]) if lines else None
        if match is None:
            return original(lines)
        scheme = match.group(2).lower()
        http_scheme = b"https" if scheme == b"wss" else b"http"
        first = match.group(1) + http_scheme + match.group(3) + lines[0][match.end() :]
        request = original([first, *lines[1:]])
        request.wsinspect_scheme = scheme.decode()
        return request

    read_request_head.wsinspect_seam = True
    http1.read_request_head = read_request_head


def _looks_like_upgrade(head: bytes) -> bool:
    lowered = head.lower()
    return b"sec-websocket-key" in lowered or re.search(rb"\nupgrade:[^\n]*websocket", lowered) is not None


def _install_refused_request_tap() -> None:
    server = _http1.Http1Server
    if getattr(server.read_headers, "wsinspect_seam", False):
        return
    original = server.read_headers

    def read_headers(self, event):
        head = bytes(self.buf) if isinstance(event, proxy_events.DataReceived) else b""
        reason = "refused by the proxy"
        for command in original(self, event):
            if isinstance(command, commands.Log):
                # mitmproxy logs "<client address>: <why the head was refused>"
                reason = command.message.split(": ", 1)[-1]
            yield command
        refused = self.request is None and getattr(self.state, "__func__", None) is server.done
        if head and refused and _looks_like_upgrade(head):
            recorder = _recorders_by_options.get(id(self.context.options))
            if recorder is not None:
                recorder.on_refused_request(
                    self.context.client, head.split(b"\r\n\r\n")[0], reason
                )

    read_headers.wsinspect_seam = True
    server.read_headers = read_headers


class StreamedMessage(CappedPayload):
    """A message relayed fragment by fragment: what is kept of it for the record."""

    def __init__(self, is_text: bool, from_client: bool, keep: int) -> None:
        super().__init__(keep)
        self.is_text = is_text
        self.from_client = from_client
        self.timestamp = time.time()


# The sha256 of mitmproxy's WebsocketLayer.relay_messages source that StreamingWebsocketLayer
# was derived from (identical in mitmproxy 11.0 and 12.x); tests/test_seams.py checks it.
RELAY_MESSAGES_SHA256 = "2d451252c7287da0d392ab91ede1d881954ad2fa101513e1857db9492b4582ca"


def _fragment(data: bytes | str, is_text: bool, finished: bool) -> wsproto.events.Message:
    if is_text:
        text = data if isinstance(data, str) else bytes(data).decode()
        return wsproto.events.TextMessage(text, message_finished=finished)
    return wsproto.events.BytesMessage(bytes(data), message_finished=finished)


def _install_streaming_relay() -> None:
    base = websocket_layer.WebsocketLayer
    if getattr(base, "wsinspect_streaming", False):
        return

    class StreamingWebsocketLayer(base):  # type: ignore[misc, valid-type]
        """mitmproxy's WebSocket layer, streaming messages that outgrow the stored payload.

        `relay_messages` is mitmproxy's own (see RELAY_MESSAGES_SHA256) with one change in the
        data-message branch: once a message outgrows what is stored, its fragments are
        forwarded as they arrive instead of being joined first; and ping/pong payloads are not
        logged."""

        wsinspect_streaming = True

        def __new__(cls, context, flow):
            recorder = _recorders_by_options.get(id(context.options))
            if recorder is not None and recorder.relay_path() == "raw":
                return RawRelayLayer(context, flow, recorder)  # not a cls: no __init__ here
            return super().__new__(cls)

        def __init__(self, context, flow) -> None:
            super().__init__(context, flow)
            self.streams: dict[bool, StreamedMessage] = {}  # from_client -> message in flight

        @expect(proxy_events.DataReceived, proxy_events.ConnectionClosed, WebSocketMessageInjected)
        def relay_messages(self, event):
            assert self.flow.websocket
            recorder = _recorders_by_options.get(id(self.context.options))

            if isinstance(event, proxy_events.ConnectionEvent):
                from_client = event.connection == self.context.client
                injected = False
            elif isinstance(event, WebSocketMessageInjected):
                from_client = event.message.from_client
                injected = True
            else:
                raise AssertionError(f"Unexpected event: {event}")

            if from_client:
                src_ws, dst_ws = self.client_ws, self.server_ws
            else:
                src_ws, dst_ws = self.server_ws, self.client_ws

            if isinstance(event, proxy_events.DataReceived):
                src_ws.receive_data(event.data)
            elif isinstance(event, proxy_events.ConnectionClosed):
                src_ws.receive_data(None)
            else:
                fragmentizer = Fragmentizer([], event.message.type == Opcode.TEXT)
                src_ws._events.extend(fragmentizer(event.message.content))

            for ws_event in src_ws.events():
                if isinstance(ws_event, wsproto.events.Message):
                    is_text = isinstance(ws_event.data, str)
                    data = ws_event.data.encode() if is_text else ws_event.data
                    stream = self.streams.get(from_client)
                    keep = recorder.max_payload() if recorder is not None else None
                    if stream is None and keep is not None and not injected:
                        buffered = sum(len(chunk) for chunk in src_ws.frame_buf)
                        if buffered + len(data) > keep:
                            stream = StreamedMessage(is_text, from_client, keep)
                            self.streams[from_client] = stream
                            for chunk in src_ws.frame_buf:
                                if chunk:
                                    stream.add(bytes(chunk))
                                    yield dst_ws.send2(_fragment(chunk, is_text, False))
                            src_ws.frame_buf = [bytearray()]
                    if stream is not None:
                        stream.add(data)
                        yield dst_ws.send2(
                            _fragment(ws_event.data, is_text, ws_event.message_finished)
                        )
                        if ws_event.message_finished:
                            del self.streams[from_client]
                            recorder.on_streamed_message(self.flow, stream)
                        continue

                    src_ws.frame_buf[-1] += data
                    if ws_event.message_finished:
                        content = b"".join(src_ws.frame_buf)
                        fragmentizer = Fragmentizer(src_ws.frame_buf, is_text)
                        src_ws.frame_buf = [bytearray()]
                        message = websocket.WebSocketMessage(
                            Opcode.TEXT if is_text else Opcode.BINARY,
                            from_client,
                            content,
                            injected=injected,
                        )
                        self.flow.websocket.messages.append(message)
                        yield websocket_layer.WebsocketMessageHook(self.flow)
                        if not message.dropped:
                            for msg in fragmentizer(message.content):
                                yield dst_ws.send2(msg)
                    elif ws_event.frame_finished:
                        src_ws.frame_buf.append(bytearray())

                elif isinstance(ws_event, (wsproto.events.Ping, wsproto.events.Pong)):
                    # mitmproxy logs the payload here; wsinspect records it instead, so that
                    # nothing a peer sends ends up in the log.
                    yield dst_ws.send2(ws_event)
                elif isinstance(ws_event, wsproto.events.CloseConnection):
                    self.flow.websocket.timestamp_end = time.time()
                    self.flow.websocket.closed_by_client = from_client
                    self.flow.websocket.close_code = ws_event.code
                    self.flow.websocket.close_reason = ws_event.reason
                    for ws in [self.server_ws, self.client_ws]:
                        if ws.state in {ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING}:
                            yield ws.send2(ws_event)
                        yield commands.CloseConnection(ws.conn)
                    yield websocket_layer.WebsocketEndHook(self.flow)
                    self.flow.live = False
                    self._handle_event = self.done
                else:  # pragma: no cover
                    raise AssertionError(f"Unexpected WebSocket event: {ws_event}")

    websocket_layer.WebsocketLayer = StreamingWebsocketLayer


@dataclass(slots=True)
class RelayEnd:
    """How each side's connection ended under the raw relay: "fin", "reset", or None when the
    proxy closed it after the other side's reset. `first` is the side that ended first."""

    first: str
    client: str | None
    server: str | None
    timestamp: float


# Connection ids the raw relay watches for a reset, the ones a reset was seen on, and the ones
# it asked to reset; TLS connections that ended without close_notify, the ones whose next
# close goes out after a close_notify, and the ones it half-closed (see the module docstring).
_watched: set[str] = set()
_peer_reset: set[str] = set()
_reset_requested: set[str] = set()
_tls_truncated: set[str] = set()
_close_notify_requested: set[str] = set()
_half_close_requested: set[str] = set()
# Connection id -> the raw relay that forwards its bytes straight between sockets (see
# RawRelayLayer.forward).
_socket_relays: dict[str, RawRelayLayer] = {}

_LINGER_ZERO = struct.pack("ii", 1, 0)


class RawRelayLayer(layer.Layer):
    """Relays a WebSocket's bytes both ways unchanged and records what a FrameParser per
    direction makes of them."""

    def __init__(self, context, flow, recorder: RelayRecorder) -> None:
        super().__init__(context)
        self.flow = flow
        self.recorder = recorder
        self.parsers: dict[bool, wire.FrameParser] = {}
        # from_client -> injected messages (is_text, payload) waiting for a message boundary
        self.pending: dict[bool, collections.deque] = {
            True: collections.deque(),
            False: collections.deque(),
        }
        self.ends: dict[bool, str | None] = {True: None, False: None}
        self.holds: dict[bool, intercept.HeldQueue] = {}  # directions an intercept rule covers
        self.first_end: bool | None = None
        self.stream_id: int | None = None  # the HTTP stream it is the child of (passthrough)
        self.server_through_http = True  # see send()
        self.server_tunnel: tunnel.TunnelLayer | None = None  # see close()

    def send(self, from_client: bool, data: bytes) -> commands.Command:
        """The command that forwards `data` in its direction. The client's layers (TLS) are
        always above this one, as are the server's, except where the HTTP layer opened the
        server connection inside itself (wss:// in absolute form: its TLS layer) — only then
        does data for the server go through the HTTP layer (whose HTTP/1 client looks up a
        header for every write)."""
        if not from_client:
            return commands.SendData(self.context.client, data)
        if self.server_through_http:
            server = self.context.server
            return http_layer.SendHttp(http_layer.RequestData(self.stream_id, data), server)
        return commands.SendData(self.context.server, data)

    @expect(proxy_events.Start)
    def start(self, _):
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in self.flow.response.headers.fields
        ]
        deflate = wire.negotiated_deflate(headers)
        keep = self.recorder.max_payload()
        self.parsers = {side: wire.FrameParser(side, deflate, keep) for side in (True, False)}
        _watched.update((self.context.client.id, self.context.server.id))
        owner = next(
            (x for x in reversed(self.context.layers) if isinstance(x, http_layer.HttpLayer)), None
        )
        server_layer = owner.connections.get(self.context.server) if owner else None
        # a bare HTTP/1 client (CONNECT tunnels, reverse, transparent) or the HttpClient that
        # wraps one (absolute form, ws://); anything else is a TLS or upstream-proxy layer
        bare = (_http1.Http1Client, http_layer.HttpClient)
        self.server_through_http = type(server_layer) not in bare
        if self.server_through_http and isinstance(server_layer, tunnel.TunnelLayer):
            self.server_tunnel = server_layer
        client, server = self.context.client, self.context.server
        if not (client.tls or server.tls or self.server_through_http):
            _socket_relays[client.id] = _socket_relays[server.id] = self
        yield websocket_layer.WebsocketStartHook(self.flow)
        self._handle_event = self.relay

    _handle_event = start

    @expect(proxy_events.DataReceived, proxy_events.ConnectionClosed, WebSocketMessageInjected,
            HoldDecided)
    def relay(self, event):
        if isinstance(event, proxy_events.DataReceived):
            from_client = event.connection is self.context.client
            parser = self.parsers[from_client]
            queue = self._held_queue(from_client)
            if queue is not None:
                yield from self._relay_held(queue, from_client, event.data)
                return
            if self.pending[from_client]:
                yield from self._relay_around_injections(from_client, event.data)
                return
            yield self.send(from_client, event.data)
            found = parser.feed(event.data, time.time())
            if found:
                self.recorder.on_wire_events(self.flow, found)
        elif isinstance(event, HoldDecided):
            decision = event.message
            queue = self.holds.get(decision.held.from_client)
            if queue is not None:
                steps = queue.decide(decision.held, decision.fate, time.time(), decision.payload)
                yield from self._held_steps(decision.held.from_client, steps)
        elif isinstance(event, WebSocketMessageInjected):
            yield from self._inject(event.message)
        else:
            yield from self._ended(event.connection)

    def forward(self, transports: dict, conn, data: bytes):
        """`relay` for plain TCP on both sides, called by the ConnectionHandler for the bytes
        it read, which it would otherwise hand down the layers: the same bytes go to the other
        side's writer without the layer machinery's cost per read (11% of the raw relay's CPU
        samples at 1 MiB messages before, under 2% after). Ends and injected messages still
        arrive through the layers (one waiting for a message boundary is slipped in here);
        the handler drains the writers after this, as after any event. Returns the writer
        the bytes went to (None when the other side is gone)."""
        from_client = conn is self.context.client
        target = transports.get(self.context.server if from_client else self.context.client)
        writer = target.writer if target is not None else None
        if writer is None or writer.is_closing():
            writer = None  # the other side is gone: the bytes are still recorded
        queue = self._held_queue(from_client)
        if queue is not None:
            for command in self._relay_held(queue, from_client, data):
                if writer is not None:
                    writer.write(command.data)
            return writer
        if self.pending[from_client]:
            for command in self._relay_around_injections(from_client, data):
                if writer is not None:
                    writer.write(command.data)
            return writer
        if writer is not None:
            writer.write(data)
        found = self.parsers[from_client].feed(data, time.time())
        if found:
            self.recorder.on_wire_events(self.flow, found)
        return writer

    def _relay_around_injections(self, from_client: bool, data: bytes):
        """Forward `data`, slipping the waiting injections in at the first message boundary."""
        parser = self.parsers[from_client]
        start = parser.offset
        found = parser.feed(data, time.time())
        sent = recorded = 0
        for i, event in enumerate(found):
            if event.boundary and self.pending[from_client]:
                cut = event.end - start
                if cut > sent:
                    yield self.send(from_client, data[sent:cut])
                    sent = cut
                self.recorder.on_wire_events(self.flow, found[recorded : i + 1])
                recorded = i + 1
                yield from self._send_pending(from_client)
        if sent < len(data):
            yield self.send(from_client, data[sent:])
        if recorded < len(found):
            self.recorder.on_wire_events(self.flow, found[recorded:])
        if not parser.in_sync and self.pending[from_client]:
            self._drop_pending(from_client, "its frame boundaries were lost")

    def _held_queue(self, from_client: bool) -> intercept.HeldQueue | None:
        """The direction's HeldQueue while an intercept rule covers it, or anything still waits
        in it; None: the direction is relayed as it arrives."""
        interceptor = _interceptors_by_options.get(id(self.context.options))
        rule = interceptor.rule() if interceptor is not None else None
        if rule is None and not self.holds:
            return None  # the common case, once per read
        parser = self.parsers[from_client]
        covered = rule is not None and rule.covers(from_client) and parser.in_sync
        queue = self.holds.get(from_client)
        if queue is None and covered:
            queue = self.holds[from_client] = intercept.HeldQueue(
                from_client, parser.deflate, parser.offset, parser.at_message_boundary
            )
        elif queue is not None and not covered and queue.idle:
            del self.holds[from_client]
            return None
        return queue

    def _relay_held(self, queue: intercept.HeldQueue, from_client: bool, data: bytes):
        parser = self.parsers[from_client]
        found = parser.feed(data, time.time())
        interceptor = _interceptors_by_options.get(id(self.context.options))

        def matches(message: wire.DataMessage) -> bool:
            return interceptor is not None and interceptor.matches(self.flow, message)

        def hold(message: wire.DataMessage) -> intercept.Held:
            return interceptor.hold(self.flow, message)

        steps = queue.take(data, found, matches, hold, parser.at_message_boundary)
        yield from self._held_steps(from_client, steps)
        if self.pending[from_client] and parser.at_message_boundary:
            # what came before is sent or waits whole: an injection goes in between messages
            yield from self._send_pending(from_client)

    def _held_steps(self, from_client: bool, steps: list):
        interceptor = _interceptors_by_options.get(id(self.context.options))
        for step, what in steps:
            if step == "send":
                yield self.send(from_client, what)
            elif type(what) is intercept.Held:
                self.recorder.on_wire_events(
                    self.flow, [e for e in what.events if type(e) is not wire.DataMessage]
                )
                self.recorder.on_intercepted(self.flow, what)
                if interceptor is not None:
                    interceptor.settled(self.flow, what)
            elif what.events:
                self.recorder.on_wire_events(self.flow, what.events)

    def _inject(self, message):
        from_client = message.from_client
        if self.ends[from_client] is not None or self.ends[not from_client] == "reset":
            side = "server" if from_client else "client"
            logger.warning(
                f"wsinspect: the {side} connection has ended; the injected message was not sent"
            )
            return
        self.pending[from_client].append((message.type == Opcode.TEXT, bytes(message.content)))
        parser = self.parsers[from_client]
        if not parser.in_sync:
            self._drop_pending(from_client, "its frame boundaries were lost")
        elif parser.at_message_boundary:
            yield from self._send_pending(from_client)

    def _send_pending(self, from_client: bool):
        queue = self.pending[from_client]
        while queue:
            is_text, payload = queue.popleft()
            opcode = Opcode.TEXT if is_text else Opcode.BINARY
            yield self.send(from_client, wire.encode_frame(opcode, payload, mask=from_client))
            self.recorder.on_injected(self.flow, from_client, is_text, payload)

    def _drop_pending(self, from_client: bool, why: str) -> None:
        side = "server" if from_client else "client"
        logger.warning(
            f"wsinspect: {len(self.pending[from_client])} injected message(s) for the {side} "
            f"were not sent: {why}"
        )
        self.pending[from_client].clear()

    def _ended(self, conn):
        from_client = conn is self.context.client
        other = self.context.server if from_client else self.context.client
        how = "reset" if conn.id in _peer_reset else "fin"
        _peer_reset.discard(conn.id)
        self.ends[from_client] = how
        if self.first_end is None:
            self.first_end = from_client
        # What this side held goes on before its end does (all of it is lost in a reset).
        for side in (from_client, not from_client) if how == "reset" else (from_client,):
            queue = self.holds.pop(side, None)
            if queue is not None:
                fate = intercept.DROPPED if how == "reset" else intercept.FORWARDED
                steps = queue.release_all(fate)
                if how == "reset":
                    steps = [step for step in steps if step[0] == "record"]
                yield from self._held_steps(side, steps)
        # injections into the stream this side sent can no longer find a boundary in it
        for side in (from_client, not from_client) if how == "reset" else (from_client,):
            if self.pending[side]:
                self._drop_pending(side, "the connection ended")
        if how == "reset":
            # Passed on as a reset, after the bytes already relayed (also to a side that has
            # sent its FIN: it may still be reading, and would get the reset directly).
            _reset_requested.add(other.id)
            yield commands.CloseConnection(other)
            yield commands.CloseConnection(conn)
            yield from self._finish()
            return
        # a FIN toward a TLS peer goes with close_notify, unless this side's TLS ended without one
        if other.tls and conn.id not in _tls_truncated:
            _close_notify_requested.add(other.id)
        if self.ends[not from_client] is None:
            yield from self.close(other, half_close=True)
            return
        yield from self.close(other)
        yield from self.close(conn)
        yield from self._finish()

    def close(self, conn, half_close: bool = False):
        """Close (or half-close) `conn` through the layer that holds its TLS: the client's
        and, usually, the server's are above this one; a server connection the HTTP layer
        opened inside itself (see `send`) has its tunnel layer there, which the HTTP layer
        would bypass for a close."""
        if half_close:
            _half_close_requested.add(conn.id)
            command = commands.CloseTcpConnection(conn, half_close=True)
        else:
            command = commands.CloseConnection(conn)
        if conn is self.context.server and self.server_tunnel is not None:
            yield from self.server_tunnel._handle_command(command)
        else:
            yield command

    def _finish(self):
        client, server = self.context.client, self.context.server
        for conn in (client, server):
            for ids in (
                _watched, _peer_reset, _reset_requested, _tls_truncated, _close_notify_requested,
                _half_close_requested,
            ):
                ids.discard(conn.id)
            _socket_relays.pop(conn.id, None)
        end = RelayEnd(
            first="client" if self.first_end else "server",
            client=self.ends[True],
            server=self.ends[False],
            timestamp=time.time(),
        )
        self.recorder.on_relay_end(self.flow, end)
        yield websocket_layer.WebsocketEndHook(self.flow)
        self.flow.live = False
        self._handle_event = self.done

    @expect(proxy_events.DataReceived, proxy_events.ConnectionClosed, WebSocketMessageInjected,
            HoldDecided)
    def done(self, _):
        yield from ()


def _keeping_half_closes(commands_):
    """A CONNECT tunnel's passthrough turns every half-close from inside it into a full
    close; the raw relay's half-closes stay what they are."""
    for command in commands_:
        conn_id = command.connection.id if type(command) is commands.CloseConnection else None
        if conn_id in _half_close_requested:
            _half_close_requested.discard(conn_id)
            command = commands.CloseTcpConnection(command.connection, half_close=True)
        yield command


def _install_raw_passthrough() -> None:
    stream = http_layer.HttpStream
    if getattr(stream.passthrough, "wsinspect_seam", False):
        return
    original = stream.passthrough
    to_connection_event = {
        http_layer.RequestData: lambda s, e: proxy_events.DataReceived(s.context.client, e.data),
        http_layer.ResponseData: lambda s, e: proxy_events.DataReceived(s.context.server, e.data),
        http_layer.RequestEndOfMessage: lambda s, _: proxy_events.ConnectionClosed(s.context.client),
        http_layer.ResponseEndOfMessage: lambda s, _: proxy_events.ConnectionClosed(
            s.context.server
        ),
    }

    def passthrough(self, event):
        child = self.child_layer
        if type(child) is not RawRelayLayer:
            commands_ = original(self, event)
            return _keeping_half_closes(commands_) if _watched else commands_
        child.stream_id = self.stream_id
        convert = to_connection_event.get(type(event))
        return child.handle_event(convert(self, event) if convert else event)

    passthrough.wsinspect_seam = True
    passthrough.wsinspect_original = original
    stream.passthrough = passthrough


class _RelayProtocol(asyncio.Protocol):
    """Takes the place of mitmproxy's StreamReaderProtocol on a plain connection of a socket
    relay, so the bytes asyncio reads go straight to `RawRelayLayer.forward`: through the
    StreamReader each read was copied into its buffer, copied out again in 64 KiB slices and
    handed over by waking the handler's read task, a quarter of the raw relay's CPU at 1 MiB
    messages. Everything else (the end of the stream, a reset, write flow control) goes to
    the StreamReaderProtocol as before, so the handler's read loop ends as it did. Bytes read
    after the relay let the connection go are handed to it too."""

    def __init__(self, handler, connection, relay: RawRelayLayer, stream) -> None:
        self.handler = handler
        self.connection = connection
        self.relay = relay
        self.stream = stream  # the StreamReaderProtocol
        self.transport = handler.transports[connection].writer.transport
        self.draining: asyncio.Task | None = None

    @classmethod
    def take(cls, handler, connection, relay: RawRelayLayer) -> None:
        """Put one in place, once the StreamReader holds no bytes (those are read first)."""
        io = handler.transports[connection]
        stream = io.writer.transport.get_protocol()
        if type(stream) is cls or io.reader._buffer:
            return
        io.writer.transport.set_protocol(cls(handler, connection, relay, stream))

    def data_received(self, data: bytes) -> None:
        if _socket_relays.get(self.connection.id) is not self.relay:
            self.stream.data_received(data)
            return
        self.handler.timeout_watchdog.register_activity()
        writer = self.relay.forward(self.handler.transports, self.connection, data)
        # as the handler drains its writers before it reads again
        if writer is None or self.draining is not None:
            return
        high = writer.transport.get_write_buffer_limits()[1]
        if writer.transport.get_write_buffer_size() > high:
            self.transport.pause_reading()
            self.draining = asyncio.ensure_future(self._resume_when_drained(writer))

    async def _resume_when_drained(self, writer) -> None:
        try:
            await writer.drain()
        except OSError:
            pass  # the other side is gone: its end reaches the relay through its own reader
        finally:
            self.draining = None
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self):
        return self.stream.eof_received()

    def connection_lost(self, exc) -> None:
        self.stream.connection_lost(exc)

    def pause_writing(self) -> None:
        self.stream.pause_writing()

    def resume_writing(self) -> None:
        self.stream.resume_writing()


def _install_reset_relay() -> None:
    handler = server.ConnectionHandler
    if getattr(handler.server_event, "wsinspect_seam", False):
        return
    original_event, original_close = handler.server_event, handler.close_connection

    async def server_event(self, event):
        if type(event) is proxy_events.DataReceived:
            relay = _socket_relays.get(event.connection.id)
            if relay is not None:
                self.timeout_watchdog.register_activity()
                relay.forward(self.transports, event.connection, event.data)
                _RelayProtocol.take(self, event.connection, relay)
                return
        if isinstance(event, proxy_events.ConnectionClosed):
            conn_id = event.connection.id
            # mitmproxy's own relay: the recorder hears how a tapped side ended (see below)
            tap = None if conn_id in _watched else frame_taps().get(conn_id)
            if conn_id in _watched or tap is not None:
                io = self.transports.get(event.connection)
                exception = getattr(io.reader, "exception", None) if io is not None else None
                reset = exception is not None and isinstance(exception(), ConnectionResetError)
                if tap is not None:
                    tap.on_connection_end(conn_id, "reset" if reset else "fin")
                elif reset:
                    _peer_reset.add(conn_id)
        await original_event(self, event)

    def close_connection(self, connection, half_close: bool = False) -> None:
        if connection.id in _reset_requested:
            _reset_requested.discard(connection.id)
            io = self.transports.get(connection)
            sock = io.writer.get_extra_info("socket") if io is not None and io.writer else None
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
                except OSError:
                    pass  # already gone
        original_close(self, connection, half_close)

    server_event.wsinspect_seam = True
    server_event.wsinspect_original = original_event
    handler.server_event = server_event
    handler.close_connection = close_connection


def _install_tls_close() -> None:
    tls = tls_layer.TLSLayer
    if getattr(tls.send_close, "wsinspect_seam", False):
        return
    original_send_close, original_receive_close = tls.send_close, tls.receive_close

    def send_close(self, command):
        if self.conn.id in _close_notify_requested:
            _close_notify_requested.discard(self.conn.id)
            if self.tls is not None and not self.tls.get_shutdown() & SSL.SENT_SHUTDOWN:
                try:
                    self.tls.shutdown()
                except SSL.Error:
                    pass  # the connection broke; the FIN alone is what is left
                yield from self.tls_interact()
        yield from original_send_close(self, command)

    def receive_close(self):
        watched = self.conn.id in _watched and self.tls is not None
        if watched and not self.tls.get_shutdown() & SSL.RECEIVED_SHUTDOWN:
            _tls_truncated.add(self.conn.id)
        yield from original_receive_close(self)

    send_close.wsinspect_seam = True
    send_close.wsinspect_original = original_send_close
    receive_close.wsinspect_original = original_receive_close
    tls.send_close, tls.receive_close = send_close, receive_close


def install() -> None:
    _install_frame_tap()
    _install_ws_scheme()
    _install_refused_request_tap()
    _install_streaming_relay()
    _install_raw_passthrough()
    _install_reset_relay()
    _install_tls_close()
