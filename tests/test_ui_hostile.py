"""Payloads that attack the viewer (issue 8): escape sequences, invisible and bidirectional
characters, a 50 MB single-line message, deeply nested JSON. Each is shown literally and
safely, and the app keeps answering keys."""

from __future__ import annotations

import json

from tests.conftest import wait_for
from tests.test_ui import SIZE, open_first_session
from tests.ui_helpers import T0, handshake_hop, screen_text
from wsinspect.model import Message, MessageType
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.payload import PayloadPane

OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"  # would set the clipboard to "rm -rf ~"
TITLE = "\x1b]0;owned\x1b\\"
INVISIBLE = "pay\u200bpal \u202eexe.txt\u202c \u2066isolate\u2069 \ufeffbom"
HUGE = b"A" * (50 * 1024 * 1024)
NESTED = ("[" * 50_000 + "]" * 50_000).encode()  # deeper than json's recursion limit
WIDE_NESTED = json.dumps({"a": [{"b": [{"c": list(range(50))}] * 20}] * 20}).encode()


def hostile_store() -> SessionStore:
    store = SessionStore(max_payload=64 * 1024 * 1024)
    hop = handshake_hop("/hostile", T0)
    store.add_hop(hop)
    for i, payload in enumerate(
        [OSC52.encode(), TITLE.encode(), INVISIBLE.encode(), HUGE, NESTED, WIDE_NESTED]
    ):
        store.add_message(
            hop, Message(True, MessageType.TEXT, len(payload), payload, T0 + 0.1 * (i + 1))
        )
    store.flush()
    return store


async def test_hostile_payloads_render_literally_and_the_app_stays_responsive():
    app = WsInspectApp(hostile_store(), clock=lambda: T0 + 10)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_first_session(app, pilot)
        pane = screen.query_one(PayloadPane)
        await pilot.press("home")
        for index in range(6):
            if index:
                await pilot.press("down")
            await wait_for(lambda: pane.message is not None and pane.message.index == index, 20)
            await pilot.pause()
            text = screen_text(app)
            assert "\x1b" not in text and "\x07" not in text
            assert not any(ch in text for ch in "\u200b\u202e\u202c\u2066\u2069\ufeff")
            if index == 0:
                assert r"\x1b]52;c;cm0gLXJmIH4K\x07" in text  # shown, not executed
            if index == 2:
                assert r"pay\u200bpal \u202eexe.txt\u202c" in text
            if index == 3:
                assert "AAAAAAAAAAAAAAAAAAAA" in text and "50.0 MiB" in text
            if index == 4:
                assert "[[[[[[[[[[" in text  # too deep to pretty-print: shown as text
            if index == 5:
                assert '"c": [' in text  # pretty JSON
        # still answering: back to the list and into the session again
        await pilot.press("escape")
        await pilot.pause()
        assert "/hostile" in screen_text(app)
