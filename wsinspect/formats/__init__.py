"""Opening and sharing captures in other formats.

`open_capture` reads wsinspect captures, mitmproxy flow files and HAR files (the format is
told by content, not by name) into a SessionStore; `export` writes a store's sessions as HAR,
a mitmproxy flow file or JSON lines, redacted unless asked otherwise. Files written are
readable by their owner only. Both raise CaptureError with one line naming the file and the
problem. `FORMATS` declares each format once; the export command and the export dialog offer
what it lists.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..store import CaptureError, SessionStore, capture_files
from .common import JSONL_FORMAT, hops_to_export

STDOUT = "-"
SNIFF_BYTES = 4096  # what `Format.sniff` sees of a file: enough for a JSON lines export's first line

_SQLITE_MAGIC = b"SQLite format 3\x00"
_TNETSTRING_START = re.compile(rb"\A\d{1,12}:")
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Format:
    """A file format wsinspect reads, writes or recognises. `reader` and `writer` name a
    function ("module:function", the module in this package) imported only when a file is
    read or written as this format, so telling formats apart loads neither mitmproxy nor a
    parser."""

    name: str  # the CLI's --format and the export dialog's choice
    label: str  # in sentences: "a HAR file"
    suffixes: tuple[str, ...]  # a new file gets the first
    sniff: Callable[[bytes], bool]  # from a file's first SNIFF_BYTES bytes
    reader: str | None = None  # (path, binary file) -> SessionStore
    writer: str | None = None  # (store, hops, file) -> None
    text: bool = False  # the writer takes a text stream (UTF-8, "\n"), else a binary one
    unread: str = ""  # why a file recognised as this format is not read

    def read(self, path: Path, fo) -> SessionStore:
        store = _function(self.reader)(path, fo)
        store.source = path
        return store

    def write(self, store: SessionStore, hops, fo) -> None:
        write = _function(self.writer)
        if not self.text:
            write(store, hops, fo)
            return
        text = io.TextIOWrapper(fo, encoding="utf-8", newline="\n")
        try:
            write(store, hops, text)
        finally:
            text.flush()
            text.detach()


def _function(name: str) -> Callable:
    module, function = name.split(":")
    return getattr(importlib.import_module(module, __name__), function)


def _is_json(head: bytes) -> bool:
    return head.lstrip(_UTF8_BOM + b" \t\r\n").startswith(b"{")


def _is_jsonl(head: bytes) -> bool:
    return _is_json(head) and JSONL_FORMAT.encode() in head.split(b"\n", 1)[0]


def _is_har(head: bytes) -> bool:
    return _is_json(head) and not _is_jsonl(head)


# Every format, as the messages name them; the writable ones in the order the CLI and the
# export dialog offer them.
FORMATS = (
    Format(
        "capture", "a wsinspect capture", (".db",), lambda head: head.startswith(_SQLITE_MAGIC),
        reader=".common:read_capture",
    ),
    Format(
        "har", "a HAR file", (".har",), _is_har,
        reader=".har:read_har", writer=".har:write_har", text=True,
    ),
    Format(
        "flows", "a mitmproxy flow file", (".flows", ".mitm"),
        lambda head: _TNETSTRING_START.match(head) is not None,
        reader=".flows:read_flows", writer=".flows:write_flows",
    ),
    Format(
        "jsonl", "a JSON lines export", (".jsonl", ".ndjson"), _is_jsonl,
        writer=".jsonl:write_jsonl", text=True,
        unread="holds messages only; open the capture, HAR or flow file it was made from",
    ),
)
EXPORTS = tuple(f for f in FORMATS if f.writer)
EXPORT_FORMATS = tuple(f.name for f in EXPORTS)


def export_format(name: str) -> Format:
    """The export format called `name`, one of EXPORT_FORMATS."""
    return next(f for f in EXPORTS if f.name == name)


def export_format_for(path: str | os.PathLike) -> str | None:
    """The name of the export format `path`'s suffix says, if any."""
    suffix = Path(path).suffix.lower()
    return next((f.name for f in EXPORTS if suffix in f.suffixes), None)


def open_capture(path: str | os.PathLike) -> SessionStore:
    """A wsinspect capture, a mitmproxy flow file or a HAR file, as a SessionStore."""
    path = Path(path)
    try:
        with open(path, "rb") as fo:
            head = fo.read(SNIFF_BYTES)
            for fmt in FORMATS:
                if fmt.sniff(head):
                    if fmt.reader is None:
                        raise CaptureError(f"{path}: {fmt.label}, which {fmt.unread}")
                    fo.seek(0)
                    return fmt.read(path, fo)
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such capture file") from None
    except OSError as e:
        raise CaptureError(f"{path}: cannot be read ({e.strerror})") from None
    if not head:
        raise CaptureError(f"{path}: empty file, not a capture")
    raise CaptureError(f"{path}: not a format wsinspect reads ({readable_formats()})")


def readable_formats() -> str:
    """The formats `open_capture` reads, as a sentence names them."""
    labels = [f.label for f in FORMATS if f.reader]
    return f"{', '.join(labels[:-1])} or {labels[-1]}"


@dataclass(slots=True)
class ExportResult:
    sessions: int
    hops: int
    messages: int


def refuse_to_replace(out: str | os.PathLike, sources: Iterable[str | os.PathLike]) -> None:
    """An export never replaces a file it reads: a capture, or its -wal, -shm or payload file."""
    out = Path(out)
    if out.exists() and any(
        f.exists() and os.path.samefile(out, f) for source in sources for f in capture_files(source)
    ):
        raise CaptureError(f"{out}: is the capture being exported; choose another file")


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
    writer = export_format(fmt)
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
        writer.write(store, hops, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        out = Path(out)
        if store.source is not None:
            refuse_to_replace(out, [store.source])
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        except OSError as e:  # name the folder, not the temporary file in it
            raise OSError(e.errno, e.strerror, str(out.parent)) from None
        try:
            with os.fdopen(fd, "wb") as fo:
                writer.write(store, hops, fo)
            os.replace(temporary, out)
        except BaseException:
            os.unlink(temporary)
            raise
    return ExportResult(
        sessions=len({h.session_id for h in hops}),
        hops=len(hops),
        messages=sum(h.hop.stats.count for h in hops),
    )

