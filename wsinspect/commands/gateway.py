"""`wsinspect gateway setup|teardown|check`: a lab gateway for transparent mode (see
wsinspect.gateway)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..addresses import DEFAULT_LISTEN_PORT
from ..errors import WsinspectError
from ..gateway import GatewayError, check, parse_ports, setup, teardown
from ..text import print_error


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsinspect gateway",
        description="Set this host up as a lab gateway for transparent mode (root), "
        "undo it, or check it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    setup_parser = commands.add_parser(
        "setup", help="IP forwarding on, ICMP redirects off, REDIRECT rules tagged 'wsinspect:ID'"
    )
    setup_parser.add_argument("--interface", required=True, metavar="IF", help="the clients' side")
    setup_parser.add_argument("--ports", default="80,443", help="ports to redirect (80,443)")
    setup_parser.add_argument("--listen-port", type=int, default=DEFAULT_LISTEN_PORT, metavar="P")
    commands.add_parser("teardown", help="remove exactly what setup added")
    check_parser = commands.add_parser("check", help="the preflight of transparent mode")
    check_parser.add_argument(
        "--listen-host", default="", metavar="H", help="'' (default): every address, both families"
    )
    check_parser.add_argument("--listen-port", type=int, default=DEFAULT_LISTEN_PORT, metavar="P")
    return parser


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if not 1 <= getattr(args, "listen_port", 1) <= 65535:
            raise GatewayError(f"bad --listen-port {args.listen_port} (1 to 65535)")
        if args.command == "setup":
            setup(args.interface, parse_ports(args.ports), args.listen_port)
        elif args.command == "teardown":
            teardown()
        else:
            return 0 if check(args.listen_host, args.listen_port) else 1
    except WsinspectError as e:
        print_error(str(e), "wsinspect gateway")
        return 1
    return 0
