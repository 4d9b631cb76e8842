"""What mitmproxy hides, recorded at the edges (issue 11): ws:// absolute-form requests,
requests the proxy refuses itself, the proxy's own closes on protocol errors, and abnormal
ends that mitmproxy reports to the survivor as a clean 1000."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
import socket

import aiohttp
import pytest
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers import websocket as websocket_layer
from mitmproxy.proxy.layers.http import _http1
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from wsinspect.diagnosis import diagnose
from wsinspect.model import MessageType, Outcome
from wsinspect.report import session_json

from .conftest import echo_handler
from .rawpeers import frame, raw_client, raw_server, read_frame, upgrade_request


def test_every_seam_is_installed_where_mitmproxy_calls_it():
    """If a mitmproxy release moves one of these, wsinspect silently loses what it records:
    fail here instead."""
    from wsinspect import seams

    seams.install()
    assert websocket_layer.WebsocketConnection.wsinspect_taps is not None
    assert http1.read_request_head.wsinspect_seam
    assert _http1.Http1Server.read_headers.wsinspect_seam
    assert callable(getattr(_http1.Http1Server, "done"))
    # The streaming relay is mitmproxy's relay_messages with one branch changed: if mitmproxy
    # changes its own, review StreamingWebsocketLayer and update the hash.
    streaming = websocket_layer.WebsocketLayer
    assert streaming.wsinspect_streaming
    original = streaming.__mro__[1].relay_messages
    source = inspect.getsource(original)
    assert hashlib.sha256(source.encode()).hexdigest() == seams.RELAY_MESSAGES_SHA256


def test_raw_relay_seams_are_where_mitmproxy_hands_over_and_closes():
    """The raw relay takes over where the HTTP layer creates its WebSocket layer, gets events
    through HttpStream's passthrough, and reads resets from / sends them through the
    ConnectionHandler's transports: fail here if a mitmproxy release moves any of that."""
    from mitmproxy.proxy import server
    from mitmproxy.proxy.layers import http as http_layer

    from wsinspect import seams

    seams.install()
    flow_done = inspect.getsource(http_layer.HttpStream.flow_done)
    assert "websocket.WebsocketLayer(self.context, self.flow)" in flow_done
    assert "self._handle_event = self.passthrough" in flow_done
    assert "RawRelayLayer" in inspect.getsource(websocket_layer.WebsocketLayer.__new__)
    passthrough = http_layer.HttpStream.passthrough
    assert passthrough.wsinspect_seam
    # mitmproxy's passthrough turns these HTTP events into the connection events the raw
    # relay is given, and sends toward the server as SendHttp(RequestData)
    original = inspect.getsource(passthrough.wsinspect_original)
    for name in ("RequestData", "ResponseData", "RequestEndOfMessage", "ResponseEndOfMessage"):
        assert f"isinstance(event, {name})" in original
    assert "SendHttp(\n                        RequestData(self.stream_id" in original or (
        "RequestData(self.stream_id, command.data)" in original
    )
    # the raw relay writes to the server itself when the HTTP layer holds a bare HTTP/1 client
    # for it (no TLS layer inside the HTTP layer)
    get_connection = inspect.getsource(http_layer.HttpLayer.get_connection)
    assert "stack /= HttpClient(context)" in get_connection
    assert "self.connections[context.server] = stack[0]" in get_connection
    assert "Http1Client(self.context.fork())" in inspect.getsource(http_layer.HttpLayer._handle_event)
    handler = server.ConnectionHandler
    assert handler.server_event.wsinspect_seam
    assert list(inspect.signature(handler.close_connection).parameters) == [
        "self", "connection", "half_close"
    ]
    reading = inspect.getsource(handler.handle_connection)
    # a reset ends the read loop like a FIN; the reader keeps the ConnectionResetError
    assert "except OSError:" in reading and "events.ConnectionClosed(connection)" in reading
    assert "writer.close()" in reading  # a full close closes the socket: SO_LINGER 0 resets
    assert "ConnectionIO" in inspect.getsource(server)


