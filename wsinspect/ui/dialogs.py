"""Small modal screens: edit a payload before resending it, export sessions, show a replay's
comparison."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label, Select, Static

from ..formats import EXPORT_FORMATS
from ..resend import DESTINATIONS, PAYLOAD_ENCODINGS
from .format import SafeText

FORMAT_SUFFIXES = {"har": ".har", "flows": ".flows", "jsonl": ".jsonl"}


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
                yield Select([(e, e) for e in PAYLOAD_ENCODINGS], value=self.encoding,
                             allow_blank=False, id="edit-encoding", compact=True)
                yield Select([(f"to the {d}" if d != "original" else "where it went", d)
                              for d in DESTINATIONS], value="original",
                             allow_blank=False, id="edit-destination", compact=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(EditedPayload(
            event.value,
            self.query_one("#edit-encoding", Select).value,
            self.query_one("#edit-destination", Select).value,
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
            yield Input(value=self.stem + FORMAT_SUFFIXES["har"], id="export-path")
            with Horizontal(classes="dialog-options"):
                yield Select([(f, f) for f in EXPORT_FORMATS], value="har", allow_blank=False,
                             id="export-format", compact=True)
                yield Checkbox("redact credentials", value=True, id="export-redact",
                               compact=True)
                if self.session_id is not None:
                    yield Checkbox("all sessions", value=False, id="export-all", compact=True)

    def on_select_changed(self, event: Select.Changed) -> None:
        path_input = self.query_one("#export-path", Input)
        path = Path(path_input.value)
        if path.suffix in FORMAT_SUFFIXES.values():
            path_input.value = str(path.with_suffix(FORMAT_SUFFIXES[event.value]))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            self.dismiss(None)
            return
        everything = self.query("#export-all")
        self.dismiss(ExportRequest(
            Path(value).expanduser(),
            self.query_one("#export-format", Select).value,
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
