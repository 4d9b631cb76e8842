"""The message list: a virtual view over one hop's messages in the store.

Built on Textual's Line API (like `textual.widgets.Log`): only the visible lines are rendered,
and they are read from the store by index ranges, so a session of millions of messages costs a
few small SQLite reads per frame. A filter maps rows to message indexes; it is computed by
scanning the store in chunks without blocking the app.
"""

from __future__ import annotations

import asyncio
import re
import time
from bisect import bisect_left, bisect_right
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message as TextualMessage
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer

from ..model import Message, MessageType
from ..store import CaptureError, SessionStore
from .format import clock, format_size, milliseconds, preview
from .pacing import LoopLoad

SCAN_CHUNK = 5000
CACHE_ROWS = 4000
STRIP_CACHE = 1000


class FilterError(ValueError):
    """A filter the user typed that cannot be used (a bad regular expression)."""


@dataclass(frozen=True)
class MessageFilter:
    """Which messages to show: by direction ("client", "server" or None), by type and by text.

    `query` is a case-insensitive substring, or a regular expression written as `/regex/`.
    With `only_matches` off, the text query does not hide rows: it marks them, for jumping."""

    query: str = ""
    direction: str | None = None
    type: MessageType | None = None
    only_matches: bool = True

    def pattern(self) -> re.Pattern[str] | None:
        query = self.query
        if not query:
            return None
        if len(query) >= 2 and query.startswith("/") and query.endswith("/"):
            try:
                return re.compile(query[1:-1], re.IGNORECASE)
            except re.error as e:
                raise FilterError(f"bad regular expression: {e}") from None
        return re.compile(re.escape(query), re.IGNORECASE)

    @property
    def hides_rows(self) -> bool:
        return bool(self.direction or self.type or (self.query and self.only_matches))

    def kind_matches(self, message: Message) -> bool:
        return (self.direction is None or message.direction == self.direction) and (
            self.type is None or message.type is self.type
        )


def text_matches(pattern: re.Pattern[str], message: Message) -> bool:
    return pattern.search(message.payload.decode("utf-8", errors="replace")) is not None


@dataclass(frozen=True, slots=True)
class Row:
    """What a line shows of one message (the payload itself stays in the store)."""

    index: int
    from_client: bool
    type: MessageType
    size: int
    timestamp: float
    preview: str
    hit: bool
    injected: bool
    rtt: float | None  # a pong's round trip


# Below this width a row leaves out the wall-clock time (+seconds stays) and narrows the
# index, so that the payload keeps half of an 80-column screen.
WIDE_LIST = 100


def index_width(width: int) -> int:
    return 9 if width >= WIDE_LIST else 6


def list_header(width: int) -> str:
    """Column titles lined up with MessageList._render_row at `width`."""
    clock_title = f"{'time':<12} " if width >= WIDE_LIST else ""
    return (f" {'#':>{index_width(width)}} {clock_title}{'+seconds':>10} dir {'type':<6} "
            f"{'size':>10}  payload")


