"""The session store: the one place sessions live, live or loaded from a capture file.

Sessions and hops are kept in memory (they are small); messages go to the capture file, a
SQLite database in WAL mode, and are read back by index ranges so a view can page through
millions. Writes are batched: subscribers hear of changes every `notify_interval` seconds and
the file is committed every `commit_interval` seconds, so a crash loses at most about that much.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import os
import queue
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import correlate
from .model import Hop, Message, MessageType, Session

logger = logging.getLogger("wsinspect")

CAPTURE_FORMAT = "wsinspect-capture/1"
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024

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
    rtt REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_hop ON messages (hop_id, idx);
"""


class CaptureError(Exception):
    """A capture file that cannot be opened or read; the message names the file and why."""


@dataclass
class StoreChanges:
    """What changed since the last notification."""

    added: set[int] = field(default_factory=set)  # new session ids
    updated: set[int] = field(default_factory=set)  # sessions whose hops or outcome changed
    messages: set[int] = field(default_factory=set)  # sessions with new messages

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.messages)


Subscriber = Callable[[StoreChanges], None]


def temporary_capture_path() -> Path:
    """A fresh path in the temp folder for a capture nobody named."""
    fd, name = tempfile.mkstemp(prefix="wsinspect-", suffix=".db")
    os.close(fd)
    os.unlink(name)  # SessionStore creates it, owner-only
    return Path(name)


