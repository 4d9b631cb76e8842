"""`wsinspect export`: a capture (any format wsinspect reads) as HAR, flows or JSON lines."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import WsinspectError
from ..formats import (
    EXPORT_FORMATS,
    EXPORTS,
    STDOUT,
    export,
    export_format_for,
    readable_formats,
    refuse_to_replace,
)
from ..lineup import open_captures
from ..text import print_error


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsinspect export",
        description="Write a capture's sessions as HAR (Chrome DevTools), a mitmproxy flow "
        "file or JSON lines. Credentials are redacted unless --no-redact.",
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE",
        help=readable_formats() + "; several are lined up into sessions as `wsinspect report` "
        "lines them up",
    )
    parser.add_argument(
        "--format", choices=EXPORT_FORMATS,
        help="default: from the output's suffix ("
        + ", ".join("/".join(f.suffixes) for f in EXPORTS) + ")",
    )
    parser.add_argument("-o", dest="out", required=True, metavar="OUT", help="output file, - for stdout")
    parser.add_argument(
        "--no-redact", action="store_true",
        help="keep Authorization, Cookie, Set-Cookie and token-like query parameters",
    )
    parser.add_argument(
        "--session", dest="sessions", type=int, action="append", metavar="ID",
        help="export only this session (repeatable)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    args = export_parser().parse_args(argv)
    fmt = args.format or export_format_for(args.out)
    if fmt is None:
        print_error(
            f"{args.out}: cannot tell the format from the name; "
            f"give --format {', '.join(EXPORT_FORMATS[:-1])} or {EXPORT_FORMATS[-1]}"
        )
        return 2
    try:
        store = open_captures(args.files)
        if args.out != STDOUT:
            refuse_to_replace(args.out, args.files)
        result = export(
            store, args.out, fmt, redact=not args.no_redact, session_ids=args.sessions
        )
    except WsinspectError as e:
        print_error(str(e))
        return 2
    except OSError as e:
        print_error(f"{e.filename or args.out}: cannot write ({e.strerror})")
        return 2
    where = "stdout" if args.out == STDOUT else args.out
    redaction = "kept" if args.no_redact else "redacted"
    print(
        f"wsinspect: exported {result.sessions} session(s), {result.hops} hop(s), "
        f"{result.messages} message(s) to {where} as {fmt}; credentials {redaction}",
        file=sys.stderr,
    )
    return 0
