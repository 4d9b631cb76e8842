"""The first screen: the live list of sessions, or what to do when there are none yet."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..model import Outcome, Session
from ..store import StoreChanges
from .app_access import AppAccess
from .colours import Coloured, Colours
from .commands import BindingCommands
from .findings import findings_badge
from .format import MiddleShortened, SafeText, clock, duration, format_size
from .intercept import INTERCEPT_BINDINGS
from .status import StatusBar, is_covered, outcome_badge

# A busy session's counters change with every batch of messages; the list shows them at this
# pace rather than redrawing rows fifty times a second.
MESSAGE_COUNTS_INTERVAL = 0.25

# What matters first comes first: at 80 columns everything up to "last" fits, the URL taking
# what the others leave; wider screens show the rest.
COLUMNS = [
    ("state", "state"),
    ("findings", "findings"),
    ("url", "URL"),
    ("status", "status"),
    ("messages", "msgs"),
    ("bytes", "bytes"),
    ("duration", "duration"),
    ("last", "last"),
    ("hops", "hops"),
    ("id", "#"),
]
EXTRA_COLUMNS = ("hops", "id")  # shown when the screen has room for them after the URL
URL_MIN_WIDTH = 12


# What new messages change in a row: no need to diagnose the session again for them
# (37 ms for 1,000 two-hop sessions, each refresh of the counts).
COUNT_COLUMNS = ("messages", "bytes", "duration", "last")


def session_cells(
    session: Session, now: float, colours: Colours, columns: Iterable[str] | None = None
) -> dict[str, SafeText | MiddleShortened]:
    def right(value: object) -> SafeText:
        return SafeText.line(str(value), justify="right")

    cells: dict[str, Callable[[], SafeText | MiddleShortened]] = {
        "id": lambda: right(session.id),
        "state": lambda: outcome_badge(session.outcome, colours),
        "findings": lambda: findings_badge(session, colours),
        "url": lambda: MiddleShortened(SafeText.line(session.url)),
        "status": lambda: right(session.status if session.status is not None else "-"),
        "hops": lambda: right(len(session.hops)),
        "messages": lambda: right(session.stats.count),
        "bytes": lambda: right(format_size(session.stats.bytes)),
        "duration": lambda: right(duration(session.duration(now))),
        "last": lambda: SafeText.line(clock(session.last_activity, millis=False)),
    }
    return {key: cells[key]() for key in (columns or cells)}


class SessionsTable(Coloured, DataTable):
    """One row per session, in the order they started. The URL column takes the width the
    other columns leave (long URLs lose their middle), so the figures after it stay
    on screen in a narrow terminal."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Open", tooltip="Open the selected session"),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for key, label in COLUMNS:
            self.add_column(label, key=key, width=URL_MIN_WIDTH if key == "url" else None)
        self._url_width = 0  # the longest URL's cells
        self._fitting = False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "select_cursor" or self.row_count > 0  # no "Open" in the empty state

    def action_first(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)

    def on_resize(self, event: events.Resize) -> None:
        self.fit_url_column()

    def _refit_soon(self) -> None:
        """Fit the URL column once the other columns have measured their new cells."""
        if not self._fitting:
            self._fitting = True
            self.call_after_refresh(self.fit_url_column)

    def fit_url_column(self) -> None:
        self._fitting = False
        url = self.columns["url"]
        widths = {key: column.get_render_width(self) for key, column in self.columns.items()}
        essential = sum(w for key, w in widths.items() if key not in (*EXTRA_COLUMNS, "url"))
        room = self.scrollable_content_region.width - essential - 2 * self.cell_padding
        # Extra columns go in whole into what the URL leaves; the URL takes the rest of the
        # row, so that those which do not fit start beyond the edge, not cut in half.
        spare, shown = room - self._url_width, 0
        for key in EXTRA_COLUMNS:
            if shown + widths[key] <= spare:
                shown += widths[key]
        all_shown = shown == sum(widths[key] for key in EXTRA_COLUMNS)
        width = max(URL_MIN_WIDTH, self._url_width if all_shown else room - shown)
        if width != url.width:
            url.width = width
            self.refresh()

    @property
    def at_newest(self) -> bool:
        return self.row_count == 0 or self.cursor_row >= self.row_count - 1

    def add_session(self, session: Session, now: float) -> None:
        if str(session.id) in self.rows:  # already listed when the app started
            self.update_session(session, now)
            return
        cells = session_cells(session, now, self.colours())
        self.add_row(*(cells[key] for key, _ in COLUMNS), key=str(session.id))
        self._url_width = max(self._url_width, cells["url"].cell_len)
        self._refit_soon()
        if self.row_count == 1:
            self.refresh_bindings()

    def update_session(
        self, session: Session, now: float, columns: Iterable[str] | None = None
    ) -> None:
        for key, cell in session_cells(session, now, self.colours(), columns).items():
            self.update_cell(str(session.id), key, cell, update_width=key != "url")
            if key == "url":
                self._url_width = max(self._url_width, cell.cell_len)
        self._refit_soon()


