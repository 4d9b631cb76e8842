"""The session store on its own: range reads, batching, persistence, bad files."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders import make_hop
from wsinspect.model import Close, Message, MessageType, Outcome
from wsinspect.store import CAPTURE_ENDED, CaptureError, SessionStore

ROOT = Path(__file__).resolve().parent.parent


def text(i: int, from_client: bool = True) -> Message:
    payload = f"message {i}".encode()
    return Message(from_client, MessageType.TEXT, len(payload), payload, 100.0 + i)


def test_range_reads_span_committed_and_pending_messages(tmp_path):
    store = SessionStore(tmp_path / "c.db")
    session = store.add_hop(make_hop())
    hop = session.first_hop
    for i in range(10):
        store.add_message(hop, text(i))
    store.commit()
    for i in range(10, 15):
        store.add_message(hop, text(i))
    assert store.message_count(session.id) == 15
    got = store.messages(session.id, 8, 12)
    assert [m.index for m in got] == [8, 9, 10, 11]
    assert [m.payload for m in got] == [b"message 8", b"message 9", b"message 10", b"message 11"]
    assert store.messages(session.id, 14, 100)[0].payload == b"message 14"
    assert store.messages(session.id, 20, 30) == []
    assert len(list(store.iter_messages(hop.id, chunk=4))) == 15


def test_a_hops_messages_are_read_by_its_1_based_position_as_findings_and_exports_number_it(
    tmp_path,
):
    store = SessionStore(tmp_path / "c.db")
    session = store.add_hop(make_hop(mode="regular", t=100.0))
    second = store.add_hop(make_hop(mode="reverse:http://127.0.0.1:9000@8081", t=100.1))
    assert second.id == session.id and len(second.hops) == 2
    store.add_message(second.hops[0], text(0))
    for i in range(3):
        store.add_message(second.hops[1], text(i, from_client=False))
    assert store.message_count(session.id) == store.message_count(session.id, 1) == 1
    assert store.message_count(session.id, 2) == 3
    assert [m.from_client for m in store.messages(session.id, 0, 10, 2)] == [False] * 3
    with pytest.raises(IndexError, match="start at 1"):
        store.messages(session.id, 0, 10, 0)  # not the last hop, as a Python index would be


def test_reopened_capture_has_the_same_sessions_and_bytes(tmp_path):
    path = tmp_path / "c.db"
    store = SessionStore(path)
    session = store.add_hop(make_hop())
    hop = session.first_hop
    blob = bytes(range(256))
    store.add_message(hop, Message(False, MessageType.BINARY, 256, blob, 1.0))
    hop.outcome = Outcome.CLOSED
    store.hop_changed(hop)
    store.close()
    again = SessionStore.open(path)
    (reopened,) = again.sessions()
    assert reopened.outcome is Outcome.CLOSED
    assert reopened.first_hop.request_headers == hop.request_headers
    assert again.messages(reopened.id, 0, 1)[0].payload == blob


def test_hops_with_the_same_key_from_two_listeners_are_one_session():
    store = SessionStore()
    first = store.add_hop(make_hop(key="abc", mode="regular@8080", t=100.0))
    second = store.add_hop(make_hop(key="abc", mode="reverse:http://127.0.0.1:9000@8081", t=100.2))
    other = store.add_hop(make_hop(key="xyz", mode="reverse:http://127.0.0.1:9000@8081", t=100.3))
    same_listener = store.add_hop(make_hop(key="abc", mode="regular@8080", t=100.4))
    assert first is second
    assert [h.mode for h in first.hops] == ["regular@8080", "reverse:http://127.0.0.1:9000@8081"]
    assert other is not first and same_listener is not first
    assert len(store.sessions()) == 3


def test_a_second_listeners_hop_finds_its_session_among_many():
    """add_hop looks sessions up by key: a hop joins its session however many sessions
    started since (more than the 200 newest once looked at), and keyless hops still follow
    their predecessor by elimination."""
    store = SessionStore()
    first = store.add_hop(make_hop(key="abc", mode="regular@8080", t=100.0))
    for n in range(500):
        store.add_hop(make_hop(key=f"k{n}", mode="regular@8080", t=100.001 + n / 100_000))
    assert store.add_hop(make_hop(key="abc", mode="reverse:http://127.0.0.1:9000@8081", t=100.2)) is first
    keyless = store.add_hop(make_hop(key=None, mode="regular@8080", t=200.0))
    assert store.add_hop(make_hop(key=None, mode="reverse:http://127.0.0.1:9000@8081", t=200.1)) is keyless
    assert len(store.sessions()) == 502


async def test_subscribers_hear_of_changes_in_batches():
    store = SessionStore(notify_interval=0.05)
    batches = []
    store.subscribe(batches.append)
    session = store.add_hop(make_hop())
    for i in range(1000):
        store.add_message(session.first_hop, text(i))
    await asyncio.sleep(0.2)
    assert len(batches) == 1
    assert batches[0].added == {session.id} and batches[0].messages == {session.id}


async def test_messages_are_committed_within_the_commit_interval(tmp_path):
    path = tmp_path / "c.db"
    store = SessionStore(path, commit_interval=0.2)
    session = store.add_hop(make_hop())
    store.add_message(session.first_hop, text(1))
    await asyncio.sleep(0.6)
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT count(*) FROM messages").fetchone() == (1,)


def test_new_capture_refuses_to_overwrite_and_is_private(tmp_path):
    path = tmp_path / "c.db"
    SessionStore(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(CaptureError, match="already exists"):
        SessionStore(path)


@pytest.mark.parametrize(
    "content", [b"", b"garbage" * 1000, b"SQLite format 3\x00" + b"\x00" * 200]
)
def test_unreadable_captures_raise_capture_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.db"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as info:
        SessionStore.open(path)
    assert str(info.value).startswith(f"{path}: ")


def test_a_foreign_sqlite_database_is_not_a_capture(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(CaptureError, match="not a wsinspect capture"):
        SessionStore.open(path)


# ----- a capture whose writer was killed ---------------------------------------------------------

KILLED_WRITER = """
import os, signal, sys
from tests.builders import make_hop
from tests.test_store import text
from wsinspect.store import SessionStore
store = SessionStore(sys.argv[1])
answered = store.add_hop(make_hop(key="k1")).first_hop
answered.response_status, answered.timestamp_response = 101, 100.5
store.hop_changed(answered)
for i in range(3):
    store.add_message(answered, text(i))
