"""The session store: the one place sessions live, live or loaded from a capture file.

Sessions and hops are kept in memory (they are small); messages go to the capture file, a
SQLite database in WAL mode, and are read back by index ranges so a view can page through
millions. Payloads of LARGE_PAYLOAD bytes or more go to an append-only payload file beside
it (the capture's name plus PAYLOADS_SUFFIX), their rows keeping where: SQLite copies each
byte of a BLOB three times (page cache, -wal, checkpoint), which cost the writer 1.5-2.5 ms of
CPU per MiB against 0.25 ms for a plain write. Writes are batched: subscribers hear of changes
every `notify_interval` seconds and the file is committed every `commit_interval` seconds, so
a crash loses at most about that much.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import errno
import hashlib
import json
import logging
import mmap
import os
import queue
import sqlite3
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import correlate
from .errors import CaptureError
from .model import (
    MAX_COUNT,
    MAX_SECONDS,
    MAX_TIMESTAMP,
    Close,
    Hop,
    Message,
    MessageType,
    Outcome,
    RecordError,
    Session,
    member,
    one_of,
)

logger = logging.getLogger("wsinspect")

CAPTURE_FORMAT = "wsinspect-capture/1"
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024
# Payloads of at least this many bytes are kept in the capture's payload file, not in SQLite.
LARGE_PAYLOAD = 64 * 1024
PAYLOADS_SUFFIX = "-payloads"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hops (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    hop_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    from_client INTEGER NOT NULL,
    type TEXT NOT NULL,
    size INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    injected INTEGER NOT NULL,
    sha256 TEXT,
    payload BLOB NOT NULL,
    rtt REAL,
    intercept TEXT,
    held REAL,
    payload_at INTEGER,
    payload_len INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_hop ON messages (hop_id, idx);
"""


@dataclass
class StoreChanges:
    """What changed since the last notification."""

    added: set[int] = field(default_factory=set)  # new session ids
    updated: set[int] = field(default_factory=set)  # sessions whose hops or outcome changed
    messages: set[int] = field(default_factory=set)  # sessions with new messages

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.messages)


Subscriber = Callable[[StoreChanges], None]
# A message without its payload: from the client, size, timestamp, a pong's round trip.
Timing = tuple[bool, int, float, float | None]


def temporary_capture_path() -> Path:
    """A fresh path in the temp folder for a capture nobody named."""
    fd, name = tempfile.mkstemp(prefix="wsinspect-", suffix=".db")
    os.close(fd)
    os.unlink(name)  # SessionStore creates it, owner-only
    return Path(name)


def _create_private(path: Path, flags: int = 0) -> int:
    """Captures hold payloads and credentials: create them readable by their owner only.
    Returns the new file open for writing (with `flags` added)."""
    return os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC | flags, 0o600)


def payloads_path(capture: str | os.PathLike) -> Path:
    """The file beside `capture` holding its large payloads (there once one was recorded)."""
    capture = Path(capture)
    return capture.with_name(capture.name + PAYLOADS_SUFFIX)


def capture_files(capture: str | os.PathLike) -> tuple[Path, ...]:
    """A capture and the files that may be beside it: SQLite's -wal and -shm, and its
    payload file."""
    capture = Path(capture)
    return (capture, *(capture.with_name(capture.name + s) for s in ("-wal", "-shm")),
            payloads_path(capture))


# Candidates add_hop hands correlate.find_session, so that adding a hop costs the same with a
# hundred sessions or a million: the newest sessions for a keyless hop (which must follow its
# predecessor within seconds), and the sessions of the correlation window whose hops carried a
# given key (clients reusing one key for many handshakes are the only way there are several).
_KEYLESS_CANDIDATES = 200

_INSERT_MESSAGE = "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_HOP = "INSERT OR REPLACE INTO hops VALUES (?, ?, ?)"


# SQLite's limits on a connection reading a capture, which may come from anyone: far above what
# wsinspect's own queries and records need (a payload is capped at the recorder's max_payload,
# 16 MiB by default), far below what a crafted file could make a reader spend.
_READ_LIMITS = {
    sqlite3.SQLITE_LIMIT_LENGTH: 1 << 30,  # one payload or hop record
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 100_000,
    sqlite3.SQLITE_LIMIT_COLUMN: 100,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 100,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 4,
    sqlite3.SQLITE_LIMIT_VDBE_OP: 100_000,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 8,
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 100,
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 100,
    sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 0,
}
# One query on a capture opened for reading gets this long; then it is interrupted.
QUERY_SECONDS = 10.0
_PROGRESS_STEPS = 10_000  # SQLite virtual machine steps between looks at the clock


def _expected_schema() -> dict[tuple[str, str], set[str]]:
    """(type, name) of each table and index a capture may hold, with a table's columns."""
    db = sqlite3.connect(":memory:")
    db.executescript(_SCHEMA)
    schema = {
        (kind, name): {column for (column,) in db.execute(
            "SELECT name FROM pragma_table_info(?)", (name,))}
        for kind, name in db.execute("SELECT type, name FROM sqlite_schema")
    }
    db.close()
    return schema


_EXPECTED_SCHEMA = _expected_schema()


