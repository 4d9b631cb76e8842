"""`wsinspect report FILE`: what a capture holds, as text or JSON, with an exit status for CI."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from .. import report
from ..formats import open_capture
from ..store import CaptureError
from ..text import print_error


def parser() -> argparse.ArgumentParser:
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


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    try:
        store = open_capture(args.file)
    except CaptureError as e:
        print_error(str(e))
        return 2
    try:  # the figures over time read each session's messages, which may be damaged
        print(json.dumps(report.report_json(store), indent=2) if args.json
              else report.report_text(store))
    except CaptureError as e:
        print_error(str(e))
        return 2
    if args.fail_on and report.has_findings(store, args.fail_on):
        return 1
    return 0
