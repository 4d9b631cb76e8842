"""The recorder with real peers: websockets clients through a real mitmproxy Master."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
from pathlib import Path

import pytest

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response
from mitmproxy.proxy.layers import websocket as websocket_layer

from wsinspect.model import MessageType, Outcome, accept_for_key, header_value
from wsinspect.store import SessionStore

from .builders import free_port
from .conftest import mitmdump, wait_for
from .rawpeers import frame, raw_client, upgrade_request

ROOT = Path(__file__).resolve().parent.parent


def kinds(messages):
    return [(m.direction, m.type.value, m.payload) for m in messages]


async def test_text_binary_ping_pong_and_close_both_ways(proxy, echo_server, relay_path):
    async with connect(f"ws://127.0.0.1:{echo_server}/chat?room=1", proxy=proxy.url) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\xffbinary")
        assert await ws.recv() == b"\x00\xffbinary"
        await (await ws.ping(b"are-you-there"))
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    proxy.store.flush()
    assert session.url == f"ws://127.0.0.1:{echo_server}/chat?room=1"
    assert session.status == 101
    hop = session.first_hop
    assert hop.mode == "regular"
    assert hop.http_version == "HTTP/1.1"
    assert hop.request_line == "GET /chat?room=1 HTTP/1.1"  # inside the CONNECT tunnel
    assert [k for k, _ in hop.request_headers][:2] == ["Host", "Upgrade"]  # wire order, case
    assert header_value(hop.response_headers, "Sec-WebSocket-Accept") == accept_for_key(
        hop.websocket_key
    )
    messages = proxy.store.messages(session.id, 0, 100)
    assert kinds(messages) == [
        ("client", "text", b"hello"),
        ("server", "text", b"hello"),
        ("client", "binary", b"\x00\xffbinary"),
        ("server", "binary", b"\x00\xffbinary"),
        ("client", "ping", b"are-you-there"),
        ("server", "pong", b"are-you-there"),
        ("client", "close", (1000).to_bytes(2, "big")),
        # the raw relay records the answering close too; mitmproxy's layer does not report it
        *([("server", "close", (1000).to_bytes(2, "big"))] if relay_path == "raw" else []),
    ]
    assert [m.index for m in messages] == list(range(len(messages)))
    assert all(m.timestamp >= hop.timestamp_start for m in messages)
    assert session.close.code == 1000 and session.close.by == "client"
    assert not session.close.abnormal


async def test_frame_tap_is_installed_in_mitmproxys_websocket_layer(proxy):
    """The ping/pong/close recording relies on this seam; a mitmproxy upgrade that removes
    it must fail here (and the ping test above)."""
    assert hasattr(websocket_layer, "WebsocketConnection")
    assert websocket_layer.WebsocketConnection.wsinspect_taps is not None
    assert callable(websocket_layer.WebsocketConnection.events)


async def test_server_close_with_reason(proxy, relay_path):
    async def closer(ws):
        await ws.recv()
        await ws.close(4001, "go away")

    async with serve(closer, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url) as ws:
            await ws.send("bye?")
            await ws.wait_closed()
            assert ws.close_code == 4001
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    assert (session.close.code, session.close.reason, session.close.by) == (
        4001, "go away", "server"
    )
    proxy.store.flush()
    closes = [m for m in proxy.store.messages(session.id, 0, 10) if m.type is MessageType.CLOSE]
    assert [(m.direction, m.close_code_reason()) for m in closes] == [
        ("server", (4001, "go away")),
        # the client's answer (websockets echoes the code), recorded by the raw relay
        *([("client", (4001, "go away"))] if relay_path == "raw" else []),
    ]


async def test_fragmented_and_deflated_messages(proxy, echo_server):
    async with connect(
        f"ws://127.0.0.1:{echo_server}/", proxy=proxy.url, compression="deflate"
    ) as ws:
        await ws.send(["frag", "mented ", "text"])
        assert await ws.recv() == "fragmented text"
        big = "compress me " * 1000
        await ws.send(big)
        assert await ws.recv() == big
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    proxy.store.flush()
    assert "permessage-deflate" in header_value(
        session.first_hop.response_headers, "Sec-WebSocket-Extensions"
    )
    texts = [m for m in proxy.store.messages(session.id, 0, 10) if m.type is MessageType.TEXT]
    assert [m.payload for m in texts] == [b"fragmented text"] * 2 + [big.encode()] * 2
    assert texts[2].size == len(big)


async def test_wss_through_the_proxy_with_its_ca(start_proxy, tls_echo_server, relay_path):
    proxy = await start_proxy(settings=["ssl_insecure=true"])
    async with connect(
        f"wss://localhost:{tls_echo_server}/secure", proxy=proxy.url, ssl=proxy.client_ssl()
    ) as ws:
        await ws.send("over tls")
        assert await ws.recv() == "over tls"
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    assert session.url == f"wss://localhost:{tls_echo_server}/secure"
    assert session.stats.by_type == {"text": 2, "close": 2 if relay_path == "raw" else 1}


async def test_upgrade_answered_426_is_a_rejected_session(proxy):
    def refuse(connection, request):
        return Response(426, "Upgrade Required", Headers({"Sec-WebSocket-Version": "13"}), b"no")

    async with serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        try:
            async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url):
                raise AssertionError("the upgrade should have been refused")
        except Exception as e:  # websockets raises InvalidStatus
            assert "426" in str(e)
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.REJECTED)
    assert session.status == 426
    assert session.first_hop.response_reason == "Upgrade Required"
    assert session.timestamp_end is not None


async def test_unreachable_server_is_a_failed_session(proxy):
    dead_port = free_port()  # free a moment ago: nothing listens there
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    request, _ = upgrade_request(f"http://127.0.0.1:{dead_port}/", f"127.0.0.1:{dead_port}")
    writer.write(request)
    answer = await reader.read(4096)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 502")
    session = await proxy.wait_session(lambda s: s.outcome is not Outcome.OPEN)
    assert session.outcome in (Outcome.FAILED, Outcome.REJECTED)
    hop = session.first_hop
    assert hop.request_line == f"GET http://127.0.0.1:{dead_port}/ HTTP/1.1"  # absolute form
    assert (hop.error or hop.response_reason)


async def test_abrupt_client_disconnect_is_an_abnormal_close(proxy, echo_server):
    origin = f"127.0.0.1:{echo_server}"
    reader, writer = await raw_client(proxy.port, f"http://{origin}/", origin)
    # One masked text frame "hi", then the socket is torn down without a close frame.
    writer.write(frame(0x1, b"hi", mask=True))
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    assert session.close.abnormal
    assert session.close.by == "client"
    assert "without a close frame" in session.close.abnormal_reason
    proxy.store.flush()
    assert [m.payload for m in proxy.store.messages(session.id, 0, 10)][:2] == [b"hi", b"hi"]


async def test_flow_messages_are_trimmed_once_recorded(start_proxy, echo_server):
    """mitmproxy's path keeps every message in its flow; the recorder trims them."""
    proxy = await start_proxy(settings=["wsinspect_relay=mitmproxy"])
    seen: list[int] = []

    class Probe:  # runs after the recorder in the same hook
        def websocket_message(self, flow):
            seen.append(len(flow.websocket.messages))

    proxy.engine.master.addons.add(Probe())
    async with connect(f"ws://127.0.0.1:{echo_server}/", proxy=proxy.url) as ws:
        for i in range(50):
            await ws.send(f"m{i}")
            await ws.recv()
    await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    assert len(seen) == 100 and max(seen) == 1
    assert proxy.store.sessions()[0].stats.by_type["text"] == 100