def _check_schema(db: sqlite3.Connection) -> None:
    """Only the plain tables and index a capture has: no views, triggers, virtual tables or
    generated columns, whose reading could run any query the file's author chose."""
    for kind, name, sql in db.execute("SELECT type, name, sql FROM sqlite_schema").fetchall():
        columns = _EXPECTED_SCHEMA.get((kind, name))
        if columns is None:
            raise CaptureError(f"not a wsinspect capture (unexpected {kind} in its schema)")
        if kind != "table":
            continue
        if type(sql) is not str or not sql.startswith("CREATE TABLE "):
            raise CaptureError(f"not a wsinspect capture ({name} is not a plain table)")
        found = db.execute("SELECT name, hidden FROM pragma_table_xinfo(?)", (name,)).fetchall()
        if any(hidden or column not in columns for column, hidden in found):
            raise CaptureError(f"not a wsinspect capture ({name} has unexpected columns)")


# A capture's meta rows naming the process that writes it, and saying it closed the capture.
_WRITER = "writer"
_CLEAN_CLOSE = "closed"
CAPTURE_ENDED = "capture ended: its writer stopped without closing it"


def _process_identity(pid: int | str) -> str | None:
    """A process told apart from a later one given the same pid: "pid start-time boot-id"
    (its start in clock ticks since boot, from /proc/PID/stat, and the boot it started in);
    None when the process is gone or /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (command) ", command may hold ")"
    if len(fields) < 20:
        return None
    return f"{pid} {fields[19]} {boot}"  # field 22 of the line: starttime


def _writer_alive(writer: object) -> bool:
    """Whether the process a capture's writer row names is still running."""
    if type(writer) is not str:
        return False
    pid = writer.split(" ", 1)[0]
    return pid.isascii() and pid.isdigit() and _process_identity(int(pid)) == writer


def _end_at_last_record(hop: Hop) -> None:
    """End an open hop of a capture whose writer is gone at the last thing it recorded, as the
    recorder ends a hop whose connection failed (in memory only: the capture is not written)."""
    times = (hop.timestamp_start, hop.timestamp_response, hop.stats.last_timestamp)
    hop.timestamp_end = max(t for t in times if t is not None)
    if hop.response_status is None:
        hop.outcome = Outcome.FAILED
        hop.error = hop.error or CAPTURE_ENDED
        return
    hop.outcome = Outcome.CLOSED
    if hop.close is None:
        hop.close = Close(abnormal=True, abnormal_reason=CAPTURE_ENDED, timestamp=hop.timestamp_end)


def _connect_readonly(path: Path, on_progress: Callable[[], bool]) -> sqlite3.Connection:
    """A connection that reads `path` and never writes beside it: it neither folds a -wal
    into the file nor deletes -wal and -shm, and works on a read-only mount. With a -wal (a
    writer is running, or was killed) the file is read through it; without one no writer is
    there and the file is opened immutable, which needs no -shm."""
    wal = path.with_name(path.name + "-wal").exists()
    uri = f"{path.absolute().as_uri()}?mode=ro" + ("" if wal else "&immutable=1")
    db = sqlite3.connect(uri, uri=True, isolation_level=None)
    for limit, value in _READ_LIMITS.items():
        db.setlimit(limit, value)
    db.set_progress_handler(on_progress, _PROGRESS_STEPS)
    db.execute("PRAGMA trusted_schema=OFF")
    return db


class _PayloadFileError(CaptureError):
    """A capture's payload file is missing or is not a file wsinspect wrote."""


class _PayloadReader:
    """Reads payloads out of a capture's payload file, which may come from anyone: opened
    only when a row points into it (timings never do), never a symlink, a FIFO or a device,
    and read only where it has bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._size = 0
        self._close: weakref.finalize | None = None

    def read(self, at: int, length: int) -> bytes:
        if self._fd is None:
            self._open()
        if at + length > self._size:  # a live capture's file grows: look again
            self._size = os.fstat(self._fd).st_size
            if at + length > self._size:
                raise RecordError(
                    f"message payload at {at}+{length} lies past the end of {self.path.name}")
        data = os.pread(self._fd, length, at)
        if len(data) != length:
            raise RecordError(f"message payload at {at}+{length} was cut short in {self.path.name}")
        return data

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENOENT:
                why = "no such file; copy it with the capture"
            elif e.errno == errno.ELOOP:
                why = "is a symbolic link, not a payload file"
            else:
                why = f"cannot be read ({e.strerror})"
            raise _PayloadFileError(f"{self.path}: {why}") from None
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            raise _PayloadFileError(f"{self.path}: is not a regular file")
        self._fd, self._size = fd, status.st_size
        self._close = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = self._fd = None


def _located_payload(
    inline: object, at: object, length: object, size: object, payloads: _PayloadReader | None
) -> bytes:
    """A row's payload from the payload file, its location checked before anything is read."""
    if inline != b"" or type(inline) is not bytes:
        raise RecordError("message has both a payload and a location in the payload file")
    if type(at) is not int or type(length) is not int:
        raise RecordError("message payload location is not two integers")
    if at < 0 or length < 0:
        raise RecordError(f"message payload location {at}+{length} is negative")
    if length > _READ_LIMITS[sqlite3.SQLITE_LIMIT_LENGTH]:
        raise RecordError(f"message payload length {length} is over the limit of one payload")
    if type(size) is not int:
        raise RecordError(f"message size is {type(size).__name__}, not an integer")
    if length > size:
        raise RecordError(f"message payload length {length} is longer than its size {size}")
    if payloads is None:
        raise RecordError("message payload is located in a payload file an in-memory store lacks")
    return payloads.read(at, length)


