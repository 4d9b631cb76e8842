"""GraphQL over WebSocket, both dialects.

`graphql-transport-ws` (the graphql-ws library): connection_init/ack, ping/pong,
subscribe → next… → complete (or error), keyed by id.
`graphql-ws` (the legacy subscriptions-transport-ws): connection_init/ack/error, ka,
start → data… → complete (or error), stop, connection_terminate.
Labels are the message types as on the wire.
"""

from __future__ import annotations

import re

from .parts import Part, json_prefix_fields, loads, scalar_id

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"

_CALLS = {TRANSPORT_WS: {"subscribe"}, LEGACY_WS: {"start"}}
_STREAM = {TRANSPORT_WS: {"next"}, LEGACY_WS: {"data"}}
_ENDS = {"complete", "error"}
ONLY_TRANSPORT = {"subscribe", "next", "ping", "pong"}
ONLY_LEGACY = {"start", "data", "stop", "ka", "connection_terminate", "connection_error"}

_OPERATION = re.compile(r"\b(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)")


def dialect_of(text: str) -> str | None:
    """Which dialect a message's type belongs to only, if any."""
    if '"type"' not in text:  # the key as GraphQL peers write it: no need to parse
        return None
    data = loads(text)
    kind = data.get("type") if isinstance(data, dict) else None
    if kind in ONLY_TRANSPORT:
        return TRANSPORT_WS
    if kind in ONLY_LEGACY:
        return LEGACY_WS
    return None


def operation_name(payload) -> str | None:
    """operationName, else the name of the first named operation in the query."""
    if not isinstance(payload, dict):
        return None
    name = payload.get("operationName")
    if isinstance(name, str) and name:
        return name
    query = payload.get("query")
    match = _OPERATION.search(query) if isinstance(query, str) else None
    return match[1] if match else None


class Decoder:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def decode(self, payload: bytes, from_client: bool, is_text: bool, truncated: bool):
        text = payload.decode("utf-8", errors="replace")
        data = loads(text)
        if not isinstance(data, dict):
            if not truncated:
                return [Part(self.dialect, "invalid")]
            data = json_prefix_fields(text)
            operation = data.get("operationName")
        else:
            operation = operation_name(data.get("payload"))
        kind = data.get("type")
        if not isinstance(kind, str):
            return [Part(self.dialect, "invalid")]
        call_id = scalar_id(data.get("id"))
        key = call_id if call_id is not None else None
        fields = {k: v for k, v in data.items() if k != "type"}
        if kind in _CALLS[self.dialect] and from_client:
            return [Part(self.dialect, kind, operation=operation if isinstance(operation, str)
                         else None, id=call_id, call_key=key, fields=fields)]
        if (kind in _STREAM[self.dialect] or kind in _ENDS) and not from_client:
            return [Part(self.dialect, kind, id=call_id, answer_key=key,
                         final=kind in _ENDS, fields=fields)]
        return [Part(self.dialect, kind, id=call_id, fields=fields)]