@pytest.mark.parametrize(
    "payload",
    [
        bytes(range(256)) * 40_000,  # ~10 MiB of every byte value
        "héllo wörld ✓ " * 300_000,  # multi-byte UTF-8 split across fragments
        ["fragmented " * 50_000, "message " * 50_000, "end"],
    ],
    ids=["binary", "utf8-text", "fragmented"],
)
async def test_messages_over_the_stored_size_are_streamed_unchanged(start_proxy, payload):
    proxy = await start_proxy(settings=["wsinspect_max_payload=65536"])
    async with serve(echo_handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/big", proxy=proxy.url, max_size=None) as ws:
            await ws.send("small first")
            assert await ws.recv() == "small first"
            await ws.send(payload)
            expected = "".join(payload) if isinstance(payload, list) else payload
            assert await ws.recv() == expected
            await ws.send("small after")
            assert await ws.recv() == "small after"
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    proxy.store.flush()
    messages = [m for m in proxy.store.messages(session.id, 0, 10) if m.type is not MessageType.CLOSE]
    raw = expected.encode() if isinstance(expected, str) else expected
    assert [m.payload for m in messages[:2]] == [b"small first"] * 2
    assert [m.payload for m in messages[-2:]] == [b"small after"] * 2
    for big in messages[2:4]:
        assert big.size == len(raw) and big.truncated
        assert big.payload == raw[:65536]
        assert big.sha256 == hashlib.sha256(raw).hexdigest()
        assert big.type is (MessageType.TEXT if isinstance(expected, str) else MessageType.BINARY)


async def healthy_round_trip(proxy, echo_port: int) -> None:
    async with connect(f"ws://127.0.0.1:{echo_port}/healthy", proxy=proxy.url) as ws:
        await ws.send("still fine")
        assert await ws.recv() == "still fine"


async def test_absolute_form_ws_scheme_from_aiohttp_is_proxied_and_recorded(proxy, echo_server):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            f"ws://127.0.0.1:{echo_server}/aio", proxy=proxy.url
        ) as ws:
            await ws.send_str("via aiohttp")
            assert (await ws.receive()).data == "via aiohttp"
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    hop = session.first_hop
    assert hop.request_line == f"GET ws://127.0.0.1:{echo_server}/aio HTTP/1.1"
    assert session.url == f"ws://127.0.0.1:{echo_server}/aio"
    assert session.stats.by_type["text"] == 2


async def test_absolute_form_wss_scheme_is_proxied_over_tls(start_proxy, tls_echo_server):
    proxy = await start_proxy(settings=["ssl_insecure=true"])
    reader, writer = await raw_client(
        proxy.port, f"wss://localhost:{tls_echo_server}/tls", f"localhost:{tls_echo_server}"
    )
    writer.write(frame(0x1, b"secret", mask=True))
    assert await read_frame(reader) == (0x1, b"secret")
    writer.close()
    session = await proxy.wait_session(lambda s: s.stats.count >= 2)
    assert session.first_hop.request_line.startswith(f"GET wss://localhost:{tls_echo_server}/tls")
    assert session.url == f"wss://localhost:{tls_echo_server}/tls"


@pytest.mark.parametrize(
    "bad_line, reason",
    [("NoColonHere", "invalid header line"), ("X-Bad\x01Name: 1", "invalid header name")],
)
async def test_requests_the_proxy_refuses_itself_are_rejected_sessions(
    proxy, echo_server, bad_line, reason
):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    request, _ = upgrade_request(
        f"http://127.0.0.1:{echo_server}/refused", f"127.0.0.1:{echo_server}", bad_line + "\r\n"
    )
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400")
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.REJECTED)
    hop = session.first_hop
    assert hop.response_status == 400 and hop.answered_by == "proxy"
    assert reason in hop.error.lower()
    assert hop.request_line == f"GET http://127.0.0.1:{echo_server}/refused HTTP/1.1"
    assert ("Upgrade", "websocket") in hop.request_headers
    (finding,) = diagnose(session)
    assert finding.code == "handshake-rejected"
    assert "by the proxy at hop 1 itself, which refused the request" in finding.message
    assert session_json(session)["hops"][0]["answered_by"] == "proxy"
    await healthy_round_trip(proxy, echo_server)


