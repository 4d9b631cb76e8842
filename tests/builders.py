"""Builders for what many tests and benches need: a Hop as a listener records it, the
handshake headers of a client, a small capture file (and, from
wsinspect.addresses, a free loopback port).

Each builder takes the fields a test cares about and fills the rest with the plainest
values, so a test reads as what it varies."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from wsinspect.addresses import free_port  # noqa: F401 (one for the tests and benches too)
from wsinspect.model import Hop, Message, MessageType
from wsinspect.store import SessionStore

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key


def upgrade_request(host: str = "app.example", key: str | None = KEY) -> list[tuple[str, str]]:
    """A client's handshake headers to `host`, with `key` (None: without one)."""
    headers = [("Host", host), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if key is not None:
        headers += [("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    return headers


def make_hop(
    url: str = "ws://app.example/chat",
    *,
    key: str | None = KEY,
    headers: list[tuple[str, str]] | None = None,
    t: float = 100.0,
    mode: str = "regular",
    version: str = "HTTP/1.1",
    request_line: str | None = None,
    **fields,
) -> Hop:
    """A hop for `url` started at `t`, not answered yet: by default a client's upgrade request
    to the URL's host with `key` (None: without one); `fields` sets any other Hop field
    (response_status=101, …)."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return Hop(
        mode=mode,
        url=url,
        request_line=request_line or f"GET {target} {version}",
        http_version=version,
        request_headers=upgrade_request(parts.netloc, key) if headers is None else headers,
        timestamp_start=t,
        **fields,
    )


def capture_file(path: Path, url: str = "ws://127.0.0.1:1/probe") -> Path:
    """A wsinspect capture at `path` holding one answered hop to `url` and one message."""
    store = SessionStore(path)
    hop = make_hop(url, t=1000.0, response_status=101)
    store.add_hop(hop)
    store.add_message(hop, Message(True, MessageType.TEXT, 5, b"hello", timestamp=1000.1))
    store.close()
    return path
