"""Replaying recorded sessions: `wsinspect replay` as a real subprocess and the Python API, with
real websockets servers (an echo server, a stateful counter, one that refuses the upgrade)."""

from __future__ import annotations

import asyncio
import hashlib
import http
import re
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from tests.builders import make_hop
from tests.rawpeers import frame
from wsinspect.model import Close, Message, MessageType, Outcome, accept_for_key, header_value
from wsinspect.replay import ProxyRoute, ReplayPlan, compare, rebuilt_headers, replay
from wsinspect.resend import SessionClosedError
from wsinspect.runtime import remove_capture
from wsinspect.store import SessionStore

BIN = Path(sys.executable).parent
CREDENTIALS = {"Cookie": "sid=42", "Authorization": "Bearer token", "X-Trace": "t-1"}


class Server:
    """A websockets server on an OS-chosen port that keeps each handshake's headers."""

    def __init__(self, handler, **kwargs) -> None:
        self.handler = handler
        self.kwargs = kwargs
        self.handshakes: list = []
        self.port = 0

    async def _handle(self, ws) -> None:
        self.handshakes.append(ws.request.headers)
        await self.handler(ws)

    async def __aenter__(self) -> Server:
        self._serve = serve(self._handle, "127.0.0.1", self.port, **self.kwargs)
        server = await self._serve.__aenter__()
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self._serve.__aexit__(*exc)


async def echo(ws) -> None:
    async for message in ws:
        await ws.send(message)


def counter():
    """A stateful handler: answers every message with a count that survives connections."""
    state = {"count": 0}

    async def handler(ws) -> None:
        async for _ in ws:
            state["count"] += 1
            await ws.send(f"count {state['count']}")

    return handler


async def record(start_proxy, capture: Path, url: str, messages, ssl_context=None) -> int:
    """Record one session through a wsinspect proxy into `capture`; returns its id."""
    proxy = await start_proxy(capture=capture)
    async with connect(
        url, proxy=proxy.url, additional_headers=CREDENTIALS, ssl=ssl_context
    ) as ws:
        for message in messages:
            await ws.send(message)
            await ws.recv()
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    proxy.store.flush()
    return session.id


async def wsinspect_replay(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "wsinspect"), "replay", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


def payloads(store: SessionStore, session_id: int) -> dict[str, list[tuple[str, bytes]]]:
    """Each side's text and binary messages, in order."""
    sides: dict[str, list[tuple[str, bytes]]] = {"client": [], "server": []}
    for m in store.messages(session_id, 0, 1000):
        if m.type in (MessageType.TEXT, MessageType.BINARY):
            sides[m.direction].append((m.type.value, m.payload))
    return sides


async def test_replay_through_the_proxy_matches_the_echo_server(tmp_path, start_proxy):
    async with Server(echo) as server:
        capture = tmp_path / "original.db"
        url = f"ws://127.0.0.1:{server.port}/chat?room=7"
        session_id = await record(start_proxy, capture, url, ["hello", b"\x00\x01", "bye"])

        replayed = tmp_path / "replay.db"
        code, out, err = await wsinspect_replay(str(capture), str(session_id), "-w", str(replayed))
    assert code == 0, out + err
    assert "Traceback" not in err
    assert "through a wsinspect proxy" in out
    assert f"replay of session #{session_id} in {capture}" in out
    assert "the server's answers matched: 3 match, 0 differ, 0 missing, 0 extra" in out

    original_headers, replay_headers = server.handshakes
    for name, value in CREDENTIALS.items():
        assert replay_headers[name] == value
    assert replay_headers["Sec-WebSocket-Key"] != original_headers["Sec-WebSocket-Key"]
    assert replay_headers["Upgrade"].lower() == "websocket"

    store = SessionStore.open(replayed)
    (session,) = store.sessions()
    assert session.replay_of == session_id
    assert session.url == url
    assert session.first_hop.mode == "regular"  # recorded by the replay's own proxy
    assert session.close.code == 1000 and session.close.by == "client"
    assert payloads(store, session.id) == payloads(SessionStore.open(capture), session_id)


