"""Large payloads in the payload file beside a capture (X-payloads): written by the store's
writer thread, read back live, reopened, while the writer runs and after it was killed, by
exports and lined-up captures; old captures without it; removed with the capture, also by the
real app's temporary capture."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.builders import make_hop
from wsinspect import formats
from wsinspect import store as store_module
from wsinspect.formats.common import add_imported_hop
from wsinspect.lineup import open_captures
from wsinspect.model import Message, MessageType
from wsinspect.runtime import remove_capture
from wsinspect.store import LARGE_PAYLOAD, CaptureError, SessionStore, payloads_path

from .test_cli import ends_after_hangup, read_terminal_until, start_in_terminal, wsinspect
from .test_formats import secret_hop
from .test_lineup import LAPTOP, SERVER, Synthetic

ROOT = Path(__file__).resolve().parent.parent
CAP = 3 * LARGE_PAYLOAD
# Below, at and just over the threshold, over it, and over the cap (kept as a prefix).
SIZES = [0, 1, LARGE_PAYLOAD - 1, LARGE_PAYLOAD, LARGE_PAYLOAD + 1, 2 * LARGE_PAYLOAD + 5,
         CAP + 1, 10 * LARGE_PAYLOAD]


def payload(i: int, size: int) -> bytes:
    """`size` bytes that differ at every offset from message to message."""
    block = hashlib.sha256(f"payload {i}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def binary(i: int, size: int) -> Message:
    return Message(i % 2 == 0, MessageType.BINARY, size, payload(i, size), 100.0 + i)


def expected(i: int, size: int, cap: int = CAP) -> tuple[int, bytes, str | None]:
    full = payload(i, size)
    capped = size > cap
    return size, full[:cap], hashlib.sha256(full).hexdigest() if capped else None


def seen(messages: list[Message]) -> list[tuple[int, bytes, str | None]]:
    return [(m.size, m.payload, m.sha256) for m in messages]


def stored_rows(path: Path) -> list[tuple[int, int | None, int | None]]:
    """(inline payload length, payload_at, payload_len) of each message row."""
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT length(payload), payload_at, payload_len FROM messages ORDER BY idx").fetchall()
    db.close()
    return rows


def test_payloads_round_trip_inline_below_the_threshold_and_in_the_file_from_it(tmp_path):
    path = tmp_path / "c.db"
    store = SessionStore(path, max_payload=CAP)
    hop = store.add_hop(make_hop()).first_hop
    for i, size in enumerate(SIZES):
        store.add_message(hop, binary(i, size))
    want = [expected(i, size) for i, size in enumerate(SIZES)]
    assert seen(store.hop_messages(hop.id, 0, 100)) == want  # pending, in memory
    store.flush()
    assert seen(store.hop_messages(hop.id, 0, 100)) == want  # committed by the writer thread
    assert seen(store.hop_messages(hop.id, 3, 6)) == want[3:6]
    store.close()

    kept = [min(size, CAP) for size in SIZES]
    located = [n for n in kept if n >= LARGE_PAYLOAD]
    offsets = [sum(located[:k]) for k in range(len(located))]
    assert stored_rows(path) == [
        (n, None, None) if n < LARGE_PAYLOAD else (0, offsets.pop(0), n) for n in kept
    ]
    companion = payloads_path(path)
    assert companion.name == "c.db-payloads"
    assert companion.stat().st_size == sum(located)
    assert companion.stat().st_mode & 0o777 == 0o600
    reopened = SessionStore.open(path)
    assert seen(list(reopened.iter_messages(hop.id, chunk=3))) == want
    assert list(reopened.iter_timings(hop.id)) == [
        (i % 2 == 0, size, 100.0 + i, None) for i, size in enumerate(SIZES)
    ]
    reopened.close()


# Around a block, over the payload file's 4 MiB staging buffer, between blocks, odd, and one
# recorded as a bytearray (which goes through the staging buffer).
BLOCKY = [LARGE_PAYLOAD + 1, 5 * 2**20 + 7, 3 * 2**20 + 100, 3 * LARGE_PAYLOAD + 3, 300_001]
BLOCKY_CAP = 8 * 2**20


def record_one_commit_at_a_time(folder: Path) -> dict:
    """Record BLOCKY, committing after each message: the payload file's size after each
    commit and after close, where the rows put each payload, and whether every message read
    back, live and reopened."""
    path = folder / "c.db"
    store = SessionStore(path, max_payload=BLOCKY_CAP)
    hop = store.add_hop(make_hop()).first_hop
    want = [expected(i, size, BLOCKY_CAP) for i, size in enumerate(BLOCKY)]
    sizes, live = [], []
    for i, size in enumerate(BLOCKY):
        message = binary(i, size)
        if i == len(BLOCKY) - 1:
            message.payload = bytearray(message.payload)
        store.add_message(hop, message)
        store.flush()
        sizes.append(payloads_path(path).stat().st_size)
        live.append(seen(store.hop_messages(hop.id, 0, 100)) == want[:i + 1])
    store.close()
    reopened = SessionStore.open(path)
    again = seen(list(reopened.iter_messages(hop.id, chunk=2))) == want
    reopened.close()
    return {"sizes": sizes, "closed": payloads_path(path).stat().st_size, "live": live,
            "reopened": again, "rows": stored_rows(path)}


def test_the_payload_file_is_written_in_whole_blocks_past_the_page_cache(tmp_path):
    """O_DIRECT: each commit writes the last, partial block padded (rewritten whole by the
    next), payloads of 256 KiB or more start where they line up with their memory (up to a
    block of zeros before them), and close cuts the padding off."""
    result = record_one_commit_at_a_time(tmp_path)
    assert result["live"] == [True] * len(BLOCKY) and result["reopened"]
    rows = result["rows"]
    assert [length for _, _, length in rows] == BLOCKY
    gaps = [at - (previous_at + previous_length)
            for (_, previous_at, previous_length), (_, at, _) in zip([(0, 0, 0)] + rows, rows)]
    from_memory = [size >= 256 * 1024 for size in BLOCKY[:-1]] + [False]  # the bytearray: staged
    assert [0 <= gap < 4096 if direct else gap == 0
            for gap, direct in zip(gaps, from_memory)] == [True] * len(BLOCKY)
    ends = [at + length for _, at, length in rows]
    assert [size % 4096 for size in result["sizes"]] == [0] * len(BLOCKY)
    assert [size - end for size, end in zip(result["sizes"], ends)] == [
        -end % 4096 for end in ends]
    assert result["closed"] == ends[-1]


def test_a_file_system_without_o_direct_gets_plain_writes(tmp_path):
    """ramfs refuses O_DIRECT: the same capture, written plainly, in a mount namespace of the
    test's own."""
    folder = tmp_path / "ram"
    run = on_a_mount_of_its_own(folder, "-t ramfs ramfs", "record_one_commit_at_a_time")
    result = json.loads(run.stdout)
    ends = [sum(BLOCKY[:i + 1]) for i in range(len(BLOCKY))]
    assert result == {"sizes": ends, "closed": ends[-1], "live": [True] * len(BLOCKY),
                      "reopened": True,
                      "rows": [[0, end - size, size] for end, size in zip(ends, BLOCKY)]}


