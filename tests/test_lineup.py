"""Hops seen from two machines: two real wsinspect processes, one in front of a real nginx (the
client's side) and one behind it (in front of the backend), each writing its own capture;
`wsinspect report a.db b.db` lines them up into the sessions one process with both listeners
records, with the clock offset between the captures estimated from the matched handshakes.

The captures are recorded once for the module (`recorded`): the same scripted clients, with
fixed Sec-WebSocket-Keys, through both topologies."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import serve

from wsinspect.lineup import (
    ClockOffset,
    HandshakePair,
    LinedUpCapture,
    LinedUpStore,
    estimate_offset,
    open_captures,
)
from wsinspect.model import Hop, Message, MessageType, header_value
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp

from .conftest import echo_handler, wait_for
from .proxy_servers import NGINX_FIXED, Nginx, free_port
from .rawpeers import frame, read_frame
from .test_cli import start_process, wsinspect
from .test_ui import open_first_session
from .ui_helpers import screen_text

pytestmark = pytest.mark.nginx

SKEW = 37.0  # seconds added to every time of a copy of the server-side capture
# How close the offset estimated between two captures on one machine (true offset 0) must be.
ACCURACY = 0.005


def key(n: int) -> str:
    return base64.b64encode(f"lineup-test-{n:04d}".encode()).decode()


@dataclass(frozen=True)
class Client:
    key: str
    path: str
    name: str  # sent as X-Client, which nginx passes on: tells the clients apart in a hop
    texts: tuple[str, ...] = ("hello",)
    direct: bool = False  # straight to nginx, bypassing the client-side wsinspect


# The same key by two clients at once: told apart by path, or (same path) never merged.
REUSED_BY_PATH = key(3)
REUSED_SAME_PATH = key(4)
SCRIPT: list[Client | tuple[Client, Client]] = [
    Client(key(1), "/chat", "one"),
    Client(key(2), "/chat", "two", ("a", "b", "c")),
    (Client(REUSED_BY_PATH, "/a", "reuse-a"), Client(REUSED_BY_PATH, "/b", "reuse-b")),
    (Client(REUSED_SAME_PATH, "/same", "same-c"), Client(REUSED_SAME_PATH, "/same", "same-d")),
    Client(key(5), "/direct", "direct", direct=True),
    *[Client(key(n), f"/chat?n={n}", f"c{n}", ("x",) * (n % 3 + 1)) for n in range(10, 18)],
]


async def run_client(client: Client, proxy_port: int, nginx_port: int) -> None:
    """A WebSocket client with a fixed key: through the proxy (absolute form), or directly
    to nginx; sends its texts, reads each echo, closes."""
    host = f"127.0.0.1:{nginx_port}"
    target = client.path if client.direct else f"http://{host}{client.path}"
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", nginx_port if client.direct else proxy_port
    )
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {client.key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nX-Client: {client.name}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    for text in client.texts:
        writer.write(frame(1, text.encode(), mask=True))
        assert await read_frame(reader) == (1, text.encode())
    writer.write(frame(8, (1000).to_bytes(2, "big"), mask=True))
    assert (await read_frame(reader))[0] == 8
    writer.close()
    await writer.wait_closed()


async def run_script(proxy_port: int, nginx_port: int) -> None:
    for step in SCRIPT:
        clients = step if isinstance(step, tuple) else (step,)
        await asyncio.gather(*(run_client(c, proxy_port, nginx_port) for c in clients))
    await asyncio.sleep(0.5)  # the proxies record the last closes


async def stop(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, process.early_output + out.decode()


def proxy_command(folder: Path, capture: Path, *modes: str) -> list[str]:
    confdir = folder / f"conf-{capture.stem}"
    confdir.mkdir()
    mode_args = [arg for mode in modes for arg in ("--mode", mode)]
    return wsinspect(*mode_args, "--listen-port", "0", "--headless", "-w", str(capture),
                     "--confdir", str(confdir))


async def record(folder: Path) -> dict[str, Path]:
    """The script through one wsinspect with both listeners (one.db), then through two
    wsinspect processes (a.db in front of nginx, b.db behind it)."""
    captures = {name: folder / f"{name}.db" for name in ("one", "a", "b")}
    listening = r"listening at 127\.0\.0\.1:(\d+)"
    async with serve(echo_handler, "127.0.0.1", 0) as server:
        backend = server.sockets[0].getsockname()[1]

        front, back = free_port(), free_port()
        one, _ = await start_process(
            *proxy_command(folder, captures["one"], f"regular@{front}",
                           f"reverse:http://127.0.0.1:{backend}@{back}"),
            listening=rf"reverse:\S+ proxy {listening}",
        )
        nginx = Nginx(folder / "nginx-one", back, NGINX_FIXED).start()
        try:
            await run_script(front, nginx.port)
        finally:
            nginx.stop()
            await stop(one)

        server_side, back = await start_process(
            *proxy_command(folder, captures["b"], f"reverse:http://127.0.0.1:{backend}"),
            listening=listening,
        )
        nginx = Nginx(folder / "nginx-two", back, NGINX_FIXED).start()
        laptop, front = await start_process(
            *proxy_command(folder, captures["a"], "regular"), listening=listening
        )
        try:
            await run_script(front, nginx.port)
        finally:
            nginx.stop()
            await stop(laptop)
            await stop(server_side)
    return captures


def skewed_copy(capture: Path, out: Path, seconds: float) -> Path:
    """A copy of `capture` whose every time is `seconds` later, rewritten in SQL: as the
    capture of a machine whose clock is that far ahead."""
    shutil.copy(capture, out)
    db = sqlite3.connect(out)
    with db:
        db.execute("UPDATE messages SET timestamp = timestamp + ?", (seconds,))
        for hop_id, data in db.execute("SELECT id, data FROM hops").fetchall():
            hop = json.loads(data)
            for name in ("timestamp_start", "timestamp_response", "timestamp_end"):
                if hop[name] is not None:
                    hop[name] += seconds
            if hop["stats"]["last_timestamp"] is not None:
                hop["stats"]["last_timestamp"] += seconds
            if hop["close"] and hop["close"]["timestamp"] is not None:
                hop["close"]["timestamp"] += seconds
            for violation in hop["violations"]:
                violation["timestamp"] += seconds
            db.execute("UPDATE hops SET data = ? WHERE id = ?", (json.dumps(hop), hop_id))
    db.close()
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lineup")
    captures = asyncio.run(record(folder))
    captures["b+37"] = skewed_copy(captures["b"], folder / "b-skewed.db", SKEW)
    return captures


def report(*files: Path | str, text: bool = False) -> subprocess.CompletedProcess:
    args = ["report", *map(str, files), *([] if text else ["--json"])]
    return subprocess.run(wsinspect(*args), capture_output=True, text=True, timeout=60, check=False)


def report_json(*files: Path | str) -> dict:
    result = report(*files)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def header(hop: dict, name: str) -> str | None:
    return next((v for k, v in hop["request_headers"] if k.lower() == name.lower()), None)


def shape(session: dict) -> tuple:
    """What a session is, whichever process recorded it: per hop the listener's kind, the
    client and key it carried, path, answer and end; then the messages and the close."""
    hops = tuple(
        (
            hop["mode"].split(":")[0].split("@")[0],
            header(hop, "X-Client"),
            header(hop, "Sec-WebSocket-Key"),
            hop["request_line"].split(" ")[1].removeprefix("http://").partition("/")[2],
            hop["response_status"],
            hop["outcome"],
        )
        for hop in session["hops"]
    )
    return hops, tuple(sorted(session["messages"].items())), session["close"]["code"]


def shapes(data: dict) -> list[tuple]:
    """The sessions' shapes, but those of the clients reusing one key on one path: which of
    their hops can be told apart depends on timing, so they are checked for no merge only."""
    return sorted(
        shape(s) for s in data["sessions"]
        if header(s["hops"][0], "Sec-WebSocket-Key") != REUSED_SAME_PATH
    )


def offset_of(data: dict, index: int = 1) -> dict:
    return data["captures"][index]["clock_offset"]


def never_merges_two_clients(data: dict) -> None:
    for session in data["sessions"]:
        assert len({header(h, "X-Client") for h in session["hops"]}) == 1, session["hops"]


def test_two_processes_line_up_as_one_process_with_both_listeners(recorded):
    one = report_json(recorded["one"])
    lined_up = report_json(recorded["a"], recorded["b"])
    assert "captures" not in one  # a single capture's report is as before
    assert shapes(lined_up) == shapes(one)
    by_client = {header(s["hops"][0], "X-Client"): s for s in lined_up["sessions"]}
    # Every client through both proxies has its two hops, the client's side first, each
    # naming the capture it came from; the one that bypassed the laptop has hop 2 only.
    for client in ("one", "two", "reuse-a", "reuse-b", *[f"c{n}" for n in range(10, 18)]):
        hops = by_client[client]["hops"]
        assert [h["capture"] for h in hops] == [str(recorded["a"]), str(recorded["b"])]
        assert hops[0]["mode"] == "regular" and hops[1]["mode"].startswith("reverse:")
    assert [h["capture"] for h in by_client["direct"]["hops"]] == [str(recorded["b"])]
    # Two clients reusing one key: by path, each its own session; on one path, never merged.
    assert by_client["reuse-a"]["id"] != by_client["reuse-b"]["id"]
    never_merges_two_clients(lined_up)
    never_merges_two_clients(one)
    reused = [s for s in lined_up["sessions"]
              if header(s["hops"][0], "Sec-WebSocket-Key") == REUSED_SAME_PATH]
    assert sorted(header(h, "X-Client") for s in reused for h in s["hops"]) == [
        "same-c", "same-c", "same-d", "same-d"]


def rounded(value):
    """JSON with its floats to 0.1 ms: the same figures read on two clocks."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def test_clock_offset_is_estimated_from_the_matched_handshakes_and_shifts_the_later_capture(
    recorded,
):
    same_clock = report_json(recorded["a"], recorded["b"])
    skewed = report_json(recorded["a"], recorded["b+37"])
    reference, later = skewed["captures"]
    assert reference == {"file": str(recorded["a"]), "hops": 14, "reference": True,
                         "read": True, "clock_offset": None, "note": None}
    # The keys seen once in each capture: the clients through both proxies but the four
    # reusing two keys (each seen twice in each capture).
    assert later["hops"] == 15  # and the client that bypassed the laptop
    assert later["clock_offset"]["handshakes"] == 10 and later["note"] is None
    error = offset_of(same_clock)["seconds"]  # both processes on one machine: truly 0
    assert abs(error) < ACCURACY
    low, high = offset_of(same_clock)["bounds"]
    assert low <= error <= high and low <= 0 <= high
    estimated = offset_of(skewed)["seconds"]
    assert abs(estimated - SKEW) < ACCURACY
    assert estimated - SKEW == pytest.approx(error, abs=1e-6)
    print(f"offset error with one clock {error * 1000:.3f} ms, bounds "
          f"[{low * 1000:.3f}, {high * 1000:.3f}] ms; with +{SKEW:g} s: "
          f"{(estimated - SKEW) * 1000:.3f} ms")
    # Shifted back, the skewed copy lines up into the same sessions at the same times.
    assert shapes(skewed) == shapes(same_clock)
    for a, b in zip(same_clock["sessions"], skewed["sessions"], strict=True):
        assert b["timestamp_start"] == pytest.approx(a["timestamp_start"], abs=1e-6)
        for hop_a, hop_b in zip(a["hops"], b["hops"], strict=True):
            assert hop_b["timestamp_end"] == pytest.approx(hop_a["timestamp_end"], abs=1e-6)
        # The figures over time read the later capture's messages on the reference clock too.
        assert rounded(b["timeline"]) == rounded(a["timeline"])

    text = report(recorded["a"], recorded["b+37"], text=True)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"2 captures lined up on {recorded['a']}'s clock:"
    assert lines[1] == f"  {recorded['a']}: 14 hops, the reference clock"
    assert lines[2].startswith(
        f"  {recorded['b+37']}: 15 hops, clock {estimated:.4f} s ahead of {recorded['a']}'s "
        f"(estimated from 10 matched handshakes, between {SKEW + low:+.4f} and "
        f"{SKEW + high:+.4f} s); its times are shifted by {-estimated:+.4f} s")
    assert any(line.startswith("  hop 2 [reverse:") and line.endswith(f"(from {recorded['b+37']})")
               for line in lines)


