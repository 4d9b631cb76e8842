"""What the benches share: an echo server to start, a proxy of each kind to compare, ports,
memory and rates; builders come from tests/builders.py.

A bench runs as `python bench/NAME.py`, which puts bench/ on sys.path: `from benchkit import …`
finds this module, and this module puts the checkout on sys.path once, for tests/'s builders
and this checkout's wsinspect.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.builders import free_port, make_hop

__all__ = [
    "BIN", "ECHO_SERVER", "PROXY_KINDS", "ROOT", "echo_rate", "free_port", "growth", "make_hop",
    "memory", "rss", "start_proxy", "wait_port",
]  # fmt: skip

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


def memory(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
    return rss, hwm


def rss(pid: int) -> int:
    return memory(pid)[0]


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
