"""A session's protocol: detected from the handshake (then the content), every message decoded,
calls paired with their answers, and the call statistics."""

from __future__ import annotations

import copy
import heapq
import math
from array import array
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..model import Hop, Message, MessageType, header_tokens
from . import graphql, jsonrpc, mqtt, signalr, socketio, stomp
from .parts import Part

Headers = Sequence[tuple[str, str]]

SUBPROTOCOLS = {
    "graphql-transport-ws": graphql.TRANSPORT_WS,
    "graphql-ws": graphql.LEGACY_WS,
    "stomp": stomp.PROTOCOL, "v10.stomp": stomp.PROTOCOL, "v11.stomp": stomp.PROTOCOL,
    "v12.stomp": stomp.PROTOCOL,
    "mqtt": mqtt.PROTOCOL, "mqttv3.1": mqtt.PROTOCOL, "mqttv3.1.1": mqtt.PROTOCOL,
    "mqttv5": mqtt.PROTOCOL,
    "jsonrpc": jsonrpc.PROTOCOL, "json-rpc": jsonrpc.PROTOCOL, "jsonrpc-2.0": jsonrpc.PROTOCOL,
}
PROTOCOLS = ("socket.io", "engine.io", graphql.TRANSPORT_WS, graphql.LEGACY_WS, stomp.PROTOCOL,
             mqtt.PROTOCOL, signalr.PROTOCOL, jsonrpc.PROTOCOL)
DATA_TYPES = (MessageType.TEXT, MessageType.BINARY)
# Without a protocol named in the handshake, this many data messages are looked at for one
# that tells; a session whose first ones do not is taken as speaking none (and a capture of
# millions of plain messages is not read whole just to find that out).
DETECT_WITHIN = 1000
# The slowest answered calls a SessionDecoder keeps (`stats(slowest)` lists up to this many).
# Only these, the open and the unanswered calls are kept as objects: a session of a million
# calls would otherwise hold a million, and Python's garbage collector walks them all, again
# and again, while the app waits.
SLOWEST_KEPT = 50


def detect_handshake(request_headers: Headers = (), response_headers: Headers = (),
                     url: str | None = None) -> str | None:
    """The protocol the handshake names: the subprotocol the server chose (else the first
    known one the client offered), else a Socket.IO/Engine.IO endpoint's URL."""
    chosen = header_tokens(list(response_headers), "Sec-WebSocket-Protocol")
    offered = header_tokens(list(request_headers), "Sec-WebSocket-Protocol")
    for token in chosen or offered:
        if token in SUBPROTOCOLS:
            return SUBPROTOCOLS[token]
    if url:
        parts = urlsplit(url)
        if "/socket.io/" in parts.path + "/":
            return socketio.SOCKET_IO
        if "/engine.io/" in parts.path + "/" or "EIO=" in parts.query:
            return socketio.ENGINE_IO
    return None


def detect_content(message: Message) -> str | None:
    """The protocol one data message shows itself to be, if it does."""
    if message.type is MessageType.BINARY:
        if mqtt.looks_like(message.payload):
            return mqtt.PROTOCOL
        return stomp.PROTOCOL if stomp.looks_like(message.payload) else None
    if message.type is not MessageType.TEXT:
        return None
    text = message.text()
    if socketio.looks_like(text):
        return socketio.SOCKET_IO
    if signalr.looks_like(text):
        return signalr.PROTOCOL
    if jsonrpc.looks_like(text):
        return jsonrpc.PROTOCOL
    if stomp.looks_like(message.payload):
        return stomp.PROTOCOL
    return graphql.dialect_of(text)


def detect(messages: Iterable[Message], request_headers: Headers = (),
           response_headers: Headers = (), url: str | None = None) -> str | None:
    """The session's protocol: the handshake first, then the first message that tells."""
    found = detect_handshake(request_headers, response_headers, url)
    if found:
        return found
    looked = 0
    for message in messages:
        if message.type not in DATA_TYPES:
            continue
        if (found := detect_content(message)):
            return found
        looked += 1
        if looked >= DETECT_WITHIN:
            return None
    return None


def decoder_for(protocol: str):
    if protocol in (socketio.SOCKET_IO, socketio.ENGINE_IO):
        return socketio.Decoder()
    if protocol in (graphql.TRANSPORT_WS, graphql.LEGACY_WS):
        return graphql.Decoder(protocol)
    return {stomp.PROTOCOL: stomp.Decoder, mqtt.PROTOCOL: mqtt.Decoder,
            signalr.PROTOCOL: signalr.Decoder, jsonrpc.PROTOCOL: jsonrpc.Decoder}[protocol]()


