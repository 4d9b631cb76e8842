"""Peak memory of the proxy relaying one huge WebSocket message, wsinspect vs bare mitmdump.

    .venv/bin/python bench/large_message_bench.py [--mib 100]

One text message of --mib MiB goes client -> proxy -> echo server -> proxy -> client. The
proxy's peak resident set (VmHWM) is compared with its resident set before the message and
with the message size; "after" is the resident set once the echo has come back, to show
whether the memory is returned.
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

from benchkit import ECHO_SERVER, free_port, memory, start_proxy, wait_port


async def relay(kind: str, echo_port: int, size: int, tmp: str) -> None:
    port = free_port()
    proc = start_proxy(kind, port, tmp, f"{tmp}/large.db")
    try:
        await wait_port(port)
        payload = "x" * size
        async with connect(
            f"ws://127.0.0.1:{echo_port}/", proxy=f"http://127.0.0.1:{port}", max_size=None,
            compression=None, ping_interval=None,
        ) as ws:
            await ws.send("warm up")
            await ws.recv()
            await asyncio.sleep(0.5)
            before, _ = memory(proc.pid)
            start = time.perf_counter()
            await ws.send(payload)
            echoed = await ws.recv()
            elapsed = time.perf_counter() - start
            assert len(echoed) == size
            await asyncio.sleep(1.5)
            after, peak = memory(proc.pid)
        mib = 2**20
        print(
            f"{kind:>10} {before / mib:>9.0f} {peak / mib:>9.0f} {after / mib:>9.0f} "
            f"{(peak - before) / size:>18.2f} {elapsed:>9.1f}"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


async def main(mib: int, proxies: list[str]) -> None:
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)])
    tmp = tempfile.mkdtemp(prefix="wsinspect-large-")
    try:
        await wait_port(echo_port)
        print(f"one {mib} MiB text message echoed through the proxy; proxy memory in MiB")
        print(
            f"{'proxy':>10} {'before':>9} {'peak':>9} {'after':>9} {'peak growth / size':>18} "
            f"{'seconds':>9}"
        )
        for kind in proxies:
            await relay(kind, echo_port, mib * 2**20, tmp)
    finally:
        echo.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument(
        "--proxy", action="append", choices=["mitmdump", "wsinspect"],
        help="which proxies to measure (default: both)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.proxy or ["mitmdump", "wsinspect"]))
