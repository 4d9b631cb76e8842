"""The passive frame parser (wsinspect.wire) against frames from real implementations
(websockets' and wsproto's sans-I/O protocols, which also decode them as the oracle) and
hand-built raw frames for what no library sends. Socket-free."""

from __future__ import annotations

import hashlib
import os
import random
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Opcode
from websockets.server import ServerProtocol
from websockets.uri import parse_uri
from wsproto import ConnectionType, WSConnection
from wsproto import events as wse
from wsproto.extensions import PerMessageDeflate

from wsinspect import wire
from wsinspect.wire import (
    Control,
    DataMessage,
    Deflate,
    FrameParser,
    SyncLost,
    Violation,
    encode_frame,
    negotiated_deflate,
    unmask,
)

from .rawpeers import frame

T = 1.0  # one timestamp for every feed, so events from different chunkings compare equal


def feed_all(parser: FrameParser, data: bytes, sizes=None) -> list:
    """Feed `data` in pieces of the given sizes (cycled), or whole."""
    if sizes is None:
        return parser.feed(data, T)
    events, pos, i = [], 0, 0
    while pos < len(data):
        step = sizes[i % len(sizes)]
        events += parser.feed(data[pos:pos + step], T)
        pos += step
        i += 1
    return events


def chunkings(data: bytes, rng: random.Random):
    """Whole, one byte at a time, and a few random chunkings."""
    yield None
    yield [1]
    for _ in range(4):
        yield [rng.randint(1, 40) for _ in range(50)]
    yield [rng.randint(1, 5000) for _ in range(20)]


def summary(events) -> list[tuple]:
    """What the peer's library would hand its application, from the parser's events."""
    out = []
    for e in events:
        if isinstance(e, DataMessage):
            out.append((e.type, e.payload))
        elif isinstance(e, Control):
            out.append((e.opcode, e.payload))
    return out


# --- real peers, sans I/O -----------------------------------------------------------------

def websockets_pair(client_ext=None, server_ext=None):
    """A websockets client and server after a real in-memory handshake, and the 101's headers."""
    client = ClientProtocol(parse_uri("ws://example.test/"), extensions=client_ext, max_size=None)
    server = ServerProtocol(extensions=server_ext, max_size=None)
    client.send_request(client.connect())
    for data in client.data_to_send():
        server.receive_data(data)
    (request,) = server.events_received()
    response = server.accept(request)
    server.send_response(response)
    for data in server.data_to_send():
        client.receive_data(data)
    assert client.handshake_exc is None
    client.events_received()
    return client, server, list(response.headers.raw_items())


def websockets_oracle(receiver, data: bytes) -> list[tuple]:
    """Messages and control frames as the receiving websockets protocol decodes `data`."""
    receiver.receive_data(data)
    out, parts, kind = [], [], None
    for f in receiver.events_received():
        if f.opcode in (Opcode.TEXT, Opcode.BINARY):
            kind, parts = ("text" if f.opcode == Opcode.TEXT else "binary"), [f.data]
        elif f.opcode == Opcode.CONT:
            parts.append(f.data)
        else:
            out.append((int(f.opcode), bytes(f.data)))
            continue
        if f.fin:
            out.append((kind, b"".join(parts)))
    return out


def websockets_session(sender) -> bytes:
    """Every kind of frame websockets sends: sizes at each length encoding, fragments with
    interleaved control frames, repeated texts (so a deflate context carries over), a close."""
    sender.send_text("hello wörld".encode())
    for size in (0, 1, 125, 126, 127, 65535, 65536):
        sender.send_binary(bytes(random.Random(size).randbytes(size)))
    for _ in range(3):
        sender.send_text(b"the same sentence, again and again, compresses well")
    sender.send_text(b"frag-1 ", fin=False)
    sender.send_ping(b"in between")
    sender.send_continuation(b"frag-2 ", fin=False)
    sender.send_pong(b"")
    sender.send_continuation(b"frag-3", fin=True)
    sender.send_binary(b"\x00" * 2_000)
    sender.send_close(1000, "bye")
    return b"".join(sender.data_to_send())