CLIENT_VIOLATIONS = [
    ("unmasked client frame", frame(0x1, b"no mask", mask=False), 1002),
    ("reserved opcode", frame(0x3, b"x", mask=True), 1002),
    ("control frame over 125 bytes", frame(0x9, b"p" * 126, mask=True), 1002),
    ("RSV bit without an extension", frame(0x1, b"rsv", mask=True, rsv=0b100), 1002),
    ("invalid UTF-8 in a text message", frame(0x1, b"\xff\xfe bad", mask=True), 1007),
]


@pytest.mark.parametrize("case, bad_frame, code", CLIENT_VIOLATIONS, ids=[c[0] for c in CLIENT_VIOLATIONS])
async def test_protocol_error_from_the_client_is_the_proxys_close(
    start_proxy, echo_server, case, bad_frame, code
):
    """mitmproxy's path enforces the protocol (the raw relay's record: test_conformance)."""
    proxy = await start_proxy(settings=["wsinspect_relay=mitmproxy"])
    reader, writer = await raw_client(
        proxy.port, f"http://127.0.0.1:{echo_server}/bad", f"127.0.0.1:{echo_server}"
    )
    writer.write(bad_frame)
    opcode, payload = await read_frame(reader)
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == code
    writer.close()
    session = await proxy.wait_session(
        lambda s: s.url.endswith("/bad") and s.outcome is Outcome.CLOSED
    )
    close = session.close
    assert (close.by, close.offender, close.code) == ("proxy", "client", code)
    assert close.reason  # wsproto's words for the rule broken
    assert close.told_client[0] == code and close.told_server[0] == code
    (finding,) = [f for f in diagnose(session) if f.code == "protocol-error"]
    assert finding.severity.value == "error" and finding.hop == 1
    assert "The client sent a frame" in finding.message and close.reason in finding.message
    report = session_json(session)
    assert report["close"]["by"] == "proxy" and report["close"]["offender"] == "client"
    await healthy_round_trip(proxy, echo_server)


SERVER_VIOLATIONS = [
    ("masked server frame", frame(0x1, b"masked", mask=True), 1002),
    ("reserved opcode", frame(0xB, b"x", mask=False), 1002),
    ("invalid UTF-8 in a text message", frame(0x1, b"\xc3\x28", mask=False), 1007),
]


@pytest.mark.parametrize("case, bad_frame, code", SERVER_VIOLATIONS, ids=[c[0] for c in SERVER_VIOLATIONS])
async def test_protocol_error_from_the_server_names_the_server(
    start_proxy, echo_server, case, bad_frame, code
):
    proxy = await start_proxy(settings=["wsinspect_relay=mitmproxy"])
    async def misbehave(reader, writer):
        writer.write(bad_frame)
        await writer.drain()
        await reader.read()
        writer.close()  # Python 3.12's Server.wait_closed waits for every connection to close

    server = await raw_server(misbehave)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await raw_client(
            proxy.port, f"http://127.0.0.1:{port}/srv", f"127.0.0.1:{port}"
        )
        opcode, payload = await read_frame(reader)
        assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == code
        writer.close()
        session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
        assert (session.close.by, session.close.offender, session.close.code) == (
            "proxy", "server", code
        )
        await healthy_round_trip(proxy, echo_server)


async def test_backend_reset_mid_session_shows_what_each_side_was_told(start_proxy):
    """On mitmproxy's path the survivor is told 1000 (the raw relay passes the end on
    instead: test_conformance)."""
    proxy = await start_proxy(settings=["wsinspect_relay=mitmproxy"])
    async def vanish(reader, writer):
        opcode, payload = await read_frame(reader)
        writer.write(frame(0x1, payload, mask=False))
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.transport.abort()  # a crash: no close frame, a reset

    server = await raw_server(vanish)
    port = server.sockets[0].getsockname()[1]
    async with server:
        async with connect(f"ws://127.0.0.1:{port}/doomed", proxy=proxy.url) as ws:
            await ws.send("hello?")
            assert await ws.recv() == "hello?"
            await ws.wait_closed()
            told_to_client = ws.close_code
        session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    close = session.close
    assert close.abnormal and close.by == "server"
    assert "server connection was lost" in close.abnormal_reason
    # mitmproxy tells the survivor a clean 1000, which is what the client believed:
    assert told_to_client == 1000
    assert close.told_client == (1000, "")
    abnormal = next(f for f in diagnose(session) if f.code == "abnormal-close")
    assert "The server died; the proxy told the client close 1000 with no reason" in abnormal.message
    assert session_json(session)["close"]["told_client"] == [1000, ""]
    proxy.store.flush()
    kinds = [m.type for m in proxy.store.messages(session.id, 0, 10)]
    assert kinds == [MessageType.TEXT, MessageType.TEXT]


