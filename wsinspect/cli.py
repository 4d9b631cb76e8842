"""The `wsinspect` command line: `wsinspect COMMAND [ARGS]` runs a command of
wsinspect.commands, anything else the proxy (wsinspect.commands.proxy).

A command's module is imported only when it runs: `wsinspect report` loads neither the proxy
nor Textual.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .commands import COMMANDS
from .errors import WsinspectError
from .runtime import CLOSED_PIPE
from .text import discard_closed_stdout, print_error, terminal_output


def dispatch(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]].run(argv[1:])
    from .commands import proxy

    return proxy.main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Every command prints through streams that escape control characters (see
    wsinspect.text), and ends quietly when its reader goes away (`| head`). A wsinspect error
    a command did not report itself is its one line, not a traceback."""
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
        except WsinspectError as e:
            print_error(str(e))
            return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
