"""Opening and sharing captures: traffic recorded through a real proxy, exported as HAR, mitmproxy
flows and JSON lines, and read back; flow and HAR files written by a real mitmdump; damaged and
foreign files through the command line."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from wsinspect import formats
from wsinspect.cli import main
from wsinspect.formats.common import add_imported_hop
from wsinspect.formats.redact import MASK, redact_subprotocols, redact_text, redact_url
from wsinspect.model import Close, Hop, Message, MessageType, Outcome
from wsinspect.store import CaptureError, SessionStore

from .builders import make_hop, upgrade_request
from .conftest import mitmdump, wait_for
from .test_cli import start_process

BIN = Path(sys.executable).parent
EVERY_BYTE = bytes(range(256))
SECRET = "s3cr3t-value"


async def backend_handler(ws):
    if ws.request.path == "/bye":
        await ws.recv()
        await ws.close(4001, "go away")
        return
    async for message in ws:
        await ws.send(message)


def refuse_deny(connection, request):
    if request.path.startswith("/deny"):
        return Response(403, "Forbidden", Headers([("Content-Length", "0")]), b"")
    return None


async def client_traffic(proxy_url: str, backend: int, reverse_port: int | None = None) -> None:
    """Text, binary with every byte value, ping/pong and a client close; then (through a
    second listener when given) a server close with a reason; then a refused upgrade."""
    async with connect(
        f"ws://127.0.0.1:{backend}/chat?token={SECRET}&room=1",
        proxy=proxy_url,
        additional_headers={"Authorization": f"Bearer {SECRET}", "Cookie": f"sid={SECRET}"},
    ) as ws:
        await ws.send("hello ✓")
        assert await ws.recv() == "hello ✓"
        await ws.send(EVERY_BYTE)
        assert await ws.recv() == EVERY_BYTE
        await (await ws.ping(b"are-you-there"))
    if reverse_port is not None:
        async with connect(f"ws://127.0.0.1:{reverse_port}/bye", proxy=proxy_url) as ws:
            await ws.send("bye?")
            await ws.wait_closed()
    with pytest.raises(InvalidStatus):
        async with connect(f"ws://127.0.0.1:{backend}/deny", proxy=proxy_url):
            pass


@pytest.fixture
async def backend():
    async with serve(backend_handler, "127.0.0.1", 0, process_request=refuse_deny) as server:
        yield server.sockets[0].getsockname()[1]


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    """Forward a TCP connection to `port` on loopback, both ways, until either side closes."""
    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        sink.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@pytest.fixture
async def recorded(start_proxy, backend) -> SessionStore:
    """A capture of three sessions, one of them seen by two listeners of the proxy: its regular
    one, then (through a TCP relay, since mitmproxy refuses to connect to itself) its reverse
    one in front of the backend."""
    with socket.socket() as probe:  # a free port for the second listener
        probe.bind(("127.0.0.1", 0))
        reverse_port = probe.getsockname()[1]
    proxy = await start_proxy(modes=["regular", f"reverse:http://127.0.0.1:{backend}@{reverse_port}"])
    tcp_relay = await asyncio.start_server(
        lambda r, w: relay(r, w, reverse_port), "127.0.0.1", 0
    )
    async with tcp_relay:
        await client_traffic(proxy.url, backend, tcp_relay.sockets[0].getsockname()[1])
        await proxy.wait_session(
            lambda s: len(s.hops) == 2 and all(h.outcome is Outcome.CLOSED for h in s.hops)
        )
        await proxy.wait_session(lambda s: s.outcome is Outcome.REJECTED)
        await proxy.wait_session(lambda s: s.close is not None and s.close.code == 1000)
    proxy.store.flush()
    return proxy.store


def snapshot(store: SessionStore) -> list:
    """Everything a store says about its sessions, without the ids it assigns."""
    sessions = []
    for session in store.sessions():
        hops = []
        for hop in session.hops:
            data = hop.to_json()
            del data["id"], data["session_id"]
            messages = [
                (m.index, m.from_client, m.type, m.payload, m.size, m.timestamp, m.injected, m.sha256)
                for m in store.iter_messages(hop.id)
            ]
            hops.append((data, messages))
        sessions.append(hops)
    return sessions


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ----- record -> export -> import --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["har", "flows"])
async def test_export_then_open_gives_the_same_sessions_and_messages(
    recorded, tmp_path, fmt, relay_path
):
    out = tmp_path / f"export.{fmt}"
    result = formats.export(recorded, out, fmt, redact=False)
    assert (result.sessions, result.hops) == (3, 4)

    imported = formats.open_capture(out)

    assert snapshot(imported) == snapshot(recorded)
    first, second, third = imported.sessions()
    assert [m.type for m in imported.messages(first.id, 0, 100)] == [
        MessageType.TEXT, MessageType.TEXT, MessageType.BINARY, MessageType.BINARY,
        MessageType.PING, MessageType.PONG, MessageType.CLOSE,
    ] + ([MessageType.CLOSE] if relay_path == "raw" else [])  # the raw relay sees the answer
    assert imported.messages(first.id, 0, 100)[2].payload == EVERY_BYTE
    assert [h.mode.split(":")[0].split("@")[0] for h in second.hops] == ["regular", "reverse"]
    assert (second.close.code, second.close.reason, second.close.by) == (4001, "go away", "server")
    assert (third.outcome, third.status) == (Outcome.REJECTED, 403)


async def test_jsonl_has_one_line_per_message_with_exact_payloads(recorded, tmp_path, capsys):
    code, out, err = run_cli(capsys, "export", str(recorded.path), "-o", "-", "--format", "jsonl")
    assert code == 0 and "exported 3 session(s), 4 hop(s)" in err
    lines = [json.loads(line) for line in out.splitlines()]
    expected = [
        (session.id, position, m)
        for session in recorded.sessions()
        for position, hop in enumerate(session.hops, start=1)
        for m in recorded.iter_messages(hop.id)
    ]
    assert len(lines) == len(expected) > 0
    for line, (session_id, position, message) in zip(lines, expected):
        payload = (
            line["text"].encode() if line["text"] is not None else base64.b64decode(line["base64"])
        )
        assert payload == message.payload
        assert (line["session"], line["hop"], line["index"]) == (session_id, position, message.index)
        assert (line["direction"], line["type"], line["size"]) == (
            message.direction, message.type.value, message.size
        )
        assert line["timestamp"] == message.timestamp and line["format"] == "wsinspect-jsonl/1"
    closes = [line for line in lines if line["type"] == "close"]
    assert (4001, "go away") in {(c["close_code"], c["close_reason"]) for c in closes}
    assert all(c["opcode"] == 8 for c in closes)
    assert f"token={MASK}" in lines[0]["url"]


def test_capped_payloads_keep_their_size_and_digest(tmp_path):
    store = SessionStore(max_payload=100)
    hop = secret_hop()
    add_imported_hop(store, hop, [Message(True, MessageType.BINARY, 256, EVERY_BYTE, 1000.5)])
    store.flush()
    for fmt in ("har", "flows"):
        formats.export(store, tmp_path / f"capped.{fmt}", fmt)
        message = formats.open_capture(tmp_path / f"capped.{fmt}").messages(1, 0, 10)[0]
        assert (message.payload, message.size) == (EVERY_BYTE[:100], 256)
        assert message.sha256 == store.messages(1, 0, 10)[0].sha256 is not None


# ----- files from mitmproxy and Chrome ---------------------------------------------------------


async def test_flow_and_har_files_written_by_a_real_mitmdump(tmp_path, backend):
    flows_file, har_file = tmp_path / "dump.mitm", tmp_path / "dump.har"
    confdir = tmp_path / "conf"
    confdir.mkdir()
    process, port = await start_process(
        *mitmdump(confdir), "--listen-host", "127.0.0.1", "-p", "0",
        "-w", str(flows_file), "--set", f"hardump={har_file}",
        listening=r"listening at .*:(\d+)",
    )
    try:
        await client_traffic(f"http://127.0.0.1:{port}", backend)
    finally:
        process.send_signal(signal.SIGTERM)
        await process.communicate()

    for path in (flows_file, har_file):
        store = formats.open_capture(path)
        chat, refused = store.sessions()
        assert chat.url == f"ws://127.0.0.1:{backend}/chat?token={SECRET}&room=1"
        assert chat.status == 101 and len(chat.hops) == 1
        assert [(m.direction, m.type, m.payload) for m in store.messages(chat.id, 0, 10)] == [
            ("client", MessageType.TEXT, "hello ✓".encode()),
            ("server", MessageType.TEXT, "hello ✓".encode()),
            ("client", MessageType.BINARY, EVERY_BYTE),
            ("server", MessageType.BINARY, EVERY_BYTE),
        ]
        assert (refused.outcome, refused.status) == (Outcome.REJECTED, 403)
        assert refused.url == f"ws://127.0.0.1:{backend}/deny"
    flows_store = formats.open_capture(flows_file)
    chat = flows_store.sessions()[0]
    assert chat.first_hop.mode == "regular"
    assert (chat.outcome, chat.close.code, chat.close.by) == (Outcome.CLOSED, 1000, "client")


async def test_exported_flows_open_in_mitmproxy(recorded, tmp_path):
    out = tmp_path / "export.mitm"
    formats.export(recorded, out, "flows")
    confdir = tmp_path / "conf"
    confdir.mkdir()
    result = subprocess.run(
        [*mitmdump(confdir), "-n", "-r", str(out)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "101 Switching Protocols" in result.stdout and "403 Forbidden" in result.stdout
    assert "WebSocket binary message" in result.stdout
    assert "closed by client: 1000" in result.stdout
    assert re.search(r"4001.*go away", result.stdout)


async def test_exported_flows_open_in_the_mitmproxy_console(recorded, tmp_path):
    """`mitmproxy -r` in a real terminal (tmux, on a server of its own) lists every hop."""
    out = tmp_path / "export.mitm"
    formats.export(recorded, out, "flows")
    confdir = tmp_path / "conf"
    confdir.mkdir()
    tmux = ["tmux", "-L", f"wsinspect-formats-{os.getpid()}"]
    command = f"{BIN / 'mitmproxy'} -r {shlex.quote(str(out))} --set confdir={shlex.quote(str(confdir))}"
    subprocess.run([*tmux, "new-session", "-d", "-x", "160", "-y", "40", command], check=True)
    try:

        def screen() -> str | None:
            text = subprocess.run(
                [*tmux, "capture-pane", "-p"], capture_output=True, text=True
            ).stdout
            return text if text.count(" WS ") == 3 and "/deny" in text else None

        listing = await wait_for(screen, 30, "mitmproxy listing the exported flows")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert f"/chat?token={MASK}&room=1" in listing and "/bye" in listing
    assert re.search(r"/deny\s.*403", listing)


def chrome_har() -> dict:
    """A HAR as Chrome DevTools saves it ("Save all as HAR with content"), trimmed."""
    page = {
        "_initiator": {"type": "other"},
        "_priority": "VeryHigh",
        "_resourceType": "document",
        "cache": {},
        "connection": "443",
        "pageref": "page_1",
        "request": {
            "method": "GET", "url": "https://chat.example/", "httpVersion": "http/2.0",
            "headers": [{"name": ":method", "value": "GET"}], "queryString": [], "cookies": [],
            "headersSize": -1, "bodySize": 0,
        },
        "response": {
            "status": 200, "statusText": "", "httpVersion": "http/2.0", "headers": [],
            "cookies": [], "content": {"size": 5, "mimeType": "text/html", "text": "<p>hi"},
            "redirectURL": "", "headersSize": -1, "bodySize": -1, "_transferSize": 120,
            "_error": None,
        },
        "serverIPAddress": "203.0.113.7",
        "startedDateTime": "2026-11-25T04:00:00.000Z",
        "time": 31.2,
        "timings": {"blocked": 1.1, "dns": -1, "ssl": -1, "connect": -1, "send": 0.2,
                    "wait": 29.0, "receive": 0.9, "_blocked_queueing": 0.7},
    }
    websocket = {
        "_initiator": {"type": "script"},
        "_priority": "Low",
        "_resourceType": "websocket",
        "cache": {},
        "connection": "443",
        "pageref": "page_1",
        "request": {
            "method": "GET", "url": "wss://chat.example/socket?room=2", "httpVersion": "HTTP/1.1",
            "headers": [
                {"name": "Host", "value": "chat.example"},
                {"name": "Connection", "value": "Upgrade"},
                {"name": "Upgrade", "value": "websocket"},
                {"name": "Sec-WebSocket-Key", "value": "dGhlIHNhbXBsZSBub25jZQ=="},
                {"name": "Sec-WebSocket-Version", "value": "13"},
            ],
            "queryString": [{"name": "room", "value": "2"}], "cookies": [],
            "headersSize": 402, "bodySize": 0,
        },
        "response": {
            "status": 101, "statusText": "Switching Protocols", "httpVersion": "HTTP/1.1",
            "headers": [
                {"name": "Upgrade", "value": "websocket"},
                {"name": "Connection", "value": "Upgrade"},
                {"name": "Sec-WebSocket-Accept", "value": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="},
            ],
            "cookies": [], "content": {"size": 0, "mimeType": "x-unknown"}, "redirectURL": "",
            "headersSize": 129, "bodySize": 0, "_transferSize": 129, "_error": None,
        },
        "serverIPAddress": "203.0.113.7",
        "startedDateTime": "2026-11-25T04:00:01.250Z",
        "time": 12.5,
        "timings": {"blocked": 0.5, "dns": -1, "ssl": -1, "connect": -1, "send": 0,
                    "wait": 12.0, "receive": 0},
        "_webSocketMessages": [
            {"type": "send", "time": 1795579201.3, "opcode": 1, "data": '{"join":2}'},
            {"type": "receive", "time": 1795579201.35, "opcode": 1, "data": '{"ok":true}'},
            {"type": "receive", "time": 1795579201.4, "opcode": 2,
             "data": base64.b64encode(EVERY_BYTE).decode()},
        ],
    }
    return {"log": {
        "version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"},
        "pages": [{"startedDateTime": "2026-11-25T04:00:00.000Z", "id": "page_1",
                   "title": "https://chat.example/", "pageTimings": {"onContentLoad": 80, "onLoad": 95}}],
        "entries": [page, websocket],
    }}


def test_a_chrome_har_opens_with_its_websocket_sessions(tmp_path):
    path = tmp_path / "chrome.har"
    path.write_text(json.dumps(chrome_har(), indent=2), encoding="utf-8")
    store = formats.open_capture(path)
    (session,) = store.sessions()
    hop = session.first_hop
    assert session.url == "wss://chat.example/socket?room=2"
    assert (session.status, hop.mode, hop.request_line) == (101, "har", "GET /socket?room=2 HTTP/1.1")
    assert hop.websocket_key == "dGhlIHNhbXBsZSBub25jZQ=="
    assert hop.server_addr == ("203.0.113.7", 443)
    assert hop.timestamp_start == 1795579201.25
    assert [(m.direction, m.type, m.payload, m.timestamp) for m in store.messages(1, 0, 10)] == [
        ("client", MessageType.TEXT, b'{"join":2}', 1795579201.3),
        ("server", MessageType.TEXT, b'{"ok":true}', 1795579201.35),
        ("server", MessageType.BINARY, EVERY_BYTE, 1795579201.4),
    ]
    assert session.outcome is Outcome.OPEN  # Chrome records no close frames


async def test_a_har_without_wsinspects_record_reads_from_its_standard_fields(recorded, tmp_path):
    """What another tool writing the same fields (and control frames) would give."""
    formats.export(recorded, tmp_path / "full.har", "har", redact=False)
    document = json.loads((tmp_path / "full.har").read_text(encoding="utf-8"))
    for entry in document["log"]["entries"]:
        del entry["_wsinspect"]
    (tmp_path / "plain.har").write_text(json.dumps(document), encoding="utf-8")

    store = formats.open_capture(tmp_path / "plain.har")

    # All of a HAR's hops have mode "har", and one listener sees a handshake once: each hop
    # is a session of its own.
    original_hops = [hop for session in recorded.sessions() for hop in session.hops]
    assert [len(s.hops) for s in store.sessions()] == [1] * len(original_hops) == [1] * 4
    for imported, original in zip(store.sessions(), original_hops):
        hop = imported.first_hop
        assert (hop.mode, hop.url, hop.response_status) == ("har", original.url, original.response_status)
        assert hop.request_headers == original.request_headers
        assert [(m.direction, m.type, m.payload) for m in store.iter_messages(hop.id)] == [
            (m.direction, m.type, m.payload) for m in recorded.iter_messages(original.id)
        ]
    chat, bye_front, bye_back, refused = store.sessions()
    assert (chat.outcome, chat.close.code, chat.close.by) == (Outcome.CLOSED, 1000, "client")
    assert (bye_back.close.code, bye_back.close.reason, bye_back.close.by) == (4001, "go away", "server")
    assert (refused.outcome, refused.status) == (Outcome.REJECTED, 403)


def check_chrome_can_import(har: dict) -> None:
    """The fields and types Chrome DevTools' HAR importer (front_end/models/har/HARFormat.ts)
    requires: it throws on a missing object, a non-date or a NaN number."""
    log = har["log"]
    assert isinstance(log["version"], str) and isinstance(log["creator"]["name"], str)
    assert isinstance(log["entries"], list)
    for entry in log["entries"]:
        assert entry["startedDateTime"].endswith("+00:00")
        assert isinstance(entry["time"], (int, float))
        for part in ("request", "response"):
            assert isinstance(entry[part]["headersSize"], (int, float))
            assert isinstance(entry[part]["bodySize"], (int, float))
            assert isinstance(entry[part]["httpVersion"], str)
            assert all(set(h) == {"name", "value"} for h in entry[part]["headers"])
        assert isinstance(entry["request"]["method"], str) and isinstance(entry["request"]["url"], str)
        assert isinstance(entry["response"]["status"], int)
        assert isinstance(entry["response"]["content"]["size"], (int, float))
        assert isinstance(entry["response"]["content"]["mimeType"], str)
        assert isinstance(entry["response"]["redirectURL"], str)
        assert all(isinstance(entry["timings"][k], (int, float)) for k in ("send", "wait", "receive"))
        assert entry["_resourceType"] == "websocket"


async def test_exported_har_has_the_websocket_fields_chrome_uses(
    recorded, tmp_path, capsys, relay_path
):
    out = tmp_path / "export.har"
    code, _, _ = run_cli(capsys, "export", str(recorded.path), "-o", str(out))
    assert code == 0
    har = json.loads(out.read_text(encoding="utf-8"))
    check_chrome_can_import(har)
    messages = har["log"]["entries"][0]["_webSocketMessages"]
    # Chrome's fields, and wsinspect's own ones (named with "_", which other tools ignore)
    # only where they have something to say: a pong's round-trip time under the raw relay
    chrome = {"type", "time", "opcode", "data"}
    assert all(set(m) == chrome | ({"_rtt"} if "_rtt" in m else set()) for m in messages)
    assert [(m["type"], m["opcode"]) for m in messages] == [
        ("send", 1), ("receive", 1), ("send", 2), ("receive", 2),
        ("send", 9), ("receive", 10), ("send", 8),
    ] + ([("receive", 8)] if relay_path == "raw" else [])
    assert [m["opcode"] for m in messages if "_rtt" in m] == ([10] if relay_path == "raw" else [])
    assert messages[0]["data"] == "hello ✓"
    assert base64.b64decode(messages[2]["data"]) == EVERY_BYTE
    assert all(isinstance(m["time"], float) and m["time"] > 1.7e9 for m in messages)
    refused = har["log"]["entries"][-1]
    assert (refused["response"]["status"], refused["_webSocketMessages"]) == (403, [])


# ----- damaged and foreign files ---------------------------------------------------------------


def damaged_files(tmp_path: Path, source: Path) -> dict[str, Path]:
    """Truncated, corrupt and foreign files, made from real exports of `source`."""
    made = {}

    def write(name: str, data: bytes) -> None:
        made[name] = tmp_path / name
        made[name].write_bytes(data)

    formats.export(formats.open_capture(source), tmp_path / "good.mitm", "flows")
    formats.export(formats.open_capture(source), tmp_path / "good.har", "har")
    flows = (tmp_path / "good.mitm").read_bytes()
    har = (tmp_path / "good.har").read_bytes()
    write("truncated.mitm", flows[: len(flows) // 2])
    write("corrupt.mitm", flows[:40] + b"\x00garbage" * 50)
    write("truncated.har", har[: len(har) // 2])
    document = json.loads(har)
    document["log"]["entries"][0]["_webSocketMessages"][2]["data"] = "not base64!"
    write("bad-message.har", json.dumps(document).encode())
    document = json.loads(har)
    del document["log"]["entries"][1]["request"]
    write("no-request.har", json.dumps(document).encode())
    capture = source.read_bytes()
    write("truncated.db", capture[:100])
    write("corrupt.db", capture[:16] + os.urandom(4096))
    write("picture.png", b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    write("notes.txt", b"just some text\n")
    write("array.json", b"[1, 2, 3]")
    write("object.json", b'{"hello": "world"}')
    write("empty.har", b"")
    write("latin1.har", b'{"log": "\xe9t\xe9"}')
    (tmp_path / "folder.har").mkdir()
    made["folder.har"] = tmp_path / "folder.har"
    made["missing.har"] = tmp_path / "missing.har"
    formats.export(formats.open_capture(source), tmp_path / "export.jsonl", "jsonl")
    made["export.jsonl"] = tmp_path / "export.jsonl"
    return made


async def test_damaged_and_foreign_files_get_one_line_errors(recorded, tmp_path, capsys):
    recorded.flush()
    files = damaged_files(tmp_path, recorded.path)
    for name, path in files.items():
        for command in (["report"], ["export", "-o", str(tmp_path / "out.har")]):
            code, out, err = run_cli(capsys, command[0], str(path), *command[1:])
            assert code == 2, (name, command, out, err)
            assert err.startswith(f"wsinspect: {path}: ") and err.count("\n") == 1, (name, err)
            assert "Traceback" not in err and out == "", (name, err)
    assert not (tmp_path / "out.har").exists()


async def test_a_truncated_flow_file_through_the_real_command(recorded, tmp_path):
    formats.export(recorded, tmp_path / "good.mitm", "flows")
    data = (tmp_path / "good.mitm").read_bytes()
    (tmp_path / "cut.mitm").write_bytes(data[: len(data) - 10])
    result = subprocess.run(
        [str(BIN / "wsinspect"), "report", str(tmp_path / "cut.mitm")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"wsinspect: {tmp_path / 'cut.mitm'}: flow 4 cannot be read, the file is truncated or "
        "damaged (Invalid data format.)"
    ]


def test_a_capture_whose_messages_are_lost_gets_a_one_line_export_error(
    capture_with_secrets, tmp_path, capsys
):
    with sqlite3.connect(capture_with_secrets) as db:
        db.execute("DROP TABLE messages")
    code, out, err = run_cli(capsys, "export", str(capture_with_secrets), "-o", str(tmp_path / "x.har"))
    assert (code, out) == (2, "")
    assert err == (
        f"wsinspect: {capture_with_secrets}: damaged, its messages cannot be read "
        "(no such table: messages)\n"
    )
    assert list(tmp_path.glob("*x.har*")) == []


def test_open_capture_errors_name_the_file():
    with pytest.raises(CaptureError, match=r"^/nonexistent/x\.har: no such capture file$"):
        formats.open_capture("/nonexistent/x.har")


# ----- redaction, selection and file modes -----------------------------------------------------


def secret_hop(**changes) -> Hop:
    """A closed hop with a secret in every place redaction must mask; `changes` sets fields."""
    hop = make_hop(
        f"wss://api.example/ws?room=1&token={SECRET}&access_token={SECRET}&auth={SECRET}"
        f"&key={SECRET}&secret={SECRET}&password={SECRET}&sig={SECRET}&X-Amz-Signature={SECRET}",
        request_line="GET /ws?room=1&token=" + SECRET + " HTTP/1.1",
        headers=[
            *upgrade_request("api.example")[:4],
            ("Authorization", f"Bearer {SECRET}"),
            ("Proxy-Authorization", f"Basic {SECRET}"),
            ("Cookie", f"sid={SECRET}; theme=dark{SECRET}"),
            ("X-Api-Key", SECRET),
            ("Referer", f"https://api.example/page?session={SECRET}"),
        ],
        t=1000.0,
        client_addr=("127.0.0.1", 50000),
        server_addr=("127.0.0.1", 443),
        response_status=101,
        response_reason="Switching Protocols",
        response_headers=[
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ("Set-Cookie", f"sid={SECRET}; Path=/; HttpOnly"),
        ],
        response_http_version="HTTP/1.1",
        timestamp_response=1000.1,
        timestamp_end=1001.0,
        outcome=Outcome.CLOSED,
        close=Close(code=1000, by="client", timestamp=1001.0),
    )
    for name, value in changes.items():
        setattr(hop, name, value)
    return hop


@pytest.fixture
def capture_with_secrets(tmp_path) -> Path:
    path = tmp_path / "secrets.db"
    store = SessionStore(path)
    add_imported_hop(store, secret_hop(), [Message(True, MessageType.TEXT, 2, b"hi", 1000.5)])
    store.close()
    return path


@pytest.mark.parametrize("fmt", ["har", "flows", "jsonl"])
def test_exports_are_redacted_unless_asked_not_to(capture_with_secrets, tmp_path, capsys, fmt):
    redacted, kept = tmp_path / f"redacted.{fmt}", tmp_path / f"kept.{fmt}"
    assert run_cli(capsys, "export", str(capture_with_secrets), "--format", fmt, "-o", str(redacted))[0] == 0
    code, _, err = run_cli(
        capsys, "export", str(capture_with_secrets), "--format", fmt, "-o", str(kept), "--no-redact"
    )
    assert code == 0 and "credentials kept" in err
    assert SECRET.encode() not in redacted.read_bytes()
    assert SECRET.encode() in kept.read_bytes()
    if fmt == "jsonl":
        return
    hop = formats.open_capture(redacted).sessions()[0].first_hop
    headers = dict(hop.request_headers)
    assert headers["Authorization"] == f"Bearer {MASK}"
    assert headers["Proxy-Authorization"] == f"Basic {MASK}"
    assert headers["Cookie"] == f"sid={MASK}; theme={MASK}"
    assert headers["X-Api-Key"] == MASK
    assert headers["Referer"] == f"https://api.example/page?session={MASK}"
    assert headers["Sec-WebSocket-Key"] == "dGhlIHNhbXBsZSBub25jZQ=="  # a nonce: kept
    assert dict(hop.response_headers)["Set-Cookie"] == f"sid={MASK}; Path=/; HttpOnly"
    assert hop.url.startswith(f"wss://api.example/ws?room=1&token={MASK}&access_token={MASK}")
    assert hop.request_line == f"GET /ws?room=1&token={MASK} HTTP/1.1"
    original = formats.open_capture(kept).sessions()[0].first_hop
    assert original.request_headers == secret_hop().request_headers
    assert original.url == secret_hop().url


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzM2NyM3QtdmFsdWUifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


@pytest.mark.parametrize("fmt", ["har", "flows"])
def test_tokens_in_subprotocols_nameless_cookies_and_error_texts_are_redacted(tmp_path, capsys, fmt):
    """`Sec-WebSocket-Protocol: access_token, <JWT>` is how a browser passes a token to a
    WebSocket; a refused request's error quotes its request line, query and password included."""
    hop = secret_hop(
        request_headers=[
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", f"graphql-transport-ws, access_token, {JWT}"),
            ("Cookie", f"theme=dark; {SECRET}"),
        ],
        response_headers=[("Sec-WebSocket-Protocol", JWT), ("Set-Cookie", f"{SECRET}; Path=/")],
        response_status=502,
        outcome=Outcome.REJECTED,
        close=Close(abnormal=True, abnormal_reason=f"lost http://u:{SECRET}@h/", by="server"),
        error=f"refused: b'GET http://user:{SECRET}@api.example/ws?room=1&token={SECRET} HTTP/1.1'",
    )
    capture = tmp_path / "c.db"
    store = SessionStore(capture)
    add_imported_hop(store, hop, [])
    store.close()
    out = tmp_path / f"x.{fmt}"
    assert run_cli(capsys, "export", str(capture), "--format", fmt, "-o", str(out))[0] == 0
    assert SECRET.encode() not in out.read_bytes() and JWT.encode() not in out.read_bytes()
    redacted = formats.open_capture(out).sessions()[0].first_hop
    assert dict(redacted.request_headers)["Sec-WebSocket-Protocol"] == (
        f"graphql-transport-ws, access_token, {MASK}"
    )
    assert dict(redacted.request_headers)["Cookie"] == f"theme={MASK}; {MASK}"
    assert dict(redacted.response_headers) == {
        "Sec-WebSocket-Protocol": MASK, "Set-Cookie": f"{MASK}; Path=/"
    }
    assert redacted.error == (
        f"refused: b'GET http://user:{MASK}@api.example/ws?room=1&token={MASK} HTTP/1.1'"
    )
    assert redacted.close.abnormal_reason == f"lost http://u:{MASK}@h/"
    kept = SessionStore.open(capture).sessions()[0].first_hop  # the capture keeps it all
    assert kept.error == hop.error and dict(kept.request_headers)["Cookie"].endswith(SECRET)
    # report masks error texts as exports do (URLs and request lines it shows as recorded)
    code, printed, _ = run_cli(capsys, "report", str(capture))
    assert code == 0 and f"end: abnormal: lost http://u:{MASK}@h/" in printed
    code, printed, _ = run_cli(capsys, "report", str(capture), "--json")
    (reported,) = json.loads(printed)["sessions"]
    assert reported["error"] == reported["hops"][0]["error"] == redacted.error
    assert reported["close"]["abnormal_reason"] == redacted.close.abnormal_reason


