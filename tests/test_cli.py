"""The command line and the standalone addon, as real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.conftest import mitmdump
from wsinspect.store import SessionStore

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def ignore_sigint():
    """What a shell does to a job started with `&` in a script."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def start_process(*args: str, listening: str) -> tuple[asyncio.subprocess.Process, int]:
    """Start a proxy process and wait for the line matching `listening`; returns the port its
    first group captured (0 for an empty group). The lines read are kept as
    `process.early_output`."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=ignore_sigint,
        cwd=ROOT,
    )
    lines = []
    try:
        while True:
            line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
            lines.append(line)
            if not line:
                raise AssertionError("the process ended early:\n" + "".join(lines))
            if match := re.search(listening, line):
                process.early_output = "".join(lines)
                return process, int(match.group(1) or 0)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise


async def chat(port: int, backend: int, path: str = "/") -> None:
    async with connect(f"ws://127.0.0.1:{backend}{path}", proxy=f"http://127.0.0.1:{port}") as ws:
        await ws.send("one")
        assert await ws.recv() == "one"
        await ws.send(b"\x01\x02")
        assert await ws.recv() == b"\x01\x02"
        await (await ws.ping(b"pp"))


def wsinspect(*args: str) -> list[str]:
    return [str(BIN / "wsinspect"), *args]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_headless_records_and_stops_cleanly_on_signal(tmp_path, confdir, echo_server, sig):
    capture = tmp_path / "cap.db"
    process, port = await start_process(
        *wsinspect("--mode", "regular", "--headless", "-w", str(capture), "--listen-port", "0",
                   "--confdir", str(confdir)),
        listening=r"listening at 127\.0\.0\.1:(\d+)",
    )
    await chat(port, echo_server, "/headless")
    await asyncio.sleep(0.3)
    process.send_signal(sig)
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, out.decode()
    text = out.decode()
    assert re.search(r"#1 upgrade +GET /headless HTTP/1\.1 \(ws://127\.0\.0\.1:\d+/headless\) via regular", text)
    assert re.search(r"#1 closed +101 .* 1000 by client", text)
    assert "1 session recorded to" in text
    assert oct(capture.stat().st_mode & 0o777) == "0o600"

    result = subprocess.run(
        wsinspect("report", str(capture), "--json"), capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout)
    assert report["format"] == "wsinspect-report/1"
    (session,) = report["sessions"]
    assert session["outcome"] == "closed" and session["status"] == 101
    assert session["url"].endswith("/headless")
    assert session["messages"] == {
        "from_client": 4, "from_server": 3, "bytes": 16,
        "text": 2, "binary": 2, "ping": 1, "pong": 1, "close": 1,
    }
    assert session["close"]["code"] == 1000 and session["close"]["by"] == "client"
    (hop,) = session["hops"]
    assert hop["index"] == 1 and hop["mode"] == "regular" and hop["http_version"] == "HTTP/1.1"
    assert ["Upgrade", "websocket"] in hop["request_headers"]
    assert hop["response_status"] == 101
    assert session["findings"] == []

    text_report = subprocess.run(
        wsinspect("report", str(capture)), capture_output=True, text=True, check=True
    ).stdout
    assert "hop 1 [regular] GET /headless HTTP/1.1 -> 101 Switching Protocols" in text_report
    assert "end: 1000 by client" in text_report


async def test_capture_survives_sigkill_mid_session(tmp_path, confdir, echo_server):
    capture = tmp_path / "killed.db"
    process, port = await start_process(
        *wsinspect("--headless", "-w", str(capture), "--listen-port", "0", "--confdir", str(confdir)),
        listening=r"listening at 127\.0\.0\.1:(\d+)",
    )
    async with connect(f"ws://127.0.0.1:{echo_server}/", proxy=f"http://127.0.0.1:{port}") as ws:
        for i in range(200):
            await ws.send(f"msg {i}")
            await ws.recv()
        await asyncio.sleep(1.5)  # more than the commit interval
        process.kill()
        await process.wait()
    store = SessionStore.open(capture)
    (session,) = store.sessions()
    assert session.stats.count == 400
    messages = store.messages(session.id, 0, 1000)
    assert [m.payload for m in messages[:2]] == [b"msg 0", b"msg 0"]
    assert messages[-1].payload == b"msg 199"


async def test_port_in_use_is_one_clear_line(confdir):
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            wsinspect("--headless", "--listen-port", str(port), "--confdir", str(confdir)),
            capture_output=True, text=True, timeout=30,
        )
    finally:
        blocker.close()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert re.search(r"address already in use|in use", result.stderr, re.I), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_mode_spec_is_one_clear_line(confdir):
    result = subprocess.run(
        wsinspect("--headless", "--mode", "bogus:thing", "--confdir", str(confdir)),
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Invalid proxy mode specification: bogus:thing" in result.stderr


def test_report_on_unreadable_files_is_one_line(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    for path in (garbage, tmp_path / "missing.db"):
        result = subprocess.run(wsinspect("report", str(path)), capture_output=True, text=True)
        assert result.returncode == 2
        assert result.stderr.startswith(f"wsinspect: {path}:")
        assert "Traceback" not in result.stderr


async def test_standalone_addon_in_a_real_mitmdump(tmp_path, confdir, echo_server):
    capture = tmp_path / "mitmdump.db"
    process, port = await start_process(
        *mitmdump(confdir), "-s", "addons/wsinspect.py", "--listen-host", "127.0.0.1",
        "--listen-port", "0", "--set", f"wsinspect_capture={capture}",
        listening=r"listening at 127\.0\.0\.1:(\d+)",
    )
    try:
        await chat(port, echo_server, "/standalone")
        await asyncio.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 20)
    store = SessionStore.open(capture)
    (session,) = store.sessions()
    assert session.url.endswith("/standalone")
    assert session.stats.by_type == {"text": 2, "binary": 2, "ping": 1, "pong": 1, "close": 1}


async def test_standalone_addon_in_reverse_mode_asks_for_keep_host_header(
    tmp_path, confdir, echo_server
):
    """mitmproxy rewrites Host for reverse listeners before any addon runs; the script says
    so, and with keep_host_header records the Host the client sent."""
    recorded = {}
    for keep in (False, True):
        capture = tmp_path / f"reverse-{keep}.db"
        process, port = await start_process(
            *mitmdump(confdir), "-s", "addons/wsinspect.py", "--listen-host", "127.0.0.1",
            "--listen-port", "0", "--mode", f"reverse:http://127.0.0.1:{echo_server}",
            "--set", f"wsinspect_capture={capture}",
            *(["--set", "keep_host_header=true"] if keep else []),
            listening=r"listening at 127\.0\.0\.1:(\d+)",
        )  # fmt: skip
        try:
            async with connect(f"ws://127.0.0.1:{port}/reverse") as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
            await asyncio.sleep(0.3)
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(process.communicate(), 20)
        output = process.early_output + out.decode()
        assert ("--set keep_host_header=true" in output) is not keep, output
        store = SessionStore.open(capture)
        (session,) = store.sessions()
        recorded[keep] = dict(session.first_hop.request_headers)["Host"], port
        store.close()
    assert recorded[False][0] == f"127.0.0.1:{echo_server}", "rewritten to the target"
    assert recorded[True][0] == f"127.0.0.1:{recorded[True][1]}", "what the client sent"


def test_domain_modules_import_without_textual():
    code = (
        "import sys\n"
        "import wsinspect.model, wsinspect.store, wsinspect.recorder, wsinspect.engine, "
        "wsinspect.report, wsinspect.correlate, wsinspect.cli\n"
        "loaded = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ})