DEFLATE_CASES = {
    "no-deflate": (None, None, None),
    "default": (dict(), dict(), Deflate()),
    "server_no_context_takeover": (
        dict(server_no_context_takeover=True), dict(server_no_context_takeover=True),
        Deflate(server_no_context_takeover=True),
    ),
    "client_no_context_takeover": (
        dict(client_no_context_takeover=True), dict(client_no_context_takeover=True),
        Deflate(client_no_context_takeover=True),
    ),
    "both_no_context_takeover": (
        dict(server_no_context_takeover=True, client_no_context_takeover=True),
        dict(server_no_context_takeover=True, client_no_context_takeover=True),
        Deflate(server_no_context_takeover=True, client_no_context_takeover=True),
    ),
    "server_max_window_bits=9": (
        dict(server_max_window_bits=9), dict(server_max_window_bits=9),
        Deflate(server_max_window_bits=9),
    ),
    "client_max_window_bits=9": (
        dict(client_max_window_bits=9), dict(client_max_window_bits=9),
        Deflate(client_max_window_bits=9),
    ),
    "windows 10 and 12": (
        dict(server_max_window_bits=10, client_max_window_bits=12),
        dict(server_max_window_bits=10, client_max_window_bits=12),
        Deflate(server_max_window_bits=10, client_max_window_bits=12),
    ),
}


@pytest.mark.parametrize("case", list(DEFLATE_CASES))
def test_websockets_streams_in_any_chunking_match_what_the_peer_decodes(case):
    client_params, server_params, expected = DEFLATE_CASES[case]
    client_ext = None if client_params is None else [ClientPerMessageDeflateFactory(
        **client_params)]
    server_ext = None if server_params is None else [ServerPerMessageDeflateFactory(
        **server_params)]
    client, server, headers = websockets_pair(client_ext, server_ext)
    deflate = negotiated_deflate(headers)
    assert deflate == expected
    rng = random.Random(case)
    streams = {True: websockets_session(client), False: websockets_session(server)}
    for receiver, from_client in ((server, True), (client, False)):
        stream = streams[from_client]
        oracle = websockets_oracle(receiver, stream)
        reference = None
        for sizes in chunkings(stream, rng):
            parser = FrameParser(from_client, deflate)
            events = feed_all(parser, stream, sizes)
            assert not [e for e in events if isinstance(e, (Violation, SyncLost))]
            assert summary(events) == oracle
            assert parser.offset == len(stream) and parser.at_message_boundary
            if reference is None:
                reference = events
            assert events == reference  # the same events, whatever the chunking
        messages = [e for e in reference if isinstance(e, DataMessage)]
        assert all(m.compressed == (deflate is not None) for m in messages if m.size)
        assert [m.frames for m in messages if m.type == "text"][-1] == 3
        assert all(e.from_client is from_client and e.timestamp == T for e in reference)


