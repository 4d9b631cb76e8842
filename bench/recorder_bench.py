"""Throughput and memory of the headless recorder, against bare mitmdump and a direct connection.

    .venv/bin/python bench/recorder_bench.py [--quick]

All three paths run in this process tree on loopback, in one run, so the ratios compare like
with like: an echo server process, the proxy process (mitmdump or `wsinspect --headless`), and
a websockets client here that keeps a window of messages in flight and counts echoes per second.
Memory: the proxy's resident set sampled as one session grows, in bytes per recorded message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile

from benchkit import ECHO_SERVER, echo_rate, free_port, growth, start_proxy, wait_port
from websockets.asyncio.client import connect


async def throughput(target: int, proxy: str | None, size: int, count: int, window: int = 64) -> float:
    """Echoed messages per second on a new connection."""
    async with connect(
        f"ws://127.0.0.1:{target}/", proxy=proxy, max_size=None, compression=None
    ) as ws:
        return await echo_rate(ws, os.urandom(size), count, window)


async def main(quick: bool) -> None:
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)])
    tmp = tempfile.mkdtemp(prefix="wsinspect-bench-")
    procs = [echo]
    try:
        await wait_port(echo_port)
        sizes = [(64, 20000), (1024, 20000), (1024 * 1024, 100)]
        if quick:
            sizes = [(64, 3000), (1024, 3000), (1024 * 1024, 20)]
        ports = {}
        for kind in ("mitmdump", "wsinspect"):
            ports[kind] = free_port()
            procs.append(start_proxy(kind, ports[kind], tmp, f"{tmp}/{kind}-throughput.db"))
        for port in ports.values():
            await wait_port(port)
        print("messages per second (echoed, window 64), best of 3")
        print(f"{'size':>8} {'direct':>10} {'mitmdump':>10} {'wsinspect':>10} {'wsi/mitm':>9} {'wsi/direct':>10}")
        for size, count in sizes:
            rates = {}
            for kind, proxy in (("direct", None), *((k, f"http://127.0.0.1:{p}") for k, p in ports.items())):
                rates[kind] = max([await throughput(echo_port, proxy, size, count) for _ in range(3)])
            print(
                f"{size:>8} {rates['direct']:>10.0f} {rates['mitmdump']:>10.0f} "
                f"{rates['wsinspect']:>10.0f} {rates['wsinspect'] / rates['mitmdump']:>9.2f} "
                f"{rates['wsinspect'] / rates['direct']:>10.2f}"
            )
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
            p.wait(20)
        procs = [echo]

        steps = [2000, 20000, 40000, 80000] if not quick else [1000, 5000, 10000]
        print("\nproxy RSS as one session grows (1 KiB messages)")
        print(f"{'proxy':>10} {'messages':>9} {'RSS MiB':>8} {'bytes/msg since first sample':>29}")
        for kind in ("mitmdump", "wsinspect"):
            port = free_port()
            proc = start_proxy(kind, port, tmp, f"{tmp}/{kind}-growth.db")
            procs.append(proc)
            await wait_port(port)
            samples = await growth(echo_port, port, proc.pid, steps, 1024)
            base_n, base_rss = samples[0]
            for n, r in samples:
                per = (r - base_rss) / (n - base_n) if n > base_n else 0.0
                print(f"{kind:>10} {n:>9} {r / 2**20:>8.1f} {per:>29.1f}")
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
            procs.remove(proc)
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, for a smoke run")
    asyncio.run(main(parser.parse_args().quick))
