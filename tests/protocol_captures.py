"""Deterministic captures of sessions speaking an application protocol, for the app's tests
and snapshots."""

from __future__ import annotations

from tests.ui_helpers import T0, handshake_hop
from wsinspect.model import Close, Message, MessageType, Outcome
from wsinspect.store import SessionStore

# (from_client, type, payload, seconds after the handshake)
SOCKET_IO = [
    (False, MessageType.TEXT, (b'0{"sid":"abc","upgrades":[],"pingInterval":25000,'
                               b'"pingTimeout":20000,"maxPayload":1000000}'), 0.001),
    (True, MessageType.TEXT, b"40", 0.002),
    (False, MessageType.TEXT, b'40{"sid":"s1"}', 0.003),
    (True, MessageType.TEXT, b'421["chat",{"text":"hi","room":"lobby"}]', 0.100),
    (False, MessageType.TEXT, b'431["stored"]', 0.112),
    (True, MessageType.TEXT, b'451-2["upload",{"_placeholder":true,"num":0}]', 0.200),
    (True, MessageType.BINARY, b"\x00\x01\x02", 0.201),
    (False, MessageType.TEXT, b'42["news",{"size":3}]', 0.450),
    (False, MessageType.TEXT, b'432[3]', 0.650),
    (False, MessageType.TEXT, b"2", 0.700),
    (True, MessageType.TEXT, b"3", 0.701),
    (True, MessageType.TEXT, b'423["typing\\u001b[31m",{"who":"[bold]me"}]', 0.800),
    (True, MessageType.PING, b"p", 0.900),
    (False, MessageType.PONG, b"p", 0.901),
]


def socketio_store() -> SessionStore:
    """One closed Socket.IO session: connect, a chat call answered in 12 ms, an upload with a
    binary attachment answered in 450 ms, a server event, Engine.IO ping/pong, a call left
    unanswered (its event name holds an escape sequence), control frames."""
    store = SessionStore()
    hop = handshake_hop("/socket.io/?EIO=4&transport=websocket", T0)
    hop.request_headers = [h for h in hop.request_headers if h[0] != "Sec-WebSocket-Protocol"]
    hop.response_headers = [h for h in hop.response_headers
                            if h[0] != "Sec-WebSocket-Protocol"]
    store.add_hop(hop)
    for from_client, kind, payload, after in SOCKET_IO:
        store.add_message(hop, Message(from_client, kind, len(payload), payload, T0 + after))
    hop.outcome = Outcome.CLOSED
    hop.timestamp_end = T0 + 1.0
    hop.close = Close(code=1000, reason="", by="client", timestamp=T0 + 1.0)
    store.hop_changed(hop)
    store.flush()
    return store
