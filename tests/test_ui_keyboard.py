"""The app at 80x24 with the keyboard only, as over SSH to a gateway: every tab scrolls, the
footer offers the current tab's keys, Esc and Home do what they say."""

from __future__ import annotations

import os
import socket
import stat

import pytest
from textual.containers import VerticalScroll
from textual.geometry import Region
from textual.widgets import Input

from tests.builders import dropped_upgrade
from tests.ui_helpers import T0, deterministic_store, handshake_hop, screen_text
from wsinspect.model import Message, MessageType
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.dialogs import ComparisonScreen, EditPayloadScreen
from wsinspect.ui.message_list import MessageList
from wsinspect.ui.session_view import SessionScreen
from wsinspect.ui.sessions import SessionsTable

SMALL = (80, 24)


def two_hop_store() -> SessionStore:
    """A session whose proxy dropped the upgrade: long findings, a long hop diff."""
    store = SessionStore()
    for hop in dropped_upgrade(key="a2V5LWZvci1rZXlib2FyZA=="):
        store.add_hop(hop)
    store.flush()
    return store


def footer_line(app) -> str:
    return screen_text(app).splitlines()[-1]


@pytest.mark.parametrize("tab, scroll_id", [
    ("h", "#handshake-scroll"), ("i", "#findings-scroll"), ("b", "#hops-scroll"),
])
async def test_every_text_tab_scrolls_from_the_keyboard(tab, scroll_id):
    app = WsInspectApp(two_hop_store())
    async with app.run_test(size=(80, 14)) as pilot:  # every tab taller than its view
        await pilot.press("enter", tab)
        await pilot.pause()
        scroll = app.screen.query_one(scroll_id, VerticalScroll)
        assert scroll.has_focus
        assert scroll.max_scroll_y > 0
        await pilot.press("pagedown")
        await pilot.pause()
        assert scroll.scroll_y > 0
        await pilot.press("end")
        await pilot.pause()
        assert scroll.scroll_y == scroll.max_scroll_y
        await pilot.press("home")
        await pilot.pause()
        assert scroll.scroll_y == 0
        await pilot.press("down")
        await pilot.pause()
        assert scroll.scroll_y == 1


async def test_the_messages_tab_scrolls_from_the_keyboard():
    store = SessionStore()
    hop = handshake_hop("/many", T0)
    store.add_hop(hop)
    for i in range(100):
        store.add_message(hop, Message(i % 2 == 0, MessageType.TEXT, 2, b"%02d" % i, T0 + i))
    store.flush()
    app = WsInspectApp(store, clock=lambda: T0 + 200)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        messages = app.screen.query_one(MessageList)
        assert messages.has_focus and messages.max_scroll_y > 0
        assert messages.scrollable_content_region.height >= 10  # 7 before the 80x24 layout
        await pilot.press("home")
        assert messages.cursor == 0 and messages.scroll_y == 0
        await pilot.press("pagedown")
        await pilot.pause()
        assert messages.cursor > 0
        await pilot.press("end")
        await pilot.pause()
        assert messages.cursor == messages.row_count - 1
        assert messages.scroll_y == messages.max_scroll_y


async def test_the_tab_keys_also_follow_a_click_on_a_tab():
    app = WsInspectApp(two_hop_store())
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("enter")
        await pilot.click("#session-tabs Tab#--content-tab-findings")
        await pilot.pause()
        assert app.screen.query_one("#findings-scroll", VerticalScroll).has_focus


async def test_the_footer_offers_the_current_tabs_keys_at_80_columns():
    app = WsInspectApp(deterministic_store(), clock=lambda: T0 + 10)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert "⏎ Open" in footer_line(app) and "x Export all" in footer_line(app)
        await pilot.press("up", "up", "enter")
        await pilot.pause()
        footer = footer_line(app)
        for keys in ("esc Back", "h m a i b t Tabs", "r R e Resend", "p Replay", "x Export",
                     "v View", "c Copy", "s Save"):
            assert keys in footer, footer
        await pilot.press("h")
        await pilot.pause()
        footer = footer_line(app)
        assert "h m a i b t Tabs" in footer and "p Replay" in footer and "x Export" in footer
        for message_keys in ("Resend", "Copy", "Save", "View"):
            assert message_keys not in footer, footer
        await pilot.press("c")  # a message-list key does nothing on the Handshake tab
        await pilot.pause()
        assert not app._notifications