def _message(row: tuple, payloads: _PayloadReader | None) -> Message:
    """A messages row as a Message, every column checked."""
    (index, from_client, kind, size, timestamp, injected, sha256, payload, rtt, intercept, held,
     at, length) = row
    if at is not None or length is not None:
        payload = _located_payload(payload, at, length, size, payloads)
    one_of(0, 1)(from_client, "message from_client")
    one_of(0, 1)(injected, "message injected")
    message = Message(
        index=index,
        from_client=bool(from_client),
        type=member(MessageType, kind, "message type"),
        size=size,
        timestamp=timestamp,
        injected=bool(injected),
        sha256=sha256,
        payload=payload,
        rtt=rtt,
        intercept=intercept,
        held=held,
    )
    message.validate()
    return message


_PAGE_SIZE = 65536
_WAL_CHECKPOINT_BYTES = 64 * 1024 * 1024


def _connect(path: Path | None) -> sqlite3.Connection:
    db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
    # 64 KiB pages (this takes effect when the file is created, before its first write): a
    # 1 MiB payload is 16 overflow pages instead of 256, and writing one cost the writer a
    # third of the CPU it cost on 4 KiB pages (1.5-2 ms per MiB against 3.4-6).
    db.execute(f"PRAGMA page_size={_PAGE_SIZE}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # Checkpoint every 64 MiB of WAL rather than 4 MiB: each checkpoint syncs, and at 1 MiB
    # messages the default made the writer sync dozens of times a second.
    db.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_BYTES // _PAGE_SIZE}")
    db.isolation_level = "DEFERRED"
    return db


class _PayloadFile:
    """The writer's end of a capture's payload file: created (owner-only) at the first large
    payload, appended to, never rewritten.

    What is appended is written at `flush` (before each commit, so a row that commits never
    points at bytes not yet on file), in one gathered write: a write per payload cost the
    writer a system call and a turn at the GIL each, and the disk a request each.

    Where the file system takes O_DIRECT, it is written past the page cache, in whole blocks
    from memory aligned to a block: a plain write put every payload into page-cache pages
    allocated for it, which cost the writer 2-4 ms of CPU per MiB in the raw relay at 1 MiB
    messages (as much as relaying them). Payloads of DIRECT_FROM bytes or more start where
    their offset in the file and their address in memory agree modulo a block (up to a block
    of zeros before them), so their whole blocks are written from where they lie; the bytes
    around those, and smaller payloads, are gathered in a staging buffer. `flush` writes the
    staging buffer's last, partial block padded with zeros (the next write rewrites it whole);
    `close` cuts the padding off.
    """

    BLOCK = 4096  # O_DIRECT's alignment of memory, offset and length: any logical block's
    STAGE = 4 * 1024 * 1024
    DIRECT_FROM = 256 * 1024  # a block of zeros before a payload wastes at most 1.6% here
    PIECES = os.sysconf("SC_IOV_MAX") - 1  # a gathered write's pieces, and the padded block

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._direct: int | None = None  # the file opened O_DIRECT, where that works
        self._stage: mmap.mmap | None = None
        self._stage_view: memoryview | None = None
        self._queue: list[memoryview] = []  # what goes on file next, in order
        self._written = 0  # where the queue goes (a whole block once direct)
        self._queued = 0  # the queue's bytes
        self._open_at = 0  # where the stage's open piece (not queued yet) starts in the stage
        self._staged = 0  # the open piece's bytes; it goes on file after the queue
        self._unwritten = False  # bytes appended since the last flush

    @property
    def _end(self) -> int:
        return self._written + self._queued + self._staged

    def append(self, payload: bytes) -> int:
        """Add `payload` at the end of the file; where it starts."""
        if self._fd is None:
            self._open()
        view = memoryview(payload)
        at = self._end
        self._unwritten = True
        if self._direct is None:
            self._enqueue(view)
        elif len(view) < self.DIRECT_FROM or type(payload) is not bytes:  # ctypes: bytes only
            self._add_to_stage(view)
        else:
            address = ctypes.cast(ctypes.c_char_p(payload), ctypes.c_void_p).value
            head = -address % self.BLOCK  # the bytes before its first block in memory
            self._add_to_stage(memoryview(bytes(-(at + head) % self.BLOCK)))
            at = self._end
            self._add_to_stage(view[:head])
            self._enqueue_open_piece()  # it ends on a block: the file's end is on one
            whole = (len(view) - head) // self.BLOCK * self.BLOCK
            self._enqueue(view[head:head + whole])
            self._add_to_stage(view[head + whole:])
        return at

    def flush(self) -> None:
        """Put every byte appended so far on file."""
        if self._unwritten:
            self._write_out(padded=True)
            self._unwritten = False

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            self.flush()
            if self._direct is not None:
                os.ftruncate(self._fd, self._end)
        finally:
            self._release_queue()
            if self._direct is not None:
                os.close(self._direct)
                self._stage_view.release()
                self._stage.close()
                self._direct = self._stage = self._stage_view = None
            os.close(self._fd)
            self._fd = None

    def _open(self) -> None:
        self._fd = _create_private(self.path)
        try:
            self._direct = os.open(self.path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        except (AttributeError, OSError):  # not on this system or file system: write plainly
            return
        self._stage = mmap.mmap(-1, self.STAGE)
        self._stage_view = memoryview(self._stage)

    def _enqueue(self, view: memoryview) -> None:
        self._queue.append(view)
        self._queued += len(view)
        if len(self._queue) == self.PIECES:
            self._write_out(padded=False)

    def _enqueue_open_piece(self) -> None:
        if self._staged:
            piece = self._stage_view[self._open_at:self._open_at + self._staged]
            self._open_at += self._staged
            self._staged = 0
            self._enqueue(piece)

    def _add_to_stage(self, view: memoryview) -> None:
        while view:
            room = self.STAGE - self._open_at - self._staged
            if not room:
                self._write_out(padded=False)
                continue
            n = min(len(view), room)
            start = self._open_at + self._staged
            self._stage[start:start + n] = view[:n]
            self._staged += n
            view = view[n:]

    def _write_out(self, padded: bool) -> None:
        """Write the queue and the open piece's whole blocks, or all of it padded to a block
        with zeros; what is left of the open piece (less than a block) starts the stage."""
        if self._direct is None:
            self._write(self._fd, self._queue, self._written)
            self._written += self._queued
            self._release_queue()
            return
        start, staged = self._open_at, self._staged
        whole = staged - staged % self.BLOCK
        upto = whole + self.BLOCK if padded and whole != staged else whole
        self._stage[start + staged:start + upto] = bytes(upto - staged)
        if upto:
            self._queue.append(self._stage_view[start:start + upto])
        self._write(self._direct, self._queue, self._written)
        self._written += self._queued + whole
        self._release_queue()
        self._stage[:staged - whole] = self._stage[start + whole:start + staged]
        self._open_at, self._staged = 0, staged - whole

    def _release_queue(self) -> None:
        for view in self._queue:
            view.release()
        self._queue.clear()
        self._queued = 0

    @staticmethod
    def _write(fd: int, views: list[memoryview], at: int) -> None:
        views = list(views)
        while views:
            n = os.pwritev(fd, views, at)
            at += n
            while views and n >= len(views[0]):
                n -= len(views.pop(0))
            if n:
                views[0] = views[0][n:]


def _message_rows(
    batches: list[tuple[int, list[Message]]], payload_file: _PayloadFile | None
) -> Iterator[tuple]:
    """Rows for the messages table, made as SQLite takes them: on the writer thread, and
    interleaved with the inserts, which release the GIL. Made up front on the event loop, a
    0.5 s batch at 20,000 messages a second held the loop for 10-16 ms. A large payload is
    appended to `payload_file` as its row is made, so before the transaction holding the row
    commits: a committed row never points at bytes not yet written."""
    for hop_id, messages in batches:
        for m in messages:
            payload, at, length = m.payload, None, None
            if payload_file is not None and len(payload) >= LARGE_PAYLOAD:
                payload, at, length = b"", payload_file.append(payload), len(payload)
            yield (hop_id, m.index, int(m.from_client), m.type.value, m.size, m.timestamp,
                   int(m.injected), m.sha256, payload, m.rtt, m.intercept, m.held, at, length)


def _write_batch(
    db: sqlite3.Connection,
    batches: list[tuple[int, list[Message]]],
    hop_rows: list[tuple],
    payload_file: _PayloadFile | None = None,
) -> None:
    with db:
        db.executemany(_INSERT_MESSAGE, _message_rows(batches, payload_file))
        if payload_file is not None:
            payload_file.flush()
        db.executemany(_UPSERT_HOP, hop_rows)


# Payload bytes waiting for the writer that commit before commit_interval is up: large
# messages' buffers reach the writer and are freed (for the next ones to reuse) while few.
_COMMIT_BYTES = 16 * 1024 * 1024

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (glibc's malloc.h)


class _Heap:
    """When the writer gives glibc's free heap back to the system, and how much it may keep.

    glibc keeps the heap that messages, rows and SQLite's pages were freed into (the writer
    thread's arena and the loop's): over a long session of 1 KiB messages the proxy's RSS
    crept up by 30-60 bytes a message. Given back after every batch, though, the next batch's
    messages faulted every page in afresh: at 1 MiB messages a third of the raw relay's CPU
    (the payload buffers of the batches in flight), as did glibc's own trimming of more than
    a few MiB at the top of the heap and its mmap of every allocation over 128 KiB-1 MiB. So
    allocations up to 32 MiB come from the heap, up to 64 MiB of it may stay free at its top,
    and the rest goes back at most every 5 s (bench/relay_bench.py: flat RSS either way)."""

    EVERY_SECONDS = 5.0
    FROM_HEAP_UP_TO = 32 * 1024 * 1024
    KEPT_FREE = 64 * 1024 * 1024

    def __init__(self) -> None:
        try:
            libc = ctypes.CDLL(None)
            self._trim, mallopt = libc.malloc_trim, libc.mallopt  # glibc's
        except (OSError, AttributeError):
            self._trim = None  # another C library: it keeps its own counsel
            return
        mallopt(_M_MMAP_THRESHOLD, self.FROM_HEAP_UP_TO)
        mallopt(_M_TRIM_THRESHOLD, self.KEPT_FREE)
        self._last = time.monotonic()

    def give_back(self) -> None:
        """Return the free heap if it is time (0.5 ms, 13 ms at worst, without the GIL)."""
        if self._trim is not None and time.monotonic() - self._last >= self.EVERY_SECONDS:
            self._trim(0)
            self._last = time.monotonic()


class _BackgroundWriter:
    """Commits batches on a thread of its own with its own connection, so writing large
    payloads overlaps with relaying traffic instead of stalling the proxy's event loop.

    Confirmed batches (hop id -> messages written) are handed back through `done`; the store
    keeps those messages in memory until then, so reads never miss one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # A short queue: when the disk falls behind, commit() blocks, slowing the proxy
        # instead of growing memory without bound.
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self.done: collections.deque[dict[int, int]] = collections.deque()
        self.failed = False
        self._thread = threading.Thread(target=self._run, name="wsinspect-writer", daemon=True)
        self._thread.start()

    def submit(self, batches, hop_rows, counts, on_done: Callable[[], None] | None) -> None:
        self._queue.put((batches, hop_rows, counts, on_done))

    def _run(self) -> None:
        db = _connect(self.path)
        payload_file = _PayloadFile(payloads_path(self.path))
        heap = _Heap()
        while (item := self._queue.get()) is not None:
            batches, hop_rows, counts, on_done = item
            try:
                if self.failed:
                    continue
                try:
                    _write_batch(db, batches, hop_rows, payload_file)
                except Exception as e:  # noqa: BLE001 - a writer thread that died would hang
                    # the proxy at its next commit. Nothing is dropped: unconfirmed messages
                    # stay in memory and readable.
                    self.failed = True
                    why = e if isinstance(e, (sqlite3.Error, OSError)) else repr(e)
                    logger.error(f"writing {self.path} failed ({why}); recording continues in "
                                 "memory")
                    continue
                self.done.append(counts)
                if on_done is not None:
                    try:
                        on_done()
                    except RuntimeError:
                        pass  # the event loop closed before the confirmation: flush() applies it
                heap.give_back()
            finally:
                self._queue.task_done()
        self._queue.task_done()
        db.close()
        try:
            payload_file.close()
        except OSError as e:
            if not self.failed:  # else the first failure was told, and nothing since written
                logger.error(f"writing {payload_file.path} failed ({e})")

    def drain(self) -> None:
        self._queue.join()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()


class SessionStore:
    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        notify_interval: float = 0.02,
        commit_interval: float = 0.5,
    ) -> None:
        """Create a new capture at `path` (it must not exist), or an in-memory one."""
        self._init_state(path, max_payload, notify_interval, commit_interval)
        if self.path is not None:
            for taken in (self.path, payloads_path(self.path)):
                if taken.exists() or taken.is_symlink():
                    raise CaptureError(f"{taken}: already exists; choose a new capture file")
            os.close(_create_private(self.path))
        try:
            self._db = _connect(self.path)
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT INTO meta VALUES ('format', ?)", (CAPTURE_FORMAT,))
            if (writer := _process_identity(os.getpid())) is not None:
                self._db.execute("INSERT INTO meta VALUES (?, ?)", (_WRITER, writer))
            self._db.commit()
        except sqlite3.Error as e:
            self._remove_failed_capture()
            raise CaptureError(f"{self.path}: cannot be created as a capture ({e})") from None
        if self.path is not None:
            self._writer = _BackgroundWriter(self.path)

    def _remove_failed_capture(self) -> None:
        """Undo a creation that failed: the file created above, and a -wal SQLite left."""
        if getattr(self, "_db", None) is not None:
            self._db.close()
        if self.path is None:
            return
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.is_file() and not wal.is_symlink() and wal.stat().st_size == 0:
            wal.unlink()
        self.path.unlink()

    def _init_state(
        self,
        path: str | os.PathLike | None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        notify_interval: float = 0.02,
        commit_interval: float = 0.5,
    ) -> None:
        self.path = Path(path) if path is not None else None
        # The file the sessions were read from: the capture, or a HAR or flow file imported
        self.source = self.path
        self.max_payload = max_payload
        self.notify_interval = notify_interval
        self.commit_interval = commit_interval
        self._sessions: dict[int, Session] = {}
        self._hops: dict[int, Hop] = {}
        self._subscribers: list[Subscriber] = []
        self._changes = StoreChanges()
        # Per hop: messages not yet confirmed on disk, of which the first `_in_flight` are with
        # the writer, and how many are confirmed (readable from the file).
        self._pending: dict[int, list[Message]] = {}
        self._in_flight: dict[int, int] = collections.defaultdict(int)
        self._committed: dict[int, int] = {}
        self._unsubmitted_bytes = 0
        self._dirty_hops: set[int] = set()
        self._writer: _BackgroundWriter | None = None
        self._last_commit = time.monotonic()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_session_id = 1
        self._next_hop_id = 1
        # Where add_hop looks for the session a new hop continues (see correlate): sessions by
        # the Sec-WebSocket-Keys of their hops, and the newest sessions, for keyless hops.
        self._by_key: dict[str, collections.deque[Session]] = {}
        self._keys_by_age: collections.deque[tuple[float, str]] = collections.deque()
        self._newest: collections.deque[Session] = collections.deque(maxlen=_KEYLESS_CANDIDATES)
        self._query_deadline = float("inf")
        self._rtt_column = "rtt"
        self._intercept_columns = "intercept, held"
        self._location_columns = "payload_at, payload_len"
        self._payloads = _PayloadReader(payloads_path(self.path)) if self.path else None

    @classmethod
    def open(cls, path: str | os.PathLike) -> SessionStore:
        """Open a saved capture (also one whose writer was killed, or is still running)
        through the same API, for reading only: nothing beside it is written or removed."""
        path = Path(path)
        if not path.is_file():
            raise CaptureError(f"{path}: no such capture file")
        store = cls.__new__(cls)
        store._init_state(path)
        try:
            store._db = _connect_readonly(path, store._over_time)
            store._read(_check_schema, store._db)
            columns = {name for (name,) in store._query(
                "SELECT name FROM pragma_table_info('messages')")}
            if "rtt" not in columns:
                store._rtt_column = "NULL"  # a capture from before pong RTTs were recorded
            if "intercept" not in columns:
                store._intercept_columns = "NULL, NULL"  # from before messages were held
            if not {"payload_at", "payload_len"} <= columns:
                store._location_columns = "NULL, NULL"  # from before the payload file
            row = store._query("SELECT value FROM meta WHERE key='format'")
            if not row or row[0][0] != CAPTURE_FORMAT:
                raise CaptureError("not a wsinspect capture (no wsinspect-capture format mark)")
            for hop_id, session_id, data in store._query(
                "SELECT id, session_id, data FROM hops ORDER BY id"
            ):
                store._add_loaded_hop(hop_id, session_id, data)
            marks = dict(store._query("SELECT key, value FROM meta WHERE key IN (?, ?)",
                                      (_WRITER, _CLEAN_CLOSE)))
        except CaptureError as e:
            raise CaptureError(f"{path}: {e}") from None
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN:  # a -wal without its -shm on a
                raise CaptureError(f"{path}: cannot be read ({e})") from None  # read-only disk
            raise CaptureError(f"{path}: not a wsinspect capture ({e})") from None
        except UnicodeDecodeError:  # Python 3.12's sqlite3 raises it for a text column
            raise CaptureError(f"{path}: not a wsinspect capture (text that is not UTF-8)") from None
        # A capture from before writers were recorded has neither mark: its writer is unknown.
        if _WRITER in marks and _CLEAN_CLOSE not in marks and not _writer_alive(marks[_WRITER]):
            for hop in store._hops.values():
                if hop.outcome is Outcome.OPEN:
                    _end_at_last_record(hop)
        for session in store._sessions.values():
            session.hops.sort(key=lambda h: h.timestamp_start)
        store._next_session_id = max(store._sessions, default=0) + 1
        store._next_hop_id = max(store._hops, default=0) + 1
        return store

    def _add_loaded_hop(self, hop_id: object, session_id: object, data: object) -> None:
        try:
            if type(data) is not str:
                raise RecordError(f"hop record is {type(data).__name__}, not JSON text")
            hop = Hop.from_json(json.loads(data))
            if (hop.id, hop.session_id) != (hop_id, session_id) or hop.id in self._hops:
                raise RecordError("hop record does not match its row")
        except RecursionError:
            raise CaptureError(f"damaged hop record {hop_id} (nested too deeply)") from None
        except ValueError as e:  # RecordError and JSON errors
            raise CaptureError(f"damaged hop record ({e})") from None
        self._hops[hop.id] = hop
        session = self._sessions.setdefault(hop.session_id, Session(hop.session_id))
        session.hops.append(hop)
        self._committed[hop.id] = hop.stats.count

    def _over_time(self) -> bool:
        """SQLite's progress handler: True interrupts the running query."""
        return time.monotonic() > self._query_deadline

    def _read(self, reader: Callable, *args):
        """Run `reader` with each query it makes bounded to QUERY_SECONDS."""
        self._query_deadline = time.monotonic() + QUERY_SECONDS
        try:
            return reader(*args)
        except sqlite3.OperationalError as e:
            if str(e) == "interrupted":
                raise CaptureError(f"reading it took over {QUERY_SECONDS:g} s") from None
            raise
        finally:
            self._query_deadline = float("inf")

    def _query(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        return self._read(lambda: self._db.execute(sql, parameters).fetchall())

    # ----- reading -------------------------------------------------------------------------

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def session(self, session_id: int) -> Session:
        return self._sessions[session_id]

    def hop(self, hop_id: int) -> Hop:
        return self._hops[hop_id]

    def hop_at(self, session_id: int, hop_position: int = 1) -> Hop:
        """Hop `hop_position` of a session, 1 the client-most (a 0 is refused rather than read
        as the last hop)."""
        if hop_position < 1:
            raise IndexError(f"hop positions start at 1, not {hop_position}")
        return self._sessions[session_id].hops[hop_position - 1]

    def message_count(self, session_id: int, hop_position: int = 1) -> int:
        return self.hop_at(session_id, hop_position).stats.count

    def messages(
        self, session_id: int, start: int, stop: int, hop_position: int = 1
    ) -> list[Message]:
        """Messages `start` to `stop` (exclusive) of one hop of a session, in order; hop 1 is
        the client-most, as in findings, reports and exports."""
        return self.hop_messages(self.hop_at(session_id, hop_position).id, start, stop)

    def hop_messages(self, hop_id: int, start: int, stop: int) -> list[Message]:
        committed = self._committed.get(hop_id, 0)
        start = max(0, start)
        result: list[Message] = []
        if start < committed:
            try:
                rows = self._query(
                    "SELECT idx, from_client, type, size, timestamp, injected, sha256, payload, "
                    f"{self._rtt_column}, {self._intercept_columns}, {self._location_columns} "
                    "FROM messages WHERE hop_id=? AND idx>=? AND idx<? ORDER BY idx",
                    (hop_id, start, min(stop, committed)),
                )
                result = [_message(row, self._payloads) for row in rows]
            except _PayloadFileError as e:
                raise CaptureError(
                    f"{self.path}: its large payloads cannot be read ({e})") from None
            except (sqlite3.DatabaseError, CaptureError, ValueError) as e:
                raise CaptureError(
                    f"{self.path or 'the capture'}: damaged, its messages cannot be read ({e})"
                ) from None
        if stop > committed:
            pending = self._pending.get(hop_id, [])
            result += pending[max(0, start - committed) : stop - committed]
        return result

    def hop_timings(self, hop_id: int, start: int, stop: int) -> list[Timing]:
        """When, which way and how big messages `start` to `stop` of a hop were (a pong's round
        trip too), without their payloads: what a chart over time needs, read about ten times
        faster than whole messages. Every value is checked as `hop_messages` checks it."""
        committed = self._committed.get(hop_id, 0)
        start = max(0, start)
        result: list[Timing] = []
        if start < committed:
            rtt = self._rtt_column
            try:
                rows = self._query(
                    f"SELECT from_client, size, timestamp, {rtt}, from_client IN (0, 1) "
                    "AND typeof(size) = 'integer' AND size BETWEEN 0 AND ? "
                    "AND typeof(timestamp) IN ('real', 'integer') AND timestamp BETWEEN 0 AND ? "
                    f"AND ({rtt} IS NULL OR typeof({rtt}) IN ('real', 'integer') "
                    f"AND {rtt} BETWEEN 0 AND ?) "
                    "FROM messages WHERE hop_id=? AND idx>=? AND idx<? ORDER BY idx",
                    (MAX_COUNT, MAX_TIMESTAMP, MAX_SECONDS, hop_id, start, min(stop, committed)),
                )
            except (sqlite3.DatabaseError, CaptureError) as e:
                raise CaptureError(
                    f"{self.path or 'the capture'}: damaged, its messages cannot be read ({e})"
                ) from None
            if not all(row[4] for row in rows):
                raise CaptureError(
                    f"{self.path or 'the capture'}: damaged, a message's direction, size, time "
                    "or round trip is out of range"
                )
            result = [(bool(row[0]), row[1], float(row[2]), row[3]) for row in rows]
        if stop > committed:
            pending = self._pending.get(hop_id, [])
            result += [
                (m.from_client, m.size, m.timestamp, m.rtt)
                for m in pending[max(0, start - committed) : stop - committed]
            ]
        return result

    def iter_timings(self, hop_id: int, chunk: int = 10_000) -> Iterator[Timing]:
        start = 0
        while batch := self.hop_timings(hop_id, start, start + chunk):
            yield from batch
            start += len(batch)

    def iter_messages(self, hop_id: int, chunk: int = 1000) -> Iterator[Message]:
        start = 0
        while batch := self.hop_messages(hop_id, start, start + chunk):
            yield from batch
            start += len(batch)

    # ----- writing -------------------------------------------------------------------------

    def add_hop(self, hop: Hop, *, alone: bool = False) -> Session:
        """Record a handshake seen by a listener: a new session, or another hop of one.
        `alone`: a session of its own, which no later hop joins either (a hop whose clock
        cannot be compared with the others', see wsinspect.lineup)."""
        hop.id = self._next_hop_id
        self._next_hop_id += 1
        key = None if alone else hop.websocket_key
        session = None if alone else correlate.find_session(
            hop, self._by_key.get(key, ()) if key else self._newest
        )
        if session is None:
            session = Session(self._next_session_id)
            self._next_session_id += 1
            self._sessions[session.id] = session
            if not alone:
                self._newest.append(session)
            self._changes.added.add(session.id)
        else:
            self._changes.updated.add(session.id)
        hop.session_id = session.id
        session.hops.append(hop)
        session.hops.sort(key=lambda h: h.timestamp_start)
        if key:  # after the hop joined: expiring the key's old sessions reads the new one's start
            self._remember_key(key, session, hop.timestamp_start)
        self._hops[hop.id] = hop
        self._committed[hop.id] = 0
        self._dirty_hops.add(hop.id)
        self._schedule()
        return session

    def _remember_key(self, key: str, session: Session, now: float) -> None:
        """Keep `session` among the candidates for later hops carrying `key`: the sessions
        that began within the correlation window, oldest first (a later hop cannot continue an
        older one), so the list is as long as the clients reusing one key at once."""
        same_key = self._by_key.setdefault(key, collections.deque())
        self._expire(same_key, now)
        if session not in same_key:
            same_key.append(session)
        self._keys_by_age.append((now, key))
        # Forget the keys of sessions too old to be continued, so memory follows the clients
        # of the last window, not every key ever seen.
        while self._keys_by_age and now - self._keys_by_age[0][0] > correlate.CORRELATION_WINDOW:
            _, old_key = self._keys_by_age.popleft()
            bucket = self._by_key.get(old_key)
            if bucket is not None and not self._expire(bucket, now):
                del self._by_key[old_key]

    @staticmethod
    def _expire(same_key: collections.deque[Session], now: float) -> int:
        """Drop the sessions that began before the correlation window; how many are left."""
        while same_key and now - same_key[0].timestamp_start > correlate.CORRELATION_WINDOW:
            same_key.popleft()
        return len(same_key)

    def hop_changed(self, hop: Hop) -> None:
        """Tell the store a hop's handshake, outcome or close changed."""
        self._dirty_hops.add(hop.id)
        self._changes.updated.add(hop.session_id)
        self._schedule()

    def add_message(self, hop: Hop, message: Message) -> Message:
        """Append a message to a hop; payloads over `max_payload` are capped, keeping the
        full size and SHA-256."""
        if len(message.payload) > self.max_payload:
            message.sha256 = hashlib.sha256(message.payload).hexdigest()
            message.payload = bytes(message.payload[: self.max_payload])
        message.index = hop.stats.count
        hop.stats.add(message)
        self._pending.setdefault(hop.id, []).append(message)
        self._unsubmitted_bytes += len(message.payload)
        self._dirty_hops.add(hop.id)
        self._changes.messages.add(hop.session_id)
        self._schedule()
        return message

    # ----- notification and persistence ----------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback` with each batch of changes; returns the unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def _schedule(self) -> None:
        if self._tick_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a script or a test): flush() delivers
        self._tick_handle = loop.call_later(self.notify_interval, self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        self._notify()
        due = time.monotonic() - self._last_commit >= self.commit_interval
        if due or self._unsubmitted_bytes > _COMMIT_BYTES:
            self.commit()
        if self._dirty_hops:
            self._schedule()

    def _notify(self) -> None:
        if not self._changes:
            return
        changes, self._changes = self._changes, StoreChanges()
        for callback in list(self._subscribers):
            callback(changes)

    def commit(self) -> None:
        """Hand pending messages and hop changes to the capture file as one transaction (on
        the writer thread for a live capture, here otherwise)."""
        self._last_commit = time.monotonic()
        self._apply_confirmations()
        if not self._dirty_hops:
            return
        counts: dict[int, int] = {}
        batches: list[tuple[int, list[Message]]] = []
        for hop_id, messages in self._pending.items():
            fresh = messages[self._in_flight[hop_id] :]
            if fresh:
                counts[hop_id] = len(fresh)
                batches.append((hop_id, fresh))
        hop_rows = [
            (h.id, h.session_id, json.dumps(h.to_json()))
            for h in (self._hops[i] for i in self._dirty_hops)
        ]
        self._dirty_hops.clear()
        self._unsubmitted_bytes = 0
        for hop_id, n in counts.items():
            self._in_flight[hop_id] += n
        if self._writer is None:
            _write_batch(self._db, batches, hop_rows)
            self._confirm(counts)
            return
        try:
            loop = asyncio.get_running_loop()
            on_done = lambda: loop.call_soon_threadsafe(self._apply_confirmations)
        except RuntimeError:
            on_done = None
        self._writer.submit(batches, hop_rows, counts, on_done)

    def _apply_confirmations(self) -> None:
        while self._writer is not None and self._writer.done:
            self._confirm(self._writer.done.popleft())

    def _confirm(self, counts: dict[int, int]) -> None:
        for hop_id, n in counts.items():
            del self._pending[hop_id][:n]
            self._in_flight[hop_id] -= n
            self._committed[hop_id] += n

    def flush(self) -> None:
        """Deliver pending notifications and commit everything now."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        self._notify()
        self.commit()
        if self._writer is not None:
            self._writer.drain()
            self._apply_confirmations()

    def close(self) -> None:
        self.flush()
        if (writer := self._writer) is not None:
            writer.stop()
            self._writer = None
            if not writer.failed:
                self._mark_clean_close()
        self._db.close()
        if self._payloads is not None:
            self._payloads.close()

    def _mark_clean_close(self) -> None:
        """Tell readers the writer closed the capture itself: it was not killed, so they
        leave what it recorded as it is."""
        try:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_CLEAN_CLOSE, "1"))
        except sqlite3.Error as e:
            logger.error(f"marking {self.path} closed failed ({e})")
