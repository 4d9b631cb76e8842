"""A bounded fuzz of every reader: byte mutations of valid HAR, flow and capture files, and
structured garbage in the fields of valid ones, through open, report and export. A file either
reads, reports and exports, or fails with CaptureError: any other exception is a defect."""

from __future__ import annotations

import dataclasses
import io
import json
import sqlite3
import tempfile
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy.io import tnetstring

from wsinspect import formats, report
from wsinspect.formats.common import add_imported_hop
from wsinspect.model import Close, Message, MessageType, Outcome
from wsinspect.store import LARGE_PAYLOAD, CaptureError, SessionStore, payloads_path

from .test_formats import secret_hop

# A few seconds a reader: enough examples to meet each kind of damage, never a slow suite.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)


@cache
def valid_files() -> dict[str, bytes]:
    """A capture of a closed, a refused and a capped session, and its HAR and flow exports."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = SessionStore(folder / "c.db", max_payload=8)
        add_imported_hop(store, secret_hop(), [
            Message(True, MessageType.TEXT, 5, b"hello", 1000.2),
            Message(False, MessageType.BINARY, 300, bytes(range(256)) + bytes(44), 1000.3),
            Message(False, MessageType.PING, 1, b"p", 1000.4),
            Message(True, MessageType.CLOSE, 4, b"\x03\xe8ok", 1000.5),
        ])
        add_imported_hop(store, secret_hop(
            response_status=403, outcome=Outcome.REJECTED, close=None,
            error="refused GET http://u:pw@h/?token=x HTTP/1.1",
            request_headers=[("Sec-WebSocket-Key", "other"), ("Upgrade", "websocket")],
        ), [])
        add_imported_hop(store, secret_hop(
            close=Close(abnormal=True, abnormal_reason="reset", by="server",
                        told_client=(1000, ""), timestamp=1001.0),
            request_headers=[("Sec-WebSocket-Key", "third")],
        ), [])
        store.close()
        source = SessionStore.open(folder / "c.db")
        formats.export(source, folder / "c.har", "har", redact=False)
        formats.export(source, folder / "c.mitm", "flows", redact=False)
        source.close()
        return {name: (folder / name).read_bytes() for name in ("c.db", "c.har", "c.mitm")}


def read_everything(name: str, content: bytes, payloads: bytes | None = None) -> None:
    """Open `content` as a file called `name` (a capture with `payloads` as its payload file),
    report it and export it every way; only CaptureError may come out."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        if payloads is not None:
            payloads_path(path).write_bytes(payloads)
        try:
            store = formats.open_capture(path)
            report.report_text(store)
            json.dumps(report.report_json(store))
            report.has_findings(store, "info")
            for fmt in formats.EXPORT_FORMATS:
                formats.export(store, Path(tmp) / f"out.{fmt}", fmt)
                formats.export(store, Path(tmp) / f"kept.{fmt}", fmt, redact=False)
            store.close()
        except CaptureError as e:
            assert str(e).startswith(f"{path}: ") and "\n" not in str(e)


@st.composite
def mutated(draw, content: bytes) -> bytes:
    """`content` with a few bytes changed, a run inserted or deleted, or cut short."""
    data = bytearray(content)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0, 0x7F, 0x80, 0xFF, ord("9"), ord("["), ord(":")]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return bytes(data)


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_har_files(data):
    read_everything("f.har", data.draw(mutated(valid_files()["c.har"])))


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_flow_files(data):
    read_everything("f.mitm", data.draw(mutated(valid_files()["c.mitm"])))


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_captures(data):
    content = valid_files()["c.db"]
    # Most of a small capture's pages are its schema, hop records and messages.
    read_everything("f.db", data.draw(mutated(content)))


json_garbage = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
    | st.sampled_from(["", "101", "websocket", "send", "receive", "closed", "regular", "eyJx.y.z",
                       "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "aGk="]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def paths(document: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a JSON document."""
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += paths(value, prefix + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += paths(value, prefix + (index,))
    return found


def replaced(document: object, path: tuple, value: object) -> object:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {**document, head: replaced(document[head], rest, value)}
    return [replaced(v, rest, value) if i == head else v for i, v in enumerate(document)]


@FUZZ
@given(data=st.data())
def test_fuzz_structured_garbage_in_har_fields(data):
    document = json.loads(valid_files()["c.har"])
    entries = document["log"]["entries"]
    if data.draw(st.booleans()):  # the standard fields alone, as other tools write them
        for entry in entries:
            del entry["_wsinspect"]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths(document)))
        document = replaced(document, path, data.draw(json_garbage))
    read_everything("g.har", json.dumps(document).encode())


@FUZZ
@given(data=st.data())
def test_fuzz_structured_garbage_in_flow_fields(data):
    states = []
    stream = io.BytesIO(valid_files()["c.mitm"])
    while stream.tell() < len(stream.getbuffer()):
        states.append(tnetstring.load(stream))
    garbage = st.recursive(
        st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats()
        | st.binary(max_size=12) | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=8,
    )
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(states) - 1))
        path = data.draw(st.sampled_from(paths(states[index])))
        states[index] = replaced(states[index], path, data.draw(garbage))
    out = io.BytesIO()
    for state in states:
        try:
            tnetstring.dump(state, out)
        except (ValueError, TypeError):  # a value tnetstring cannot hold: not a file anyone has
            return
    read_everything("g.mitm", out.getvalue())


