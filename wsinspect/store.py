"""The session store: the one place sessions live, live or loaded from a capture file.

Sessions and hops are kept in memory (they are small); messages go to the capture file, a
SQLite database in WAL mode, and are read back by index ranges so a view can page through
millions. Writes are batched: subscribers hear of changes every `notify_interval` seconds and
the file is committed every `commit_interval` seconds, so a crash loses at most about that much.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import correlate
from .model import Hop, Message, MessageType, Session

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
    payload BLOB NOT NULL
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


def _create_private(path: Path) -> None:
    """Captures hold payloads and credentials: create them readable by their owner only."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.close(fd)


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
        self._db = self._connect(self.path)
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT INTO meta VALUES ('format', ?)", (CAPTURE_FORMAT,))
        self._db.commit()

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
        self._pending: dict[int, list[Message]] = {}  # hop id -> messages not yet committed
        self._pending_bytes = 0
        self._dirty_hops: set[int] = set()
        self._committed: dict[int, int] = {}  # hop id -> messages committed
        self._last_commit = time.monotonic()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_session_id = 1
        self._next_hop_id = 1

    @staticmethod
    def _connect(path: Path | None) -> sqlite3.Connection:
        db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.isolation_level = "DEFERRED"
        return db

    @classmethod
    def open(cls, path: str | os.PathLike) -> SessionStore:
        """Open a saved capture (also one whose writer was killed) through the same API."""
        path = Path(path)
        if not path.is_file():
            raise CaptureError(f"{path}: no such capture file")
        store = cls.__new__(cls)
        store._init_state(path)
        try:
            db = cls._connect(path)
            row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if row is None or row[0] != CAPTURE_FORMAT:
                raise CaptureError(f"{path}: not a wsinspect capture (format {row and row[0]!r})")
            rows = db.execute("SELECT data FROM hops ORDER BY id").fetchall()
        except sqlite3.DatabaseError as e:
            raise CaptureError(f"{path}: not a wsinspect capture ({e})") from None
        store._db = db
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
            rows = self._db.execute(
                "SELECT idx, from_client, type, size, timestamp, injected, sha256, payload "
                "FROM messages WHERE hop_id=? AND idx>=? AND idx<? ORDER BY idx",
                (hop_id, start, min(stop, committed)),
            )
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
                )
                for idx, fc, typ, size, ts, inj, sha, payload in rows
            ]
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
        self._pending_bytes += len(message.payload)
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
        if due or self._pending_bytes > 64 * 1024 * 1024:
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
        """Write pending messages and hop changes to the capture file in one transaction."""
        self._last_commit = time.monotonic()
        if not self._dirty_hops:
            return
        rows = [
            (
                hop_id,
                m.index,
                int(m.from_client),
                m.type.value,
                m.size,
                m.timestamp,
                int(m.injected),
                m.sha256,
                m.payload,
            )
            for hop_id, messages in self._pending.items()
            for m in messages
        ]
        with self._db:
            self._db.executemany(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO hops VALUES (?, ?, ?)",
                [
                    (h.id, h.session_id, json.dumps(h.to_json()))
                    for h in (self._hops[i] for i in self._dirty_hops)
                ],
            )
        for hop_id, messages in self._pending.items():
            self._committed[hop_id] += len(messages)
        self._pending.clear()
        self._pending_bytes = 0
        self._dirty_hops.clear()

    def flush(self) -> None:
        """Deliver pending notifications and commit everything now."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        self._notify()
        self.commit()

    def close(self) -> None:
        self.flush()
        self._db.close()
