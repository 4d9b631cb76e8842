"""Payloads that attack the viewer (issue 8): escape sequences, invisible and bidirectional
characters, a 50 MB single-line message, deeply nested JSON. Each is shown literally and
safely, and the app keeps answering keys."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import wsinspect.ui
from tests.conftest import wait_for
from tests.test_ui import SIZE, open_first_session
from tests.ui_helpers import T0, handshake_hop, screen_text
from wsinspect.model import Close, Hop, Message, MessageType, Outcome, Violation
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.dialogs import ComparisonScreen
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


# ----- every field of a capture, not only payloads (issue 16) ---------------------------------

# ESC, an OSC that sets the window title, a CSI that clears the screen, C1 CSI and BEL.
EVIL = "\x1b]0;owned\x07\x1b[2J\x9b31m\x07"
RAW_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def evil_hop(path: str, start: float) -> Hop:
    hop = handshake_hop(path + EVIL, start)
    hop.mode = "regular" + EVIL
    hop.request_line = "GET " + path + EVIL + " HTTP/1.1"
    hop.http_version = "HTTP/1.1" + EVIL
    hop.request_headers = [  # the key unchanged: it ties the two hops into one session
        (name, value) if name == "Sec-WebSocket-Key" else (name + EVIL, value + EVIL)
        for name, value in hop.request_headers
    ]
    hop.response_headers = [(name + EVIL, value + EVIL) for name, value in hop.response_headers]
    hop.response_reason = "Switching" + EVIL
    hop.response_http_version = "HTTP/1.1" + EVIL
    hop.client_addr = ("127.0.0.1" + EVIL, 50000)
    hop.server_addr = ("echo" + EVIL, 9000)
    hop.answered_by = "server" + EVIL
    hop.error = "gone" + EVIL
    return hop


def evil_store() -> SessionStore:
    """Two hops of one session (so the Hops tab compares them) with the escapes in every
    string a capture file can carry: what a crafted HAR, flow file or database holds."""
    store = SessionStore(max_payload=8)
    first, second = evil_hop("/evil", T0), evil_hop("/evil", T0 + 0.001)
    second.mode = "reverse:http://echo:9000@8081" + EVIL  # the listener behind a proxy
    for hop in (first, second):
        store.add_hop(hop)
    assert second.session_id == first.session_id  # one session, two hops (same key)
    payload = ("text" + EVIL).encode()
    store.add_message(first, Message(True, MessageType.TEXT, 64, payload[:8], T0 + 0.1,
                                     sha256="ab" + EVIL))
    store.add_message(first, Message(True, MessageType.TEXT, len(payload), payload, T0 + 0.2))
    close = (1000).to_bytes(2, "big") + ("bye" + EVIL).encode()
    store.add_message(first, Message(False, MessageType.CLOSE, len(close), close, T0 + 0.3))
    for hop in (first, second):
        hop.outcome = Outcome.CLOSED
        hop.timestamp_end = T0 + 0.4
        hop.close = Close(code=1000, reason="bye" + EVIL, by="client" + EVIL, timestamp=T0 + 0.4,
                          offender="server" + EVIL, client_end="fin", server_end="reset")
        hop.violations = [Violation(False, "rule" + EVIL, "detail" + EVIL, 0x3, T0 + 0.35)]
        store.hop_changed(hop)
    store.flush()
    return store


def assert_no_raw_controls(app, where: str) -> None:
    text = screen_text(app)
    found = RAW_CONTROLS.findall(text)
    assert not found, f"{where}: raw {found[:5]!r} on screen"


async def test_escapes_in_every_field_of_a_capture_reach_no_widget_raw(tmp_path):
    store = evil_store()
    app = WsInspectApp(store, clock=lambda: T0 + 10)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        assert_no_raw_controls(app, "sessions list")
        assert r"\x1b]0;owned\x07" in screen_text(app)  # the URL, shown escaped
        await pilot.press("enter")
        await pilot.pause()
        for tab in "hmib":
            await pilot.press(tab)
            await pilot.pause()
            assert_no_raw_controls(app, f"tab {tab}")
        await pilot.press("h")
        await pilot.pause()
        handshakes = app.screen.query_one("#handshake-scroll")
        handshakes.scroll_end(animate=False)  # the end and the violations, at the bottom
        await pilot.pause()
        assert_no_raw_controls(app, "the handshake's end and violations")
        text = screen_text(app)
        assert r"rule\x1b]0;owned\x07" in text and r"detail\x1b]0;owned\x07" in text
        assert "the server's connection ended with a reset (RST)" in text
        await pilot.press("m", "home")
        for _ in range(3):
            await pilot.pause()
            assert_no_raw_controls(app, "a message and its payload")
            await pilot.press("down")
        await pilot.press("x")  # the export dialog, then a notification naming the path
        await pilot.pause()
        assert_no_raw_controls(app, "export dialog")
        export_input = app.screen.query_one("#export-path")
        export_input.value = str(tmp_path / ("out" + EVIL + ".har"))
        await pilot.press("enter")
        await pilot.pause()
        assert_no_raw_controls(app, "export notification")
        app.notify("note" + EVIL, title="title" + EVIL)
        await pilot.pause()
        assert_no_raw_controls(app, "a notification")
        app.push_screen(ComparisonScreen("replay" + EVIL, ["line" + EVIL, "two" + EVIL]))
        await pilot.pause()
        assert_no_raw_controls(app, "replay comparison")
        await pilot.press("escape", "escape", "l")
        await pilot.pause()
        assert_no_raw_controls(app, "log")


def test_only_the_formatting_helpers_build_rich_text():
    """The ui modules hand widgets SafeText from ui/format.py: none but format.py imports
    rich's Text (which would take a string as it is)."""
    ui = Path(wsinspect.ui.__file__).parent
    offenders = []
    for module in ui.glob("*.py"):
        if module.name == "format.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "rich.text":
                offenders.append(module.name)
    assert not offenders
