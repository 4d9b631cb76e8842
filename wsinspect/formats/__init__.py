"""Opening and sharing captures in other formats.

`open_capture` reads wsinspect captures, mitmproxy flow files and HAR files (the format is
told by content, not by name) into a SessionStore; `export` writes a store's sessions as HAR,
a mitmproxy flow file or JSON lines, redacted unless asked otherwise. Files written are
readable by their owner only. Both raise CaptureError with one line naming the file and the
problem.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..store import CaptureError, SessionStore
from .common import hops_to_export
from .har import read_har, write_har
from .jsonl import JSONL_FORMAT, write_jsonl

EXPORT_FORMATS = ("har", "flows", "jsonl")
SUFFIXES = {".har": "har", ".mitm": "flows", ".flows": "flows", ".jsonl": "jsonl", ".ndjson": "jsonl"}
STDOUT = "-"

_SQLITE_MAGIC = b"SQLite format 3\x00"
_TNETSTRING_START = re.compile(rb"\A\d{1,12}:")
_UTF8_BOM = b"\xef\xbb\xbf"


def open_capture(path: str | os.PathLike) -> SessionStore:
    """A wsinspect capture, a mitmproxy flow file or a HAR file, as a SessionStore."""
    path = Path(path)
    try:
        with open(path, "rb") as fo:
            head = fo.read(64)
            if head.startswith(_SQLITE_MAGIC):
                fo.close()
                return SessionStore.open(path)
            if _TNETSTRING_START.match(head):
                from .flows import read_flows  # loads mitmproxy: only for a flow file

                fo.seek(0)
                return _read_from(path, read_flows(path, fo))
            if head.lstrip(_UTF8_BOM + b" \t\r\n").startswith(b"{"):
                fo.seek(0)
                if JSONL_FORMAT.encode() in fo.readline():
                    raise CaptureError(
                        f"{path}: a JSON lines export, which holds messages only; "
                        "open the capture, HAR or flow file it was made from"
                    )
                fo.seek(0)
                return _read_from(path, read_har(path, fo))
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such capture file") from None
    except OSError as e:
        raise CaptureError(f"{path}: cannot be read ({e.strerror})") from None
    if not head:
        raise CaptureError(f"{path}: empty file, not a capture")
    raise CaptureError(
        f"{path}: not a format wsinspect reads "
        "(a wsinspect capture, a mitmproxy flow file or a HAR file)"
    )


def _read_from(path: Path, store: SessionStore) -> SessionStore:
    store.source = path
    return store


@dataclass(slots=True)
class ExportResult:
    sessions: int
    hops: int
    messages: int


def export(
    store: SessionStore,
    out: str | os.PathLike,
    fmt: str,
    *,
    redact: bool = True,
    session_ids: Iterable[int] | None = None,
) -> ExportResult:
    """Write `store`'s sessions (or those in `session_ids`) to `out` ("-": stdout) as `fmt`,
    one of EXPORT_FORMATS. The file appears complete or not at all, readable by its owner
    only; an existing file is replaced. Raises CaptureError (unknown session, unreadable
    capture) and OSError (the output cannot be written)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    if session_ids is not None:
        session_ids = list(dict.fromkeys(session_ids))
        known = {s.id for s in store.sessions()}
        missing = [i for i in session_ids if i not in known]
        if missing:
            where = store.source or "the capture"
            raise CaptureError(f"{where}: no session {', '.join(map(str, missing))}")
    store.flush()
    hops = list(hops_to_export(store, session_ids, redact))
    if str(out) == STDOUT:
        _write(store, hops, fmt, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        out = Path(out)
        if store.source is not None and out.exists() and os.path.samefile(out, store.source):
            raise CaptureError(f"{out}: is the capture being exported; choose another file")
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        except OSError as e:  # name the folder, not the temporary file in it
            raise OSError(e.errno, e.strerror, str(out.parent)) from None
        try:
            with os.fdopen(fd, "wb") as fo:
                _write(store, hops, fmt, fo)
            os.replace(temporary, out)
        except BaseException:
            os.unlink(temporary)
            raise
    return ExportResult(
        sessions=len({h.session_id for h in hops}),
        hops=len(hops),
        messages=sum(h.hop.stats.count for h in hops),
    )


def _write(store: SessionStore, hops, fmt: str, fo) -> None:
    # Damaged message records surface as the store's CaptureError.
    if fmt == "flows":
        from .flows import write_flows  # loads mitmproxy: only for a flow file

        write_flows(store, hops, fo)
        return
    text = io.TextIOWrapper(fo, encoding="utf-8", newline="\n")
    try:
        (write_har if fmt == "har" else write_jsonl)(store, hops, text)
    finally:
        text.flush()
        text.detach()