async def test_esc_in_the_filter_box_clears_the_filter_and_a_second_esc_leaves():
    app = WsInspectApp(deterministic_store(), clock=lambda: T0 + 10)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("up", "up", "enter", "slash", *"bye")
        await pilot.pause()
        screen = app.screen
        messages = screen.query_one(MessageList)
        assert messages.row_count == 2
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen and screen.query_one("#filter-text", Input).value == ""
        assert messages.row_count == 10
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, SessionScreen)


async def test_home_and_end_move_the_sessions_list_cursor():
    app = WsInspectApp(deterministic_store(), clock=lambda: T0 + 10)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        table = app.screen.query_one(SessionsTable)
        assert table.cursor_row == 2
        await pilot.press("home")
        assert table.cursor_row == 0
        await pilot.press("end")
        assert table.cursor_row == 2


async def test_summary_and_sessions_list_keep_whole_fields_at_80_columns():
    app = WsInspectApp(deterministic_store(), clock=lambda: T0 + 10)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        header = screen_text(app).splitlines()[1].split()
        assert header == ["state", "findings", "URL", "status", "msgs", "bytes", "duration",
                          "last"]
        await pilot.press("up", "up", "enter")
        await pilot.pause()
        first, second = screen_text(app).splitlines()[1:3]
        assert first.split()[:3] == ["#1", "closed", "ws://echo.test:9000/chat?room=[bold]"]
        # whole fields only: the end of the session does not fit, so none of it is shown
        assert second.strip().split("  ") == [
            "status 101", "messages 10 (6 → / 4 ←)", "177 B", "1.5s", "hops 1"
        ]


async def test_a_saved_payload_is_private(tmp_path):
    app = WsInspectApp(deterministic_store(), clock=lambda: T0 + 10)
    target = tmp_path / "payload.bin"
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("up", "up", "enter", "home", "s")
        await pilot.pause()
        app.screen.query_one("#save-path", Input).value = str(target)
        await pilot.press("enter")
        await pilot.pause()
    assert target.read_bytes() == b"hello"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


async def test_dialogs_fit_80x24():
    app = WsInspectApp(deterministic_store(), clock=lambda: T0 + 10)
    screen_region = Region(0, 0, *SMALL)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("up", "up", "enter", "home")
        for open_dialog in (
            lambda: pilot.press("x"),
            lambda: pilot.press("s"),
            lambda: app.push_screen(EditPayloadScreen("x" * 200, "text", "message #0")),
            lambda: app.push_screen(ComparisonScreen("Replay", ["a line " * 30] * 40)),
        ):
            await open_dialog()
            await pilot.pause()
            dialog = app.screen.query_one(".dialog, #save-dialog")
            assert screen_region.contains_region(dialog.region), dialog
            parts = dialog.query("Label, Input, RadioSet, Checkbox, VerticalScroll")
            parts = [w for w in parts if not isinstance(w.parent, VerticalScroll)]  # (larger)
            assert len(parts) >= 2
            for widget in parts:
                assert dialog.region.contains_region(widget.region), widget
            await pilot.press("escape")
            await pilot.pause()


async def test_wrapped_findings_keep_their_indent():
    app = WsInspectApp(two_hop_store(), clock=lambda: 110.0)
    async with app.run_test(size=(80, 50)) as pilot:
        await pilot.press("enter", "i")
        await pilot.pause()
        lines = screen_text(app).splitlines()[5:-1]
        body = [line for line in lines if line.strip() and not line.startswith("  error ")]
        assert len(body) > 10
        assert all(line.startswith("   ") for line in body), body  # 1 of padding + 2


async def test_the_status_bar_keeps_the_message_rate_at_80_columns(start_proxy):
    with socket.socket() as s:  # a second listener's port: the first has the OS's choice
        s.bind(("127.0.0.1", 0))
        reverse_port = s.getsockname()[1]
    proxy = await start_proxy(modes=("regular", f"reverse:http://127.0.0.1:9@{reverse_port}"))
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        status = screen_text(app).splitlines()[0]
        assert f"regular 127.0.0.1:{proxy.port}" in status and "0 msg/s" in status, status
        assert f"reverse:http://127.0.0.1:9 127.0.0.1:{reverse_port}" not in status  # no room