@dataclass(slots=True)
class Decoded:
    """What one WebSocket message is, in its protocol. A message holding several units (a
    JSON-RPC batch, MQTT packets, STOMP frames, SignalR records) joins their labels with ", ";
    `id` is then a list when they carry different ids. `latency` is set on answers: seconds
    since their call (the largest, for several)."""

    protocol: str
    label: str
    operation: str | None = None
    destination: str | None = None
    topic: str | None = None
    id: int | str | list | None = None
    latency: float | None = None
    parts: list[Part] = field(default_factory=list)

    @classmethod
    def of(cls, parts: list[Part]) -> Decoded:
        if len(parts) == 1:  # most messages: the same, without the joining
            part = parts[0]
            return cls(part.protocol, part.shown_label, part.operation or None,
                       part.destination or None, part.topic or None, part.id, part.latency,
                       parts)

        def joined(values) -> str | None:
            distinct = list(dict.fromkeys(v for v in values if v))
            return ", ".join(distinct) if distinct else None

        ids = list(dict.fromkeys(p.id for p in parts if p.id is not None))
        latencies = [p.latency for p in parts if p.latency is not None]
        return cls(
            protocol=parts[0].protocol,
            label=", ".join(p.shown_label for p in parts),
            operation=joined(p.operation for p in parts),
            destination=joined(p.destination for p in parts),
            topic=joined(p.topic for p in parts),
            id=ids[0] if len(ids) == 1 else (ids or None),
            latency=max(latencies) if latencies else None,
            parts=parts,
        )

    @property
    def summary(self) -> str:
        """What the message is, for a list column: the label and its operation, destination
        or topic."""
        detail = self.operation or self.destination or self.topic
        return f"{self.label} {detail}" if detail else self.label

    def to_json(self) -> dict:
        """The fields a JSON line gains: protocol and label always, the others where they
        exist."""
        data: dict = {"protocol": self.protocol, "label": self.label}
        for name in ("operation", "destination", "topic", "id", "latency"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


@dataclass(slots=True)
class Call:
    """A message part that expects an answer, and how it was answered."""

    label: str
    id: int | str | None
    from_client: bool
    index: int  # the message's index in its hop
    timestamp: float
    operation: str | None = None
    destination: str | None = None
    topic: str | None = None
    answer_index: int | None = None
    latency: float | None = None  # seconds to the first answer

    @property
    def answered(self) -> bool:
        return self.answer_index is not None

    def to_json(self) -> dict:
        return {
            "label": self.label, "id": self.id,
            "direction": "client" if self.from_client else "server",
            "index": self.index, "answer_index": self.answer_index, "latency": self.latency,
            "operation": self.operation, "destination": self.destination, "topic": self.topic,
        }


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile: a value that was observed."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(slots=True)
class CallStats:
    protocol: str | None
    calls: int
    answered: int
    unanswered: int
    latency_p50: float | None
    latency_max: float | None
    slowest: list[Call]  # answered calls, slowest first
    unanswered_calls: list[Call]

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol, "calls": self.calls, "answered": self.answered,
            "unanswered": self.unanswered, "latency_p50": self.latency_p50,
            "latency_max": self.latency_max,
            "slowest": [c.to_json() for c in self.slowest],
            "unanswered_calls": [c.to_json() for c in self.unanswered_calls],
        }


