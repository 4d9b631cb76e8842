"""Resending into live sessions: real websockets peers through a real mitmproxy Master, and the
standalone addon inside a real mitmdump."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest
from mitmproxy import exceptions
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from wsinspect.model import Outcome
from wsinspect.resend import ResendError, SessionClosedError, decode_payload
from wsinspect.store import SessionStore

from .conftest import mitmdump, wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def recording_echo():
    """An echo server that also keeps what it received; yields (port, received)."""
    received: list[str | bytes] = []

    async def handler(ws):
        async for message in ws:
            received.append(message)
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 0) as server:
        yield server.sockets[0].getsockname()[1], received


def recorded(store, session_id):
    return [
        (m.direction, m.type.value, m.payload, m.injected)
        for m in store.messages(session_id, 0, 1000)
        if m.type.value in ("text", "binary")
    ]


async def test_resent_text_and_binary_reach_the_server_recorded_as_injected(
    proxy, recording_echo
):
    port, received = recording_echo
    async with connect(f"ws://127.0.0.1:{port}/live", proxy=proxy.url) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\xff")
        assert await ws.recv() == b"\x00\xff"
        session = await proxy.wait_session(lambda s: s.stats.count >= 4)

        # The server echoes the resent messages, so the client sees them come back.
        text = proxy.engine.resender.inject(session.id, 0)
        assert (text.to, text.payload) == ("server", b"hello")
        assert await ws.recv() == "hello"
        binary = proxy.engine.resender.inject(session.id, 2)
        assert (binary.to, binary.payload) == ("server", b"\x00\xff")
        assert await ws.recv() == b"\x00\xff"
        assert received == ["hello", b"\x00\xff", "hello", b"\x00\xff"]
        await wait_for(lambda: session.stats.count >= 8, what="the injected messages recorded")

    assert recorded(proxy.store, session.id) == [
        ("client", "text", b"hello", False),
        ("server", "text", b"hello", False),
        ("client", "binary", b"\x00\xff", False),
        ("server", "binary", b"\x00\xff", False),
        ("client", "text", b"hello", True),
        ("server", "text", b"hello", False),
        ("client", "binary", b"\x00\xff", True),
        ("server", "binary", b"\x00\xff", False),
    ]


async def test_edited_messages_arrive_edited_through_the_mitmproxy_command(
    proxy, recording_echo
):
    port, received = recording_echo
    commands = proxy.engine.master.commands
    async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url) as ws:
        await ws.send("original")
        await ws.recv()
        await ws.send(b"\x01\x02")
        await ws.recv()
        session = await proxy.wait_session(lambda s: s.stats.count >= 4)

        commands.execute(f'wsinspect.inject {session.id} 0 server "edited text"')
        assert await ws.recv() == "edited text"
        commands.execute(f"wsinspect.inject {session.id} 2 original 'ca fe' hex")
        assert await ws.recv() == b"\xca\xfe"
        commands.execute(f"wsinspect.inject {session.id} 2 server AAE= base64")
        assert await ws.recv() == b"\x00\x01"
        commands.execute(f"wsinspect.resend {session.id} 0")
        assert await ws.recv() == "original"
    assert received == [
        "original", b"\x01\x02", "edited text", b"\xca\xfe", b"\x00\x01", "original"
    ]
    injected = [m for m in recorded(proxy.store, session.id) if m[3]]
    assert [m[2] for m in injected] == [b"edited text", b"\xca\xfe", b"\x00\x01", b"original"]


async def test_injection_to_the_client_reaches_only_the_client(proxy, recording_echo):
    port, received = recording_echo
    async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url) as ws:
        await ws.send("ping me")
        assert await ws.recv() == "ping me"
        session = await proxy.wait_session(lambda s: s.stats.count >= 2)

        again = proxy.engine.resender.inject(session.id, 1)  # the server's answer, again
        assert again.to == "client"
        assert await ws.recv() == "ping me"
        proxy.engine.resender.inject(session.id, 0, to="client", payload="to you ✓".encode())
        assert await ws.recv() == "to you ✓"
        await wait_for(lambda: session.stats.count >= 4, what="the injected messages recorded")
    assert received == ["ping me"]
    assert recorded(proxy.store, session.id)[2:] == [
        ("server", "text", b"ping me", True),
        ("server", "text", "to you ✓".encode(), True),
    ]


async def test_closed_sessions_and_bad_requests_are_clear_errors(proxy, echo_server):
    resender = proxy.engine.resender
    async with connect(f"ws://127.0.0.1:{echo_server}/", proxy=proxy.url) as ws:
        await ws.send("x")
        await ws.recv()
        await (await ws.ping(b"p"))
        session = await proxy.wait_session(lambda s: s.stats.count >= 4)
        with pytest.raises(ResendError, match="is a ping frame; only text and binary"):
            resender.inject(session.id, 2)
        with pytest.raises(ResendError, match="has no message 99"):
            resender.inject(session.id, 99)
        with pytest.raises(ResendError, match="unknown destination 'nowhere'"):
            resender.inject(session.id, 0, to="nowhere")
        with pytest.raises(ResendError, match="must be valid UTF-8"):
            resender.inject(session.id, 0, payload=b"\xff\xfe")
        with pytest.raises(ResendError, match="there is no session #42"):
            resender.inject(42, 0)
    await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    with pytest.raises(SessionClosedError, match=rf"session #{session.id} is closed.*replay"):
        resender.inject(session.id, 0)
    with pytest.raises(exceptions.CommandError, match="is closed"):
        proxy.engine.master.commands.execute(f"wsinspect.resend {session.id} 0")
    with pytest.raises(ResendError, match="not valid hex"):
        decode_payload("zz", "hex")


async def test_resend_from_a_script_in_a_real_mitmdump(tmp_path, confdir, recording_echo):
    """`mitmdump -s addons/wsinspect.py` plus a user script that calls the command."""
    port, received = recording_echo
    script = tmp_path / "resend_on_request.py"
    script.write_text(
        "from mitmproxy import ctx\n"
        "def websocket_message(flow):\n"
        "    message = flow.websocket.messages[-1]\n"
        "    if message.from_client and not message.injected:\n"
        "        ctx.master.commands.execute('wsinspect.resend 1 0 server')\n"
    )
    capture = tmp_path / "mitmdump.db"
    process = await asyncio.create_subprocess_exec(
        *mitmdump(confdir), "-s", "addons/wsinspect.py", "-s", str(script),
        "--listen-host", "127.0.0.1", "--listen-port", "0",
        "--set", f"wsinspect_capture={capture}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
    )
    try:
        while not (match := re.search(
            rb"listening at 127\.0\.0\.1:(\d+)",
            await asyncio.wait_for(process.stdout.readline(), 20),
        )):
            pass
        proxy_url = f"http://127.0.0.1:{int(match.group(1))}"
        async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy_url) as ws:
            await ws.send("resend-me")
            assert await ws.recv() == "resend-me"
            assert await ws.recv() == "resend-me"  # the resent copy, echoed
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 20)
    assert received == ["resend-me", "resend-me"]
    store = SessionStore.open(capture)
    assert [(m.direction, m.injected) for m in store.messages(1, 0, 4)] == [
        ("client", False),
        ("client", True),
        ("server", False),
        ("server", False),
    ]
