"""`wsinspect report FILE [FILE…]`: what one capture holds, or several lined up, as text or
JSON, with an exit status for CI."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from .. import report
from ..errors import WsinspectError
from ..lineup import LinedUpStore
from ..text import print_error
from .captures import open_named


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsinspect report",
        description="What a capture holds (wsinspect, mitmproxy flows or HAR): each session's "
        "hops, messages, end and findings with fixes. Several captures of one path (wsinspect "
        "on a laptop and on the server behind nginx) are lined up into sessions, the later "
        "ones' clocks set by the offset their handshakes show.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--json", action="store_true", help="wsinspect-report/1 JSON")
    parser.add_argument(
        "--fail-on",
        choices=["error", "warning"],
        help="exit 1 when a finding of this severity (or worse) exists, e.g. in CI",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    store = open_named(args.files)
    if store is None:
        return 2
    lined_up = isinstance(store, LinedUpStore)
    try:  # the figures over time read each session's messages, which may be damaged
        if args.json:
            data = report.report_json(store)
            if lined_up:
                data["captures"] = store.captures_json()
            print(json.dumps(data, indent=2))
        else:
            if lined_up:
                print(f"{len(store.captures)} captures lined up on {store.reference.name}'s clock:")
                print("\n".join(f"  {line}" for line in store.describe()))
            print(report.report_text(store))
    except WsinspectError as e:
        print_error(str(e))
        return 2
    if args.fail_on and report.has_findings(store, args.fail_on):
        return 1
    return 0
