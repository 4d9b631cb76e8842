"""Screenshots of wsinspect's main screens, from real sessions through a real proxy.

Run after any UI change:

    .venv/bin/python screenshots/make_screenshots.py [--out DIR]

It starts `wsinspect demo`'s setup on loopback (an Engine with a temporary mitmproxy confdir,
listeners either side of nginx or its Python stand-in), sends scripted sessions through it (a
healthy one with text, JSON, binary and ping frames, one whose upgrade the backend rejects, one
broken by the hop's plain proxy_pass), opens the app with Textual's Pilot at 120x36 and saves
each screen as SVG, then as PNG with rsvg-convert. Tabs the app does not have yet are skipped
with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from wsinspect.demo import Demo, DemoError, broken_session
from wsinspect.engine import Engine, EngineError
from wsinspect.model import MessageType, Outcome
from wsinspect.runtime import StopEvent, Stopped, run_until_stopped
from wsinspect.store import SessionStore

HOST = "127.0.0.1"
SIZE = (120, 36)
HERE = Path(__file__).resolve().parent
SETTLE_TIMEOUT = 15.0
PNG_ZOOM = 0.85  # 1260 pixels wide: readable, and each PNG stays under 300 KB
# Session view tabs shown on the broken two-hop session; skipped when the app has no such tab.
EXTRA_TABS = {"findings": "findings", "hops": "hop diff"}  # tab id: what it shows
REPLAY_DIALOG = "#comparison-dialog"  # what the app shows when a replay is done
REPLAY_TIMEOUT = 15.0

SUBSCRIBE = {"op": "subscribe", "topics": ["prices", "news"], "snapshot": True, "depth": 5}
RPC_DELAYS = {"quote": 0.004, "history": 0.03, "orders": 0.012}  # seconds, per method
RPC_BURSTS = 14
RPC_SILENCE = 1.2  # seconds without a frame in the middle of the JSON-RPC session
QUOTE = {"symbol": "ACME", "bid": 101.25, "ask": 101.5, "venues": ["XNAS", "ARCX"]}


class ScreenshotError(Exception):
    """The screenshots could not be made; the message says why in one line."""


# ----- the backend and the clients -----------------------------------------------------------


def quote_server():
    """A handler that echoes, and answers a subscription with a quote whose sequence number
    grows from one connection to the next (so a replay's answers differ from the original's)."""
    sequence = itertools.count(1)

    async def handler(ws) -> None:
        async for message in ws:
            if isinstance(message, str) and '"jsonrpc"' in message:
                await answer_call(ws, json.loads(message))
            elif isinstance(message, str) and message.startswith("{") and "subscribe" in message:
                await ws.send(json.dumps({"seq": next(sequence), **QUOTE}))
            else:
                await ws.send(message)

    return handler


async def answer_call(ws, call: dict) -> None:
    """JSON-RPC: each call answered after a delay of its own; `watch` is never answered."""
    if call["method"] == "watch":
        return
    await asyncio.sleep(RPC_DELAYS[call["method"]])
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": {"ok": True}}))


def reject_unknown_paths(connection, request):
    if request.path.startswith("/chat"):
        return None
    return Response(403, "Forbidden", Headers([("Content-Length", "0")]), b"")


async def healthy_session(proxy_url: str, backend_port: int) -> None:
    async with connect(
        f"ws://{HOST}:{backend_port}/chat?room=lobby", proxy=proxy_url, subprotocols=["chat"]
    ) as ws:
        await ws.send("hello from the screenshot script")
        await ws.recv()
        await ws.send(json.dumps(SUBSCRIBE))
        await ws.recv()
        await ws.send(bytes(range(48)))
        await ws.recv()
        await (await ws.ping(b"are you there"))
        await ws.send("bye")
        await ws.recv()


async def rpc_session(proxy_url: str, backend_port: int) -> None:
    """A JSON-RPC client over a few seconds: bursts of calls, pings, a silence, a call never
    answered (the Timeline and Calls tabs)."""
    async with connect(
        f"ws://{HOST}:{backend_port}/chat/rpc", proxy=proxy_url, subprotocols=["chat"]
    ) as ws:
        ids = itertools.count(1)
        for burst in range(RPC_BURSTS):
            for method in RPC_DELAYS:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": next(ids), "method": method}))
            for _ in RPC_DELAYS:
                await ws.recv()
            await (await ws.ping(b"%d" % burst))
            await asyncio.sleep(RPC_SILENCE if burst == RPC_BURSTS // 2 else 0.15)
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": next(ids), "method": "watch"}))
        await asyncio.sleep(0.3)


async def rejected_session(proxy_url: str, backend_port: int) -> None:
    with contextlib.suppress(InvalidStatus):
        async with connect(f"ws://{HOST}:{backend_port}/admin", proxy=proxy_url):
            raise ScreenshotError("the backend accepted /admin, which it should refuse")


# ----- the scenario --------------------------------------------------------------------------


def _all_ended(store: SessionStore, expected: int) -> bool:
    sessions = store.sessions()
    return len(sessions) >= expected and all(
        h.outcome is not Outcome.OPEN for s in sessions for h in s.hops
    )


async def settled(store: SessionStore, expected: int) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not _all_ended(store, expected):
        if time.monotonic() > deadline:
            raise ScreenshotError("the scripted sessions were not all recorded in time")
        await asyncio.sleep(0.05)
    store.flush()


@contextlib.asynccontextmanager
async def scenario() -> AsyncIterator[tuple[SessionStore, Engine]]:
    """The store and engine of `wsinspect demo` (two listeners either side of an nginx-like
    hop) after the scripted sessions."""
    async with serve(
        quote_server(), HOST, 0, process_request=reject_unknown_paths, subprotocols=["chat"]
    ) as backend:
        backend_port = backend.sockets[0].getsockname()[1]
        async with Demo(hop="auto") as lab:  # its store and confdir are temporary
            proxy_url = f"http://{HOST}:{lab.proxy_port}"
            await healthy_session(proxy_url, backend_port)
            await rejected_session(proxy_url, backend_port)
            await broken_session(lab.proxy_port, lab.hop.port)
            await rpc_session(proxy_url, backend_port)
            await settled(lab.store, 4)
            yield lab.store, lab.engine


# ----- the screens ---------------------------------------------------------------------------


def message_index(store: SessionStore, session_id: int, predicate) -> int:
    messages = store.messages(session_id, 0, store.session(session_id).stats.count)
    return next(m.index for m in messages if predicate(m))


def is_pretty_json_reply(message) -> bool:
    return not message.from_client and message.type is MessageType.TEXT and b"venues" in (
        message.payload
    )


async def shoot(store: SessionStore, engine: Engine, out: Path) -> list[Path]:
    from textual.widgets import TabbedContent, TabPane

    from wsinspect.ui import WsInspectApp
    from wsinspect.ui.message_list import MessageList
    from wsinspect.ui.session_view import SessionScreen
    from wsinspect.ui.sessions import SessionsTable
    from wsinspect.ui.timeline import TimelineView

    sessions = store.sessions()
    healthy = next(s for s in sessions if s.status == 101)
    broken = next(s for s in sessions if len(s.hops) > 1 and s.status != 101)
    rpc = next(s for s in sessions if s.url.endswith("/chat/rpc"))
    # A fixed clock: durations and "last activity" read the same on every run.
    now = max(s.last_activity for s in sessions) + 5
    app = WsInspectApp(store, engine, clock=lambda: now)
    saved: list[Path] = []

    async with app.run_test(size=SIZE) as pilot:

        async def save(name: str) -> None:
            await pilot.pause()
            await pilot.wait_for_scheduled_animations()
            await pilot.pause()
            app.save_screenshot(filename=f"{name}.svg", path=str(out))
            saved.append(out / f"{name}.svg")

        async def open_session(session_id: int) -> SessionScreen:
            if isinstance(app.screen, SessionScreen):
                await pilot.press("escape")
            table = app.screen.query_one(SessionsTable)
            table.move_cursor(row=table.get_row_index(str(session_id)))
            await pilot.press("enter")
            await pilot.pause()
            return app.screen

        async def until(done, what: str) -> None:
            deadline = time.monotonic() + SETTLE_TIMEOUT
            while not done():
                if time.monotonic() > deadline:
                    raise ScreenshotError(f"{what} did not fill in in time")
                await pilot.pause(0.05)

        async def show_tab(screen: SessionScreen, tab: str) -> None:
            screen.query_one("#session-tabs", TabbedContent).active = tab
            await pilot.pause()

        await pilot.pause()
        table = app.screen.query_one(SessionsTable)
        table.move_cursor(row=table.get_row_index(str(healthy.id)))
        await save("sessions")

        screen = await open_session(healthy.id)
        await show_tab(screen, "handshake")
        await save("handshake")

        screen.action_show_tab("messages")
        message_list = screen.query_one(MessageList)
        message_list.move_cursor(message_index(store, healthy.id, is_pretty_json_reply))
        await save("messages")

        screen = await open_session(broken.id)
        tabs = [pane.id for pane in screen.query(TabPane)]
        for tab, what in EXTRA_TABS.items():
            found = next((t for t in tabs if t and tab in t), None)
            if found is None:
                print(f"note: no {tab}.png: the session view has no {what} tab yet")
                continue
            await show_tab(screen, found)
            await save(tab)

        screen = await open_session(rpc.id)
        count = store.session(rpc.id).first_hop.stats.count
        screen.action_show_tab("timeline")
        chart = screen.query_one(TimelineView)
        await until(lambda: chart.timeline.count == count, "the timeline")
        await save("timeline")
        screen.action_show_tab("calls")
        await until(lambda: screen.query_one(MessageList).track.decoded == count, "the calls")
        screen.action_show_tab("calls")  # the list as decoded
        await save("calls")

        screen = await open_session(healthy.id)
        if not callable(getattr(screen, "action_replay", None)):
            print("note: no replay.png: the session view cannot replay yet")
            return saved
        screen.query_one(MessageList).move_cursor(
            message_index(store, healthy.id, is_pretty_json_reply)
        )
        screen.action_replay()
        deadline = time.monotonic() + REPLAY_TIMEOUT
        while not app.screen.query(REPLAY_DIALOG):
            if time.monotonic() > deadline:
                raise ScreenshotError("the replay's comparison did not appear in time")
            await pilot.pause(0.05)
        await save("replay")
    return saved


def to_png(svg: Path) -> Path:
    # Rich writes spaces as no-break spaces, one <text> per run of a style; without
    # xml:space="preserve", rsvg-convert drops those at the start of a run ("Hop 1regular").
    source = svg.read_text()
    if 'xml:space="preserve"' not in source:
        svg.write_text(source.replace("<svg ", '<svg xml:space="preserve" ', 1))
    png = svg.with_suffix(".png")
    subprocess.run(["rsvg-convert", "--zoom", str(PNG_ZOOM), "-o", str(png), str(svg)], check=True)
    return png


async def make(out: Path, keep_svg: bool) -> list[Path] | None:
    """The PNGs, or None when SIGINT/SIGTERM stopped the run (everything cleaned up)."""
    try:
        return await run_until_stopped(make_pngs(out, keep_svg), StopEvent())
    except Stopped:
        return None


async def make_pngs(out: Path, keep_svg: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    async with scenario() as (store, engine):
        svgs = await shoot(store, engine, out)
    pngs = [to_png(svg) for svg in svgs]
    if not keep_svg:
        for svg in svgs:
            svg.unlink()
    return pngs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go (default: here)")
    parser.add_argument("--svg", action="store_true", help="keep the SVGs next to the PNGs")
    args = parser.parse_args(argv)
    if shutil.which("rsvg-convert") is None:
        print("make_screenshots: rsvg-convert is not installed (librsvg2-bin)", file=sys.stderr)
        return 2
    os.environ["TZ"] = "UTC"  # times on screen in UTC, whatever the machine's zone
    time.tzset()
    try:
        pngs = asyncio.run(make(args.out, args.svg))
    except (ScreenshotError, DemoError, EngineError, OSError, subprocess.CalledProcessError) as e:
        print(f"make_screenshots: {e}", file=sys.stderr)
        return 2
    if pngs is None:
        return 130
    for png in pngs:
        print(f"{png} {png.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
