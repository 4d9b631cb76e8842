"""The timeline's figures (wsinspect.timeline) from hand-made sessions with known rates,
silences and round trips; hypothesis over arbitrary timings; and the report's figures in text
and JSON, from a capture file."""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsinspect import diagnosis, report
from wsinspect.model import Close, Hop, Message, MessageType, Outcome, Session
from wsinspect.store import SessionStore
from wsinspect.timeline import (
    BUCKETS,
    KEPT_SILENCES,
    SILENCE,
    Timeline,
    idle_silence,
    session_figures,
)

T0 = 1_700_000_000.0


def hop(start: float = T0, mode: str = "regular") -> Hop:
    return Hop(mode=mode, url="ws://app.test/feed", request_line="GET /feed HTTP/1.1",
               http_version="HTTP/1.1", request_headers=[("Host", "app.test")],
               timestamp_start=start, response_status=101, timestamp_response=start + 0.002)


def text(from_client: bool, at: float, size: int = 10) -> Message:
    return Message(from_client, MessageType.TEXT, size, b"x" * size, at)


def pong(at: float, rtt: float) -> Message:
    return Message(False, MessageType.PONG, 4, b"beat", at, rtt=rtt)


def timings(messages: list[Message]) -> list[tuple]:
    return [(m.from_client, m.size, m.timestamp, m.rtt) for m in messages]


def fed(messages: list[Message], first: Hop | None = None) -> Timeline:
    timeline = Timeline(first or hop())
    timeline.add_all(messages)
    return timeline


def test_peaks_are_the_busiest_whole_second_of_each_direction():
    messages = [text(True, T0 + 0.1 + i * 0.05, 100) for i in range(10)]  # second 0: 10
    messages += [text(True, T0 + 1.2 + i * 0.1, 100) for i in range(3)]  # second 1: 3
    messages += [text(False, T0 + 1.5, 1000), text(False, T0 + 1.6, 1500)]  # second 1: 2
    messages.sort(key=lambda m: m.timestamp)
    figures = fed(messages).figures(T0 + 2)
    assert (figures.peak_client.messages, figures.peak_client.bytes) == (10, 1000)
    assert (figures.peak_server.messages, figures.peak_server.bytes) == (2, 2500)
    assert figures.duration == pytest.approx(2.0)


def test_silences_between_frames_and_from_the_101_to_the_first():
    first = hop()
    # 101 at +0.002; first frame at +1.002: a silence of 1 s; then gaps of 0.4 (none), 0.5
    # and 3 s; the end 0.1 s after the last frame (none).
    times = [1.002, 1.402, 1.902, 4.902]
    timeline = fed([text(True, T0 + t) for t in times], first)
    figures = timeline.figures(T0 + 5.002)
    assert figures.silences == 3
    longest = figures.max_silence
    assert longest.seconds == pytest.approx(3.0) and longest.start == pytest.approx(T0 + 1.902)
    assert not longest.idle_timeout
    kept = timeline.silence_list(T0 + 5.002, None)
    assert [round(s.seconds, 3) for s in kept] == [3.0, 1.0, 0.5]
    assert kept[1].start == pytest.approx(T0 + 0.002)  # from the 101


def test_an_open_session_counts_no_trailing_silence_but_its_chart_marks_it_up_to_now():
    timeline = fed([text(True, T0 + 0.1), text(False, T0 + 0.2)])
    assert timeline.figures(None).silences == 0
    series = timeline.series(10, T0 + 10.2)
    assert series.silences[0].start == pytest.approx(T0 + 0.2)
    assert series.silences[0].seconds == pytest.approx(10.0)
    assert series.silent == [True] * 10  # from 0.2 s on, each column's middle is silent