@pytest.mark.parametrize("params", [
    dict(),
    dict(client_no_context_takeover=True, server_no_context_takeover=True),
    dict(client_max_window_bits=9, server_max_window_bits=11),
])
def test_wsproto_deflate_matches_what_wsproto_decodes(params):
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    offer = PerMessageDeflate(**params)
    server.receive_data(client.send(wse.Request(host="example.test", target="/",
                                                extensions=[offer])))
    (request,) = [e for e in server.events() if isinstance(e, wse.Request)]
    response = server.send(wse.AcceptConnection(extensions=[PerMessageDeflate(**params)]))
    client.receive_data(response)
    assert [type(e) for e in client.events()] == [wse.AcceptConnection]
    head = response.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")[1:]
    deflate = negotiated_deflate([tuple(line.split(": ", 1)) for line in head])
    assert deflate is not None
    assert deflate.client_no_context_takeover == params.get("client_no_context_takeover", False)
    assert deflate.client_max_window_bits == params.get("client_max_window_bits", 15)

    texts = ["ping-pong " * 40, "ping-pong " * 40, "ünïcödé " * 10, ""]
    stream = b"".join(client.send(wse.TextMessage(t)) for t in texts)
    stream += client.send(wse.BytesMessage(b"part one", message_finished=False))
    stream += client.send(wse.Ping(b"!"))
    stream += client.send(wse.BytesMessage(b"part two", message_finished=True))
    stream += client.send(wse.CloseConnection(code=4000, reason="done"))
    # What was sent is the oracle: wsproto's own receiver hands back the still-compressed bytes
    # of a fragmented message when a ping comes between its fragments.
    oracle = [("text", t.encode()) for t in texts] + [
        (0x9, b"!"), ("binary", b"part onepart two"), (0x8, (4000).to_bytes(2, "big") + b"done")]
    for sizes in (None, [1], [3, 7, 11]):
        events = feed_all(FrameParser(True, deflate), stream, sizes)
        assert not [e for e in events if isinstance(e, (Violation, SyncLost))]
        assert summary(events) == oracle


def two_messages(size: int, wbits: int) -> tuple[bytes, bytes, bytes]:
    """A random block sent twice through one deflate context: the block and both bodies."""
    block = random.Random(size).randbytes(size)
    compressor = zlib.compressobj(wbits=wbits)
    first = compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
    second = compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return block, first[:-4], second[:-4]


def test_window_bits_8_takes_zlib_9_bit_output_and_refuses_a_wider_window():
    """zlib cannot deflate raw with an 8-bit window (peers built on it use 9, whose distances
    zlib keeps under 251 bytes); the parser inflates with the negotiated 8 bits, so it takes
    that and, like the receiving peer, refuses a reference 300 bytes back."""
    with pytest.raises(ValueError):
        zlib.compressobj(wbits=-8)
    deflate = negotiated_deflate([("Sec-WebSocket-Extensions",
                                   "permessage-deflate; server_max_window_bits=8")])
    assert deflate == Deflate(server_max_window_bits=8)
    block, first, second = two_messages(250, -9)
    assert len(second) < 20  # all of it a reference into the first message
    events = FrameParser(False, deflate).feed(frame(0x2, first, mask=False, rsv=4) +
                                              frame(0x2, second, mask=False, rsv=4), T)
    assert summary(events) == [("binary", block), ("binary", block)]

    block, first, second = two_messages(300, -15)
    assert len(second) < 20
    receiver = zlib.decompressobj(wbits=-8)
    receiver.decompress(first + wire.DEFLATE_TAIL)
    with pytest.raises(zlib.error):
        receiver.decompress(second + wire.DEFLATE_TAIL)
    stream = frame(0x2, first, mask=False, rsv=4) + frame(0x2, second, mask=False, rsv=4)
    events = FrameParser(False, deflate).feed(stream, T)
    assert [e.rule for e in events if isinstance(e, Violation)] == [wire.INFLATE_FAILED]
    assert summary(FrameParser(False, Deflate()).feed(stream, T)) == [("binary", block)] * 2


# --- sizes, caps and memory ------------------------------------------------------------------

def test_unmask_matches_bytewise_xor_and_encode_frame_is_read_by_wsproto():
    rng = random.Random(1)
    for n in (0, 1, 3, 4, 5, 63, 64, 511, 512, 513, 1000, 65537):
        data, key = rng.randbytes(n), rng.randbytes(4)
        expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
        assert unmask(data, key) == wire.unmask_python(data, key) == expected
    assert wire.unmask_c is not None  # the test environment has websockets' C extension
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(wse.Request(host="h", target="/")))
    list(server.events())
    server.send(wse.AcceptConnection())
    payload = rng.randbytes(70000)
    server.receive_data(encode_frame(0x2, payload, mask=True) +
                        encode_frame(0x1, b"a", fin=False, mask=True) +
                        encode_frame(0x0, b"b", mask=True))
    received = list(server.events())
    assert received[0].data == payload
    assert [e.data for e in received[1:]] == ["a", "b"]
    assert encode_frame(0x9, b"x", mask=False) == b"\x89\x01x"