async def test_direct_replay_can_drop_credentials(tmp_path, start_proxy):
    async with Server(echo) as server:
        capture = tmp_path / "original.db"
        url = f"ws://127.0.0.1:{server.port}/"
        session_id = await record(start_proxy, capture, url, ["one", "two"])
        replayed = tmp_path / "replay.db"
        code, out, err = await wsinspect_replay(
            str(capture), str(session_id), "--direct", "--drop-credentials", "-w", str(replayed)
        )
    assert code == 0, out + err
    assert "directly" in out and "2 match" in out
    headers = server.handshakes[1]
    assert "Cookie" not in headers and "Authorization" not in headers
    assert headers["X-Trace"] == "t-1"
    store = SessionStore.open(replayed)
    (session,) = store.sessions()
    hop = session.first_hop
    assert (hop.mode, session.replay_of, session.status) == ("direct", session_id, 101)
    assert header_value(hop.request_headers, "X-Trace") == "t-1"
    assert header_value(hop.request_headers, "Cookie") is None
    assert [m.type.value for m in store.messages(session.id, 0, 10)] == [
        "text", "text", "text", "text", "close", "close"
    ]


async def test_changed_answers_show_in_the_comparison_with_exit_1(tmp_path, start_proxy):
    async with Server(counter()) as server:
        capture = tmp_path / "original.db"
        session_id = await record(
            start_proxy, capture, f"ws://127.0.0.1:{server.port}/", ["inc", "inc"]
        )
        code, out, err = await wsinspect_replay(str(capture), str(session_id))
    assert code == 1, out + err
    assert re.search(r'~ original #1 text "count 1"  replay #\d text "count 3"', out)
    assert re.search(r'~ original #3 text "count 2"  replay #\d text "count 4"', out)
    assert "the server's answers differ: 0 match, 2 differ, 0 missing, 0 extra" in out


async def test_original_timing_keeps_the_spacing(tmp_path, start_proxy):
    async with Server(echo) as server:
        proxy = await start_proxy(capture=tmp_path / "original.db")
        async with connect(f"ws://127.0.0.1:{server.port}/", proxy=proxy.url) as ws:
            await ws.send("first")
            await ws.recv()
            await asyncio.sleep(0.5)
            await ws.send("second")
            await ws.recv()
        original = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
        plan = ReplayPlan.from_store(proxy.store, original.id)
        result = await replay(plan, proxy.store, via=None, timing="original")
    assert result.comparison.matched
    sent = [m for m in proxy.store.messages(result.session.id, 0, 10) if m.from_client]
    assert sent[1].timestamp - sent[0].timestamp >= 0.4


async def test_replay_of_a_closed_session_from_the_api_into_the_same_store(proxy):
    """What the app does: resending into a closed session fails and says to replay; the
    replay goes through the app's own proxy into the same store, linked to the original."""
    async with Server(echo) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/live", proxy=proxy.url) as ws:
            await ws.send("again?")
            await ws.recv()
        original = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
        with pytest.raises(SessionClosedError, match="replay"):
            proxy.engine.resender.inject(original.id, 0)

        plan = ReplayPlan.from_store(proxy.store, original.id)
        result = await replay(plan, proxy.store, via=ProxyRoute.for_engine(proxy.engine))
    assert result.comparison.matched and result.comparison.counts()["match"] == 1
    assert result.session.id != original.id and result.session.replay_of == original.id
    assert result.session.outcome is Outcome.CLOSED
    assert payloads(proxy.store, result.session.id) == payloads(proxy.store, original.id)
    assert [s.id for s in proxy.store.sessions()] == [original.id, result.session.id]