def record_in_one_commit(folder: Path, pieces: int | None = None) -> dict:
    """Record BLOCKY three times over and five 64 KiB messages in one commit, its gathered
    writes taking at most `pieces` pieces (else the system's IOV_MAX, 1024 on Linux): how many
    writes it took, and whether every message read back, live and reopened."""
    sizes = BLOCKY * 3 + [LARGE_PAYLOAD] * 5
    want = [expected(i, size, BLOCKY_CAP) for i, size in enumerate(sizes)]
    writes = []
    pwritev, limit = os.pwritev, store_module._PayloadFile.PIECES

    def counted(fd, buffers, offset):
        writes.append(len(buffers))
        return pwritev(fd, buffers, offset)

    os.pwritev = counted
    store_module._PayloadFile.PIECES = pieces or limit
    try:
        path = folder / "c.db"
        store = SessionStore(path, max_payload=BLOCKY_CAP)
        hop = store.add_hop(make_hop()).first_hop
        for i, size in enumerate(sizes):
            store.add_message(hop, binary(i, size))
        store.flush()
        live = seen(store.hop_messages(hop.id, 0, 100)) == want
        store.close()
    finally:
        os.pwritev, store_module._PayloadFile.PIECES = pwritev, limit
    reopened = SessionStore.open(path)
    again = seen(list(reopened.iter_messages(hop.id, chunk=4))) == want
    reopened.close()
    _, at, length = stored_rows(path)[-1]
    return {"writes": writes, "live": live, "reopened": again,
            "closed": payloads_path(path).stat().st_size == at + length}


