"""The app wired to diagnosis, resend, replay and export: Pilot against a live proxy and real
WebSocket peers."""

from __future__ import annotations

import json
import sqlite3
import stat
from http import HTTPStatus

from textual.widgets import Input
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidStatus

from tests.conftest import echo_handler, wait_for
from tests.builders import dropped_upgrade, make_hop
from tests.test_ui import SIZE, open_first_session
from tests.ui_helpers import screen_text
from wsinspect.model import Message, MessageType
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.dialogs import ComparisonScreen, EditPayloadScreen, ExportScreen
from wsinspect.ui.payload import PayloadPane
from wsinspect.ui.sessions import SessionsTable


def notified(app, words: str) -> bool:
    return any(words in n.message for n in app._notifications)


def refuse(connection, request):
    return connection.respond(HTTPStatus.FORBIDDEN, "no WebSockets here\n")


async def test_a_refused_upgrade_shows_its_badge_and_findings(start_proxy):
    proxy = await start_proxy()
    async with serve(echo_handler, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        app = WsInspectApp(proxy.store, proxy.engine)
        async with app.run_test(size=SIZE) as pilot:
            try:
                async with connect(f"ws://127.0.0.1:{port}/nope", proxy=proxy.url):
                    pass
            except InvalidStatus:
                pass
            table = app.screen.query_one(SessionsTable)
            await wait_for(lambda: table.row_count == 1, what="the session row")
            await wait_for(lambda: " error " in screen_text(app), what="the findings badge")
            screen = await open_first_session(app, pilot)
            await pilot.press("i")
            await pilot.pause()
            text = screen_text(app)
            assert "handshake-rejected" in text, text
            assert "hop 1" in text and "Fix:" in text
            assert screen.query_one("#session-tabs").active == "findings"


async def test_hops_tab_shows_what_the_proxy_between_hops_dropped():
    store = SessionStore()
    for hop in dropped_upgrade(key="a2V5LWZvci1yZXBvcnQ="):
        store.add_hop(hop)
    store.flush()
    app = WsInspectApp(store)
    async with app.run_test(size=SIZE) as pilot:
        await open_first_session(app, pilot)
        await pilot.press("b")
        await pilot.pause()
        text = screen_text(app)
        assert "Hop 1 → hop 2" in text, text
        assert "hop 1 HTTP/1.1, hop 2 HTTP/1.1" in text
        assert "- dropped Upgrade: websocket  [hop-by-hop]" in text
        assert "~ changed Connection: Upgrade → close  [hop-by-hop]" in text
        # Without a proxy there is nothing to resend into: the app says so.
        await pilot.press("m", "home", "r")
        await wait_for(lambda: notified(app, "needs a live proxy"), what="the notice")


async def test_resend_and_edited_resend_reach_the_live_echo_server(start_proxy, echo_server):
    proxy = await start_proxy()
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        async with connect(f"ws://127.0.0.1:{echo_server}/live", proxy=proxy.url) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            session = await proxy.wait_session(lambda s: s.stats.count >= 2)
            screen = await open_first_session(app, pilot)
            await pilot.press("home")
            await wait_for(lambda: screen.query_one(PayloadPane).message is not None)
            await pilot.press("r")
            assert await ws.recv() == "hello"  # the server echoed the resent message
            await pilot.press("e")
            await wait_for(lambda: isinstance(app.screen, EditPayloadScreen), what="the editor")
            app.screen.query_one(Input).value = "edited"
            await pilot.press("enter")
            assert await ws.recv() == "edited"
            await wait_for(lambda: session.stats.count >= 6, what="the injected messages")
            injected = [
                m.payload for m in proxy.store.messages(session.id, 0, 10) if m.injected
            ]
            assert injected == [b"hello", b"edited"]
            await pilot.press("end")
            await wait_for(lambda: "injected" in screen_text(app), what="the injected marker")


async def test_a_text_with_escapes_is_edited_as_hex_and_resent_byte_for_byte(
    start_proxy, echo_server
):
    """An input box would show the escapes raw, and their escaped form would be sent as
    typed: such a text payload opens as hex, and goes out exactly as it came."""
    hostile = "\x1b]0;owned\x07\x1b[2J still text"
    proxy = await start_proxy()
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        async with connect(f"ws://127.0.0.1:{echo_server}/escapes", proxy=proxy.url) as ws:
            await ws.send(hostile)
            assert await ws.recv() == hostile
            await proxy.wait_session(lambda s: s.stats.count >= 2)
            screen = await open_first_session(app, pilot)
            await pilot.press("home")
            await wait_for(lambda: screen.query_one(PayloadPane).message is not None)
            await pilot.press("e")
            await wait_for(lambda: isinstance(app.screen, EditPayloadScreen), what="the editor")
            editor = app.screen.query_one(Input)
            assert editor.value == hostile.encode().hex(" ")
            assert "\x1b" not in screen_text(app)
            await pilot.press("enter")
            assert await ws.recv() == hostile


async def test_replay_shows_a_matching_comparison_and_export_writes_a_private_har(
    closed_chat, tmp_path
):
    proxy = await closed_chat()  # its echo server still up: the replay reaches it
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_first_session(app, pilot)
        await pilot.press("home", "r")  # the session has ended: the app offers a replay
        await wait_for(lambda: notified(app, "press p to replay it here"), what="the advice")
        await pilot.press("p")
        await wait_for(
            lambda: isinstance(app.screen, ComparisonScreen), timeout=20, what="the comparison"
        )
        await wait_for(lambda: "matched" in screen_text(app), what="the comparison text")
        text = screen_text(app)
        assert "the server's answers matched: 4 match, 0 differ" in text, text
        assert "new session #2" in text
        await pilot.press("escape")

        out = tmp_path / "session.har"
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ExportScreen), what="the export dialog")
        app.screen.query_one("#export-path", Input).value = str(out)
        await pilot.press("enter")
        await wait_for(out.exists, what="the HAR file")
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        entries = json.loads(out.read_text())["log"]["entries"]
        assert len(entries) == 1 and entries[0]["request"]["url"].endswith("/chat")
        await wait_for(lambda: notified(app, "exported 1 session ("), what="the notice")


async def test_a_damaged_message_record_is_a_notification_not_a_crash(tmp_path):
    path = tmp_path / "capture.db"
    store = SessionStore(path)
    hop = make_hop(status=101)
    store.add_hop(hop)
    store.add_message(hop, Message(True, MessageType.TEXT, 5, b"hello", timestamp=101.0))
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE messages SET type='bogus'")
    app = WsInspectApp(SessionStore.open(path))
    async with app.run_test(size=SIZE) as pilot:
        await open_first_session(app, pilot)
        await pilot.press("m")
        await wait_for(lambda: notified(app, "damaged"), what="the damage notice")
        assert app.is_running
