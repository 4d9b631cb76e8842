"""Files made to break the readers: wrong types, Infinity, 400-digit numbers, deep JSON, a
text payload where bytes belong, SQLite captures with views, triggers and huge "payloads",
flow files with a crafted proxy mode. Each gets one line naming the file and exit 2 from
`report` and `export`. Captures are read without writing beside them, also on a read-only
mount."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mitmproxy.io import tnetstring
from websockets.asyncio.client import connect

from wsinspect import formats
from wsinspect.cli import main
from wsinspect.formats.common import add_imported_hop
from wsinspect.model import (
    CLOSE_FIELDS,
    HOP_FIELDS,
    MESSAGE_FIELDS,
    STATS_FIELDS,
    Close,
    Hop,
    Message,
    MessageStats,
    MessageType,
)
from wsinspect.store import (
    CAPTURE_ENDED,
    LARGE_PAYLOAD,
    QUERY_SECONDS,
    CaptureError,
    SessionStore,
    payloads_path,
)

from .test_cli import start_process, wsinspect
from .test_formats import secret_hop

BIN = Path(sys.executable).parent
MESSAGES = [
    Message(True, MessageType.TEXT, 2, b"hi", 1000.5),
    Message(False, MessageType.PING, 4, b"ping", 1000.6),
    Message(False, MessageType.BINARY, 3, b"\x00\x01\x02", 1000.7),
]


def valid_capture(path: Path) -> Path:
    store = SessionStore(path)
    add_imported_hop(store, secret_hop(), [dataclasses.replace(m) for m in MESSAGES])
    store.close()
    return path


# ----- crafted files ---------------------------------------------------------------------------


def har_file(tmp_path: Path, change: Callable[[dict], None], plain: bool = True) -> Path:
    """An exported HAR (without wsinspect's record when `plain`), changed by `change`."""
    source = formats.open_capture(valid_capture(tmp_path / "source.db"))
    formats.export(source, tmp_path / "valid.har", "har", redact=False)
    document = json.loads((tmp_path / "valid.har").read_text())
    entry = document["log"]["entries"][0]
    if plain:
        del entry["_wsinspect"]
    change(entry)
    path = tmp_path / "crafted.har"
    path.write_text(json.dumps(document))
    return path


def capture_file(tmp_path: Path, *statements: str, parameters: tuple = ()) -> Path:
    path = valid_capture(tmp_path / "crafted.db")
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement, parameters if "?" in statement else ())
    db.close()
    return path


def hop_record_change(change: Callable[[dict], None]) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = valid_capture(tmp_path / "crafted.db")
        with sqlite3.connect(path) as db:
            (data,) = db.execute("SELECT data FROM hops").fetchone()
            record = json.loads(data)
            change(record)
            db.execute("UPDATE hops SET data=?", (json.dumps(record),))
        db.close()
        return path

    return make


def flow_file(tmp_path: Path, change: Callable[[dict], None], plain: bool = False) -> Path:
    source = formats.open_capture(valid_capture(tmp_path / "source.db"))
    formats.export(source, tmp_path / "valid.mitm", "flows", redact=False)
    with open(tmp_path / "valid.mitm", "rb") as fo:
        state = tnetstring.load(fo)
    if plain:
        del state["metadata"]["wsinspect"]
    change(state)
    path = tmp_path / "crafted.mitm"
    with open(path, "wb") as fo:
        tnetstring.dump(state, fo)
    return path


def setting(*keys, value) -> Callable[[dict], None]:
    def change(record: dict) -> None:
        for key in keys[:-1]:
            record = record[key]
        record[keys[-1]] = value

    return change


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


