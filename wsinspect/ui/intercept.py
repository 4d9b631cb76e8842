"""Intercepting in the app: the rule dialog (I), and the messages held now (H) with keys to
forward, edit and forward, or drop each. A held message reaches the session's message list
once it is decided, marked with its fate."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label

from ..errors import ResendError
from ..intercept import DROPPED, EDITED, FORWARDED, Held, RuleError, parse_rule
from ..resend import PAYLOAD_ENCODINGS, decode_payload
from .dialogs import choices, chosen
from .format import SafeText

INTERCEPT_BINDINGS = [
    # out of the footer, which is full at 80 columns: the palette (and the status line) say them
    Binding("I", "app.intercept", "Intercept", show=False,
            tooltip="Hold messages matching a rule (~client ~server ~text ~binary /regex/ words)"),
    Binding("H", "app.held", "Held", show=False, tooltip="The messages held now: forward, edit or drop them"),
]


def intercept_fields(interceptor) -> list[SafeText]:
    """The status line's part for intercepting: the rule while one is set, and how many
    messages wait for a decision."""
    rule = interceptor.rule()
    if rule is None and not interceptor.held():
        return []
    text = f"intercept {rule.text}" if rule is not None else "intercept off"
    waiting = interceptor.pending_count()
    if waiting:
        text += f", {waiting} held (H)"
    return [SafeText.line(text, style="bold" if waiting else "")]


class RuleScreen(ModalScreen[str | None]):
    """The intercept rule; Enter sets it (empty: off), Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Hold messages matching (Enter sets, empty turns it off, Esc cancels):")
            yield Input(value=self.rule, id="intercept-rule")
            yield Label(SafeText("~client ~server ~text ~binary /regex/ or words, e.g. "
                                 "~client /\"op\":\"send\"/", style="dim"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            parse_rule(event.value)
        except RuleError as e:
            self.app.notify(str(e), title="not a rule", severity="error")
            return
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class HeldEditScreen(ModalScreen[bytes | None]):
    """The payload to send instead of a held message; Enter sends, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, held: Held) -> None:
        super().__init__()
        self.held = held

    def compose(self) -> ComposeResult:
        message = self.held.message
        text = message.type == "text"
        value = message.payload.decode("utf-8", errors="replace") if text else message.payload.hex()
        with Vertical(classes="dialog"):
            yield Label(f"Send instead of held message #{self.held.id} (Enter, Esc cancels):")
            yield Input(value=value, id="held-payload")
            with Horizontal(classes="dialog-options"):
                yield Label("as ")
                yield choices([(e, e) for e in PAYLOAD_ENCODINGS], "text" if text else "hex",
                              "held-encoding")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            payload = decode_payload(event.value, chosen(self.query_one("#held-encoding")))
        except ResendError as e:
            self.app.notify(str(e), title="cannot send", severity="error")
            return
        self.dismiss(payload)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HeldScreen(ModalScreen[None]):
    """The messages held now, oldest first."""

    BINDINGS = [
        Binding("f", "decide('forwarded')", "Forward", tooltip="Send it on unchanged"),
        Binding("e", "edit", "Edit and forward", tooltip="Send an edited payload instead"),
        Binding("d", "decide('dropped')", "Drop", tooltip="Never send it"),
        Binding("escape", "close", "Close"),
    ]

    def __init__(self, interceptor) -> None:
        super().__init__()
        self.interceptor = interceptor

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="held-dialog"):
            yield Label(SafeText("Held messages (f forwards, e edits, d drops, Esc closes)",
                                 style="bold"))
            yield DataTable(id="held-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("#", "from", "type", "held", "payload")
        self.interceptor.listeners.append(self._changed)
        self.set_interval(1.0, self.fill)
        self.fill()

    def on_unmount(self) -> None:
        if self._changed in self.interceptor.listeners:
            self.interceptor.listeners.remove(self._changed)

    def _changed(self) -> None:
        self.call_later(self.fill)

    def fill(self) -> None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        now = time.time()
        for held in self.interceptor.held():
            message = held.message
            preview = message.payload[:60].decode("utf-8", errors="replace") \
                if message.type == "text" else message.payload[:24].hex(" ")
            table.add_row(
                str(held.id), "client" if held.from_client else "server", message.type,
                f"{now - held.since:.0f} s", SafeText.line(preview), key=str(held.id),
            )
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))

    def _selected(self) -> Held | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((h for h in self.interceptor.held() if str(h.id) == key), None)

    def _decide(self, held: Held, fate: str, payload: bytes | None = None) -> None:
        try:
            self.interceptor.decide(held.id, fate, payload)
        except ResendError as e:
            self.app.notify(str(e), title="cannot decide", severity="error")
            return
        self.notify(f"held message #{held.id} {fate}", timeout=3)

    def action_decide(self, fate: str) -> None:
        if (held := self._selected()) is not None:
            self._decide(held, FORWARDED if fate == FORWARDED else DROPPED)

    def action_edit(self) -> None:
        if (held := self._selected()) is None:
            return

        def send(payload: bytes | None) -> None:
            if payload is not None:
                self._decide(held, EDITED, payload)

        self.app.push_screen(HeldEditScreen(held), send)

    def action_close(self) -> None:
        self.dismiss(None)
