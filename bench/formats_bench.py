"""Export and import speed and memory of each format, against reading the capture itself.

    .venv/bin/python bench/formats_bench.py [--sessions 20] [--messages 5000]

Builds a capture of --sessions sessions of --messages messages each (text of 200 bytes and
binary of 4 KiB, alternating), then, each in a child process of its own: the baseline reads
every message of the capture through the store; each format is exported from the capture and
(HAR, flows) opened again. Times are ratios to the baseline's, peak memory (VmHWM) growth is
given as a ratio to the baseline's growth and to the file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import make_hop

from wsinspect import formats
from wsinspect.formats.common import add_imported_hop
from wsinspect.model import Message, MessageType, Outcome
from wsinspect.store import SessionStore


def peak_rss() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def build_capture(path: Path, sessions: int, messages: int) -> int:
    """A capture like the recorder writes; returns the payload bytes in it."""
    store = SessionStore(path)
    total = 0
    for n in range(sessions):
        start = 1_700_000_000.0 + n
        hop = make_hop(
            f"ws://127.0.0.1:9000/feed/{n}",
            key=f"key{n:020d}==",
            t=start,
            response_status=101,
            response_reason="Switching Protocols",
            timestamp_response=start + 0.001,
            timestamp_end=start + 60,
            outcome=Outcome.CLOSED,
        )
        batch = []
        for i in range(messages):
            if i % 2:
                payload = os.urandom(4096)
                kind = MessageType.BINARY
            else:
                payload = json.dumps({"seq": i, "data": "x" * 170}).encode()
                kind = MessageType.TEXT
            total += len(payload)
            batch.append(Message(i % 4 < 2, kind, len(payload), payload, start + i / 1000))
        add_imported_hop(store, hop, batch)
    store.close()
    return total


def child(task: str, source: str, target: str) -> dict:
    """Runs in a child process: one measured task, reported as JSON."""
    base = peak_rss()
    started = time.perf_counter()
    if task == "read":
        store = SessionStore.open(source)
        for session in store.sessions():
            for _ in store.iter_messages(session.first_hop.id):
                pass
    elif task == "import":
        store = formats.open_capture(source)
    else:
        formats.export(formats.open_capture(source), target, task)
    return {"seconds": time.perf_counter() - started, "growth": peak_rss() - base}


def run_child(task: str, source: Path, target: Path | None = None) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", task, str(source), str(target or "")],
        capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--child", nargs=3, metavar=("TASK", "SOURCE", "TARGET"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "bench.db"
        payload = build_capture(capture, args.sessions, args.messages)
        baseline = run_child("read", capture)
        print(
            f"capture: {args.sessions} sessions x {args.messages} messages, "
            f"{payload / 2**20:.1f} MiB of payload, {capture.stat().st_size / 2**20:.1f} MiB file"
        )
        print(
            f"baseline (read every message from the capture): {baseline['seconds']:.2f} s, "
            f"peak memory +{baseline['growth'] / 2**20:.0f} MiB"
        )
        for fmt, suffix in (("har", "har"), ("flows", "mitm"), ("jsonl", "jsonl")):
            out = Path(tmp) / f"bench.{suffix}"
            exported = run_child(fmt, capture, out)
            size = out.stat().st_size
            line = (
                f"{fmt:>5}: export {exported['seconds'] / baseline['seconds']:.1f}x baseline time, "
                f"file {size / payload:.2f}x payload"
            )
            if fmt != "jsonl":
                imported = run_child("import", out)
                line += (
                    f"; open {imported['seconds'] / baseline['seconds']:.1f}x baseline time, "
                    f"peak memory +{imported['growth'] / size:.2f}x its file size "
                    f"({imported['growth'] / max(baseline['growth'], 1):.0f}x baseline growth)"
                )
            print(line)


if __name__ == "__main__":
    main()