class SessionDecoder:
    """Decodes a session's messages in order, one `feed` each, and pairs calls with answers.
    A session whose handshake names no protocol is detected from its content: messages fed
    before one tells are not decoded (`analyse` detects over all messages first)."""

    def __init__(self, request_headers: Headers = (), response_headers: Headers = (),
                 url: str | None = None, protocol: str | None = None) -> None:
        self.protocol = protocol or detect_handshake(request_headers, response_headers, url)
        self._decoder = decoder_for(self.protocol) if self.protocol else None
        self._open: dict[tuple[Hashable, bool], Call] = {}
        self.call_count = 0
        self._latencies = array("d")  # of the answered calls
        self._slowest: list[tuple[float, int, Call]] = []  # a min-heap of SLOWEST_KEPT
        self._unanswered: dict[int, tuple[int, Call]] = {}  # by id(): (its number, it)
        self._position = 0

    def feed(self, message: Message) -> Decoded | None:
        index = message.index if message.index >= 0 else self._position
        self._position += 1
        if message.type not in DATA_TYPES:
            return None
        if self._decoder is None:
            self.protocol = detect_content(message)
            if self.protocol is None:
                return None
            self._decoder = decoder_for(self.protocol)
        parts = self._decoder.decode(message.payload, message.from_client,
                                     message.type is MessageType.TEXT, message.truncated)
        if not parts:  # an empty message
            parts = [Part(self.protocol, "empty")]
        for part in parts:
            self._pair(part, message, index)
        return Decoded.of(parts)

    def unit_state(self):
        """A copy of the protocol decoder's state (attachments awaited, packets begun): with
        it, `decode_from` re-decodes messages from here without the session's pairing."""
        return copy.deepcopy(self._decoder)

    def _pair(self, part: Part, message: Message, index: int) -> None:
        if part.call_key is not None:
            call = Call(part.shown_label, part.id, message.from_client, index, message.timestamp,
                        part.operation, part.destination, part.topic)
            self._open[(part.call_key, message.from_client)] = call
            self._unanswered[id(call)] = (self.call_count, call)
            self.call_count += 1
        if part.answer_key is None:
            return
        key = (part.answer_key, not message.from_client)
        call = self._open.get(key)
        if call is None:
            return
        if part.label is None:
            part.label = call.label
        part.operation = part.operation or call.operation
        part.latency = max(0.0, message.timestamp - call.timestamp)
        if call.answer_index is None:
            call.answer_index, call.latency = index, part.latency
            self._answered(call)
        if part.final:
            del self._open[key]

    def _answered(self, call: Call) -> None:
        number, _ = self._unanswered.pop(id(call))
        self._latencies.append(call.latency)
        # ties: the earlier call ranks slower (as a stable sort would have it)
        entry = (call.latency, -number, call)
        if len(self._slowest) < SLOWEST_KEPT:
            heapq.heappush(self._slowest, entry)
        else:
            heapq.heappushpop(self._slowest, entry)

    def stats(self, slowest: int = 5) -> CallStats:
        latencies = list(self._latencies)
        return CallStats(
            protocol=self.protocol,
            calls=self.call_count,
            answered=len(latencies),
            unanswered=self.call_count - len(latencies),
            latency_p50=percentile(latencies, 0.5),
            latency_max=max(latencies) if latencies else None,
            slowest=[e[-1] for e in sorted(self._slowest, reverse=True)[:slowest]],
            unanswered_calls=[call for _, call in self._unanswered.values()],
        )


@dataclass(slots=True)
class Analysis:
    protocol: str | None
    decoded: list[Decoded | None]  # one per message given, None where nothing was decoded
    stats: CallStats


def decode_from(protocol: str, unit_state, messages: Iterable[Message]) -> list[Part]:
    """The parts of the last data message of `messages`, decoded in order by a copy of
    `unit_state` (from `SessionDecoder.unit_state`, taken before the first of them). Answers
    keep label None: their call's label comes from the session's pairing."""
    unit = copy.deepcopy(unit_state)
    parts: list[Part] = []
    for message in messages:
        if message.type in DATA_TYPES:
            parts = unit.decode(message.payload, message.from_client,
                                message.type is MessageType.TEXT, message.truncated)
            parts = parts or [Part(protocol, "empty")]
    return parts


@dataclass(slots=True)
class ProtocolSummary:
    """A hop's protocol, its messages counted by label, and its call statistics: what
    `report` says of it."""

    protocol: str | None
    labels: Counter
    stats: CallStats

    def to_json(self, listed: int = 5) -> dict:
        stats = self.stats.to_json()
        stats["unanswered_calls"] = stats["unanswered_calls"][:listed]
        stats["slowest"] = stats["slowest"][:listed]
        return {**stats, "labels": dict(self.labels.most_common())}


def summarise(messages: Callable[[], Iterable[Message]], request_headers: Headers = (),
              response_headers: Headers = (), url: str | None = None,
              slowest: int = 5) -> ProtocolSummary:
    """`analyse` without keeping each message's decoding: for sessions of any length.
    `messages` gives the hop's messages from the start each time it is called (detection
    may read some of them first)."""
    protocol = detect(messages(), request_headers, response_headers, url)
    labels: Counter = Counter()
    decoder = SessionDecoder(protocol=protocol)
    if protocol is not None:
        for message in messages():
            if (decoded := decoder.feed(message)) is not None:
                labels.update(part.shown_label for part in decoded.parts)
    return ProtocolSummary(protocol, labels, decoder.stats(slowest))


def analyse(messages: Iterable[Message], request_headers: Headers = (),
            response_headers: Headers = (), url: str | None = None,
            slowest: int = 5) -> Analysis:
    """Decode a whole session: detection over all its messages, then every message."""
    messages = list(messages)
    protocol = detect(messages, request_headers, response_headers, url)
    decoder = SessionDecoder(protocol=protocol)
    decoded = [decoder.feed(m) for m in messages]
    return Analysis(protocol, decoded, decoder.stats(slowest))


def analyse_hop(hop: Hop, messages: Iterable[Message], slowest: int = 5) -> Analysis:
    """`analyse` with the handshake of the hop the messages passed."""
    return analyse(messages, hop.request_headers, hop.response_headers, hop.url, slowest)