async def test_refused_upgrade_is_exit_2_and_recorded_as_rejected(tmp_path, start_proxy):
    async with Server(echo) as server:
        capture = tmp_path / "original.db"
        session_id = await record(start_proxy, capture, f"ws://127.0.0.1:{server.port}/", ["x"])
    refuse = lambda connection, request: connection.respond(http.HTTPStatus.FORBIDDEN, "no\n")
    async with Server(echo, process_request=refuse) as refusing:
        for extra in ([], ["--direct"]):
            replayed = tmp_path / f"replay{len(extra)}.db"
            code, out, err = await wsinspect_replay(
                str(capture), str(session_id), "--to", f"ws://127.0.0.1:{refusing.port}",
                "-w", str(replayed), *extra,
            )
            assert code == 2, out + err
            assert f"127.0.0.1:{refusing.port} refused the upgrade: 403 Forbidden" in err
            assert "Traceback" not in err
            (session,) = SessionStore.open(replayed).sessions()
            assert (session.outcome, session.status) == (Outcome.REJECTED, 403)
            assert session.replay_of == session_id


async def test_server_gone_is_exit_2_in_plain_words(tmp_path, start_proxy):
    async with Server(echo) as server:
        capture = tmp_path / "original.db"
        session_id = await record(start_proxy, capture, f"ws://127.0.0.1:{server.port}/", ["x"])
    for extra in ([], ["--direct"]):
        code, out, err = await wsinspect_replay(str(capture), str(session_id), *extra)
        assert code == 2, out + err
        assert "Traceback" not in err
        assert f"127.0.0.1:{server.port}" in err and "is the server running?" in err
    code, out, err = await wsinspect_replay(str(capture), "99")
    assert (code, err.strip()) == (2, "wsinspect: there is no session #99 in the capture")
    code, out, err = await wsinspect_replay(str(tmp_path / "missing.db"), "1")
    assert code == 2 and "no such capture file" in err


async def test_a_server_that_never_answers_the_upgrade_times_out(tmp_path, start_proxy):
    async with Server(echo) as server:
        capture = tmp_path / "original.db"
        session_id = await record(start_proxy, capture, f"ws://127.0.0.1:{server.port}/", ["x"])

    async def silent(reader, writer):
        await reader.read()  # reads the upgrade request and never answers
        writer.close()

    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = mute.sockets[0].getsockname()[1]
    try:
        for extra in ([], ["--direct"]):
            code, out, err = await wsinspect_replay(
                str(capture), str(session_id), "--to", f"ws://127.0.0.1:{port}/",
                "--timeout", "0.5", *extra,
            )
            assert code == 2, out + err
            assert f"timed out after 0.5s waiting for 127.0.0.1:{port} to answer the upgrade" in err
            assert "Traceback" not in err
    finally:
        mute.close()


async def test_wss_replay_verifies_the_server(tmp_path, start_proxy, tls_echo_server, server_cert):
    capture = tmp_path / "original.db"
    proxy = await start_proxy(capture=capture, settings=["ssl_insecure=true"])
    async with connect(
        f"wss://127.0.0.1:{tls_echo_server}/secure", proxy=proxy.url, ssl=proxy.client_ssl()
    ) as ws:
        await ws.send("over tls")
        await ws.recv()
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    proxy.store.flush()
    cafile = str(server_cert[0])
    for extra in ([], ["--direct"]):
        code, out, err = await wsinspect_replay(str(capture), str(session.id), *extra)
        assert code == 2, out + err
        assert "TLS failure" in err and "Traceback" not in err
        assert "self-signed certificate" in err and "--cafile FILE trusts" in err
        code, out, err = await wsinspect_replay(
            str(capture), str(session.id), "--cafile", cafile, *extra
        )
        assert code == 0, out + err
        assert "1 match" in out


def message(text: str, from_client: bool = False) -> Message:
    return Message(from_client, MessageType.TEXT, len(text), text.encode(), 0.0)


