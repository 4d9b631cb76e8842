"""Application protocols, decoder by decoder: labels as the issue specifies them, pairing and
latency, capped payloads, and garbage (hypothesis, bounded in time) that never crashes."""

from __future__ import annotations

import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsinspect.model import Message, MessageType
from wsinspect.protocols import PROTOCOLS, SessionDecoder, analyse, detect, detect_handshake
from wsinspect.protocols.session import decoder_for


def text(from_client: bool, payload: str | bytes, at: float, size: int | None = None) -> Message:
    data = payload.encode() if isinstance(payload, str) else payload
    return Message(from_client, MessageType.TEXT, size or len(data), data, at)


def binary(from_client: bool, payload: bytes, at: float) -> Message:
    return Message(from_client, MessageType.BINARY, len(payload), payload, at)


def labels(analysis) -> list[str | None]:
    return [d.label if d else None for d in analysis.decoded]


def test_detection_prefers_the_subprotocol_the_server_chose():
    offered = [("Sec-WebSocket-Protocol", "v10.stomp, v11.stomp, v12.stomp")]
    assert detect_handshake(offered) == "stomp"
    chosen = [("sec-websocket-protocol", "MQTT")]
    assert detect_handshake([("Sec-WebSocket-Protocol", "mqtt, chat")], chosen) == "mqtt"
    assert detect_handshake([("Sec-WebSocket-Protocol", "graphql-ws")]) == "graphql-ws"
    offered = [("Sec-WebSocket-Protocol", "chat, graphql-transport-ws")]
    assert detect_handshake(offered) == "graphql-transport-ws"
    assert detect_handshake(url="ws://h/socket.io/?EIO=4&transport=websocket") == "socket.io"
    assert detect_handshake([("Sec-WebSocket-Protocol", "chat")]) is None


def test_detection_from_content():
    cases = {
        "socket.io": [text(False, '0{"sid":"s","upgrades":[],"pingInterval":2,"pingTimeout":5}',
                           1)],
        "signalr": [text(True, '{"protocol":"json","version":1}\x1e', 1)],
        "json-rpc": [text(True, '{"jsonrpc":"2.0","method":"sum","params":[1],"id":1}', 1)],
        "stomp": [text(True, "CONNECT\naccept-version:1.2\nhost:h\n\n\0", 1)],
        "mqtt": [binary(True, bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0]), 1)],
        "graphql-transport-ws": [text(True, '{"type":"connection_init"}', 1),
                                 text(True, '{"id":"1","type":"subscribe","payload":{}}', 2)],
        "graphql-ws": [text(True, '{"type":"connection_init"}', 1),
                       text(False, '{"type":"ka"}', 2)],
    }
    for protocol, messages in cases.items():
        assert detect(messages) == protocol
    assert detect([text(True, "hello", 1), binary(True, b"\x00\x01", 2)]) is None


def test_socketio_labels_acks_namespaces_and_binary_attachments():
    messages = [
        text(False, '0{"sid":"e","upgrades":[],"pingInterval":25000,"pingTimeout":20000}', 0.0),
        text(True, "40/admin,", 0.1),
        text(False, '40/admin,{"sid":"n"}', 0.2),
        text(True, '42/admin,12["chat",{"text":"hi"}]', 1.0),
        text(False, '43/admin,12["stored"]', 1.25),
        text(True, '451-["upload",{"_placeholder":true,"num":0}]', 2.0),
        binary(True, b"\x00\xffpicture", 2.1),
        text(False, "2", 3.0), text(True, "3", 3.01), text(False, "6", 3.1),
        text(True, "5", 3.2),
        text(False, '44/admin,{"message":"not allowed"}', 4.0),
        text(True, "41/admin,", 5.0),
        text(False, '42["news",1]', 5.5),
    ]
    analysis = analyse(messages)
    assert analysis.protocol == "socket.io"
    assert labels(analysis) == ["open", "CONNECT", "CONNECT", "chat", "chat", "upload", "upload",
                                "ping", "pong", "noop", "upgrade", "CONNECT_ERROR",
                                "DISCONNECT", "news"]
    protocols = [d.protocol for d in analysis.decoded]
    assert protocols[0] == "engine.io" and protocols[7:11] == ["engine.io"] * 4
    assert protocols[1] == protocols[6] == "socket.io"
    call, answer = analysis.decoded[3], analysis.decoded[4]
    assert call.id == answer.id == 12 and call.parts[0].fields["namespace"] == "/admin"
    assert answer.latency == 0.25 and call.latency is None
    assert analysis.stats.calls == 1 and analysis.stats.answered == 1
    assert analysis.stats.slowest[0].label == "chat" and analysis.stats.slowest[0].answer_index == 4


