"""The README's story with a real nginx: the broken, half-fixed and fixed configurations, each
with wsinspect on both sides of nginx (two listeners in one Engine) and only behind it, driven
by a real WebSocket client; plus an idle timeout and many concurrent handshakes."""

from __future__ import annotations

import asyncio

import pytest
import websockets.client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from wsinspect.diagnosis import Severity, diagnose, identify_proxy
from wsinspect.model import Outcome, header_value

from .conftest import wait_for
from .proxy_servers import (
    NGINX_BROKEN,
    NGINX_FIXED,
    NGINX_HALF_FIXED,
    Nginx,
    start_on_free_ports,
)

pytestmark = pytest.mark.nginx

FIXED_WITH_HOST = NGINX_FIXED + "proxy_set_header Host $http_host;"


@pytest.fixture
def start_nginx(tmp_path):
    started: list[Nginx] = []

    def start(upstream_port: int, location: str, read_timeout: str = "60s") -> Nginx:
        nginx = Nginx(tmp_path / f"nginx{len(started)}", upstream_port, location, read_timeout)
        started.append(nginx)
        return nginx.start()

    yield start
    for nginx in started:
        nginx.stop()


@pytest.fixture
async def both_sides(start_proxy, start_nginx, echo_server, tmp_path):
    """client -> wsinspect regular -> nginx -> wsinspect reverse -> echo server."""

    async def start(location: str, read_timeout: str = "60s"):
        proxy, reverse_port = await start_on_free_ports(
            start_proxy,
            tmp_path,
            lambda front, back: [
                f"regular@{front}",
                f"reverse:http://127.0.0.1:{echo_server}@{back}",
            ],
        )
        nginx = start_nginx(reverse_port, location, read_timeout)
        return proxy, nginx, reverse_port

    return start


def codes(session):
    return [(f.code, f.severity.value, f.hop) for f in diagnose(session)]


def answered(hop_count: int):
    return lambda s: len(s.hops) == hop_count and all(
        h.outcome is not Outcome.OPEN for h in s.hops
    )


@pytest.mark.parametrize(
    "location, status, expected",
    [
        (
            NGINX_BROKEN,
            505,  # the backend refuses HTTP/1.0
            [
                ("upgrade-dropped", "error", 2),
                ("connection-dropped", "error", 2),
                ("http10-upstream", "error", 2),
                ("host-changed", "info", 2),
                ("handshake-rejected", "error", 2),
            ],
        ),
        (
            NGINX_HALF_FIXED,
            426,
            [
                ("upgrade-dropped", "error", 2),
                ("connection-dropped", "error", 2),
                ("host-changed", "info", 2),
                ("handshake-rejected", "error", 2),
            ],
        ),
    ],
    ids=["broken", "half-fixed"],
)
async def test_both_sides_of_a_misconfigured_nginx(
    both_sides, echo_server, location, status, expected
):
    proxy, nginx, reverse_port = await both_sides(location)
    with pytest.raises(InvalidStatus) as rejected:
        async with connect(f"ws://127.0.0.1:{nginx.port}/chat", proxy=proxy.url):
            pass
    assert rejected.value.response.status_code == status
    session = await proxy.wait_session(answered(2))
    assert len(proxy.store.sessions()) == 1
    front, back = session.hops
    assert front.mode.startswith("regular@") and back.mode.startswith("reverse:")
    assert front.websocket_key == back.websocket_key
    # keep_host_header: hop 2 records the Host nginx sent, not one mitmproxy rewrote.
    assert header_value(back.request_headers, "Host") == f"127.0.0.1:{reverse_port}"
    assert codes(session) == expected
    rejected_finding = diagnose(session)[-1]
    assert f"the server behind hop 2 at 127.0.0.1:{echo_server}" in rejected_finding.message
    # nginx is named from its Server header on the answer it relayed, and the fixes are its.
    identity = identify_proxy(session, 2)
    assert identity.dialect.name == "nginx"
    assert "Server: nginx/" in identity.evidence[0]
    for finding in diagnose(session)[:2]:
        assert finding.proxy == "nginx" and finding.fix.startswith("nginx: in the http block:")