@pytest.mark.parametrize("compressed", [False, True])
def test_payload_past_the_cap_is_hashed_not_kept(compressed):
    cap = 1000
    body = random.Random(2).randbytes(5000) * 3  # compresses across the repeats
    rng = random.Random(3)
    if compressed:
        c = zlib.compressobj(wbits=-15)
        wire_body = (c.compress(body) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
        parts = [wire_body[:100], wire_body[100:3000], wire_body[3000:]]
        frames = (frame(0x2, parts[0], mask=True, fin=False, rsv=4) +
                  frame(0x9, b"ping", mask=True) +
                  frame(0x0, parts[1], mask=True, fin=False) +
                  frame(0x0, parts[2], mask=True))
    else:
        frames = (frame(0x2, body[:7000], mask=True, fin=False) +
                  frame(0x0, body[7000:], mask=True))
    deflate = Deflate() if compressed else None
    for sizes in (None, [1], [rng.randint(1, 900) for _ in range(30)]):
        parser = FrameParser(True, deflate, max_payload=cap)
        events = feed_all(parser, frames, sizes)
        message = events[-1]
        assert isinstance(message, DataMessage)
        assert message.payload == body[:cap]
        assert message.size == len(body)
        assert message.sha256 == hashlib.sha256(body).hexdigest()
        assert message.compressed is compressed
        assert message.frames == (3 if compressed else 2)
    exact = FrameParser(False, max_payload=cap).feed(frame(0x2, body[:cap], mask=False), T)
    assert exact[0].payload == body[:cap] and exact[0].sha256 is None


@pytest.mark.parametrize("from_client", [True, False])
def test_kept_bytes_are_exact_whatever_the_frames_announced(from_client):
    """The kept buffer is sized by the frame being read: later fragments grow it, reads of
    any size fill it, and nothing of the size made for it shows past the bytes that came."""
    rng = random.Random(5)
    body = rng.randbytes(300_000)
    frames = (frame(0x2, body[:70_000], mask=from_client, fin=False) +
              frame(0x9, b"in between", mask=from_client) +
              frame(0x0, body[70_000:], mask=from_client))
    for sizes in ([65536], [rng.randint(1, 40_000) for _ in range(40)]):
        for cap in (1 << 20, 100_000, 70_000, 50_000):
            parser = FrameParser(from_client, max_payload=cap)
            message = feed_all(parser, frames, sizes)[-1]
            assert message.payload == body[:cap] and message.size == len(body)
            assert message.sha256 == (None if cap >= len(body) else
                                      hashlib.sha256(body).hexdigest())


def test_invalid_utf8_past_the_cap_is_still_found():
    text = "é".encode() * 600  # 1200 bytes; the cap splits a character
    parser = FrameParser(False, max_payload=1001)
    assert not [e for e in parser.feed(frame(0x1, text, mask=False), T)
                if isinstance(e, Violation)]
    events = parser.feed(frame(0x1, text + b"\xff", mask=False), T)
    assert [e.rule for e in events if isinstance(e, Violation)] == [wire.INVALID_UTF8]
    assert events[-1].size == 1201 and events[-1].sha256


def message_peak(parser: FrameParser, header: bytes, chunk: bytes, count: int):
    """Feed header + count x chunk; the traced peak and the events."""
    tracemalloc.start()
    try:
        events = parser.feed(header, T)
        for _ in range(count):
            events += parser.feed(chunk, T)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, events


def test_256_mib_message_streams_through_in_bounded_memory():
    """A 256 MiB masked message in 64 KiB reads: the traced peak stays under 16 MiB + the cap
    (measured: 1.1 MiB with the 1 MiB cap; bench/wire_bench.py streams 1 GiB)."""
    cap, chunk_size, count = 1 << 20, 64 * 1024, 4096
    key = b"\x1f\x2e\x3d\x4c"
    plain = random.Random(4).randbytes(chunk_size)
    masked = unmask(plain, key)  # 64 KiB is a multiple of 4: each read starts at key phase 0
    size = chunk_size * count
    header = bytes((0x82, 0x80 | 127)) + size.to_bytes(8, "big") + key
    peak, events = message_peak(FrameParser(True, max_payload=cap), header, masked, count)
    (message,) = events
    expected = hashlib.sha256(plain)
    for _ in range(count - 1):
        expected.update(plain)
    assert message.size == size and message.sha256 == expected.hexdigest()
    assert message.payload == (plain * (cap // chunk_size))
    assert peak < cap + 16 * 2**20, peak


def test_deflate_bomb_inflates_in_bounded_memory():
    """Deflate that inflates to 64 MiB of zeros never exists whole in memory."""
    cap = 1 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    body = b"".join(c.compress(zeros) for _ in range(64)) + c.flush(zlib.Z_SYNC_FLUSH)
    header = frame(0x2, body[:-4], mask=False, rsv=4)[:-(len(body) - 4)]
    parser = FrameParser(False, Deflate(), max_payload=cap)
    peak, events = message_peak(parser, header + body[:-4], b"", 0)
    (message,) = events
    assert message.size == 64 << 20 and message.payload == bytes(cap)
    assert len(body) < 100_000
    assert peak < cap + len(body) + 4 * 2**20, peak


# --- violations, each on a hand-built frame ---------------------------------------------------

def masked(opcode, payload, **kw):
    return frame(opcode, payload, mask=True, **kw)


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return masked(0x8, code.to_bytes(2, "big") + reason)


VIOLATIONS = {
    "rsv1 without extension": (None, masked(0x1, b"x", rsv=4), [wire.RSV_WITHOUT_EXTENSION]),
    "rsv2 and rsv3": (None, masked(0x2, b"x", rsv=3),
                      [wire.RSV_WITHOUT_EXTENSION, wire.RSV_WITHOUT_EXTENSION]),
    "rsv1 on a continuation": (
        Deflate(), masked(0x2, b"\x00", fin=False) + masked(0x0, b"\x03\x00", rsv=4),
        [wire.RSV1_NOT_FIRST],
    ),
    "rsv1 on a ping": (Deflate(), masked(0x9, b"", rsv=4), [wire.RSV1_NOT_FIRST]),
    "reserved data opcode": (None, masked(0x3, b"abc"), [wire.RESERVED_OPCODE]),
    "reserved control opcode": (None, masked(0xB, b""), [wire.RESERVED_OPCODE]),
    "control frame over 125 bytes": (None, masked(0x9, b"p" * 126), [wire.CONTROL_TOO_LONG]),
    "fragmented control frame": (None, masked(0xA, b"p", fin=False), [wire.CONTROL_FRAGMENTED]),
    "client frame unmasked": (None, frame(0x1, b"x", mask=False), [wire.CLIENT_UNMASKED]),
    "continuation without start": (None, masked(0x0, b"orphan"), [wire.ORPHAN_CONTINUATION]),
    "new data frame inside a message": (
        None, masked(0x1, b"one", fin=False) + masked(0x2, b"two"), [wire.DATA_INSIDE_MESSAGE],
    ),
    "invalid utf-8 text": (None, masked(0x1, b"ok \xc3\x28"), [wire.INVALID_UTF8]),
    "invalid utf-8 across fragments": (
        None, masked(0x1, b"\xe2\x82", fin=False) + masked(0x0, b"\x28"), [wire.INVALID_UTF8],
    ),
    "close payload of 1 byte": (None, masked(0x8, b"\x03"), [wire.CLOSE_ONE_BYTE]),
    "close code 1005": (None, close_frame(1005), [wire.INVALID_CLOSE_CODE]),
    "close code 999": (None, close_frame(999), [wire.INVALID_CLOSE_CODE]),
    "close code 2000": (None, close_frame(2000), [wire.INVALID_CLOSE_CODE]),
    "close code 5000": (None, close_frame(5000), [wire.INVALID_CLOSE_CODE]),
    "close reason not utf-8": (None, close_frame(1000, b"\xff"), [wire.CLOSE_REASON_UTF8]),
    "frame after close": (None, close_frame(1000) + masked(0x1, b"late"),
                          [wire.FRAME_AFTER_CLOSE]),
    "length 5 in 2 bytes": (None, b"\x82\xfe\x00\x05" + b"k" * 4 + b"12345",
                            [wire.NON_MINIMAL_LENGTH]),
    "length 300 in 8 bytes": (None, b"\x82\xff" + (300).to_bytes(8, "big") + b"\0" * 304,
                              [wire.NON_MINIMAL_LENGTH]),
    "inflate failure": (Deflate(), masked(0x2, b"\xff\xff\xff\xff", rsv=4),
                        [wire.INFLATE_FAILED]),
    "inflate failure in a fragment": (
        Deflate(), masked(0x1, b"b\x00", rsv=4, fin=False) + masked(0x0, b"\x05"),
        [wire.INFLATE_FAILED],
    ),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_each_rfc6455_violation_is_reported_and_parsing_goes_on(case):
    deflate, raw, rules = VIOLATIONS[case]
    after = masked(0x1, b"still in sync") + masked(0x9, b"")
    reference = None
    for sizes in (None, [1], [2, 5]):
        parser = FrameParser(True, deflate)
        events = feed_all(parser, raw + after, sizes)
        if reference is None:
            reference = events
        assert events == reference
    assert [e.rule for e in reference if isinstance(e, Violation)][:len(rules)] == rules
    assert all(e.rule.startswith("RFC ") and e.detail for e in reference
               if isinstance(e, Violation))
    assert not [e for e in reference if isinstance(e, SyncLost)]
    assert parser.in_sync and parser.at_message_boundary
    assert summary(reference)[-2:] == [("text", b"still in sync"), (0x9, b"")]
    assert reference[-1].end == len(raw + after)


def test_violating_frames_still_report_their_data():
    events = FrameParser(True).feed(masked(0x1, b"one", fin=False) + masked(0x2, b"two") +
                                    masked(0x0, b"orphan") + masked(0x9, b"p" * 200) +
                                    masked(0x8, b"\x03\xed"), T)
    messages = [e for e in events if isinstance(e, DataMessage)]
    assert [(m.type, m.payload, m.boundary) for m in messages] == [
        ("text", b"one", False), ("binary", b"two", True), ("binary", b"orphan", True)]
    controls = [e for e in events if isinstance(e, Control)]
    assert controls[0].payload == b"p" * 200
    assert controls[1].close_code_reason() == (1005, "")


def test_server_frame_masked_and_valid_close_codes():
    parser = FrameParser(False)
    events = parser.feed(masked(0x2, b"m"), T)
    assert [e.rule for e in events if isinstance(e, Violation)] == [wire.SERVER_MASKED]
    assert events[-1].payload == b"m"
    for code in (1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999):
        events = FrameParser(False).feed(frame(0x8, code.to_bytes(2, "big") + b"r",
                                               mask=False), T)
        assert [type(e) for e in events] == [Control]
        assert events[0].close_code_reason() == (code, "r")


def test_empty_close_payload_stays_empty():
    (close,) = FrameParser(True).feed(masked(0x8, b""), T)
    assert close.opcode == 0x8 and close.payload == b""
    assert close.close_code_reason() == (None, "")


def test_length_with_top_bit_set_loses_sync_and_later_bytes_are_only_counted():
    parser = FrameParser(False)
    raw = frame(0x1, b"before", mask=False) + b"\x82\x7f" + (1 << 63 | 5).to_bytes(8, "big")
    events = feed_all(parser, raw + b"x" * 50, [3])
    assert summary(events) == [("text", b"before")]
    violation, lost = events[1:]
    assert violation.rule == wire.LENGTH_TOP_BIT and violation.end == len(raw)
    assert isinstance(lost, SyncLost) and lost.end == len(raw) and not lost.boundary
    assert not parser.in_sync and not parser.at_message_boundary
    assert parser.feed(frame(0x1, b"after", mask=False), T) == []
    assert parser.offset == len(raw) + 50 + 7


def test_garbage_loses_sync():
    """An HTTP answer where frames were expected: a few odd frames, then a header too wrong
    to be one."""
    parser = FrameParser(False)
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + bytes(range(256)) * 4
    events = parser.feed(answer, T)
    assert isinstance(events[-1], SyncLost) and "framing rules" in events[-1].detail
    assert not parser.in_sync


def test_boundaries_offsets_and_timestamps():
    parser = FrameParser(True)
    first = masked(0x1, b"a", fin=False)
    ping = masked(0x9, b"p")
    last = masked(0x0, b"b")
    assert parser.at_message_boundary
    assert parser.feed(first[:3], 10.0) == [] and not parser.at_message_boundary
    assert parser.feed(first[3:], 11.0) == [] and not parser.at_message_boundary
    (pong,) = parser.feed(ping, 12.0)
    assert (pong.end, pong.boundary, pong.timestamp) == (len(first + ping), False, 12.0)
    assert not parser.at_message_boundary
    (message,) = parser.feed(last, 13.0)
    assert message.end == parser.offset == len(first + ping + last)
    assert (message.timestamp_start, message.timestamp, message.boundary) == (10.0, 13.0, True)
    assert parser.at_message_boundary
    assert parser.feed(b"", 14.0) == [] and parser.offset == message.end


# --- Sec-WebSocket-Extensions ----------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("permessage-deflate", Deflate()),
    ("PerMessage-Deflate ;Server_No_Context_Takeover", Deflate(server_no_context_takeover=True)),
    ("permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
     Deflate(client_no_context_takeover=True, server_max_window_bits=10)),
    ('permessage-deflate; client_max_window_bits="9"', Deflate(client_max_window_bits=9)),
    ("x-other; a=\"q, ; =\", permessage-deflate; server_max_window_bits=12",
     Deflate(server_max_window_bits=12)),
    (", permessage-deflate ,", Deflate()),
    ("x-webkit-deflate-frame", None),
    ("", None),
    ("permessage-deflate, permessage-deflate", None),
    ("permessage-deflate; client_max_window_bits", None),
    ("permessage-deflate; server_max_window_bits=16", None),
    ("permessage-deflate; server_max_window_bits=7", None),
    ("permessage-deflate; server_max_window_bits=09", None),
    ("permessage-deflate; server_no_context_takeover=1", None),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
    ("permessage-deflate; unknown_param", None),
    ("permessage-deflate=1", None),
    ("permessage-deflate; server_max_window_bits=\"10", None),
    ("permessage-deflate;", None),
    ("permessage-deflate; ; x", None),
    ("permessage-deflate @", None),
])
def test_negotiated_deflate_parses_the_extensions_header(value, expected):
    assert negotiated_deflate([("Sec-WebSocket-Extensions", value)]) == expected


def test_negotiated_deflate_joins_header_lines_and_never_raises():
    assert negotiated_deflate([("Upgrade", "websocket")]) is None
    assert negotiated_deflate([("sec-websocket-extensions", "x-a"),
                               ("Sec-WebSocket-Extensions", "permessage-deflate")]) == Deflate()
    assert negotiated_deflate([("Sec-WebSocket-Extensions", b"permessage-deflate")]) is None
    assert negotiated_deflate(None) is None


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.text(alphabet=' ;,="\\\t' + "abcpermsgdflt_x19", max_size=60),
                st.text(max_size=60)))
