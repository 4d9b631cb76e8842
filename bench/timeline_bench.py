"""What a session's timeline costs at 1,000,000 messages: reading them from a capture, and
the timeline's own work on top, against reading alone, in this process.

    .venv/bin/python bench/timeline_bench.py [--count 1000000] [--chunk 5000]

The session: text both ways at 10,000 a second with a ping answered every 1,000 messages and
a 2 s silence every 100,000. Printed: reading the messages in chunks (the baseline: the app and
the report must read them anyway), the timeline fed the same messages in memory (its own cost,
also per message and as a ratio to reading), the longest a chunk of `--chunk` messages holds
the event loop when the app feeds them in a worker (read plus add), and drawing a chart of
80 and 200 columns and the report's figures from the result.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsinspect.model import Hop, Message, MessageType
from wsinspect.store import SessionStore
from wsinspect.timeline import Timeline


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


def timed(work) -> tuple[float, object]:
    began = time.perf_counter()
    result = work()
    return time.perf_counter() - began, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.wsinspect"
        build_capture(path, args.count)
        store = SessionStore.open(path)
        (session,) = store.sessions()
        hop = session.first_hop

        reading, messages = timed(lambda: list(store.iter_messages(hop.id, args.chunk)))
        timeline = Timeline(hop)
        adding, _ = timed(lambda: timeline.add_all(messages))
        assert timeline.count == args.count
        messages.clear()  # the timeline keeps none of them

        longest_chunk = 0.0
        fed = Timeline(hop)
        for start in range(0, args.count, args.chunk):
            began = time.perf_counter()
            fed.add_all(store.hop_messages(hop.id, start, start + args.chunk))
            longest_chunk = max(longest_chunk, time.perf_counter() - began)
        narrow, _ = timed(lambda: timeline.series(80, timeline.last))
        wide, series = timed(lambda: timeline.series(200, timeline.last))
        figures_time, figures = timed(lambda: timeline.figures(hop.timestamp_end))
        store.close()

    per = 1e6 / args.count
    print(f"{args.count:,} messages, timeline buckets of {timeline.width:g} s")
    print(f"  reading them (baseline)   {reading:7.2f} s  {reading * per:6.2f} µs/message")
    print(f"  timeline on top           {adding:7.2f} s  {adding * per:6.2f} µs/message  "
          f"ratio {adding / reading:4.2f} of reading")
    print(f"  longest chunk of {args.chunk} (read + add) holding the loop: "
          f"{longest_chunk * 1000:.1f} ms")
    print(f"  series: 80 columns {narrow * 1000:.1f} ms, 200 columns {wide * 1000:.1f} ms; "
          f"figures {figures_time * 1000:.1f} ms")
    print(f"  figures: peak client {figures.peak_client.messages}/s, silences {figures.silences}"
          f", longest {figures.max_silence.seconds:.3f} s, RTT p50 {figures.rtt.p50 * 1000:.2f}"
          f" ms max {figures.rtt.max * 1000:.2f} ms over {figures.rtt.count} pongs"
          f" ({sum(series.silent)} of 200 columns marked silent)")


if __name__ == "__main__":
    main()