async def test_payloads_over_the_cap_keep_size_and_hash(start_proxy, echo_server):
    proxy = await start_proxy(settings=["wsinspect_max_payload=1000"])
    payload = os.urandom(5000)
    async with connect(f"ws://127.0.0.1:{echo_server}/", proxy=proxy.url, max_size=None) as ws:
        await ws.send(payload)
        assert await ws.recv() == payload
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    proxy.store.flush()
    first = proxy.store.messages(session.id, 0, 1)[0]
    assert first.size == 5000 and len(first.payload) == 1000 and first.truncated
    assert first.sha256 == hashlib.sha256(payload).hexdigest()


async def test_many_concurrent_sessions_stay_apart(proxy, echo_server):
    async def one(i: int):
        async with connect(f"ws://127.0.0.1:{echo_server}/c{i}", proxy=proxy.url) as ws:
            for j in range(5):
                await ws.send(f"{i}:{j}")
                assert await ws.recv() == f"{i}:{j}"

    await asyncio.gather(*(one(i) for i in range(30)))
    await wait_for(
        lambda: len(proxy.store.sessions()) == 30
        and all(s.outcome is Outcome.CLOSED for s in proxy.store.sessions())
    )
    proxy.store.flush()
    for session in proxy.store.sessions():
        i = session.url.rsplit("/c", 1)[1]
        texts = [m.payload.decode() for m in proxy.store.messages(session.id, 0, 20)
                 if m.type is MessageType.TEXT]
        assert texts == [f"{i}:{j}" for j in range(5) for _ in (0, 1)]


@pytest.mark.parametrize("relay", [None, "raw"], ids=["default", "opt-in-raw"])
async def test_standalone_addon_uses_mitmproxys_path_unless_told_raw(
    tmp_path, confdir, echo_server, relay
):
    """`mitmdump -s addons/wsinspect.py` keeps mitmproxy's path (its message hook sees every
    message); `--set wsinspect_relay=raw` opts into the raw relay, which records the answering
    close frame mitmproxy's layer does not report."""
    seen = tmp_path / "seen.txt"
    script = tmp_path / "count_hook.py"
    script.write_text(
        "def websocket_message(flow):\n"
        f"    open({str(seen)!r}, 'a').write('m')\n"
    )
    capture = tmp_path / "standalone.db"
    process = await asyncio.create_subprocess_exec(
        *mitmdump(confdir), "-s", "addons/wsinspect.py", "-s", str(script),
        "--listen-host", "127.0.0.1", "--listen-port", "0",
        "--set", f"wsinspect_capture={capture}",
        *(["--set", f"wsinspect_relay={relay}"] if relay else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    try:
        while not (match := re.search(
            rb"listening at 127\.0\.0\.1:(\d+)",
            await asyncio.wait_for(process.stdout.readline(), 20),
        )):
            pass
        proxy_url = f"http://127.0.0.1:{int(match.group(1))}"
        async with connect(f"ws://127.0.0.1:{echo_server}/", proxy=proxy_url) as ws:
            await ws.send("one")
            assert await ws.recv() == "one"
        await asyncio.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 20)
    store = SessionStore.open(capture)
    kinds = [(m.direction, m.type.value) for m in store.messages(1, 0, 10)]
    if relay == "raw":
        assert kinds == [("client", "text"), ("server", "text"), ("client", "close"), ("server", "close")]
        assert not seen.exists()  # the raw relay does not pass messages through the hook
    else:
        assert kinds == [("client", "text"), ("server", "text"), ("client", "close")]
        assert seen.read_text() == "mm"
    store.close()