CRAFTED: dict[str, Callable[[Path], Path]] = {
    # HAR, standard fields
    "har status as text": lambda p: har_file(p, setting("response", "status", value="101")),
    "har start 1e300": lambda p: har_file(p, setting("startedDateTime", value=1e300)),
    "har start Infinity": lambda p: har_file(p, setting("startedDateTime", value=float("inf"))),
    "har start year 9999": lambda p: har_file(
        p, setting("startedDateTime", value="9999-12-31T23:59:59+00:00")
    ),
    "har time NaN": lambda p: har_file(p, setting("time", value=float("nan"))),
    "har 400-digit size": lambda p: har_file(
        p, setting("_webSocketMessages", 0, "_size", value=10**400)
    ),
    "har 400-digit message time": lambda p: har_file(
        p, setting("_webSocketMessages", 0, "time", value=10**400)
    ),
    "har binary data not base64": lambda p: har_file(
        p, setting("_webSocketMessages", 2, "data", value="not base64 at all!")
    ),
    "har text data as a number": lambda p: har_file(
        p, setting("_webSocketMessages", 0, "data", value=12345)
    ),
    "har header value a number": lambda p: har_file(
        p, setting("request", "headers", 0, "value", value=5)
    ),
    "har header value nested 500 deep": lambda p: har_file(
        p, setting("request", "headers", 0, "value", value=nested(500))
    ),
    "har message a list": lambda p: har_file(p, setting("_webSocketMessages", 0, value=[1, 2])),
    "har messages an object": lambda p: har_file(p, setting("_webSocketMessages", value={"a": 1})),
    "har url a list": lambda p: har_file(p, setting("request", "url", value=["ws://x/"])),
    "har payload longer than its size": lambda p: har_file(
        p, setting("_webSocketMessages", 0, "_size", value=1)
    ),
    # HAR, wsinspect's record
    "har record outcome a list": lambda p: har_file(
        p, setting("_wsinspect", "outcome", value=nested(300)), plain=False
    ),
    "har record start 1e300": lambda p: har_file(
        p, setting("_wsinspect", "timestamp_start", value=1e300), plain=False
    ),
    "har record close code 400 digits": lambda p: har_file(
        p, setting("_wsinspect", "close", "code", value=10**400), plain=False
    ),
    "har record mode with escapes": lambda p: har_file(
        p, setting("_wsinspect", "mode", value="regular\x1b]0;pwned\x07\x1b[2J"), plain=False
    ),
    "har record client_addr a number": lambda p: har_file(
        p, setting("_wsinspect", "client_addr", value=7), plain=False
    ),
    "har record close not an object": lambda p: har_file(
        p, setting("_wsinspect", "close", value="x"), plain=False
    ),
    # deep JSON documents
    "har nested 100000 deep": lambda p: (
        (p / "deep.har").write_text('{"log": {"entries": [' + "[" * 100_000 + "]" * 100_000 + "]}}"),
        p / "deep.har",
    )[1],
    # wsinspect captures: hop records
    "capture status as text": hop_record_change(setting("response_status", value="200")),
    "capture start Infinity": hop_record_change(setting("timestamp_start", value=float("inf"))),
    "capture 400-digit stats": hop_record_change(setting("stats", "bytes", value=10**400)),
    "capture headers not pairs": hop_record_change(setting("request_headers", value=[[1, 2, 3]])),
    "capture record a list": hop_record_change(lambda r: r.clear() or r.update({"x": nested(200)})),
    "capture record nested 100000 deep": lambda p: capture_file(
        p, "UPDATE hops SET data=?", parameters=("[" * 100_000 + "]" * 100_000,)
    ),
    "capture record a blob": lambda p: capture_file(
        p, "UPDATE hops SET data=CAST(data AS BLOB)"
    ),
    # wsinspect captures: the schema
    "capture hops an endless recursive view": lambda p: capture_file(
        p,
        "DROP TABLE hops",
        "CREATE VIEW hops AS WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
        "SELECT i AS id, i AS session_id, '{}' AS data FROM r",
    ),
    "capture meta an endless recursive view": lambda p: capture_file(
        p,
        "DROP TABLE meta",
        "CREATE VIEW meta AS WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
        "SELECT 'format' AS key, 'x' AS value FROM r WHERE i < 0",
    ),
    "capture with a trigger": lambda p: capture_file(
        p, "CREATE TRIGGER t AFTER INSERT ON meta BEGIN DELETE FROM hops; END"
    ),
    "capture with a generated payload": lambda p: capture_file(
        p,
        "DROP TABLE messages",
        "CREATE TABLE messages (hop_id INTEGER NOT NULL, idx INTEGER NOT NULL, "
        "from_client INTEGER NOT NULL, type TEXT NOT NULL, size INTEGER NOT NULL, "
        "timestamp REAL NOT NULL, injected INTEGER NOT NULL, sha256 TEXT, "
        "payload BLOB GENERATED ALWAYS AS (zeroblob(900000000)))",
    ),
}
# Damage in message rows, which only reading messages (export, the app) meets.
CRAFTED_MESSAGES: dict[str, Callable[[Path], Path]] = {
    "capture payload the integer 2000000000": lambda p: capture_file(
        p, "UPDATE messages SET payload=2000000000"
    ),
    "capture payload text": lambda p: capture_file(p, "UPDATE messages SET payload='text'"),
    "capture negative size": lambda p: capture_file(p, "UPDATE messages SET size=-5"),
    "capture timestamp text": lambda p: capture_file(p, "UPDATE messages SET timestamp='now'"),
    "capture unknown type": lambda p: capture_file(p, "UPDATE messages SET type='evil'"),
    "capture from_client 7": lambda p: capture_file(p, "UPDATE messages SET from_client=7"),
}
CRAFTED_FLOWS: dict[str, Callable[[Path], Path]] = {
    "flows proxy mode with escapes": lambda p: flow_file(
        p, setting("client_conn", "proxy_mode", value="local:\x1b]0;pwned\x07"), plain=True
    ),
    "flows control payload the integer 2000000000": lambda p: flow_file(
        p, setting("metadata", "wsinspect", "control", value=[[1, False, "ping", 2_000_000_000, 1.0]])
    ),
    "flows control index past the end": lambda p: flow_file(
        p, setting("metadata", "wsinspect", "control", value=[[10**6, False, "ping", b"p", 1.0]])
    ),
    "flows control not a list": lambda p: flow_file(
        p, setting("metadata", "wsinspect", "control", value=5)
    ),
    "flows capped index out of range": lambda p: flow_file(
        p, setting("metadata", "wsinspect", "capped", value=[[-1, 5, "0" * 64]])
    ),
    "flows record status as text": lambda p: flow_file(
        p, setting("metadata", "wsinspect", "response_status", value="101")
    ),
    "flows record mode with escapes": lambda p: flow_file(
        p, setting("metadata", "wsinspect", "mode", value="regular\x1b[2J")
    ),
    "flows close code 400 digits": lambda p: flow_file(
        p, setting("websocket", "close_code", value=10**40), plain=True
    ),
}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, path: Path) -> None:
    assert code == 2, (out, err)
    assert err.startswith(f"wsinspect: {path}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", sorted({**CRAFTED, **CRAFTED_FLOWS}))
