"""The message list: a virtual view over one hop's messages in the store.

Built on Textual's Line API (like `textual.widgets.Log`): only the visible lines are rendered,
and they are read from the store by index ranges, so a session of millions of messages costs a
few small SQLite reads per frame. A filter maps rows to message indexes; it is computed by
scanning the store in chunks without blocking the app.

When the session speaks an application protocol, a Label column says what each message is.
The hop is decoded once, in order, in slices between frames (`HopTrack` keeps a few bytes per
message); a row the decoding has not reached yet shows its message decoded alone until then.
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
from ..protocols import HopTrack
from ..store import CaptureError, SessionStore
from .format import clock, format_size, milliseconds, preview, printable
from .pacing import LoopLoad

SCAN_CHUNK = 5000
CACHE_ROWS = 4000
STRIP_CACHE = 1000
DECODE_CHUNK = 100  # messages read and decoded at once by the background decoding
# Seconds of decoding, then of rest: a key press or a frame takes many turns of the event loop,
# and each turn would otherwise wait for a slice of decoding. Just after the user moved or
# scrolled, decoding rests longer: the next key is likely near.
DECODE_SLICE = 0.010
DECODE_REST = 0.005
DECODE_REST_AFTER_INPUT = 0.150
DECODE_PROGRESS_INTERVAL = 0.25  # seconds between two DecodeProgress messages
# `label:…` and `protocol:…` in the filter box: the Label column, the message's protocol
FILTER_TERM = re.compile(r"(?:^|(?<=\s))(label|protocol):(\S*)")


class FilterError(ValueError):
    """A filter the user typed that cannot be used (a bad regular expression)."""


def query_pattern(query: str) -> re.Pattern[str] | None:
    """A case-insensitive substring, or a regular expression written as `/regex/`."""
    if not query:
        return None
    if len(query) >= 2 and query.startswith("/") and query.endswith("/"):
        try:
            return re.compile(query[1:-1], re.IGNORECASE)
        except re.error as e:
            raise FilterError(f"bad regular expression: {e}") from None
    return re.compile(re.escape(query), re.IGNORECASE)


@dataclass(frozen=True)
class MessageFilter:
    """Which messages to show: by direction ("client", "server" or None), by type and by what
    the query asks.

    `query` is text to find in payloads (a case-insensitive substring, or `/regex/`), with
    `label:X` (X in the Label column) and `protocol:X` (X in the message's protocol name)
    terms anywhere in it; a message matches when it matches all of them. With `only_matches`
    off, the query does not hide rows: it marks them, for jumping."""

    query: str = ""
    direction: str | None = None
    type: MessageType | None = None
    only_matches: bool = True

    def terms(self) -> tuple[str, dict[str, str]]:
        """The payload text, and the `label:`/`protocol:` terms, by name."""
        found: dict[str, str] = {}
        text = FILTER_TERM.sub(lambda m: found.__setitem__(m[1], m[2]) or "", self.query)
        return (text.strip() if found else text), found

    def pattern(self) -> re.Pattern[str] | None:
        return query_pattern(self.terms()[0])

    def label_pattern(self) -> re.Pattern[str] | None:
        return query_pattern(self.terms()[1].get("label", ""))

    def protocol_pattern(self) -> re.Pattern[str] | None:
        return query_pattern(self.terms()[1].get("protocol", ""))

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
    label: str  # what the message is in the session's protocol ("" when in none)
    settled: bool  # the label comes from the session's decoding, not the message alone
    intercept: str | None = None  # what became of it when an intercept rule held it


# Below this width a row leaves out the wall-clock time (+seconds stays) and narrows the
# index, so that the payload keeps half of an 80-column screen.
WIDE_LIST = 100


def index_width(width: int) -> int:
    return 9 if width >= WIDE_LIST else 6


def label_width(width: int) -> int:
    """The Label column's width (with its gap), in a session that speaks a protocol."""
    return 26 if width >= WIDE_LIST else 15


def list_header(width: int, labels: bool = False) -> str:
    """Column titles lined up with MessageList._render_row at `width`."""
    clock_title = f"{'time':<12} " if width >= WIDE_LIST else ""
    label_title = f"{'label':<{label_width(width)}}" if labels else ""
    return (f" {'#':>{index_width(width)}} {clock_title}{'+seconds':>10} dir {'type':<6} "
            f"{'size':>10}  {label_title}payload")


def fitted(text: str, width: int) -> str:
    """`text` in `width` cells, cut with an ellipsis when longer."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


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
        "messagelist--label",
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

    class DecodeProgress(TextualMessage):
        """The background decoding went on: `decoded` of `total` messages, the protocol."""

        def __init__(self, decoded: int, total: int, protocol: str | None) -> None:
            super().__init__()
            self.decoded, self.total, self.protocol = decoded, total, protocol

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
        self._label_pattern: re.Pattern[str] | None = None
        self._protocol_pattern: re.Pattern[str] | None = None
        self.track = HopTrack(store.hop_at(session_id, hop_position))
        self._decode_task: asyncio.Task | None = None
        self._moved = 0.0  # when the user last moved the cursor or scrolled
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

    def _label_of(self, message: Message) -> tuple[str, bool]:
        """The message's Label column, and whether the session's decoding gave it."""
        summary = self.track.summary(message.index)
        if summary is not None:
            return printable(summary), True
        return printable(self.track.glance(message)), False

    def _matches(self, message: Message, label: str) -> bool:
        """Whether the message matches every part of the query (one is set, at least)."""
        if self._pattern is not None and not text_matches(self._pattern, message):
            return False
        if self._label_pattern is not None and not (
            label and self._label_pattern.search(label)
        ):
            return False
        if self._protocol_pattern is not None:
            protocol = self.track.message_protocol(message.index)
            return bool(protocol) and self._protocol_pattern.search(protocol) is not None
        return True

    @property
    def _querying(self) -> bool:
        return any(p is not None for p in
                   (self._pattern, self._label_pattern, self._protocol_pattern))

    def _make_row(self, message: Message) -> Row:
        label, settled = self._label_of(message)
        hit = self._querying and (
            message.index in self._hit_indexes or self._matches(message, label)
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
            label,
            settled,
            message.intercept,
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

    # ----- decoding the session's protocol --------------------------------------------------

    def on_mount(self) -> None:
        self.call_after_refresh(self._start_decoding)  # after the first paint

    def on_unmount(self) -> None:
        if self._decode_task is not None:
            self._decode_task.cancel()

    def _decode_until(self, stop: int, budget: float | None = None) -> None:
        """Decode the hop's messages up to `stop`, or for `budget` seconds."""
        started = time.perf_counter()
        track = self.track
        while track.wants(stop):
            position = track.position
            messages = self._read(position, min(stop, position + DECODE_CHUNK))
            if not messages:
                break
            track.advance(messages)
            if budget is not None and time.perf_counter() - started > budget:
                break

    def _start_decoding(self) -> None:
        if self._decode_task is None and self.track.wants(self.total):
            self._decode_task = asyncio.ensure_future(self._decode())

    async def _decode(self) -> None:
        told = 0.0  # when DecodeProgress was last posted
        try:
            while self.track.wants(self.total):
                protocol = self.track.protocol
                self._decode_until(self.total, DECODE_SLICE)
                changed = protocol != self.track.protocol
                self._settle_rows(protocol_changed=changed)
                now = time.monotonic()
                if changed or now - told >= DECODE_PROGRESS_INTERVAL or not self.track.wants(
                    self.total
                ):
                    told = now
                    self.post_message(
                        self.DecodeProgress(self.track.decoded, self.total, self.track.protocol))
                # While the proxy keeps the loop busy, decoding waits as repaints do.
                if self.load.saturated:
                    rest = self.load.repaint_interval
                elif now - self._moved < DECODE_REST_AFTER_INPUT:
                    rest = DECODE_REST_AFTER_INPUT
                else:
                    rest = DECODE_REST
                await asyncio.sleep(rest)
        finally:
            self._decode_task = None

    def _settle_rows(self, protocol_changed: bool) -> None:
        """Rows whose label was a message's own, now decoded in the session, are made again."""
        if protocol_changed:  # a Label column appears
            self._cache.clear()
            self._strips.clear()
            self.refresh()
            return
        decoded = self.track.decoded
        stale = [i for i, row in self._cache.items() if not row.settled and i < decoded]
        for index in stale:
            del self._cache[index]
        if stale:
            self.refresh()

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
        key = (info.index, info.hit, row == self.cursor, width, info.label)
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
            *([Segment(f"{fitted(info.label, label_width(width) - 1):<{label_width(width)}}",
                       style("messagelist--label"))] if self.track.protocol else []),
            *([Segment("injected ", style("messagelist--injected"))] if info.injected else []),
            *([Segment(f"held:{info.intercept} ", style("messagelist--injected"))]
              if info.intercept else []),
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
        self._start_decoding()
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
        label_pattern, protocol_pattern = new_filter.label_pattern(), new_filter.protocol_pattern()
        if self._scan_task is not None:
            self._scan_task.cancel()
            self._scan_task = None
        selected = self.cursor_message
        self.filter = new_filter
        self._pattern = pattern
        self._label_pattern, self._protocol_pattern = label_pattern, protocol_pattern
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
        return self.rows is not None or self._querying

    def _row_of(self, index: int) -> int | None:
        if self.rows is None:
            return index if index < self.total else None
        row = bisect_left(self.rows, index)
        return row if row < len(self.rows) and self.rows[row] == index else None

    def _scan_step(self, stop: int) -> None:
        """Run the filter over messages scanned..stop."""
        start = self._scanned
        if self._label_pattern is not None or self._protocol_pattern is not None:
            self._decode_until(stop)  # labels are known in order only
        messages = self._read(start, stop)
        querying, flt, track = self._querying, self.filter, self.track
        for message in messages:
            if not flt.kind_matches(message):
                continue
            hit = querying and self._matches(
                message, printable(track.summary(message.index) or ""))
            if self.rows is not None:
                if querying and flt.only_matches and not hit:
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
        self._moved = time.monotonic()
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
        self._moved = time.monotonic()

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

    def select_message(self, index: int) -> bool:
        """Put the cursor on message `index`; False when the filter hides it."""
        row = self._row_of(index)
        if row is None:
            return False
        self.move_cursor(row)
        return True

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
