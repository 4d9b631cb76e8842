"""Ping round trips, how each side's connection ended and RFC 6455 violations in the app, at
80×24, from a session recorded through a real wsinspect proxy with the raw relay."""

from __future__ import annotations

import asyncio
import re

from textual.containers import VerticalScroll

from tests.conftest import wait_for
from tests.rawpeers import frame, raw_client, raw_server, read_frame
from tests.test_ui import message_list, open_first_session
from tests.ui_helpers import screen_text
from wsinspect.model import MessageType
from wsinspect.ui import WsInspectApp
from wsinspect.ui.format import milliseconds

PING, PONG, TEXT, CLOSE = 0x9, 0xA, 0x1, 0x8
SIZE = (80, 24)
BAD_FRAME = (1002).to_bytes(2, "big") + b"bad frame"


async def answer_ping_then_close_on_the_bad_frame(reader, writer) -> None:
    """The server: pongs the ping a little later, closes 1002 when the bad frame comes."""
    opcode, payload = await read_frame(reader)
    assert opcode == PING
    await asyncio.sleep(0.02)
    writer.write(frame(PONG, payload, mask=False))
    await writer.drain()
    opcode, _ = await read_frame(reader)  # the text frame with RSV1 set
    assert opcode == TEXT
    writer.write(frame(CLOSE, BAD_FRAME, mask=False))
    await writer.drain()
    await read_frame(reader)  # the client's answering close
    writer.close()


async def ping_then_send_a_frame_with_rsv1(proxy_port: int, server_port: int) -> None:
    """The client: a ping, then a text frame with RSV1 set though no extension was agreed."""
    reader, writer = await raw_client(
        proxy_port, f"http://127.0.0.1:{server_port}/rtt", f"127.0.0.1:{server_port}"
    )
    writer.write(frame(PING, b"heartbeat", mask=True))
    assert await read_frame(reader) == (PONG, b"heartbeat")
    writer.write(frame(TEXT, b"compressed?", mask=True, rsv=0b100))
    assert await read_frame(reader) == (CLOSE, BAD_FRAME)
    writer.write(frame(CLOSE, BAD_FRAME, mask=True))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the server's FIN
    writer.close()


async def test_pong_rtt_summary_connection_ends_and_violations_are_shown(start_proxy):
    proxy = await start_proxy(settings=["wsinspect_relay=raw"])
    server = await raw_server(answer_ping_then_close_on_the_bad_frame)
    async with server:
        await ping_then_send_a_frame_with_rsv1(proxy.port, server.sockets[0].getsockname()[1])
        session = await proxy.wait_session(
            lambda s: s.close is not None and s.close.client_end and s.close.server_end
        )
    messages = proxy.store.messages(session.id, 0, 10)
    (pong,) = [m for m in messages if m.type is MessageType.PONG]
    assert pong.rtt >= 0.02
    assert session.ping_rtt.count == 1

    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_first_session(app, pilot)
        listing = message_list(app)
        await pilot.press("home")
        await pilot.pause()
        text = screen_text(app)
        pong_row = next(line for line in text.splitlines() if "pong" in line and "S→C" in line)
        assert f"rtt {milliseconds(pong.rtt)} heartbeat" in pong_row, pong_row
        ping_row = next(line for line in text.splitlines() if "ping" in line and "C→S" in line)
        assert "rtt" not in ping_row
        assert listing.row_count == len(messages)
        await pilot.press("down")  # the pong: its round trip in the line above its payload
        await pilot.pause()
        info = next(line for line in screen_text(app).splitlines() if "#1 server → client" in line)
        assert "pong  9 B" in info and f"rtt {milliseconds(pong.rtt)}" in info, info
        ms = f"{pong.rtt * 1000:.1f}"
        assert f"rtt {ms}/{ms}/{ms} ms" in text  # the summary: one ping, min = mean = max

        await pilot.resize_terminal(64, 24)  # too narrow for the round trips: left out whole
        await pilot.pause()
        summary = screen_text(app).splitlines()[2]
        assert "hops 1" in summary and "rtt" not in summary, summary
        await pilot.resize_terminal(*SIZE)
        await pilot.pause()

        await pilot.press("h")
        await pilot.pause()
        app.screen.query_one("#handshake-scroll", VerticalScroll).scroll_end(animate=False)
        await pilot.pause()
        text = screen_text(app)
        assert "close 1002 'bad frame' by server (the client broke the protocol)" in text, text
        assert "the client's connection ended with a FIN" in text
        assert "the server's connection ended with a FIN" in text
        assert "Protocol violations (RFC 6455)" in text
        (violation,) = session.first_hop.violations
        assert re.search(r"RSV", violation.rule)
        assert f"✗ client: {violation.rule}" in text
        assert f"    {violation.detail}" in text
