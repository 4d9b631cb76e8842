"""Snapshots of every main screen and dialog, at 80x24 (a terminal over SSH: designed for
first) and 200x50, with deterministic data (fixed times, addresses, clock, UTC).

Update after an intended change with `pytest tests/test_ui_snapshots.py --snapshot-update`
and look at the SVGs in tests/__snapshots__/."""

from __future__ import annotations

import os
import time

import pytest

from tests.test_ui_keyboard import two_hop_store
from tests.ui_helpers import T0, deterministic_store
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.dialogs import ComparisonScreen, EditPayloadScreen

SIZES = {"80x24": (80, 24), "200x50": (200, 50)}
OPEN_CHAT = ["up", "up", "enter", "home"]  # the first session, its first message
COMPARISON = [
    "client sent 3 messages, the server answered 3 (the original: 3)",
    '#1 {"seq": 2, "symbol": "ACME"} differs from the original {"seq": 1, "symbol": "ACME"}',
    "#2 same as the original",
    "closed 1000 by the client, as the original",
]


@pytest.fixture(autouse=True)
def utc_clock():
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


@pytest.fixture(params=SIZES.values(), ids=SIZES.keys())
def size(request):
    return request.param


def app() -> WsInspectApp:
    return WsInspectApp(deterministic_store(), clock=lambda: T0 + 10)


def two_hop_app() -> WsInspectApp:
    return WsInspectApp(two_hop_store(), clock=lambda: 110.0)  # its hops start at t=100


def test_sessions_list(snap_compare, size):
    assert snap_compare(app(), terminal_size=size)


def test_sessions_list_light_theme(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=["t"])


def test_empty_capture(snap_compare, size):
    assert snap_compare(WsInspectApp(SessionStore()), terminal_size=size)


def test_messages_with_pretty_json(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=[*OPEN_CHAT, "down", "down"])


def test_binary_payload_as_hex(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=[*OPEN_CHAT, *["down"] * 4])


def test_markup_and_ansi_payload_shown_literally(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=[*OPEN_CHAT, *["down"] * 5])


def test_messages_filtered_to_binary(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=[*OPEN_CHAT, "y", "y"])


def test_handshake_with_a_wrong_accept(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=["enter", "h"])


def test_rejected_upgrade_opens_on_its_handshake(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=["up", "enter"])


def test_findings_of_a_dropped_upgrade(snap_compare, size):
    assert snap_compare(two_hop_app(), terminal_size=size, press=["enter", "i"])


def test_hops_diff_of_a_dropped_upgrade(snap_compare, size):
    assert snap_compare(two_hop_app(), terminal_size=size, press=["enter", "b"])


def test_log_screen(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=["l"])


def test_export_dialog(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=[*OPEN_CHAT, "x"])


def test_save_dialog(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=[*OPEN_CHAT, "s"])


def test_edit_dialog(snap_compare, size):
    async def edit(pilot):
        await pilot.press(*OPEN_CHAT)
        pilot.app.push_screen(EditPayloadScreen('{"op": "subscribe"}', "text", "message #2"))
        await pilot.pause()
        await pilot.press("tab")  # the keyboard on the encoding choice

    assert snap_compare(app(), terminal_size=size, run_before=edit)


def test_replay_comparison_dialog(snap_compare, size):
    async def compare(pilot):
        await pilot.press(*OPEN_CHAT)
        pilot.app.push_screen(ComparisonScreen("Replay of session #1: new session #4", COMPARISON))
        await pilot.pause()

    assert snap_compare(app(), terminal_size=size, run_before=compare)
