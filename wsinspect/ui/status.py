"""The status line every screen shows, and the summary of a session."""

from __future__ import annotations

from textual.screen import Screen
from textual.widget import Widget

from ..model import Outcome, Session
from ..report import close_text
from ..store import StoreChanges
from .app_access import AppAccess
from .colours import Coloured, Colours
from .format import SafeText, duration, fit_fields, format_size, rtt_summary

def is_covered(screen: Screen) -> bool:
    """Whether another screen is on top of `screen`. Textual still counts it as visible and
    turns each of its updates into a repaint of the whole screen on top, so live widgets of a
    covered screen wait until it is resumed. (A screen being pushed is not covered.)"""
    return screen is not screen.app.screen and screen in screen.app.screen_stack


def outcome_badge(outcome: Outcome, colours: Colours) -> SafeText:
    return SafeText(f" {outcome.value} ", style=colours[f"outcome--{outcome.value}"])


def summary_fields(
    session: Session, now: float, colours: Colours, protocol: str | None = None
) -> tuple[SafeText, list[SafeText]]:
    """What the summary says: the session (id, state, URL), then its figures, most telling
    first; `protocol` is the application protocol it speaks, when known."""
    stats = session.stats
    head = SafeText.line(f"#{session.id} ", style="bold")
    head.append(outcome_badge(session.outcome, colours))
    head.append(SafeText.line(f" {session.url}", style="bold"))
    status = session.status if session.status is not None else "-"
    fields = [
        SafeText.line(f"status {status}"),
        *([SafeText.line(protocol, style="bold")] if protocol else []),
        SafeText.line(f"messages {stats.count} ({stats.from_client} → / {stats.from_server} ←)"),
        SafeText.line(format_size(stats.bytes)),
        SafeText.line(duration(session.duration(now))),
        SafeText.line(f"hops {len(session.hops)}"),
    ]
    if rtt := rtt_summary(session):
        fields.append(SafeText.line(rtt))
    if ended := close_text(session):
        fields.append(SafeText.line(f"end: {ended}"))
    return head, fields


class SessionSummary(Coloured, Widget):
    """Two lines: the session and its URL, then its figures. Each line fits the width by
    whole fields: the URL is shortened with an ellipsis, figures that do not fit are left out
    (the Handshake tab has them all), nothing wraps."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: tuple[Session, float] | None = None
        self.protocol: str | None = None

    def show(self, session: Session, now: float) -> None:
        self._shown = (session, now)
        self.refresh()

    def show_protocol(self, protocol: str | None) -> None:
        if protocol != self.protocol:
            self.protocol = protocol
            self.refresh()

    def render(self) -> SafeText:
        if self._shown is None:
            return SafeText()
        head, fields = summary_fields(*self._shown, self.colours(),  # in the current theme
                                      self.protocol)
        width = self.content_region.width or self.size.width
        return SafeText("\n").join([fit_fields([head], width), fit_fields(fields, width)])


class StatusBar(AppAccess, Coloured, Widget):
    """Listen addresses and modes, messages per second, log problems, session counts: whole
    parts from the end are left out when they do not fit."""

    def on_mount(self) -> None:
        self.update_status()
        self.set_interval(1.0, self.update_status)
        self.wsapp.store_changed_signal.subscribe(self, self._store_changed, immediate=True)

    def _store_changed(self, changes: StoreChanges) -> None:
        if changes.added or changes.updated:  # new messages wait for the 1-second refresh
            self.update_status()

    def update_status(self) -> None:
        if not is_covered(self.screen):
            self.refresh()

    def render(self) -> SafeText:
        fields = self.wsapp.status_fields(self.colours())  # read now, in the current theme
        return fit_fields(fields, self.size.width, gap=" │ ")
