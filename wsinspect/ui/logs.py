"""The log screen: the engine's log records (mitmproxy's and wsinspect's), newest last."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, RichLog

from ..engine import LogRecord
from .app_access import AppAccess
from .colours import Coloured, Colours
from .format import SafeText, clock
from .status import StatusBar

LEVEL_CLASSES = {"error": "level--error", "warning": "level--warning", "warn": "level--warning"}


def log_line(record: LogRecord, colours: Colours) -> SafeText:
    text = SafeText()
    text.append(clock(record.timestamp) + " ", style="dim")
    level = colours[LEVEL_CLASSES.get(record.level, "level--other")]
    text.append(SafeText.line(f"{record.level:<7} ", style=level))
    text.append(record.message)
    return text


class LogScreen(AppAccess, Coloured, Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("l", "app.pop_screen", "Back", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield RichLog(id="log", wrap=True, markup=False, highlight=False, max_lines=5000)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._write_records()
        self.wsapp.log_arrived_signal.subscribe(self, self.add_record, immediate=True)
        self.app.theme_changed_signal.subscribe(self, lambda _: self._write_records())

    def _write_records(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        records = self.wsapp.log_records()
        if not records:
            log.write(SafeText("No log records yet.", style="italic"))
        colours = self.colours()
        for record in records:
            log.write(log_line(record, colours))

    def add_record(self, record: LogRecord) -> None:
        self.query_one(RichLog).write(log_line(record, self.colours()))
