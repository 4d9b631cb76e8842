"""Snapshots of the main screens with deterministic data (fixed times, addresses, clock, UTC).

Update after an intended change with `pytest tests/test_ui_snapshots.py --snapshot-update`
and look at the SVGs in tests/__snapshots__/."""

from __future__ import annotations

import os
import time

import pytest

from tests.ui_helpers import T0, deterministic_store
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp

SIZE = (110, 32)
OPEN_CHAT = ["up", "up", "enter", "home"]  # the first session, its first message


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


def app() -> WsInspectApp:
    return WsInspectApp(deterministic_store(), clock=lambda: T0 + 10)


def test_sessions_list(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE)


def test_sessions_list_light_theme(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE, press=["t"])


def test_messages_with_pretty_json(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE, press=[*OPEN_CHAT, "down", "down"])


def test_binary_payload_as_hex(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE, press=[*OPEN_CHAT, *["down"] * 4])


def test_markup_and_ansi_payload_shown_literally(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE, press=[*OPEN_CHAT, *["down"] * 5])


def test_messages_filtered_to_binary(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE, press=[*OPEN_CHAT, "y", "y"])


def test_handshake_with_a_wrong_accept(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE, press=["enter", "h"])


def test_rejected_upgrade_opens_on_its_handshake(snap_compare):
    assert snap_compare(app(), terminal_size=SIZE, press=["up", "enter"])


def test_empty_capture(snap_compare):
    assert snap_compare(WsInspectApp(SessionStore()), terminal_size=SIZE)