def test_tls_close_seams_are_where_mitmproxy_ends_tls():
    """A FIN the raw relay passes on toward a TLS peer goes after close_notify: the TLS layer's
    OpenSSL connection is shut down in its send_close, the close_notify goes out through its
    tls_interact, and a peer's bare FIN is told from its close_notify in receive_close; a
    CONNECT tunnel's passthrough would make the relay's half-close a full close. Fail here if
    a mitmproxy release moves any of that (or starts sending close_notify itself)."""
    from mitmproxy.proxy import tunnel
    from mitmproxy.proxy.layers import http as http_layer
    from mitmproxy.proxy.layers import tls
    from OpenSSL import SSL

    from wsinspect import seams

    seams.install()
    layer = tls.TLSLayer
    assert layer.send_close.wsinspect_seam and "tls" in layer.__annotations__
    original_send_close = inspect.getsource(layer.send_close.wsinspect_original)
    assert "shutdown" not in original_send_close.replace("# We should probably shutdown", "")
    assert "yield from super().send_close(command)" in original_send_close
    interact = inspect.getsource(layer.tls_interact)
    assert "self.tls.bio_read(" in interact and "commands.SendData(self.conn, data)" in interact
    receive_close = inspect.getsource(layer.receive_close.wsinspect_original)
    assert "self.tls.get_shutdown() & SSL.RECEIVED_SHUTDOWN" in receive_close
    receive_data = inspect.getsource(layer.receive_data)
    assert "except SSL.ZeroReturnError:" in receive_data
    assert "events.ConnectionClosed(self.conn)" in receive_data
    assert SSL.SENT_SHUTDOWN and callable(SSL.Connection.shutdown)
    # a TLS layer's conn is its tunnel connection, so the relay's close reaches send_close
    assert "tunnel_connection=conn" in inspect.getsource(layer.__init__)
    handle_command = inspect.getsource(tunnel.TunnelLayer._handle_command)
    assert "yield from self.send_close(command)" in handle_command
    # the CONNECT tunnel's passthrough turns half-closes into full closes
    passthrough = inspect.getsource(http_layer.HttpStream.passthrough.wsinspect_original)
    assert "isinstance(command, commands.CloseTcpConnection)" in passthrough
    assert "command = commands.CloseConnection(command.connection)" in passthrough


def test_socket_fast_path_is_where_mitmproxy_reads_and_writes():
    """The raw relay takes the bytes the ConnectionHandler read from a plain connection before
    they go down the layers, and writes them to the other side's writer as mitmproxy's
    SendData would; the handler drains the writers after each event. Fail here if a
    mitmproxy release moves any of that."""
    from mitmproxy.proxy import server

    from wsinspect import seams

    seams.install()
    handler = server.ConnectionHandler
    assert handler.server_event.wsinspect_seam
    event = inspect.getsource(handler.server_event.wsinspect_original)
    assert "self.timeout_watchdog.register_activity()" in event
    assert "writer = self.transports[command.connection].writer" in event
    assert re.search(r"if not writer\.is_closing\(\):\s+writer\.write\(command\.data\)", event)
    reading = inspect.getsource(handler.handle_connection)
    read_event = reading.index("await self.server_event(events.DataReceived(connection, data))")
    assert reading.index("await self.drain_writers()", read_event) > read_event
    assert "transports: MutableMapping[Connection, ConnectionIO]" in inspect.getsource(server)


