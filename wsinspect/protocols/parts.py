"""What a decoder says about one protocol unit (a packet, a frame, a record) of a message."""

from __future__ import annotations

import json
import re
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Part:
    """One protocol unit found in a WebSocket message.

    `label` None means "the label of the call this answers" (a JSON-RPC response, a Socket.IO
    ack); `fallback_label` is used when that call was not seen. `call_key` marks a call and
    `answer_key` an answer: the session pairs an answer with the open call of the same key sent
    by the other side. `final` is False for answers that leave their call open (a GraphQL
    `next`, a SignalR stream item)."""

    protocol: str
    label: str | None
    fallback_label: str = ""
    operation: str | None = None
    destination: str | None = None
    topic: str | None = None
    id: int | str | None = None
    call_key: Hashable | None = None
    answer_key: Hashable | None = None
    final: bool = True
    fields: dict = field(default_factory=dict)  # the decoded view
    latency: float | None = None

    @property
    def shown_label(self) -> str:
        return self.label if self.label is not None else self.fallback_label


_JSON_PREFIX_FIELD = re.compile(r'"([A-Za-z_]+)"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)')


def json_prefix_fields(text: str) -> dict[str, str | int]:
    """Scalar "key": value pairs readable in a JSON text cut short (a capped payload): the
    first occurrence of each key wins, nested or not."""
    found: dict[str, str | int] = {}
    for match in _JSON_PREFIX_FIELD.finditer(text):
        key, raw = match.groups()
        if key not in found:
            try:
                found[key] = json.loads(raw)
            except ValueError:
                continue
    return found


def loads(text: str):
    """JSON, or None when the text is not JSON (garbage, or cut short)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def scalar_id(value) -> int | str | None:
    """A call id as it can be paired: JSON numbers and strings; anything else is no id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, str)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