def test_negotiated_deflate_never_raises_on_any_value(value):
    result = negotiated_deflate([("Sec-WebSocket-Extensions", value)])
    assert result is None or isinstance(result, Deflate)


# --- no input escapes feed --------------------------------------------------------------------

frame_parts = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda op, payload, fin, mask, rsv: frame(op, payload, fin=fin, mask=mask, rsv=rsv),
              st.integers(0, 15), st.binary(max_size=300), st.booleans(), st.booleans(),
              st.integers(0, 7)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=st.lists(frame_parts, max_size=12), cuts=st.lists(st.integers(1, 64), min_size=1),
       from_client=st.booleans(), deflate=st.sampled_from([None, Deflate(), Deflate(
           client_no_context_takeover=True, server_max_window_bits=9)]),
       cap=st.sampled_from([0, 7, 1 << 20]))
@example(  # a message cut short by a reserved-opcode frame, then a new data frame (seen in CI)
    parts=[b"A\x05\x00\x00\x00\x00\x00", b"\x03\x1c", b"\x00" * 22, b"\x00\x00",
           b"\x00\x00\x00\x00\x01\x00"],
    cuts=[1], from_client=True, deflate=Deflate(), cap=0,
)
def test_feed_never_raises_and_chunking_never_matters(parts, cuts, from_client, deflate, cap):
    data = b"".join(parts)
    whole = FrameParser(from_client, deflate, max_payload=cap).feed(data, T)
    split = FrameParser(from_client, deflate, max_payload=cap)
    events = feed_all(split, data, cuts)
    assert events == whole
    assert split.offset == len(data)
    assert not [e for e in events if isinstance(e, SyncLost) and "parser error" in e.detail]
    # A message cut short by a new data frame is reported late, with its own earlier end, and
    # so are the violations it carries (its compression, its UTF-8): every other end is in order.
    late = {e.end for e in events if isinstance(e, DataMessage) and not e.boundary}
    ends = [e.end for e in events if e.end not in late]
    assert ends == sorted(ends) and all(0 < e.end <= len(data) for e in events)
    for end in {e.end for e in events if e.boundary}:  # where the relay may inject
        prefix = FrameParser(from_client, deflate, max_payload=cap)
        prefix.feed(data[:end], T)
        assert prefix.at_message_boundary


