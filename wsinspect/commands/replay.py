"""`wsinspect replay FILE SESSION_ID`: replay a recorded session on a new connection and
compare the server's answers (see wsinspect.replay)."""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EngineError, WsinspectError
from ..replay import (
    CLOSE_WAIT,
    CREDENTIAL_HEADERS,
    DEFAULT_ANSWER_WAIT,
    DEFAULT_DEADLINE,
    DEFAULT_TIMEOUT,
    TIMINGS,
    ProxyRoute,
    ReplayError,
    ReplayPlan,
    ReplayResult,
    replay,
)
from ..report import session_text
from ..runtime import (
    StopEvent,
    Stopped,
    new_capture_path,
    quiet_loop_reports,
    remove_capture,
    run_until_stopped,
)
from ..store import SessionStore
from ..text import print_error, printable

if TYPE_CHECKING:
    from ..engine import Engine


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsinspect replay",
        description="Replay a recorded session on a new connection and compare the server's "
        "answers. Exit status: 0 the answers matched, 1 they differed, 2 an error.",
    )
    parser.add_argument("file", metavar="FILE", help="the capture holding the session")
    parser.add_argument("session_id", type=int, metavar="SESSION_ID")
    parser.add_argument("--to", metavar="URL", help="another server, e.g. ws://host:port[/path]")
    parser.add_argument(
        "--direct", action="store_true",
        help="connect straight to the server instead of through a wsinspect proxy",
    )
    parser.add_argument("--timing", choices=TIMINGS, default="fast",
                        help="fast: back to back (default); original: the recorded spacing")
    parser.add_argument("-w", dest="capture", metavar="FILE",
                        help="capture file to record the replay into (new; default temporary)")
    parser.add_argument("--drop-credentials", action="store_true",
                        help="do not send the original Cookie and Authorization headers")
    parser.add_argument("--drop-header", action="append", default=[], metavar="NAME",
                        help="do not send this original header (repeatable)")
    parser.add_argument("--cafile", metavar="FILE", help="trust this CA for a wss server")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify a wss server's certificate")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"for connecting and the upgrade (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--wait", type=float, default=DEFAULT_ANSWER_WAIT, metavar="SECONDS",
                        help="silence after which no more answers are expected "
                        f"(default {DEFAULT_ANSWER_WAIT:g})")
    parser.add_argument(
        "--deadline", type=float, metavar="SECONDS",
        help=f"the most the whole replay may take (default {DEFAULT_DEADLINE:g}, plus the "
        "recorded session's length with --timing original)",
    )
    parser.add_argument("--confdir", metavar="DIR",
                        help="the proxy's mitmproxy confdir (default: a temporary one)")
    return parser


def _server_tls(args: argparse.Namespace) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=args.cafile)
    except (ssl.SSLError, OSError) as e:
        raise ReplayError(f"{args.cafile}: not a usable CA file ({e})") from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _engine_settings(args: argparse.Namespace) -> list[str]:
    if args.insecure:
        return ["ssl_insecure=true"]
    if args.cafile:
        return [f"ssl_verify_upstream_trusted_ca={Path(args.cafile).resolve()}"]
    return []


async def _run(args: argparse.Namespace, plan: ReplayPlan, store: SessionStore) -> ReplayResult:
    if args.direct:
        return await replay(
            plan, store, via=None, timing=args.timing, server_tls=_server_tls(args),
            timeout=args.timeout, answer_wait=args.wait, deadline=args.deadline,
        )
    from ..engine import Engine  # the proxy core, only for a proxied replay

    with tempfile.TemporaryDirectory(prefix="wsinspect-replay-") as temp_confdir:
        engine = Engine(
            store, ["regular"], listen_port=0, confdir=args.confdir or temp_confdir,
            settings=_engine_settings(args),
        )
        try:
            await engine.start()
        except EngineError as e:
            raise ReplayError(f"the replay proxy could not start: {e}") from None
        try:
            return await replay(
                plan, store, via=ProxyRoute.for_engine(engine), timing=args.timing,
                timeout=args.timeout, answer_wait=args.wait, deadline=args.deadline,
            )
        finally:
            await _connections_closed(engine)
            await engine.stop()


async def _connections_closed(engine: Engine, timeout: float = CLOSE_WAIT) -> None:
    """Let the proxy finish with the replay's connection: stopping the loop while mitmproxy
    still handles one makes asyncio print its cancelled handler task."""
    connections = engine.master.addons.get("proxyserver").connections
    deadline = time.monotonic() + timeout
    while connections and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _main(args: argparse.Namespace) -> int:
    if args.deadline is not None and not args.deadline > 0:
        print_error("--deadline must be a positive number of seconds")
        return 2
    if args.cafile and not Path(args.cafile).is_file():
        print_error(f"{args.cafile}: no such CA file")
        return 2
    try:
        source = SessionStore.open(args.file)
    except WsinspectError as e:
        print_error(str(e))
        return 2
    try:
        drop = [*args.drop_header, *(CREDENTIAL_HEADERS if args.drop_credentials else ())]
        plan = ReplayPlan.from_store(source, args.session_id, to=args.to, drop_headers=drop)
        store = SessionStore(new_capture_path(args.capture))
    except (WsinspectError, OSError) as e:
        print_error(str(e))
        source.close()
        return 2
    quiet_loop_reports(asyncio.get_running_loop())
    stop = StopEvent()
    route = "directly" if args.direct else "through a wsinspect proxy"
    shown = printable(plan.target.url)
    print(f"wsinspect: replaying session #{args.session_id} to {shown} {route}")
    result = error = None
    try:
        result = await run_until_stopped(_run(args, plan, store), stop)
    except Stopped:  # cancelled, after the replay's proxy stopped cleanly
        error = "interrupted"
    except WsinspectError as e:
        error = str(e)
    recorded = bool(store.sessions())
    store.close()
    source.close()
    if not recorded and not args.capture:
        remove_capture(store.path)
    if result is None:
        print_error(f"replay failed: {error}")
        if error.startswith("TLS failure") and "certificate" in error.lower():
            print("wsinspect: --cafile FILE trusts the server's CA; --insecure skips the check",
                  file=sys.stderr)
        if recorded:
            print(f"wsinspect: recorded to {store.path}", file=sys.stderr)
        return 2
    print("\n".join(session_text(result.session)))
    print(f"  replay of session #{plan.original.id} in {args.file}")
    print("the server's text and binary messages, original and replay aligned in order:")
    print("\n".join(result.comparison.lines()))
    print(f"wsinspect: recorded to {store.path}")
    return 0 if result.comparison.matched else 1


def main(argv: Sequence[str]) -> int:
    return asyncio.run(_main(parser().parse_args(argv)))
