"""`wsinspect demo`: the headless demo as a real subprocess, with the Python hop and with real
nginx, leaves the expected sessions and findings and nothing running; the app shows them."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.test_cli import start_in_terminal
from tests.ui_helpers import screen_text
from wsinspect.addresses import free_port
from wsinspect.demo import CHATTY_MESSAGES, Demo
from wsinspect.diagnosis import Severity, diagnose
from wsinspect.model import MessageType, Outcome
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.payload import PayloadPane
from wsinspect.ui.session_view import SessionScreen
from wsinspect.ui.sessions import SessionsTable

BROKEN_FINDINGS = [
    ("upgrade-dropped", "error", 2),
    ("connection-dropped", "error", 2),
    ("http10-upstream", "error", 2),
    ("host-changed", "info", 2),  # nginx sends the proxy_pass address as Host
    ("handshake-rejected", "error", 2),
]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def demo_command(hop: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "wsinspect", "demo", "--headless", "--hop", hop, *extra]


def run_demo(
    tmp_path: Path, hop: str, *extra: str
) -> tuple[subprocess.CompletedProcess, SessionStore]:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    capture = tmp_path / "demo.db"
    result = subprocess.run(
        demo_command(hop, "-w", str(capture), *extra),
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert result.returncode == 0, result.stderr
    # Its temporary directory (mitmproxy confdir, nginx config) is gone, and so is nginx.
    assert list(scratch.iterdir()) == []
    assert processes_mentioning(str(scratch)) == []
    return result, SessionStore.open(capture)


@pytest.mark.parametrize("hop", ["python", pytest.param("nginx", marks=pytest.mark.nginx)])
def test_headless_demo_records_a_healthy_a_broken_and_a_chatty_session(tmp_path, hop):
    port = free_port()
    result, store = run_demo(tmp_path, hop, "--port", str(port))
    assert f"clients -> wsinspect 127.0.0.1:{port} -> {hop} hop 127.0.0.1:" in result.stdout
    assert "error upgrade-dropped (hop 2)" in result.stdout
    assert result.stdout.rstrip().endswith("3 sessions")
    healthy, broken, chatty = store.sessions()

    assert healthy.url.endswith("/fixed/chat") and healthy.outcome is Outcome.CLOSED
    assert healthy.status == 101 and healthy.close.code == 1000
    assert [h.mode.split(":")[0].split("@")[0] for h in healthy.hops] == ["regular", "reverse"]
    stats = healthy.stats
    assert stats.from_client >= 4 and stats.from_server >= 4
    assert {MessageType.TEXT, MessageType.BINARY, MessageType.PING, MessageType.PONG} <= {
        MessageType(t) for t in stats.by_type
    }
    assert all(f.severity is Severity.INFO for f in diagnose(healthy))

    assert broken.url.endswith("/broken/chat") and broken.outcome is Outcome.REJECTED
    assert [h.http_version for h in broken.hops] == ["HTTP/1.1", "HTTP/1.0"]
    assert [(f.code, f.severity.value, f.hop) for f in diagnose(broken)] == BROKEN_FINDINGS

    assert chatty.url.endswith("/fixed/ticker") and chatty.close.code == 1000
    assert chatty.stats.by_type["text"] == 2 * CHATTY_MESSAGES
    assert store.messages(chatty.id, 0, 1)[0].payload.startswith(b'{"type": "tick"')
    store.close()


def start_demo(hop: str, scratch: Path) -> subprocess.Popen:
    """The headless demo with `scratch` as its TMPDIR, once its clients are under way."""
    scratch.mkdir()
    process = subprocess.Popen(
        demo_command(hop),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert "wsinspect demo: clients ->" in process.stdout.readline()
    return process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_demo_stops_cleanly_on_a_signal(tmp_path, sig):
    scratch = tmp_path / "tmp"
    process = start_demo("auto", scratch)
    assert [p.name for p in scratch.iterdir()][0].startswith("wsinspect-demo-")
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode in (0, 130)  # 0 when the scenario had already finished
    assert "Traceback" not in stderr
    assert list(scratch.iterdir()) == []
    assert processes_mentioning(str(scratch)) == []


def test_closing_the_apps_terminal_removes_the_demos_ca_and_files(tmp_path):
    """The app in a pseudo-terminal whose other end is then closed, as when its terminal
    window is: the kernel sends SIGHUP, and the demo's folder (the CA's key) goes."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    process, master = start_in_terminal(
        [sys.executable, "-m", "wsinspect", "demo", "--hop", "auto"], scratch)
    try:
        screen = b""
        deadline = time.monotonic() + 60
        while b"rejected" not in screen:  # the app lists the demo's sessions (the broken one)
            assert time.monotonic() < deadline, screen[-2000:]
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                screen += os.read(master, 65536)
        assert [p.name for p in scratch.iterdir()][0].startswith("wsinspect-demo-")
        assert any((p / "mitmproxy" / "mitmproxy-ca.pem").exists() for p in scratch.iterdir())
    finally:
        os.close(master)  # the terminal goes away
    try:
        # 129: the app's exit was stuck on the dead terminal and the watchdog ended it.
        assert process.wait(timeout=30) in (0, 130, 128 + signal.SIGHUP)
    finally:
        process.kill()
    assert list(scratch.iterdir()) == []
    assert processes_mentioning(str(scratch)) == []


def test_nginx_goes_with_the_demo_even_when_it_is_killed(tmp_path):
    """SIGKILL gives the demo no chance to stop nginx: nginx is told to end with its parent.
    (Its temporary directory stays: nothing can remove it then.)"""
    scratch = tmp_path / "tmp"
    process = start_demo("nginx", scratch)
    assert any("nginx" in p for p in processes_mentioning(str(scratch))), "nginx is running"
    process.kill()
    process.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while processes_mentioning(str(scratch)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_mentioning(str(scratch)) == []


def test_a_port_in_use_is_one_line(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = subprocess.run(
            demo_command("python", "--port", str(taken.getsockname()[1])),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TMPDIR": str(scratch)},
        )
    assert result.returncode == 2
    assert result.stderr.startswith("wsinspect demo: ") and result.stderr.count("\n") == 1
    assert list(scratch.iterdir()) == []


async def test_the_app_shows_the_demo_sessions():
    async with Demo(hop="python") as demo:
        app = WsInspectApp(demo.store, demo.engine)
        async with app.run_test(size=(140, 45)) as pilot:
            await demo.run_clients()
            table = app.screen.query_one(SessionsTable)
            await wait_for(lambda: table.row_count == 3, what="three session rows")
            await pilot.pause()
            text = screen_text(app)
            for path in ("/fixed/chat", "/broken/chat", "/fixed/ticker"):
                assert path in text
            assert "3 sessions (2 closed, 1 rejected)" in text

            table.move_cursor(row=2)  # the chatty session
            await pilot.press("enter")
            await wait_for(lambda: isinstance(app.screen, SessionScreen), what="session view")
            await pilot.press("home")
            pane = app.screen.query_one(PayloadPane)
            await wait_for(lambda: pane.message is not None and pane.message.index == 0)
            await pilot.pause()
            text = screen_text(app)
            assert f"messages {2 * CHATTY_MESSAGES + 2}" in text  # and both close frames
            assert '"type": "tick",' in text and '"book": {' in text and "[json]" in text
