"""The log screen: the engine's log records (mitmproxy's and wsinspect's), newest last."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, RichLog

from ..engine import LogRecord
from .format import SafeText, clock
from .status import StatusBar

LEVEL_STYLES = {"error": "bold red", "warning": "yellow", "warn": "yellow"}


def log_line(record: LogRecord) -> SafeText:
    text = SafeText()
    text.append(clock(record.timestamp) + " ", style="dim")
    text.append(SafeText.line(f"{record.level:<7} ", style=LEVEL_STYLES.get(record.level, "dim")))
    text.append(record.message)
    return text


class LogScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("l", "app.pop_screen", "Back", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield RichLog(id="log", wrap=True, markup=False, highlight=False, max_lines=5000)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        log = self.query_one(RichLog)
        records = self.app.log_records()
        if not records:
            log.write(SafeText("No log records yet.", style="italic"))
        for record in records:
            log.write(log_line(record))

    def add_record(self, record: LogRecord) -> None:
        self.query_one(RichLog).write(log_line(record))
