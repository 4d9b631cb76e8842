"""`wsinspect hello [--proxy HOST:PORT]`: one short WebSocket session through a running
wsinspect (see wsinspect.hello)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from ..addresses import DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT
from ..hello import run


def proxy_address(text: str) -> tuple[str, int]:
    """"HOST:PORT" or "[IPv6]:PORT" as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wsinspect hello",
        description="Send a short WebSocket session (text, binary, ping, close) through a "
        "running wsinspect to an echo server this command starts on 127.0.0.1; prints each "
        "step and a verdict. Exit status 0 when every step worked, 1 otherwise.",
    )
    p.add_argument(
        "--proxy",
        type=proxy_address,
        default=(DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT),
        metavar="HOST:PORT",
        help="wsinspect's regular listener "
        f"(default: {DEFAULT_LISTEN_HOST}:{DEFAULT_LISTEN_PORT})",
    )
    return p


def main(argv: Sequence[str]) -> int:
    return asyncio.run(run(parser().parse_args(argv).proxy))
