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
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

BIN = Path(sys.executable).parent
ECHO_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), max_size=None, compression=None,
                     ping_interval=None):
        await asyncio.Future()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


async def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def echo_rate(ws, payload: bytes, count: int, window: int = 64) -> float:
    """Messages per second echoed on an open connection, at most `window` in flight (each
    message counted once: there and back)."""
    in_flight = asyncio.Semaphore(window)

    async def send():
        for _ in range(count):
            await in_flight.acquire()
            await ws.send(payload)

    start = time.perf_counter()
    sender = asyncio.create_task(send())
    for _ in range(count):
        await ws.recv()
        in_flight.release()
    await sender
    return count / (time.perf_counter() - start)


async def throughput(target: int, proxy: str | None, size: int, count: int, window: int = 64) -> float:
    """Echoed messages per second on a new connection."""
    async with connect(
        f"ws://127.0.0.1:{target}/", proxy=proxy, max_size=None, compression=None
    ) as ws:
        return await echo_rate(ws, os.urandom(size), count, window)


PROXY_KINDS = {
    # kind: (program, extra arguments)
    "mitmdump": ("mitmdump", []),
    "mitmdump-passthrough": ("mitmdump", ["--ignore-hosts", ".*"]),  # raw TCP: the ceiling
    "wsinspect": ("wsinspect", []),  # the raw relay, wsinspect's default
    "wsinspect-mitmproxy": ("wsinspect", ["--set", "wsinspect_relay=mitmproxy"]),
}


def start_proxy(kind: str, port: int, confdir: str, capture: str, log=None) -> subprocess.Popen:
    """One of PROXY_KINDS listening on 127.0.0.1:`port`; its output goes to `log` (a file)."""
    program, extra = PROXY_KINDS[kind]
    env = None
    if program == "mitmdump":
        args = [str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "--listen-port",
                str(port), "--set", f"confdir={confdir}", *extra]
        # mitmdump makes ~/.mitmproxy before it reads --set confdir: keep it in the temp dir.
        env = {**os.environ, "HOME": confdir}
    else:
        args = [str(BIN / "wsinspect"), "--headless", "--listen-port", str(port), "--confdir",
                confdir, "-w", capture, *extra]
    out = log or subprocess.DEVNULL
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT if log else out, env=env)


async def growth(target: int, proxy_port: int, pid: int, steps: list[int], size: int) -> list[tuple[int, int]]:
    """(messages recorded, proxy RSS) as one session grows."""
    payload = os.urandom(size)
    samples = []
    sent = 0
    async with connect(
        f"ws://127.0.0.1:{target}/", proxy=f"http://127.0.0.1:{proxy_port}", compression=None
    ) as ws:
        for step in steps:
            while sent < step:
                batch = min(256, step - sent)
                for _ in range(batch):
                    await ws.send(payload)
                for _ in range(batch):
                    await ws.recv()
                sent += batch
            await asyncio.sleep(1.0)  # let the recorder commit
            samples.append((2 * sent, rss(pid)))
    return samples


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
