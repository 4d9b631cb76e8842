"""Small modal screens: edit a payload before resending it, export sessions, show a replay's
comparison. Each fits 80x24; choices are radio buttons in a row, so nothing drops down out
of a dialog's box."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label, RadioButton, RadioSet, Static

from ..formats import EXPORTS, export_format, export_format_for
from ..resend import DESTINATIONS, PAYLOAD_ENCODINGS
from .format import SafeText


def choices(options: list[tuple[str, str]], value: str, id: str) -> RadioSet:
    """One of `options` (label, value), in a row; `chosen` reads the value back."""
    return RadioSet(
        *(RadioButton(label, value=v == value, name=v) for label, v in options),
        id=id, compact=True, classes="choices",
    )


def chosen(radio_set: RadioSet) -> str:
    return radio_set.pressed_button.name


@dataclass(frozen=True, slots=True)
class EditedPayload:
    text: str
    encoding: str  # one of PAYLOAD_ENCODINGS
    to: str  # one of DESTINATIONS


class EditPayloadScreen(ModalScreen[EditedPayload | None]):
    """The payload to inject, as text or (binary) hex/base64; Enter sends, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, text: str, encoding: str, what: str) -> None:
        super().__init__()
        self.initial = text
        self.encoding = encoding
        self.what = what

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(SafeText(f"Edit {self.what} and send it (Enter sends, Esc cancels):"))
            yield Input(value=self.initial, id="edit-payload")
            with Horizontal(classes="dialog-options"):
                yield Label("as ")
                yield choices([(e, e) for e in PAYLOAD_ENCODINGS], self.encoding, "edit-encoding")
            with Horizontal(classes="dialog-options"):
                yield Label("to ")
                yield choices([("where it went" if d == "original" else f"the {d}", d)
                               for d in DESTINATIONS], "original", "edit-destination")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(EditedPayload(
            event.value,
            chosen(self.query_one("#edit-encoding", RadioSet)),
            chosen(self.query_one("#edit-destination", RadioSet)),
        ))

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True, slots=True)
class ExportRequest:
    path: Path
    fmt: str
    redact: bool
    all_sessions: bool


class ExportScreen(ModalScreen[ExportRequest | None]):
    """Where and how to export; Enter in the path field exports, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, stem: str, session_id: int | None) -> None:
        super().__init__()
        self.stem = stem
        self.session_id = session_id

    def compose(self) -> ComposeResult:
        scope = f"session #{self.session_id}" if self.session_id is not None else "all sessions"
        with Vertical(classes="dialog"):
            yield Label(f"Export {scope} to (Enter exports, Esc cancels):")
            yield Input(value=self.stem + EXPORTS[0].suffixes[0], id="export-path")
            with Horizontal(classes="dialog-options"):
                yield Label("as ")
                yield choices([(f.name, f.name) for f in EXPORTS], EXPORTS[0].name, "export-format")
            with Horizontal(classes="dialog-options"):
                yield Checkbox("redact credentials", value=True, id="export-redact",
                               compact=True)
                if self.session_id is not None:
                    yield Checkbox("all sessions", value=False, id="export-all", compact=True)

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        path_input = self.query_one("#export-path", Input)
        path = Path(path_input.value)
        if export_format_for(path):  # a name the user has not made their own: follow the choice
            suffix = export_format(chosen(event.radio_set)).suffixes[0]
            path_input.value = str(path.with_suffix(suffix))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            self.dismiss(None)
            return
        everything = self.query("#export-all")
        self.dismiss(ExportRequest(
            Path(value).expanduser(),
            chosen(self.query_one("#export-format", RadioSet)),
            self.query_one("#export-redact", Checkbox).value,
            self.session_id is None or (bool(everything) and everything.first().value),
        ))

    def action_cancel(self) -> None:
        self.dismiss(None)


class ComparisonScreen(ModalScreen[None]):
    """A replay's outcome: the server's answers compared with the original's."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("q", "close", "Close", show=False)]

    def __init__(self, title: str, lines: list[str]) -> None:
        super().__init__()
        self.title_text = title
        self.lines = lines

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="comparison-dialog"):
            yield Label(SafeText(self.title_text, style="bold"))
            with VerticalScroll(id="comparison-scroll"):
                yield Static(SafeText("\n").join(SafeText.line(line) for line in self.lines),
                             id="comparison-text")
            yield Label(SafeText("Esc closes", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
