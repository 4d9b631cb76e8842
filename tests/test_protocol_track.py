"""HopTrack, the app's compact decoding of a hop: fed in any steps it says what `analyse`
says of the whole session (labels, protocols, latencies, every decoded field, the calls),
garbage included (hypothesis, bounded in time)."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocol_captures import SOCKET_IO
from wsinspect.model import Hop, Message, MessageType
from wsinspect.protocols import HopTrack, analyse_hop
from wsinspect.protocols.session import DETECT_WITHIN
from wsinspect.protocols.track import CHECKPOINT_EVERY


def hop(url: str = "ws://h/feed", protocol: str | None = None) -> Hop:
    headers = [("Sec-WebSocket-Protocol", protocol)] if protocol else []
    return Hop(mode="regular", url=url, request_line="GET /feed HTTP/1.1",
               http_version="HTTP/1.1", request_headers=headers, response_headers=headers,
               timestamp_start=0.0, response_status=101)


def indexed(items) -> list[Message]:
    messages = []
    for i, (from_client, kind, payload, at) in enumerate(items):
        messages.append(Message(from_client, kind, len(payload), payload, at, index=i))
    return messages


def mqtt_string(text: str) -> bytes:
    return struct.pack(">H", len(text)) + text.encode()


def mqtt_packet(first: int, body: bytes) -> bytes:
    return bytes([first, len(body)]) + body


def socketio_session() -> tuple[Hop, list[Message]]:
    """Socket.IO, long enough to pass several checkpoints."""
    items = list(SOCKET_IO[:3])
    for n in range(CHECKPOINT_EVERY + 50):
        at = 1.0 + n
        items.append((True, MessageType.TEXT, b'42%d["chat",{"n":%d}]' % (n + 10, n), at))
        items.append((True, MessageType.TEXT, b'451-%d["upload",{"_placeholder":true}]'
                      % (n + 10_000), at + 0.1))
        items.append((True, MessageType.BINARY, b"\x00\x01", at + 0.2))
        items.append((False, MessageType.TEXT, b'43%d["ok"]' % (n + 10), at + 0.3))
    return hop("ws://h/socket.io/?EIO=4&transport=websocket"), indexed(items)


def mqtt_session() -> tuple[Hop, list[Message]]:
    """MQTT 3.1.1, detected from its CONNECT; each PUBLISH split over two messages."""
    connect = mqtt_packet(0x10, mqtt_string("MQTT") + bytes([4, 2, 0, 60]) + mqtt_string("c"))
    items = [(True, MessageType.BINARY, connect, 0.0),
             (False, MessageType.BINARY, bytes([0x20, 2, 0, 0]), 0.01)]
    for n in range(CHECKPOINT_EVERY):
        body = mqtt_string(f"t/{n}") + struct.pack(">H", n + 1) + b"x" * (n % 50)
        publish = mqtt_packet(0x32, body)
        items.append((True, MessageType.BINARY, publish[:3], 1.0 + n))
        items.append((True, MessageType.BINARY, publish[3:], 1.0 + n))
        items.append((False, MessageType.BINARY, bytes([0x40, 2]) + struct.pack(">H", n + 1),
                      1.5 + n))
    return hop(), indexed(items)


def jsonrpc_session() -> tuple[Hop, list[Message]]:
    """JSON-RPC with no subprotocol, its first messages telling nothing."""
    items = [(True, MessageType.TEXT, b"hello", 0.0), (False, MessageType.PING, b"", 0.1)]
    for n in range(300):
        items.append((True, MessageType.TEXT,
                      b'{"jsonrpc":"2.0","method":"sum","params":[%d],"id":%d}' % (n, n), n))
        if n % 3:
            items.append((False, MessageType.TEXT, b'{"jsonrpc":"2.0","result":%d,"id":%d}'
                          % (n, n), n + 0.25))
    return hop(), indexed(items)


SESSIONS = {"socket.io": socketio_session(), "mqtt": mqtt_session(),
            "json-rpc": jsonrpc_session()}


def fed(track: HopTrack, messages: list[Message], steps: list[int]) -> None:
    """Feed as the app does: from `position`, in steps of the sizes given (then of 97)."""
    steps = iter(steps)
    while track.wants(len(messages)):
        start = track.position
        track.advance(messages[start:start + next(steps, 97)])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(SESSIONS)),
       steps=st.lists(st.integers(1, 400), max_size=8),
       garbage=st.lists(st.tuples(st.booleans(), st.binary(max_size=40)), max_size=6))
def test_a_track_fed_in_any_steps_says_what_analyse_says(name, steps, garbage):
    the_hop, messages = SESSIONS[name]
    messages = messages + indexed(
        [(c, MessageType.BINARY if name == "mqtt" else MessageType.TEXT, g, 9e3)
         for c, g in garbage])[:len(garbage)]
    for i, message in enumerate(messages):
        message.index = i
    track = HopTrack(the_hop)
    fed(track, messages, steps)
    analysis = analyse_hop(the_hop, messages)
    assert track.protocol == analysis.protocol and track.decoded == len(messages)
    def read(start: int, stop: int) -> list[Message]:
        return messages[start:stop]

    for i, decoded in enumerate(analysis.decoded):
        if decoded is None:
            assert track.summary(i) == "" and track.detail(i, read) is None
            continue
        assert track.label(i) == decoded.label and track.summary(i) == decoded.summary
        assert track.message_protocol(i) == decoded.protocol
        assert track.latency(i) == decoded.latency
        detail = track.detail(i, read)
        assert detail.label == decoded.label and detail.latency == decoded.latency
        assert [p.fields for p in detail.parts] == [p.fields for p in decoded.parts]
        assert detail.topic == decoded.topic and detail.id == decoded.id
    assert track.stats().to_json() == analysis.stats.to_json()


def test_a_glance_names_a_message_before_the_decoding_reaches_it():
    the_hop, messages = SESSIONS["socket.io"]
    track = HopTrack(the_hop)
    assert track.summary(3) is None
    assert [track.glance(m) for m in messages[3:7]] == ["chat", "upload", "message", "ACK"]
    fed(track, messages, [CHECKPOINT_EVERY + 3])
    # past the first messages, a glance decodes from the last saved state
    assert track.glance(messages[-1]) == "ACK" and track.summary(6) == "chat"


def test_a_session_whose_first_messages_tell_nothing_is_given_up_on():
    plain = [(True, MessageType.TEXT, b"plain %d" % i, i) for i in range(DETECT_WITHIN)]
    late = [(True, MessageType.TEXT, b'{"jsonrpc":"2.0","method":"m","id":1}', 1e4)]
    messages = indexed(plain + late)
    track = HopTrack(hop())
    fed(track, messages, [])
    assert track.undetected and track.protocol is None and not track.wants(len(messages))
    assert analyse_hop(hop(), messages).protocol is None
    assert analyse_hop(hop(), messages[1:]).protocol == "json-rpc"