def test_round_trips_p50_and_max_agree_with_the_sessions_summary():
    first = hop()
    session = Session(1, [first])
    rtts = [0.010, 0.020, 0.030, 0.500]
    messages = [pong(T0 + 1 + i, rtt) for i, rtt in enumerate(rtts)]
    for message in messages:
        first.stats.add(message)
    figures = session_figures(session, timings(messages))
    assert figures.rtt.count == 4 and figures.rtt.p50 == pytest.approx(0.025)
    assert figures.rtt.max == session.ping_rtt.max == 0.5
    series = fed(messages, first).series(4, T0 + 5)
    assert series.rtt == rtts  # 1.25 s columns: one pong in each


def idle_cut_session(silence: float) -> Session:
    """One hop whose server vanished `silence` seconds after the last frame: the idle-timeout
    finding's single-hop case."""
    first = hop()
    for at in (T0 + 0.5, T0 + 1.25):
        first.stats.add(text(True, at))
    end = T0 + 1.25 + silence
    first.outcome = Outcome.CLOSED
    first.timestamp_end = end
    first.close = Close(by="server", abnormal=True, abnormal_reason="reset", timestamp=end)
    return Session(1, [first])


def test_the_idle_timeout_findings_silence_is_marked_with_the_same_figure():
    session = idle_cut_session(60.0)
    (finding,) = [f for f in diagnosis.diagnose(session) if f.code == "idle-timeout"]
    figures = session_figures(session, timings([text(True, T0 + 0.5), text(True, T0 + 1.25)]))
    longest = figures.max_silence
    assert longest.idle_timeout and longest.start == T0 + 1.25
    assert f"No frame passed for {longest.seconds:.2f} s" in finding.message
    assert f"every {longest.seconds:.1f} s, the silence measured here" in finding.fix
    assert figures.silences == 2  # 0.498 s from the 101 is none; 0.75 s between frames is one
    timeline = fed([text(True, T0 + 0.5), text(True, T0 + 1.25)], session.first_hop)
    series = timeline.series(40, T0 + 61.25, idle_silence(session))  # 1.53 s columns
    assert series.idle == [False] + [True] * 39
    assert series.silent[0]  # the 0.75 s between the two frames


def test_a_cut_across_two_hops_marks_the_silence_measured_across_both():
    client_side, server_side = hop(), hop(T0 + 0.001, "reverse:http://127.0.0.1:9000@8081")
    client_side.stats.add(text(True, T0 + 1.0))
    server_side.stats.add(text(False, T0 + 2.0))  # a later sign of life on the far side
    for side, by in ((client_side, "server"), (server_side, "client")):
        side.outcome = Outcome.CLOSED
        side.timestamp_end = T0 + 12.0
        side.close = Close(by=by, abnormal=True, abnormal_reason="cut", timestamp=T0 + 12.0)
    session = Session(1, [client_side, server_side])
    (finding,) = [f for f in diagnosis.diagnose(session) if f.code == "idle-timeout"]
    longest = session_figures(session, timings([text(True, T0 + 1.0)])).max_silence
    assert longest.idle_timeout and longest.start == T0 + 2.0 and longest.seconds == 10.0
    assert "No frame passed for 10.00 s on either side" in finding.message


def test_no_idle_silence_without_the_finding():
    session = idle_cut_session(0.2)  # too short to be an idle timeout
    assert idle_silence(session) is None
    assert not [f for f in diagnosis.diagnose(session) if f.code == "idle-timeout"]


def test_a_long_session_keeps_bounded_buckets_and_every_message():
    timeline = fed([text(i % 2 == 0, T0 + i * 0.37) for i in range(20_000)])  # ~2 hours
    assert timeline.width > 1 and timeline._used <= BUCKETS
    series = timeline.series(137, timeline.last)
    for side, sent in ((0, 10_000), (1, 10_000)):
        assert sum(series.messages[side]) * series.column_seconds == pytest.approx(sent)
        assert sum(series.bytes[side]) * series.column_seconds == pytest.approx(10 * sent)


def test_a_message_on_a_bucket_boundary_at_the_end_is_counted():
    timeline = fed([text(True, T0 + 0.64)])  # the start of bucket 64, and the end of the span
    series = timeline.series(8, timeline.last)
    assert sum(series.messages[0]) * series.column_seconds == pytest.approx(1)