def test_a_commit_is_one_gathered_write_or_as_few_as_its_pieces_allow(tmp_path):
    """Every payload of a commit goes on file in one write (a write each cost the writer a
    system call, a turn at the GIL and the disk a request); more pieces than a write takes
    (here three) make more writes, and the same file."""
    (tmp_path / "all").mkdir()
    (tmp_path / "three").mkdir()
    assert record_in_one_commit(tmp_path / "all") == {
        "writes": [19], "live": True, "reopened": True, "closed": True}
    assert record_in_one_commit(tmp_path / "three", pieces=3) == {
        "writes": [3, 3, 3, 3, 3, 3, 1], "live": True, "reopened": True, "closed": True}
    on_ramfs = json.loads(on_a_mount_of_its_own(tmp_path / "ram", "-t ramfs ramfs",
                                                "record_in_one_commit").stdout)
    assert on_ramfs == {"writes": [20], "live": True, "reopened": True, "closed": True}


def on_a_mount_of_its_own(folder: Path, mount: str, recorder: str) -> subprocess.CompletedProcess:
    """Run this module's `recorder` on `folder` in a process of its own, with the file system
    `mount` (mount's arguments before the mount point) mounted there, in a mount namespace
    of its own (the mount vanishes with it); its JSON result is on stdout."""
    folder.mkdir()
    script = f'mount {mount} "$1" && shift && exec "$@"'
    code = ("import json, sys; from pathlib import Path; import tests.test_payload_file as t; "
            f"print(json.dumps(t.{recorder}(Path(sys.argv[1]))))")
    run = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(folder),
                          sys.executable, "-c", code, str(folder)],
                         check=False, capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return run


def record_onto_a_full_disk(folder: Path) -> dict:
    """Record eight 1 MiB messages, committing after each; whether they all read back before
    the store closes, and that it closed."""
    store = SessionStore(folder / "c.db", max_payload=2**20)
    hop = store.add_hop(make_hop()).first_hop
    for i in range(8):
        store.add_message(hop, binary(i, 2**20))
        store.flush()
    readable = seen(store.hop_messages(hop.id, 0, 100)) == [expected(i, 2**20, 2**20)
                                                            for i in range(8)]
    store.close()
    return {"readable": readable, "closed": True}


def test_a_full_file_system_is_one_line_and_loses_no_message(tmp_path):
    """A 4 MiB tmpfs fills up at the fourth message: the writer says so once, and every
    message stays readable from memory."""
    folder = tmp_path / "small"
    run = on_a_mount_of_its_own(folder, "-t tmpfs -o size=4m tmpfs", "record_onto_a_full_disk")
    assert json.loads(run.stdout) == {"readable": True, "closed": True}
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"writing {folder / 'c.db'} failed (") and line.endswith(
        "); recording continues in memory"), line
    assert "full" in line or "No space left on device" in line


def test_an_unexpected_error_in_the_writer_is_one_line_and_hangs_nothing(tmp_path, caplog):
    """Whatever the writer thread meets (here a payload that is text, which no recorder
    makes), it says so once and goes on confirming nothing: had it died, the next commits
    would have waited for it forever."""
    path = tmp_path / "c.db"
    store = SessionStore(path)
    hop = store.add_hop(make_hop()).first_hop
    odd = Message(True, MessageType.TEXT, LARGE_PAYLOAD, "x" * LARGE_PAYLOAD, 100.0)
    store.add_message(hop, odd)
    store.flush()
    for i in range(1, 7):  # more commits than the writer's queue holds
        store.add_message(hop, binary(i, LARGE_PAYLOAD))
        store.flush()
    assert [m.payload for m in store.hop_messages(hop.id, 0, 100)] == [
        odd.payload, *(payload(i, LARGE_PAYLOAD) for i in range(1, 7))]
    store.close()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"writing {path} failed (TypeError(") and errors[0].endswith(
        "); recording continues in memory")


