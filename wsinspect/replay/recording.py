"""How a replay is recorded. Through a wsinspect proxy, the proxy's recorder records the replay
like any session and only the link to the original is set here; a direct replay records its
own hop (mode "direct"), from the client's side, through the hop's life cycle (wsinspect.model).
"""

from __future__ import annotations

import asyncio
import time

from ..errors import ReplayError
from ..http_rules import parse_head, parse_status_line
from ..model import Close, Hop, Message, MessageType, Outcome, Session
from ..store import SessionStore

CLOSE_WAIT = 2.0  # how long a close handshake, or the proxy's record of it, may take


class ReplayRecording:
    def __init__(self, store: SessionStore, original_id: int, proxied: bool) -> None:
        self.store = store
        self.original_id = original_id
        self.proxied = proxied  # the proxy's recorder records the hop
        self.hop: Hop | None = None  # the replay's first hop, once it exists in the store

    @property
    def _records(self) -> bool:
        return not self.proxied and self.hop is not None

    def link_proxied(self, sockname: tuple) -> None:
        """Find the hop the proxy recorded for the connection from `sockname`; mark it a
        replay of the original."""
        for session in reversed(self.store.sessions()):
            hop = session.first_hop
            if hop.client_addr and tuple(hop.client_addr) == tuple(sockname[:2]):
                self.hop = hop
                hop.replay_of = self.original_id
                self.store.hop_changed(hop)
                return
        raise ReplayError("the proxy did not record the replay's handshake")

    def request(
        self, url: str, head: bytes, started: float, sockname: tuple, peername: tuple | None
    ) -> None:
        """The upgrade request `head` a direct replay sent at `started`."""
        request_line, headers = parse_head(head)
        self.hop = Hop(
            mode="direct",
            url=url,
            request_line=request_line,
            http_version="HTTP/1.1",
            request_headers=headers,
            timestamp_start=started,
            client_addr=tuple(sockname[:2]),
            server_addr=tuple(peername[:2]) if peername else None,
            replay_of=self.original_id,
        )
        self.store.add_hop(self.hop)

    def answered(self, status_line: str, headers: list[tuple[str, str]]) -> None:
        if not self._records:
            return
        version, status, reason = parse_status_line(status_line)
        self.hop.answered(status, reason, headers, version, time.time())
        self.store.hop_changed(self.hop)

    def failed(self, error: str) -> None:
        if not self._records:
            return
        self.hop.failed(error, time.time())
        self.store.hop_changed(self.hop)

    def frame(self, from_client: bool, kind: MessageType, payload: bytes) -> None:
        """A whole frame sent or received now."""
        self.message(
            Message(from_client=from_client, type=kind, size=len(payload), payload=payload,
                    timestamp=time.time())
        )

    def message(self, message: Message) -> None:
        if self._records:
            self.store.add_message(self.hop, message)

    def ended(self, by: str, code: int | None, reason: str, abnormal: str | None = None) -> None:
        """The WebSocket ended: with `by`'s close frame, or `abnormal` says how it was lost."""
        if not self._records:
            return
        now = time.time()
        self.hop.ended(
            Close.lost(by, now, abnormal)
            if abnormal
            else Close(code=code, reason=reason, by=by, timestamp=now)
        )
        self.store.hop_changed(self.hop)

    async def finished_session(self) -> Session:
        """The replay's session, once its recorder (this one, or the proxy's) has seen it end."""
        session = self.store.session(self.hop.session_id)
        deadline = time.monotonic() + CLOSE_WAIT
        while session.outcome is Outcome.OPEN and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return session
