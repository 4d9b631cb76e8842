"""The status line every screen shows, and the summary of a session."""

from __future__ import annotations

from textual.screen import Screen
from textual.widget import Widget

from ..model import Outcome, Session
from ..report import close_text
from .format import SafeText, duration, fit_fields, format_size

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


def outcome_badge(outcome: Outcome) -> SafeText:
    return SafeText(f" {outcome.value} ", style=OUTCOME_STYLES[outcome])


def summary_fields(session: Session, now: float) -> tuple[SafeText, list[SafeText]]:
    """What the summary says: the session (id, state, URL), then its figures, most telling
    first."""
    stats = session.stats
    head = SafeText.line(f"#{session.id} ", style="bold")
    head.append(outcome_badge(session.outcome))
    head.append(SafeText.line(f" {session.url}", style="bold"))
    status = session.status if session.status is not None else "-"
    fields = [
        SafeText.line(f"status {status}"),
        SafeText.line(f"messages {stats.count} ({stats.from_client} → / {stats.from_server} ←)"),
        SafeText.line(format_size(stats.bytes)),
        SafeText.line(duration(session.duration(now))),
        SafeText.line(f"hops {len(session.hops)}"),
    ]
    if ended := close_text(session):
        fields.append(SafeText.line(f"end: {ended}"))
    return head, fields


class SessionSummary(Widget):
    """Two lines: the session and its URL, then its figures. Each line fits the width by
    whole fields: the URL is shortened with an ellipsis, figures that do not fit are left out
    (the Handshake tab has them all), nothing wraps."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._fields: tuple[SafeText, list[SafeText]] = (SafeText(), [])

    def show(self, session: Session, now: float) -> None:
        self._fields = summary_fields(session, now)
        self.refresh()

    def render(self) -> SafeText:
        head, fields = self._fields
        width = self.content_region.width or self.size.width
        return SafeText("\n").join([fit_fields([head], width), fit_fields(fields, width)])


class StatusBar(Widget):
    """Listen addresses and modes, messages per second, log problems, session counts: whole
    parts from the end are left out when they do not fit."""

    def __init__(self) -> None:
        super().__init__()
        self._fields: list[SafeText] = []

    def on_mount(self) -> None:
        self.update_status()
        self.set_interval(1.0, self.update_status)

    def update_status(self) -> None:
        if not is_covered(self.screen):
            self._fields = self.app.status_fields()
            self.refresh()

    def render(self) -> SafeText:
        return fit_fields(self._fields, self.size.width, gap=" │ ")
