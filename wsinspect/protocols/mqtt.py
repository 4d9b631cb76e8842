"""MQTT 3.1, 3.1.1 and 5 control packets carried in binary WebSocket messages.

A message may hold several packets, or part of one (the rest comes in the next message from
the same side). Calls and answers pair on packet ids: PUBLISH (QoS 1) → PUBACK, PUBLISH
(QoS 2) → PUBREC, PUBREL → PUBCOMP, SUBSCRIBE → SUBACK, UNSUBSCRIBE → UNSUBACK."""

from __future__ import annotations

from .parts import Part

PROTOCOL = "mqtt"

TYPES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
         7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}
# answer type -> the call type it answers
ANSWERS = {"PUBACK": "PUBLISH", "PUBREC": "PUBLISH", "PUBCOMP": "PUBREL", "SUBACK": "SUBSCRIBE",
           "UNSUBACK": "UNSUBSCRIBE"}
WITH_ID = {"PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE",
           "UNSUBACK"}
VERSIONS = {3: "3.1", 4: "3.1.1", 5: "5"}

# MQTT 5 property identifiers by the kind of value that follows
_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_TWO = {0x13, 0x21, 0x22, 0x23}
_FOUR = {0x02, 0x11, 0x18, 0x27}
_STRING = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BINARY = {0x09, 0x16}
_VARINT = {0x0B}
_PAIR = {0x26}
TOPIC_ALIAS = 0x23


class Truncated(Exception):
    """The packet ends before its fields do."""


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def take(self, count: int) -> bytes:
        if self.position + count > len(self.data):
            raise Truncated
        chunk = self.data[self.position:self.position + count]
        self.position += count
        return chunk

    def integer(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def varint(self) -> int:
        value = 0
        for shift in range(0, 28, 7):
            byte = self.integer(1)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise Truncated

    def string(self) -> str:
        return self.take(self.integer(2)).decode("utf-8", errors="replace")

    def properties(self) -> dict[int, object]:
        found: dict[int, object] = {}
        inner = Reader(self.take(self.varint()))
        while inner.position < len(inner.data):
            ident = inner.varint()
            if ident in _BYTE:
                value = inner.integer(1)
            elif ident in _TWO:
                value = inner.integer(2)
            elif ident in _FOUR:
                value = inner.integer(4)
            elif ident in _STRING:
                value = inner.string()
            elif ident in _BINARY:
                value = inner.take(inner.integer(2)).hex()
            elif ident in _VARINT:
                value = inner.varint()
            elif ident in _PAIR:
                value = (inner.string(), inner.string())
            else:
                raise Truncated
            found.setdefault(ident, value)
        return found

    @property
    def rest(self) -> bytes:
        return self.data[self.position:]


def split_packet(data: bytes) -> tuple[int, int] | None:
    """(header length, remaining length) of the packet starting `data`, None if the fixed
    header is not complete."""
    reader = Reader(data)
    try:
        reader.take(1)
        remaining = reader.varint()
    except Truncated:
        return None
    return reader.position, remaining


def looks_like(payload: bytes) -> bool:
    """A CONNECT packet naming the MQTT protocol."""
    if not payload or payload[0] != 0x10:
        return False
    sizes = split_packet(payload)
    if sizes is None:
        return False
    try:
        return Reader(payload[sizes[0]:]).string() in ("MQTT", "MQIsdp")
    except Truncated:
        return False


class Decoder:
    def __init__(self) -> None:
        self.level = 4  # the protocol level from CONNECT; 3.1.1 until seen
        self._carry: dict[bool, bytes] = {}  # per side, a packet begun but not ended
        self._aliases: dict[bool, dict[int, str]] = {True: {}, False: {}}

    def decode(self, payload: bytes, from_client: bool, is_text: bool, truncated: bool):
        data = self._carry.pop(from_client, b"") + payload
        parts: list[Part] = []
        while data:
            sizes = split_packet(data)
            end = sizes[0] + sizes[1] if sizes else None
            if end is None or end > len(data):
                if truncated or len(data) > 1 << 28:
                    parts.append(self._packet(data, from_client, cut_short=True))
                else:
                    self._carry[from_client] = data
                    if not parts:
                        parts.append(Part(PROTOCOL, "continued", fields={"bytes": len(data)}))
                break
            parts.append(self._packet(data[:end], from_client, cut_short=False))
            data = data[end:]
        return parts

    def _packet(self, packet: bytes, from_client: bool, cut_short: bool) -> Part:
        kind = TYPES.get(packet[0] >> 4)
        if kind is None:
            return Part(PROTOCOL, "invalid", fields={"first byte": packet[0]})
        part = Part(PROTOCOL, kind, fields={"flags": packet[0] & 0x0F})
        if cut_short:
            part.fields["cut short"] = True
        sizes = split_packet(packet)
        reader = Reader(packet[sizes[0]:] if sizes else b"")
        try:
            self._fields(kind, packet[0] & 0x0F, reader, part, from_client)
        except Truncated:
            part.fields["incomplete"] = True
        return part

    def _fields(self, kind: str, flags: int, reader: Reader, part: Part, from_client: bool):
        v5 = self.level == 5
        fields = part.fields
        if kind == "CONNECT":
            fields["protocol"] = reader.string()
            self.level = reader.integer(1)
            fields["version"] = VERSIONS.get(self.level, str(self.level))
            connect_flags = reader.integer(1)
            fields["keep alive"] = reader.integer(2)
            if self.level == 5:
                fields["properties"] = reader.properties()
            fields["client id"] = reader.string()
            fields["clean start"] = bool(connect_flags & 0x02)
            return
        if kind == "PUBLISH":
            qos = (flags >> 1) & 0x03
            fields.update(qos=qos, retain=bool(flags & 0x01), dup=bool(flags & 0x08))
            topic = reader.string()
            part.topic = topic
            if qos:
                part.id = reader.integer(2)
                part.call_key = ("PUBLISH", part.id)
            if v5:
                properties = reader.properties()
                fields["properties"] = properties
                alias = properties.get(TOPIC_ALIAS)
                if isinstance(alias, int):
                    aliases = self._aliases[from_client]
                    if topic:
                        aliases[alias] = topic
                    else:
                        part.topic = aliases.get(alias, "")
            fields["payload"] = reader.rest.decode("utf-8", errors="replace")
            return
        if kind in WITH_ID:
            part.id = reader.integer(2)
            if kind in ANSWERS:
                part.answer_key = (ANSWERS[kind], part.id)
            else:  # a call: PUBREL, SUBSCRIBE, UNSUBSCRIBE
                part.call_key = (kind, part.id)
            if kind in ("SUBSCRIBE", "UNSUBSCRIBE"):
                if v5:
                    fields["properties"] = reader.properties()
                topics = []
                while reader.rest:
                    topics.append(reader.string())
                    if kind == "SUBSCRIBE":
                        reader.integer(1)  # subscription options
                part.topic = ", ".join(topics)
            elif kind in ("SUBACK", "UNSUBACK"):
                if v5:
                    fields["properties"] = reader.properties()
                fields["reason codes"] = list(reader.rest)
            elif v5 and reader.rest:
                fields["reason code"] = reader.integer(1)
            return
        if kind == "CONNACK":
            fields["session present"] = bool(reader.integer(1) & 0x01)
            fields["reason code"] = reader.integer(1)