def test_comparison_aligns_in_order_and_names_what_differs():
    original = [message(t) for t in ("a", "b", "c", "d")]
    replayed = [message(t) for t in ("a", "B", "c", "e", "f")]
    comparison = compare(original, replayed)
    assert [(e.status, e.original and e.original.payload, e.replay and e.replay.payload)
            for e in comparison.entries] == [
        ("match", b"a", b"a"),
        ("differ", b"b", b"B"),
        ("match", b"c", b"c"),
        ("differ", b"d", b"e"),
        ("extra", None, b"f"),
    ]
    assert not comparison.matched
    missing = compare(original, original[:2] + original[3:])
    assert missing.counts() == {"match": 3, "differ": 0, "missing": 1, "extra": 0}
    assert compare(original, list(original)).matched


def test_hop_by_hop_headers_are_rebuilt():
    headers = [
        ("Host", "h"), ("Connection", "Upgrade, X-Hop"), ("Upgrade", "websocket"),
        ("X-Hop", "1"), ("Proxy-Authorization", "Basic x"), ("Sec-WebSocket-Key", "k"),
        ("Cookie", "c=1"), ("Authorization", "Bearer t"), ("Origin", "http://o"),
    ]
    assert rebuilt_headers(headers) == [
        ("Cookie", "c=1"), ("Authorization", "Bearer t"), ("Origin", "http://o")
    ]
    assert rebuilt_headers(headers, ["cookie", "Authorization"]) == [("Origin", "http://o")]


# ----- hostile servers (raw sockets) --------------------------------------------------------


