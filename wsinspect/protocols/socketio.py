"""Engine.IO (the transport) and Socket.IO (the packets it carries).

An Engine.IO text packet is a type digit and data: 0 open, 1 close, 2 ping, 3 pong, 4 message,
5 upgrade, 6 noop. A message packet carries a Socket.IO packet:
`<type>[<attachments>-][<namespace>,][<ack id>][<JSON array>]`, e.g. `42["chat",{…}]`,
`431[…]` (an ack), `451-["upload",{"_placeholder":true,"num":0}]` followed by one binary
WebSocket message per attachment.
"""

from __future__ import annotations

import json
import re

from .parts import Part, loads

ENGINE_IO = "engine.io"
SOCKET_IO = "socket.io"

ENGINE_TYPES = {"0": "open", "1": "close", "2": "ping", "3": "pong", "4": "message",
                "5": "upgrade", "6": "noop"}
SOCKET_TYPES = {"0": "CONNECT", "1": "DISCONNECT", "2": "EVENT", "3": "ACK",
                "4": "CONNECT_ERROR", "5": "BINARY_EVENT", "6": "BINARY_ACK"}

_HEADER = re.compile(r"(?P<type>[0-6])(?:(?P<attachments>\d+)-)?(?P<nsp>/[^,]*,)?(?P<ack>\d+)?")
_decoder = json.JSONDecoder()


def looks_like(text: str) -> bool:
    """An Engine.IO open packet (`0{"sid":…,"pingInterval":…}`) or an upgrade probe."""
    if text in ("2probe", "3probe"):
        return True
    if not text.startswith("0{"):
        return False
    data = loads(text[1:])
    return isinstance(data, dict) and "sid" in data and "pingInterval" in data


def _event_name(body: str) -> str | None:
    """The first element of a (possibly cut short) JSON array, when it is a string."""
    stripped = body.lstrip()
    if not stripped.startswith("["):
        return None
    position = len(body) - len(stripped) + 1
    while position < len(body) and body[position] in " \t\r\n":
        position += 1
    try:
        value, _ = _decoder.raw_decode(body, position)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, str) else None


class Decoder:
    def __init__(self) -> None:
        # per direction (from_client): the part whose binary attachments are still to come,
        # and how many are left
        self._pending: dict[bool, tuple[Part, int, int]] = {}

    def decode(self, payload: bytes, from_client: bool, is_text: bool, truncated: bool):
        if not is_text:
            return [self._attachment(payload, from_client)]
        text = payload.decode("utf-8", errors="replace")
        if not text or text[0] not in ENGINE_TYPES:
            return [Part(ENGINE_IO, "invalid")]
        if text[0] != "4" or len(text) < 2 or text[1] not in SOCKET_TYPES:
            fields = {"data": text[1:]} if len(text) > 1 else {}
            return [Part(ENGINE_IO, ENGINE_TYPES[text[0]], fields=fields)]
        return [self._socket_packet(text[1:], from_client, truncated)]

    def _socket_packet(self, text: str, from_client: bool, truncated: bool) -> Part:
        header = _HEADER.match(text)
        kind = SOCKET_TYPES[header["type"]]
        namespace = header["nsp"][:-1] if header["nsp"] else "/"
        ack = int(header["ack"]) if header["ack"] and len(header["ack"]) < 20 else None
        body = text[header.end():]
        data = loads(body) if body else None
        fields: dict = {"type": kind, "namespace": namespace}
        if ack is not None:
            fields["ack"] = ack
        if data is not None:
            fields["data"] = data
        elif body:
            fields["data (cut short)" if truncated else "data (not JSON)"] = body
        key = (namespace, ack) if ack is not None else None
        if kind in ("EVENT", "BINARY_EVENT"):
            name = data[0] if isinstance(data, list) and data and isinstance(data[0], str) \
                else _event_name(body)
            part = Part(SOCKET_IO, name if name is not None else kind, id=ack, call_key=key,
                        fields=fields)
        elif kind in ("ACK", "BINARY_ACK"):
            part = Part(SOCKET_IO, None, fallback_label=kind, id=ack, answer_key=key,
                        fields=fields)
        else:
            part = Part(SOCKET_IO, kind, fields=fields)
        count = header["attachments"]
        if kind.startswith("BINARY_") and count and len(count) < 6 and int(count) > 0:
            self._pending[from_client] = (part, int(count), 0)
        return part

    def _attachment(self, payload: bytes, from_client: bool) -> Part:
        pending = self._pending.get(from_client)
        if pending is None:
            return Part(ENGINE_IO, "message", fields={"binary": len(payload)})
        owner, count, seen = pending
        seen += 1
        if seen >= count:
            del self._pending[from_client]
        else:
            self._pending[from_client] = (owner, count, seen)
        return Part(SOCKET_IO, owner.shown_label, id=owner.id,
                    fields={"attachment": f"{seen} of {count}", "bytes": len(payload)})