@pytest.mark.parametrize(
    "location, expected",
    [(NGINX_FIXED, [("host-changed", "info", 2)]), (FIXED_WITH_HOST, [])],
    ids=["fixed", "fixed-with-host"],
)
async def test_both_sides_of_a_correctly_configured_nginx(both_sides, location, expected):
    proxy, nginx, _ = await both_sides(location)
    async with connect(f"ws://127.0.0.1:{nginx.port}/chat", proxy=proxy.url) as ws:
        await ws.send("through nginx")
        assert await ws.recv() == "through nginx"
    session = await proxy.wait_session(answered(2))
    assert session.status == 101 and session.close.code == 1000
    assert codes(session) == expected
    assert all(f.severity is Severity.INFO for f in diagnose(session))
    assert identify_proxy(session, 2).dialect.name == "nginx"
    proxy.store.flush()
    for position in (1, 2):  # each hop, the client-most first
        payloads = [m.payload for m in proxy.store.messages(session.id, 0, 10, position)]
        assert payloads[:2] == [b"through nginx", b"through nginx"]


@pytest.mark.parametrize(
    "location, expected",
    [
        (
            NGINX_BROKEN,
            [
                ("stripped-before-capture", "error", 1),
                ("http10-upstream", "error", 1),
                ("handshake-rejected", "error", 1),
            ],
        ),
        (
            NGINX_HALF_FIXED,
            [("stripped-before-capture", "error", 1), ("handshake-rejected", "error", 1)],
        ),
        (NGINX_FIXED, []),
    ],
    ids=["broken", "half-fixed", "fixed"],
)
async def test_wsinspect_only_behind_nginx(
    start_proxy, start_nginx, echo_server, tmp_path, location, expected
):
    proxy, reverse_port = await start_on_free_ports(
        start_proxy, tmp_path, lambda _, back: [f"reverse:http://127.0.0.1:{echo_server}@{back}"]
    )
    nginx = start_nginx(reverse_port, location)
    if expected:
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://127.0.0.1:{nginx.port}/chat"):
                pass
    else:
        async with connect(f"ws://127.0.0.1:{nginx.port}/chat") as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    session = await proxy.wait_session(answered(1))
    assert codes(session) == expected


async def test_idle_timeout_of_nginx_is_diagnosed(both_sides):
    """A 2 s proxy_read_timeout leaves 1.8-2.0 s of silence at hop 1: the cut across both
    hops is the signature, not a threshold."""
    proxy, nginx, _ = await both_sides(FIXED_WITH_HOST, read_timeout="2s")
    async with connect(f"ws://127.0.0.1:{nginx.port}/quiet", proxy=proxy.url) as ws:
        await ws.send("then silence")
        await ws.recv()
        # nginx cuts both of its connections; wsinspect's hop 1 then closes the client's.
        await asyncio.wait_for(ws.wait_closed(), 10)
    session = await proxy.wait_session(answered(2))
    findings = diagnose(session)
    assert [(f.code, f.hop) for f in findings] == [("abnormal-close", 1), ("idle-timeout", 1)]
    assert "cut both sides" in findings[0].message
    idle = findings[1]
    silence = float(idle.message.split("No frame passed for ")[1].split(" s")[0])
    assert 1.7 <= silence <= 2.5
    assert "hop 1 lost its server, hop 2 its client" in idle.message
    assert "Its idle timeout is proxy_read_timeout (60 s by default)." in idle.message
    assert idle.proxy == "nginx" and "proxy_read_timeout 1h;" in idle.fix and "ping" in idle.fix


async def run_clients(nginx: Nginx, proxy_url: str, count: int) -> None:
    async def client(i: int) -> None:
        async with connect(f"ws://127.0.0.1:{nginx.port}/c/{i}", proxy=proxy_url) as ws:
            await ws.send(f"hello {i}")
            assert await ws.recv() == f"hello {i}"

    await asyncio.gather(*(client(i) for i in range(count)))


