"""The command line and the standalone addon, as real subprocesses."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.builders import capture_file, make_hop
from tests.conftest import mitmdump
from wsinspect.cli import main
from wsinspect.model import Close, Session
from wsinspect.report import close_text
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
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
    assert session["messages"] == {  # the raw relay (wsinspect's default) sees the answering close
        "from_client": 4, "from_server": 4, "bytes": 18,
        "text": 2, "binary": 2, "ping": 1, "pong": 1, "close": 2,
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
    assert text_report.endswith("\n1 session\n")


async def test_capture_survives_sigkill_mid_session(tmp_path, confdir, echo_server):
    capture = tmp_path / "killed.db"
    process, port = await start_process(
        *wsinspect("--headless", "-w", str(capture), "--listen-port", "0",
                   "--confdir", str(confdir)),
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


# What runs a proxy (mitmproxy's master, its proxy server and addons, wsinspect's engine) and
# the app's toolkit: a headless command that only reads, writes or checks needs neither.
PROXY_CORE_AND_APP = (
    "wsinspect.engine", "mitmproxy.master", "mitmproxy.proxy.server", "mitmproxy.addons",
    "textual",
)
PROBE = """\
import contextlib, json, sys
from wsinspect.cli import main
status = None
with contextlib.suppress(SystemExit):
    status = main(sys.argv[1:])
