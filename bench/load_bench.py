"""Many concurrent sessions through the proxy: memory per session, wsinspect vs bare mitmdump.

    .venv/bin/python bench/load_bench.py [--sessions 1000] [--messages 10]

Every session is opened first, then each sends --messages messages and waits for the echoes,
then all stay open while the proxy's resident set is read, then all close. Figures are the
proxy process's RSS (MiB) idle, with every session open, and after they closed.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import subprocess
import sys
import tempfile
import time

from websockets.asyncio.client import connect

from benchkit import ECHO_SERVER, free_port, rss, start_proxy, wait_port


async def run(kind: str, echo_port: int, sessions: int, messages: int, tmp: str) -> None:
    port = free_port()
    proc = start_proxy(kind, port, tmp, f"{tmp}/load-{time.time()}.db")
    try:
        await wait_port(port)
        await asyncio.sleep(0.5)
        idle = rss(proc.pid)
        all_open = asyncio.Event()
        traffic_done = asyncio.Event()
        measured = asyncio.Event()
        opened = finished = failures = 0

        async def session(i: int) -> None:
            nonlocal opened, finished, failures
            try:
                async with connect(
                    f"ws://127.0.0.1:{echo_port}/s{i}", proxy=f"http://127.0.0.1:{port}",
                    open_timeout=120, ping_interval=None,
                ) as ws:
                    opened += 1
                    if opened + failures == sessions:
                        all_open.set()
                    await all_open.wait()
                    for j in range(messages):
                        await ws.send(f"session {i} message {j} " + "x" * 100)
                        await ws.recv()
                    finished += 1
                    if finished + failures == sessions:
                        traffic_done.set()
                    await measured.wait()
            except Exception as e:
                failures += 1
                print(f"session {i}: {e}", file=sys.stderr)

        start = time.perf_counter()
        tasks = []
        for i in range(sessions):  # in waves, so the listen backlog is not what is measured
            tasks.append(asyncio.create_task(session(i)))
            if i % 100 == 99:
                await asyncio.sleep(0.2)
        await asyncio.wait_for(traffic_done.wait(), 600)
        await asyncio.sleep(1.0)  # let the recorder commit
        loaded = rss(proc.pid)
        elapsed = time.perf_counter() - start
        measured.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(2)
        after = rss(proc.pid)
        mib = 2**20
        print(
            f"{kind:>10} {idle / mib:>8.1f} {loaded / mib:>10.1f} {after / mib:>8.1f} "
            f"{(loaded - idle) / sessions / 1024:>14.1f} {failures:>9} {elapsed:>8.1f}"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


async def main(sessions: int, messages: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)])
    tmp = tempfile.mkdtemp(prefix="wsinspect-load-")
    try:
        await wait_port(echo_port)
        print(f"{sessions} concurrent sessions, {messages} echoed messages each; proxy RSS in MiB")
        print(f"{'proxy':>10} {'idle':>8} {'all open':>10} {'after':>8} {'KiB/session':>14} "
              f"{'failures':>9} {'seconds':>8}")
        for kind in ("mitmdump", "wsinspect"):
            await run(kind, echo_port, sessions, messages, tmp)
    finally:
        echo.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.sessions, args.messages))
