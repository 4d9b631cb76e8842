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

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from mitmproxy.proxy import mode_specs

from .diagnosis import is_hop_by_hop
from .model import Hop, Session

# A hop further along the path sees the handshake shortly after the one before it.
CORRELATION_WINDOW = 30.0
# Without a Sec-WebSocket-Key, the next hop must follow much more closely.
FALLBACK_WINDOW = 5.0


def _path(hop: Hop) -> str:
    """Path and query of the handshake request, whatever form its request line had."""
    parts = urlsplit(hop.url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _upstream(hop: Hop) -> tuple[str, int] | None:
    """The address a hop forwards its handshake to."""
    if hop.server_addr:
        return hop.server_addr[0], int(hop.server_addr[1])
    parts = urlsplit(hop.url)
    if not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    except ValueError:
        return None
    return parts.hostname, port


def listens_at(hop: Hop, address: tuple[str, int]) -> bool:
    """Whether `address` is the listener that recorded `hop`, judged by its mode spec.

    Only a spec naming its port (`reverse:…@8081`) can tell; without a host in the spec,
    only loopback addresses count."""
    try:
        mode = mode_specs.ProxyMode.parse(hop.mode)
    except ValueError:
        return False
    if mode.custom_listen_port is None or mode.custom_listen_port != address[1]:
        return False
    if mode.custom_listen_host:
        return mode.custom_listen_host == address[0]
    return _is_loopback(address[0])


def _end_to_end(hop: Hop) -> list[tuple[str, str]]:
    """The request headers a proxy forwards as they are (hop-by-hop ones left out)."""
    return [(k.lower(), v) for k, v in hop.request_headers if not is_hop_by_hop(k)]


def _precedes(earlier: Hop, later: Hop, window: float) -> bool:
    """`earlier` could be the hop just before `later`: it started first, within `window`,
    and was still waiting for its answer when `later` began (a hop's response comes back
    through the later hops, so it cannot arrive before they have started)."""
    delay = later.timestamp_start - earlier.timestamp_start
    if not 0 < delay <= window:
        return False
    return earlier.timestamp_response is None or earlier.timestamp_response >= later.timestamp_start


def _linked(last: Hop, hop: Hop) -> bool:
    """Without keys: `last` forwarded its handshake straight to `hop`'s listener."""
    upstream = _upstream(last)
    return (
        last.websocket_key is None
        and upstream is not None
        and listens_at(hop, upstream)
        and _path(last) == _path(hop)
        and _end_to_end(last) == _end_to_end(hop)
        and _precedes(last, hop, FALLBACK_WINDOW)
    )


def find_session(hop: Hop, recent: Iterable[Session]) -> Session | None:
    """The session `hop` is a later view of, or None for a new session.

    By Sec-WebSocket-Key, which proxies forward unchanged and clients draw at random: the
    session with an earlier hop carrying the same key, still waiting for its answer. A client
    that reuses one key for several handshakes is told apart by the request path.

    Without a key, a hop joins a session only when that session is the only one waiting for
    an answer to a handshake started in the last `FALLBACK_WINDOW` seconds, and its last hop,
    keyless too, forwarded the handshake straight to this hop's listener (a wsinspect
    listener passes headers on unchanged, so they must match) for the same path. A proxy in between (nginx) leaves no such link, so keyless handshakes through it
    stay separate sessions; mitmproxy also refuses to connect to its own listeners on
    loopback, so within one wsinspect the link needs another address.

    Anything but exactly one such session, or one that already has a hop of this listener
    (a listener sees a handshake once), means no merge. A hop's true predecessor is always
    among the candidates (it was added first and is still waiting for its answer), so a
    single candidate is the right one. What cannot be told apart is a client connecting
    straight to a later listener while an identical handshake (same key, or keyless with the
    same headers, and the same path) is under way through an earlier one."""
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
        # Every session whose newest hop is still waiting could be the one this hop
        # continues (a proxy may rewrite the path or headers): only one may be.
        matches = [s for s in recent if _precedes(s.hops[-1], hop, FALLBACK_WINDOW)]
        if len(matches) == 1 and not _linked(matches[0].hops[-1], hop):
            return None
    if len(matches) != 1 or any(h.mode == hop.mode for h in matches[0].hops):
        return None
    return matches[0]