async def test_relay_protocol_takes_the_place_of_mitmproxys_stream_reader():
    """The raw relay's plain connections are read by a protocol set on asyncio's transport in
    place of the StreamReaderProtocol mitmproxy opened them with, once the StreamReader's
    buffer is empty: fail here if mitmproxy opens connections differently or asyncio's
    StreamReader keeps its bytes elsewhere."""
    from mitmproxy.proxy import server

    opening = inspect.getsource(server.ConnectionHandler.open_connection)
    assert "asyncio.open_connection(" in opening
    assert "ConnectionIO(" in opening and "reader=reader" in opening and "writer=writer" in opening
    server_side, client_side = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=server_side)
    try:
        protocol = writer.transport.get_protocol()
        assert isinstance(protocol, asyncio.StreamReaderProtocol)
        client_side.sendall(b"abc")
        await asyncio.sleep(0.05)
        assert bytes(reader._buffer) == b"abc"
        assert await reader.read(65535) == b"abc" and not reader._buffer
    finally:
        writer.close()
        client_side.close()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_plain_connections_are_relayed_between_sockets_and_tls_ones_through_layers(
    start_proxy, echo_server, tls_echo_server, monkeypatch, scheme
):
    from wsinspect import seams

    forwarded = []
    original = seams.RawRelayLayer.forward

    def forward(self, transports, conn, data):
        forwarded.append(len(data))
        return original(self, transports, conn, data)

    monkeypatch.setattr(seams.RawRelayLayer, "forward", forward)
    read_directly = []
    original_received = seams._RelayProtocol.data_received

    def data_received(self, data):
        read_directly.append(len(data))
        return original_received(self, data)

    monkeypatch.setattr(seams._RelayProtocol, "data_received", data_received)
    proxy = await start_proxy(settings=["wsinspect_relay=raw", "ssl_insecure=true"])
    port = echo_server if scheme == "ws" else tls_echo_server
    url = f"{scheme}://{'127.0.0.1' if scheme == 'ws' else 'localhost'}:{port}/fast"
    client_ssl = proxy.client_ssl() if scheme == "wss" else None
    async with connect(url, proxy=proxy.url, ssl=client_ssl) as ws:
        for text in ("one", "two" * 1000):
            await ws.send(text)
            assert await ws.recv() == text
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    proxy.store.flush()
    texts = [m.payload for m in proxy.store.messages(session.id, 0, 10)
             if m.type is MessageType.TEXT]
    assert texts == [b"one", b"one", b"two" * 1000, b"two" * 1000]
    assert (sum(forwarded) > 0) == (scheme == "ws")
    # the first read of each side came through mitmproxy's StreamReader, later ones did not
    assert (sum(read_directly) > 0) == (scheme == "ws")
    assert not seams._socket_relays


async def test_a_side_that_does_not_read_holds_the_other_back(start_proxy):
    """Backpressure: while the server reads nothing, the proxy stops reading the client once
    its writes toward the server back up, instead of holding what the client sends; the
    server then gets every byte, in order (the raw relay's own reader; mitmproxy's relay
    drains its writers before each read)."""
    proxy = await start_proxy(settings=["wsinspect_relay=raw"])
    first = frame(0x1, b"", mask=True)
    reading = asyncio.Event()
    received = bytearray()

    async def slow_reader(reader, writer):
        received.extend(await reader.readexactly(len(first)))
        await reading.wait()
        while chunk := await reader.read(1 << 20):
            received.extend(chunk)

    server = await raw_server(slow_reader)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await raw_client(proxy.port, f"http://127.0.0.1:{port}/slow", f"127.0.0.1:{port}")
    payload = frame(0x2, bytes(range(256)) * 4096, mask=True)  # 1 MiB frames
    sent = first + payload * 48
    writer.write(sent)
    await asyncio.sleep(1.5)
    held_by_client = writer.transport.get_write_buffer_size()
    reading.set()
    await writer.drain()
    writer.write_eof()
    try:
        await asyncio.wait_for(_until(lambda: len(received) == len(sent)), 20)
    finally:
        writer.close()
        server.close()
    # loopback's socket buffers hold a few MiB on each hop; the rest stayed with the client
    assert held_by_client > 16 * 1024 * 1024
    assert bytes(received) == sent


async def _until(done) -> None:
    while not done():
        await asyncio.sleep(0.05)
