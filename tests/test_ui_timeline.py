"""The Timeline tab: live, on a session through a real wsinspect between a real websockets
client and server (pings answered, a silence); a real nginx's idle timeout marked with the
finding's own figure; and snapshots at 80x24 and 200x50 of a session with known rates, a
silence and an idle-timeout cut.

Update the snapshots after an intended change with
`pytest tests/test_ui_timeline.py --snapshot-update` and look at the SVGs in
tests/__snapshots__/test_ui_timeline/."""

from __future__ import annotations

import asyncio
import re

import pytest
from textual.widgets import Sparkline
from websockets.asyncio.client import connect

from tests.conftest import wait_for
from tests.proxy_servers import NGINX_FIXED
from tests.test_nginx import answered, both_sides, start_nginx  # noqa: F401 (fixtures)
from tests.test_ui import open_first_session
from tests.test_ui_keyboard import footer_line
from tests.ui_helpers import T0, handshake_hop, screen_text
from wsinspect import diagnosis
from wsinspect.model import Close, Message, MessageType, Outcome
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.format import milliseconds
from wsinspect.ui.timeline import TimelineView

SIZES = {"80x24": (80, 24), "200x50": (200, 50)}
SILENCE_SECONDS = 1.2


def timeline_view(app) -> TimelineView:
    return app.screen.query_one(TimelineView)


async def read_to_the_end(app) -> None:
    view = timeline_view(app)
    session = app.store.session(view.session_id)
    await wait_for(lambda: view.timeline.count == session.first_hop.stats.count
                   and not view._reading, what="the timeline to read every message")


async def test_the_timeline_follows_a_live_session_with_pings_and_a_silence(
    start_proxy, echo_server
):
    proxy = await start_proxy(settings=["wsinspect_relay=raw"])
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=(80, 24)) as pilot, connect(
        f"ws://127.0.0.1:{echo_server}/live", proxy=proxy.url, ping_interval=None
    ) as ws:
        sent = [f"tick {i}" for i in range(20)]
        for text in sent:  # a burst, each echoed, with a ping answered every fourth
            await ws.send(text)
            assert await ws.recv() == text  # the peer got the same bytes back through it
            if text.endswith(("0", "4", "8")):
                await (await ws.ping(text.encode()))
        screen = await open_first_session(app, pilot)
        await pilot.press("t")
        await read_to_the_end(app)
        session = proxy.store.session(screen.session_id)
        assert session.ping_rtt.count == 6  # after ticks 0, 4, 8, 10, 14 and 18
        await pilot.pause(0.2)
        text = screen_text(app)
        for label in ("msgs/s C→S", "msgs/s S→C", "bytes/s C→S", "bytes/s S→C", "ping RTT"):
            assert label in text
        figures = timeline_view(app).timeline.figures(None)
        assert figures.rtt.count == 6 and figures.rtt.max == session.ping_rtt.max
        assert f"p50 {milliseconds(figures.rtt.p50)}" in text
        assert f"6 pings answered: round trip p50 {milliseconds(figures.rtt.p50)}" in text
        assert figures.peak_client.messages >= 20  # messages and pings, within a second

        # The silence: nothing either way. The chart reaches to now, and says so.
        await asyncio.sleep(SILENCE_SECONDS)
        ongoing_silence = r"━ silent (\d+\.\d\d) s from \+\d+\.\d s — and counting"
        await wait_for(lambda: re.search(ongoing_silence, screen_text(app)),
                       what="a redraw of the open session's chart")
        text = screen_text(app)
        ongoing = re.search(ongoing_silence, text)
        assert ongoing and float(ongoing[1]) >= SILENCE_SECONDS
        assert re.search(r"silences +·*━+ max \d+\.\d\d s", text)  # marked up to now

        await ws.send("after the silence")
        assert await ws.recv() == "after the silence"
        await (await ws.ping(b"after"))
        await wait_for(lambda: session.first_hop.stats.count == 20 * 2 + 6 * 2 + 2 + 2,
                       what="the messages after the silence")
        await read_to_the_end(app)
        longest = timeline_view(app).timeline.figures(None).max_silence
        before, after = proxy.store.messages(session.id, 51, 53)  # either side of it
        assert after.payload == b"after the silence"
        assert longest.start == before.timestamp
        assert longest.seconds == after.timestamp - before.timestamp >= SILENCE_SECONDS
        await wait_for(lambda: f"max {longest.seconds:.2f} s" in screen_text(app),
                       what="the chart redrawn with the ended silence")
        # That silence has ended (a new one may be counting by now on a slow machine).
        (line,) = [line for line in screen_text(app).splitlines()
                   if f"silent {longest.seconds:.2f} s" in line]
        assert "and counting" not in line
        sparkline = app.screen.query_one("#client-messages", Sparkline)
        assert len(sparkline.data) == sparkline.size.width  # one value a column
        assert any(timeline_view(app).timeline.series(sparkline.size.width,
                                                      app.clock()).silent)
    await proxy.wait_session(lambda s: s.close is not None)


