"""The app's speed: first paint and paging on a 1,000,000-message session, arrival-to-screen
latency at 20,000 messages per second, and the proxy's throughput with the app running.

    .venv/bin/python bench/ui_bench.py [--quick]

Everything runs in this process tree, in one run, and is printed next to its baseline:
  * first paint / page-down: the app (Textual's headless driver, 120x40) opening a session of
    1,000,000 messages, against the same on a 1,000-message session;
  * latency: messages fed into the store at 20,000/s while the message list follows the tail;
    for each message, the time until a frame showing it (or a later one) is rendered;
    against the interval at which the app has the store report changes, the floor;
  * throughput: `wsinspect` with the app in a real pseudo-terminal, its session view open and
    following, against `wsinspect --headless`, same client, same echo server, one connection.
    The proxy saturates the shared event loop here, so the app paces its live repaints
    (wsinspect/ui/pacing.py); in the latency run the loop has time to spare and it does not.
Targets (issue 3): first paint <= 200 ms, p99 latency <= 50 ms, throughput >= 0.85x headless.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

from websockets.asyncio.client import connect

from benchkit import ECHO_SERVER, echo_rate, free_port, make_hop, wait_port

from wsinspect.model import Message, MessageType
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.message_list import MessageList
from wsinspect.ui.pacing import LIVE_NOTIFY_INTERVAL
from wsinspect.ui.session_view import SessionScreen

BIN = Path(sys.executable).parent
SIZE = (120, 40)


def build_capture(path: Path, count: int) -> None:
    store = SessionStore(path)
    start = time.time()
    hop = make_hop("ws://bench.test/feed", t=start, status=101)
    store.add_hop(hop)
    for i in range(count):
        payload = b'{"seq": %d, "price": 101.25, "side": "buy"}' % i
        store.add_message(
            hop, Message(i % 2 == 0, MessageType.TEXT, len(payload), payload, start + i * 1e-4)
        )
        if i % 50_000 == 49_999:
            store.flush()
    store.close()


class Frames:
    """Records each time a MessageList finishes rendering lines: (when, newest index shown)."""

    def __init__(self) -> None:
        self.renders: list[tuple[float, int]] = []
        self.rendered = asyncio.Event()
        original = MessageList.render_lines
        frames = self

        def render_lines(widget: MessageList, crop):
            strips = original(widget, crop)
            bottom = min(widget.row_count, int(widget.scroll_offset.y) + crop.bottom)
            newest = widget.message_index(bottom - 1) if bottom > 0 else -1
            frames.renders.append((time.perf_counter(), newest))
            frames.rendered.set()
            return strips

        MessageList.render_lines = render_lines

    async def next_render(self, since: float, timeout: float = 10.0) -> float:
        deadline = time.perf_counter() + timeout
        while True:
            for when, _ in reversed(self.renders):
                if when >= since:
                    return when
                break
            if time.perf_counter() > deadline:
                raise TimeoutError("no frame rendered")
            self.rendered.clear()
            try:
                await asyncio.wait_for(self.rendered.wait(), 1.0)
            except TimeoutError:
                pass


async def paint_and_page(path: Path, frames: Frames, pages: int) -> dict[str, float]:
    """Milliseconds: open the capture, first paint of the session view, page-down, end."""
    t0 = time.perf_counter()
    store = SessionStore.open(path)
    opened = time.perf_counter()
    app = WsInspectApp(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        asked = time.perf_counter()
        app.open_session(1)
        first_paint = await frames.next_render(asked) - asked
        assert isinstance(app.screen, SessionScreen)
        listing = app.screen.query_one(MessageList)
        await pilot.press("home")
        times = []
        for _ in range(pages):
            asked = time.perf_counter()
            await pilot.press("pagedown")
            times.append(await frames.next_render(asked) - asked)
        # Back to the top first: the pages may have reached the end of a small session, and
        # an `end` that moves nothing draws nothing to time.
        asked = time.perf_counter()
        await pilot.press("home")
        await frames.next_render(asked)
        asked = time.perf_counter()
        await pilot.press("end")
        end_time = await frames.next_render(asked) - asked
        assert listing.cursor_message == store.message_count(1) - 1
    store.close()
    return {
        "open capture": (opened - t0) * 1000,
        "first paint": first_paint * 1000,
        "page-down p50": statistics.median(times) * 1000,
        "page-down max": max(times) * 1000,
        "end": end_time * 1000,
    }


async def arrival_to_screen(
    frames: Frames, capture: Path, rate: int, seconds: float
) -> list[float]:
    """Latencies (ms) from `add_message` to a rendered frame showing that message or a later
    one, with messages fed at `rate` per second in 5 ms batches into a new capture file."""
    store = SessionStore(capture)
    hop = make_hop("ws://bench.test/feed", t=time.time(), status=101)
    store.add_hop(hop)
    store.flush()
    app = WsInspectApp(store)
    arrivals: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.open_session(1)
        await pilot.pause()
        frames.renders.clear()
        batch = max(1, rate // 200)
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate) - len(arrivals)
            for _ in range(min(due, batch * 4)):
                i = len(arrivals)
                payload = b"tick %d" % i
                store.add_message(
                    hop, Message(False, MessageType.TEXT, len(payload), payload, time.time())
                )
                arrivals.append(time.perf_counter())
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
    store.close()
    latencies = []
    renders = frames.renders
    r = 0
    for index, arrived in enumerate(arrivals):
        while r < len(renders) and (renders[r][1] < index or renders[r][0] < arrived):
            r += 1
        if r == len(renders):
            break
        latencies.append((renders[r][0] - arrived) * 1000)
    if len(latencies) < len(arrivals):
        raise AssertionError(f"{len(arrivals) - len(latencies)} messages never reached the screen")
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# ----- proxy throughput: the app in a pseudo-terminal versus headless ---------------------


def start_wsinspect(port: int, confdir: str, capture: str, app: bool):
    """A wsinspect process; with the app, its terminal is a pty whose output is drained."""
    args = [str(BIN / "wsinspect"), "--listen-port", str(port), "--confdir", confdir, "-w", capture]
    if not app:
        proc = subprocess.Popen([*args, "--headless"], stdout=subprocess.DEVNULL)
        return proc, None
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)

    def drain() -> None:
        try:
            while os.read(master, 65536):
                pass
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    return proc, master


async def rounds(port: int, echo_port: int, size: int, count: int, n: int, master: int | None,
                 window: int = 64) -> float:
    """Best of `n` rounds of echoed messages per second, on one connection (one session)."""
    payload = os.urandom(size)
    async with connect(f"ws://127.0.0.1:{echo_port}/", proxy=f"http://127.0.0.1:{port}",
                       max_size=None, compression=None) as ws:
        await ws.send(payload)
        await ws.recv()
        if master is not None:
            await asyncio.sleep(1.0)  # the session is listed: open it, so the list follows it
            os.write(master, b"\r")
            await asyncio.sleep(1.0)
        return max([await echo_rate(ws, payload, count, window) for _ in range(n)])


async def proxy_throughput(count: int, n: int, pairs: int = 3) -> dict[str, float]:
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)])
    tmp = tempfile.mkdtemp(prefix="wsinspect-uibench-")
    rates = {}
    try:
        await wait_port(echo_port)
        # Alternated, so that a slow spell of a shared machine does not fall on one side only.
        for turn, app in enumerate([False, True] * pairs):
            label = "app" if app else "headless"
            port = free_port()
            proc, master = start_wsinspect(port, tmp, f"{tmp}/{label}-{turn}.db", app)
            try:
                await wait_port(port)
                rate = await rounds(port, echo_port, 1024, count, n, master)
                rates[label] = max(rates.get(label, 0.0), rate)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
                if master is not None:
                    os.close(master)
            if proc.returncode != 0:
                raise AssertionError(f"wsinspect ({label}) exited {proc.returncode}")
    finally:
        echo.kill()
    return rates


async def main(quick: bool) -> None:
    frames = Frames()
    tmp = Path(tempfile.mkdtemp(prefix="wsinspect-uibench-"))
    big_count = 100_000 if quick else 1_000_000
    print(f"first paint and paging (ms), {SIZE[0]}x{SIZE[1]}, headless driver")
    results = {}
    for count in (1_000, big_count):
        path = tmp / f"{count}.db"
        started = time.perf_counter()
        build_capture(path, count)
        print(f"  built a {count}-message capture in {time.perf_counter() - started:.1f} s")
        results[count] = await paint_and_page(path, frames, pages=20 if quick else 50)
    print(f"  {'':<14} {'1,000 msgs':>11} {f'{big_count:,} msgs':>15} {'ratio':>6}")
    for key in results[1_000]:
        small, big = results[1_000][key], results[big_count][key]
        print(f"  {key:<14} {small:>11.1f} {big:>15.1f} {big / small:>6.2f}")

    rate = 20_000
    seconds = 2.0 if quick else 5.0
    latencies = await arrival_to_screen(frames, tmp / "live.db", rate, seconds)
    floor = LIVE_NOTIFY_INTERVAL * 1000
    print(f"\narrival-to-screen at {rate}/s for {seconds:.0f} s ({len(latencies)} messages), ms")
    print(f"  p50 {percentile(latencies, 50):.1f}  p99 {percentile(latencies, 99):.1f}  "
          f"max {max(latencies):.1f}  (the app's store notification interval {floor:.0f}; "
          f"p99/interval {percentile(latencies, 99) / floor:.2f})")

    count = 5_000 if quick else 20_000
    rates = await proxy_throughput(count, 2 if quick else 3)
    print("\nproxy throughput, 1 KiB echoed messages, window 64, one session; best round of "
          "3 processes per side, alternated")
    print(f"  headless {rates['headless']:.0f}/s  app {rates['app']:.0f}/s  "
          f"app/headless {rates['app'] / rates['headless']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 messages, shorter runs")
    asyncio.run(main(parser.parse_args().quick))
