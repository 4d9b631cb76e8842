"""`wsinspect open FILE`: browse a capture in the app."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..formats import open_capture
from ..store import CaptureError
from ..text import print_error


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsinspect open", description="Browse a capture.")
    parser.add_argument("file")
    return parser


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    try:
        store = open_capture(args.file)
    except CaptureError as e:
        print_error(str(e))
        return 2
    from ..ui import WsInspectApp  # Textual loads once the arguments are read

    app = WsInspectApp(store)
    app.run()
    store.close()
    return app.return_code or 0
