"""`wsinspect [OPTIONS]`: run the proxy and the app (or print session events, --headless)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import preflight, report
from ..addresses import DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT
from ..errors import WsinspectError
from ..model import Outcome
from ..runtime import CLOSED_PIPE, StopEvent, new_capture_path, quiet_loop_reports, remove_capture
from ..store import SessionStore, StoreChanges
from ..text import discard_closed_stdout, print_error
from . import commands_text, unknown_command

if TYPE_CHECKING:
    from ..engine import Engine, LogRecord


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsinspect",
        usage="wsinspect [OPTIONS]           run the proxy and the app\n"
        "       wsinspect COMMAND [ARGS]",
        description="Inspect WebSocket sessions through an intercepting proxy.\n\n"
        f"commands:\n{commands_text()}\n\n"
        "wsinspect help COMMAND (or wsinspect COMMAND --help) shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mode",
        action="append",
        metavar="SPEC",
        help="mitmproxy mode spec, repeatable: regular, transparent, reverse:URL[@PORT], "
        "regular@PORT … (default: regular)",
    )
    parser.add_argument(
        "--listen-host", default=DEFAULT_LISTEN_HOST, metavar="HOST",
        help="address the listeners bind to; beyond loopback, set proxyauth "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--listen-port", type=int, default=DEFAULT_LISTEN_PORT, metavar="PORT",
        help="port of the first listener, 0 for one the OS picks (default: %(default)s)",
    )
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
        help="set a mitmproxy or wsinspect option, e.g. ssl_insecure=true",
    )
    parser.add_argument(
        "-w", dest="capture", metavar="FILE",
        help="capture file to write, a new one (default: a temporary file)",
    )
    parser.add_argument(
        "--confdir", default="~/.mitmproxy", metavar="DIR",
        help="mitmproxy's confdir, where its CA is (default: %(default)s)",
    )
    parser.add_argument("--headless", action="store_true", help="no app: print session events")
    return parser


CLIENT_TLS_FAILED = "Client TLS handshake failed."


class HeadlessPrinter:
    """Prints a line when an upgrade attempt appears, whenever a session's outcome or hops
    change, and for the proxy's own warnings and errors. When stdout is closed (`| head`) it
    sets `stop`: the proxy ends as if interrupted."""

    def __init__(self, store: SessionStore, stop: asyncio.Event) -> None:
        self.store = store
        self.stop = stop
        self.output_closed = False
        self._printed: dict[int, tuple[Outcome, int, int | None]] = {}

    def __call__(self, changes: StoreChanges) -> None:
        for session_id in sorted(changes.added):
            self._print(report.upgrade_line(self.store.session(session_id)))
        for session_id in sorted(changes.added | changes.updated):
            session = self.store.session(session_id)
            state = (session.outcome, len(session.hops), session.status)
            if state[::2] == (Outcome.OPEN, None):
                continue  # the handshake is still under way
            if self._printed.get(session_id) != state:
                self._printed[session_id] = state
                self._print(report.event_line(session))

    def log_record(self, record: LogRecord) -> None:
        if record.level in ("warning", "error", "critical"):
            self._print(report.log_line(record.timestamp, record.level, record.message))
        elif record.message.startswith(CLIENT_TLS_FAILED):
            # mitmproxy logs it at info when the client hangs up instead of sending an alert,
            # the usual way a client that does not trust the CA fails
            self._print(report.log_line(record.timestamp, "warning", record.message))

    def _print(self, line: str) -> None:
        if self.output_closed:
            return
        try:
            print(line, flush=True)
        except OSError:  # a closed pipe; EIO from a terminal that went away
            self.output_closed = True
            discard_closed_stdout()
            self.stop.set()


async def run(args: argparse.Namespace) -> int:
    # The proxy core loads once the arguments are read: `wsinspect --help` does without it.
    from ..engine import Engine

    try:
        store = SessionStore(new_capture_path(args.capture))
    except (WsinspectError, OSError) as e:
        print_error(str(e))
        return 2
    engine = Engine(
        store,
        args.mode or ["regular"],
        listen_host=args.listen_host,
        listen_port=args.listen_port,
        confdir=args.confdir,
        settings=args.settings,
    )
    stop = StopEvent()
    try:
        await engine.start()
    except WsinspectError as e:
        print_error(str(e))
        # empty, and in the way of the corrected command (`-w` refuses an existing file)
        store.close()
        remove_capture(store.path)
        return 2
    stopped = False

    async def stop_proxy() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            await engine.stop()
            store.close()
            quiet_loop_reports(asyncio.get_running_loop())
        forget_unnamed_capture()

    def forget_unnamed_capture() -> None:
        """A temporary capture whose path can no longer be told to anyone goes."""
        if stop.output_lost and not args.capture:
            remove_capture(store.path)

    stop.on_hang_up(release=stop_proxy, if_stuck=forget_unnamed_capture)
    startup_records = list(engine.logs.records)  # the app shows them in its log
    try:
        output_closed = await _serve(args, engine, store, stop, startup_records)
    finally:
        await stop_proxy()
    recorded = report.plural(len(store.sessions()), "session")
    print(f"wsinspect: {recorded} recorded to {store.path}", flush=True)
    return CLOSED_PIPE if output_closed else 0


async def _serve(
    args: argparse.Namespace,
    engine: Engine,
    store: SessionStore,
    stop: asyncio.Event,
    startup_records: list[LogRecord],
) -> bool:
    """Announce the listeners, then run the app or print events until `stop`; returns
    whether stdout was closed under headless mode."""
    for spec, addrs in engine.servers():
        listening = ", ".join(f"{h}:{p}" for h, p in addrs)
        print(f"wsinspect: {spec} proxy listening at {listening}", flush=True)
    for result in preflight.run_for_servers(engine.servers()):
        preflight.log(result)  # engine.logs keeps it for the app
        if args.headless:
            print("\n".join(f"wsinspect: {line}" for line in result.lines()), flush=True)
    # proxyauth does not apply to transparent listeners: they only take redirected traffic.
    transparent = preflight.transparent_listeners(engine.servers())
    if engine.exposed_without_auth() and len(transparent) < len(engine.servers()):
        print(
            "wsinspect: warning: listening beyond loopback without proxy authentication; "
            "anyone who reaches this port can use the proxy (--set proxyauth=USER:PASS)",
            file=sys.stderr,
            flush=True,
        )
    print(f"wsinspect: recording to {store.path}", flush=True)
    if not args.headless:
        from ..ui import run_live  # Textual loads only for the app

        await run_live(store, engine, stop)
        return False
    printer = HeadlessPrinter(store, stop)
    for record in startup_records:
        printer.log_record(record)
    store.subscribe(printer)
    engine.logs.listeners.append(printer.log_record)
    await stop.wait()
    return printer.output_closed


def main(argv: Sequence[str]) -> int:
    parsing = parser()
    args, extra = parsing.parse_known_args(argv)
    if extra:
        if not extra[0].startswith("-"):
            return unknown_command(extra[0])
        parsing.error(f"unrecognized arguments: {' '.join(extra)}")
    return asyncio.run(run(args))
