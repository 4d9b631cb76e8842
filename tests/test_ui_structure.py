"""How the app's parts are wired: screens follow the store through the app's signal and drop
off it when they go; each screen's command palette entries are its own key bindings."""

from __future__ import annotations

import time

from tests.test_ui_keyboard import two_hop_store
from tests.ui_helpers import T0, deterministic_store, handshake_hop, screen_text
from wsinspect.model import Message, MessageType
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.commands import BindingCommands
from wsinspect.ui.message_list import MessageList
from wsinspect.ui.session_view import SessionScreen
from wsinspect.ui.sessions import SessionsScreen, SessionsTable

SIZE = (100, 30)


def live_store() -> tuple[SessionStore, object]:
    store = SessionStore()
    hop = handshake_hop("/live", time.time())
    store.add_hop(hop)
    store.flush()
    return store, hop


def add_message(store: SessionStore, hop) -> None:
    store.add_message(hop, Message(False, MessageType.TEXT, 4, b"tick", time.time()))


async def settle(pilot, until) -> None:
    for _ in range(50):
        await pilot.pause(0.02)
        if until():
            return
    raise AssertionError("the app did not catch up with the store")


async def test_a_popped_screen_stops_receiving_store_changes():
    store, hop = live_store()
    app = WsInspectApp(store)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(SessionsTable)
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SessionScreen)
        listing = screen.query_one(MessageList)
        add_message(store, hop)
        await settle(pilot, lambda: listing.total == 1)  # while shown, it follows

        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is not screen and screen not in app.screen_stack
        add_message(store, hop)
        add_message(store, hop)
        # The list, still subscribed, takes the new count in; the popped view does not (and
        # its widgets, gone, raise nothing).
        await settle(pilot, lambda: str(table.get_row("1")[4]) == "3")
        assert listing.total == 1
        assert not screen.is_attached


async def test_the_app_fans_store_changes_out_to_subscribers_only():
    """Each change batch reaches the screens on the stack through one signal: the covered
    sessions list and the session view both hear it, a popped view no longer does."""
    store, hop = live_store()
    app = WsInspectApp(store)
    heard: list[type] = []
    async with app.run_test(size=SIZE) as pilot:
        sessions = app.screen
        assert isinstance(sessions, SessionsScreen)
        await pilot.press("enter")
        await pilot.pause()
        view = app.screen
        app.store_changed_signal.subscribe(view, lambda c: heard.append(SessionScreen),
                                           immediate=True)
        app.store_changed_signal.subscribe(sessions, lambda c: heard.append(SessionsScreen),
                                           immediate=True)
        add_message(store, hop)
        await settle(pilot, lambda: SessionScreen in heard and SessionsScreen in heard)
        await pilot.press("escape")
        await pilot.pause()
        heard.clear()
        add_message(store, hop)
        await settle(pilot, lambda: SessionsScreen in heard)
        assert SessionScreen not in heard


def palette_entries(screen) -> dict[str, str]:
    return {name: help_text for name, help_text, _ in BindingCommands(screen).commands()}


def own_commands(screen) -> dict[str, str]:
    """The bindings with a tooltip, of the screen and of its focused widget."""
    nodes = [screen, *([screen.focused] if screen.focused else [])]
    return {b.description: b.tooltip for node in nodes
            for b in type(node).BINDINGS if b.tooltip}


async def test_each_screens_palette_entries_come_from_its_own_bindings():
    app = WsInspectApp(deterministic_store(), clock=lambda: T0 + 10)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        sessions = app.screen
        entries = palette_entries(sessions)
        assert entries == own_commands(sessions)
        assert {"Open", "Newest", "Export all"} <= set(entries)
        system = {c.title for c in app.get_system_commands(sessions)}
        assert not system & set(entries), "declared once: no screen command in the app's"
        assert {"Show log", "Toggle dark/light"} <= system

        await pilot.press("up", "up", "enter")  # the closed chat: it opens on its messages
        await pilot.pause()
        view = app.screen
        assert isinstance(view, SessionScreen)
        entries = palette_entries(view)
        assert entries == own_commands(view)
        assert {"Findings", "Filter", "Copy", "Resend", "Replay"} <= set(entries)
        assert not {c.title for c in app.get_system_commands(view)} & set(entries)

        # A tab without messages offers no message command, as its footer offers no such key.
        await pilot.press("i")
        await pilot.pause()
        entries = palette_entries(view)
        assert "Findings" in entries and "Copy" not in entries and "Filter" not in entries

        # Chosen in the palette, a command does what its key does.
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Handshake")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is view
        assert view.query_one("#session-tabs").active == "handshake"
        assert "Sec-WebSocket-Accept" in screen_text(app)


def span_styles(text) -> set:
    return {span.style for span in text.spans}


async def test_data_colours_follow_the_theme():
    """Badges, header changes and checks take their colours from the theme's variables
    (app.tcss), and text already on screen is built again when the theme changes."""
    app = WsInspectApp(two_hop_store(), clock=lambda: 110.0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter", "b")  # the session's Hops tab
        await pilot.pause()
        view = app.screen
        hops = view.query_one("#hops-text").content
        dark = view.colours()["change--dropped"]
        assert dark.color is not None and dark in span_styles(hops)
        assert view.colours()["outcome--rejected"].bgcolor.triplet.hex.lower() == (
            app.theme_variables["warning"].lower()
        )

        app.action_toggle_theme()  # "t" belongs to the sessions list
        await pilot.pause()
        await pilot.pause()
        light = view.colours()["change--dropped"]
        assert light != dark, "the light theme's error text is not the dark one's"
        hops = view.query_one("#hops-text").content
        assert light in span_styles(hops) and dark not in span_styles(hops)
