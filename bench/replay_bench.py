"""Peak memory of `wsinspect replay` when the server answers with one huge message.

    .venv/bin/python bench/replay_bench.py [--mib 600]

A raw-socket server answers the replayed message with one binary frame of --mib MiB (written a
MiB at a time, so this process stays small and its forked children do not inherit it). The
replay's peak resident set (VmHWM, read until it exits) is compared with a baseline replay whose
answer is 1 MiB, run first in the same process tree, directly and through the replay's proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import sys
import tempfile
import time
from pathlib import Path

from benchkit import ROOT  # noqa: F401 (puts the checkout on sys.path for tests.test_replay)

from tests.test_replay import RawServer, crafted_capture, message
from wsinspect.model import Message, MessageType

MIB = 1024 * 1024
CHUNK = bytes(MIB)
WSINSPECT = Path(sys.executable).parent / "wsinspect"


async def replay_peak(mib: int, route: list[str], tmp: Path) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of one replay whose answer is `mib` MiB of zeros."""
    digest = hashlib.sha256()
    for _ in range(mib):
        digest.update(CHUNK)

    async def answers_huge(reader, writer):
        await reader.read(100)  # the replayed message
        writer.write(bytes([0x82, 127]) + (mib * MIB).to_bytes(8, "big"))
        for _ in range(mib):
            writer.write(CHUNK)
            await writer.drain()
        await reader.read()

    async with RawServer(answers_huge) as server:
        capture = tmp / f"original-{mib}-{len(route)}.db"
        original = Message(
            from_client=False, type=MessageType.BINARY, size=mib * MIB, payload=CHUNK[:16],
            timestamp=2.0, sha256=digest.hexdigest(),
        )  # fmt: skip
        session_id = crafted_capture(
            capture, f"ws://127.0.0.1:{server.port}/", [message("go", True), original]
        )
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            str(WSINSPECT), "replay", str(capture), str(session_id), "--wait", "10",
            "-w", str(tmp / f"replay-{mib}-{len(route)}.db"), *route,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        peak = 0
        communicating = asyncio.ensure_future(process.communicate())
        while not communicating.done():
            peak = max(peak, peak_rss(process.pid))
            await asyncio.sleep(0.05)
        out, err = communicating.result()
        if process.returncode != 0:
            raise SystemExit(f"replay failed ({process.returncode}): {out.decode()}{err.decode()}")
    return peak, time.monotonic() - started


def peak_rss(pid: int) -> int:
    """VmHWM of a running process in bytes; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else 0


async def main(mib: int) -> None:
    with tempfile.TemporaryDirectory(prefix="wsinspect-replay-bench-") as tmp:
        for name, route in (("direct", ["--direct"]), ("through the proxy", [])):
            base, _ = await replay_peak(1, route, Path(tmp))
            peak, seconds = await replay_peak(mib, route, Path(tmp))
            print(
                f"replay {name}: {mib} MiB answer peak {peak / MIB:.0f} MiB "
                f"vs 1 MiB answer {base / MIB:.0f} MiB: x{peak / base:.2f}; "
                f"peak/answer {peak / (mib * MIB):.2f}; {seconds:.1f}s"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=600, help="answer size in MiB (600)")
    asyncio.run(main(parser.parse_args().mib))
