"""Soak: steady WebSocket traffic through `wsinspect --headless` for minutes, sampling the
proxy's resident set to show it stays flat, next to bare mitmdump under the same traffic.

    .venv/bin/python bench/soak.py [--minutes 3] [--sessions 20] [--rate 200]

--rate is messages per second in all (echoed, so twice that many recorded). Long sessions are
the point: mitmproxy keeps every message of a live flow (upstream #6620), wsinspect trims.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time

from websockets.asyncio.client import connect

from benchkit import ECHO_SERVER, free_port, rss, start_proxy, wait_port


async def traffic(echo_port: int, ports: list[int], sessions: int, rate: float, stop: asyncio.Event):
    interval = sessions / rate

    async def one(port: int, i: int) -> None:
        async with connect(
            f"ws://127.0.0.1:{echo_port}/soak{i}", proxy=f"http://127.0.0.1:{port}",
            ping_interval=None,
        ) as ws:
            n = 0
            while not stop.is_set():
                await ws.send(f"soak {i} message {n} " + "y" * 200)
                await ws.recv()
                n += 1
                await asyncio.sleep(interval)

    await asyncio.gather(*(one(p, i) for p in ports for i in range(sessions)))


async def main(minutes: float, sessions: int, rate: float) -> None:
    echo_port = free_port()
    tmp = tempfile.mkdtemp(prefix="wsinspect-soak-")
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)])
    kinds = ["mitmdump", "wsinspect"]
    ports = {k: free_port() for k in kinds}
    procs = {k: start_proxy(k, ports[k], tmp, f"{tmp}/soak.db") for k in kinds}
    stop = asyncio.Event()
    try:
        await wait_port(echo_port)
        for port in ports.values():
            await wait_port(port)
        load = asyncio.create_task(traffic(echo_port, list(ports.values()), sessions, rate, stop))
        print(f"{sessions} sessions per proxy, {rate:.0f} msg/s each proxy, {minutes} min; RSS MiB")
        print(f"{'elapsed s':>9} {'mitmdump':>9} {'wsinspect':>10}")
        samples: dict[str, list[tuple[float, int]]] = {k: [] for k in kinds}
        start_time = time.monotonic()
        every = max(5.0, minutes * 60 / 20)
        while (elapsed := time.monotonic() - start_time) < minutes * 60:
            await asyncio.sleep(every)
            if load.done():
                load.result()  # a failed session ends the soak with its error
            elapsed = time.monotonic() - start_time
            for k in kinds:
                samples[k].append((elapsed, rss(procs[k].pid)))
            print(f"{elapsed:>9.0f} {samples['mitmdump'][-1][1] / 2**20:>9.1f} "
                  f"{samples['wsinspect'][-1][1] / 2**20:>10.1f}")
        stop.set()
        await load
        print("growth over the second half, MiB per minute:")
        for k in kinds:
            half = [s for s in samples[k] if s[0] >= minutes * 30]
            (t0, r0), (t1, r1) = half[0], half[-1]
            print(f"  {k:>10} {(r1 - r0) / 2**20 / max((t1 - t0) / 60, 1e-9):+.2f}")
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(30)
        echo.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    asyncio.run(main(args.minutes, args.sessions, args.rate))