def assert_sessions_line_up(proxy, count: int) -> None:
    sessions = proxy.store.sessions()
    assert len(sessions) == count
    proxy.store.flush()
    for session in sessions:
        front, back = session.hops
        path = front.url.split("/", 3)[3]
        assert back.url.endswith("/" + path)
        first_message = proxy.store.messages(session.id, 0, 1, 2)[0].payload  # at the backend's hop
        assert first_message == f"hello {path.split('/')[1]}".encode()
        assert not [f for f in diagnose(session) if f.severity is not Severity.INFO]


async def test_fifty_concurrent_handshakes_through_nginx_are_never_mixed_up(both_sides):
    proxy, nginx, _ = await both_sides(NGINX_FIXED)
    await run_clients(nginx, proxy.url, 50)
    await wait_for(
        lambda: sum(answered(2)(s) for s in proxy.store.sessions()) == 50, 15, "50 sessions"
    )
    assert_sessions_line_up(proxy, 50)
    assert len({s.first_hop.websocket_key for s in proxy.store.sessions()}) == 50


async def test_clients_reusing_one_key_are_told_apart_by_path(both_sides, monkeypatch):
    """Some clients send a constant Sec-WebSocket-Key; correlation must not merge them."""
    monkeypatch.setattr(websockets.client, "generate_key", lambda: "dGhlIHNhbXBsZSBub25jZQ==")
    proxy, nginx, _ = await both_sides(NGINX_FIXED)
    await run_clients(nginx, proxy.url, 20)
    await wait_for(
        lambda: sum(answered(2)(s) for s in proxy.store.sessions()) == 20, 15, "20 sessions"
    )
    assert_sessions_line_up(proxy, 20)


async def test_a_keyless_handshake_through_nginx_lines_up_by_elimination(both_sides, echo_server):
    """A client that sends no Sec-WebSocket-Key: the only handshake under way is its own, so
    the two hops are still one session, and the backend's refusal is diagnosed."""
    proxy, nginx, _ = await both_sides(NGINX_FIXED)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(f"CONNECT 127.0.0.1:{nginx.port} HTTP/1.1\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.write(
            f"GET /nokey HTTP/1.1\r\nHost: 127.0.0.1:{nginx.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 400")
    finally:
        writer.close()
    session = await proxy.wait_session(answered(2))
    assert len(proxy.store.sessions()) == 1
    assert [h.websocket_key for h in session.hops] == [None, None]
    assert codes(session) == [("host-changed", "info", 2), ("handshake-rejected", "error", 2)]
    assert f"the server behind hop 2 at 127.0.0.1:{echo_server}" in diagnose(session)[-1].message


async def test_mitmproxys_host_rewrite_comes_back_with_keep_host_header_false(
    start_proxy, start_nginx, echo_server, tmp_path
):
    """wsinspect sets keep_host_header for reverse modes (hop 2's Host is what nginx sent, as
    the tests above check); `--set keep_host_header=false` restores mitmproxy's rewrite."""
    proxy, reverse_port = await start_on_free_ports(
        start_proxy, tmp_path, lambda _, back: [f"reverse:http://127.0.0.1:{echo_server}@{back}"]
    )
    assert proxy.engine.master.options.keep_host_header
    await proxy.engine.stop()
    rewriting, reverse_port = await start_on_free_ports(
        lambda **kw: start_proxy(settings=["keep_host_header=false"], **kw),
        tmp_path,
        lambda _, back: [f"reverse:http://127.0.0.1:{echo_server}@{back}"],
        name="rewriting",
    )
    nginx = start_nginx(reverse_port, NGINX_FIXED)
    async with connect(f"ws://127.0.0.1:{nginx.port}/chat") as ws:
        await ws.send("hi")
        await ws.recv()
    session = await rewriting.wait_session(answered(1))
    assert header_value(session.first_hop.request_headers, "Host") == f"127.0.0.1:{echo_server}"