heavy = sorted(
    m for m in sys.modules
    if any(m == core or m.startswith(core + ".") for core in json.loads(sys.argv[0]))
)
print(json.dumps({"status": status, "heavy": heavy}), file=sys.__stderr__)
"""


def run_probed(
    *argv: str, prefix: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess, dict]:
    """`wsinspect ARGV` in a fresh interpreter, then which modules of PROXY_CORE_AND_APP it
    had imported (the probe's last line on stderr)."""
    code = PROBE.replace("sys.argv[0]", repr(json.dumps(PROXY_CORE_AND_APP)))
    result = subprocess.run(
        [*prefix, sys.executable, "-c", code, *argv],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    *said, probe = result.stderr.splitlines()
    result.stderr = "\n".join(said)
    return result, json.loads(probe)


@pytest.mark.parametrize("argv", [["report", "{capture}"], ["report", "{capture}", "--json"]])
def test_report_imports_neither_the_proxy_core_nor_textual(tmp_path, argv):
    capture = capture_file(tmp_path / "cap.db")
    result, probe = run_probed(*(a.format(capture=capture) for a in argv))
    assert probe == {"status": 0, "heavy": []}, result.stderr
    assert "/probe" in result.stdout


def test_export_imports_neither_the_proxy_core_nor_textual(tmp_path):
    capture = capture_file(tmp_path / "cap.db")
    out = tmp_path / "out.har"
    result, probe = run_probed("export", str(capture), "-o", str(out))
    assert probe == {"status": 0, "heavy": []}, result.stderr
    assert "/probe" in out.read_text()


@pytest.mark.parametrize(
    "argv, prefix, said",
    [
        (["gateway", "check", "--listen-port", "8080"], (), "forwarding"),
        # refused before it changes anything on this host
        (["gateway", "setup", "--interface", "lo", "--listen-port", "0"], (),
         "bad --listen-port 0"),
        # in a network namespace of its own: nothing of this host's to tear down
        (["gateway", "teardown"], ("unshare", "--net"), "nothing to remove"),
    ],
    ids=["check", "setup", "teardown"],
)  # fmt: skip
def test_gateway_imports_neither_the_proxy_core_nor_textual(argv, prefix, said):
    result, probe = run_probed(*argv, prefix=prefix)
    assert probe["heavy"] == [], result.stdout + result.stderr
    assert probe["status"] in (0, 1)
    assert said in (result.stdout + result.stderr).lower()


@pytest.mark.parametrize("argv", [["--help"], ["help"], ["help", "report"], ["help", "gateway"]])
def test_help_imports_neither_the_proxy_core_nor_textual(argv):
    result, probe = run_probed(*argv)
    assert probe["heavy"] == [], result.stdout
    assert result.stdout.startswith("usage: wsinspect")


def start_in_terminal(argv: list[str], tmpdir: Path) -> tuple[subprocess.Popen, int]:
    """Start `argv` in a new 80x24 pseudo-terminal that becomes its controlling terminal (so
    closing the other end sends it SIGHUP), with TMPDIR set; the process and that other end."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        env={**env, "TERM": "xterm-256color", "TMPDIR": str(tmpdir)},
    )  # fmt: skip
    os.close(slave)
    return process, master


async def ends_after_hangup(process: subprocess.Popen) -> None:
    """Once its terminal's other end is closed, the process ends by itself within 30 s: 0, or
    129 when its exit was stuck on the dead terminal and the watchdog ended it."""
    try:
        status = await asyncio.to_thread(process.wait, 30)
        assert status in (0, 128 + signal.SIGHUP)
    finally:
        process.kill()


def read_terminal_until(master: int, pattern: bytes, seen: bytearray, timeout: float = 60):
    """Read the terminal's output into `seen` until `pattern` matches it; the match."""
    deadline = time.monotonic() + timeout
    while not (match := re.search(pattern, seen)):
        assert time.monotonic() < deadline, bytes(seen[-2000:])
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            seen += os.read(master, 65536)
    return match


@pytest.mark.parametrize("named", [False, True], ids=["temporary", "named"])
async def test_closing_the_apps_terminal_ends_wsinspect(tmp_path, confdir, echo_server, named):
    """Plain `wsinspect`, the app in a pseudo-terminal whose other end is then closed, as when
    its terminal window is: the kernel sends SIGHUP and the process ends. A temporary capture,
    whose path can no longer be told to anyone, goes with it; a capture named with -w stays,
    with the session recorded before."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    capture = tmp_path / "named.db"
    process, master = start_in_terminal(
        wsinspect("--listen-port", "0", "--confdir", str(confdir),
                  *(["-w", str(capture)] if named else [])),
        scratch,
    )  # fmt: skip
    try:
        seen = bytearray()
        listening = await asyncio.to_thread(
            read_terminal_until, master, rb"listening at 127\.0\.0\.1:(\d+)", seen
        )
        await asyncio.to_thread(read_terminal_until, master, rb"No WebSocket sessions yet", seen)
        await chat(int(listening.group(1)), echo_server, "/before-hangup")
        await asyncio.to_thread(read_terminal_until, master, rb"1 session", seen)
        if not named:  # the temporary capture, in TMPDIR while wsinspect runs
            assert [p.name for p in scratch.iterdir()][0].startswith("wsinspect-")
    finally:
        os.close(master)  # the terminal goes away
    await ends_after_hangup(process)
    assert list(scratch.iterdir()) == []
    if named:
        store = SessionStore.open(capture)
        (session,) = store.sessions()
        assert session.url.endswith("/before-hangup")
        store.close()


# ----- issue 18: the command line a newcomer meets ---------------------------------------------

COMMAND_NAMES = ["report", "open", "export", "replay", "hello", "demo", "gateway", "help"]


def test_help_lists_every_command_with_one_line_and_the_defaults():
    result = subprocess.run(wsinspect("--help"), capture_output=True, text=True)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for name in COMMAND_NAMES:
        (line,) = [line for line in lines if line.startswith(f"  {name} ") or line == f"  {name}"]
        assert len(line.split("  ")) > 2, f"{name} has no one-line summary: {line!r}"
    assert "(default: 127.0.0.1)" in result.stdout and "(default: 8080)" in result.stdout
    assert all(len(line) <= 80 for line in lines), "fits an 80-column terminal"


def test_help_command_shows_a_commands_options():
    own = subprocess.run(wsinspect("help"), capture_output=True, text=True)
    assert own.returncode == 0
    assert own.stdout == subprocess.run(wsinspect("--help"), capture_output=True, text=True).stdout
    for name in ("report", "replay", "gateway", "hello", "gateway setup"):
        via_help = subprocess.run(wsinspect("help", *name.split()), capture_output=True, text=True)
        direct = subprocess.run(wsinspect(*name.split(), "--help"), capture_output=True, text=True)
        assert via_help.returncode == 0 and via_help.stdout == direct.stdout
        assert via_help.stdout.startswith(f"usage: wsinspect {name}")


@pytest.mark.parametrize("argv", [["bogus"], ["help", "bogus"], ["--headless", "bogus"]])
def test_unknown_command_is_one_line_with_the_commands(argv):
    result = subprocess.run(wsinspect(*argv), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "'bogus' is not a wsinspect command" in result.stderr
    assert "unrecognized" not in result.stderr
    assert all(name in result.stderr for name in COMMAND_NAMES)


def test_a_command_after_options_is_told_to_come_first():
    result = subprocess.run(
        wsinspect("-w", "cap.db", "report", "cap.db"), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == (
        "wsinspect: a command comes first, before any option: wsinspect report …\n"
    )


def big_capture(path: Path, sessions: int = 300) -> None:
    """A capture whose report is larger than a pipe's buffer."""
    store = SessionStore(path)
    for i in range(sessions):
        store.add_hop(make_hop(f"ws://127.0.0.1:1/{i}", key=f"k{i}", t=1000.0 + i, status=101))
    store.close()


@pytest.mark.parametrize(
    "argv",
    [["report", "CAP"], ["report", "CAP", "--json"], ["--help"], ["help", "replay"],
     ["hello", "--proxy", "127.0.0.1:1"]],
    ids=["report", "report-json", "help", "help-replay", "hello"],
)
def test_a_closed_pipe_ends_the_command_quietly(tmp_path, argv):
    """`wsinspect report cap.db | head -3`: the reader goes away; no traceback, no
    "Exception ignored" note, the status a filter killed by SIGPIPE has."""
    capture = tmp_path / "big.db"
    big_capture(capture)
    argv = [str(capture) if a == "CAP" else a for a in argv]
    process = subprocess.Popen(wsinspect(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # before the command writes anything
    _, err = process.communicate(timeout=60)
    assert err.decode() == ""
    if "help" in argv or "--help" in argv:
        # argparse ignores a failed write of its help (when stdout is unbuffered) and exits 0
        assert process.returncode in (0, 128 + signal.SIGPIPE)
    else:
        assert process.returncode == 128 + signal.SIGPIPE


def test_a_closed_pipe_after_some_lines_is_quiet_in_a_shell_pipeline(tmp_path):
    capture = tmp_path / "big.db"
    big_capture(capture, 2000)
    result = subprocess.run(
        ["bash", "-c", f"{wsinspect()[0]} report {capture} | head -3; exit ${{PIPESTATUS[0]}}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.stdout.count("\n") == 3
    assert result.stderr == ""
    assert result.returncode == 128 + signal.SIGPIPE


async def test_headless_ends_when_its_output_is_closed(tmp_path, confdir, echo_server):
    """`wsinspect --headless | head -2`: the first event line after the reader went away stops
    the proxy as an interrupt would, its capture closed properly."""
    capture = tmp_path / "cap.db"
    process = await asyncio.create_subprocess_exec(
        *wsinspect("--headless", "-w", str(capture), "--listen-port", "0",
                   "--confdir", str(confdir)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=ignore_sigint,
    )
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    port = int(re.search(r"listening at 127\.0\.0\.1:(\d+)", line).group(1))
    await asyncio.wait_for(process.stdout.readline(), 20)  # recording to …
    process._transport.get_pipe_transport(1).close()  # the reader goes away
    url, proxy = f"ws://127.0.0.1:{echo_server}/closed", f"http://127.0.0.1:{port}"
    async with connect(url, proxy=proxy) as ws:
        # the upgrade's event line meets the closed pipe: the proxy stops, ending the session
        await asyncio.wait_for(ws.wait_closed(), 20)
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert err.decode() == ""
    assert process.returncode == 128 + signal.SIGPIPE
    store = SessionStore.open(capture)
    (session,) = store.sessions()
    assert session.url.endswith("/closed")


def failed_start(tmp_path, confdir, *argv: str) -> subprocess.CompletedProcess:
    """Run a start that fails, with a temp folder of its own to check for leftovers."""
    temp = tmp_path / "temp"
    temp.mkdir(exist_ok=True)
    return subprocess.run(
        wsinspect("--headless", "--listen-port", "0", "--confdir", str(confdir), *argv),
        capture_output=True, text=True, timeout=30, env={**os.environ, "TMPDIR": str(temp)},
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "nosuch=1"], r"Unknown options?\(s\)?: nosuch"),
        # mitmproxy 11: "Not an integer: abc"; 12 names the option itself
        (["--set", "wsinspect_max_payload=abc"],
         r"wsinspect_max_payload: .*[Nn]ot an integer: abc"),
        (["--mode", "reverse:notaurl"],
         r"--mode reverse:notaurl: the reverse target must be a URL"),
        # an address of no interface here: bind fails locally, nothing is sent anywhere
        (["--listen-host", "192.0.2.1"], r"failed to listen on 192\.0\.2\.1:0: "),
    ],
    ids=["unknown-option", "bad-integer", "reverse-not-a-url", "foreign-host"],
)
@pytest.mark.parametrize("named", [True, False], ids=["-w", "temporary"])
def test_a_failed_start_is_one_line_and_leaves_no_capture(tmp_path, confdir, argv, message, named):
    capture = tmp_path / "cap.db"
    result = failed_start(tmp_path, confdir, *(["-w", str(capture)] if named else []), *argv)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and re.search(message, result.stderr), result.stderr
    assert result.stderr.count(argv[-1].split("=")[0]) == 1, "the option named once"
    assert "[Errno" not in result.stderr
    assert not capture.exists() and list((tmp_path / "temp").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mitmproxy-conf", "temp"]


async def test_port_in_use_leaves_no_capture_and_says_so_once(tmp_path, confdir):
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    capture = tmp_path / "cap.db"
    try:
        result = await asyncio.to_thread(
            failed_start, tmp_path, confdir, "-w", str(capture), "--listen-port", str(port)
        )
    finally:
        blocker.close()
    assert result.returncode == 2
    assert result.stderr.count("in use") == 1 and "[Errno" not in result.stderr, result.stderr
    assert f"127.0.0.1:{port}: address already in use" in result.stderr
    assert not capture.exists() and list((tmp_path / "temp").iterdir()) == []


async def test_a_reverse_listener_is_announced_once(confdir):
    """A reverse listener to https:// also listens on UDP (HTTP/3) at the same address."""
    process, port = await start_process(
        *wsinspect("--headless", "--listen-port", "0", "--confdir", str(confdir),
                   "--mode", "reverse:https://127.0.0.1:1"),
        listening=r"recording to ()",
    )
    process.terminate()
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    announced = [line for line in process.early_output.splitlines() if "listening at" in line]
    (line,) = announced
    assert re.fullmatch(
        r"wsinspect: reverse:https://127\.0\.0\.1:1 proxy listening at 127\.0\.0\.1:\d+", line
    )
    assert "0 sessions recorded" in out.decode()


# ----- wsinspect hello -----------------------------------------------------------------------

async def test_hello_sends_a_session_through_a_real_wsinspect(tmp_path, confdir):
    capture = tmp_path / "cap.db"
    process, port = await start_process(
        *wsinspect("--headless", "-w", str(capture), "--listen-port", "0",
                   "--confdir", str(confdir)),
        listening=r"listening at 127\.0\.0\.1:(\d+)",
    )
    try:
        hello = await asyncio.create_subprocess_exec(
            *wsinspect("hello", "--proxy", f"127.0.0.1:{port}"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(hello.communicate(), 30)
        await asyncio.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        proxy_out, _ = await asyncio.wait_for(process.communicate(), 20)
    lines = out.decode().splitlines()
    assert hello.returncode == 0, out.decode() + err.decode()
    assert err == b""
    echo_port = int(re.search(r"echo server listening at 127\.0\.0\.1:(\d+)", lines[0]).group(1))
    steps = [line.removeprefix("wsinspect hello: ").split(":")[0] for line in lines]
    assert steps == ["echo server listening at 127.0.0.1", "connected to the proxy at 127.0.0.1",
                     "handshake", "text message", "binary message", "ping", "close", "OK"]
    assert lines[-1].endswith(f"ws://127.0.0.1:{echo_port}/hello")
    assert f"#1 closed   101 ws://127.0.0.1:{echo_port}/hello msgs=8 1000 'bye' by client" \
        in proxy_out.decode()
    store = SessionStore.open(capture)
    (session,) = store.sessions()
    assert session.url == f"ws://127.0.0.1:{echo_port}/hello"
    assert session.stats.by_type == {"text": 2, "binary": 2, "ping": 1, "pong": 1, "close": 2}


async def test_hello_without_a_proxy_says_so_and_fails():
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()  # a port nothing listens on
    result = await asyncio.to_thread(
        subprocess.run, wsinspect("hello", "--proxy", f"127.0.0.1:{port}"),
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    assert f"FAILED: cannot reach the proxy at 127.0.0.1:{port}: Connection refused" \
        in result.stdout
    assert f"wsinspect --listen-port {port}" in result.stdout


async def test_hello_through_a_proxy_that_refuses_names_the_status(confdir):
    process, port = await start_process(
        *wsinspect("--headless", "--listen-port", "0", "--confdir", str(confdir),
                   "--set", "proxyauth=user:secret"),
        listening=r"listening at 127\.0\.0\.1:(\d+)",
    )
    try:
        result = await asyncio.to_thread(
            subprocess.run, wsinspect("hello", "--proxy", f"127.0.0.1:{port}"),
            capture_output=True, text=True, timeout=30,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 20)
    assert result.returncode == 1
    assert "FAILED: the upgrade to ws://127.0.0.1:" in result.stdout
    assert "refused: HTTP 407 (the proxy wants credentials" in result.stdout


async def test_hello_against_something_that_is_not_a_proxy_fails_in_one_line():
    async def not_a_proxy(reader, writer):
        await reader.read(100)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\x1b]0;pwned\x07\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_a_proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await asyncio.to_thread(
            subprocess.run, wsinspect("hello", "--proxy", f"127.0.0.1:{port}"),
            capture_output=True, text=True, timeout=30,
        )
    finally:
        server.close()
    assert result.returncode == 1 and result.stderr == ""
    assert "FAILED: the answer is not WebSocket (Bad HTTP message): is this a proxy?" \
        in result.stdout


def test_hello_refuses_a_proxy_that_is_not_host_port():
    result = subprocess.run(
        wsinspect("hello", "--proxy", "nonsense"), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "'nonsense' is not HOST:PORT" in result.stderr


async def test_report_shows_ping_round_trips_and_how_each_side_ended(tmp_path, start_proxy,
                                                                    echo_server, capsys):
    """Under the raw relay each pong is paired with its ping: `report` gives the round trips
    per session, and its JSON also how each side's connection ended."""
    capture = tmp_path / "pings.db"
    proxy = await start_proxy(settings=["wsinspect_relay=raw"], capture=capture)
    via = f"http://127.0.0.1:{proxy.port}"
    async with connect(f"ws://127.0.0.1:{echo_server}/", proxy=via) as ws:
        for n in range(3):
            await (await ws.ping(f"p{n}".encode()))
    await proxy.engine.stop()
    proxy.store.close()
    (session,) = SessionStore.open(capture).sessions()
    rtt = session.ping_rtt
    assert rtt.count == 3 and 0 < rtt.min <= rtt.mean <= rtt.max < 5

    assert main(["report", str(capture)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"\n  pings: 3 pings answered, round trip [\d.]+/[\d.]+/[\d.]+ ms", text)
    assert main(["report", str(capture), "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)["sessions"][0]
    assert reported["ping_rtt"] == {"count": 3, "min": rtt.min, "mean": rtt.mean, "max": rtt.max}
    assert reported["close"]["client_end"] == reported["close"]["server_end"] == "fin"
    assert reported["hops"][0]["violations"] == []


def test_report_names_a_close_frame_without_a_status_code():
    hop = make_hop("ws://h/", headers=[], t=1.7e9, close=Close(code=None, by="client"))
    assert close_text(Session(1, [hop])) == "close with no status code by client"
