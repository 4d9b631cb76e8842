"""What a session's timeline costs at 1,000,000 messages: reading them from a capture, and
the timeline's own work on top, against reading whole messages, in this process.

    .venv/bin/python bench/timeline_bench.py [--count 1000000]

The session: text both ways at 10,000 a second with a pong every 1,000 messages and a 2 s
silence every 100,000. Printed, each against reading the whole messages (the baseline, what
the message list reads): reading their timings (no payloads) as the timeline does, the
timeline's own work on them in memory, the longest one chunk of the app's (read plus add)
holds the event loop, and drawing a chart of 80 and 200 columns and the report's
figures from the result. Then the app (headless, 120x40) opens the session and its Timeline
tab: how long the chart takes to fill, and how late a 5 ms timer fires on the app's event
loop meanwhile (what a key press waits at most), against the same with the app idle on the
message list.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsinspect.model import Hop, Message, MessageType
from wsinspect.store import SessionStore
from wsinspect.timeline import Timeline
from wsinspect.ui.timeline import CHUNK


def build_capture(path: Path, count: int) -> float:
    store = SessionStore(path)
    start = 1_700_000_000.0
    hop = Hop(mode="regular", url="ws://bench.test/feed", request_line="GET /feed HTTP/1.1",
              http_version="HTTP/1.1", request_headers=[("Host", "bench.test")],
              timestamp_start=start, response_status=101, timestamp_response=start + 0.001)
    store.add_hop(hop)
    t = start + 0.002
    for i in range(count):
        t += 2.0 if i % 100_000 == 99_999 else 1e-4
        if i % 1000 == 1:
            message = Message(False, MessageType.PONG, 4, b"beat", t, rtt=0.001 + (i % 7) * 1e-4)
        else:
            payload = b'{"seq": %d, "price": 101.25}' % i
            message = Message(i % 2 == 0, MessageType.TEXT, len(payload), payload, t)
        store.add_message(hop, message)
        if i % 50_000 == 49_999:
            store.flush()
    store.close()
    return start


async def timer_lateness(until, at_least: float = 0.0) -> list[float]:
    """How late a 5 ms sleep wakes, again and again, until `until()` (and `at_least` s)."""
    lateness, began = [], time.perf_counter()
    while True:
        start = time.perf_counter()
        await asyncio.sleep(0.005)
        lateness.append(time.perf_counter() - start - 0.005)
        if until() and time.perf_counter() - began >= at_least:
            return lateness


async def in_the_app(path: Path) -> tuple[float, list[float], list[float]]:
    from wsinspect.ui import WsInspectApp
    from wsinspect.ui.timeline import TimelineView

    store = SessionStore.open(path)
    app = WsInspectApp(store)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")
        await pilot.pause(0.5)
        idle = await timer_lateness(lambda: True, at_least=2.0)
        view = app.screen.query_one(TimelineView)
        total = store.sessions()[0].first_hop.stats.count
        began = time.perf_counter()
        timer = asyncio.create_task(timer_lateness(lambda: view.timeline.count >= total))
        await pilot.press("t")
        reading = await timer
        filled = time.perf_counter() - began
    store.close()
    return filled, idle, reading


def lateness_text(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return (f"p50 {statistics.median(ms):5.1f} ms  p99 {ms[int(0.99 * (len(ms) - 1))]:5.1f} ms"
            f"  max {ms[-1]:5.1f} ms")


def timed(work) -> tuple[float, object]:
    began = time.perf_counter()
    result = work()
    return time.perf_counter() - began, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.wsinspect"
        build_capture(path, args.count)
        store = SessionStore.open(path)
        (session,) = store.sessions()
        hop = session.first_hop

        whole, _ = timed(lambda: sum(1 for _ in store.iter_messages(hop.id)))
        reading, timings = timed(lambda: list(store.iter_timings(hop.id)))
        timeline = Timeline(hop)
        adding, _ = timed(lambda: timeline.add_timings(timings))
        assert timeline.count == args.count
        timings.clear()  # the timeline keeps none of them

        longest_chunk = 0.0
        fed = Timeline(hop)
        for start in range(0, args.count, CHUNK):
            began = time.perf_counter()
            fed.add_timings(store.hop_timings(hop.id, start, start + CHUNK))
            longest_chunk = max(longest_chunk, time.perf_counter() - began)
        narrow, _ = timed(lambda: timeline.series(80, timeline.last))
        wide, series = timed(lambda: timeline.series(200, timeline.last))
        figures_time, figures = timed(lambda: timeline.figures(hop.timestamp_end))
        store.close()
        filled, idle, reading_lateness = asyncio.run(in_the_app(path))

    per = 1e6 / args.count
    print(f"{args.count:,} messages, timeline buckets of {timeline.width:g} s")
    print(f"  reading whole messages (baseline) {whole:6.2f} s  {whole * per:6.2f} µs/message")
    print(f"  reading their timings             {reading:6.2f} s  {reading * per:6.2f} µs/message"
          f"  ratio {reading / whole:4.2f}")
    print(f"  the timeline on top               {adding:6.2f} s  {adding * per:6.2f} µs/message"
          f"  ratio {adding / whole:4.2f}")
    print(f"  longest chunk of {CHUNK} (read + add) holding the loop: "
          f"{longest_chunk * 1000:.1f} ms")
    print(f"  series: 80 columns {narrow * 1000:.1f} ms, 200 columns {wide * 1000:.1f} ms; "
          f"figures {figures_time * 1000:.1f} ms")
    print(f"  figures: peak client {figures.peak_client.messages}/s, silences {figures.silences}"
          f", longest {figures.max_silence.seconds:.3f} s, RTT p50 {figures.rtt.p50 * 1000:.2f}"
          f" ms max {figures.rtt.max * 1000:.2f} ms over {figures.rtt.count} pongs"
          f" ({sum(series.silent)} of 200 columns marked silent)")
    print(f"  the app's Timeline tab filled in {filled:.1f} s; a 5 ms timer's lateness:")
    print(f"    idle on the message list   {lateness_text(idle)}")
    print(f"    while the chart fills      {lateness_text(reading_lateness)}")


if __name__ == "__main__":
    main()
