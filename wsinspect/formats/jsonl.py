"""JSON lines: one message a line, for jq. The fields are documented in README.md
("JSON lines export"); within `wsinspect-jsonl/1` they are only ever added."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import TextIO

from ..model import Message
from ..protocols import Decoded, SessionDecoder, detect
from ..store import SessionStore
from .common import JSONL_FORMAT, OPCODES, ExportedHop


def message_line(item: ExportedHop, message: Message, decoded: Decoded | None = None) -> dict:
    line = {
        "format": JSONL_FORMAT,
        "session": item.session_id,
        "hop": item.position,
        "mode": item.hop.mode,
        "url": item.hop.url,
        "index": message.index,
        "direction": message.direction,
        "type": message.type.value,
        "opcode": OPCODES[message.type],
        "timestamp": message.timestamp,
        "size": message.size,
        "truncated": message.truncated,
        "sha256": message.sha256,
        "injected": message.injected,
        "rtt": message.rtt,
        # held by an intercept rule: what became of it and after how long; null otherwise
        "intercept": None if message.intercept is None
        else {"fate": message.intercept, "held": message.held},
    }
    try:
        line["text"] = message.payload.decode("utf-8") if message.type.value == "text" else None
    except UnicodeDecodeError:
        line["text"] = None
    line["base64"] = (
        base64.b64encode(message.payload).decode("ascii") if line["text"] is None else None
    )
    if message.type.value == "close":
        line["close_code"], line["close_reason"] = message.close_code_reason()
    # What the message is in its application protocol: protocol and label (null when it is in
    # none), and operation, destination, topic, id and latency where they exist.
    line.update(decoded.to_json() if decoded else {"protocol": None, "label": None})
    return line


def write_jsonl(store: SessionStore, hops: Iterable[ExportedHop], out: TextIO) -> None:
    for item in hops:
        hop = item.hop
        protocol = detect(store.iter_messages(hop.id), hop.request_headers,
                          hop.response_headers, hop.url)
        decoder = SessionDecoder(protocol=protocol) if protocol else None
        for message in store.iter_messages(hop.id):
            decoded = decoder.feed(message) if decoder else None
            out.write(json.dumps(message_line(item, message, decoded), ensure_ascii=False)
                      + "\n")
