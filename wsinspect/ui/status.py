"""The status line every screen shows, and the one-line summary of a session."""

from __future__ import annotations

from rich.text import Text
from textual.screen import Screen
from textual.widgets import Static

from ..model import Outcome, Session
from ..report import close_text
from .format import duration, format_size, printable

OUTCOME_STYLES = {
    Outcome.OPEN: "bold black on green",
    Outcome.CLOSED: "bold white on grey37",
    Outcome.REJECTED: "bold black on yellow",
    Outcome.FAILED: "bold white on red",
}


def is_covered(screen: Screen) -> bool:
    """Whether another screen is on top of `screen`. Textual still counts it as visible and
    turns each of its updates into a repaint of the whole screen on top, so live widgets of a
    covered screen wait until it is resumed. (A screen being pushed is not covered.)"""
    return screen is not screen.app.screen and screen in screen.app.screen_stack


def outcome_badge(outcome: Outcome) -> Text:
    return Text(f" {outcome.value} ", style=OUTCOME_STYLES[outcome])


def session_summary(session: Session, now: float) -> Text:
    stats = session.stats
    text = Text()
    text.append(f"#{session.id} ", style="bold")
    text.append_text(outcome_badge(session.outcome))
    text.append(f" {printable(session.url)}", style="bold")
    status = session.status if session.status is not None else "-"
    text.append(
        f"  status {status}  hops {len(session.hops)}  messages {stats.count}"
        f" ({stats.from_client} → / {stats.from_server} ←)  {format_size(stats.bytes)}"
        f"  {duration(session.duration(now))}"
    )
    if ended := close_text(session):
        text.append(f"  end: {printable(ended)}")
    return text


class StatusBar(Static):
    """Listen addresses and modes, session counts, messages per second, log problems."""

    def on_mount(self) -> None:
        self.update_status()
        self.set_interval(1.0, self.update_status)

    def update_status(self) -> None:
        if not is_covered(self.screen):
            self.update(self.app.status_text(), layout=False)
