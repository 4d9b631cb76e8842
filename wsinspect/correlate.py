"""Lining up the hops of one session: the same handshake seen by several listeners."""

from __future__ import annotations

from collections.abc import Iterable

from .model import Hop, Session

# A hop further along the path sees the handshake shortly after the one before it.
CORRELATION_WINDOW = 30.0


def find_session(hop: Hop, recent: Iterable[Session]) -> Session | None:
    """The session `hop` is another view of, or None for a new session.

    Hops are matched by Sec-WebSocket-Key, which proxies forward unchanged and clients draw at
    random per handshake. Two hops of one listener are never merged: a listener sees a
    handshake once."""
    key = hop.websocket_key
    if not key:
        return None
    for session in recent:
        if any(h.mode == hop.mode for h in session.hops):
            continue
        for other in session.hops:
            if (
                other.websocket_key == key
                and abs(other.timestamp_start - hop.timestamp_start) <= CORRELATION_WINDOW
            ):
                return session
    return None
