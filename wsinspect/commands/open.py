"""`wsinspect open FILE [FILE…]`: browse a capture, or several lined up, in the app."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .captures import open_named


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsinspect open",
        description="Browse a capture. Several captures of one path (wsinspect on both sides "
        "of a proxy, on two machines) are lined up into sessions on the first one's clock.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    return parser


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    store = open_named(args.files)
    if store is None:
        return 2
    from ..ui import WsInspectApp  # Textual loads once the arguments are read

    app = WsInspectApp(store)
    app.run()
    store.close()
    return app.return_code or 0