def test_the_server_side_capture_first_gives_the_same_sessions_on_its_clock(recorded):
    laptop_first = report_json(recorded["a"], recorded["b+37"])
    server_first = report_json(recorded["b+37"], recorded["a"])
    assert shapes(server_first) == shapes(laptop_first)  # hop 1 is still the laptop's
    assert offset_of(server_first)["seconds"] == pytest.approx(
        -offset_of(laptop_first)["seconds"], abs=1e-6)
    for a, b in zip(laptop_first["sessions"], server_first["sessions"], strict=True):
        assert b["timestamp_start"] == pytest.approx(
            a["timestamp_start"] + offset_of(laptop_first)["seconds"], abs=1e-6)


def test_the_other_capture_formats_line_up_the_same(recorded, tmp_path):
    """HAR and mitmproxy flow files (exports of the server's capture) line up as it does."""
    from_db = report_json(recorded["a"], recorded["b+37"])
    for suffix in ("har", "mitm"):
        out = tmp_path / f"b.{suffix}"
        subprocess.run(wsinspect("export", str(recorded["b+37"]), "-o", str(out)),
                       check=True, capture_output=True, timeout=60)
        data = report_json(recorded["a"], out)
        assert shapes(data) == shapes(from_db), suffix
        assert offset_of(data)["seconds"] == pytest.approx(
            offset_of(from_db)["seconds"], abs=1e-5), suffix
    # export takes several captures too: the lined-up sessions, provenance kept.
    merged = tmp_path / "both.har"
    subprocess.run(wsinspect("export", str(recorded["a"]), str(recorded["b+37"]), "-o",
                             str(merged)), check=True, capture_output=True, timeout=60)
    again = report_json(merged)
    assert shapes(again) == shapes(from_db)
    assert {h["capture"] for s in again["sessions"] for h in s["hops"]} == {
        str(recorded["a"]), str(recorded["b+37"])}


