"""Nothing from a capture file or the network reaches the terminal raw (issue 16), whichever
command prints it: `report`, `open`, `--headless`, error lines on stderr. Every command runs as
a real subprocess on real files; the output must hold no control character but line breaks."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sqlite3
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from wsinspect.model import Close, Message, MessageType, Outcome
from wsinspect.store import SessionStore
from wsinspect.text import TerminalStream, printable

from .builders import make_hop
from .test_cli import start_process, wsinspect

# An OSC that retitles the terminal, a clear-screen CSI, a colour, a C1 CSI (U+009B), a
# carriage return and a line break that would forge a report line of its own.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31m\x9b1m\r\n#99 forged"
HOSTILE_SHOWN = printable(HOSTILE)


def assert_printable(output: str, lines_intact: bool = True) -> None:
    """No control character but the line breaks between lines, and (`lines_intact`) no value
    starting a line of its own."""
    raw = sorted({f"U+{ord(c):04X}" for c in output if c != "\n" and not c.isprintable()})
    assert not raw, f"raw control characters in the output: {raw}\n{output!r}"
    if lines_intact:
        assert not re.search(r"^#99 forged", output, re.M), "a value forged a line"
    assert "Traceback" not in output


def hostile_capture(path: Path, *, typed: bool = True) -> None:
    """A capture whose every free-text field carries escapes. With `typed=False` the status,
    the close code, the close's `by` and `offender` and the listener modes are hostile strings
    too, as a crafted file could hold them (loading refuses such a file in one line)."""
    store = SessionStore(path)
    hop = make_hop(
        f"ws://host/{HOSTILE}",
        mode="reverse:http://x@1" if typed else f"reverse:http://x{HOSTILE}@1",
        request_line=f"GET /{HOSTILE} HTTP/1.1",
        headers=[("Host", HOSTILE), ("Upgrade", "websocket"), ("Connection", "Upgrade")],
        t=time.time(),
        client_addr=(HOSTILE, 1),
        server_addr=(HOSTILE, 2),
        response_status=101 if typed else HOSTILE,
        response_reason=HOSTILE,
        response_headers=[("Upgrade", HOSTILE), ("X-Evil", HOSTILE)],
    )
    store.add_hop(hop)
    payload = HOSTILE.encode()
    store.add_message(hop, Message(from_client=True, type=MessageType.TEXT, size=len(payload),
                                   payload=payload, timestamp=time.time()))
    hop.outcome = Outcome.CLOSED
    hop.timestamp_end = time.time()
    hop.error = HOSTILE
    hop.close = Close(code=4000 if typed else HOSTILE, reason=HOSTILE,
                      by="server" if typed else HOSTILE, offender="client" if typed else HOSTILE)
    store.hop_changed(hop)
    # A transparent hop: its server address is printed beside the request line.
    second = make_hop(
        f"ws://other/{HOSTILE}",
        mode="transparent" if typed else f"transparent{HOSTILE}",
        request_line="GET / HTTP/1.1",
        headers=[("Host", "other"), ("Upgrade", "websocket")],
        t=time.time() + 100,
        server_addr=(HOSTILE, 443),
        response_status=400 if typed else HOSTILE,
        response_reason=HOSTILE,
        answered_by="proxy",
        error=f"refused: {HOSTILE}",
        outcome=Outcome.REJECTED,
    )
    store.add_hop(second)
    store.close()


def run_wsinspect(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(wsinspect(*args), capture_output=True, text=True, timeout=60, **kwargs)


@pytest.mark.parametrize("typed", [True, False], ids=["typed-fields", "strings-where-ints-belong"])
def test_report_of_a_hostile_capture_prints_no_control_characters(tmp_path, typed):
    capture = tmp_path / "hostile.db"
    hostile_capture(capture, typed=typed)
    result = run_wsinspect("report", str(capture))
    assert result.returncode in (0, 2), result.stderr  # 2: a loader that refuses bad types
    assert_printable(result.stdout + result.stderr)
    if result.returncode == 0 and typed:
        text = result.stdout
        assert f"-> 101 {HOSTILE_SHOWN}" in text, "the response reason"
        assert f" to {HOSTILE_SHOWN}:443 " in text, "the transparent hop's server address"
        quoted = f"itself, which refused the request: refused: {HOSTILE_SHOWN}"
        assert quoted in text, "a finding quoting an error"
    elif result.returncode == 2:
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("wsinspect: ")


def test_report_json_of_a_hostile_capture_escapes_in_json(tmp_path):
    capture = tmp_path / "hostile.db"
    hostile_capture(capture)
    result = run_wsinspect("report", str(capture), "--json")
    assert result.returncode == 0, result.stderr
    assert_printable(result.stdout)
    (first, second) = json.loads(result.stdout)["sessions"]  # the values themselves are intact
    assert first["hops"][0]["response_reason"] == HOSTILE
    assert second["hops"][0]["server_addr"] == [HOSTILE, 443]


def test_har_and_flow_files_with_hostile_fields_report_printably(tmp_path):
    """The same values reached through the other readers: a HAR file and a mitmproxy flow
    file. (A crafted proxy mode string is refused when a file is loaded: test_hostile_files.)"""
    capture = tmp_path / "hostile.db"
    hostile_capture(capture)
    for name in ("hostile.har", "hostile.mitm"):
        exported = run_wsinspect("export", str(capture), "-o", str(tmp_path / name), "--no-redact")
        assert_printable(exported.stdout + exported.stderr, lines_intact=False)
        if exported.returncode != 0:  # a writer that refuses the values says so in one line
            assert exported.returncode == 2 and exported.stderr.count("\n") == 1
            continue
        result = run_wsinspect("report", str(tmp_path / name))
        assert result.returncode in (0, 2)
        assert_printable(result.stdout + result.stderr)
        if result.returncode == 0:  # the hostile reason, read back from the file
            assert f"-> 101 {HOSTILE_SHOWN}" in result.stdout
    har = json.loads((tmp_path / "hostile.har").read_text())
    har["log"]["entries"][0]["request"]["url"] = f"http://h/{HOSTILE}"
    har["log"]["entries"][0]["response"]["statusText"] = HOSTILE
    (tmp_path / "crafted.har").write_text(json.dumps(har))
    result = run_wsinspect("report", str(tmp_path / "crafted.har"))
    assert result.returncode in (0, 2)
    assert_printable(result.stdout + result.stderr)


def malformed_schema(path: Path) -> None:
    """An SQLite file whose schema holds an entry SQLite cannot parse, named with escapes:
    SQLite's own error text quotes the name ("malformed database schema (NAME)")."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    db.execute("PRAGMA writable_schema = ON")
    db.execute(
        "INSERT INTO sqlite_master VALUES ('table', ?, ?, 0, 'CREATE TABLE broken(')",
        (HOSTILE, HOSTILE),
    )
    db.commit()
    db.close()