class RawServer:
    """A server on a raw socket that accepts any upgrade (with `extra_headers`, raw bytes) and
    then runs `behave(reader, writer)`."""

    def __init__(self, behave, extra_headers: bytes = b"") -> None:
        self.behave = behave
        self.extra_headers = extra_headers

    async def _handle(self, reader, writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"(?i)sec-websocket-key: *(\S+)", head).group(1).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_for_key(key).encode() + b"\r\n"
            + self.extra_headers + b"\r\n"
        )
        try:
            await self.behave(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()


def crafted_capture(path: Path, url: str, messages: list[Message]) -> int:
    """A capture holding one closed session to `url` with `messages`, as a file handed to the
    user would."""
    store = SessionStore(path)
    closed = Close(code=1000, by="client", timestamp=3.0)
    hop = make_hop(url, t=1.0, status=101, close=closed)
    store.add_hop(hop)
    for m in messages:
        store.add_message(hop, m)
    store.close()
    return hop.session_id


async def test_a_server_that_keeps_the_connection_busy_is_stopped_at_the_deadline(tmp_path):
    async def pings_only(reader, writer):
        while not writer.is_closing():
            writer.write(frame(0x9, b"still here", mask=False))
            await asyncio.sleep(0.05)

    async def chatters(reader, writer):
        while not writer.is_closing():
            writer.write(frame(0x1, b"tick", mask=False) + frame(0x9, b"", mask=False))
            await asyncio.sleep(0.05)

    capture = tmp_path / "original.db"
    for extra in ([], ["--direct"]):
        async with RawServer(pings_only) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            session_id = crafted_capture(capture, url, [message("hi", True), message("hi")])
            # Pings are not answers: the missing one is reported as soon as the server has
            # been quiet for --wait, the deadline is not needed.
            code, out, err = await wsinspect_replay(
                str(capture), str(session_id), "--wait", "0.5", "--deadline", "20", *extra
            )
            assert code == 1, out + err
            assert "- missing: original #1 text \"hi\"" in out
        capture.unlink()
        async with RawServer(chatters) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            session_id = crafted_capture(capture, url, [message("hi", True), message("hi")])
            started = time.monotonic()
            code, out, err = await wsinspect_replay(
                str(capture), str(session_id), "--deadline", "1.5", *extra
            )
            assert time.monotonic() - started < 15
            assert code == 2, out + err
            assert "Traceback" not in err
            assert re.search(
                r"^wsinspect: replay failed: the replay did not finish within its 1\.5s "
                rf"deadline \(--deadline SECONDS\): 127\.0\.0\.1:{server.port} kept the connection "
                r"busy \(\d+ answers, 1 expected\)$", err, re.MULTILINE,
            ), err
        capture.unlink()


async def test_a_huge_answer_is_kept_capped_and_hashed(tmp_path):
    size = 40 * 1024 * 1024
    huge = bytes(range(256)) * (size // 256)

    async def sends_huge(reader, writer):
        await reader.read(100)  # the client's message
        writer.write(frame(0x2, huge, mask=False))
        await writer.drain()
        await reader.read()

    capture = tmp_path / "original.db"
    for extra in ([], ["--direct"]):
        async with RawServer(sends_huge) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            original = Message(
                from_client=False, type=MessageType.BINARY, size=size, payload=huge[:10],
                timestamp=2.0, sha256=hashlib.sha256(huge).hexdigest(),
            )  # fmt: skip
            session_id = crafted_capture(capture, url, [message("go", True), original])
            replayed = tmp_path / "replay.db"
            code, out, err = await wsinspect_replay(
                str(capture), str(session_id), "-w", str(replayed), "--wait", "5", *extra
            )
            assert code == 0, out + err  # identified by size and SHA-256, as the original
            store = SessionStore.open(replayed)
            answer = next(
                m for m in store.messages(store.sessions()[0].id, 0, 10)
                if not m.from_client and m.type is MessageType.BINARY
            )
            assert answer.size == size and answer.truncated
            assert len(answer.payload) == store.max_payload
            assert answer.payload == huge[: store.max_payload]
            assert answer.sha256 == original.sha256
            store.close()
        capture.unlink()
        remove_capture(replayed)  # with its payload file, which holds the huge answer's prefix


@pytest.mark.parametrize(
    "header",
    [
        b"Sec-WebSocket-Protocol: ch\xc3\xa9\x1b]0;owned\x07\r\n",
        b"Sec-WebSocket-Extensions: permessage-deflate; x=\xe9\x1b[2J\r\n",
    ],
)
async def test_a_non_ascii_handshake_answer_is_one_line_and_exit_2(tmp_path, header):
    async def idle(reader, writer):
        await reader.read()

    capture = tmp_path / "original.db"
    for extra in ([], ["--direct"]):
        async with RawServer(idle, extra_headers=header) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            session_id = crafted_capture(capture, url, [message("hi", True), message("hi")])
            code, out, err = await wsinspect_replay(str(capture), str(session_id), *extra)
        assert code == 2, out + err
        assert "Traceback" not in err and "\x1b" not in err + out, err
        name, value = header.decode("utf-8", "replace").strip().split(": ")
        shown = value.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
        assert err.splitlines()[0] == (
            f"wsinspect: replay failed: 127.0.0.1:{server.port} answered the upgrade with a "
            f"header that is not ASCII: {name}: {shown}"
        ), err
        capture.unlink()


async def test_the_recorded_url_is_printed_escaped(tmp_path):
    async with Server(echo) as server:
        capture = tmp_path / "original.db"
        url = f"ws://127.0.0.1:{server.port}/\x1b]0;owned\x07\x1b[2J"
        session_id = crafted_capture(capture, url, [message("hi", True), message("hi")])
        code, out, err = await wsinspect_replay(str(capture), str(session_id), "--direct")
    assert "\x1b" not in out + err and "\x07" not in out + err
    shown = f"ws://127.0.0.1:{server.port}/\\x1b]0;owned\\x07\\x1b[2J"
    assert f"replaying session #{session_id} to {shown}" in out


async def test_injected_messages_are_not_expected_as_answers(tmp_path):
    async with Server(echo) as server:
        capture = tmp_path / "original.db"
        injected = message("from wsinspect")
        injected.injected = True
        session_id = crafted_capture(
            capture, f"ws://127.0.0.1:{server.port}/",
            [message("hi", True), message("hi"), injected],
        )  # fmt: skip
        code, out, err = await wsinspect_replay(str(capture), str(session_id), "--direct")
    assert code == 0, out + err
    assert "1 match, 0 differ, 0 missing, 0 extra" in out
