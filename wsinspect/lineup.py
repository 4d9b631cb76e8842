"""Lining up several captures of one path into sessions: `wsinspect report a.db b.db`.

A team runs one wsinspect on a laptop (hop 1) and another on the server behind nginx (hop 2),
each writing its own capture on its own clock. The hops of all captures are added to one store
in the order they began, through the store's own correlation (`SessionStore.add_hop`, see
wsinspect.correlate), so they make the sessions one process with every listener would have
recorded: by Sec-WebSocket-Key, never merging two clients.

That order, and the correlation's "still waiting for its answer", need the captures on one
clock. Each later capture's offset from the first is estimated from the handshakes both saw
(the same Sec-WebSocket-Key, once in each): a hop further along the path receives the request
after the client-side hop did and answers before the client-side hop gets the answer, so each
matched handshake bounds the offset as NTP's four timestamps do. Within those bounds the
messages both hops relayed place it more closely (see HandshakePair.midpoint). The estimate is
the median of the sessions' midpoints, kept inside what every handshake allows; the later
capture's times are shifted by it (hops, closes, messages), so durations, idle cuts and
timelines line up.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .formats import open_capture
from .model import Hop, Message, MessageType, RecordError
from .report import plural
from .store import CaptureError, SessionStore, Timing
from .text import printable


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """How far a capture's clock is ahead of the reference capture's (negative: behind), in
    seconds: subtracted from its times to put them on the reference clock."""

    seconds: float
    handshakes: int  # matched handshakes it was estimated from
    # What every matched handshake's timing allows; None when they disagree (clocks that
    # drifted during the captures), and the median alone is used.
    low: float | None
    high: float | None

    def to_json(self) -> dict:
        return {
            "seconds": self.seconds,
            "handshakes": self.handshakes,
            "bounds": None if self.low is None else [self.low, self.high],
        }


@dataclass(frozen=True, slots=True)
class HandshakePair:
    """One handshake seen by two captures: `a` on the reference clock, `b` on its own, with
    the times each recorded the messages both relayed, (a, b) per message by direction."""

    a_start: float
    a_response: float
    b_start: float
    b_response: float
    from_client: tuple[tuple[float, float], ...] = ()
    from_server: tuple[tuple[float, float], ...] = ()

    @property
    def bounds(self) -> tuple[float, float]:
        """The offsets this handshake allows: the inner hop (the one that waited less for its
        answer) received the request after the outer one and the answer before it."""
        started, answered = self.b_start - self.a_start, self.b_response - self.a_response
        return min(started, answered), max(started, answered)

    @property
    def midpoint(self) -> float:
        """Where within its bounds the offset most likely is. With messages relayed both ways:
        halfway between the two ways' median differences, as the delays on open connections
        are alike and far shorter than the handshake's (whose request waits for the next
        hop's connection to be made). Message times are taken as the relay handles them,
        a fraction of a millisecond apart either way, so they are no bounds. Without them:
        the middle of the bounds."""
        if self.from_client and self.from_server:
            ways = (self.from_client, self.from_server)
            return sum(statistics.median(b - a for a, b in way) for way in ways) / 2
        low, high = self.bounds
        return (low + high) / 2


def estimate_offset(pairs: Sequence[HandshakePair]) -> ClockOffset | None:
    """The clock offset the matched handshakes give, or None without any."""
    if not pairs:
        return None
    bounds = [pair.bounds for pair in pairs]
    median = statistics.median(pair.midpoint for pair in pairs)
    low, high = max(b[0] for b in bounds), min(b[1] for b in bounds)
    if low > high:
        return ClockOffset(median, len(pairs), None, None)
    # A median outside what some handshake allows would put that hop before its predecessor
    # or after its answer: the middle of what all of them allow is used instead.
    seconds = median if low < median < high else (low + high) / 2
    return ClockOffset(seconds, len(pairs), low, high)


@dataclass(slots=True)
class LinedUpCapture:
    """One capture of a line-up: its file, its store and how it was placed."""

    name: str  # the path as given
    store: SessionStore
    offset: ClockOffset | None = None  # None: the reference, or none could be estimated
    note: str | None = None  # one line, when it was left out or no offset was estimated
    used: bool = True  # False: the same capture as an earlier one, read once

    @property
    def unplaced(self) -> bool:
        """A capture after the first whose clock offset could not be estimated."""
        return self.offset is None and self.note is not None

    @property
    def shift(self) -> float:
        return self.offset.seconds if self.offset is not None else 0.0

    def describe(self, reference: str) -> str:
        """One line: how this capture's times were placed on the reference clock."""
        hops = sum(len(s.hops) for s in self.store.sessions())
        head = f"{self.name}: {plural(hops, 'hop')}"
        if self.note is not None:
            return printable(f"{head}, {self.note}")
        if self.offset is None:
            return printable(f"{head}, the reference clock")
        o = self.offset
        ahead = "ahead of" if o.seconds >= 0 else "behind"
        within = (
            f", between {o.low:+.4f} and {o.high:+.4f} s"
            if o.low is not None
            else "; their timing disagrees (clocks drifting?), the median is used"
        )
        return printable(
            f"{head}, clock {abs(o.seconds):.4f} s {ahead} {reference}'s (estimated from "
            f"{plural(o.handshakes, 'matched handshake')}{within}); "
            f"its times are shifted by {-o.seconds:+.4f} s"
        )

    def to_json(self, reference: bool) -> dict:
        return {
            "file": self.name,
            "hops": sum(len(s.hops) for s in self.store.sessions()),
            "reference": reference,
            "read": self.used,
            "clock_offset": self.offset.to_json() if self.offset is not None else None,
            "note": self.note,
        }