def test_a_clock_stepping_back_counts_the_message_at_the_previous_time():
    timeline = fed([text(True, T0 + 5), text(True, T0 + 2), text(False, T0 + 6)])
    assert timeline.last == T0 + 6
    assert [s.start for s in timeline.silence_list(None, None)] == [T0 + 0.002, T0 + 5]
    assert timeline.figures(None).peak_client.messages == 2  # both in second 5


arbitrary_timings = st.lists(
    st.tuples(
        st.floats(-5, 30, allow_nan=False),  # seconds since the previous message
        st.booleans(),  # from the client
        st.integers(0, 1 << 20),  # size
        st.one_of(st.none(), st.floats(0, 60, allow_nan=False)),  # a pong's round trip
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(arbitrary_timings, st.integers(1, 300), st.one_of(st.none(), st.floats(0, 100)))
def test_any_timings_give_consistent_figures(steps, columns, after_end):
    first = hop()
    at, messages = T0 + 0.002, []
    for gap, from_client, size, rtt in steps:
        at = min(max(T0, at + gap), T0 + 3e6)
        messages.append(Message(from_client, MessageType.PONG if rtt is not None
                                else MessageType.BINARY, size, b"", at, rtt=rtt))
    timeline = fed(messages, first)
    end = None if after_end is None else timeline.last + after_end
    figures = timeline.figures(end)
    assert timeline.count == len(messages)
    for side, peak in ((True, figures.peak_client), (False, figures.peak_server)):
        mine = [m for m in messages if m.from_client == side]
        assert (peak.messages >= 1) == bool(mine) and peak.messages <= len(mine)
        assert peak.bytes <= sum(m.size for m in mine)
    kept = timeline.silence_list(end, None)
    assert len(kept) <= min(figures.silences, KEPT_SILENCES + 1)
    assert all(s.seconds >= SILENCE for s in kept)
    if figures.max_silence is not None:
        assert figures.max_silence == kept[0]
        assert figures.max_silence.seconds <= figures.duration + 1e-6
    rtts = [m.rtt for m in messages if m.rtt is not None]
    if rtts:
        assert min(rtts) <= figures.rtt.p50 <= figures.rtt.max == max(rtts)
        assert figures.rtt.p50 == statistics.median(rtts) and figures.rtt.count == len(rtts)
    else:
        assert figures.rtt is None
    series = timeline.series(columns, end if end is not None else timeline.last)
    assert series.columns == columns == len(series.rtt)
    for side in (0, 1):
        sent = sum(1 for m in messages if m.from_client == (side == 0))
        counted = sum(series.messages[side]) * series.column_seconds
        assert math.isclose(counted, sent, rel_tol=1e-6, abs_tol=1e-6)
        assert min(series.messages[side] + series.bytes[side], default=0) >= 0
    assert max(series.rtt) == (max(rtts) if rtts else 0)
    json.dumps(figures.to_json())


# ----- the report ------------------------------------------------------------------------------


def capture_with_a_silence_and_pings(path) -> None:
    store = SessionStore(path)
    first = hop()
    store.add_hop(first)
    messages = [text(True, T0 + 0.1 + i * 0.05, 100) for i in range(10)]
    messages += [pong(T0 + 0.7, 0.004), pong(T0 + 0.8, 0.006), pong(T0 + 0.9, 0.020)]
    messages += [text(False, T0 + 3.9, 2000)]  # after a 3 s silence
    for message in messages:
        store.add_message(first, message)
    first.outcome = Outcome.CLOSED
    first.timestamp_end = T0 + 4.0
    first.close = Close(code=1000, by="client", timestamp=T0 + 4.0)
    store.hop_changed(first)
    rejected = hop(T0 + 5)
    rejected.response_status, rejected.outcome, rejected.timestamp_end = 502, Outcome.REJECTED, T0 + 5.1
    store.add_hop(rejected)
    store.close()


def run_report(path, *options) -> str:
    return subprocess.run(
        [sys.executable, "-m", "wsinspect", "report", str(path), *options],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout


def test_report_prints_the_figures_over_time(tmp_path):
    path = tmp_path / "c.wsinspect"
    capture_with_a_silence_and_pings(path)
    output = run_report(path)
    line = next(line for line in output.splitlines() if line.startswith("  over time: "))
    assert line == (
        "  over time: peak 10/s (1000 B/s) from the client; peak 3/s (2.0 KiB/s) from the "
        "server; 1 silence of 0.50 s or more, the longest 3.00 s; ping round trip p50 6.0 ms, "
        "max 20.0 ms"
    )
    assert output.count("over time:") == 1  # none for the rejected upgrade


def test_report_json_has_the_timeline_object(tmp_path):
    path = tmp_path / "c.wsinspect"
    capture_with_a_silence_and_pings(path)
    closed, rejected = json.loads(run_report(path, "--json"))["sessions"]
    timeline = closed["timeline"]
    assert timeline["peak"] == {
        "client": {"messages_per_second": 10, "bytes_per_second": 1000},
        "server": {"messages_per_second": 3, "bytes_per_second": 2000},  # not the same second
    }
    assert timeline["silences"] == 1 and timeline["duration"] == pytest.approx(4.0)
    assert timeline["max_silence"] == {
        "seconds": pytest.approx(3.0), "start": pytest.approx(T0 + 0.9),
        "end": pytest.approx(T0 + 3.9), "idle_timeout": False,
    }
    assert timeline["rtt"] == {"count": 3, "p50": 0.006, "max": 0.020}
    assert rejected["timeline"] is None


def test_report_json_of_an_idle_timeout_names_the_findings_silence():
    store = SessionStore()
    session = idle_cut_session(60.0)
    first = session.first_hop
    first.stats = type(first.stats)()
    store.add_hop(first)
    for at in (T0 + 0.5, T0 + 1.25):
        store.add_message(first, text(True, at))
    store.flush()
    (entry,) = report.report_json(store)["sessions"]
    longest = entry["timeline"]["max_silence"]
    (finding,) = [f for f in entry["findings"] if f["code"] == "idle-timeout"]
    assert longest["idle_timeout"] and f"{longest['seconds']:.2f} s" in finding["message"]
    assert "the longest 60.00 s (the idle timeout)" in report.report_text(store)


def test_timings_are_the_messages_without_payloads_committed_or_pending(tmp_path):
    store = SessionStore(tmp_path / "c.wsinspect")
    first = hop()
    store.add_hop(first)
    messages = [text(True, T0 + 1, 7), pong(T0 + 2, 0.25), text(False, T0 + 3, 9)]
    for message in messages[:2]:
        store.add_message(first, message)
    store.flush()  # two on file, one pending
    store.add_message(first, messages[2])
    expected = timings(messages)
    assert store.hop_timings(first.id, 0, 10) == expected
    assert store.hop_timings(first.id, 1, 3) == expected[1:]
    assert list(store.iter_timings(first.id, chunk=2)) == expected
    store.close()
    again = SessionStore.open(tmp_path / "c.wsinspect")
    assert list(again.iter_timings(first.id)) == expected
    again.close()


@pytest.mark.parametrize("damage", [
    "size = -1", "size = 'big'", "timestamp = 'noon'", "timestamp = 1e300", "rtt = -0.5",
    "from_client = 7",
])
def test_a_damaged_timing_is_one_clear_line_from_the_report(tmp_path, damage):
    path = tmp_path / "c.wsinspect"
    capture_with_a_silence_and_pings(path)
    db = sqlite3.connect(path)
    db.execute(f"UPDATE messages SET {damage} WHERE idx = 3")
    db.commit()
    db.close()
    for options in ((), ("--json",)):
        done = subprocess.run(
            [sys.executable, "-m", "wsinspect", "report", str(path), *options],
            check=False, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 2 and done.stdout == ""
        (line,) = done.stderr.splitlines()
        assert str(path) in line and "damaged" in line