def test_redact_text_masks_urls_wherever_they_sit():
    assert redact_text("no url here, a ? alone") == "no url here, a ? alone"
    assert redact_text(f"url=https://a:{SECRET}@h/p?sig={SECRET}&x=1, (GET /p?key={SECRET})") == (
        f"url=https://a:{MASK}@h/p?sig={MASK}&x=1, (GET /p?key={MASK})"
    )
    assert redact_subprotocols("v12.stomp, wamp.2.json, ocpp2.0.1, Bearer, abc") == (
        f"v12.stomp, wamp.2.json, ocpp2.0.1, Bearer, {MASK}"
    )


def test_redact_url_keeps_everything_but_the_secrets():
    assert redact_url("ws://user:pw@h:1/p?a=1&api_key=x&b&apiKey=y#f") == (
        f"ws://user:{MASK}@h:1/p?a=1&api_key={MASK}&b&apiKey={MASK}#f"
    )
    assert redact_url("/plain?room=5&page=2") == "/plain?room=5&page=2"


async def test_export_selects_sessions(recorded, tmp_path, capsys):
    out = tmp_path / "two.har"
    code, _, err = run_cli(capsys, "export", str(recorded.path), "-o", str(out), "--session", "2")
    assert code == 0 and "exported 1 session(s), 2 hop(s)" in err
    (session,) = formats.open_capture(out).sessions()
    assert session.close.reason == "go away"
    code, _, err = run_cli(capsys, "export", str(recorded.path), "-o", str(out), "--session", "9")
    assert code == 2 and err == f"wsinspect: {recorded.path}: no session 9\n"
    code, _, err = run_cli(capsys, "export", str(recorded.path), "-o", str(tmp_path / "x.bin"))
    assert code == 2 and err == (
        f"wsinspect: {tmp_path / 'x.bin'}: cannot tell the format from the name; "
        "give --format har, flows or jsonl\n"
    )


