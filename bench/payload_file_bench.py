"""What recording and reading back large messages costs with payloads in SQLite (as before the
payload file) against the payload file beside the capture, in this same process.

    .venv/bin/python bench/payload_file_bench.py [--size 1048576] [--messages 400] [--repeat 3]

For each way, a fresh capture gets --messages messages of --size bytes through
`SessionStore.add_message`, committed every 20 messages (as the proxy commits every 0.5 s at
40 MiB/s) and flushed; the process's CPU time (every thread: the store's writer thread does
the work) and the wall time are taken per MiB, best of --repeat. Then the capture is reopened
and every message read back. The inline way is the store with its payload-file threshold
raised above --size, so the same code writes each payload into SQLite.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchkit import make_hop

from wsinspect import store as store_module
from wsinspect.model import Message, MessageType
from wsinspect.store import SessionStore

COMMIT_EVERY = 20


def record(path: Path, payload: bytes, messages: int) -> tuple[float, float]:
    """(CPU s, wall s) to record and flush `messages` copies of `payload` into `path`."""
    cpu, wall = time.process_time(), time.perf_counter()
    store = SessionStore(path, max_payload=len(payload))
    hop = store.add_hop(make_hop()).first_hop
    for i in range(messages):
        store.add_message(hop, Message(True, MessageType.BINARY, len(payload), payload, 100.0 + i))
        if i % COMMIT_EVERY == COMMIT_EVERY - 1:
            store.commit()
    store.close()
    return time.process_time() - cpu, time.perf_counter() - wall


def read_back(path: Path, size: int, messages: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    store = SessionStore.open(path)
    (session,) = store.sessions()
    count = 0
    for message in store.iter_messages(session.first_hop.id, chunk=50):
        assert len(message.payload) == size
        count += 1
    store.close()
    assert count == messages
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    payload = os.urandom(args.size)
    mib = args.size * args.messages / (1 << 20)
    threshold = store_module.LARGE_PAYLOAD
    ways = {"sqlite (inline)": args.size + 1, "payload file": threshold}
    results: dict[str, list[tuple[float, float, float, float]]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        for run in range(args.repeat):
            for way, large in ways.items():  # taking turns, so both see the same machine
                store_module.LARGE_PAYLOAD = large
                path = Path(tmp) / f"{run}-{way.split()[0]}.db"
                written = record(path, payload, args.messages)
                store_module.LARGE_PAYLOAD = threshold
                read = read_back(path, args.size, args.messages)
                results[way].append((*written, *read))
                for file in Path(tmp).iterdir():
                    file.unlink()
    print(f"{args.messages} messages of {args.size} B ({mib:.0f} MiB), commit every "
          f"{COMMIT_EVERY}, best of {args.repeat}; ms per MiB, ratio to sqlite (inline)")
    print(f"{'':18}{'write CPU':>18}{'write wall':>18}{'read CPU':>18}{'read wall':>18}")
    base = [min(r[i] for r in results["sqlite (inline)"]) for i in range(4)]
    for way, runs in results.items():
        best = [min(r[i] for r in runs) for i in range(4)]
        cells = "".join(f"{b / mib * 1000:9.2f} ({b / a:4.2f}x)" for a, b in zip(base, best))
        print(f"{way:18}{cells}")


if __name__ == "__main__":
    main()
