"""Property-based tests (hypothesis) of the pure parts: the capture file, the close-frame
parser, the text the report prints, and diagnosis on arbitrary handshakes."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsinspect.diagnosis import Severity, boundaries, diagnose
from wsinspect.model import Hop, Message, MessageType, Outcome, RecordError, Session
from wsinspect.report import printable
from wsinspect.seams import parse_close_frame
from wsinspect.store import CaptureError, SessionStore

from .builders import make_hop
from .rawpeers import frame

messages = st.lists(
    st.builds(
        Message,
        from_client=st.booleans(),
        type=st.sampled_from(list(MessageType)),
        size=st.just(0),
        payload=st.binary(max_size=300),
        timestamp=st.floats(min_value=0, max_value=2e9, allow_nan=False),
        injected=st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(messages, min_size=1, max_size=4), cut=st.integers(0, 200))
def test_capture_round_trip_keeps_every_byte(batches, cut):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.db"
        store = SessionStore(path)
        session = store.add_hop(make_hop("ws://h/", key="k"))
        sent = []
        for batch in batches:
            for m in batch:
                m.size = len(m.payload)
                sent.append(store.add_message(session.first_hop, m))
            store.commit()  # batches straddle commits, as live traffic does
        # reads spanning committed and pending rows match what was added
        assert store.messages(session.id, cut, cut + 50) == sent[cut : cut + 50]
        store.close()
        again = SessionStore.open(path)
        got = again.messages(again.sessions()[0].id, 0, len(sent) + 1)
        assert [(m.payload, m.type, m.from_client, m.injected) for m in got] == [
            (m.payload, m.type, m.from_client, m.injected) for m in sent
        ]


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=4096))
def test_any_bytes_open_as_a_capture_or_a_capture_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.db"
        path.write_bytes(content)
        try:
            SessionStore.open(path)
        except CaptureError as e:
            assert str(e).startswith(f"{path}: ")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keep=st.floats(min_value=0.0, max_value=1.0))
def test_a_truncated_capture_opens_or_says_why(keep):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.db"
        store = SessionStore(path)
        session = store.add_hop(make_hop("ws://h/", key="k"))
        for i in range(200):
            store.add_message(session.first_hop, Message(True, MessageType.TEXT, 4, b"%04d" % i, i))
        store.close()
        db = sqlite3.connect(path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        try:
            reopened = SessionStore.open(path)
            for s in reopened.sessions():
                reopened.messages(s.id, 0, 1000)
        except CaptureError as e:
            assert str(e).startswith(f"{path}: ")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_hop_records_load_checked_or_raise_record_error(data):
    """Any JSON in any field of a hop record: a hop whose every field has its type and range,
    or RecordError (which readers make a CaptureError), never another exception."""
    good = make_hop("ws://h/", key="k").to_json()
    good["close"] = {"code": 1000, "reason": "", "by": "client", "abnormal": False,
                     "abnormal_reason": None, "timestamp": 2.0, "offender": None,
                     "told_client": [1000, "bye"], "told_server": None}
    record = dict(good)
    for key in data.draw(st.lists(st.sampled_from(sorted(good)), min_size=1, max_size=3)):
        record[key] = data.draw(json_values)
    try:
        loaded = Hop.from_json(record)
    except RecordError as e:
        assert "\n" not in str(e) and len(str(e)) < 200
        return
    loaded.validate()
    assert Hop.from_json(loaded.to_json()) == loaded


@given(
    code=st.integers(1000, 4999),
    reason=st.text(max_size=40).filter(lambda r: len(r.encode()) <= 120),
    masked=st.booleans(),
)
def test_close_frames_parse_back(code, reason, masked):
    payload = code.to_bytes(2, "big") + reason.encode()
    assert parse_close_frame(frame(0x8, payload, mask=masked)) == (code, reason)


@given(st.text())
def test_printable_text_holds_no_control_characters(text):
    shown = printable(text)
    assert all(ch.isprintable() or ch == " " for ch in shown)
    assert "\x1b" not in shown and "\x07" not in shown


header_names = st.sampled_from(
    ["Host", "host", "Upgrade", "UPGRADE", "Connection", "connection", "Sec-WebSocket-Key",
     "Sec-WebSocket-Version", "Sec-WebSocket-Accept", "Keep-Alive", "TE", "Proxy-Foo", "X-Other"]
)
header_values = st.sampled_from(
    ["websocket", "Upgrade", "keep-alive, Upgrade", "close", "", "13", "dGhlIHNhbXBsZQ==", "x"]
)
headers = st.lists(st.tuples(header_names, header_values), max_size=8)


@settings(max_examples=200)
@given(
    hops=st.lists(
        st.tuples(headers, headers, st.sampled_from([None, 101, 400, 426, 502]),
                  st.sampled_from(["HTTP/1.1", "HTTP/1.0"])),
        min_size=1, max_size=3,
    )
)
def test_diagnosis_never_fails_and_points_at_real_hops(hops):
    session = Session(1)
    for i, (request, response, status, version) in enumerate(hops):
        h = make_hop("ws://h/", headers=list(request), mode=f"listener{i}", t=float(i))
        h.response_headers = response
        h.response_status = status
        h.http_version = version
        h.outcome = Outcome.OPEN if status in (None, 101) else Outcome.REJECTED
        session.hops.append(h)
    findings = diagnose(session)
    assert all(1 <= f.hop <= len(hops) for f in findings)
    assert all(isinstance(f.severity, Severity) and f.message and f.fix for f in findings)
    assert len(boundaries(session)) == len(hops) - 1
