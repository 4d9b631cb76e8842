"""Load and hostile traffic: nothing breaks, nothing is lost (issue 8)."""

from __future__ import annotations

import asyncio
import resource
import struct

import pytest
from websockets.asyncio.client import connect

from wsinspect.model import MessageType, Outcome

from .conftest import wait_for
from .rawpeers import frame, raw_client, raw_server, read_frame, upgrade_request

SESSIONS = 1000


@pytest.fixture(autouse=True)
def enough_file_descriptors():
    """Each session holds four sockets in this process (client, proxy in and out, server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 8 * SESSIONS))
    assert wanted >= 5 * SESSIONS, f"the hard limit of open files ({hard}) is too low"
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_thousand_concurrent_sessions_none_dropped(proxy, echo_server, relay_path):
    opened = asyncio.Event()
    connected = 0

    async def session(i: int) -> None:
        nonlocal connected
        async with connect(
            f"ws://127.0.0.1:{echo_server}/s{i}", proxy=proxy.url, open_timeout=120
        ) as ws:
            connected += 1
            if connected == SESSIONS:
                opened.set()
            await asyncio.wait_for(opened.wait(), 120)  # all open at once
            for j in range(3):
                await ws.send(f"{i}/{j}")
                assert await ws.recv() == f"{i}/{j}"

    # Open in waves so the listen backlog is not the thing under test.
    tasks = []
    for i in range(SESSIONS):
        tasks.append(asyncio.create_task(session(i)))
        if i % 100 == 99:
            await asyncio.sleep(0.2)
    await asyncio.gather(*tasks)
    await wait_for(
        lambda: len(proxy.store.sessions()) == SESSIONS
        and all(s.outcome is Outcome.CLOSED for s in proxy.store.sessions()),
        timeout=60,
    )
    proxy.store.flush()
    for s in proxy.store.sessions():
        i = s.url.rsplit("/s", 1)[1]
        # websockets' keepalive pings may come too, each answered
        by_type = s.stats.by_type
        closes = 2 if relay_path == "raw" else 1  # the raw relay records the answer too
        assert (by_type["text"], by_type["close"]) == (6, closes), s.url
        assert by_type.get("ping", 0) >= by_type.get("pong", 0)
        payloads = [
            m.payload for m in proxy.store.messages(s.id, 0, 20) if m.type is MessageType.TEXT
        ]
        assert payloads == [f"{i}/{j}".encode() for j in range(3) for _ in (0, 1)]


async def healthy(proxy, echo_port: int) -> None:
    async with connect(f"ws://127.0.0.1:{echo_port}/healthy", proxy=proxy.url) as ws:
        await ws.send("ok")
        assert await ws.recv() == "ok"


async def test_a_length_field_that_lies_then_a_reset(proxy, echo_server):
    """A frame announcing 100 bytes that sends 10, then the client resets mid-frame."""
    reader, writer = await raw_client(
        proxy.port, f"http://127.0.0.1:{echo_server}/liar", f"127.0.0.1:{echo_server}"
    )
    writer.write(frame(0x1, b"complete", mask=True))
    assert await read_frame(reader) == (0x1, b"complete")
    writer.write(bytes([0x81, 0x80 | 100]) + b"\x00\x00\x00\x00" + b"only ten b")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    assert session.close.abnormal and session.close.by == "client"
    assert session.stats.by_type == {"text": 2}
    await healthy(proxy, echo_server)


async def test_a_huge_frame_announced_and_never_sent(proxy, echo_server, relay_path):
    """A 512 MiB frame header with no payload: the proxy must not reserve it, and must go on
    serving others while it waits."""
    reader, writer = await raw_client(
        proxy.port, f"http://127.0.0.1:{echo_server}/huge", f"127.0.0.1:{echo_server}"
    )
    writer.write(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 512 * 2**20) + b"\x00" * 4)
    writer.write(b"a little of it")
    await writer.drain()
    await healthy(proxy, echo_server)
    writer.transport.abort()
    session = await proxy.wait_session(
        lambda s: s.url.endswith("/huge") and s.outcome is Outcome.CLOSED
    )
    if relay_path == "raw":
        # the header reaches the server, which refuses the frame itself (1009, too big)
        assert (session.close.by, session.close.code) == ("server", 1009)
        assert session.stats.by_type == {"close": 1}
    else:
        assert session.close.abnormal
        assert session.stats.count == 0


@pytest.mark.parametrize(
    "extra",
    [
        "Upgrade: websocket\r\nSec-WebSocket-Key: second-key\r\n",  # duplicated headers
        "X-Garbage: \x7f\x80\xfe\xff\r\n",  # bytes that are no text
    ],
    ids=["duplicate-headers", "garbage-header-value"],
)
async def test_odd_handshakes_are_recorded_as_sent(proxy, echo_server, extra):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    request, _ = upgrade_request(
        f"http://127.0.0.1:{echo_server}/odd", f"127.0.0.1:{echo_server}", ""
    )
    writer.write(request[:-2] + extra.encode("latin-1") + b"\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.transport.abort()
    session = await proxy.wait_session(lambda s: s.outcome is not Outcome.OPEN)
    names = [k.lower() for k, _ in session.first_hop.request_headers]
    if "duplicate" in extra or "second-key" in extra:
        assert names.count("upgrade") == 2 and names.count("sec-websocket-key") == 2
    else:
        assert ("X-Garbage", "\x7f\x80\xfe\xff") in session.first_hop.request_headers
    status = int(head.split()[1])
    if status == 502:  # the server hung up on it: the proxy answered, the session failed
        assert session.outcome is Outcome.FAILED and session.first_hop.error
    else:
        assert session.status == status
    await healthy(proxy, echo_server)


async def test_server_reset_in_the_middle_of_a_frame(proxy):
    async def half_frame(reader, writer):
        await read_frame(reader)
        writer.write(bytes([0x81, 50]) + b"half of it")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.transport.abort()

    server = await raw_server(half_frame)
    port = server.sockets[0].getsockname()[1]
    async with server:
        async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url) as ws:
            await ws.send("go")
            await ws.wait_closed()
        session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    assert session.close.abnormal and session.close.by == "server"
    assert [m.type for m in proxy.store.messages(session.id, 0, 5)] == [MessageType.TEXT]