def test_capture_and_export_files_are_readable_by_their_owner_only(capture_with_secrets, tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        assert stat.S_IMODE(capture_with_secrets.stat().st_mode) == 0o600
        for fmt in ("har", "flows", "jsonl"):
            out = tmp_path / f"out.{fmt}"
            out.write_text("an older, world-readable file")
            out.chmod(0o644)
            assert run_cli(capsys, "export", str(capture_with_secrets), "--format", fmt, "-o", str(out))[0] == 0
            assert stat.S_IMODE(out.stat().st_mode) == 0o600, fmt
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    finally:
        os.umask(previous)


async def test_live_capture_files_are_readable_by_their_owner_only(recorded):
    for path in recorded.path.parent.glob(recorded.path.name + "*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_report_reads_every_format(recorded, tmp_path, capsys):
    _, from_capture, _ = run_cli(capsys, "report", str(recorded.path), "--json")
    for fmt in ("har", "flows"):
        formats.export(recorded, tmp_path / f"r.{fmt}", fmt, redact=False)
        code, out, err = run_cli(capsys, "report", str(tmp_path / f"r.{fmt}"), "--json")
        assert code == 0, err
        assert json.loads(out) == json.loads(from_capture)
    assert re.search(r"#2 ws://127\.0\.0\.1:\d+/bye\s+closed\s+101\s+hops 2", report_text(tmp_path / "r.har", capsys))


def report_text(path: Path, capsys) -> str:
    return run_cli(capsys, "report", str(path))[1]