def test_a_capture_given_twice_or_without_a_matching_handshake_says_so(recorded, tmp_path):
    alone = report_json(recorded["a"])
    twice = report_json(recorded["a"], recorded["a"])
    assert shapes(twice) == shapes(alone)
    assert twice["captures"][1]["note"] == f"the same file as {recorded['a']}, read once"
    assert twice["captures"][1]["read"] is False

    copy = tmp_path / "copy.db"
    skewed_copy(recorded["a"], copy, 5.0)
    as_copy = report_json(recorded["a"], copy)
    assert shapes(as_copy) == shapes(alone)
    assert as_copy["captures"][1]["note"].startswith(f"the same hops as {recorded['a']}")

    # The session of the client that bypassed the laptop, alone: no key in common.
    direct = next(s["id"] for s in report_json(recorded["b"])["sessions"]
                  if header(s["hops"][0], "X-Client") == "direct")
    only = tmp_path / "direct.har"
    subprocess.run(wsinspect("export", str(recorded["b"]), "--session", str(direct), "-o",
                             str(only)), check=True, capture_output=True, timeout=60)
    unmatched = report_json(recorded["a"], only)
    assert unmatched["captures"][1]["clock_offset"] is None
    assert unmatched["captures"][1]["note"] == (
        f"no handshake matches one in {recorded['a']}: no clock offset estimated, "
        "its times are as recorded and its hops not lined up with theirs")
    text = report(recorded["a"], only, text=True).stdout.splitlines()
    assert text[2] == f"  {only}: 1 hop, {unmatched['captures'][1]['note']}"


