"""The app driven with Textual's Pilot against a live proxy and real WebSocket traffic."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from tests.conftest import echo_handler, wait_for
from tests.ui_helpers import screen_text
from wsinspect.model import MessageType
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.commands import BindingCommands
from wsinspect.ui.message_list import MessageList
from wsinspect.ui.payload import PayloadPane
from wsinspect.ui.session_view import SessionScreen
from wsinspect.ui.sessions import COLUMNS, SessionsTable

COLUMN_KEYS = [key for key, _ in COLUMNS]

SIZE = (140, 45)
JSON_PAYLOAD = json.dumps({"op": "subscribe", "topics": ["prices", "news"]})
BINARY_PAYLOAD = bytes(range(20))
HOSTILE = "[bold red]not markup[/] \x1b[31mnot red\x1b[0m \x1b]0;pwned\x07 [link=x]y[/link]"


async def chat(proxy, port: int, path: str = "/chat") -> None:
    async with connect(
        f"ws://127.0.0.1:{port}{path}", proxy=proxy.url, subprotocols=["chat"]
    ) as ws:
        await ws.send("hello")
        await ws.recv()
        await ws.send(JSON_PAYLOAD)
        await ws.recv()
        await ws.send(BINARY_PAYLOAD)
        await ws.recv()
        await ws.send(HOSTILE)
        await ws.recv()


async def chat_server():
    return serve(echo_handler, "127.0.0.1", 0, subprotocols=["chat"])



def chat_rows(relay_path: str) -> int:
    """The messages of `chat`: 4 each way and the client's close frame, and under the raw
    relay the server's answering close frame too (mitmproxy's path does not record it)."""
    return 10 if relay_path == "raw" else 9


def message_list(app) -> MessageList:
    return app.screen.query_one(MessageList)


async def open_first_session(app, pilot) -> SessionScreen:
    # The table replaces the empty state once the first session arrives: wait for it to mount.
    table = await wait_for(
        lambda: next(iter(app.screen.query(SessionsTable)), None), what="the sessions table"
    )
    await wait_for(lambda: table.row_count >= 1, what="a session row")
    table.move_cursor(row=0)
    await pilot.press("enter")
    await wait_for(lambda: isinstance(app.screen, SessionScreen), what="the session view")
    await pilot.pause()
    return app.screen


async def test_sessions_appear_and_a_session_shows_handshake_messages_and_payloads(
    start_proxy, relay_path
):
    proxy = await start_proxy()
    async with await chat_server() as server:
        port = server.sockets[0].getsockname()[1]
        app = WsInspectApp(proxy.store, proxy.engine)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            text = screen_text(app)
            assert "No WebSocket sessions yet" in text
            assert f"listens at 127.0.0.1:{proxy.port}" in text
            assert "mitmproxy-ca-cert.pem" in text

            await chat(proxy, port)
            table = app.screen.query_one(SessionsTable)
            await wait_for(lambda: table.row_count == 1, what="the session row")
            # The status bar may say so a frame before the list shows it: wait for the row.
            url = f"ws://127.0.0.1:{port}/chat"
            await wait_for(lambda: url in screen_text(app) and " closed " in screen_text(app),
                           what="the closed session's row")
            assert "1 session (1 closed)" in screen_text(app)

            screen = await open_first_session(app, pilot)
            listing = message_list(app)
            assert listing.row_count == chat_rows(relay_path)
            await pilot.press("home")
            await pilot.pause()
            text = screen_text(app)
            assert re.search(r"0 \d\d:\d\d:\d\d\.\d{3} +\+0\.\d{3} C→S text +5 B  hello", text)

            await pilot.press("down", "down")  # the JSON message
            pane = screen.query_one(PayloadPane)
            await wait_for(lambda: pane.message is not None and pane.message.index == 2)
            await pilot.pause()
            text = screen_text(app)
            assert '"op": "subscribe",' in text and '"topics": [' in text and '"prices",' in text
            assert "[json]" in text

            await pilot.press("down", "down")  # the binary message
            await pilot.pause()
            text = screen_text(app)
            assert pane.message.type is MessageType.BINARY and pane.view == "hex"
            assert "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................" in text
            assert "00000010  10 11 12 13" in text

            await pilot.press("h")
            await pilot.pause()
            text = screen_text(app)
            assert "GET /chat HTTP/1.1" in text  # websockets tunnels with CONNECT
            assert "Upgrade: websocket" in text
            assert "HTTP/1.1 101 Switching Protocols" in text
            assert re.search(r"✓ Sec-WebSocket-Accept: \S+ matches the key", text)
            assert "Subprotocol: offered chat; chosen chat" in text


async def test_filtering_narrows_the_message_list_and_n_jumps_to_matches(closed_chat, relay_path):
    proxy = await closed_chat()
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_first_session(app, pilot)
        listing = message_list(app)
        assert listing.row_count == chat_rows(relay_path)

        await pilot.press("y", "y")  # type: text, then binary
        await pilot.pause()
        assert listing.row_count == 2
        assert [listing.message_index(r) for r in range(2)] == [4, 5]

        await pilot.press("d")  # client → server only
        await pilot.pause()
        assert listing.row_count == 1

        await pilot.press("y", "y", "y", "y", "d", "d")  # all types, both ways again
        await pilot.pause()
        assert listing.row_count == chat_rows(relay_path)

        await pilot.press("slash")
        await pilot.press(*"/sub.*news/")
        await pilot.pause()
        assert listing.row_count == 2  # the JSON message and its echo
        await pilot.press("enter")  # back to the list, on the first match
        await pilot.pause()
        assert listing.cursor_message == 2

        await pilot.press("o")  # keep all rows, mark the matches
        await pilot.pause()
        assert listing.row_count == chat_rows(relay_path) and list(listing.hits) == [2, 3]
        assert "▶        2" in screen_text(app)
        assert listing.cursor_message == 2, "the selected message stays selected"
        await pilot.press("n")
        assert listing.cursor_message == 3
        await pilot.press("n")  # wraps around
        assert listing.cursor_message == 2
        await pilot.press("N")
        assert listing.cursor_message == 3

        screen.query_one("#filter-text").value = "/[unclosed/"
        await pilot.pause()
        assert screen.query_one("#filter-text").has_class("-invalid")
        assert any("bad regular expression" in n.message for n in app._notifications)


async def test_markup_and_ansi_payloads_render_literally(closed_chat):
    proxy = await closed_chat("/[bold]room[/bold]")
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "/[bold]room[/bold]" in screen_text(app)
        screen = await open_first_session(app, pilot)
        await pilot.press("home", *["down"] * 6)  # message 6: the hostile text
        await wait_for(lambda: screen.query_one(PayloadPane).message.index == 6)
        await pilot.pause()
        text = screen_text(app)
        literal = r"[bold red]not markup[/] \x1b[31mnot red\x1b[0m \x1b]0;pwned\x07 [link=x]y[/link]"
        assert text.count(literal) == 3  # the message, its echo, and the payload pane
        assert "\x1b" not in text and "\x07" not in text


async def test_list_follows_the_tail_and_stays_put_when_scrolled_away(start_proxy):
    proxy = await start_proxy()
    async with await chat_server() as server:
        port = server.sockets[0].getsockname()[1]
        app = WsInspectApp(proxy.store, proxy.engine)
        async with app.run_test(size=SIZE) as pilot:
            async with connect(
                f"ws://127.0.0.1:{port}/tail", proxy=proxy.url, subprotocols=["chat"]
            ) as ws:

                async def burst(n: int) -> None:
                    for i in range(n):
                        await ws.send(f"message {i}")
                        await ws.recv()

                await burst(100)
                screen = await open_first_session(app, pilot)
                listing = message_list(app)
                await wait_for(lambda: listing.row_count == 200)
                assert listing.is_vertical_scroll_end and listing.follow

                await burst(50)
                await wait_for(lambda: listing.row_count == 300, what="new messages")
                await pilot.pause()
                assert listing.is_vertical_scroll_end, "following the tail"
                assert "message 49" in screen_text(app)

                await pilot.press("home")
                await pilot.pause()
                assert listing.scroll_offset.y == 0 and not listing.follow
                await burst(50)
                await wait_for(lambda: listing.row_count == 400, what="more messages")
                await pilot.pause()
                assert listing.scroll_offset.y == 0, "stays put when scrolled away"
                assert listing.cursor_message == 0

                await pilot.press("end")
                await burst(10)
                await wait_for(lambda: listing.row_count == 420)
                await pilot.pause()
                assert listing.is_vertical_scroll_end
                assert screen.query_one(PayloadPane).message.index == 399


async def test_sessions_list_follows_new_sessions_unless_the_user_moved_away(start_proxy, echo_server):
    proxy = await start_proxy()
    app = WsInspectApp(proxy.store, proxy.engine)

    async def one_session(path: str) -> None:
        async with connect(f"ws://127.0.0.1:{echo_server}{path}", proxy=proxy.url) as ws:
            await ws.send("x")
            await ws.recv()

    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(SessionsTable)
        for i in range(3):
            await one_session(f"/s{i}")
            await wait_for(lambda: table.row_count == i + 1)
            await pilot.pause()
            assert table.cursor_row == i, "follows the newest session"
        await pilot.press("up")
        await one_session("/s3")
        await wait_for(lambda: table.row_count == 4)
        await pilot.pause()
        assert table.cursor_row == 1, "stays where the user moved"
        await pilot.press("f")
        assert table.cursor_row == 3


async def test_sessions_list_cells_widen_as_a_live_session_grows(start_proxy, echo_server):
    """A row listed while its session is open and small keeps up when it closes and grows:
    no cell is cut to the width it had when the row was added."""
    proxy = await start_proxy()
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        async with connect(f"ws://127.0.0.1:{echo_server}/grows", proxy=proxy.url) as ws:
            await ws.send("x")
            await ws.recv()
            table = await wait_for(
                lambda: next(iter(app.screen.query(SessionsTable)), None), what="the table"
            )
            await wait_for(lambda: table.row_count == 1, what="the session row")
            await pilot.pause(0.3)
            for _ in range(40):
                await ws.send("y" * 1000)
                await ws.recv()
        await wait_for(lambda: proxy.store.session(1).outcome.value == "closed")
        await pilot.pause(0.5)
        row = next(line for line in screen_text(app).splitlines() if "/grows" in line)
        assert " closed " in row and " 78.1 KiB " in row, row


async def test_sessions_list_catches_up_after_the_session_view_closes(start_proxy, echo_server):
    """Under the session view the list stands still (Textual would repaint the whole screen
    above it for every change); going back shows every session and count that came meanwhile."""
    proxy = await start_proxy()
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        async with connect(f"ws://127.0.0.1:{echo_server}/first", proxy=proxy.url) as first:
            await first.send("x")
            await first.recv()
            await open_first_session(app, pilot)
            table = app.screen_stack[0].query_one(SessionsTable)
            for path in ("/second", "/third"):
                async with connect(f"ws://127.0.0.1:{echo_server}{path}", proxy=proxy.url) as ws:
                    await ws.send("y")
                    await ws.recv()
            for _ in range(20):
                await first.send("more")
                await first.recv()
            await wait_for(lambda: len(proxy.store.sessions()) == 3 and
                           proxy.store.session(1).stats.count == 42, what="the traffic recorded")
            await pilot.pause(0.3)
            assert table.row_count == 1, "the hidden list did not repaint"
            await pilot.press("escape")
            await pilot.pause()
            assert table.row_count == 3
            assert table.cursor_row == 2, "still follows the newest session"
            row = table.get_row("1")
            assert str(row[COLUMN_KEYS.index("messages")]) == "42"
            assert "/third" in screen_text(app)


def palette_names(screen) -> set[str]:
    return {name for name, _, _ in BindingCommands(screen).commands()}


async def test_copy_save_theme_palette_and_log(closed_chat, tmp_path):
    proxy = await closed_chat()
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Show log", "Toggle dark/light"} <= set(titles)
        assert {"Open", "Newest", "Export all"} <= palette_names(app.screen)
        await pilot.press("t")
        assert app.theme == "textual-light"
        await pilot.press("t")
        assert app.theme == "textual-dark"

        await pilot.press("l")
        await pilot.pause()
        assert "proxy listening at" in screen_text(app).lower()
        await pilot.press("escape")

        screen = await open_first_session(app, pilot)
        assert {"Filter", "Copy", "Save", "Handshake"} <= palette_names(screen)
        await pilot.press("home", "down", "down")
        await pilot.press("c")
        assert app.clipboard == JSON_PAYLOAD

        await pilot.press("down", "down", "s")
        await pilot.pause()
        target = tmp_path / "payload.bin"
        path_input = app.screen.query_one("#save-path")
        path_input.value = str(target)
        await pilot.press("enter")
        await wait_for(lambda: target.exists(), what="the saved file")
        assert target.read_bytes() == BINARY_PAYLOAD
        assert oct(target.stat().st_mode & 0o777) != "0o000"

        await pilot.press("v")  # hex -> text
        assert screen.query_one(PayloadPane).view == "text"


async def test_a_failed_upgrade_shows_the_error_in_plain_words(start_proxy):
    proxy = await start_proxy()
    closed = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        # An absolute-form upgrade through the regular proxy to a port nobody listens on.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            f"GET http://127.0.0.1:{port}/gone HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode()
        )
        await reader.readline()
        writer.close()
        await proxy.wait_session(lambda s: s.outcome.value != "open")
        await pilot.pause()
        await open_first_session(app, pilot)
        await pilot.pause()
        text = screen_text(app)
        assert "Traceback" not in text
        assert re.search(r"Response\s+none: .*(refused|failed)", text, re.I), text


async def test_open_a_saved_capture_without_a_proxy(closed_chat, tmp_path, relay_path):
    capture = tmp_path / "saved.db"
    proxy = await closed_chat(capture=capture)
    await proxy.engine.stop()
    proxy.store.close()

    store = SessionStore.open(capture)
    app = WsInspectApp(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert f"capture {capture}" in screen_text(app)
        await open_first_session(app, pilot)
        assert message_list(app).row_count == chat_rows(relay_path)
    store.close()


def test_open_command_rejects_a_bad_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a capture" * 50)
    wsinspect = Path(sys.executable).parent / "wsinspect"
    result = subprocess.run([str(wsinspect), "open", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith(f"wsinspect: {bad}:") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_app_mode_port_in_use_is_one_line(confdir):
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    wsinspect = Path(sys.executable).parent / "wsinspect"
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [str(wsinspect), "--listen-port", str(port), "--confdir", str(confdir)],
            capture_output=True, text=True, timeout=30,
        )
    finally:
        blocker.close()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "in use" in result.stderr


async def test_empty_state_commands_fit_80_columns_and_stay_on_this_machine(start_proxy):
    """What the app suggests is pasted whole: every command on a screen line of its own."""
    proxy = await start_proxy()
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        lines = [line.strip() for line in screen_text(app).splitlines()]
        assert f"wsinspect hello --proxy 127.0.0.1:{proxy.port}" in lines
        assert "wsinspect demo" in lines
        assert "/usr/local/share/ca-certificates/mitmproxy.crt" in lines
        assert "update-ca-certificates" in lines
        text = "\n".join(lines)
        assert "python -c" not in text and "echo.websocket.org" not in text
        assert "No WebSocket sessions yet." in lines


def test_example_commands_per_listener_mode():
    from wsinspect.ui.app import client_examples, home_relative

    assert client_examples("regular", "127.0.0.1", 8080) == [
        "wsinspect hello --proxy 127.0.0.1:8080"
    ]
    assert client_examples("regular@9000", "::1", 9000) == ["wsinspect hello --proxy [::1]:9000"]
    assert client_examples("reverse:http://127.0.0.1:3000@8081", "127.0.0.1", 8081) == [
        "python -m websockets ws://127.0.0.1:8081/"
    ]
    assert client_examples("transparent", "0.0.0.0", 8080) == []
    assert home_relative("~/.mitmproxy") == "~/.mitmproxy"
    assert home_relative("/srv/ca") == "/srv/ca"
