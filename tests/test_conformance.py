"""Conformance of the raw relay (issue 15): each case runs direct and through wsinspect, with
real sockets on loopback, and each peer must receive byte for byte what it receives without
wsinspect, ending the same way (FIN, reset, or still open); the record must match the wire.

Peers are raw sockets driven by scripts of steps, so malformed frames, odd splits and ends
are exactly what the case says; frames are built once per case so both runs send the same
bytes (client masks included).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import zlib
from dataclasses import dataclass

import pytest

from wsinspect.diagnosis import diagnose
from wsinspect.model import MessageType, Outcome
from wsinspect.wire import FrameParser

from .conftest import wait_for
from .rawpeers import frame, raw_client, upgrade_request

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
SETTLE = 1.5  # seconds a peer waits for its connection to end after its script


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


# ----- scripted peers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What one peer received after the handshake, and how its connection ended."""

    data: bytes
    end: str  # "fin", "reset" or "open"; a MemoryTls peer tells "close_notify" from a bare "fin"


class MemoryTls:
    """One end of a TLS connection driven through ssl.SSLObject over a plain stream, standing
    in for both its reader and its writer. Unlike asyncio's SSL transport (which, depending on
    the Python release, reports a bare FIN as the end or keeps waiting), it tells how the
    other side's TLS ended: `ending` is "close_notify" (SSLZeroReturnError) or "fin" (a FIN
    without close_notify, a truncation). Its own FIN and close go out after a close_notify."""

    def __init__(self, reader, writer, context: ssl.SSLContext, server_hostname=None) -> None:
        self.raw_reader, self.raw_writer = reader, writer
        self.transport = writer.transport
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(
            self.incoming, self.outgoing, server_side=server_hostname is None,
            server_hostname=server_hostname,
        )
        self.buffer = bytearray()  # plaintext read past a readuntil() separator
        self.ending: str | None = None
        self.fin_sent = False

    def _flush(self) -> None:
        if pending := self.outgoing.read():
            self.raw_writer.write(pending)

    async def _receive(self) -> bool:
        data = await self.raw_reader.read(65536)
        if data:
            self.incoming.write(data)
        return bool(data)

    async def handshake(self) -> MemoryTls:
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return self
            except ssl.SSLWantReadError:
                self._flush()
                if not await self._receive():
                    raise ConnectionError("the connection ended during the TLS handshake")

    async def read(self, n: int) -> bytes:
        if self.buffer:
            data = bytes(self.buffer[:n])
            del self.buffer[:n]
            return data
        while self.ending is None:
            try:
                if data := self.tls.read(n):
                    return data
                self.ending = "close_notify"  # what SSLObject.read makes of a close_notify
            except ssl.SSLWantReadError:
                if not await self._receive():
                    self.ending = "fin"
            except ssl.SSLZeroReturnError:  # a close_notify after this side sent its own
                self.ending = "close_notify"
        return b""

    async def readuntil(self, separator: bytes) -> bytes:
        while (at := self.buffer.find(separator)) < 0:
            self.buffer += await self.read(65536) or b""
            if self.ending is not None:
                raise asyncio.IncompleteReadError(bytes(self.buffer), None)
        head = bytes(self.buffer[: at + len(separator)])
        del self.buffer[: at + len(separator)]
        return head

    def write(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    async def drain(self) -> None:
        await self.raw_writer.drain()

    def _close_notify(self) -> None:
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # sent; the other side's close_notify has not come yet
        self._flush()

    def write_eof(self, close_notify: bool = True) -> None:
        if close_notify:
            self._close_notify()
        self.raw_writer.write_eof()
        self.fin_sent = True

    def close(self) -> None:
        if not self.fin_sent:
            self._close_notify()
        self.raw_writer.close()

    def get_extra_info(self, name: str):
        return self.raw_writer.get_extra_info(name)


class Endpoint:
    """One side of a WebSocket after its handshake, running a script of steps:
    ("send", bytes) ("drip", bytes): one byte per write, ("expect", n): until n bytes came,
    ("sleep", s), ("fin",): shutdown(SHUT_WR) (after close_notify on TLS), ("bare_fin",): the
    same without close_notify (MemoryTls only), ("reset",): SO_LINGER 0 and close,
    ("wait_end",): until the peer's FIN or reset, ("close",): close after pending bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.data = bytearray()
        self.end = "open"
        self.collector = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        try:
            while chunk := await self.reader.read(65536):
                self.data += chunk
            self.end = getattr(self.reader, "ending", None) or "fin"
        except (ConnectionResetError, ssl.SSLError):
            self.end = "reset"

    async def play(self, steps) -> None:
        for step in steps:
            kind = step[0]
            if kind == "send":
                self.writer.write(step[1])
                await self.writer.drain()
            elif kind == "drip":
                for i in range(len(step[1])):
                    self.writer.write(step[1][i : i + 1])
                    await self.writer.drain()
                    await asyncio.sleep(0.002)
            elif kind == "expect":
                await wait_for(lambda: len(self.data) >= step[1], 5, f"{step[1]} bytes")
            elif kind == "sleep":
                await asyncio.sleep(step[1])
            elif kind == "fin":
                self.writer.write_eof()
            elif kind == "bare_fin":  # a MemoryTls's FIN without its close_notify
                self.writer.write_eof(close_notify=False)
            elif kind == "reset":
                sock = self.writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.writer.transport.abort()
            elif kind == "wait_end":
                await asyncio.wait_for(asyncio.shield(self.collector), 5)
            elif kind == "close":
                self.writer.close()
            else:  # pragma: no cover
                raise AssertionError(f"unknown step {step}")

    async def finish(self) -> Seen:
        try:
            await asyncio.wait_for(asyncio.shield(self.collector), SETTLE)
        except asyncio.TimeoutError:
            pass
        seen = Seen(bytes(self.data), self.end)
        self.collector.cancel()
        # asyncio's SSL transport on Python 3.11.2 cannot be aborted once closed (its
        # abort() dereferences a protocol that close() dropped; fixed in 3.11.3)
        if not self.writer.transport.is_closing():
            self.writer.transport.abort()
        return seen


@dataclass
class Case:
    client: list
    server: list
    extensions: str = ""  # Sec-WebSocket-Extensions of the 101
    tls: bool = False
    memory_tls: bool = False  # both peers' TLS is a MemoryTls (asyncio's SSL transport else)


async def start_server(case: Case, results: asyncio.Queue, tls: ssl.SSLContext | None):
    async def handle(reader, writer):
        if case.memory_tls:
            reader = writer = await MemoryTls(reader, writer, tls).handshake()
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        from wsinspect.model import accept_for_key

        extensions = f"Sec-WebSocket-Extensions: {case.extensions}\r\n" if case.extensions else ""
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_for_key(key)}\r\n{extensions}\r\n"
            ).encode()
        )
        await writer.drain()
        endpoint = Endpoint(reader, writer)
        await endpoint.play(case.server)
        await results.put(await endpoint.finish())

    return await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=None if case.memory_tls else tls
    )


async def open_client(
    case: Case, server_port: int, proxy=None, server_ssl: ssl.SSLContext | None = None
) -> Endpoint:
    """Direct, or through the proxy: absolute form for ws://, a CONNECT tunnel for wss://, or
    the origin form a reverse listener gets."""
    host = f"{'localhost' if case.tls else '127.0.0.1'}:{server_port}"
    offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if case.extensions else ""
    if proxy is not None and proxy.engine.modes[0].startswith("reverse:"):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        target = "/case"
    elif proxy is None:
        if case.memory_tls:
            reader, writer = await asyncio.open_connection("127.0.0.1", server_port)
            reader = writer = await MemoryTls(reader, writer, server_ssl, "localhost").handshake()
        else:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server_port, ssl=server_ssl,
                server_hostname="localhost" if server_ssl else None,
            )
        target = "/case"
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        if case.tls:
            writer.write(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            if case.memory_tls:
                tls = MemoryTls(reader, writer, proxy.client_ssl(), "localhost")
                reader = writer = await tls.handshake()
            else:
                await writer.start_tls(proxy.client_ssl(), server_hostname="localhost")
            target = "/case"
        else:
            target = f"http://{host}/case"
    request, _ = upgrade_request(target, host, offer)
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return Endpoint(reader, writer)


async def run_case(case: Case, proxy=None, server_cert=None) -> tuple[Seen, Seen]:
    """(what the client received, what the server received). `proxy` is a Proxy, or a
    coroutine function making one for the server's port (a reverse listener)."""
    server_tls = client_tls = None
    if case.tls:
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(*server_cert)
        client_tls = ssl.create_default_context(cafile=str(server_cert[0]))
    results: asyncio.Queue = asyncio.Queue()
    server = await start_server(case, results, server_tls)
    port = server.sockets[0].getsockname()[1]
    async with server:
        if callable(proxy):
            proxy = await proxy(port)
        client = await open_client(case, port, proxy, client_tls)
        await client.play(case.client)
        client_seen = await client.finish()
        server_seen = await asyncio.wait_for(results.get(), 10)
    return client_seen, server_seen


@pytest.fixture
async def conformance(start_proxy, server_cert):
    """Runs a case direct and through a raw-relay wsinspect; asserts both peers received the
    same bytes and endings; returns the proxied session and its messages."""

    async def check(case: Case, mode: str = "regular"):
        direct = await run_case(case, server_cert=server_cert)
        started = []

        async def proxy_for(port: int):
            modes = (f"reverse:http://127.0.0.1:{port}",) if mode == "reverse" else (mode,)
            started.append(await start_proxy(modes, ["wsinspect_relay=raw", "ssl_insecure=true"]))
            return started[0]

        proxied = await run_case(case, proxy_for, server_cert)
        proxy = started[0]
        assert proxied[0] == direct[0], "the client received something else through wsinspect"
        assert proxied[1] == direct[1], "the server received something else through wsinspect"
        session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
        proxy.store.flush()
        messages = proxy.store.messages(session.id, 0, 1000)
        return direct, session, messages, proxy

    return check


def wire_view(messages):
    return [(m.direction, m.type.value, m.payload) for m in messages]


def masked(opcode: int, payload: bytes, **kw) -> bytes:
    return frame(opcode, payload, mask=True, **kw)


def plain(opcode: int, payload: bytes, **kw) -> bytes:
    return frame(opcode, payload, mask=False, **kw)


# ----- cases -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["regular", "reverse"])
async def test_fragments_with_interleaved_pings_and_a_clean_close(conformance, mode):
    parts = [masked(TEXT, b"frag-", fin=False), masked(PING, b"p1"),
             masked(CONT, b"men-", fin=False), masked(PING, b"p2"), masked(CONT, b"ted")]
    client_bytes = b"".join(parts)
    reply = [plain(PONG, b"p1"), plain(PONG, b"p2"), plain(BINARY, b"\x00\x01", fin=False),
             plain(PING, b"s1"), plain(CONT, b"\x02")]
    reply_bytes = b"".join(reply)
    close_c, close_s = masked(CLOSE, close_payload(1000)), plain(CLOSE, close_payload(1000))
    case = Case(
        client=[("send", client_bytes), ("expect", len(reply_bytes)),
                ("send", masked(PONG, b"s1")), ("send", close_c), ("wait_end",), ("close",)],
        server=[("expect", len(client_bytes)), ("send", reply_bytes),
                ("expect", len(client_bytes) + 8 + len(close_c)), ("send", close_s),
                ("close",)],
    )
    (client_seen, server_seen), session, messages, _ = await conformance(case, mode)
    assert session.first_hop.mode.startswith(mode)
    assert client_seen == Seen(reply_bytes + close_s, "fin")
    assert server_seen.end == "fin"
    assert wire_view(messages) == [
        ("client", "ping", b"p1"), ("client", "ping", b"p2"), ("client", "text", b"frag-men-ted"),
        ("server", "pong", b"p1"), ("server", "pong", b"p2"), ("server", "ping", b"s1"),
        ("server", "binary", b"\x00\x01\x02"), ("client", "pong", b"s1"),
        ("client", "close", close_payload(1000)), ("server", "close", close_payload(1000)),
    ]
    pongs = [m for m in messages if m.type is MessageType.PONG]
    assert all(m.rtt is not None and m.rtt >= 0 for m in pongs)
    assert session.ping_rtt.count == 3
    close = session.close
    assert (close.by, close.code, close.told_client, close.told_server) == (
        "client", 1000, (1000, ""), (1000, "")
    )
    assert (close.client_end, close.server_end) == ("fin", "fin") and not close.abnormal
    assert not [f for f in diagnose(session) if f.severity.value != "info"]


async def test_pongs_pair_with_pings_by_payload_else_in_order(conformance):
    pings = masked(PING, b"a") + masked(PING, b"b")
    pongs = plain(PONG, b"b") + plain(PONG, b"zz") + plain(PONG, b"c")
    case = Case(
        client=[("send", pings), ("expect", len(pongs)), ("fin",), ("wait_end",)],
        server=[("expect", len(pings)), ("sleep", 0.05), ("send", pongs), ("wait_end",),
                ("close",)],
    )
    (client_seen, _), session, messages, _ = await conformance(case)
    assert client_seen == Seen(pongs, "fin")
    rtts = {m.payload: m.rtt for m in messages if m.type is MessageType.PONG}
    # "b" answers ping b; "zz" answers nothing by payload, so the oldest ping, "a"; no ping
    # is left for "c" (an unsolicited pong, a heartbeat)
    assert rtts[b"b"] >= 0.05 and rtts[b"zz"] >= 0.05 and rtts[b"c"] is None
    summary = session.ping_rtt
    assert summary.count == 2 and summary.min <= summary.mean <= summary.max


VIOLATIONS = [
    ("reserved bits", masked(TEXT, b"rsv", rsv=0b010), 1002, "RSV"),
    ("reserved opcode", masked(0x3, b"x"), 1002, "opcode"),
    ("unmasked client frame", plain(TEXT, b"no mask"), 1002, "mask"),
    ("invalid UTF-8", masked(TEXT, b"\xff\xfe bad"), 1007, "UTF-8"),
    ("invalid close code", masked(CLOSE, close_payload(999)), 1002, "close code"),
]


@pytest.mark.parametrize("name, bad, code, words", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
async def test_violations_are_passed_on_and_the_peers_reaction_recorded(
    conformance, name, bad, code, words
):
    closing = name == "invalid close code"  # the bad frame starts the closing handshake
    """The server, not the proxy, sees the bad frame and closes; the record says so."""
    answer = plain(CLOSE, close_payload(code, b"bad frame"))
    case = Case(
        client=[("send", masked(TEXT, b"ok")), ("send", bad), ("wait_end",), ("close",)],
        server=[("expect", 8 + len(bad)), ("send", plain(TEXT, b"ok")), ("send", answer),
                ("close",)],
    )
    (client_seen, server_seen), session, messages, _ = await conformance(case)
    assert client_seen == Seen(plain(TEXT, b"ok") + answer, "fin")
    assert server_seen.data.endswith(bad)  # the server got the bad frame itself
    (violation, *_) = session.first_hop.violations
    assert violation.sender == "client" and words.lower() in violation.rule.lower()
    by, first_code = ("client", 999) if closing else ("server", code)
    assert (session.close.by, session.close.code, session.close.offender) == (by, first_code, "client")
    assert session.close.told_client == (code, "bad frame")
    (finding,) = [f for f in diagnose(session) if f.code == "protocol-error"]
    assert "The client sent a frame" in finding.message and violation.rule in finding.message
    verb = "answered with" if closing else "closed with"
    assert f"the server {verb} close {code} 'bad frame'" in finding.message
    assert ("client", "text", b"ok") in wire_view(messages)
    assert ("server", "text", b"ok") in wire_view(messages)  # the echo is not lost


async def test_empty_close_payload_is_recorded_empty(conformance):
    case = Case(
        client=[("send", masked(CLOSE, b"")), ("wait_end",), ("close",)],
        server=[("expect", 6), ("send", plain(CLOSE, b"")), ("close",)],
    )
    (client_seen, _), session, messages, _ = await conformance(case)
    assert client_seen == Seen(plain(CLOSE, b""), "fin")
    assert wire_view(messages) == [("client", "close", b""), ("server", "close", b"")]
    assert session.close.code is None and session.close.told_client == (None, "")
    assert not session.first_hop.violations


def deflated(messages: list[bytes], wbits: int, takeover: bool) -> list[bytes]:
    """permessage-deflate payloads (RFC 7692): raw deflate, the 00 00 ff ff tail removed."""
    out, compressor = [], zlib.compressobj(wbits=-wbits)
    for message in messages:
        if not takeover:
            compressor = zlib.compressobj(wbits=-wbits)
        data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        out.append(data[:-4])
    return out


@pytest.mark.parametrize(
    "extensions, server_bits, takeover",
    [
        ("permessage-deflate", 15, True),
        ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", 15, False),
        ("permessage-deflate; server_max_window_bits=9", 9, True),
    ],
    ids=["context-takeover", "no-context-takeover", "9-bit-window"],
)
async def test_deflate_is_inflated_for_the_record_only(conformance, extensions, server_bits, takeover):
    texts = [b"compress me, compress me " * 40, b"compress me, compress me " * 40 + b"!"]
    from_client = [masked(TEXT, p, rsv=0b100) for p in deflated(texts, 15, takeover)]
    from_server = [plain(TEXT, p, rsv=0b100) for p in deflated(texts, server_bits, takeover)]
    case = Case(
        client=[("send", b"".join(from_client)), ("expect", sum(map(len, from_server))),
                ("fin",), ("wait_end",)],
        server=[("expect", sum(map(len, from_client))), ("send", b"".join(from_server)),
                ("wait_end",), ("close",)],
        extensions=extensions,
    )
    (client_seen, server_seen), session, messages, _ = await conformance(case)
    assert client_seen == Seen(b"".join(from_server), "fin")
    assert server_seen == Seen(b"".join(from_client), "fin")
    assert wire_view(messages) == [("client", "text", t) for t in texts] + [
        ("server", "text", t) for t in texts
    ]
    assert not session.first_hop.violations
    # no close frame either way: the client's FIN, then the server's
    assert session.close.abnormal and session.close.by == "client"
    assert (session.close.client_end, session.close.server_end) == ("fin", "fin")


async def test_frames_delivered_one_byte_at_a_time(conformance):
    message = masked(TEXT, "dripped ✓".encode())
    ping = masked(PING, b"slow")
    case = Case(
        client=[("drip", message + ping), ("expect", 6), ("fin",), ("wait_end",)],
        server=[("expect", len(message) + len(ping)), ("send", plain(PONG, b"slow")),
                ("wait_end",), ("close",)],
    )
    (_, server_seen), session, messages, _ = await conformance(case)
    assert server_seen == Seen(message + ping, "fin")
    assert wire_view(messages)[:3] == [
        ("client", "text", "dripped ✓".encode()), ("client", "ping", b"slow"),
        ("server", "pong", b"slow"),
    ]


async def test_64k_frames_split_across_tls_records_through_connect(conformance):
    big_up, big_down = masked(BINARY, bytes(range(256)) * 256), plain(BINARY, b"\x7f" * 65536)
    c_close, s_close = masked(CLOSE, close_payload(1001, b"bye")), plain(CLOSE, close_payload(1001, b"bye"))
    case = Case(
        client=[("send", big_up), ("expect", len(big_down)), ("send", c_close),
                ("expect", len(big_down) + len(s_close)), ("close",)],
        server=[("expect", len(big_up)), ("send", big_down), ("expect", len(big_up) + len(c_close)),
                ("send", s_close), ("wait_end",), ("close",)],
        tls=True,
    )
    (client_seen, server_seen), session, messages, _ = await conformance(case)
    assert client_seen.data == big_down + s_close
    assert server_seen.data == big_up + c_close
    assert session.url.startswith("wss://localhost:")
    assert [(m.direction, m.type.value, m.size) for m in messages] == [
        ("client", "binary", 65536), ("server", "binary", 65536),
        ("client", "close", 5), ("server", "close", 5),
    ]
    assert session.close.code == 1001 and session.close.reason == "bye"


@pytest.mark.parametrize("client_end", ["fin", "bare_fin"])
async def test_tls_half_closes_are_passed_on_as_they_were_sent(conformance, client_end):
    """Each side's TLS close (close_notify, then FIN) reaches the other as a TLS close, not a
    bare FIN (which some TLS stacks do not take for the end), and the half-closed direction
    keeps carrying the server's replies; a FIN without close_notify (a truncation) is passed
    on as one."""
    replies = [plain(TEXT, f"after your FIN {i}".encode()) for i in range(3)]
    last_words = masked(TEXT, b"last words")
    case = Case(
        client=[("send", last_words), (client_end,), ("wait_end",), ("close",)],
        server=[("wait_end",), *[("send", r) for r in replies], ("close",)],
        tls=True,
        memory_tls=True,
    )
    (client_seen, server_seen), session, messages, _ = await conformance(case)
    assert client_seen == Seen(b"".join(replies), "close_notify")
    assert server_seen == Seen(last_words, "close_notify" if client_end == "fin" else "fin")
    assert [m.payload for m in messages if not m.from_client] == [r[2:] for r in replies]
    assert (session.close.by, session.close.client_end, session.close.server_end) == (
        "client", "fin", "fin"
    )


async def test_backend_reset_mid_frame_is_passed_on_as_a_reset(conformance):
    half = plain(TEXT, b"never finished " * 10)[:60]
    case = Case(
        client=[("send", masked(TEXT, b"hi")), ("wait_end",)],
        server=[("expect", 8), ("send", half), ("sleep", 0.2), ("reset",)],
    )
    (client_seen, server_seen), session, messages, _ = await conformance(case)
    assert client_seen == Seen(half, "reset")  # not a close frame the server never sent
    close = session.close
    assert close.abnormal and close.by == "server" and close.server_end == "reset"
    assert close.told_client is None and "reset" in close.abnormal_reason
    assert wire_view(messages) == [("client", "text", b"hi")]
    (finding,) = [f for f in diagnose(session) if f.code == "abnormal-close"]
    assert "the server reset the connection without a close frame" in finding.message


async def test_client_fin_while_the_server_still_sends(conformance):
    replies = [plain(TEXT, f"late {i}".encode()) for i in range(3)]
    case = Case(
        client=[("send", masked(TEXT, b"last words")), ("fin",), ("wait_end",)],
        server=[("wait_end",), *[("send", r) for r in replies], ("close",)],
    )
    (client_seen, server_seen), session, messages, _ = await conformance(case)
    assert client_seen == Seen(b"".join(replies), "fin")
    assert server_seen.end == "fin"
    assert [m.payload for m in messages if not m.from_client] == [b"late 0", b"late 1", b"late 2"]
    assert session.close.by == "client" and session.close.client_end == "fin"


async def test_server_reset_after_the_clients_fin_reaches_the_client(conformance):
    reply = plain(TEXT, b"reply after your FIN")
    case = Case(
        client=[("send", masked(TEXT, b"bye")), ("fin",), ("wait_end",)],
        server=[("wait_end",), ("send", reply), ("sleep", 0.2), ("reset",)],
    )
    (client_seen, server_seen), session, _, _ = await conformance(case)
    assert client_seen == Seen(reply, "reset") and server_seen.end == "fin"
    close = session.close
    assert (close.by, close.client_end, close.server_end) == ("client", "fin", "reset")
    assert "then the server reset the connection" in close.abnormal_reason


async def test_injection_mid_fragmented_message_waits_for_the_boundary(start_proxy):
    proxy = await start_proxy(settings=["wsinspect_relay=raw"])
    seed, first, rest = masked(TEXT, b"seed"), masked(TEXT, b"one ", fin=False), masked(CONT, b"two")
    case = Case(
        client=[("send", seed), ("send", first), ("sleep", 0.5), ("send", rest), ("sleep", 0.5),
                ("fin",), ("wait_end",)],
        server=[("wait_end",), ("close",)],
    )
    injected: list = []

    async def inject_mid_message():
        session = await proxy.wait_session(lambda s: s.stats.count >= 1)
        await asyncio.sleep(0.2)  # the first fragment has passed
        injected.append(proxy.engine.resender.inject(session.id, 0, "server", b"injected"))

    task = asyncio.create_task(inject_mid_message())
    _, server_seen = await run_case(case, proxy)
    await task
    parser = FrameParser(from_client=True)
    events = parser.feed(server_seen.data, 0.0)
    assert [(type(e).__name__, getattr(e, "payload", None)) for e in events] == [
        ("DataMessage", b"seed"), ("DataMessage", b"one two"), ("DataMessage", b"injected"),
    ]
    assert server_seen.data.startswith(seed + first + rest)  # nothing went inside the message
    injected_frame = server_seen.data[len(seed + first + rest):]
    assert injected_frame[0] == 0x81 and injected_frame[1] & 0x80  # FIN, RSV clear, masked
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    proxy.store.flush()
    recorded = proxy.store.messages(session.id, 0, 10)
    assert [(m.payload, m.injected) for m in recorded] == [
        (b"seed", False), (b"one two", False), (b"injected", True),
    ]


async def test_tls_half_close_toward_a_server_the_http_layer_opened(start_proxy, server_cert):
    """`GET wss://…` in absolute form: the HTTP layer holds the server's TLS layer inside
    itself; the client's FIN still reaches the server as close_notify + FIN, and the server's
    replies and close still reach the client."""
    proxy = await start_proxy(settings=["wsinspect_relay=raw", "ssl_insecure=true"])
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(*server_cert)
    replies = plain(TEXT, b"one") + plain(TEXT, b"two")
    last_words = masked(TEXT, b"last words")
    case = Case(client=[], server=[("wait_end",), ("send", replies), ("close",)], memory_tls=True)
    results: asyncio.Queue = asyncio.Queue()
    server = await start_server(case, results, server_tls)
    port = server.sockets[0].getsockname()[1]
    async with server:
        host = f"localhost:{port}"
        reader, writer = await raw_client(proxy.port, f"wss://{host}/case", host)
        client = Endpoint(reader, writer)
        await client.play([("send", last_words), ("fin",), ("wait_end",)])
        client_seen = await client.finish()
        server_seen = await asyncio.wait_for(results.get(), 10)
    assert server_seen == Seen(last_words, "close_notify")
    assert client_seen == Seen(replies, "fin")
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    assert session.url.startswith("wss://localhost:")
    assert (session.close.client_end, session.close.server_end) == ("fin", "fin")