@pytest.mark.nginx
async def test_a_real_nginx_idle_timeout_is_marked_with_the_findings_figure(
    both_sides,  # noqa: F811 (the fixture imported above)
):
    """client -> wsinspect -> nginx (proxy_read_timeout 2s) -> wsinspect -> echo server:
    pings answered, then silence until nginx cuts both of its connections."""
    proxy, nginx, _ = await both_sides(NGINX_FIXED + "proxy_set_header Host $http_host;",
                                       read_timeout="2s")
    async with connect(f"ws://127.0.0.1:{nginx.port}/quiet", proxy=proxy.url,
                       ping_interval=None) as ws:
        for i in range(3):
            await ws.send(f"then silence {i}")
            assert await ws.recv() == f"then silence {i}"
            await (await ws.ping())
        await asyncio.wait_for(ws.wait_closed(), 10)
    session = await proxy.wait_session(answered(2))
    (finding,) = [f for f in diagnosis.diagnose(session) if f.code == "idle-timeout"]
    figure = finding.message.split("No frame passed for ")[1].split(" s")[0]

    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_first_session(app, pilot)
        await pilot.press("t")
        await read_to_the_end(app)
        await wait_for(lambda: f"▓ silent {figure} s from +" in screen_text(app),
                       what="the timeline drawn")
        text = screen_text(app)
        assert "then cut: a proxy's idle timeout (Findings)" in text
        assert re.search(rf"silences +[·━]*▓+ max {re.escape(figure)} s", text)
        if session.ping_rtt is not None:  # the raw relay pairs pongs with pings
            assert re.search(r"ping RTT .* p50 \d+\.\d ms", text)


def timeline_store() -> SessionStore:
    """A session of 110 s: both ways at 5/s for 20 s, a burst from the client to 30 s, 12 s
    of silence, the server alone at 2.5/s from 42 s to 50 s, pings throughout, and then
    nothing for 60 s until the server's connection is reset: an idle timeout."""
    store = SessionStore()
    hop = handshake_hop("/feed", T0)
    store.add_hop(hop)
    events = []
    for k in range(100):
        at = T0 + 0.1 + k * 0.2
        events += [(at, True, MessageType.TEXT, 100, None),
                   (at + 0.05, False, MessageType.TEXT, 1000, None)]
    events += [(T0 + 20 + k * 0.02, True, MessageType.TEXT, 200, None) for k in range(500)]
    events += [(T0 + 42 + k * 0.4, False, MessageType.TEXT, 5000, None) for k in range(21)]
    for k, at in enumerate([T0 + 1 + k * 2 for k in range(15)] + [T0 + 45, T0 + 49.5]):
        rtt = 0.010 + (k % 5) * 0.004 if k < 15 else 0.050
        events += [(at, True, MessageType.PING, 4, None), (at + rtt, False, MessageType.PONG, 4, rtt)]
    for at, from_client, kind, size, rtt in sorted(events):
        store.add_message(hop, Message(from_client, kind, size, b"x" * min(size, 16), at, rtt=rtt))
    hop.outcome = Outcome.CLOSED
    hop.timestamp_end = T0 + 110
    hop.close = Close(by="server", abnormal=True, abnormal_reason="the server's connection was reset",
                      timestamp=T0 + 110)
    store.hop_changed(hop)
    store.flush()
    return store


def test_the_snapshot_session_has_the_idle_timeout_it_shows():
    (session,) = timeline_store().sessions()
    (finding,) = [f for f in diagnosis.diagnose(session) if f.code == "idle-timeout"]
    assert "No frame passed for 60.00 s" in finding.message


@pytest.fixture(params=SIZES.values(), ids=SIZES.keys())
def size(request):
    return request.param


def test_timeline_tab(snap_compare, size):
    async def open_timeline(pilot) -> None:
        await pilot.press("enter", "t")
        await read_to_the_end(pilot.app)
        await pilot.pause(0.1)

    app = WsInspectApp(timeline_store(), clock=lambda: T0 + 120)
    assert snap_compare(app, terminal_size=size, run_before=open_timeline)


async def test_t_opens_the_timeline_whose_footer_offers_the_tabs_and_not_the_message_keys():
    app = WsInspectApp(timeline_store(), clock=lambda: T0 + 120)
    async with app.run_test(size=SIZES["80x24"]) as pilot:
        await pilot.press("enter", "t")
        await read_to_the_end(app)
        await pilot.pause()
        view = timeline_view(app)
        assert view.has_focus and view.started
        footer = footer_line(app)
        assert "h m a i b t Tabs" in footer and "x Export" in footer
        for message_keys in ("Resend", "Copy", "Save", "View"):
            assert message_keys not in footer, footer
        await pilot.press("m")  # and back: the chart is kept, not read again
        await pilot.press("t")
        await pilot.pause()
        assert timeline_view(app).timeline.count == 755


def test_timeline_tab_light_theme(snap_compare):
    async def open_timeline(pilot) -> None:
        await pilot.press("t", "enter", "t")  # the light theme, then the session's timeline
        await read_to_the_end(pilot.app)
        await pilot.pause(0.1)

    app = WsInspectApp(timeline_store(), clock=lambda: T0 + 120)
    assert snap_compare(app, terminal_size=SIZES["80x24"], run_before=open_timeline)




def test_a_short_sessions_column_is_named_in_milliseconds():
    from wsinspect.ui.timeline import column_text

    assert column_text(0.0183) == "18.3 ms"  # a 4 s session over 220 columns: not "0.0 s"
    assert column_text(0.5) == "0.5 s" and column_text(725) == "12m05s"
