"""The SignalR JSON hub protocol: JSON records each ended by 0x1e, several per message
possible. The first record each way is the handshake; then records carry a numeric `type`:
Invocation (1) and StreamInvocation (4) are calls when they have an invocationId, answered by
StreamItem (2) and Completion (3)."""

from __future__ import annotations

from .parts import Part, json_prefix_fields, loads, scalar_id

PROTOCOL = "signalr"
SEPARATOR = "\x1e"
TYPES = {1: "Invocation", 2: "StreamItem", 3: "Completion", 4: "StreamInvocation",
         5: "CancelInvocation", 6: "Ping", 7: "Close", 8: "Ack", 9: "Sequence"}


def looks_like(text: str) -> bool:
    """The client's handshake: `{"protocol":"json","version":1}` ended by 0x1e."""
    if not text.endswith(SEPARATOR):
        return False
    data = loads(text.split(SEPARATOR, 1)[0])
    return isinstance(data, dict) and "protocol" in data and "version" in data


class Decoder:
    def __init__(self) -> None:
        self._handshaken: set[bool] = set()  # the sides whose handshake has passed

    def decode(self, payload: bytes, from_client: bool, is_text: bool, truncated: bool):
        text = payload.decode("utf-8", errors="replace")
        records = text.split(SEPARATOR)
        if records[-1] == "":
            records.pop()  # the separator ends the last record
        parts = [self._record(r, from_client, truncated and i == len(records) - 1)
                 for i, r in enumerate(records)]
        return parts or [Part(PROTOCOL, "invalid")]

    def _record(self, text: str, from_client: bool, cut_short: bool) -> Part:
        data = loads(text)
        if data is None and cut_short:
            data = json_prefix_fields(text)
        if not isinstance(data, dict):
            return Part(PROTOCOL, "invalid")
        if from_client not in self._handshaken:
            self._handshaken.add(from_client)
            return Part(PROTOCOL, "handshake", fields=data)
        kind = TYPES.get(data.get("type")) if isinstance(data.get("type"), int) else None
        if kind is None:
            return Part(PROTOCOL, "invalid", fields=data)
        call_id = scalar_id(data.get("invocationId"))
        key = call_id if call_id is not None else None
        if kind in ("Invocation", "StreamInvocation"):
            target = data.get("target")
            return Part(PROTOCOL, target if isinstance(target, str) else kind, id=call_id,
                        call_key=key, fields=data)
        if kind in ("StreamItem", "Completion"):
            return Part(PROTOCOL, None, fallback_label=kind, id=call_id, answer_key=key,
                        final=kind == "Completion", fields=data)
        return Part(PROTOCOL, kind, id=call_id, fields=data)