@pytest.mark.parametrize("command", ["report", "open", "export", "replay"])
def test_sqlite_error_text_is_escaped_on_stderr(tmp_path, command):
    capture = tmp_path / "malformed.db"
    malformed_schema(capture)
    extra = {"export": ["-o", str(tmp_path / "out.har")], "replay": ["1"]}.get(command, [])
    result = run_wsinspect(command, str(capture), *extra, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stdout + result.stderr
    # export's and replay's own error lines may still break lines (not control sequences).
    assert_printable(result.stdout + result.stderr, lines_intact=command in ("report", "open"))
    assert "pwned" in result.stderr and result.stderr.startswith("wsinspect")


def test_file_names_with_escapes_are_escaped_in_errors(tmp_path):
    missing = tmp_path / f"{HOSTILE.replace('/', '')}.db"
    result = run_wsinspect("report", str(missing))
    assert result.returncode == 2
    assert_printable(result.stderr)
    assert "pwned" in result.stderr


def test_the_stream_keeps_line_breaks_and_the_raw_byte_stream():
    raw = io.BytesIO()
    target = io.TextIOWrapper(raw, encoding="utf-8")
    stream = TerminalStream(target)
    assert stream.write("a\x1b[2Jb\nc\td\u202ee\n") == len("a\x1b[2Jb\nc\td\u202ee\n")
    stream.flush()
    assert raw.getvalue().decode() == "a\\x1b[2Jb\nc\\td\\u202ee\n"
    assert stream.buffer is raw  # binary exports to stdout (-o -) are data, not text
    assert not stream.isatty()  # so rich writes no colour sequences to it


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_any_text_comes_out_printable(text):
    """printable(): one line, nothing a terminal interprets; the stream: the same, with the
    line breaks kept; neither loses a character's identity (unicode_escape round-trips)."""
    shown = printable(text)
    assert shown.isprintable()
    raw = io.StringIO()
    TerminalStream(raw).write(text)
    lines = raw.getvalue().split("\n")
    assert len(lines) == text.count("\n") + 1 and all(line.isprintable() for line in lines)
    if "\\" not in text:  # only then is the escaping unambiguous
        assert shown.encode("ascii", "backslashreplace").decode("unicode_escape") == text


async def hostile_server(reason: bytes):
    """A raw server answering any upgrade with 101, a hostile reason phrase, then a close
    frame whose reason carries escapes."""

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 " + reason + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: x\r\n\r\n"
        )
        close_reason = HOSTILE.encode()[:100]
        header = bytes([0x88, 2 + len(close_reason)])
        writer.write(header + (4001).to_bytes(2, "big") + close_reason)
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_headless_lines_and_proxy_errors_are_escaped(tmp_path, confdir, tls_echo_server):
    """A hostile peer's values in headless event lines, and the proxy's own error for a
    client whose TLS handshake failed, printed as an escaped event line."""
    process, port = await start_process(
        *wsinspect("--headless", "-w", str(tmp_path / "cap.db"), "--listen-port", "0",
                   "--confdir", str(confdir), "--set", "ssl_insecure=true"),
        listening=r"listening at 127\.0\.0\.1:(\d+)",
    )
    server = await hostile_server(b"OK \x1b]0;pwned\x07")
    try:
        backend = server.sockets[0].getsockname()[1]
        # A raw client: its request target carries escapes (percent-free, as sent).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET http://127.0.0.1:{backend}/a\x1b[2Jb HTTP/1.1\r\nHost: 127.0.0.1:{backend}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
            "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        # A client that does not trust the proxy's CA: mitmproxy logs its failed handshake.
        with pytest.raises(ssl.SSLError):
            async with connect(f"wss://127.0.0.1:{tls_echo_server}/",
                               proxy=f"http://127.0.0.1:{port}", ssl=ssl.create_default_context()):
                pass
        await asyncio.sleep(1)
    finally:
        server.close()
        process.terminate()
        out, _ = await asyncio.wait_for(process.communicate(), 20)
    output = process.early_output + out.decode("utf-8", "replace")
    assert process.returncode == 0, output
    assert_printable(output)
    assert re.search(r"proxy warning: Client TLS handshake failed\. .*127\.0\.0\.1", output), output
    assert re.search(r"#1 upgrade  GET http://127\.0\.0\.1:\d+/a\\x1b\[2Jb HTTP/1\.1", output)
    assert "4001 '\\x1b]0;pwned\\x07" in output, "the close reason a server sent"