def _is_time(key: str) -> bool:
    """Whether a key of a hop's record (or of its close, stats or violations) holds a time."""
    return key == "timestamp" or key.startswith("timestamp_") or key.endswith("_timestamp")


def _shifted_record(value: object, seconds: float) -> object:
    if isinstance(value, dict):
        return {
            k: (v - seconds if _is_time(k) and type(v) in (int, float) else _shifted_record(v, seconds))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_shifted_record(v, seconds) for v in value]
    return value


def shifted_hop(hop: Hop, seconds: float, capture: str) -> Hop:
    """A copy of `hop` with every time moved `seconds` earlier, marked with its capture."""
    try:
        copy = Hop.from_json(_shifted_record(hop.to_json(), seconds))
    except RecordError as e:  # a time shifted out of range by a wild offset
        raise CaptureError(f"{capture}: its hops cannot be put on one clock ({e})") from None
    copy.capture = capture
    return copy


def _fingerprint(hop: Hop) -> tuple:
    """What a hop is, whatever its clock: the same hop in a copied capture has the same."""
    waited = (
        round(hop.timestamp_response - hop.timestamp_start, 6)
        if hop.timestamp_response is not None
        else None
    )
    return (hop.mode, hop.request_line, tuple(hop.request_headers), hop.response_status,
            waited, hop.stats.count)


def _hops(store: SessionStore) -> list[Hop]:
    return [hop for session in store.sessions() for hop in session.hops]


# Messages of a matched session compared to place the offset (see HandshakePair.midpoint).
_MESSAGES_COMPARED = 64
# Matched handshakes the offset is estimated from, at most: spread evenly over the capture,
# so that lining up a capture of many sessions does not read the messages of every one.
_HANDSHAKES_USED = 256


def _relayed(a: Hop, a_store: SessionStore, shift: float, b: Hop, b_store: SessionStore,
             from_client: bool) -> tuple[tuple[float, float], ...]:
    """(a's time on the reference clock, b's time) of the data messages both hops relayed
    one way, in order, up to the first that differs (a proxy may add or drop one)."""
    def data(hop: Hop, store: SessionStore) -> list[Message]:
        return [
            m for m in store.hop_messages(hop.id, 0, _MESSAGES_COMPARED)
            if m.from_client == from_client and not m.injected
            and m.type in (MessageType.TEXT, MessageType.BINARY)
        ]

    times = []
    for x, y in zip(data(a, a_store), data(b, b_store)):
        if (x.type, x.size, x.payload) != (y.type, y.size, y.payload):
            break
        times.append((x.timestamp - shift, y.timestamp))
    return tuple(times)