class MessageList(ScrollView, can_focus=True):
    """Messages of one hop, newest at the bottom; follows the tail until the user scrolls away."""

    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last / follow", show=False),
    ]
    COMPONENT_CLASSES = {
        "messagelist--client",
        "messagelist--server",
        "messagelist--control",
        "messagelist--dim",
        "messagelist--cursor",
        "messagelist--hit",
        "messagelist--injected",
        "messagelist--rtt",
    }

    class Highlighted(TextualMessage):
        """The cursor moved to a message (`index` within the hop), or off all messages."""

        def __init__(self, index: int | None) -> None:
            super().__init__()
            self.index = index

    class ScanProgress(TextualMessage):
        def __init__(self, scanned: int, total: int, matches: int) -> None:
            super().__init__()
            self.scanned, self.total, self.matches = scanned, total, matches

    def __init__(
        self,
        store: SessionStore,
        session_id: int,
        hop_position: int = 1,  # 1 is the client-most hop
        *,
        load: LoopLoad | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.store = store
        self.load = load or LoopLoad()  # paces live repaints; one never sampled never does
        self._last_growth = 0.0  # when live data last extended the view
        self._catch_up: Timer | None = None
        self.session_id = session_id
        self.hop_position = hop_position
        self.session_start = store.session(session_id).timestamp_start
        self.total = store.message_count(session_id, hop_position)
        self.filter = MessageFilter()
        self._pattern: re.Pattern[str] | None = None
        self.rows: array | None = None  # row -> message index while the filter hides rows
        self.hits = array("q")  # rows whose message matches the text query, ascending
        self._hit_indexes: set[int] = set()
        self._scanned = self.total  # messages the filter has looked at
        self._scan_task: asyncio.Task | None = None
        self._cache: OrderedDict[int, Row] = OrderedDict()
        self.cursor: int | None = None  # a row
        self.follow = True
        self.virtual_size = Size(0, self.total)
        self._line_styles: dict[str, Style] = {}
        self._strips: OrderedDict[tuple, Strip] = OrderedDict()  # rendered rows, newest last
        self._damage_reported = False

    # ----- rows and the store --------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.rows) if self.rows is not None else self.total

    def message_index(self, row: int) -> int:
        return self.rows[row] if self.rows is not None else row

    @property
    def cursor_message(self) -> int | None:
        if self.cursor is None or self.cursor >= self.row_count:
            return None
        return self.message_index(self.cursor)

    def _read(self, start: int, stop: int) -> list[Message]:
        """Messages start..stop; a damaged capture shows as one notification and no rows."""
        try:
            return self.store.messages(self.session_id, start, stop, self.hop_position)
        except CaptureError as e:
            if not self._damage_reported:
                self._damage_reported = True
                self.notify(str(e), title="damaged capture", severity="error", timeout=8)
            return []

    def _make_row(self, message: Message) -> Row:
        hit = self._pattern is not None and (
            message.index in self._hit_indexes or text_matches(self._pattern, message)
        )
        return Row(
            message.index,
            message.from_client,
            message.type,
            message.size,
            message.timestamp,
            preview(message),
            hit,
            message.injected,
            message.rtt,
        )

    def _prefetch(self, first_row: int, last_row: int) -> None:
        """Read the messages of rows first_row..last_row that are not cached, in runs."""
        wanted = [
            self.message_index(row)
            for row in range(max(0, first_row), min(last_row, self.row_count))
        ]
        missing = [i for i in wanted if i not in self._cache]
        runs: list[list[int]] = []
        for index in missing:
            if runs and index - runs[-1][1] <= 32:
                runs[-1][1] = index
            else:
                runs.append([index, index])
        for start, stop in runs:
            for message in self._read(start, stop + 1):
                self._cache[message.index] = self._make_row(message)
        for index in wanted:
            if index in self._cache:
                self._cache.move_to_end(index)
        while len(self._cache) > CACHE_ROWS:
            self._cache.popitem(last=False)

    # ----- rendering -----------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        scroll_y = int(self.scroll_offset.y)
        self._prefetch(scroll_y + crop.y, scroll_y + crop.bottom)
        # Component styles are looked up once per frame, not once per line.
        styles = {name: self.get_component_rich_style(name) for name in self.COMPONENT_CLASSES}
        styles["base"] = self.rich_style
        if styles != self._line_styles:  # a theme or focus change
            self._line_styles = styles
            self._strips.clear()
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        row = int(self.scroll_offset.y) + y
        width = self.size.width
        base = self._line_styles["base"]
        if row >= self.row_count:
            return Strip.blank(width, base)
        info = self._cache.get(self.message_index(row))
        if info is None:
            return Strip.blank(width, base)
        key = (info.index, info.hit, row == self.cursor, width)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._render_row(info, key[2], width)
            if len(self._strips) > STRIP_CACHE:
                self._strips.popitem(last=False)
        return strip

    def _render_row(self, info: Row, is_cursor: bool, width: int) -> Strip:
        base = self._line_styles["base"]
        style = self._line_styles.__getitem__
        direction = style("messagelist--client" if info.from_client else "messagelist--server")
        dim = style("messagelist--dim")
        kind_style = (
            style("messagelist--control")
            if info.type in (MessageType.PING, MessageType.PONG, MessageType.CLOSE)
            else base
        )
        marker = "▶" if info.hit else " "
        relative = f"+{info.timestamp - self.session_start:.3f}"
        wide = width >= WIDE_LIST
        segments = [
            Segment(marker, style("messagelist--hit") if info.hit else base),
            Segment(f"{info.index:>{index_width(width)}} ", dim),
            *([Segment(clock(info.timestamp) + " ", base)] if wide else []),
            Segment(f"{relative:>10} ", dim),
            Segment("C→S " if info.from_client else "S→C ", direction),
            Segment(f"{info.type.value:<6} ", kind_style),
            Segment(f"{format_size(info.size):>10}  ", dim),
            *([Segment("injected ", style("messagelist--injected"))] if info.injected else []),
            # A pong's round trip leads its preview, so that it is never the part cut off.
            *([Segment(f"rtt {milliseconds(info.rtt)} ", style("messagelist--rtt"))]
              if info.rtt is not None else []),
            Segment(info.preview, base),
        ]
        if is_cursor:
            segments = list(Segment.apply_style(segments, post_style=style("messagelist--cursor")))
            base = base + style("messagelist--cursor")
        return Strip(segments).crop_extend(0, width, base)

    def _refresh_rows(self) -> None:
        size = Size(self.size.width, self.row_count)
        if size.width == self.virtual_size.width and self.is_mounted:
            # Only the row count changed. The vertical scrollbar is always shown (see
            # app.tcss), so no layout is needed: skipping it keeps a live list cheap.
            self.set_reactive(MessageList.virtual_size, size)
            self._scroll_update(size)
            self.refresh()
        else:
            self.virtual_size = size

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, self.row_count)
        if self.follow:
            self.call_after_refresh(self._follow_tail)

    def _follow_tail(self) -> None:
        self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.follow = True

    # ----- live updates --------------------------------------------------------------------

    def messages_arrived(self) -> None:
        """The store has more messages for this hop: extend the view and follow if following,
        now or, while the event loop is saturated, once the paced interval has passed."""
        if self._catch_up is not None:
            return  # already due
        wait = self._last_growth + self.load.repaint_interval - time.monotonic()
        if wait > 0:
            self._catch_up = self.set_timer(wait, self._take_arrivals)
        else:
            self._take_arrivals()

    def _take_arrivals(self) -> None:
        self._catch_up = None
        total = self.store.message_count(self.session_id, self.hop_position)
        if total == self.total:
            return
        self._last_growth = time.monotonic()
        self.total = total
        if not self._filtering:
            self._scanned = total
        elif self._scan_task is None:
            if total - self._scanned <= SCAN_CHUNK:
                self._scan_step(total)
            else:
                self._scan_task = asyncio.ensure_future(self._scan())
        self._after_growth()

    def _after_growth(self) -> None:
        following = self.follow
        self._refresh_rows()
        if following:
            self._follow_tail()

    # ----- filtering -----------------------------------------------------------------------

    def set_filter(self, new_filter: MessageFilter) -> None:
        """Apply a filter; raises FilterError for a bad regular expression."""
        pattern = new_filter.pattern()
        if self._scan_task is not None:
            self._scan_task.cancel()
            self._scan_task = None
        selected = self.cursor_message
        self.filter = new_filter
        self._pattern = pattern
        self._cache.clear()
        self._strips.clear()
        self.hits = array("q")
        self._hit_indexes = set()
        self.rows = array("q") if new_filter.hides_rows else None
        self._scanned = 0 if self._filtering else self.total
        self.cursor = None
        if self._scanned < self.total:
            if self.total <= SCAN_CHUNK:
                self._scan_step(self.total)
            else:
                self._scan_task = asyncio.ensure_future(self._scan())
        if selected is not None:
            self.cursor = self._row_of(selected)
        self.follow = self.cursor is None
        self._refresh_rows()
        if self.cursor is not None:
            self._scroll_to_cursor()
        else:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.post_message(self.Highlighted(self.cursor_message))

    @property
    def _filtering(self) -> bool:
        return self.rows is not None or self._pattern is not None

    def _row_of(self, index: int) -> int | None:
        if self.rows is None:
            return index if index < self.total else None
        row = bisect_left(self.rows, index)
        return row if row < len(self.rows) and self.rows[row] == index else None

    def _scan_step(self, stop: int) -> None:
        """Run the filter over messages scanned..stop."""
        start = self._scanned
        messages = self._read(start, stop)
        pattern, flt = self._pattern, self.filter
        for message in messages:
            if not flt.kind_matches(message):
                continue
            hit = pattern is not None and text_matches(pattern, message)
            if self.rows is not None:
                if pattern is not None and flt.only_matches and not hit:
                    continue
                row = len(self.rows)
                self.rows.append(message.index)
            else:
                row = message.index
            if hit:
                self.hits.append(row)
                self._hit_indexes.add(message.index)
        self._scanned = start + len(messages) if messages else stop

    async def _scan(self) -> None:
        try:
            while self._scanned < self.total:
                self._scan_step(min(self._scanned + SCAN_CHUNK, self.total))
                self.post_message(self.ScanProgress(self._scanned, self.total, len(self.hits)))
                self._after_growth()
                await asyncio.sleep(0)
        finally:
            self._scan_task = None
        self.post_message(self.ScanProgress(self._scanned, self.total, len(self.hits)))

    @property
    def scanning(self) -> bool:
        return self._scan_task is not None

    # ----- cursor and scrolling ------------------------------------------------------------

    def move_cursor(self, row: int | None) -> None:
        count = self.row_count
        if count == 0:
            row = None
        elif row is not None:
            row = max(0, min(row, count - 1))
        if row == self.cursor:
            return
        self.cursor = row
        if row is not None:
            self._scroll_to_cursor()
        self.follow = row is not None and row == count - 1 and self.is_vertical_scroll_end
        self.refresh()
        self.post_message(self.Highlighted(self.cursor_message))

    def _scroll_to_cursor(self) -> None:
        row, height = self.cursor, max(1, self.scrollable_content_region.height)
        if row is None:
            return
        top = int(self.scroll_offset.y)
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True)
        elif row >= top + height:
            self.scroll_to(y=row - height + 1, animate=False, immediate=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.follow = new_value >= self.max_scroll_y

    def _first_visible(self) -> int:
        return int(self.scroll_offset.y)

    def action_cursor_down(self) -> None:
        self.move_cursor(self._first_visible() if self.cursor is None else self.cursor + 1)

    def action_cursor_up(self) -> None:
        if self.cursor is None:
            height = self.scrollable_content_region.height
            self.move_cursor(min(self.row_count, self._first_visible() + height) - 1)
        else:
            self.move_cursor(self.cursor - 1)

    def action_page_down(self) -> None:
        height = max(1, self.scrollable_content_region.height - 1)
        if self.cursor is None:
            self.scroll_to(y=self.scroll_offset.y + height, animate=False, immediate=True)
        else:
            self.move_cursor(self.cursor + height)

    def action_page_up(self) -> None:
        height = max(1, self.scrollable_content_region.height - 1)
        if self.cursor is None:
            self.scroll_to(y=self.scroll_offset.y - height, animate=False, immediate=True)
        else:
            self.move_cursor(self.cursor - height)

    def action_first(self) -> None:
        self.move_cursor(0)
        self.scroll_home(animate=False, immediate=True)

    def action_last(self) -> None:
        self.move_cursor(self.row_count - 1)
        self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.follow = True

    def jump_to_hit(self, forward: bool = True) -> bool:
        """Move the cursor to the next (or previous) row matching the text query."""
        if not self.hits:
            return False
        current = self.cursor if self.cursor is not None else (-1 if forward else self.row_count)
        if forward:
            i = bisect_right(self.hits, current)
            row = self.hits[i] if i < len(self.hits) else self.hits[0]
        else:
            i = bisect_left(self.hits, current) - 1
            row = self.hits[i] if i >= 0 else self.hits[-1]
        self.move_cursor(row)
        return True

    def on_click(self, event: events.Click) -> None:
        row = int(self.scroll_offset.y) + event.y
        if row < self.row_count:
            self.move_cursor(row)
