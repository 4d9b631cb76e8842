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

Each seam is installed once per process and dispatches to the Recorder that owns the
connection. tests/test_seams.py fails if a mitmproxy release moves one of them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mitmproxy.net.http import http1
from mitmproxy.proxy import commands
from mitmproxy.proxy import events as proxy_events
from mitmproxy.proxy.layers import websocket as websocket_layer
from mitmproxy.proxy.layers.http import _http1
from wsproto import ConnectionState
from wsproto.events import CloseConnection

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


def install() -> None:
    _install_frame_tap()
    _install_ws_scheme()
    _install_refused_request_tap()