def test_crafted_files_get_one_line_and_exit_2(tmp_path, capsys, name):
    path = {**CRAFTED, **CRAFTED_FLOWS}[name](tmp_path)
    assert_one_line_error(*run_cli(capsys, "report", str(path)), path)
    assert_one_line_error(*run_cli(capsys, "report", "--json", str(path)), path)
    out = tmp_path / "out.har"
    assert_one_line_error(*run_cli(capsys, "export", str(path), "-o", str(out)), path)
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(CRAFTED_MESSAGES))
def test_damaged_message_rows_get_one_line_from_export_without_a_big_allocation(
    tmp_path, capsys, name
):
    path = CRAFTED_MESSAGES[name](tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for fmt in ("har", "mitm", "jsonl"):
        code, out, err = run_cli(capsys, "export", str(path), "-o", str(tmp_path / f"out.{fmt}"))
        assert_one_line_error(code, out, err, path)
        assert "its messages cannot be read" in err
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 * 1024  # 2000000000 was allocated as bytes(2000000000) before
    assert list(tmp_path.glob("*out.*")) == []


# ----- the payload file beside a capture ---------------------------------------------------------

LARGE = Message(False, MessageType.BINARY, LARGE_PAYLOAD, bytes(range(256)) * 256, 1000.8)


def large_capture(path: Path) -> Path:
    """A valid capture whose last message is in its payload file."""
    store = SessionStore(path)
    add_imported_hop(store, secret_hop(), [dataclasses.replace(m) for m in (*MESSAGES, LARGE)])
    store.close()
    assert payloads_path(path).stat().st_size == LARGE_PAYLOAD
    return path


def located_row(*statements: str) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = large_capture(tmp_path / "crafted.db")
        with sqlite3.connect(path) as db:
            for statement in statements:
                db.execute(statement + " WHERE payload_len IS NOT NULL")
        db.close()
        return path

    return make


def payload_file_replaced(make: Callable[[Path, Path], None]) -> Callable[[Path], Path]:
    def craft(tmp_path: Path) -> Path:
        path = large_capture(tmp_path / "crafted.db")
        companion = payloads_path(path)
        companion.rename(tmp_path / "moved")
        make(companion, tmp_path / "moved")
        return path

    return craft


# Damage in a located row: "its messages cannot be read (what)"
CRAFTED_LOCATIONS: dict[str, Callable[[Path], Path]] = {
    "location one byte past the end": located_row("UPDATE messages SET payload_at=1"),
    "location far past the end": located_row("UPDATE messages SET payload_at=1 << 40"),
    "location negative": located_row("UPDATE messages SET payload_at=-1"),
    "length negative": located_row("UPDATE messages SET payload_len=-5"),
    "length huge and its size too": located_row(
        "UPDATE messages SET payload_len=1 << 40, size=1 << 40"),
    "length within the limit but past the end": located_row(
        "UPDATE messages SET payload_len=900000000, size=900000000"),
    "length longer than its size": located_row("UPDATE messages SET size=10"),
    "location text": located_row("UPDATE messages SET payload_at='x'"),
    "length a float": located_row("UPDATE messages SET payload_len=65536.5"),
    "location without a length": located_row("UPDATE messages SET payload_len=NULL"),
    "location and a payload": located_row("UPDATE messages SET payload=X'00'"),
}
# A payload file that is not there or not a file: "its large payloads cannot be read (why)"
CRAFTED_PAYLOAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (payload_file_replaced(lambda companion, moved: None),
                "no such file; copy it with the capture"),
    "a symlink to the real one": (
        payload_file_replaced(lambda companion, moved: companion.symlink_to(moved)),
        "is a symbolic link, not a payload file"),
    "a FIFO": (payload_file_replaced(lambda companion, moved: os.mkfifo(companion)),
               "is not a regular file"),
    "a directory": (payload_file_replaced(lambda companion, moved: companion.mkdir()),
                    "is not a regular file"),
}