def test_jsonrpc_methods_ids_batches_and_unanswered_calls():
    messages = [
        text(True, '{"jsonrpc":"2.0","method":"sum","params":[1,2],"id":1}', 0.0),
        text(True, '{"jsonrpc":"2.0","method":"notify","params":{}}', 0.1),
        text(True, '{"jsonrpc":"2.0","method":"sum","params":[3],"id":"1"}', 0.2),
        text(False, '{"jsonrpc":"2.0","result":3,"id":1}', 0.5),
        text(True, '[{"jsonrpc":"2.0","method":"a","id":7},'
                   '{"jsonrpc":"2.0","method":"b","id":8}]', 1.0),
        text(False, '[{"jsonrpc":"2.0","result":1,"id":8},'
                    '{"jsonrpc":"2.0","error":{"code":1},"id":7}]', 3.0),
        text(False, '{"jsonrpc":"2.0","result":0,"id":99}', 4.0),
    ]
    analysis = analyse(messages)
    assert labels(analysis) == ["sum", "notify", "sum", "sum", "a, b", "b, a", "result"]
    assert analysis.decoded[3].latency == 0.5 and analysis.decoded[3].id == 1
    assert analysis.decoded[4].id == [7, 8] and analysis.decoded[5].latency == 2.0
    stats = analysis.stats
    assert (stats.calls, stats.answered, stats.unanswered) == (4, 3, 1)
    assert stats.unanswered_calls[0].id == "1"  # the string id "1" is not the number 1
    assert [c.label for c in stats.slowest] == ["a", "b", "sum"]
    assert stats.latency_max == 2.0 and stats.latency_p50 == 2.0


def test_graphql_transport_ws_pairs_subscribe_with_next_and_complete():
    subscribe = {"id": "s1", "type": "subscribe",
                 "payload": {"query": "subscription Ticks { tick }", "variables": {}}}
    messages = [
        text(True, '{"type":"connection_init"}', 0.0),
        text(False, '{"type":"connection_ack"}', 0.1),
        text(True, json.dumps(subscribe), 1.0),
        text(False, '{"id":"s1","type":"next","payload":{"data":{"tick":1}}}', 1.5),
        text(False, '{"id":"s1","type":"next","payload":{"data":{"tick":2}}}', 2.0),
        text(False, '{"id":"s1","type":"complete"}', 2.5),
        text(True, '{"type":"ping"}', 3.0), text(False, '{"type":"pong"}', 3.1),
    ]
    analysis = analyse(messages, [("Sec-WebSocket-Protocol", "graphql-transport-ws")])
    assert labels(analysis) == ["connection_init", "connection_ack", "subscribe", "next", "next",
                                "complete", "ping", "pong"]
    assert [d.operation for d in analysis.decoded[2:6]] == ["Ticks"] * 4
    assert [d.latency for d in analysis.decoded[3:6]] == [0.5, 1.0, 1.5]
    assert analysis.stats.calls == 1 and analysis.stats.slowest[0].latency == 0.5


def test_legacy_graphql_ws_keeps_its_labels():
    messages = [
        text(True, '{"type":"connection_init","payload":{}}', 0.0),
        text(False, '{"type":"connection_ack"}', 0.1), text(False, '{"type":"ka"}', 0.2),
        text(True, '{"id":"1","type":"start","payload":{"query":"subscription { t }",'
                   '"operationName":"OnT"}}', 1.0),
        text(False, '{"id":"1","type":"data","payload":{"data":{"t":1}}}', 1.25),
        text(True, '{"id":"1","type":"stop"}', 2.0),
        text(False, '{"id":"1","type":"complete"}', 2.1),
    ]
    analysis = analyse(messages, [("Sec-WebSocket-Protocol", "graphql-ws")])
    assert analysis.protocol == "graphql-ws"
    assert labels(analysis) == ["connection_init", "connection_ack", "ka", "start", "data",
                                "stop", "complete"]
    assert analysis.decoded[4].operation == "OnT" and analysis.decoded[4].latency == 0.25


