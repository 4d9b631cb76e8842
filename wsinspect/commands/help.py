"""`wsinspect help [COMMAND [SUBCOMMAND]]`: wsinspect's options, or a command's."""

from __future__ import annotations

from collections.abc import Sequence

from . import COMMANDS, proxy, unknown_command


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] == "help":
        proxy.parser().print_help()
        return 0
    if argv[0] not in COMMANDS:
        return unknown_command(argv[0])
    try:
        return COMMANDS[argv[0]].run([*argv[1:], "--help"])
    except SystemExit as e:  # argparse's --help
        return e.code or 0
