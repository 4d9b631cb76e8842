"""The Timeline tab: a session's messages/s and bytes/s each way, its silences and its ping
round trips over time, one Sparkline per series, all sharing one time axis.

The messages are read in the background, a chunk at a time and without their payloads, from
the first time the tab is shown; live ones join as the store reports them. Reading a chunk
and adding it holds the event loop for a few milliseconds (bench/timeline_bench.py), so a
session of millions of messages fills the chart while the app keeps answering keys."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Sparkline, Static, TabPane

from ..diagnosis import connection_end
from ..store import CaptureError, SessionStore
from ..timeline import (
    CLIENT,
    SERVER,
    SILENCE,
    Figures,
    Series,
    Silence,
    Timeline,
    idle_silence,
)
from .format import SafeText, format_size, milliseconds

CHUNK = 1000  # messages read and added between two turns of the event loop (a few ms)
REDRAW_INTERVAL = 0.5  # seconds between two redraws while messages pour in or time passes
TALL = 24  # from this many rows, the charts are two rows high
SILENT_MARK, IDLE_MARK, QUIET_MARK = "━", "▓", "·"
# (id, label, what its figure says): the rows of the chart, top to bottom
ROWS = [
    ("client-messages", "msgs/s C→S", "messages"),
    ("server-messages", "msgs/s S→C", "messages"),
    ("client-bytes", "bytes/s C→S", "bytes"),
    ("server-bytes", "bytes/s S→C", "bytes"),
    ("rtt", "ping RTT", "rtt"),
]
SHOWN_SILENCES = 3


def seconds_text(seconds: float, decimals: int = 1) -> str:
    """"12.3 s" or "4m05s", for the axis; silences have two decimals, as the idle-timeout
    finding writes the one it measured."""
    if seconds < 600:
        return f"{seconds:.{decimals}f} s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def column_text(seconds: float) -> str:
    """How long one column of the chart is: a short session's is a few ms, not "0.0 s"."""
    return milliseconds(seconds) if seconds < 0.1 else seconds_text(seconds)