def test_small_payloads_make_no_payload_file_and_memory_stores_keep_every_payload(tmp_path):
    path = tmp_path / "c.db"
    store = SessionStore(path)
    hop = store.add_hop(make_hop()).first_hop
    store.add_message(hop, binary(0, LARGE_PAYLOAD - 1))
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db"]

    memory = SessionStore(max_payload=CAP)
    hop = memory.add_hop(make_hop()).first_hop
    for i, size in enumerate(SIZES):
        memory.add_message(hop, binary(i, size))
    memory.flush()
    assert seen(memory.hop_messages(hop.id, 0, 100)) == [
        expected(i, size) for i, size in enumerate(SIZES)]
    located = memory._db.execute("SELECT count(*) FROM messages WHERE payload_at IS NOT NULL")
    assert located.fetchone() == (0,)
    memory.close()


# A writer that records large and small messages for `seconds` (a few hundred), committing as
# it goes (the writer thread drains in the background), says how many it recorded, and is
# killed.
WRITER = """
import os, signal, sys, time
from tests.builders import make_hop
from tests.test_payload_file import binary, size_of
from wsinspect.store import SessionStore
store = SessionStore(sys.argv[1], max_payload=1 << 20)
hop = store.add_hop(make_hop()).first_hop
deadline = time.monotonic() + float(sys.argv[2])
i = 0
while i < 40 or time.monotonic() < deadline:
    store.add_message(hop, binary(i, size_of(i)))
    i += 1
    store.commit()
    if i == 20:
        store.flush()
        print("recording", flush=True)
    time.sleep(0.004)
store.flush()
print(i, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def size_of(i: int) -> int:
    """Every fourth message small, the others from the threshold to 320 KiB."""
    return 100 + i if i % 4 == 3 else LARGE_PAYLOAD + (i * 104_729) % (1 << 18)


def check_capture(path: Path) -> int:
    """Open `path`, read every message and check it; how many there were."""
    store = SessionStore.open(path)
    try:
        (session,) = store.sessions()
        messages = list(store.iter_messages(session.first_hop.id, chunk=7))
    finally:
        store.close()
    assert seen(messages) == [expected(i, size_of(i), 1 << 20) for i in range(len(messages))]
    return len(messages)


def test_a_live_capture_reads_while_its_writer_appends_and_after_it_was_killed(tmp_path):
    path = tmp_path / "c.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "1.5"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "recording\n"
        counts = []
        while writer.poll() is None:
            counts.append(check_capture(path))
        total = int(writer.stdout.readline())
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert counts and counts[0] >= 20 and counts == sorted(counts)
    assert check_capture(path) == total  # everything flushed before the kill
    assert (tmp_path / "c.db-wal").exists()  # read as a killed writer left it


def test_old_captures_without_payload_locations_still_read_and_other_columns_are_refused(
    tmp_path,
):
    path = tmp_path / "old.db"
    store = SessionStore(path)
    hop = store.add_hop(make_hop()).first_hop
    store.add_message(hop, binary(0, 10))
    store.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE messages DROP COLUMN payload_len")
    db.execute("ALTER TABLE messages DROP COLUMN payload_at")
    db.commit()
    db.close()
    old = SessionStore.open(path)
    assert seen(old.hop_messages(hop.id, 0, 10)) == [expected(0, 10)]
    old.close()

    db = sqlite3.connect(path)
    db.execute("ALTER TABLE messages ADD COLUMN payload_where INTEGER")
    db.commit()
    db.close()
    with pytest.raises(CaptureError, match="messages has unexpected columns"):
        SessionStore.open(path)


@pytest.mark.parametrize("planted", ["file", "symlink"])
def test_a_payload_file_already_beside_a_new_capture_is_refused(tmp_path, planted):
    path = tmp_path / "c.db"
    companion = payloads_path(path)
    if planted == "file":
        companion.write_bytes(b"someone's")
    else:
        companion.symlink_to(tmp_path / "target")
    with pytest.raises(CaptureError) as info:
        SessionStore(path)
    assert str(info.value) == f"{companion}: already exists; choose a new capture file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db-payloads"]


def test_removing_a_capture_removes_its_payload_file(tmp_path):
    path = tmp_path / "c.db"
    store = SessionStore(path)
    hop = store.add_hop(make_hop()).first_hop
    store.add_message(hop, binary(0, 2 * LARGE_PAYLOAD))
    store.flush()
    reader = SessionStore.open(path)  # a reader open too: the -wal and -shm stay
    store.close()
    assert {p.name for p in tmp_path.iterdir()} == {"c.db", "c.db-payloads", "c.db-wal", "c.db-shm"}
    reader.close()
    remove_capture(path)
    assert list(tmp_path.iterdir()) == []


async def test_the_apps_temporary_capture_goes_with_its_payload_file(tmp_path, confdir, echo_server):
    """Plain `wsinspect` (the app, a temporary capture) in a pseudo-terminal: a large message
    through it makes the capture's payload file in TMPDIR; the terminal closes, and both files
    go (the capture's path can no longer be told to anyone)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    process, master = start_in_terminal(
        wsinspect("--listen-port", "0", "--confdir", str(confdir)), scratch)
    try:
        seen = bytearray()
        listening = await asyncio.to_thread(
            read_terminal_until, master, rb"listening at 127\.0\.0\.1:(\d+)", seen)
        proxy = f"http://127.0.0.1:{int(listening.group(1))}"
        large = payload(0, 2 * LARGE_PAYLOAD)
        async with connect(f"ws://127.0.0.1:{echo_server}/large", proxy=proxy) as ws:
            await ws.send(large)
            assert await ws.recv() == large
        (capture,) = scratch.glob("wsinspect-*.db")
        written = payloads_path(capture)
        deadline = time.monotonic() + 10  # the writer commits twice a second
        while time.monotonic() < deadline and (
            not written.exists() or written.stat().st_size < 2 * len(large)
        ):
            await asyncio.sleep(0.05)
        assert sorted(scratch.glob("wsinspect-*-payloads")) == [payloads_path(capture)]
        assert payloads_path(capture).stat().st_size == 2 * len(large)  # there and back
    finally:
        os.close(master)
    await ends_after_hangup(process)
    assert list(scratch.iterdir()) == []


