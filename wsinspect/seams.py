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

Each seam is installed once per process and dispatches to the Recorder that owns the
connection. tests/test_seams.py fails if a mitmproxy release moves one of them.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import TYPE_CHECKING

import wsproto.events

from mitmproxy import websocket
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands
from mitmproxy.proxy import events as proxy_events
from mitmproxy.proxy.layers import websocket as websocket_layer
from mitmproxy.proxy.layers.websocket import Fragmentizer, WebSocketMessageInjected
from mitmproxy.proxy.utils import expect
from mitmproxy.proxy.layers.http import _http1
from wsproto import ConnectionState
from wsproto.events import CloseConnection
from wsproto.frame_protocol import Opcode

if TYPE_CHECKING:
    from .recorder import Recorder

# Recorders by the id of their mitmproxy Options object (one per Master), for seams that only
# see a layer's context.
_recorders_by_options: dict[int, Recorder] = {}


def register(recorder: Recorder, options) -> None:
    _recorders_by_options[id(options)] = recorder


def unregister(options) -> None:
    _recorders_by_options.pop(id(options), None)


def frame_taps() -> dict[str, Recorder]:
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
    if len(payload) < 2:
        return None, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", errors="replace")


def _install_frame_tap() -> None:
    base = websocket_layer.WebsocketConnection
    if getattr(base, "wsinspect_taps", None) is not None:
        return

    class TappedWebsocketConnection(base):  # type: ignore[misc, valid-type]
        wsinspect_taps: dict[str, Recorder] = {}

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


class StreamedMessage:
    """A message relayed fragment by fragment: what is kept of it for the record."""

    def __init__(self, is_text: bool, from_client: bool, keep: int) -> None:
        self.is_text = is_text
        self.from_client = from_client
        self.keep = keep
        self.prefix = bytearray()
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.timestamp = time.time()

    def add(self, data: bytes) -> None:
        self.size += len(data)
        self.sha256.update(data)
        if len(self.prefix) < self.keep:
            self.prefix += data[: self.keep - len(self.prefix)]


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


def install() -> None:
    _install_frame_tap()
    _install_ws_scheme()
    _install_refused_request_tap()
    _install_streaming_relay()
