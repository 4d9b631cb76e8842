"""Helpers for the app's tests: deterministic captures and reading the screen as text."""

from __future__ import annotations

import json

from textual.app import App

from tests.builders import KEY, make_hop
from wsinspect.model import Close, Hop, Message, MessageType, Outcome, accept_for_key
from wsinspect.store import SessionStore

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def screen_text(app: App) -> str:
    """What the terminal shows, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def handshake_hop(
    path: str, start: float, status: int = 101, accept: str | None = None, key: str = KEY
) -> Hop:
    hop = make_hop(
        f"ws://echo.test:9000{path}",
        request_line=f"GET http://echo.test:9000{path} HTTP/1.1",  # as sent to a proxy
        headers=[
            ("Host", "echo.test:9000"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Protocol", "chat, superchat"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
        ],
        t=start,
        client_addr=("127.0.0.1", 50000),
        server_addr=("127.0.0.1", 9000),
        response_status=status,
        response_reason="Switching Protocols" if status == 101 else "Bad Gateway",
        response_http_version="HTTP/1.1",
        timestamp_response=start + 0.002,
    )
    if status == 101:
        hop.response_headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept or accept_for_key(key)),
            ("Sec-WebSocket-Protocol", "chat"),
        ]
    else:
        hop.outcome = Outcome.REJECTED
        hop.timestamp_end = start + 0.003
    return hop


def deterministic_store() -> SessionStore:
    """Three sessions with fixed times: a closed chat with text, JSON, binary and control
    frames (including markup and ANSI payloads), a rejected upgrade, and a live session whose
    Sec-WebSocket-Accept is wrong."""
    store = SessionStore()
    chat = handshake_hop("/chat?room=[bold]", T0)
    store.add_hop(chat)
    payloads = [
        (True, MessageType.TEXT, b"hello"),
        (False, MessageType.TEXT, b"hello"),
        (True, MessageType.TEXT, json.dumps({"op": "subscribe", "topics": ["a", "b"]}).encode()),
        (False, MessageType.TEXT, b'{"ok": true, "id": 7}'),
        (True, MessageType.BINARY, bytes(range(40))),
        (True, MessageType.TEXT, b"[bold red]not markup[/] \x1b[31mnot red\x1b[0m \x1b]0;title\x07"),
        (True, MessageType.PING, b"p1"),
        (False, MessageType.PONG, b"p1"),
        (True, MessageType.CLOSE, (1000).to_bytes(2, "big") + b"bye"),
        (False, MessageType.CLOSE, (1000).to_bytes(2, "big") + b"bye"),
    ]
    for i, (from_client, kind, payload) in enumerate(payloads):
        store.add_message(
            chat,
            Message(from_client, kind, len(payload), payload, timestamp=T0 + 0.010 + i * 0.125),
        )
    chat.outcome = Outcome.CLOSED
    chat.timestamp_end = T0 + 1.5
    chat.close = Close(code=1000, reason="bye", by="client", timestamp=T0 + 1.5)
    store.hop_changed(chat)
    store.add_hop(handshake_hop("/rejected", T0 + 2, status=502, key="cmVqZWN0ZWQga2V5IDEyMw=="))
    live = handshake_hop(
        "/live", T0 + 3, accept="AAAAAAAAAAAAAAAAAAAAAAAAAAA=", key="bGl2ZSBzZXNzaW9uIGtleSAx"
    )
    store.add_hop(live)
    store.add_message(live, Message(False, MessageType.TEXT, 4, b"tick", timestamp=T0 + 3.5))
    store.flush()
    return store
