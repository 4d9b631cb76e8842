"""The `wsinspect` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import demo, gateway, hello, preflight, replay, report
from .addresses import DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT
from .engine import Engine, EngineError, LogRecord
from .formats import command as export_command
from .formats import open_capture
from .model import Outcome
from .store import CaptureError, SessionStore, StoreChanges, temporary_capture_path
from .text import discard_closed_stdout, print_error, terminal_output


@dataclass(frozen=True, slots=True)
class Command:
    run: Callable[[Sequence[str]], int]
    usage: str  # after "wsinspect "
    summary: str  # one line for `wsinspect --help`


def commands_text() -> str:
    width = max(len(c.usage) for c in COMMANDS.values())
    return "\n".join(f"  {c.usage:<{width}}  {c.summary}" for c in COMMANDS.values())


def proxy_parser() -> argparse.ArgumentParser:
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


def _new_capture_path(path: str | None) -> Path:
    if path:
        return Path(path)
    return temporary_capture_path()


def _discard_capture(store: SessionStore) -> None:
    """Remove the capture a failed start made: empty, and in the way of the corrected
    command (`-w` refuses an existing file)."""
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store.path}{suffix}").unlink(missing_ok=True)


def install_stop_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGINT, SIGTERM and SIGHUP (its terminal closed) stop cleanly. Handlers on the loop
    also work when the process was started with `&` by a script, where SIGINT is ignored and
    Python raises no KeyboardInterrupt."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)


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


def ignore_cancelled_connection_handlers(loop: asyncio.AbstractEventLoop) -> None:
    """Connections still open when the proxy stops are cancelled by asyncio.run; Python 3.11's
    asyncio.start_server then reports each as "Exception in callback …" with a CancelledError
    traceback (3.12 checks for cancellation). Reports of a CancelledError are dropped."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if not isinstance(context.get("exception"), asyncio.CancelledError):
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


async def run_proxy(args: argparse.Namespace) -> int:
    try:
        store = SessionStore(_new_capture_path(args.capture))
    except (CaptureError, OSError) as e:
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
    stop = asyncio.Event()
    install_stop_handlers(asyncio.get_running_loop(), stop)
    try:
        await engine.start()
    except EngineError as e:
        print_error(str(e))
        _discard_capture(store)
        return 2
    startup_records = list(engine.logs.records)  # the app shows them in its log
    try:
        output_closed = await _serve(args, engine, store, stop, startup_records)
    finally:
        await engine.stop()
        store.close()
        ignore_cancelled_connection_handlers(asyncio.get_running_loop())
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
        from .ui import run_live  # Textual loads only for the app

        await run_live(store, engine, stop)
        return False
    printer = HeadlessPrinter(store, stop)
    for record in startup_records:
        printer.log_record(record)
    store.subscribe(printer)
    engine.logs.listeners.append(printer.log_record)
    await stop.wait()
    return printer.output_closed


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsinspect report",
        description="What a capture holds (wsinspect, mitmproxy flows or HAR): each session's "
        "hops, messages, end and findings with fixes.",
    )
    parser.add_argument("file")
    parser.add_argument("--json", action="store_true", help="wsinspect-report/1 JSON")
    parser.add_argument(
        "--fail-on",
        choices=["error", "warning"],
        help="exit 1 when a finding of this severity (or worse) exists, e.g. in CI",
    )
    return parser


def run_report(argv: Sequence[str]) -> int:
    args = report_parser().parse_args(argv)
    try:
        store = open_capture(args.file)
    except CaptureError as e:
        print_error(str(e))
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
        print_error(str(e))
        return 2
    from .ui import WsInspectApp  # Textual loads only for the app

    app = WsInspectApp(store)
    app.run()
    store.close()
    return app.return_code or 0


def run_help(argv: Sequence[str]) -> int:
    """`wsinspect help [COMMAND [SUBCOMMAND]]`."""
    if not argv or argv[0] == "help":
        proxy_parser().print_help()
        return 0
    if argv[0] not in COMMANDS:
        return unknown_command(argv[0])
    try:
        return COMMANDS[argv[0]].run([*argv[1:], "--help"])
    except SystemExit as e:  # argparse's --help
        return e.code or 0


def unknown_command(word: str) -> int:
    if word in COMMANDS:  # e.g. `wsinspect -w cap.db report …`
        print_error(f"a command comes first, before any option: wsinspect {word} …")
        return 2
    print_error(
        f"{word!r} is not a wsinspect command; the commands are "
        f"{', '.join(COMMANDS)} (wsinspect --help lists them)"
    )
    return 2


COMMANDS = {
    "report": Command(run_report, "report FILE", "a capture's sessions and findings (--json)"),
    "open": Command(run_open, "open FILE", "browse a capture in the app"),
    "export": Command(
        export_command.main, "export FILE -o OUT", "a capture as HAR, flows or JSON lines"
    ),
    "replay": Command(
        replay.main, "replay FILE SESSION_ID", "replay a session, compare the answers"
    ),
    "hello": Command(
        hello.main, "hello [--proxy HOST:PORT]", "send a test session through wsinspect"
    ),
    "demo": Command(demo.main, "demo", "three local sessions, wsinspect and nginx"),
    "gateway": Command(
        gateway.main, "gateway setup|teardown|check", "a lab gateway for transparent mode"
    ),
    "help": Command(run_help, "help [COMMAND]", "wsinspect's or a command's options"),
}

CLOSED_PIPE = 128 + signal.SIGPIPE  # the status of a filter whose reader went away


def dispatch(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]].run(argv[1:])
    args, extra = proxy_parser().parse_known_args(argv)
    if extra:
        if not extra[0].startswith("-"):
            return unknown_command(extra[0])
        proxy_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    return asyncio.run(run_proxy(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Every command prints through streams that escape control characters (see
    wsinspect.text), and ends quietly when its reader goes away (`| head`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with terminal_output():
        try:
            try:
                status = dispatch(argv)
            finally:  # also after argparse's --help, whose SystemExit passes through
                sys.stdout.flush()
        except BrokenPipeError:
            discard_closed_stdout()
            return CLOSED_PIPE
    return status


if __name__ == "__main__":
    sys.exit(main())