store.add_hop(make_hop(key="k2", t=104.0))  # its handshake never got an answer
store.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_open_hops_end_at_their_last_record(tmp_path):
    path = tmp_path / "c.db"
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], cwd=ROOT, timeout=60)
    assert result.returncode == -signal.SIGKILL
    answered, unanswered = sorted(SessionStore.open(path).sessions(), key=lambda s: s.id)
    assert answered.outcome is Outcome.CLOSED and answered.timestamp_end == 102.0  # message 2
    assert answered.close == Close(abnormal=True, abnormal_reason=CAPTURE_ENDED, timestamp=102.0)
    assert answered.duration(now=1e12) == 2.0
    assert unanswered.outcome is Outcome.FAILED and unanswered.timestamp_end == 104.0
    assert unanswered.first_hop.error == CAPTURE_ENDED and unanswered.close is None


def test_a_capture_being_written_keeps_its_open_sessions_open(tmp_path):
    store = SessionStore(tmp_path / "c.db")
    hop = store.add_hop(make_hop()).first_hop
    store.add_message(hop, text(0))
    store.flush()
    (live,) = SessionStore.open(tmp_path / "c.db").sessions()
    assert live.outcome is Outcome.OPEN and live.timestamp_end is None and live.close is None
    store.close()


@pytest.mark.parametrize("forget_writer", [False, True], ids=["closed", "from before writer marks"])
def test_open_sessions_stay_open_in_a_closed_or_older_capture(tmp_path, forget_writer):
    path = tmp_path / "c.db"
    store = SessionStore(path)
    store.add_hop(make_hop())
    store.close()
    if forget_writer:
        with sqlite3.connect(path) as db:
            db.execute("DELETE FROM meta WHERE key != 'format'")
        db.close()
    (session,) = SessionStore.open(path).sessions()
    assert session.outcome is Outcome.OPEN and session.timestamp_end is None
