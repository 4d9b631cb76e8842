"""What a replay sends: a recorded session turned into a plan (target, headers, the client's
messages and the answers to compare with). Pure: it reads the store, opens no connection.

The request repeats the original's headers: a fresh Sec-WebSocket-Key, the hop-by-hop headers
(Connection, Upgrade, Proxy-*, …) rebuilt, cookies and authorization kept unless dropped
(`drop_headers`, `CREDENTIAL_HEADERS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ReplayError
from ..http_rules import WEBSOCKET_HANDSHAKE, end_to_end, header_tokens, header_values, ws_url
from ..model import Message, MessageType, Session
from ..store import SessionStore

CREDENTIAL_HEADERS = ("Cookie", "Authorization")
TIMINGS = ("fast", "original")
# Made anew by each connection, beside the hop-by-hop headers.
_REBUILT_HEADERS = ("host", "content-length", *WEBSOCKET_HANDSHAKE)
DATA_TYPES = (MessageType.TEXT, MessageType.BINARY)




@dataclass(frozen=True, slots=True)
class Target:
    """Where a replay connects: the WebSocket server, and the Host header it is sent."""

    secure: bool
    host: str
    port: int
    resource: str  # path and query
    host_header: str

    @property
    def url(self) -> str:
        return ws_url(self.secure, self.host, self.port, self.resource)

    @classmethod
    def parse(cls, url: str, host_header: str | None = None, resource: str | None = None):
        """A ws:// or wss:// URL (http/https also accepted); `resource` replaces its path when
        the URL has none."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ReplayError(f"{url!r} is not a ws:// or wss:// URL")
        secure = parts.scheme in ("wss", "https")
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError:
            raise ReplayError(f"{url!r} has an invalid port") from None
        own = parts.path + (f"?{parts.query}" if parts.query else "")
        return cls(
            secure=secure,
            host=parts.hostname,
            port=port,
            resource=own if own or resource is None else resource,
            host_header=host_header or parts.netloc.rpartition("@")[2],
        )


def rebuilt_headers(
    headers: Sequence[tuple[str, str]], drop: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """The original request's end-to-end headers, in order, without those named in `drop` and
    those that each connection makes anew (hop-by-hop ones, including any that the original
    Connection header listed, and the handshake's)."""
    return end_to_end(headers, drop=(*_REBUILT_HEADERS, *drop))


@dataclass
class ReplayPlan:
    """A recorded session turned into what a replay sends."""

    original: Session
    target: Target
    headers: list[tuple[str, str]]
    subprotocols: list[str]
    deflate: bool  # the original client offered permessage-deflate
    client_messages: list[Message]  # text, binary and ping, in order
    client_close: tuple[int, str] | None  # the close frame the original client sent, if any
    original_answers: list[Message]  # the original server's text and binary messages
    time_origin: float  # the moment the original messages' spacing is measured from

    def span(self) -> float:
        """Seconds from `time_origin` to the last client message: how long sending takes with
        the original timing."""
        if not self.client_messages:
            return 0.0
        return max(0.0, self.client_messages[-1].timestamp - self.time_origin)

    @classmethod
    def from_store(
        cls,
        store: SessionStore,
        session_id: int,
        *,
        to: str | None = None,
        drop_headers: Sequence[str] = (),
    ) -> ReplayPlan:
        try:
            session = store.session(session_id)
        except KeyError:
            raise ReplayError(f"there is no session #{session_id} in the capture") from None
        hop = session.first_hop
        original_host = next(iter(header_values(hop.request_headers, "Host")), None)
        if to:
            target = Target.parse(to, resource=Target.parse(hop.url).resource)
        else:
            target = Target.parse(hop.url, host_header=original_host)
        client_messages: list[Message] = []
        client_close = None
        for message in store.iter_messages(hop.id):
            if not message.from_client:
                continue
            if message.type in (*DATA_TYPES, MessageType.PING):
                if message.truncated:
                    raise ReplayError(
                        f"client message {message.index} was stored truncated "
                        f"({len(message.payload)} of {message.size} bytes); it cannot be resent"
                    )
                client_messages.append(message)
            elif message.type is MessageType.CLOSE and client_close is None:
                client_close = message.close_code_reason()
        return cls(
            original=session,
            target=target,
            headers=rebuilt_headers(hop.request_headers, drop_headers),
            subprotocols=header_tokens(hop.request_headers, "Sec-WebSocket-Protocol"),
            deflate=any(
                t.split(";")[0].strip() == "permessage-deflate"
                for t in header_tokens(hop.request_headers, "Sec-WebSocket-Extensions")
            ),
            client_messages=client_messages,
            client_close=client_close if client_close and client_close[0] else None,
            original_answers=server_answers(store, session_id),
            time_origin=hop.timestamp_response or hop.timestamp_start,
        )


def server_answers(store: SessionStore, session_id: int) -> list[Message]:
    """A session's text and binary messages from the server (its first hop's); not those
    wsinspect injected towards the client, which no server sent."""
    hop = store.session(session_id).first_hop
    return [
        m for m in store.iter_messages(hop.id)
        if not m.from_client and m.type in DATA_TYPES and not m.injected
    ]