def test_stomp_commands_destinations_receipts_and_heartbeats():
    messages = [
        text(True, "STOMP\naccept-version:1.2\nhost:/\n\n\0", 0.0),
        text(False, "CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0", 0.1),
        text(True, "SUBSCRIBE\nid:0\ndestination:/queue/a\nreceipt:r-1\n\n\0", 1.0),
        text(False, "RECEIPT\nreceipt-id:r-1\n\n\0", 1.25),
        text(True, "SEND\ndestination:/queue/a\ncontent-length:5\n\nhe\0lo\0", 2.0),
        text(False, "MESSAGE\ndestination:/queue/a\nmessage-id:1\nsubscription:0\n\nhi\0", 2.1),
        text(True, "\n", 2.5),
        text(True, "SEND\ndestination:/queue/b\nreceipt:r-2\n\nx\0", 3.0),
        text(False, "ERROR\nreceipt-id:r-2\nmessage:no\n\n\0", 3.5),
    ]
    analysis = analyse(messages)
    assert analysis.protocol == "stomp"
    assert labels(analysis) == ["STOMP", "CONNECTED", "SUBSCRIBE", "RECEIPT", "SEND", "MESSAGE",
                                "heartbeat", "SEND", "ERROR"]
    assert analysis.decoded[4].parts[0].fields["body"] == "he\0lo"
    assert analysis.decoded[5].summary == "MESSAGE /queue/a"
    assert analysis.decoded[3].id == "r-1" and analysis.decoded[3].latency == 0.25
    assert [c.latency for c in analysis.stats.slowest] == [0.5, 0.25]


def mqtt_string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def mqtt_packet(kind: int, flags: int, body: bytes) -> bytes:
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return bytes([kind << 4 | flags]) + encoded + body


def test_mqtt_packets_topics_and_packet_ids_v311_and_v5():
    connect = mqtt_packet(1, 0, mqtt_string("MQTT") + bytes([4, 2, 0, 60]) + mqtt_string("c"))
    publish = mqtt_packet(3, 0b0010, mqtt_string("a/b") + struct.pack("!H", 5) + b"x" * 200)
    subscribe = mqtt_packet(8, 2, struct.pack("!H", 6) + mqtt_string("a/#") + b"\x01"
                            + mqtt_string("c") + b"\x00")
    messages = [
        binary(True, connect, 0.0), binary(False, mqtt_packet(2, 0, b"\x00\x00"), 0.1),
        binary(True, subscribe, 1.0),
        binary(False, mqtt_packet(9, 0, struct.pack("!H", 6) + b"\x01\x00"), 1.1),
        binary(True, publish[:50], 1.75), binary(True, publish[50:], 2.0),  # split over two
        binary(False, mqtt_packet(4, 0, struct.pack("!H", 5)), 2.5),
        binary(True, mqtt_packet(12, 0, b"") + mqtt_packet(14, 0, b""), 3.0),
    ]
    analysis = analyse(messages)
    assert analysis.protocol == "mqtt"
    assert labels(analysis) == ["CONNECT", "CONNACK", "SUBSCRIBE", "SUBACK", "continued",
                                "PUBLISH", "PUBACK", "PINGREQ, DISCONNECT"]
    assert analysis.decoded[2].topic == "a/#, c" and analysis.decoded[5].topic == "a/b"
    assert analysis.decoded[6].id == 5 and analysis.decoded[6].latency == 0.5
    # MQTT 5: properties after the packet id; a topic alias stands for its topic
    connect5 = mqtt_packet(1, 0, mqtt_string("MQTT") + bytes([5, 2, 0, 60, 0]) + mqtt_string("c"))
    first = mqtt_packet(3, 2, mqtt_string("t/1") + struct.pack("!H", 1) + b"\x03\x23\x00\x07"
                        + b"one")
    aliased = mqtt_packet(3, 2, mqtt_string("") + struct.pack("!H", 2) + b"\x03\x23\x00\x07"
                          + b"two")
    ack = mqtt_packet(4, 0, struct.pack("!H", 2) + b"\x00\x00")
    v5 = analyse([binary(True, connect5, 0), binary(True, first, 1), binary(True, aliased, 2),
                  binary(False, ack, 2.25)])
    assert [d.topic for d in v5.decoded] == [None, "t/1", "t/1", None]
    assert v5.decoded[0].parts[0].fields["version"] == "5"
    assert v5.decoded[3].latency == 0.25 and v5.decoded[2].parts[0].fields["payload"] == "two"