def test_compressed_random_messages_in_random_chunks():
    """Random sizes and contents through a real deflate context, random reads."""
    rng = random.Random(5)
    client, server, headers = websockets_pair([ClientPerMessageDeflateFactory()],
                                              [ServerPerMessageDeflateFactory()])
    deflate = negotiated_deflate(headers)
    for _ in range(40):
        size = rng.choice((0, 10, 1000, 100_000))
        server.send_binary(rng.choice((os.urandom, bytes))(size))
    stream = b"".join(server.data_to_send())
    oracle = websockets_oracle(client, stream)
    events = feed_all(FrameParser(False, deflate), stream,
                      [rng.randint(1, 20_000) for _ in range(100)])
    assert summary(events) == oracle


def test_inflate_failure_reports_no_payload_and_the_next_message_inflates():
    compressor = zlib.compressobj(wbits=-15)
    good = (compressor.compress(b"fresh start") + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    events = FrameParser(False, Deflate()).feed(
        frame(0x1, b"\xff\xff\xff", mask=False, rsv=4) + frame(0x1, good, mask=False, rsv=4), T)
    violation, failed, message = events
    assert violation.rule == wire.INFLATE_FAILED and "3 compressed bytes in 1 frames" in \
        violation.detail
    assert (failed.payload, failed.size, failed.sha256, failed.compressed) == (b"", 0, None, True)
    assert (message.payload, message.compressed) == (b"fresh start", True)
