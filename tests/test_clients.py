"""Every real client gets through (issue 11): each stack reaches an HTTP proxy its own way.

- Python `websockets`: CONNECT tunnel (ws and wss) — tests/test_recorder.py;
- aiohttp: absolute-form `GET ws://…` for ws, CONNECT for wss;
- Node's `ws` with a proxy agent: absolute-form `GET http://…` for ws, CONNECT for wss;
- Chromium (headless, --proxy-server): CONNECT for ws and wss.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from wsinspect.model import Outcome

NODE_DIR = Path(__file__).parent / "node"


def texts(proxy, session) -> list[tuple[str, bytes]]:
    proxy.store.flush()
    return [
        (m.direction, m.payload)
        for m in proxy.store.messages(session.id, 0, 100)
        if m.type.value == "text"
    ]


async def test_aiohttp_wss_through_connect(start_proxy, tls_echo_server):
    proxy = await start_proxy(settings=["ssl_insecure=true"])
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            f"wss://localhost:{tls_echo_server}/aio-tls", proxy=proxy.url, ssl=proxy.client_ssl()
        ) as ws:
            await ws.send_str("aiohttp over tls")
            assert (await ws.receive()).data == "aiohttp over tls"
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    assert session.url == f"wss://localhost:{tls_echo_server}/aio-tls"
    assert texts(proxy, session) == [("client", b"aiohttp over tls"), ("server", b"aiohttp over tls")]


def node() -> str:
    path = shutil.which("node")
    assert path, "node is needed for the Node client tests (install.sh --test installs it)"
    assert (NODE_DIR / "node_modules" / "ws").is_dir(), "run install.sh --test (npm ci in tests/node)"
    return path


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_node_ws_with_a_proxy_agent(start_proxy, echo_server, tls_echo_server, scheme):
    proxy = await start_proxy(settings=["ssl_insecure=true"])
    port = echo_server if scheme == "ws" else tls_echo_server
    url = f"{scheme}://localhost:{port}/node"
    result = await asyncio.to_thread(
        subprocess.run,
        [node(), str(NODE_DIR / "ws_client.mjs"), url, proxy.url, f"hello from node {scheme}"],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(proxy.confdir / "mitmproxy-ca-cert.pem")},
    )
    assert result.returncode == 0, result.stderr
    assert f"echo: hello from node {scheme}" in result.stdout
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    hop = session.first_hop
    if scheme == "ws":  # the agent sends an absolute-form request line
        assert hop.request_line == f"GET http://localhost:{port}/node HTTP/1.1"
    else:  # inside a CONNECT tunnel
        assert hop.request_line == "GET /node HTTP/1.1"
    assert session.url == url
    assert session.close.code == 1000 and session.close.reason == "done"
    assert texts(proxy, session)[0] == ("client", f"hello from node {scheme}".encode())


PAGE = """<!doctype html><title>wsinspect</title><script>
const ws = new WebSocket(location.href.replace(/^http/, "ws").replace(/\\/page$/, "/socket"));
ws.onopen = () => ws.send("hello from chromium");
ws.onmessage = (e) => { document.title = e.data; ws.close(1000, "bye"); };
</script>"""


@pytest.fixture
async def page_server(server_cert):
    """An aiohttp app serving a page that opens a WebSocket back to it, over http and https."""

    async def page(request):
        return web.Response(text=PAGE, content_type="text/html")

    async def socket(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.add_routes([web.get("/page", page), web.get("/socket", socket)])
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*server_cert)
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    secure = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await plain.start()
    await secure.start()
    ports = {
        "ws": plain._server.sockets[0].getsockname()[1],
        "wss": secure._server.sockets[0].getsockname()[1],
    }
    yield ports
    await runner.cleanup()


def chromium() -> str:
    path = shutil.which("chromium")
    assert path, "chromium is needed for this test (install.sh --test installs it)"
    return path


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_chromium_through_the_proxy(start_proxy, page_server, tmp_path, scheme):
    proxy = await start_proxy(settings=["ssl_insecure=true"])
    http_scheme = "http" if scheme == "ws" else "https"
    url = f"{http_scheme}://localhost:{page_server[scheme]}/page"
    process = await asyncio.create_subprocess_exec(
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
        f"--proxy-server={proxy.url}", "--proxy-bypass-list=<-loopback>",
        # The page's certificate comes from the proxy's CA, which this profile does not trust.
        "--ignore-certificate-errors", "--remote-debugging-port=0", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        session = await proxy.wait_session(
            lambda s: s.outcome is Outcome.CLOSED and s.url.endswith("/socket"), timeout=60
        )
    finally:
        process.kill()
        await process.wait()
    assert session.url == f"{scheme}://localhost:{page_server[scheme]}/socket"
    assert session.first_hop.request_line == "GET /socket HTTP/1.1"  # inside CONNECT
    assert texts(proxy, session) == [
        ("client", b"hello from chromium"), ("server", b"hello from chromium")
    ]
    assert session.close.code == 1000
