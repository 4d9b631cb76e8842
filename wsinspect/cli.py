"""The `wsinspect` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import demo, gateway, preflight, replay, report
from .engine import DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT, Engine, EngineError
from .formats import command as export_command
from .formats import open_capture
from .model import Outcome
from .store import CaptureError, SessionStore, StoreChanges, temporary_capture_path


def proxy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsinspect",
        description="Inspect WebSocket sessions through an intercepting proxy. "
        "Other commands: wsinspect report FILE, wsinspect open FILE, wsinspect export FILE.",
    )
    parser.add_argument(
        "--mode",
        action="append",
        metavar="SPEC",
        help="mitmproxy mode spec, repeatable: regular, transparent, reverse:URL[@PORT], "
        "regular@PORT … (default: regular)",
    )
    parser.add_argument("--listen-host", default=DEFAULT_LISTEN_HOST, metavar="H")
    parser.add_argument("--listen-port", type=int, default=DEFAULT_LISTEN_PORT, metavar="P")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
        help="set a mitmproxy or wsinspect option, e.g. ssl_insecure=true",
    )
    parser.add_argument("-w", dest="capture", metavar="FILE", help="capture file to write (new)")
    parser.add_argument("--confdir", default="~/.mitmproxy", help="mitmproxy's confdir (its CA)")
    parser.add_argument("--headless", action="store_true", help="no app: print session events")
    return parser


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsinspect report", description="Report a capture.")
    parser.add_argument("file")
    parser.add_argument("--json", action="store_true", help="wsinspect-report/1 JSON")
    parser.add_argument(
        "--fail-on",
        choices=["error", "warning"],
        help="exit 1 when a finding of this severity (or worse) exists, e.g. in CI",
    )
    return parser


def _new_capture_path(path: str | None) -> Path:
    if path:
        return Path(path)
    return temporary_capture_path()


def install_stop_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM stop cleanly. Handlers on the loop also work when the process was
    started with `&` by a script, where SIGINT is ignored and Python raises no
    KeyboardInterrupt."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


class HeadlessPrinter:
    """Prints a line when an upgrade attempt appears, and whenever a session's outcome or
    hops change."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self._printed: dict[int, tuple[Outcome, int, int | None]] = {}

    def __call__(self, changes: StoreChanges) -> None:
        for session_id in sorted(changes.added):
            print(report.upgrade_line(self.store.session(session_id)), flush=True)
        for session_id in sorted(changes.added | changes.updated):
            session = self.store.session(session_id)
            state = (session.outcome, len(session.hops), session.status)
            if state[::2] == (Outcome.OPEN, None):
                continue  # the handshake is still under way
            if self._printed.get(session_id) != state:
                self._printed[session_id] = state
                print(report.event_line(session), flush=True)


async def run_proxy(args: argparse.Namespace) -> int:
    try:
        store = SessionStore(_new_capture_path(args.capture))
    except (CaptureError, OSError) as e:
        print(f"wsinspect: {e}", file=sys.stderr)
        return 2
    engine = Engine(
        store,
        args.mode or ["regular"],
        listen_host=args.listen_host,
        listen_port=args.listen_port,
        confdir=args.confdir,
        settings=args.settings,
    )
    stop = asyncio.Event()
    install_stop_handlers(asyncio.get_running_loop(), stop)
    try:
        await engine.start()
    except EngineError as e:
        print(f"wsinspect: {e}", file=sys.stderr)
        store.close()
        return 2
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
    if args.headless:
        store.subscribe(HeadlessPrinter(store))
        await stop.wait()
    else:
        from .ui import run_live  # Textual loads only for the app

        await run_live(store, engine, stop)
    await engine.stop()
    store.close()
    print(f"wsinspect: {len(store.sessions())} session(s) recorded to {store.path}", flush=True)
    return 0


def run_report(argv: Sequence[str]) -> int:
    args = report_parser().parse_args(argv)
    try:
        store = open_capture(args.file)
    except CaptureError as e:
        print(f"wsinspect: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.report_json(store), indent=2))
    else:
        print(report.report_text(store))
    if args.fail_on and report.has_findings(store, args.fail_on):
        return 1
    return 0


def run_open(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="wsinspect open", description="Browse a capture.")
    parser.add_argument("file")
    args = parser.parse_args(argv)
    try:
        store = open_capture(args.file)
    except CaptureError as e:
        print(f"wsinspect: {e}", file=sys.stderr)
        return 2
    from .ui import WsInspectApp  # Textual loads only for the app

    app = WsInspectApp(store)
    app.run()
    store.close()
    return app.return_code or 0


COMMANDS = {
    "report": run_report,
    "open": run_open,
    "replay": replay.main,
    "gateway": gateway.main,
    "export": export_command.main,
    "demo": demo.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    args = proxy_parser().parse_args(argv)
    return asyncio.run(run_proxy(args))


if __name__ == "__main__":
    sys.exit(main())