class EmptyState(Static):
    """Tells a newcomer how to send a first WebSocket through the proxy."""


class SessionsScreen(AppAccess, Screen):
    # A tooltip makes a binding a command of the palette too (see commands.py); the log and
    # the theme are the app's commands, on every screen.
    BINDINGS = [
        Binding("f", "follow", "Newest", tooltip="Jump to the newest session"),
        Binding("x", "app.export", "Export all",
                tooltip="Write all sessions as HAR, flows or JSON lines (redacted)"),
        Binding("l", "app.show_log", "Log"),
        *INTERCEPT_BINDINGS,
        Binding("t", "app.toggle_theme", "Theme"),
        Binding("q", "app.quit", "Quit"),
    ]
    COMMANDS = {BindingCommands}

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield EmptyState(self.wsapp.empty_state(), id="empty")
        yield SessionsTable(id="sessions")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(SessionsTable)
        now = self.wsapp.clock()
        for session in self.wsapp.store.sessions():
            table.add_session(session, now)
        if table.row_count:
            table.move_cursor(row=table.row_count - 1)
        self._show_empty_state()
        self.set_interval(1.0, self._tick_durations)
        self.set_interval(MESSAGE_COUNTS_INTERVAL, self._update_message_counts)
        # From here on the list follows the store (what came before on_mount is listed).
        self.wsapp.store_changed_signal.subscribe(self, self.store_changed, immediate=True)
        self.app.theme_changed_signal.subscribe(self, lambda _: self._recolour())

    def _recolour(self) -> None:
        """Paint the badges again in the new theme's colours."""
        table, now = self.query_one(SessionsTable), self.wsapp.clock()
        for session in self.wsapp.store.sessions():
            if str(session.id) in table.rows:
                table.update_session(session, now, ("state", "findings"))

    def _show_empty_state(self) -> None:
        has_sessions = self.query_one(SessionsTable).row_count > 0
        self.query_one("#empty").display = not has_sessions
        self.query_one(SessionsTable).display = has_sessions

    def __init__(self) -> None:
        super().__init__()
        self._counts_stale: set[int] = set()  # sessions with new messages, shown in batches
        self._changed_while_hidden: set[int] = set()

    def store_changed(self, changes: StoreChanges) -> None:
        if is_covered(self):  # catch up on resume
            self._changed_while_hidden |= changes.added | changes.updated | changes.messages
            return
        table = self.query_one(SessionsTable)
        store, now = self.wsapp.store, self.wsapp.clock()
        following = table.at_newest
        for session_id in sorted(changes.added):
            table.add_session(store.session(session_id), now)
        for session_id in changes.updated - changes.added:
            table.update_session(store.session(session_id), now)
        self._counts_stale |= changes.messages - changes.added - changes.updated
        if changes.added:
            self._show_empty_state()
            if following:
                table.move_cursor(row=table.row_count - 1)

    def on_screen_resume(self) -> None:
        for bar in self.query(StatusBar):
            bar.update_status()
        if not self._changed_while_hidden:
            return
        table, now = self.query_one(SessionsTable), self.wsapp.clock()
        following = table.at_newest
        for session_id in sorted(self._changed_while_hidden):
            table.add_session(self.wsapp.store.session(session_id), now)
        self._changed_while_hidden.clear()
        self._show_empty_state()
        if following and table.row_count:
            table.move_cursor(row=table.row_count - 1)

    def _update_message_counts(self) -> None:
        if not self._counts_stale or is_covered(self) or not self.query(SessionsTable):
            return
        table, now = self.query_one(SessionsTable), self.wsapp.clock()
        for session_id in self._counts_stale:
            table.update_session(self.wsapp.store.session(session_id), now, COUNT_COLUMNS)
        self._counts_stale.clear()

    def _tick_durations(self) -> None:
        if is_covered(self):
            return
        table, now = self.query_one(SessionsTable), self.wsapp.clock()
        for session in self.wsapp.store.sessions():
            if session.outcome is Outcome.OPEN:
                table.update_session(session, now, ["duration"])

    def action_follow(self) -> None:
        table = self.query_one(SessionsTable)
        if table.row_count:
            table.move_cursor(row=table.row_count - 1)
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.wsapp.open_session(int(event.row_key.value))
