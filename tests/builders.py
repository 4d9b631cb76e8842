"""Builders for what many tests and benches need: a Hop as a listener records it, the
handshake headers of a client and of a server's 101, a small capture file (and, from
wsinspect.addresses, a free loopback port).

Each builder takes the fields a test cares about and fills the rest with the plainest
values, so a test reads as what it varies."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from wsinspect.addresses import free_port  # noqa: F401 (one for the tests and benches too)
from wsinspect.model import Close, Hop, Message, MessageType, accept_for_key
from wsinspect.store import SessionStore

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key
# Two listeners either side of a proxy, as in the README's nginx setup
FRONT = "regular@8080"
BACK = "reverse:http://127.0.0.1:9000@8081"
SERVER = ("127.0.0.1", 8000)


def upgrade_request(
    host: str = "app.example",
    key: str | None = KEY,
    *,
    upgrade: str | None = "websocket",
    connection: str | None = "Upgrade",
    names=None,
) -> list[tuple[str, str]]:
    """A client's handshake headers to `host`, with `key` (None: without one); `upgrade` and
    `connection` None leave those headers out, and `names` spells the names (e.g. str.lower)."""
    headers = [("Host", host)]
    if upgrade is not None:
        headers.append(("Upgrade", upgrade))
    if connection is not None:
        headers.append(("Connection", connection))
    if key is not None:
        headers += [("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    return headers if names is None else [(names(name), value) for name, value in headers]


def upgrade_answer(
    key: str = KEY, *, accept: str | None = None, connection: str = "Upgrade"
) -> list[tuple[str, str]]:
    """A server's 101 headers for `key`; `accept` puts another Sec-WebSocket-Accept."""
    headers = [("Upgrade", "websocket"), ("Connection", connection)]
    return headers + [("Sec-WebSocket-Accept", accept or accept_for_key(key))]


def make_hop(
    url: str = "ws://app.example/chat",
    *,
    key: str | None = KEY,
    headers: list[tuple[str, str]] | None = None,
    t: float = 100.0,
    mode: str = "regular",
    version: str = "HTTP/1.1",
    request_line: str | None = None,
    status: int | None = None,
    reason: str = "",
    answer: list[tuple[str, str]] | None = None,
    answered_at: float | None = None,
    error: str | None = None,
    close: Close | None = None,
    **fields,
) -> Hop:
    """A hop for `url` started at `t`: by default a client's upgrade request to the URL's host
    with `key` (None: without one), not answered yet. Moved on through the model's life
    cycle, as a listener would: `status` answers it at `answered_at` (default: 10 ms after
    `t`) with `answer` (default: the 101 headers for `key`, none for another status); without
    a status, `error` fails it then; `close` ends it. `fields` sets any other Hop field."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    hop = Hop(
        mode=mode,
        url=url,
        request_line=request_line or f"GET {target} {version}",
        http_version=version,
        request_headers=upgrade_request(parts.netloc, key) if headers is None else headers,
        timestamp_start=t,
        **fields,
    )
    answered_at = t + 0.01 if answered_at is None else answered_at
    if status is not None:
        if answer is None:
            answer = upgrade_answer(hop.websocket_key or KEY) if status == 101 else []
        hop.answered(status, reason, answer, None, answered_at)
    elif error is not None:
        hop.failed(error, answered_at)
    if close is not None:
        hop.ended(close)
    return hop


def dropped_upgrade(key: str = KEY) -> list[Hop]:
    """The two hops of a handshake through a proxy that dropped the upgrade (a plain nginx
    proxy_pass): hop 2 got it without Upgrade, as Connection: close, and the server's 426
    went back to hop 1. The client spells header names in title case (Sec-Websocket-Key)."""
    sent = upgrade_request(key=key, names=str.title)
    passed_on = upgrade_request(key=key, upgrade=None, connection="close", names=str.title)
    return [
        make_hop(mode=FRONT, headers=sent, status=426, reason="Upgrade Required",
                 server_addr=SERVER),
        make_hop(mode=BACK, headers=passed_on, status=426, t=100.005, server_addr=SERVER),
    ]


def capture_file(path: Path, url: str = "ws://127.0.0.1:1/probe") -> Path:
    """A wsinspect capture at `path` holding one answered hop to `url` and one message."""
    store = SessionStore(path)
    hop = make_hop(url, t=1000.0, status=101, answer=[])
    store.add_hop(hop)
    store.add_message(hop, Message(True, MessageType.TEXT, 5, b"hello", timestamp=1000.1))
    store.close()
    return path
