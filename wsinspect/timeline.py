"""A session's traffic over time: messages/s and bytes/s each way, its silences, ping round
trips; as series for a chart of any width and as figures for the report.

A `Timeline` takes a hop's messages in their recorded order, one at a time (a live session's
as they arrive), in constant time and memory each: counts go into at most `BUCKETS` buckets
whose width doubles whenever the session outgrows them, the peak rates are counted per whole
second as they go by, and only the `KEPT_SILENCES` longest silences are kept. Round trips are
kept in two heaps (8 bytes and a logarithmic step a pong) for an exact median at any time. A clock that
stepped back does not reorder anything: a message stamped before the one it followed counts at
that one's time. Pure: no I/O, no UI.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

from . import diagnosis
from .model import Hop, Message, Session

BUCKETS = 1024
FIRST_WIDTH = 0.01  # seconds per bucket until the session outgrows BUCKETS of them
KEPT_SILENCES = 32
# The shortest time without a frame either way that counts as a silence: as long as the
# shortest an idle-timeout finding names.
SILENCE = diagnosis.IDLE_SILENCE
CLIENT, SERVER = 0, 1


@dataclass(frozen=True, slots=True)
class Silence:
    """No frame either way from `start` to `end`. `idle_timeout`: the silence an idle-timeout
    finding measured (seconds as it says), after which a proxy cut the connection."""

    start: float
    seconds: float
    idle_timeout: bool = False

    @property
    def end(self) -> float:
        return self.start + self.seconds


@dataclass(frozen=True, slots=True)
class Peak:
    """The busiest whole second (counted from the session's start) of one direction."""

    messages: int = 0  # messages in the second with the most
    bytes: int = 0  # bytes in the second with the most (not necessarily the same second)


@dataclass(frozen=True, slots=True)
class RoundTrips:
    """Round trips of the answered pings, in seconds."""

    count: int
    p50: float
    max: float


@dataclass(frozen=True, slots=True)
class Figures:
    """What the report says about a session over time."""

    duration: float  # from the handshake to the end (to the last sign of life while open)
    peak_client: Peak
    peak_server: Peak
    silences: int  # how many silences of at least SILENCE
    max_silence: Silence | None
    rtt: RoundTrips | None

    def to_json(self) -> dict:
        def peak(p: Peak) -> dict:
            return {"messages_per_second": p.messages, "bytes_per_second": p.bytes}

        longest = self.max_silence
        return {
            "duration": self.duration,
            "peak": {"client": peak(self.peak_client), "server": peak(self.peak_server)},
            "silences": self.silences,
            "max_silence": None if longest is None else {
                "seconds": longest.seconds,
                "start": longest.start,
                "end": longest.end,
                "idle_timeout": longest.idle_timeout,
            },
            "rtt": None if self.rtt is None else {
                "count": self.rtt.count, "p50": self.rtt.p50, "max": self.rtt.max,
            },
        }


@dataclass(frozen=True, slots=True)
class Series:
    """The session cut into `len(columns)` equal spans from `start`, each `column_seconds`
    long: what a chart draws, one value per column."""

    start: float
    column_seconds: float
    messages: tuple[list[float], list[float]]  # messages/s, client's then server's
    bytes: tuple[list[float], list[float]]  # bytes/s, client's then server's
    rtt: list[float]  # the longest round trip answered in each column, 0 where none was
    silent: list[bool]  # a silence covers the column's middle (or the silence lies inside)
    idle: list[bool]  # the same, for the idle-timeout finding's silence
    silences: list[Silence]  # the longest, longest first

    @property
    def columns(self) -> int:
        return len(self.silent)


def idle_silence(session: Session) -> Silence | None:
    """The silence the session's idle-timeout finding measured, None without such a finding."""
    measured = diagnosis.idle_silence(session.hops)
    return None if measured is None else Silence(*measured, idle_timeout=True)


class Timeline:
    """One hop's traffic over time, fed its messages in order with `add`."""

    def __init__(self, hop: Hop) -> None:
        self.origin = hop.timestamp_start
        # The answer to the handshake is the first sign of life of the WebSocket.
        self.last = max(hop.timestamp_start, hop.timestamp_response or hop.timestamp_start)
        self.count = 0
        self.width = FIRST_WIDTH
        self._counts = (array("q", bytes(8 * BUCKETS)), array("q", bytes(8 * BUCKETS)))
        self._bytes = (array("q", bytes(8 * BUCKETS)), array("q", bytes(8 * BUCKETS)))
        self._rtt_max = array("d", bytes(8 * BUCKETS))
        self._used = 0  # buckets up to the last message's
        self._second = 0
        self._in_second = [[0, 0], [0, 0]]  # per direction: messages, bytes this second
        self._peaks = [[0, 0], [0, 0]]  # per direction: most messages, most bytes a second
        self._longest: list[tuple[float, float]] = []  # min-heap of (seconds, start)
        self.silences = 0
        # The round trips: the lower half as a max-heap (negated), the upper half as a min-heap.
        self._lower: list[float] = []
        self._upper: list[float] = []
        self._rtt_top = 0.0

    def add(self, message: Message) -> None:
        self.add_timing(message.from_client, message.size, message.timestamp, message.rtt)

    def add_all(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self.add(message)

    def add_timings(self, timings: Iterable[tuple[bool, int, float, float | None]]) -> None:
        """Messages as the store's `hop_timings` gives them, without payloads."""
        for from_client, size, timestamp, rtt in timings:
            self.add_timing(from_client, size, timestamp, rtt)

    def add_timing(self, from_client: bool, size: int, timestamp: float, rtt: float | None) -> None:
        when = max(timestamp, self.last)
        gap = when - self.last
        if gap >= SILENCE:
            self._silence(self.last, gap)
        self.last = when
        self.count += 1
        side = CLIENT if from_client else SERVER
        offset = when - self.origin
        bucket = int(offset / self.width)
        while bucket >= BUCKETS:
            self._coarsen()
            bucket = int(offset / self.width)
        self._used = max(self._used, bucket + 1)
        self._counts[side][bucket] += 1
        self._bytes[side][bucket] += size
        second = int(offset)
        if second != self._second:
            self._close_second()
            self._second = second
        current = self._in_second[side]
        current[0] += 1
        current[1] += size
        if rtt is not None:
            self._round_trip(rtt)
            self._rtt_max[bucket] = max(self._rtt_max[bucket], rtt)

    def _round_trip(self, rtt: float) -> None:
        self._rtt_top = max(self._rtt_top, rtt)
        if self._lower and rtt > -self._lower[0]:
            heapq.heappush(self._upper, rtt)
        else:
            heapq.heappush(self._lower, -rtt)
        if len(self._lower) > len(self._upper) + 1:
            heapq.heappush(self._upper, -heapq.heappop(self._lower))
        elif len(self._upper) > len(self._lower):
            heapq.heappush(self._lower, -heapq.heappop(self._upper))

    def round_trips(self) -> RoundTrips | None:
        count = len(self._lower) + len(self._upper)
        if not count:
            return None
        middle = -self._lower[0]
        p50 = middle if count % 2 else (middle + self._upper[0]) / 2
        return RoundTrips(count, p50, self._rtt_top)

    def _silence(self, start: float, seconds: float) -> None:
        self.silences += 1
        entry = (seconds, start)
        if len(self._longest) < KEPT_SILENCES:
            heapq.heappush(self._longest, entry)
        elif entry > self._longest[0]:
            heapq.heapreplace(self._longest, entry)

    def _close_second(self) -> None:
        for side in (CLIENT, SERVER):
            for what in (0, 1):
                self._peaks[side][what] = max(self._peaks[side][what], self._in_second[side][what])
            self._in_second[side] = [0, 0]

    def _coarsen(self) -> None:
        """Twice as wide buckets, each the sum (the longest round trip) of two."""
        for series in (*self._counts, *self._bytes):
            for i in range(BUCKETS // 2):
                series[i] = series[2 * i] + series[2 * i + 1]
            series[BUCKETS // 2:] = array(series.typecode, bytes(8 * (BUCKETS // 2)))
        rtt = self._rtt_max
        for i in range(BUCKETS // 2):
            rtt[i] = max(rtt[2 * i], rtt[2 * i + 1])
        rtt[BUCKETS // 2:] = array("d", bytes(8 * (BUCKETS // 2)))
        self.width *= 2
        self._used = (self._used + 1) // 2

    # ----- reading -------------------------------------------------------------------------

    def _peak(self, side: int) -> Peak:
        most, current = self._peaks[side], self._in_second[side]
        return Peak(max(most[0], current[0]), max(most[1], current[1]))

    def silence_list(self, end: float | None, idle: Silence | None) -> list[Silence]:
        """The longest silences, longest first: those between frames, then the one before
        `end` (the connection's end, or now while it is open), which is the idle-timeout
        finding's own when there is one."""
        found = [Silence(start, seconds) for seconds, start in self._longest]
        if idle is not None:
            found.append(idle)
        elif end is not None and end - self.last >= SILENCE:
            found.append(Silence(self.last, end - self.last))
        return sorted(found, key=lambda s: (-s.seconds, s.start))[:KEPT_SILENCES]

    def figures(self, end: float | None, idle: Silence | None = None) -> Figures:
        """The report's figures; `end` is when the connection ended (None while open)."""
        silences = self.silence_list(end, idle)
        trailing = idle is not None or (end is not None and end - self.last >= SILENCE)
        return Figures(
            duration=max(end if end is not None else self.last, self.last) - self.origin,
            peak_client=self._peak(CLIENT),
            peak_server=self._peak(SERVER),
            silences=self.silences + trailing,
            max_silence=silences[0] if silences else None,
            rtt=self.round_trips(),
        )

    def series(self, columns: int, end: float, idle: Silence | None = None) -> Series:
        """`columns` values per series from the session's start to `end` (its end, or now);
        each column's rate is its buckets' counts spread over the time they share."""
        columns = max(1, columns)
        span = max(end, self.last) - self.origin
        span = span if span > 0 else self.width
        step = span / columns
        width = self.width
        messages = ([0.0] * columns, [0.0] * columns)
        sizes = ([0.0] * columns, [0.0] * columns)
        rtt = [0.0] * columns
        for bucket in range(self._used):
            low, high = bucket * width, (bucket + 1) * width
            last = min(columns - 1, int(high / step))
            first = min(last, int(low / step))
            for column in range(first, last + 1):
                # The last column takes the rest of the last bucket, which may reach past
                # the end: every message is counted once.
                upper = high if column == columns - 1 else min(high, (column + 1) * step)
                share = (upper - max(low, column * step)) / width
                if share <= 0:
                    continue
                for side in (CLIENT, SERVER):
                    messages[side][column] += self._counts[side][bucket] * share / step
                    sizes[side][column] += self._bytes[side][bucket] * share / step
                rtt[column] = max(rtt[column], self._rtt_max[bucket])
        silences = self.silence_list(end, idle)
        silent, idle_columns = [False] * columns, [False] * columns
        for silence in silences:
            marks = idle_columns if silence.idle_timeout else silent
            first = math.ceil((silence.start - self.origin) / step - 0.5)
            last = math.floor((silence.end - self.origin) / step - 0.5)
            if first > last:  # shorter than a column: mark the one it lies in
                first = last = int((silence.start + silence.seconds / 2 - self.origin) / step)
            for column in range(max(0, first), min(columns - 1, last) + 1):
                marks[column] = True
        return Series(self.origin, step, messages, sizes, rtt, silent, idle_columns, silences)


def session_figures(
    session: Session, timings: Iterable[tuple[bool, int, float, float | None]]
) -> Figures:
    """The figures of a session from its first hop's messages in order, as (from the client,
    size, timestamp, a pong's round trip)."""
    timeline = Timeline(session.first_hop)
    timeline.add_timings(timings)
    return timeline.figures(diagnosis.connection_end(session.first_hop), idle_silence(session))
