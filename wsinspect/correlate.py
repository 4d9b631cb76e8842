"""Lining up the hops of one session: the same handshake seen by several listeners.

With `--mode regular@8080 --mode reverse:http://127.0.0.1:9000@8081` and nginx's
`proxy_pass http://127.0.0.1:8081` in between, one client handshake reaches the first listener
and, a moment later, the second. Each listener's request hook adds a hop to the store, always
in path order: a listener only forwards a request after its hook ran, so the client-most hop is
in the store before the next one arrives. `find_session` decides whether a new hop continues a
session already seen. A wrong merge would blame a proxy for another client's headers, so when
the evidence is ambiguous the hop starts a session of its own instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from .http_rules import header_value, is_hop_by_hop
from .model import Hop, Session

# A hop further along the path sees the handshake shortly after the one before it.
CORRELATION_WINDOW = 30.0
# Without a Sec-WebSocket-Key, the next hop must follow much more closely.
FALLBACK_WINDOW = 2.0
# Compared without these: proxies rewrite Host (nginx sends its proxy_pass address), and a
# proxy that strips the key is what the fallback is for.
_REWRITTEN_BY_PROXIES = frozenset({"host", "sec-websocket-key"})


def _path(hop: Hop) -> str:
    """Path and query of the handshake request, whatever form its request line had."""
    parts = urlsplit(hop.url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _end_to_end(hop: Hop) -> dict[str, str | None]:
    """The request headers a proxy passes on unchanged, by lower-cased name."""
    names = {
        name.lower()
        for name, _ in hop.request_headers
        if not is_hop_by_hop(name) and name.lower() not in _REWRITTEN_BY_PROXIES
    }
    return {name: header_value(hop.request_headers, name) for name in names}


def _precedes(earlier: Hop, later: Hop, window: float) -> bool:
    """`earlier` could be the hop just before `later`: it started first, within `window`,
    and was still waiting for its answer when `later` began (a hop's response comes back
    through the later hops, so it cannot arrive before they have started)."""
    delay = later.timestamp_start - earlier.timestamp_start
    if not 0 < delay <= window:
        return False
    return earlier.timestamp_response is None or earlier.timestamp_response >= later.timestamp_start


def _forwarded_as(earlier: Hop, later: Hop) -> bool:
    """`later` looks like `earlier`'s handshake after a proxy: the same path, and every header
    a proxy passes on still there with its value (a proxy may add its own, X-Forwarded-For)."""
    after = _end_to_end(later)
    return _path(earlier) == _path(later) and all(
        after.get(name) == value for name, value in _end_to_end(earlier).items()
    )


def find_session(hop: Hop, recent: Iterable[Session]) -> Session | None:
    """The session `hop` is a later view of, or None for a new session.

    By Sec-WebSocket-Key, which proxies forward unchanged and clients draw at random: the
    session with an earlier hop carrying the same key, still waiting for its answer. A client
    that reuses one key for several handshakes is told apart by the request path.

    Without a key (a client that sends none, or a proxy that stripped it), by elimination: the
    hop joins a session only when that is the one session whose newest hop started less than
    `FALLBACK_WINDOW` seconds before and is still waiting for its answer, and the new hop
    looks like its handshake after a proxy (same path, the end-to-end headers unchanged).
    With other handshakes under way at the same moment, keyless hops stay separate sessions.

    Anything but exactly one such session, or one that already has a hop of this listener
    (a listener sees a handshake once), means no merge. A hop's true predecessor is always
    among the candidates (it was added first and is still waiting for its answer), so a
    single candidate is the right one. What cannot be told apart is a client that bypasses
    the earlier listeners (connecting to nginx directly) while an indistinguishable handshake
    (the same key, or keyless with the same headers, for the same path) is under way through
    them."""
    key = hop.websocket_key
    if key:
        matches = [
            s
            for s in recent
            if any(
                h.websocket_key == key and _precedes(h, hop, CORRELATION_WINDOW) for h in s.hops
            )
        ]
        if len(matches) > 1:
            path = _path(hop)
            matches = [s for s in matches if _path(s.hops[-1]) == path]
    else:
        matches = [s for s in recent if _precedes(s.hops[-1], hop, FALLBACK_WINDOW)]
        if len(matches) == 1 and not _forwarded_as(matches[0].hops[-1], hop):
            return None
    if len(matches) != 1 or any(h.mode == hop.mode for h in matches[0].hops):
        return None
    return matches[0]
