"""The payload pane: one message decoded in its protocol, as text, pretty JSON or a hex
dump, with copy and save."""

from __future__ import annotations

import json
from pathlib import Path

from rich.highlighter import JSONHighlighter
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from ..model import Message, MessageType
from ..protocols import Decoded
from .format import SafeText, clock, format_size, hex_dump, is_text, milliseconds, pretty_json

# Beyond this, the pane shows the start of a payload; copy and save always take all of it.
DISPLAY_LIMIT = 64 * 1024

VIEWS = ("decoded", "text", "json", "hex")


def default_view(message: Message, decoded: Decoded | None = None) -> str:
    if decoded is not None:
        return "decoded"
    if is_text(message):
        return "json" if pretty_json(message.payload[:DISPLAY_LIMIT]) is not None else "text"
    return "hex"


def payload_for_clipboard(message: Message) -> str:
    """Text payloads as they are; anything else as hex."""
    if is_text(message):
        return message.text()
    return message.payload.hex()


def highlighted_json(value) -> SafeText:
    text = SafeText(json.dumps(value, indent=2, ensure_ascii=False, default=str))
    JSONHighlighter().highlight(text)
    return text


def render_decoded(decoded: Decoded) -> SafeText:
    """What a message is in its protocol: the label, the call it answers or the id it is
    answered by, then each unit's decoded fields (an event's arguments, a packet's fields)."""
    text = SafeText()
    text.append(decoded.protocol, style="bold")
    text.append(f"  {decoded.label}", style="bold")
    for name in ("operation", "destination", "topic"):
        if (value := getattr(decoded, name)) is not None:
            text.append(f"  {name} {value}")
    if decoded.id is not None:
        text.append(f"  id {json.dumps(decoded.id, ensure_ascii=False)}")
    if decoded.latency is not None:
        text.append(f"  answers its call after {milliseconds(decoded.latency)}")
    several = len(decoded.parts) > 1
    for number, part in enumerate(decoded.parts, start=1):
        text.append("\n")
        if several:
            detail = part.operation or part.destination or part.topic
            text.append(f"{number}. {part.shown_label}" + (f"  {detail}" if detail else ""),
                        style="bold")
            text.append("\n")
        text.append(highlighted_json(part.fields) if part.fields else SafeText("(no fields)"))
    return text


def render_payload(message: Message, view: str, decoded: Decoded | None = None) -> SafeText:
    if view == "decoded":
        if decoded is not None:
            return render_decoded(decoded)
        view = default_view(message)
    shown = message.payload[:DISPLAY_LIMIT]
    if message.type is MessageType.CLOSE:
        code, reason = message.close_code_reason()
        return SafeText(f"close code {code}\nreason {reason}")
    if view == "json":
        pretty = pretty_json(shown)
        if pretty is not None:
            text = SafeText(pretty)
            JSONHighlighter().highlight(text)
            return text
        view = "text" if is_text(message) else "hex"
    if view == "text":
        return SafeText(shown.decode("utf-8", errors="replace"))
    return SafeText(hex_dump(shown))


class PayloadPane(Vertical):
    """Shows the message the message list's cursor is on."""

    def __init__(self, session_start: float, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.session_start = session_start
        self.message: Message | None = None
        self.decoded: Decoded | None = None  # the message in the session's protocol
        self.view = "text"

    def compose(self) -> ComposeResult:
        yield Static(id="payload-info")
        with VerticalScroll(id="payload-scroll"):
            yield Static(id="payload-body")

    def on_mount(self) -> None:
        self.show(None)

    def show(self, message: Message | None, decoded: Decoded | None = None) -> None:
        self.message, self.decoded = message, decoded
        if message is not None:
            self.view = default_view(message, decoded)
        self._show_current()

    def cycle_view(self) -> None:
        if self.message is None:
            return
        views = VIEWS if self.decoded is not None else VIEWS[1:]
        self.view = views[(views.index(self.view) + 1) % len(views)]
        self._show_current()

    def _show_current(self) -> None:
        info = self.query_one("#payload-info", Static)
        body = self.query_one("#payload-body", Static)
        message = self.message
        if message is None:
            info.update(SafeText("No message selected", style="italic"))
            body.update(SafeText("Move the cursor in the message list (↑/↓ or a click) to see "
                                 "a payload."))
            return
        line = SafeText.line()
        line.append(f"#{message.index} ", style="bold")
        line.append("client → server" if message.from_client else "server → client")
        line.append(f"  {message.type.value}  {format_size(message.size)}")
        line.append(
            f"  {clock(message.timestamp)}  +{message.timestamp - self.session_start:.3f}s"
        )
        line.append(f"  [{self.view}]", style="dim")
        if message.truncated:
            line.append(f"  stored {format_size(len(message.payload))}, sha256 {message.sha256}")
        if message.injected:
            line.append("  injected")
        if message.intercept:
            line.append(f"  held {message.held:.1f} s, then {message.intercept}")
        if message.rtt is not None:
            line.append(f"  rtt {milliseconds(message.rtt)}")
        if len(message.payload) > DISPLAY_LIMIT:
            line.append(f"  showing the first {format_size(DISPLAY_LIMIT)}", style="dim")
        info.update(line)
        body.update(render_payload(message, self.view, self.decoded))
        self.query_one("#payload-scroll", VerticalScroll).scroll_home(animate=False)


class SavePayloadScreen(ModalScreen[Path | None]):
    """Asks where to save a payload; dismissed with the path, or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, suggestion: str) -> None:
        super().__init__()
        self.suggestion = suggestion

    def compose(self) -> ComposeResult:
        with Vertical(id="save-dialog"):
            yield Label("Save the payload to (Enter to save, Esc to cancel):")
            yield Input(value=self.suggestion, id="save-path")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        self.dismiss(Path(value).expanduser() if value else None)

    def action_cancel(self) -> None:
        self.dismiss(None)
