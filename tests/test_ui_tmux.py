"""Once as a person would: `wsinspect --mode regular` in a real tmux terminal, real traffic
through it, the screen read back with capture-pane."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.builders import free_port
from tests.conftest import wait_for
from wsinspect.store import SessionStore



@pytest.fixture(autouse=True)
def tmux_installed():
    assert shutil.which("tmux"), "tmux is needed for this test (install.sh --test installs it)"

WSINSPECT = Path(sys.executable).parent / "wsinspect"
# The terminal's own size, not COLUMNS/LINES inherited from the test process.
UNSIZED = ["env", "-u", "COLUMNS", "-u", "LINES"]


class Tmux:
    """A private tmux server (its own socket) running one window."""

    def __init__(self, socket_name: str) -> None:
        self.socket_name = socket_name

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket_name, *args], capture_output=True, text=True, check=True
        ).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "app")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "app", *keys)

    async def wait_screen(self, *texts: str, timeout: float = 15) -> str:
        await wait_for(
            lambda: all(t in self.screen() for t in texts), timeout, f"{texts} on screen"
        )
        return self.screen()


async def test_the_app_in_a_real_terminal(tmp_path, confdir, echo_server):
    port = free_port()
    capture = tmp_path / "tmux.db"
    command = shlex.join(
        [*UNSIZED, str(WSINSPECT), "--mode", "regular", "--listen-port", str(port),
         "--confdir", str(confdir), "-w", str(capture)]
    ) + "; echo EXIT=$?; sleep 60"
    tmux = Tmux(f"wsinspect-test-{os.getpid()}")
    tmux.run("new-session", "-d", "-s", "app", "-x", "130", "-y", "40",
             "-e", "TERM=xterm-256color", command)
    try:
        screen = await tmux.wait_screen("No WebSocket sessions yet")
        assert f"127.0.0.1:{port}" in screen and "mitmproxy-ca-cert.pem" in screen

        async with connect(
            f"ws://127.0.0.1:{echo_server}/tmux-room", proxy=f"http://127.0.0.1:{port}"
        ) as ws:
            await ws.send('{"hello": "[bold]terminal[/bold]"}')
            await ws.recv()
            await ws.send("\x1b[2J\x1b]0;evil\x07 still here")
            await ws.recv()
            screen = await tmux.wait_screen(f"ws://127.0.0.1:{echo_server}/tmux-room", " open ")

            tmux.keys("Enter")
            screen = await tmux.wait_screen("C→S text", "S→C text")
            assert '{"hello": "[bold]terminal[/bold]"}' in screen, screen
            assert r"\x1b[2J\x1b]0;evil\x07 still here" in screen  # shown, not obeyed
            assert "No WebSocket sessions yet" not in screen  # nothing cleared the screen

            tmux.keys("Home", "Down")
            screen = await tmux.wait_screen('"hello": "[bold]terminal[/bold]"', "[json]")

        tmux.keys("h")
        screen = await tmux.wait_screen("Sec-WebSocket-Accept:", "matches the key")
        assert "HTTP/1.1 101 Switching Protocols" in screen

        tmux.keys("Escape")
        screen = await tmux.wait_screen("duration", "1 session (1 closed)")  # the list

        tmux.keys("q")
        screen = await tmux.wait_screen("EXIT=0")
        assert "1 session recorded to" in screen
        assert "Traceback" not in screen
    finally:
        subprocess.run(["tmux", "-L", tmux.socket_name, "kill-server"], capture_output=True)

    store = SessionStore.open(capture)
    (session,) = store.sessions()
    # 2 texts each way and both close frames (the app's default raw relay records the answer)
    assert session.url.endswith("/tmux-room") and session.stats.count == 6
    store.close()


async def test_sigterm_stops_the_app_cleanly(tmp_path, confdir):
    port = free_port()
    capture = tmp_path / "term.db"
    command = shlex.join(
        [*UNSIZED, str(WSINSPECT), "--listen-port", str(port), "--confdir", str(confdir),
         "-w", str(capture)]
    ) + "; echo EXIT=$?; sleep 60"
    tmux = Tmux(f"wsinspect-term-{os.getpid()}")
    tmux.run("new-session", "-d", "-s", "app", "-x", "120", "-y", "30", command)
    try:
        await tmux.wait_screen("No WebSocket sessions yet")
        shell = tmux.run("display-message", "-p", "-t", "app", "#{pane_pid}").strip()
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        assert len(children) == 1, children  # the wsinspect process the pane's shell started
        os.kill(int(children[0]), signal.SIGTERM)
        screen = await tmux.wait_screen("EXIT=0")
        assert "0 sessions recorded to" in screen and "Traceback" not in screen
    finally:
        subprocess.run(["tmux", "-L", tmux.socket_name, "kill-server"], capture_output=True)


async def test_open_exits_non_zero_when_the_capture_fails_in_the_app(tmp_path):
    """A HAR whose entry starts at 1e300 passed the reader and brought the app down, and
    `wsinspect open` still said 0. Whatever stops the app on a bad capture, the exit status
    says so."""
    har = tmp_path / "far.har"
    har.write_text(json.dumps({"log": {"version": "1.2", "entries": [{
        "startedDateTime": 1e300, "time": 1,
        "request": {"method": "GET", "url": "http://127.0.0.1:1/far", "httpVersion": "HTTP/1.1",
                    "headers": [{"name": "Upgrade", "value": "websocket"},
                                {"name": "Connection", "value": "Upgrade"}]},
        "response": {"status": 101, "statusText": "Switching Protocols",
                     "httpVersion": "HTTP/1.1", "headers": []},
    }]}}))
    command = shlex.join([*UNSIZED, str(WSINSPECT), "open", str(har)]) + "; echo EXIT=$?; sleep 60"
    tmux = Tmux(f"wsinspect-open-{os.getpid()}")
    tmux.run("new-session", "-d", "-s", "app", "-x", "80", "-y", "24", command)
    try:
        screen = await tmux.wait_screen("EXIT=")
        assert "EXIT=0" not in screen, screen
    finally:
        subprocess.run(["tmux", "-L", tmux.socket_name, "kill-server"], capture_output=True)
