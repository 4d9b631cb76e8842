"""What the readers and writers share: filling a store the way the recorder does, choosing
what to export, WebSocket opcodes, and reading a wsinspect capture itself."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..model import Hop, Message, MessageStats, MessageType, RecordError
from ..store import SessionStore
from .redact import redact_hop

OPCODES = {
    MessageType.TEXT: 1,
    MessageType.BINARY: 2,
    MessageType.CLOSE: 8,
    MessageType.PING: 9,
    MessageType.PONG: 10,
}
TYPES_BY_OPCODE = {opcode: kind for kind, opcode in OPCODES.items()}
JSONL_FORMAT = "wsinspect-jsonl/1"  # each line of a JSON lines export says so


def read_capture(path: Path, fo: BinaryIO) -> SessionStore:
    """A wsinspect capture, read where it is (`fo` is the file as sniffed)."""
    return SessionStore.open(path)


def hop_record(item: ExportedHop) -> dict:
    """What a format cannot say in its own fields, for wsinspect to read back: the hop's JSON
    without what the format holds anyway (headers) or the store assigns (ids, stats)."""
    record = item.hop.to_json()
    for key in ("id", "session_id", "stats", "request_headers", "response_headers"):
        del record[key]
    return {**record, "session": item.session_id, "hop": item.position}


def hop_from_record(
    record: dict,
    request_headers: list[tuple[str, str]],
    response_headers: list[tuple[str, str]],
) -> Hop:
    if type(record) is not dict:
        raise RecordError("wsinspect's hop record is not an object")
    return Hop.from_json(
        {
            **record,
            "id": -1,
            "session_id": -1,
            "stats": MessageStats().to_json(),
            "request_headers": request_headers,
            "response_headers": response_headers,
        }
    )


def checked(hop: Hop, messages: list[Message]) -> tuple[Hop, list[Message]]:
    """`hop` and `messages` as a reader built them from a file, every field checked: a
    RecordError names the first that is damaged."""
    hop.validate()
    for number, message in enumerate(messages, start=1):
        try:
            message.validate()
        except RecordError as e:
            raise RecordError(f"message {number}: {e}") from None
    return hop, messages


def add_imported_hop(store: SessionStore, hop: Hop, messages: Iterable[Message]) -> None:
    """Add a hop read from a file through the calls the recorder makes, so the store
    correlates hops into sessions the same way. `hop` must not hold messages yet."""
    store.add_hop(hop)
    for message in messages:
        store.add_message(hop, message)
    store.hop_changed(hop)
    store.commit()  # an in-memory store keeps the payloads once, in its database


@dataclass(slots=True)
class ExportedHop:
    """One hop to export: its session, its position in it (1 is client-most) and the hop as
    written (redacted unless asked otherwise); its messages are read from the store."""

    session_id: int
    position: int
    hop: Hop


def hops_to_export(
    store: SessionStore, session_ids: Iterable[int] | None = None, redact: bool = True
) -> Iterator[ExportedHop]:
    sessions = (
        store.sessions() if session_ids is None else [store.session(i) for i in session_ids]
    )
    for session in sessions:
        for position, hop in enumerate(session.hops, start=1):
            yield ExportedHop(session.id, position, redact_hop(hop) if redact else hop)
