"""`wsinspect demo`: three local sessions through wsinspect and a hop, in the app or as a
report (see wsinspect.demo)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from .. import report
from ..demo import HOST, Demo
from ..errors import WsinspectError
from ..runtime import StopEvent, Stopped, run_until_stopped
from ..text import print_error

log = logging.getLogger("wsinspect.demo")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wsinspect demo",
        description="A healthy, a broken and a chatty WebSocket session through wsinspect on "
        "both sides of an nginx-like hop, all on 127.0.0.1; opens the app on them.",
    )
    p.add_argument("--headless", action="store_true", help="no app: print the report and exit")
    p.add_argument("--port", type=int, metavar="P", help="port of the regular listener")
    p.add_argument(
        "--hop",
        choices=["auto", "python", "nginx"],
        default="auto",
        help="the proxy in the middle: real nginx when installed (auto), or the Python one",
    )
    p.add_argument("-w", dest="capture", metavar="FILE", help="keep the capture in FILE (new)")
    return p


async def run(args: argparse.Namespace) -> int:
    stop = StopEvent()
    try:
        capture = Path(args.capture) if args.capture else None
        async with Demo(hop=args.hop, port=args.port, capture=capture) as demo:
            # Closing the demo's terminal must not leave the CA's key behind either.
            stop.on_hang_up(demo.remove_files, release=None if args.headless else demo.stop)
            print(
                f"wsinspect demo: clients -> wsinspect {HOST}:{demo.proxy_port} -> "
                f"{demo.hop.kind} hop {HOST}:{demo.hop.port} -> wsinspect reverse -> echo backend",
                flush=True,
            )
            if args.headless:
                try:
                    await run_until_stopped(demo.run_clients(), stop)
                except Stopped:
                    return 130
                print(report.report_text(demo.store), flush=True)
            else:
                from ..ui import run_live  # Textual loads only for the app

                clients = asyncio.ensure_future(demo.run_clients())
                clients.add_done_callback(_log_failure)  # the app's log shows it
                await run_live(demo.store, demo.engine, stop)
                clients.cancel()
                await asyncio.gather(clients, return_exceptions=True)
    except (WsinspectError, OSError) as e:
        print_error(str(e), "wsinspect demo")
        return 2
    finally:
        await _let_connections_end()
    return 0


def _log_failure(clients: asyncio.Future) -> None:
    if not clients.cancelled() and clients.exception() is not None:
        log.error("demo clients failed: %s", clients.exception())


async def _let_connections_end() -> None:
    """Give the proxy's connection handlers, whose peers are all closed now, a moment to end:
    asyncio.run would cancel them, and Python 3.11 logs each cancelled stream handler."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=2)


def main(argv: Sequence[str]) -> int:
    return asyncio.run(run(parser().parse_args(argv)))