def test_signalr_records_invocations_and_completions():
    messages = [
        text(True, '{"protocol":"json","version":1}\x1e', 0.0),
        text(False, "{}\x1e", 0.1),
        text(True, '{"type":1,"target":"Send","arguments":["hi"],"invocationId":"0"}\x1e', 1.0),
        text(False, '{"type":1,"target":"Receive","arguments":["hi"]}\x1e'
                    '{"type":3,"invocationId":"0","result":null}\x1e', 1.375),
        text(False, '{"type":6}\x1e', 2.0),
        text(True, '{"type":4,"target":"Counter","arguments":[2],"invocationId":"1"}\x1e', 3.0),
        text(False, '{"type":2,"invocationId":"1","item":0}\x1e', 3.5),
        text(False, '{"type":3,"invocationId":"1"}\x1e', 4.0),
        text(True, '{"type":7}\x1e', 5.0),
    ]
    analysis = analyse(messages)
    assert analysis.protocol == "signalr"
    assert labels(analysis) == ["handshake", "handshake", "Send", "Receive, Send", "Ping",
                                "Counter", "Counter", "Counter", "Close"]
    assert analysis.decoded[3].id == "0" and analysis.decoded[3].latency == 0.375
    assert analysis.stats.calls == 2 and analysis.stats.latency_max == 0.5


def test_capped_payloads_decode_what_is_there():
    cut = text(True, '{"jsonrpc":"2.0","id":4,"method":"upload","params":["AAAA', 0, size=10_000)
    assert cut.truncated
    decoded = SessionDecoder(protocol="json-rpc").feed(cut)
    assert decoded.label == "upload" and decoded.id == 4
    socket = SessionDecoder(protocol="socket.io").feed(
        text(True, '42["big",{"blob":"xxxx', 0, size=10_000))
    assert socket.label == "big"
    graph = SessionDecoder(protocol="graphql-transport-ws").feed(
        text(True, '{"id":"9","type":"subscribe","payload":{"operationName":"Q","query":"',
             0, size=10_000))
    assert (graph.label, graph.operation, graph.id) == ("subscribe", "Q", "9")


def test_control_frames_and_undetected_sessions_are_not_decoded():
    decoder = SessionDecoder()
    assert decoder.feed(Message(True, MessageType.PING, 0, b"", 0)) is None
    assert decoder.feed(text(True, "plain text", 1)) is None
    assert decoder.protocol is None
    assert decoder.feed(text(True, '{"jsonrpc":"2.0","method":"m","id":1}', 2)).label == "m"
    assert decoder.protocol == "json-rpc"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
JSON_MESSAGES = st.dictionaries(
    st.sampled_from(["type", "id", "method", "jsonrpc", "result", "error", "payload", "target",
                     "invocationId", "protocol", "version", "params"]),
    JSON_VALUES | st.sampled_from(["2.0", "subscribe", "next", "start", "data", 1, 3, "1"]),
    max_size=5,
)
GARBAGE = st.lists(
    st.tuples(st.booleans(), st.booleans(),
              st.one_of(st.binary(max_size=64),
                        JSON_MESSAGES.map(lambda d: json.dumps(d).encode()),
                        st.lists(JSON_MESSAGES, max_size=3).map(lambda d: json.dumps(d).encode()),
                        JSON_MESSAGES.map(lambda d: (json.dumps(d) + "\x1e").encode()),
                        st.builds(lambda a, b: f"4{a}{b}".encode(), st.sampled_from("0123456"),
                                  JSON_MESSAGES.map(json.dumps)),
                        st.text(max_size=64).map(str.encode),
                        st.sampled_from([b"42", b"451-", b"4", b"43/x,1", b"{\"type\":3}\x1e",
                                         b"CONNECT\n", b"\x10\xff\xff\xff\xff", b"\x30\x02\x00",
                                         b"[]", b"{\"jsonrpc\":\"2.0\",\"id\":[]}",
                                         b"SEND\ncontent-length:99\n\n", b"\x82\x01"]))),
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(protocol=st.sampled_from(PROTOCOLS), frames=GARBAGE, cap=st.integers(0, 70))
def test_no_decoder_crashes_on_garbage(protocol, frames, cap):
    decoder = SessionDecoder(protocol=protocol)
    for at, (from_client, is_text, payload) in enumerate(frames):
        kind = MessageType.TEXT if is_text else MessageType.BINARY
        shown = payload[:cap]  # a capped prefix when cap is shorter
        decoded = decoder.feed(Message(from_client, kind, len(payload), shown, float(at)))
        assert decoded is not None and isinstance(decoded.label, str)
        json.dumps(decoded.to_json())
        json.dumps([p.fields for p in decoded.parts], default=str)
    json.dumps(decoder.stats().to_json())
    assert decoder_for(protocol) is not None