def _create_private(path: Path) -> None:
    """Captures hold payloads and credentials: create them readable by their owner only."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.close(fd)


_INSERT_MESSAGE = "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_HOP = "INSERT OR REPLACE INTO hops VALUES (?, ?, ?)"


def _connect(path: Path | None) -> sqlite3.Connection:
    db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # Checkpoint every 64 MiB of WAL rather than 4 MiB: each checkpoint syncs, and at 1 MiB
    # messages the default made the writer sync dozens of times a second.
    db.execute("PRAGMA wal_autocheckpoint=16384")
    db.isolation_level = "DEFERRED"
    return db


def _message_rows(batches: list[tuple[int, list[Message]]]) -> Iterator[tuple]:
    """Rows for the messages table, made as SQLite takes them: on the writer thread, and
    interleaved with the inserts, which release the GIL. Made up front on the event loop, a
    0.5 s batch at 20,000 messages a second held the loop for 10-16 ms."""
    for hop_id, messages in batches:
        for m in messages:
            yield (hop_id, m.index, int(m.from_client), m.type.value, m.size, m.timestamp,
                   int(m.injected), m.sha256, m.payload, m.rtt)


def _write_batch(db: sqlite3.Connection, rows: Iterable[tuple], hop_rows: list[tuple]) -> None:
    with db:
        db.executemany(_INSERT_MESSAGE, rows)
        db.executemany(_UPSERT_HOP, hop_rows)


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

    def submit(self, rows, hop_rows, counts, on_done: Callable[[], None] | None) -> None:
        self._queue.put((rows, hop_rows, counts, on_done))

    def _run(self) -> None:
        db = _connect(self.path)
        while (item := self._queue.get()) is not None:
            rows, hop_rows, counts, on_done = item
            try:
                if not self.failed:
                    _write_batch(db, rows, hop_rows)
                    self.done.append(counts)
                    if on_done is not None:
                        on_done()
            except (sqlite3.Error, OSError) as e:
                # Nothing is dropped: unconfirmed messages stay in memory and readable.
                self.failed = True
                logger.error(f"writing {self.path} failed ({e}); recording continues in memory")
            except RuntimeError:
                pass  # the event loop closed before the confirmation: flush() applies it
            finally:
                self._queue.task_done()
        self._queue.task_done()
        db.close()

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
            if self.path.exists():
                raise CaptureError(f"{self.path}: already exists; choose a new capture file")
            _create_private(self.path)
        self._db = _connect(self.path)
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT INTO meta VALUES ('format', ?)", (CAPTURE_FORMAT,))
        self._db.commit()
        if self.path is not None:
            self._writer = _BackgroundWriter(self.path)

    def _init_state(
        self,
        path: str | os.PathLike | None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        notify_interval: float = 0.02,
        commit_interval: float = 0.5,
    ) -> None:
        self.path = Path(path) if path is not None else None
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
        self._rtt_column = "rtt"

    @classmethod
    def open(cls, path: str | os.PathLike) -> SessionStore:
        """Open a saved capture (also one whose writer was killed) through the same API."""
        path = Path(path)
        if not path.is_file():
            raise CaptureError(f"{path}: no such capture file")
        store = cls.__new__(cls)
        store._init_state(path)
        try:
            db = _connect(path)
            row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if row is None or row[0] != CAPTURE_FORMAT:
                raise CaptureError(f"{path}: not a wsinspect capture (format {row and row[0]!r})")
            rows = db.execute("SELECT data FROM hops ORDER BY id").fetchall()
        except sqlite3.DatabaseError as e:
            raise CaptureError(f"{path}: not a wsinspect capture ({e})") from None
        store._db = db
        store._rtt_column = "rtt" if any(
            column[1] == "rtt" for column in db.execute("PRAGMA table_info(messages)")
        ) else "NULL"  # captures from before pong RTTs were recorded
        for (data,) in rows:
            try:
                hop = Hop.from_json(json.loads(data))
            except (ValueError, KeyError, TypeError) as e:
                raise CaptureError(f"{path}: damaged hop record ({e!r})") from None
            store._hops[hop.id] = hop
            session = store._sessions.setdefault(hop.session_id, Session(hop.session_id))
            session.hops.append(hop)
            store._committed[hop.id] = hop.stats.count
        for session in store._sessions.values():
            session.hops.sort(key=lambda h: h.timestamp_start)
        store._next_session_id = max(store._sessions, default=0) + 1
        store._next_hop_id = max(store._hops, default=0) + 1
        return store

    # ----- reading -------------------------------------------------------------------------

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def session(self, session_id: int) -> Session:
        return self._sessions[session_id]

    def hop(self, hop_id: int) -> Hop:
        return self._hops[hop_id]

    def message_count(self, session_id: int, hop_position: int = 0) -> int:
        return self._sessions[session_id].hops[hop_position].stats.count

    def messages(
        self, session_id: int, start: int, stop: int, hop_position: int = 0
    ) -> list[Message]:
        """Messages `start` to `stop` (exclusive) of one hop of a session, in order."""
        hop = self._sessions[session_id].hops[hop_position]
        return self.hop_messages(hop.id, start, stop)

    def hop_messages(self, hop_id: int, start: int, stop: int) -> list[Message]:
        committed = self._committed.get(hop_id, 0)
        start = max(0, start)
        result: list[Message] = []
        if start < committed:
            try:
                rows = self._db.execute(
                    "SELECT idx, from_client, type, size, timestamp, injected, sha256, payload, "
                    f"{self._rtt_column} FROM messages WHERE hop_id=? AND idx>=? AND idx<? "
                    "ORDER BY idx",
                    (hop_id, start, min(stop, committed)),
                ).fetchall()
                result = [
                    Message(
                        index=idx,
                        from_client=bool(fc),
                        type=MessageType(typ),
                        size=size,
                        timestamp=ts,
                        injected=bool(inj),
                        sha256=sha,
                        payload=bytes(payload),
                        rtt=rtt,
                    )
                    for idx, fc, typ, size, ts, inj, sha, payload, rtt in rows
                ]
            except (sqlite3.DatabaseError, ValueError) as e:
                raise CaptureError(
                    f"{self.path or 'the capture'}: damaged, its messages cannot be read ({e})"
                ) from None
        if stop > committed:
            pending = self._pending.get(hop_id, [])
            result += pending[max(0, start - committed) : stop - committed]
        return result

    def iter_messages(self, hop_id: int, chunk: int = 1000) -> Iterator[Message]:
        start = 0
        while batch := self.hop_messages(hop_id, start, start + chunk):
            yield from batch
            start += len(batch)

    # ----- writing -------------------------------------------------------------------------

    def add_hop(self, hop: Hop) -> Session:
        """Record a handshake seen by a listener: a new session, or another hop of one."""
        hop.id = self._next_hop_id
        self._next_hop_id += 1
        recent = [s for s in reversed(self._sessions.values())][:200]
        session = correlate.find_session(hop, recent)
        if session is None:
            session = Session(self._next_session_id)
            self._next_session_id += 1
            self._sessions[session.id] = session
            self._changes.added.add(session.id)
        else:
            self._changes.updated.add(session.id)
        hop.session_id = session.id
        session.hops.append(hop)
        session.hops.sort(key=lambda h: h.timestamp_start)
        self._hops[hop.id] = hop
        self._committed[hop.id] = 0
        self._dirty_hops.add(hop.id)
        self._schedule()
        return session

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
        if due or self._unsubmitted_bytes > 64 * 1024 * 1024:
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
        rows = _message_rows(batches)
        hop_rows = [
            (h.id, h.session_id, json.dumps(h.to_json()))
            for h in (self._hops[i] for i in self._dirty_hops)
        ]
        self._dirty_hops.clear()
        self._unsubmitted_bytes = 0
        for hop_id, n in counts.items():
            self._in_flight[hop_id] += n
        if self._writer is None:
            _write_batch(self._db, rows, hop_rows)
            self._confirm(counts)
            return
        try:
            loop = asyncio.get_running_loop()
            on_done = lambda: loop.call_soon_threadsafe(self._apply_confirmations)
        except RuntimeError:
            on_done = None
        self._writer.submit(rows, hop_rows, counts, on_done)

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
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self._db.close()