def large_messages() -> list[Message]:
    return [
        Message(True, MessageType.TEXT, 70_000, b"t" * 70_000, 1000.2),
        Message(False, MessageType.BINARY, 5, b"small", 1000.3),
        Message(False, MessageType.BINARY, 200_000, payload(1, 200_000), 1000.4),
    ]


def test_exports_of_a_capture_with_large_payloads_read_back_whole(tmp_path):
    path = tmp_path / "c.db"
    store = SessionStore(path)
    add_imported_hop(store, secret_hop(), [dataclasses.replace(m) for m in large_messages()])
    store.close()
    assert payloads_path(path).stat().st_size == 270_000
    source = formats.open_capture(path)
    for fmt, name in (("har", "x.har"), ("flows", "x.mitm"), ("jsonl", "x.jsonl")):
        formats.export(source, tmp_path / name, fmt, redact=False)
    source.close()
    lines = (tmp_path / "x.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(len(line) > 1000 for line in lines[::2])
    for name in ("x.har", "x.mitm"):
        back = formats.open_capture(tmp_path / name)
        (session,) = back.sessions()
        got = [(m.type, m.payload) for m in back.iter_messages(session.first_hop.id)]
        assert got == [(m.type, m.payload) for m in large_messages()], name


def test_lined_up_captures_read_large_payloads_from_each_capture(tmp_path):
    client = Synthetic(1_700_000_000.0, "bGluZXVwLWxhcmdl", "/a", 0.002, 0.002, 0.001, 0.0005)
    front = client.hop(LAPTOP, 1_700_000_000.0, 1_700_000_000.005, "one")
    back = client.hop(SERVER, 1_700_000_000.002, 1_700_000_000.003, "one")
    for name, hop, shift in (("laptop.db", front, 0.0), ("server.db", back, 37.0)):
        for attr in ("timestamp_start", "timestamp_response"):
            setattr(hop, attr, getattr(hop, attr) + shift)
        store = SessionStore(tmp_path / name)
        store.add_hop(hop)
        for i, size in enumerate((LARGE_PAYLOAD, 300_000)):
            at = 1_700_000_000.01 + i * 0.01 + shift
            store.add_message(hop, Message(True, MessageType.BINARY, size, payload(i, size), at))
        store.close()
    lined_up = open_captures([tmp_path / "laptop.db", tmp_path / "server.db"])
    (session,) = lined_up.sessions()
    assert len(session.hops) == 2
    for position in (1, 2):
        got = lined_up.messages(session.id, 0, 10, position)
        assert [m.payload for m in got] == [payload(0, LARGE_PAYLOAD), payload(1, 300_000)]
    lined_up.close()