@FUZZ
@given(data=st.data())
def test_fuzz_structured_garbage_in_capture_records(data):
    """Hop records and message columns of a capture replaced by garbage of any SQLite type."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.db"
        path.write_bytes(valid_files()["c.db"])
        db = sqlite3.connect(path)
        value = st.none() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=30) \
            | st.binary(max_size=30) | json_garbage.map(json.dumps)
        for _ in range(data.draw(st.integers(1, 3))):
            if data.draw(st.booleans()):
                (record,) = db.execute("SELECT data FROM hops WHERE id=1").fetchone()
                document = json.loads(record)
                key = data.draw(st.sampled_from(paths(document)))
                document = replaced(document, key, data.draw(json_garbage))
                db.execute("UPDATE hops SET data=? WHERE id=1", (json.dumps(document),))
            else:
                column = data.draw(st.sampled_from(
                    ["idx", "from_client", "type", "size", "timestamp", "injected", "sha256",
                     "payload", "hop_id"]))
                new = data.draw(value if column == "sha256" else value.filter(lambda v: v is not None))
                db.execute(f"UPDATE OR IGNORE messages SET {column}=? WHERE rowid=1", (new,))
        db.commit()
        db.close()
        read_everything("c.db", path.read_bytes())


@cache
def located_capture() -> tuple[bytes, bytes]:
    """A capture with two messages in its payload file (one capped) between small ones: its
    file and its payload file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.db"
        store = SessionStore(path, max_payload=LARGE_PAYLOAD + 10)
        add_imported_hop(store, secret_hop(), [
            Message(True, MessageType.TEXT, 5, b"hello", 1000.2),
            Message(True, MessageType.TEXT, 70_000, b"t" * 70_000, 1000.3),
            Message(False, MessageType.BINARY, LARGE_PAYLOAD, bytes(range(256)) * 256, 1000.4),
            Message(True, MessageType.CLOSE, 4, b"\x03\xe8ok", 1000.5),
        ])
        store.close()
        return path.read_bytes(), payloads_path(path).read_bytes()


@FUZZ
@given(data=st.data())
def test_fuzz_payload_locations_and_payload_files(data):
    """The location columns of rows in the payload file, and their neighbours, replaced by
    garbage of any SQLite type or by numbers near the edges; the payload file damaged, cut
    short or missing."""
    content, payloads = located_capture()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.db"
        path.write_bytes(content)
        edges = st.sampled_from([-1, 0, 1, LARGE_PAYLOAD - 1, LARGE_PAYLOAD, LARGE_PAYLOAD + 10,
                                 len(payloads), len(payloads) + 1, 2**30, 2**30 + 1, 2**63 - 1,
                                 -(2**63)])
        value = st.none() | edges | st.integers(-(2**63), 2**63 - 1) | st.floats() \
            | st.text(max_size=8) | st.binary(max_size=8)
        db = sqlite3.connect(path)
        for _ in range(data.draw(st.integers(1, 3))):
            column = data.draw(st.sampled_from(["payload_at", "payload_len", "size", "payload"]))
            row = data.draw(st.integers(1, 4))
            db.execute(f"UPDATE OR IGNORE messages SET {column}=? WHERE rowid=?",
                       (data.draw(value), row))
        db.commit()
        db.close()
        kind = data.draw(st.sampled_from(["kept", "mutated", "missing"]))
        if kind == "mutated":
            payloads = data.draw(mutated(payloads))
        read_everything("c.db", path.read_bytes(), None if kind == "missing" else payloads)


def test_the_fuzzed_files_are_valid_before_mutation():
    """The seeds read, report and export: the fuzz starts from files that work."""
    for name, content in valid_files().items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(content)
            store = formats.open_capture(path)
            assert len(store.sessions()) == 3, name
            capped = list(store.iter_messages(store.sessions()[0].first_hop.id))
            assert [m.truncated for m in capped] == [False, True, False, False], name
        read_everything(name, content)
    content, payloads = located_capture()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.db"
        path.write_bytes(content)
        payloads_path(path).write_bytes(payloads)
        store = formats.open_capture(path)
        (session,) = store.sessions()
        got = [(m.size, len(m.payload)) for m in store.iter_messages(session.first_hop.id)]
        assert got == [(5, 5), (70_000, LARGE_PAYLOAD + 10), (LARGE_PAYLOAD,) * 2, (4, 4)]
        store.close()
    read_everything("c.db", content, payloads)


def test_message_records_are_dataclasses_the_fuzz_can_copy():
    assert dataclasses.replace(Message(True, MessageType.TEXT, 1, b"x", 1.0)).validate() is None
