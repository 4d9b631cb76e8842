"""Live repaints give way to the proxy when the shared event loop is saturated, and lose no
message doing so."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import wait_for
from tests.ui_helpers import handshake_hop, screen_text
from wsinspect.model import Message, MessageType
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.message_list import MessageList
from wsinspect.ui.pacing import (
    BUSY_ENTER_SAMPLES,
    BUSY_NOTIFY_INTERVAL,
    BUSY_REPAINT_INTERVAL,
    LIVE_NOTIFY_INTERVAL,
    SAMPLE_INTERVAL,
    LoopLoad,
)
from wsinspect.ui.session_view import SessionScreen


class LoopClocks:
    """A wall clock and a CPU clock for LoopLoad, advanced by the test."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def load(self) -> LoopLoad:
        return LoopLoad(cpu_clock=lambda: self.cpu, clock=lambda: self.wall)

    def advance(self, seconds: float, busy: float) -> None:
        self.wall += seconds
        self.cpu += seconds * busy

    def saturate(self, load: LoopLoad) -> None:
        """A second of a fully busy loop, sampled as the app does."""
        for _ in range(BUSY_ENTER_SAMPLES):
            self.advance(SAMPLE_INTERVAL, busy=1.0)
            load.sample()
        assert load.saturated


def test_loop_load_enters_and_leaves_saturation_with_hysteresis():
    clocks = LoopClocks()
    load = clocks.load()
    assert not load.saturated and load.repaint_interval == 0.0
    clocks.advance(1.0, busy=0.85)
    load.sample()
    assert load.busy == 0.85 and not load.saturated, "below the threshold to enter"
    for _ in range(BUSY_ENTER_SAMPLES - 1):
        clocks.advance(SAMPLE_INTERVAL, busy=0.95)
        load.sample()
    assert not load.saturated, "a short burst (building a screen) does not count"
    clocks.advance(SAMPLE_INTERVAL, busy=0.5)
    load.sample()
    for _ in range(BUSY_ENTER_SAMPLES):
        clocks.advance(SAMPLE_INTERVAL, busy=0.95)
        load.sample()
    assert load.saturated and load.repaint_interval == BUSY_REPAINT_INTERVAL
    assert load.notify_interval == BUSY_NOTIFY_INTERVAL
    clocks.advance(1.0, busy=0.7)
    load.sample()
    assert load.saturated, "stays until the load falls clearly"
    clocks.advance(1.0, busy=0.5)
    load.sample()
    assert not load.saturated and load.repaint_interval == 0.0
    assert load.notify_interval == LIVE_NOTIFY_INTERVAL
    load.sample()  # no wall time passed: nothing to measure, nothing changes
    assert load.busy == 0.5


async def feed(store: SessionStore, hop, seconds: float, listing: MessageList) -> set[int]:
    """Add a message every 2 ms for `seconds`; returns the row counts the list showed."""
    seen = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        payload = b"tick %d" % hop.stats.count
        store.add_message(hop, Message(False, MessageType.TEXT, len(payload), payload, time.time()))
        seen.add(listing.row_count)
        await asyncio.sleep(0.002)
    return seen


async def live_session_view(app: WsInspectApp, pilot):
    app.open_session(1)
    await pilot.pause()
    assert isinstance(app.screen, SessionScreen)
    return app.screen.query_one(MessageList)


async def test_saturated_loop_paces_live_repaints_and_loses_nothing():
    store = SessionStore()
    hop = handshake_hop("/feed", time.time())
    store.add_hop(hop)
    store.flush()
    app = WsInspectApp(store)
    clocks = LoopClocks()
    app.loop_load = clocks.load()
    async with app.run_test(size=(120, 30)) as pilot:
        listing = await live_session_view(app, pilot)

        # A loop with time to spare: each of the store's frequent reports extends the list.
        assert store.notify_interval == LIVE_NOTIFY_INTERVAL
        idle_counts = await feed(store, hop, 1.0, listing)
        assert len(idle_counts) >= 15

        clocks.saturate(app.loop_load)
        await wait_for(lambda: store.notify_interval == BUSY_NOTIFY_INTERVAL,
                       what="the app to slow the store's reports")
        busy_counts = await feed(store, hop, 1.0, listing)
        assert len(busy_counts) <= 1 / BUSY_REPAINT_INTERVAL + 2, sorted(busy_counts)
        await pilot.pause(BUSY_REPAINT_INTERVAL + 0.1)
        assert listing.row_count == store.message_count(1), "every message reaches the list"
        assert listing.is_vertical_scroll_end and listing.follow
        await pilot.pause()
        assert f"tick {store.message_count(1) - 1}" in screen_text(app)

        app.screen.query_one("StatusBar").update_status()
        await pilot.pause()
        assert "screen paced" not in screen_text(app), "only with a proxy"
    store.close()


async def test_status_bar_says_when_the_screen_is_paced(start_proxy):
    proxy = await start_proxy()
    app = WsInspectApp(proxy.store, proxy.engine)
    clocks = LoopClocks()
    app.loop_load = clocks.load()
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.pause()
        assert "paced" not in screen_text(app)
        port = proxy.engine.listen_addrs()[0][1]
        assert f" regular 127.0.0.1:{port}" in screen_text(app), "the port is shown once"
        clocks.saturate(app.loop_load)
        app.screen.query_one("StatusBar").update_status()
        await pilot.pause()
        assert "proxy busy, screen paced" in screen_text(app)