def assert_the_rest_reads(path: Path) -> None:
    """Sessions, timings and the messages before the damaged one still read."""
    store = SessionStore.open(path)
    (session,) = store.sessions()
    hop = session.first_hop
    timings = list(store.iter_timings(hop.id))
    assert [t[1] for t in timings[:3]] == [m.size for m in MESSAGES] and len(timings) == 4
    assert [m.payload for m in store.hop_messages(hop.id, 0, 3)] == [m.payload for m in MESSAGES]
    with pytest.raises(CaptureError) as info:
        store.hop_messages(hop.id, 3, 4)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    store.close()


def test_the_payload_file_is_read_where_the_row_says(tmp_path):
    store = SessionStore.open(large_capture(tmp_path / "c.db"))
    (session,) = store.sessions()
    got = store.hop_messages(session.first_hop.id, 0, 10)
    assert [m.payload for m in got] == [m.payload for m in (*MESSAGES, LARGE)]
    store.close()


@pytest.mark.parametrize("name", sorted(CRAFTED_LOCATIONS))
def test_damaged_payload_locations_get_one_line_without_a_big_allocation(tmp_path, capsys, name):
    path = CRAFTED_LOCATIONS[name](tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for fmt in ("har", "mitm", "jsonl"):
        code, out, err = run_cli(capsys, "export", str(path), "-o", str(tmp_path / f"out.{fmt}"))
        assert_one_line_error(code, out, err, path)
        assert "its messages cannot be read (message " in err, err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
    assert list(tmp_path.glob("*out.*")) == []
    assert_the_rest_reads(path)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", sorted(CRAFTED_PAYLOAD_FILES))
def test_a_payload_file_missing_or_not_a_file_is_one_line_naming_it(tmp_path, capsys, name):
    craft, why = CRAFTED_PAYLOAD_FILES[name]
    path = craft(tmp_path)
    for command in (["report"], ["export", "-o", str(tmp_path / "out.har")]):
        code, out, err = run_cli(capsys, command[0], str(path), *command[1:])
        assert_one_line_error(code, out, err, path)
        assert err == (f"wsinspect: {path}: its large payloads cannot be read "
                       f"({payloads_path(path)}: {why})\n")
    assert not (tmp_path / "out.har").exists()
    assert_the_rest_reads(path)


def test_every_record_field_has_a_rule():
    """A field added to the model without a rule would reach the program unchecked."""
    for cls, rules in ((Hop, HOP_FIELDS), (Message, MESSAGE_FIELDS), (Close, CLOSE_FIELDS),
                       (MessageStats, STATS_FIELDS)):
        assert set(rules) == set(cls.__dataclass_fields__), cls


def test_a_query_running_over_its_time_is_interrupted(tmp_path, monkeypatch):
    """The progress handler: a query on a capture opened for reading is stopped after
    QUERY_SECONDS (shortened here) instead of running forever."""
    store = SessionStore.open(valid_capture(tmp_path / "c.db"))
    monkeypatch.setattr("wsinspect.store.QUERY_SECONDS", 0.2)
    endless = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT max(i) FROM r"
    with pytest.raises(CaptureError, match=r"^reading it took over 0.2 s$"):
        store._query(endless)
    assert QUERY_SECONDS == 10.0


def test_a_recursive_view_capture_does_not_hang_the_real_command(tmp_path):
    path = CRAFTED["capture hops an endless recursive view"](tmp_path)
    for command in (["report"], ["open"], ["export", "-o", str(tmp_path / "x.har")], ["replay"]):
        args = [str(BIN / "wsinspect"), command[0], str(path), *command[1:]]
        if command == ["replay"]:
            args.append("1")
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr == (
            f"wsinspect: {path}: not a wsinspect capture (unexpected view in its schema)\n"
        )


# ----- captures are read without writing beside them -------------------------------------------


def killed_writer_capture(folder: Path) -> Path:
    """A capture whose writer was killed: its -wal holds every session, not yet folded in, and
    its payload file the large message."""
    path = folder / "killed.db"
    script = (
        "import os, sys\n"
        "from wsinspect.formats.common import add_imported_hop\n"
        "from wsinspect.store import SessionStore\n"
        "from tests.test_hostile_files import LARGE, MESSAGES\n"
        "from tests.test_formats import secret_hop\n"
        f"store = SessionStore({str(path)!r})\n"
        "add_imported_hop(store, secret_hop(), [*MESSAGES, LARGE])\n"
        "store.flush()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parent.parent,
                   timeout=60)
    assert path.with_name("killed.db-wal").stat().st_size > 0
    return path


def digests(folder: Path) -> dict[str, str | None]:
    """The files in `folder` with their content's digest; a -shm's content is SQLite's shared
    index, which readers update, so only its presence counts."""
    return {
        p.name: None if p.name.endswith("-shm") else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
    }


def test_read_only_commands_leave_a_killed_writers_wal_alone(tmp_path, capsys):
    folder = tmp_path / "captures"
    folder.mkdir()
    path = killed_writer_capture(folder)
    before = digests(folder)
    assert set(before) == {"killed.db", "killed.db-wal", "killed.db-shm", "killed.db-payloads"}
    code, out, _ = run_cli(capsys, "report", str(path))
    assert code == 0 and "1 session\n" in out
    assert run_cli(capsys, "export", str(path), "-o", str(tmp_path / "x.jsonl"))[0] == 0
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == len(MESSAGES) + 1
    store = SessionStore.open(path)
    assert [m.payload for m in store.iter_messages(1)] == [m.payload for m in (*MESSAGES, LARGE)]
    store.close()
    assert digests(folder) == before


def report_json(path: Path) -> dict:
    result = subprocess.run([str(BIN / "wsinspect"), "report", str(path), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_a_killed_proxys_live_session_ends_at_its_last_record(tmp_path, confdir, echo_server):
    """Read while the proxy writing it runs, the capture's live session is open; once the
    proxy is killed it ends at its last message, "capture ended", however late it is read."""
    folder = tmp_path / "captures"
    folder.mkdir()
    capture = folder / "cap.db"
    process, port = await start_process(
        *wsinspect("--headless", "-w", str(capture), "--listen-port", "0",
                   "--confdir", str(confdir)),
        listening=r"listening at 127\.0\.0\.1:(\d+)",
    )
    try:
        async with connect(f"ws://127.0.0.1:{echo_server}/live",
                           proxy=f"http://127.0.0.1:{port}") as ws:
            await ws.send("one")
            assert await ws.recv() == "one"
            await asyncio.sleep(1.5)  # more than the commit interval
            (live,) = (await asyncio.to_thread(report_json, capture))["sessions"]
            assert live["outcome"] == "open" and live["timestamp_end"] is None
            assert live["close"]["abnormal"] is False
            process.kill()
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    before = digests(folder)
    (ended,) = (await asyncio.to_thread(report_json, capture))["sessions"]
    store = SessionStore.open(capture)
    (last,) = store.messages(ended["id"], 1, 2)
    store.close()
    assert last.payload == b"one" and not last.from_client
    assert ended["outcome"] == "closed" and ended["timestamp_end"] == last.timestamp
    assert ended["close"]["abnormal"] is True
    assert ended["close"]["abnormal_reason"] == CAPTURE_ENDED
    assert ended["messages"]["from_client"] == 1 and ended["messages"]["from_server"] == 1
    await asyncio.sleep(0.2)
    (again,) = (await asyncio.to_thread(report_json, capture))["sessions"]
    assert again["timestamp_end"] == ended["timestamp_end"]
    assert digests(folder) == before


def on_read_only_mount(folder: Path, *command: str) -> subprocess.CompletedProcess:
    """Run `command` with `folder` bind-mounted read-only over itself, in a mount namespace of
    its own (the mount vanishes with it)."""
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(folder), *command],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("killed", [False, True], ids=["closed", "killed writer"])
def test_captures_on_a_read_only_mount_are_read(tmp_path, killed):
    folder = tmp_path / "captures"
    folder.mkdir()
    path = killed_writer_capture(folder) if killed else large_capture(folder / "closed.db")
    before = digests(folder)
    probe = on_read_only_mount(folder, "touch", str(folder / "probe"))
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr
    report = on_read_only_mount(folder, str(BIN / "wsinspect"), "report", str(path))
    assert report.returncode == 0, report.stderr
    assert "1 session\n" in report.stdout and "#1 wss://api.example/ws" in report.stdout
    export = on_read_only_mount(
        folder, str(BIN / "wsinspect"), "export", str(path), "-o", str(tmp_path / "x.jsonl")
    )
    assert export.returncode == 0, export.stderr
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == len(MESSAGES) + 1
    assert digests(folder) == before


@pytest.mark.parametrize("planted", ["-shm", "-wal"])
def test_a_planted_symlink_beside_a_new_capture_is_one_line(tmp_path, planted):
    target = tmp_path / "target"
    capture = tmp_path / "new.db"
    (tmp_path / f"new.db{planted}").symlink_to(target)
    result = subprocess.run(
        [str(BIN / "wsinspect"), "--headless", "-w", str(capture), "--listen-port", "0",
         "--confdir", str(tmp_path / "confdir")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"wsinspect: {capture}: cannot be created as a capture (unable to open database file)"
    ]
    assert not target.exists() and not capture.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"new.db{planted}"]


# ----- export does not replace its input, and names what is missing ---------------------------


@pytest.mark.parametrize("suffix", [".har", ".mitm", ".db"])
def test_export_refuses_to_replace_its_input(tmp_path, capsys, suffix):
    capture = valid_capture(tmp_path / "source.db")
    path = capture if suffix == ".db" else tmp_path / f"input{suffix}"
    if suffix != ".db":
        formats.export(formats.open_capture(capture), path, suffix.lstrip(".").replace("mitm", "flows"),
                       redact=False)
    before = path.read_bytes()
    for out in (path, tmp_path / "link"):
        if out.name == "link":
            out.symlink_to(path)
        code, _, err = run_cli(capsys, "export", str(path), "--format", "har", "-o", str(out))
        assert code == 2
        assert err == f"wsinspect: {out}: is the capture being exported; choose another file\n"
    assert path.read_bytes() == before


@pytest.mark.parametrize("beside", ["-payloads", "-wal"])
def test_export_refuses_to_replace_a_file_beside_its_capture(tmp_path, capsys, beside):
    """The payload file (or SQLite's -wal) of the capture being read is part of it."""
    capture = valid_capture(tmp_path / "source.db")
    out = tmp_path / f"source.db{beside}"
    out.write_bytes(b"kept")
    code, _, err = run_cli(capsys, "export", str(capture), "--format", "har", "-o", str(out))
    assert code == 2
    assert err == f"wsinspect: {out}: is the capture being exported; choose another file\n"
    assert out.read_bytes() == b"kept"


def test_export_into_a_missing_folder_names_the_folder(tmp_path, capsys):
    capture = valid_capture(tmp_path / "c.db")
    out = tmp_path / "missing" / "x.har"
    code, _, err = run_cli(capsys, "export", str(capture), "-o", str(out))
    assert code == 2
    assert err == f"wsinspect: {tmp_path / 'missing'}: cannot write (No such file or directory)\n"