def test_a_bad_file_among_captures_is_one_line_and_exit_2(recorded, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(200))
    for files in ([recorded["a"], bad], [bad, recorded["a"]], [recorded["a"], tmp_path / "none"]):
        for command in ("report", "open", "export"):
            extra = ["-o", str(tmp_path / "out.har")] if command == "export" else []
            result = subprocess.run(wsinspect(command, *map(str, files), *extra),
                                    capture_output=True, text=True, timeout=60, check=False)
            assert result.returncode == 2, (command, result.stderr)
            assert result.stdout == ""
            (line,) = result.stderr.splitlines()
            assert line.startswith(f"wsinspect: {files[0] if files[0] != recorded['a'] else files[1]}: ")


def test_captures_that_cannot_share_a_clock_are_one_line_and_exit_2(tmp_path):
    """A crafted pair: the same key in 2001 and in 2191, so the second capture's other hops
    would move before 1970."""
    near = Synthetic(1e9, key(200), "/", 0.001, 0.001, 0.001, 0.0)
    first, second = SessionStore(tmp_path / "first.db"), SessionStore(tmp_path / "second.db")
    first.add_hop(near.hop(LAPTOP, 1e9, 1e9 + 0.01, "x"))
    second.add_hop(near.hop(SERVER, 7e9, 7e9 + 0.005, "x"))
    second.add_hop(Synthetic(1000.0, key(201), "/", 0.001, 0.001, 0.001, 0.0)
                   .hop(SERVER, 1000.0, 1000.01, "y"))
    first.close()
    second.close()
    result = subprocess.run(wsinspect("report", str(first.path), str(second.path)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"wsinspect: {second.path}: its hops cannot be put on one "
                                    "clock (hop timestamp_start is not a timestamp between")
    assert result.stderr.count("\n") == 1


def test_estimate_keeps_inside_what_every_handshake_allows():
    # Outer hop waits 10 ms for its answer; inner hop 4 ms; the inner clock is 2 s ahead.
    def pair(t: float, forward: float, back: float) -> HandshakePair:
        inner = 0.004
        return HandshakePair(t, t + forward + inner + back, t + forward + 2.0,
                             t + forward + inner + 2.0)

    # Forward delays 1 ms, backward 5 ms: each pair allows 1.995 to 2.001, the midpoints say
    # 1.998 (NTP's assumption of equal delays both ways is off by half their difference).
    assert estimate_offset([pair(t, 0.001, 0.005) for t in range(5)]) == ClockOffset(
        pytest.approx(1.998), 5, pytest.approx(1.995), pytest.approx(2.001))
    # One quick pair bounds the offset tighter than the slow pairs' midpoints (2.0095): the
    # middle of what all of them allow is taken.
    mixed = estimate_offset(
        [pair(t, 0.020, 0.001) for t in range(4)] + [pair(9, 0.0005, 0.0005)]
    )
    assert (mixed.low, mixed.seconds, mixed.high) == (
        pytest.approx(1.9995), pytest.approx(2.0), pytest.approx(2.0005))
    # Handshakes that no single offset fits (a clock that drifted): the median, no bounds.
    drifted = estimate_offset([pair(0, 0.001, 0.001), HandshakePair(100, 100.01, 103, 103.002)])
    assert drifted.low is None and drifted.high is None
    assert estimate_offset([]) is None


async def test_the_app_shows_the_lined_up_session_and_the_offset(recorded):
    store = open_captures([recorded["a"], recorded["b+37"]])
    assert isinstance(store, LinedUpStore)
    app = WsInspectApp(store)
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            estimated = store.captures[1].offset.seconds
            status = f"captures a.db + b-skewed.db {estimated:+.3f} s"
            await wait_for(lambda: status in screen_text(app), what="the offset in the status")
            assert f"+{SKEW:.2f}" in status
            screen = await open_first_session(app, pilot)
            first = store.session(screen.session_id)
            assert len(first.hops) == 2
            await pilot.press("h")
            await wait_for(lambda: "Hop 2" in screen_text(app), what="the handshake tab")
            text = screen_text(app)
            assert "Hop 1" in text and "Hop 2" in text
            assert f"from {recorded['a']}" in text
            # The messages of hop 2 (read from the skewed capture) are on the first one's
            # clock: each within a few ms of the same message at hop 1, not 37 s.
            front = store.messages(first.id, 0, 100, hop_position=1)
            back = store.messages(first.id, 0, 100, hop_position=2)
            data = [(f, b) for f, b in zip(front, back, strict=True)
                    if f.type is MessageType.TEXT]
            assert data and all(f.payload == b.payload for f, b in data)
            assert all(abs(b.timestamp - f.timestamp) < 0.01 for f, b in data)
            assert abs(first.hops[1].timestamp_end - first.hops[0].timestamp_end) < 0.05
    finally:
        store.close()


# ----- many clients, any skew (hypothesis) -----------------------------------------------------

LAPTOP, SERVER = "regular", "reverse:http://127.0.0.1:9000"


@dataclass(frozen=True)
class Synthetic:
    """A client's session as both hops see it, on true time."""

    start: float
    key: str | None
    path: str
    forward: float  # the request's way from hop 1 to hop 2 (connection setup included)
    backward: float  # the answer's way back
    waited: float  # hop 2's wait for the backend's answer
    relay: float  # a message's way between the hops on the open connections

    def hop(self, mode: str, start: float, answered: float, name: str) -> Hop:
        headers = [("Host", "app.example"), ("Upgrade", "websocket"),
                   ("Connection", "Upgrade"), ("X-Client", name)]
        if self.key:
            headers.append(("Sec-WebSocket-Key", self.key))
        return Hop(mode=mode, url=f"ws://app.example{self.path}",
                   request_line=f"GET {self.path} HTTP/1.1", http_version="HTTP/1.1",
                   request_headers=headers, timestamp_start=start, timestamp_response=answered,
                   response_status=101)


synthetic = st.builds(
    Synthetic,
    start=st.floats(1_700_000_000, 1_700_000_030),
    key=st.sampled_from([None, "cmV1c2Vk", *[key(n) for n in range(100, 130)]]),
    path=st.sampled_from(["/a", "/b"]),
    forward=st.floats(0.0002, 0.02),
    backward=st.floats(0.0002, 0.005),
    waited=st.floats(0.0001, 0.05),
    relay=st.floats(0.00002, 0.001),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(synthetic, min_size=1, max_size=25), st.floats(-7200, 7200))
def test_any_skew_lines_up_as_one_clock_and_never_merges_two_clients(clients, skew):
    laptop, server, together = SessionStore(), SessionStore(), SessionStore()
    hops = []
    for n, c in enumerate(clients):
        name = f"client{n}"
        at_server = c.start + c.forward
        answered = at_server + c.waited
        front = c.hop(LAPTOP, c.start, answered + c.backward, name)
        back = c.hop(SERVER, at_server, answered, name)
        hops += [(front, laptop, 0.0), (back, server, skew)]
    for hop, store, shift in sorted(hops, key=lambda h: h[0].timestamp_start):
        together.add_hop(Hop.from_json(hop.to_json()))  # one process, one clock
        for name in ("timestamp_start", "timestamp_response"):
            setattr(hop, name, getattr(hop, name) + shift)
        store.add_hop(hop)
        client = clients[int(header_value(hop.request_headers, "X-Client")[6:])]
        for i, (from_client, delay) in enumerate(((True, 0.001), (False, 0.002))):
            # A message each way, hop 2 seeing the client's later and the server's earlier.
            later = (hop.mode == SERVER) == from_client
            t = client.start + client.forward + client.waited + delay
            t += (client.relay if later else 0.0) + shift
            store.add_message(hop, Message(from_client, MessageType.TEXT, 1, b"m", t))
    lined_up = LinedUpStore([LinedUpCapture("laptop", laptop), LinedUpCapture("server", server)])

    def grouping(store: SessionStore) -> set[tuple[str, ...]]:
        return {tuple(header_value(h.request_headers, "X-Client") for h in s.hops)
                for s in store.sessions()}

    got = grouping(lined_up)
    assert all(len(set(names)) == 1 for names in got)  # never two clients in one session
    keys = Counter(c.key for c in clients)
    unique = {f"client{n}" for n, c in enumerate(clients) if c.key and keys[c.key] == 1}
    assert {g for g in got if g[0] in unique} == {g for g in grouping(together) if g[0] in unique}
    offset = lined_up.captures[1].offset
    if unique:
        assert offset.low <= skew + 1e-6 and skew - 1e-6 <= offset.high
        assert abs(offset.seconds - skew) <= max(c.relay for c in clients) + 1e-6
    else:  # keys reused or none: no clock in common, so nothing is lined up
        assert offset is None and lined_up.captures[1].note.startswith("no handshake matches")
        assert all(len(s.hops) == 1 for s in lined_up.sessions())


def test_a_key_reused_after_the_correlation_window_starts_a_new_session():
    """(Found by the test above.) The store forgot the old session's key as the new one's hop
    arrived, and read the new session's start before the hop had joined it."""
    store = SessionStore()
    old = store.add_hop(Synthetic(100.0, "c2FtZQ==", "/", 0.001, 0.001, 0.001, 0.0)
                        .hop(LAPTOP, 100.0, 100.01, "a"))
    new = store.add_hop(Synthetic(131.0, "c2FtZQ==", "/", 0.001, 0.001, 0.001, 0.0)
                        .hop(LAPTOP, 131.0, 131.01, "b"))
    assert new is not old and len(store.sessions()) == 2