def matched_handshakes(
    placed: Sequence[LinedUpCapture], capture: LinedUpCapture
) -> list[HandshakePair]:
    """The handshakes `capture` shares with the captures already placed: a key seen once in
    them and once in it (a key reused by several handshakes could pair the wrong two), by a
    different listener, both answered."""
    by_key: dict[str, list[tuple[Hop, LinedUpCapture]]] = {}
    for other in placed:
        for hop in _hops(other.store):
            if hop.websocket_key:
                by_key.setdefault(hop.websocket_key, []).append((hop, other))
    own: dict[str, list[Hop]] = {}
    for hop in _hops(capture.store):
        if hop.websocket_key:
            own.setdefault(hop.websocket_key, []).append(hop)
    matched = []
    for key, hops in own.items():
        theirs = by_key.get(key, [])
        if len(hops) != 1 or len(theirs) != 1:
            continue
        (b,), ((a, other),) = hops, theirs
        if a.mode == b.mode or a.timestamp_response is None or b.timestamp_response is None:
            continue
        matched.append((b.timestamp_start, a, other, b))
    matched.sort(key=lambda m: m[0])
    step = max(1, -(-len(matched) // _HANDSHAKES_USED))
    pairs = []
    for _, a, other, b in matched[::step]:
        shift = other.shift
        pairs.append(HandshakePair(
            a.timestamp_start - shift, a.timestamp_response - shift,
            b.timestamp_start, b.timestamp_response,
            _relayed(a, other.store, shift, b, capture.store, from_client=True),
            _relayed(a, other.store, shift, b, capture.store, from_client=False),
        ))
    return pairs


def _same_capture(capture: LinedUpCapture, earlier: LinedUpCapture) -> str | None:
    """Why `capture` is `earlier` again (the same file, or a copy of it), or None."""
    a, b = capture.store.source, earlier.store.source
    if a is not None and b is not None and os.path.samefile(a, b):
        return f"the same file as {earlier.name}, read once"
    mine = {_fingerprint(h) for h in _hops(capture.store)}
    if mine and mine <= {_fingerprint(h) for h in _hops(earlier.store)}:
        return f"the same hops as {earlier.name} (a copy of it?), read once"
    return None


def place(captures: Sequence[LinedUpCapture]) -> None:
    """Set each capture's clock offset from the first's (through any capture placed before
    it), or its note: a capture repeated is left out; one sharing no handshake with those
    placed keeps its own times."""
    placed = [captures[0]]
    for capture in captures[1:]:
        repeated = next(
            (why for earlier in placed if (why := _same_capture(capture, earlier))), None
        )
        if repeated is not None:
            capture.note, capture.used = repeated, False
            continue
        capture.offset = estimate_offset(matched_handshakes(placed, capture))
        if capture.offset is None:
            others = " or ".join(c.name for c in placed)
            capture.note = (
                f"no handshake matches one in {others}: no clock offset estimated, its times "
                "are as recorded and its hops not lined up with theirs"
            )
        else:
            placed.append(capture)  # on the reference clock: later captures can match it


class LinedUpStore(SessionStore):
    """An in-memory store of the sessions several captures make together. Its hops are copies
    on the first capture's clock, marked with their capture; their messages stay in the
    captures and are read from there (shifted) as they are asked for."""

    def __init__(self, captures: Sequence[LinedUpCapture]) -> None:
        super().__init__()
        self.captures = list(captures)
        place(self.captures)
        self._origin: dict[int, tuple[SessionStore, int, float]] = {}
        copies = []
        for order, capture in enumerate(c for c in self.captures if c.used):
            for hop in _hops(capture.store):
                copy = shifted_hop(hop, capture.shift, capture.name)
                copies.append((copy.timestamp_start, order, hop.id, copy, capture, hop))
        # In the order one process would have seen them: the correlation relies on it. A
        # capture whose clock could not be set is not lined up: on an unknown clock, a hop of
        # one client could look like the continuation of another's.
        for _, _, _, copy, capture, hop in sorted(copies, key=lambda c: c[:3]):
            self.add_hop(copy, alone=capture.unplaced)
            self._origin[copy.id] = (capture.store, hop.id, capture.shift)
        self.flush()

    @property
    def reference(self) -> LinedUpCapture:
        return self.captures[0]

    def captures_json(self) -> list[dict]:
        return [c.to_json(c is self.reference) for c in self.captures]

    def describe(self) -> list[str]:
        """One line per capture: its hops and its clock."""
        return [c.describe(self.reference.name) for c in self.captures]

    def status_text(self) -> str:
        """A short line for the app's status bar: the files and the estimated offsets."""
        parts = []
        for capture in self.captures:
            name = Path(capture.name).name
            if capture.offset is not None:
                parts.append(f"{name} {capture.offset.seconds:+.3f} s")
            elif capture is self.reference:
                parts.append(name)
            else:
                parts.append(f"{name} ({'read once' if not capture.used else 'no offset'})")
        return printable("captures " + " + ".join(parts))

    def hop_messages(self, hop_id: int, start: int, stop: int) -> list[Message]:
        store, original, shift = self._origin[hop_id]
        messages = store.hop_messages(original, start, stop)
        if not shift:
            return messages
        return [dataclasses.replace(m, timestamp=m.timestamp - shift) for m in messages]

    def hop_timings(self, hop_id: int, start: int, stop: int) -> list[Timing]:
        store, original, shift = self._origin[hop_id]
        timings = store.hop_timings(original, start, stop)
        if not shift:
            return timings
        return [(way, size, at - shift, rtt) for way, size, at, rtt in timings]

    def close(self) -> None:
        super().close()
        for capture in self.captures:
            capture.store.close()


def open_captures(paths: Sequence[str | os.PathLike]) -> SessionStore:
    """One capture as `open_capture` reads it; several lined up (a LinedUpStore). Raises
    CaptureError, naming the file, for the first that cannot be read."""
    if len(paths) == 1:
        return open_capture(paths[0])
    captures: list[LinedUpCapture] = []
    try:
        for path in paths:
            captures.append(LinedUpCapture(str(path), open_capture(Path(path))))
        return LinedUpStore(captures)
    except BaseException:
        for capture in captures:
            capture.store.close()
        raise