def test_headless_prints_a_transparent_mode_failure(request, tmp_path):
    """A connection that reached the transparent listener without being redirected (no
    REDIRECT rule in a fresh namespace): mitmproxy cannot learn its original destination and
    logs an error, which headless mode prints as an event line."""
    from tests.netns_lab import GATEWAY_CLIENT_ADDR, make_lab

    lab = make_lab(request)
    proxy = lab.start(
        lab.gateway,
        *lab.wsinspect("--mode", "transparent", "--headless", "-w", str(tmp_path / "cap.db"),
                       "--listen-host", "0.0.0.0", "--listen-port", "18765",
                       "--confdir", str(tmp_path / "conf")),
    )
    proxy.wait_line("recording to")
    connect_directly = (
        "import socket, sys\n"
        "s = socket.create_connection((sys.argv[1], 18765), timeout=10)\n"
        "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\n\\r\\n')\n"
        "try:\n    s.recv(100)\nexcept OSError:\n    pass\n"
    )
    lab.python(lab.client, "-c", connect_directly, GATEWAY_CLIENT_ADDR)
    proxy.wait_line(r"^\d\d:\d\d:\d\d proxy error: Transparent mode failure: ")
    assert proxy.stop() == 0
    assert_printable(proxy.output())


async def test_replay_prints_the_recorded_url_escaped(tmp_path, echo_server):
    """`wsinspect replay` announces the recorded URL on stdout: through the command line's
    escaping streams, whichever module prints it."""
    capture = tmp_path / "recorded.db"
    store = SessionStore(capture)
    hop = make_hop(
        f"ws://127.0.0.1:{echo_server}/{HOSTILE}", request_line=f"GET /{HOSTILE} HTTP/1.1",
        t=time.time(), response_status=101, response_reason="Switching Protocols",
    )
    store.add_hop(hop)
    payload = HOSTILE.encode()
    for from_client in (True, False):
        store.add_message(hop, Message(from_client=from_client, type=MessageType.TEXT,
                                       size=len(payload), payload=payload, timestamp=time.time()))
    hop.outcome, hop.close = Outcome.CLOSED, Close(code=1000, by="client")
    store.hop_changed(hop)
    store.close()
    result = await asyncio.to_thread(
        run_wsinspect, "replay", str(capture), "1", "--direct", "-w", str(tmp_path / "replay.db")
    )
    assert result.returncode in (0, 1, 2)
    assert_printable(result.stdout + result.stderr, lines_intact=False)
    shown = f"replaying session #1 to ws://127.0.0.1:{echo_server}/\\x1b]0;pwned\\x07"
    assert shown in result.stdout