def rate_text(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{format_size(int(value))}/s"
    return f"{value:g}/s"


class TimelineView(VerticalScroll):
    """The chart of one session. `start()` (the tab was shown) reads its messages;
    `messages_arrived()` and `draw()` (its hops changed) follow the store."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"timeline--silence", "timeline--idle"}

    def __init__(self, store: SessionStore, session_id: int, clock, **kwargs) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.session_id = session_id
        self.clock = clock
        self.timeline = Timeline(store.session(session_id).first_hop)
        self.started = False
        self._reading = False
        self._drawn = 0.0
        self._note_lines = 0

    def compose(self) -> ComposeResult:
        for row_id, label, _ in ROWS:
            with Horizontal(classes=f"timeline-row -{row_id.split('-')[0]}"):
                yield Static(SafeText.line(label), classes="timeline-label")
                yield Sparkline([], id=row_id)
                yield Static(classes="timeline-figure", id=f"{row_id}-figure")
        with Horizontal(classes="timeline-row"):
            yield Static(SafeText.line("silences"), classes="timeline-label")
            yield Static(id="silence-marks", classes="timeline-marks")
            yield Static(classes="timeline-figure", id="silence-figure")
        with Horizontal(classes="timeline-row"):
            yield Static(classes="timeline-label")
            yield Static(id="timeline-axis", classes="timeline-marks")
            yield Static(classes="timeline-figure")
        yield Static(id="timeline-notes")

    def on_mount(self) -> None:
        self.set_interval(REDRAW_INTERVAL, self._tick)

    # ----- following the store -------------------------------------------------------------

    def start(self) -> None:
        """Read the session's messages (the first time the tab is shown)."""
        if not self.started:
            self.started = True
            self.messages_arrived()
        self.draw()

    def messages_arrived(self) -> None:
        if self.started and not self._reading:
            self._reading = True
            self.run_worker(self._read(), group="timeline", exit_on_error=False)

    async def _read(self) -> None:
        """Add the messages not added yet, a chunk per turn of the loop, until none are
        left (live ones that come meanwhile too)."""
        hop = self.store.session(self.session_id).first_hop
        try:
            while self.timeline.count < hop.stats.count:
                start = self.timeline.count
                try:
                    chunk = self.store.hop_timings(hop.id, start, start + CHUNK)
                except CaptureError as e:
                    self.app.notify(str(e), severity="error", title="damaged capture")
                    return
                if not chunk:
                    return
                self.timeline.add_timings(chunk)
                if time.monotonic() - self._drawn >= REDRAW_INTERVAL:
                    self.draw()
                await asyncio.sleep(0)
        finally:
            self._reading = False
            self.draw()

    def _tick(self) -> None:
        """Time passes on an open session: its chart reaches to now, its silence grows."""
        if self.started and connection_end(self.store.session(self.session_id).first_hop) is None:
            self.draw()

    # ----- drawing -------------------------------------------------------------------------

    def _shown(self) -> bool:
        pane = next((a for a in self.ancestors if isinstance(a, TabPane)), None)
        return self.is_attached and (pane is None or pane.display)

    def on_resize(self) -> None:
        self.set_class(self.size.height >= TALL, "-tall")
        self.call_after_refresh(self.draw)  # once the charts have their new width

    def draw(self) -> None:
        if not self.started or not self._shown():
            return
        self._drawn = time.monotonic()
        session = self.store.session(self.session_id)
        end = connection_end(session.first_hop)
        idle = idle_silence(session)
        columns = self.query_one("#client-messages", Sparkline).size.width
        if columns <= 0:
            return
        now = end if end is not None else max(self.clock(), self.timeline.last)
        series = self.timeline.series(columns, now, idle)
        figures = self.timeline.figures(now, idle)  # an open session's silence so far too
        for side, name in ((CLIENT, "client"), (SERVER, "server")):
            self.query_one(f"#{name}-messages", Sparkline).data = series.messages[side]
            self.query_one(f"#{name}-bytes", Sparkline).data = series.bytes[side]
        self.query_one("#rtt", Sparkline).data = series.rtt
        self._figures(figures)
        # Rows of a fixed size: repainted, not laid out again (that would be the whole screen).
        self.query_one("#silence-marks", Static).update(self._marks(series), layout=False)
        self.query_one("#timeline-axis", Static).update(self._axis(series, columns), layout=False)
        notes = self._notes(series, figures, end is None, session.first_hop.stats.count)
        lines = notes.plain.count("\n")
        self.query_one("#timeline-notes", Static).update(notes, layout=lines != self._note_lines)
        self._note_lines = lines

    def _style(self, name: str):
        return self.get_component_rich_style(name, partial=True)

    def _figures(self, figures: Figures) -> None:
        peaks = {"client": figures.peak_client, "server": figures.peak_server}
        for row_id, _, kind in ROWS:
            if kind == "rtt":
                rtt = figures.rtt
                text = f"p50 {milliseconds(rtt.p50)}" if rtt else "no pongs"
            else:
                peak = peaks[row_id.split("-")[0]]
                value = peak.messages if kind == "messages" else peak.bytes
                text = f"peak {rate_text(value, kind)}"
            self.query_one(f"#{row_id}-figure", Static).update(SafeText.line(" " + text),
                                                              layout=False)
        longest = figures.max_silence
        self.query_one("#silence-figure", Static).update(
            SafeText.line(f" max {seconds_text(longest.seconds, 2)}" if longest else " none"),
            layout=False,
        )

    def _marks(self, series: Series) -> SafeText:
        line = SafeText.line()
        for silent, idle in zip(series.silent, series.idle):
            if idle:
                line.append(IDLE_MARK, style=self._style("timeline--idle"))
            elif silent:
                line.append(SILENT_MARK, style=self._style("timeline--silence"))
            else:
                line.append(QUIET_MARK)  # in the row's own (muted) colour
        return line

    def _axis(self, series: Series, columns: int) -> SafeText:
        left = "0 s"
        right = f"+{seconds_text(series.column_seconds * columns)}"
        middle = f" 1 column = {column_text(series.column_seconds)} "
        room = columns - len(left) - len(right)
        if room >= len(middle) + 2:
            pad = room - len(middle)
            text = left + "─" * (pad // 2) + middle + "─" * (pad - pad // 2) + right
        else:
            text = left + "─" * max(0, room) + right
        return SafeText.line(text[:columns])

    def _notes(self, series: Series, figures: Figures, live: bool, total: int) -> SafeText:
        notes = SafeText()
        if self.timeline.count < total:
            notes.append(f"reading… {self.timeline.count:,} of {total:,} messages\n",
                         style="bold")
        origin = series.start
        for silence in series.silences[:SHOWN_SILENCES]:
            notes.append(
                f"{IDLE_MARK if silence.idle_timeout else SILENT_MARK} silent "
                f"{seconds_text(silence.seconds, 2)} from +{seconds_text(silence.start - origin)}",
                style=self._style("timeline--idle" if silence.idle_timeout else
                                  "timeline--silence"),
            )
            notes.append(self._silence_note(silence, live) + "\n")
        if not series.silences:
            notes.append(f"no silence of {seconds_text(SILENCE, 2)} or more\n")
        if figures.rtt is not None:
            notes.append(
                f"{figures.rtt.count:,} pings answered: round trip p50 "
                f"{milliseconds(figures.rtt.p50)}, max {milliseconds(figures.rtt.max)}\n"
            )
        return notes

    def _silence_note(self, silence: Silence, live: bool) -> str:
        if silence.idle_timeout:
            return " — then cut: a proxy's idle timeout (Findings)"
        if live and silence.end >= self.timeline.last and silence.start == self.timeline.last:
            return " — and counting"
        return ""
