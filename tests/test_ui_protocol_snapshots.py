"""Snapshots of the app on a Socket.IO session, at 80x24 and 200x50: the Label column and a
decoded payload, a label filter, the Calls tab. Deterministic data (tests/protocol_captures.py);
update with `--snapshot-update` and look at the SVGs."""

from __future__ import annotations

import pytest

from tests.protocol_captures import socketio_store
from tests.test_ui_snapshots import SIZES, utc_clock  # noqa: F401  (an autouse fixture)
from tests.ui_helpers import T0
from wsinspect.ui import WsInspectApp

OPEN = ["enter", "home"]


@pytest.fixture(params=SIZES.values(), ids=SIZES.keys())
def size(request):
    return request.param


def app() -> WsInspectApp:
    return WsInspectApp(socketio_store(), clock=lambda: T0 + 10)


def test_labels_and_the_decoded_ack_of_the_chat_call(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=[*OPEN, *["down"] * 4])


def test_an_unanswered_call_whose_event_name_holds_an_escape(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=[*OPEN, *["down"] * 11])


def test_filtered_by_label(snap_compare, size):
    assert snap_compare(app(), terminal_size=size,
                        press=[*OPEN, "slash", *"label:upload", "enter"])


def test_calls_tab(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, press=["enter", "a"])
