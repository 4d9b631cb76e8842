"""Diagnosis: what each hop boundary did to a handshake, and findings that say in plain words
why an upgrade broke and how to fix it.

A session's hops are ordered from the client (hop 1) towards the server. The boundary between
hop i and hop i+1 is whatever sits between those two listeners (nginx, in the README's
topology), so differences between what they recorded are that proxy's doing: requests travel
from hop i to hop i+1, responses come back from hop i+1 to hop i.

Pure functions of the model: no I/O, no UI.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from .model import Hop, Session, accept_for_key, header_tokens, header_value

# RFC 9110 7.6.1 and RFC 2616 13.5.1; any Proxy-* header, and any header a Connection header
# names, is hop-by-hop too.
HOP_BY_HOP = frozenset(
    {"connection", "upgrade", "keep-alive", "te", "trailer", "trailers", "transfer-encoding"}
)

# An abnormal close after at least this much silence looks like a proxy's idle timeout.
IDLE_SILENCE = 2.0
NGINX_READ_TIMEOUT = 60.0  # nginx's proxy_read_timeout default


class Severity(str, Enum):
    ERROR = "error"  # the WebSocket cannot work like this
    WARNING = "warning"  # it worked, or may, but something went wrong
    INFO = "info"  # worth knowing, not a fault

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]


class Change(str, Enum):
    KEPT = "kept"
    CHANGED = "changed"
    DROPPED = "dropped"
    ADDED = "added"


@dataclass(frozen=True, slots=True)
class HeaderChange:
    """One header across a boundary. Names compare case-insensitively (`name` is spelled as
    on the side it came from); several lines of one name are compared joined with ", "."""

    name: str
    change: Change
    before: str | None
    after: str | None
    hop_by_hop: bool

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "change": self.change.value,
            "before": self.before,
            "after": self.after,
            "hop_by_hop": self.hop_by_hop,
        }


def is_hop_by_hop(name: str, connection_tokens: Iterable[str] = ()) -> bool:
    lname = name.lower()
    return lname in HOP_BY_HOP or lname.startswith("proxy-") or lname in connection_tokens


def _by_name(headers: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Lower-cased name -> (name as first spelled, joined value), in first-seen order."""
    names: dict[str, str] = {}
    for name, _ in headers:
        names.setdefault(name.lower(), name)
    return {lname: (name, header_value(headers, lname) or "") for lname, name in names.items()}


def header_diff(
    before: list[tuple[str, str]], after: list[tuple[str, str]]
) -> list[HeaderChange]:
    """Every header of `before` as kept, changed or dropped in `after`, then those `after`
    added, each flagged when it is hop-by-hop on either side."""
    old, new = _by_name(before), _by_name(after)
    connection = set(header_tokens(before, "Connection")) | set(header_tokens(after, "Connection"))
    changes = []
    for lname, (name, value) in old.items():
        if lname not in new:
            change, after_value = Change.DROPPED, None
        else:
            after_value = new[lname][1]
            change = Change.KEPT if after_value == value else Change.CHANGED
        changes.append(
            HeaderChange(name, change, value, after_value, is_hop_by_hop(name, connection))
        )
    for lname, (name, value) in new.items():
        if lname not in old:
            changes.append(
                HeaderChange(name, Change.ADDED, None, value, is_hop_by_hop(name, connection))
            )
    return changes


@dataclass(frozen=True, slots=True)
class HopBoundary:
    """What the proxy between hop `index` and hop `index + 1` (1-based) did."""

    index: int
    before: Hop  # the client-side hop
    after: Hop  # the server-side hop
    request: list[HeaderChange]  # from `before`'s request to `after`'s
    response: list[HeaderChange]  # from `after`'s response back to `before`'s; [] until both

    @property
    def http_versions(self) -> tuple[str, str]:
        """The HTTP version of the request on each side."""
        return self.before.http_version, self.after.http_version


def boundaries(session: Session) -> list[HopBoundary]:
    result = []
    for index, (before, after) in enumerate(zip(session.hops, session.hops[1:]), start=1):
        answered = before.response_status is not None and after.response_status is not None
        result.append(
            HopBoundary(
                index,
                before,
                after,
                header_diff(before.request_headers, after.request_headers),
                header_diff(after.response_headers, before.response_headers) if answered else [],
            )
        )
    return result


# ----- findings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # stable, e.g. "upgrade-dropped"
    severity: Severity
    hop: int  # 1-based position of the hop where the problem shows
    message: str
    fix: str  # nginx lines, then a sentence for other proxies

    def to_json(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "hop": self.hop,
            "message": self.message,
            "fix": self.fix,
        }


UPGRADE_FIX = (
    "nginx, in the http block:\n"
    "    map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n"
    "and in the location that proxies the WebSocket:\n"
    "    proxy_http_version 1.1;\n"
    "    proxy_set_header Upgrade $http_upgrade;\n"
    "    proxy_set_header Connection $connection_upgrade;\n"
    "Other proxies: forward the Upgrade and Connection headers to the backend over HTTP/1.1; "
    "they are hop-by-hop, so proxies drop them unless told to pass them on."
)
HTTP11_FIX = (
    "nginx, in the location that proxies the WebSocket:\n"
    "    proxy_http_version 1.1;\n"
    "(nginx's default is 1.0; pass Upgrade and Connection on too, see upgrade-dropped.)\n"
    "Other proxies: speak HTTP/1.1 to the backend; an HTTP/1.0 request cannot be upgraded."
)
HOST_FIX = (
    "nginx, in the location:\n"
    "    proxy_set_header Host $http_host;\n"
    "Other proxies: preserve the client's Host header (often called 'preserve host')."
)
ACCEPT_FIX = (
    "nginx passes Sec-WebSocket-Key and Sec-WebSocket-Accept unchanged: remove any "
    "proxy_set_header, add_header or more_set_headers line that touches them, or fix the "
    "server's handshake code.\n"
    "Other proxies: do not rewrite Sec-WebSocket-* headers; the server must answer "
    "base64(SHA-1(key + 258EAFA5-E914-47DA-95CA-C5AB0DC85B11))."
)
CLOSE_FIX = (
    "nginx: error.log tells why it closed an upstream or client connection "
    "(e.g. 'upstream prematurely closed connection').\n"
    "Other proxies: check the proxy's log; applications should end WebSockets with a close "
    "frame (ws.close()) instead of dropping the connection."
)
IDLE_FIX = (
    "nginx, in the location that proxies the WebSocket:\n"
    "    proxy_read_timeout 1h;\n"
    "    proxy_send_timeout 1h;\n"
    "or have the client or server send a ping more often than the timeout (e.g. every 30 s).\n"
    "Other proxies: raise the idle timeout (HAProxy 'timeout tunnel', a load balancer's idle "
    "timeout) above the longest silence, or ping more often than it."
)
PROTOCOL_FIX = (
    "Fix the WebSocket implementation of the side named above: RFC 6455 section 5 says how "
    "frames are built (clients mask every frame, servers never do; opcodes 3-7 and 11-15 are "
    "reserved; control frames carry at most 125 bytes and are never fragmented; RSV bits "
    "stay 0 unless an extension was negotiated; text frames carry valid UTF-8).\n"
    "Every proxy, nginx included once it relays frames, and every conforming peer closes a "
    "connection that breaks these rules."
)

REFUSED_FIX = (
    "The client sent a request an HTTP/1.1 proxy must refuse (a header line without a colon, "
    "a control character in a header name, an invalid scheme or request line): fix the "
    "client, or whatever builds its headers.\n"
    "nginx and other proxies refuse such requests too, usually with 400."
)

REJECTED_FIXES = {
    "proxy": (
        "nginx: error.log names why it answered itself (502: backend unreachable or it closed "
        "the connection; 504: proxy_connect_timeout/proxy_read_timeout; 404/403: no location "
        "or an access rule matched the WebSocket path).\n"
        "Other proxies: check the proxy's log and that its route to the WebSocket backend "
        "matches this path."
    ),
    "server": (
        "Fix the findings above first if there are any: a server refuses an upgrade whose "
        "Upgrade/Connection headers were lost or that arrived as HTTP/1.0. Otherwise check the "
        "server's log for the reason (path, Origin, authentication, subprotocol).\n"
        "Other proxies: make sure the request reaches the WebSocket endpoint unchanged."
    ),
}


def _has_upgrade(headers: list[tuple[str, str]]) -> bool:
    return "websocket" in header_tokens(headers, "Upgrade")


def _has_connection_upgrade(headers: list[tuple[str, str]]) -> bool:
    return "upgrade" in header_tokens(headers, "Connection")


def _is_handshake(hop: Hop) -> bool:
    """A WebSocket client sent this (perhaps with parts lost on the way)."""
    version = header_value(hop.request_headers, "Sec-WebSocket-Version")
    return bool(hop.websocket_key) and version is not None


def _stripped_before_capture(hop: Hop) -> list[Finding]:
    missing = [
        name
        for name, present in (
            ("Upgrade: websocket", _has_upgrade(hop.request_headers)),
            ("Connection: upgrade", _has_connection_upgrade(hop.request_headers)),
        )
        if not present
    ]
    if not _is_handshake(hop) or not missing:
        return []
    return [
        Finding(
            "stripped-before-capture",
            Severity.ERROR,
            1,
            f"Hop 1 received a WebSocket handshake (Sec-WebSocket-Key and -Version are there) "
            f"without {' and '.join(missing)}. Clients always send them, so a proxy in front "
            f"of wsinspect (such as nginx without the upgrade lines) stripped them.",
            UPGRADE_FIX,
        )
    ]


def _http10(position: int, hop: Hop, previous: Hop | None, upgraded: bool) -> list[Finding]:
    if hop.http_version != "HTTP/1.0" or (previous and previous.http_version == "HTTP/1.0"):
        return []
    if previous is None:
        if not _is_handshake(hop):
            return []
        who = "whatever sent it to hop 1 (a proxy in front of wsinspect, or the client)"
    else:
        who = f"the proxy between hop {position - 1} and hop {position}"
    return [
        Finding(
            "http10-upstream",
            Severity.WARNING if upgraded else Severity.ERROR,
            position,
            f"Hop {position} received the handshake as HTTP/1.0: {who} forwarded it with "
            f"HTTP/1.0, which has no Upgrade mechanism (nginx's proxy_http_version defaults "
            f"to 1.0).",
            HTTP11_FIX,
        )
    ]


def _dropped_at(position: int, before: Hop, after: Hop) -> list[Finding]:
    findings = []
    between = f"the proxy between hop {position - 1} and hop {position}"
    if _has_upgrade(before.request_headers) and not _has_upgrade(after.request_headers):
        now = header_value(after.request_headers, "Upgrade")
        what = "dropped it" if now is None else f"rewrote it to {now!r}"
        findings.append(
            Finding(
                "upgrade-dropped",
                Severity.ERROR,
                position,
                f"Hop {position - 1} received Upgrade: websocket but hop {position} did not: "
                f"{between} {what}. Upgrade is a hop-by-hop header, so proxies drop it unless "
                f"told to pass it on.",
                UPGRADE_FIX,
            )
        )
    if _has_connection_upgrade(before.request_headers) and not _has_connection_upgrade(
        after.request_headers
    ):
        now = header_value(after.request_headers, "Connection")
        if now is None:
            what = "dropped the header"
        elif not now.strip():
            what = "emptied it"
        else:
            what = f"rewrote it to {now!r}"
        findings.append(
            Finding(
                "connection-dropped",
                Severity.ERROR,
                position,
                f"Hop {position - 1}'s Connection header carried the 'upgrade' token but hop "
                f"{position}'s did not: {between} {what}.",
                UPGRADE_FIX,
            )
        )
    return findings


def _host_changed(position: int, before: Hop, after: Hop) -> list[Finding]:
    old = header_value(before.request_headers, "Host")
    new = header_value(after.request_headers, "Host")
    if old is None or new is None or old.lower() == new.lower():
        return []
    return [
        Finding(
            "host-changed",
            Severity.INFO,
            position,
            f"The proxy between hop {position - 1} and hop {position} sent Host: {new} instead "
            f"of the client's {old} (nginx sends the proxy_pass address unless told "
            f"otherwise); servers that check Host or Origin may refuse the upgrade.",
            HOST_FIX,
        )
    ]


def _server_behind(hop: Hop, position: int) -> str:
    where = f" at {hop.server_addr[0]}:{hop.server_addr[1]}" if hop.server_addr else ""
    return f"the server behind hop {position}{where}"


def _rejected(session: Session) -> list[Finding]:
    hops = session.hops
    status = hops[0].response_status
    if status is None or status == 101:
        return []
    depth = 0  # the deepest hop that got this same answer
    while depth + 1 < len(hops) and hops[depth + 1].response_status == status:
        depth += 1
    reason = hops[depth].response_reason
    answer = f"{status}{f' {reason}' if reason else ''}"
    if hops[depth].answered_by == "proxy":
        return [
            Finding(
                "handshake-rejected",
                Severity.ERROR,
                depth + 1,
                f"The upgrade was answered with {answer} by the proxy at hop {depth + 1} "
                f"itself, which refused the request: {hops[depth].error}.",
                REFUSED_FIX,
            )
        ]
    if depth + 1 == len(hops):
        producer = _server_behind(hops[depth], depth + 1)
        kind = "server"
    else:
        deeper = hops[depth + 1]
        if deeper.response_status is None:
            got = f"got no answer ({deeper.error})" if deeper.error else "got no answer"
        else:
            got = f"got {deeper.response_status}"
        producer = (
            f"the proxy between hop {depth + 1} and hop {depth + 2} (hop {depth + 2} {got})"
        )
        kind = "proxy"
    return [
        Finding(
            "handshake-rejected",
            Severity.ERROR,
            depth + 1,
            f"The upgrade was answered with {answer} instead of 101 Switching Protocols; "
            f"{producer} produced that answer.",
            REJECTED_FIXES[kind],
        )
    ]


def _accept_mismatch(hops: list[Hop]) -> list[Finding]:
    wrong = [
        i
        for i, hop in enumerate(hops)
        if hop.response_status == 101
        and hop.websocket_key
        and header_value(hop.response_headers, "Sec-WebSocket-Accept")
        != accept_for_key(hop.websocket_key)
    ]
    if not wrong:
        return []
    deepest = wrong[-1]
    hop = hops[deepest]
    accept = header_value(hop.response_headers, "Sec-WebSocket-Accept")
    got = "no Sec-WebSocket-Accept" if accept is None else f"Sec-WebSocket-Accept {accept!r}"
    if deepest + 1 == len(hops):
        who = _server_behind(hop, deepest + 1)
    else:
        who = (
            f"the proxy between hop {deepest + 1} and hop {deepest + 2}, which changed "
            f"Sec-WebSocket-Key or -Accept"
        )
    return [
        Finding(
            "accept-mismatch",
            Severity.ERROR,
            deepest + 1,
            f"Hop {deepest + 1} got 101 with {got}, but its key calls for "
            f"{accept_for_key(hop.websocket_key)!r}, so clients abort the connection; "
            f"the culprit is {who}.",
            ACCEPT_FIX,
        )
    ]


def _silence(hop: Hop) -> float | None:
    """Seconds between the hop's last sign of life and the end of its connection."""
    end = hop.close.timestamp if hop.close and hop.close.timestamp else hop.timestamp_end
    if end is None:
        return None
    last = max(
        t
        for t in (hop.timestamp_start, hop.timestamp_response, hop.stats.last_timestamp)
        if t is not None
    )
    return max(0.0, end - last)


def _abnormal(hops: list[Hop]) -> list[Finding]:
    position = next(
        (i for i, hop in enumerate(hops, start=1) if hop.close and hop.close.abnormal), None
    )
    if position is None:
        return []
    hop = hops[position - 1]
    close = hop.close
    assert close is not None
    what = close.abnormal_reason or f"the {close.by or 'peer'} connection was lost"
    message = f"The WebSocket ended without a close frame at hop {position}: {what}."
    deeper = hops[position] if position < len(hops) else None
    if close.by == "server" and deeper and deeper.close and deeper.close.abnormal:
        message += (
            f" Hop {position + 1} lost its connection the same way, so the proxy between hop "
            f"{position} and hop {position + 1} cut both sides."
        )
    survivor = {"client": "server", "server": "client"}.get(close.by or "")
    told = getattr(close, f"told_{survivor}") if survivor else None
    if told is not None:
        code, reason = told
        message += (
            f" The {close.by} died; the proxy told the {survivor} close {code}"
            + (f" {reason!r}" if reason else " with no reason")
            + (", as if all was well." if code == 1000 else ".")
        )
    findings = [Finding("abnormal-close", Severity.WARNING, position, message, CLOSE_FIX)]
    # A client that hangs up on a listener it talks to directly is no proxy's timeout; a
    # reverse listener's client is the proxy in front of it.
    client_left = close.by == "client" and not hop.mode.startswith("reverse")
    silence = _silence(hop)
    if silence is not None and silence >= IDLE_SILENCE and not client_left:
        default = (
            f" That matches nginx's default proxy_read_timeout of {NGINX_READ_TIMEOUT:.0f} s."
            if abs(silence - NGINX_READ_TIMEOUT) <= 2
            else ""
        )
        findings.append(
            Finding(
                "idle-timeout",
                Severity.WARNING,
                position,
                f"No frame passed for {silence:.1f} s before the connection was cut at hop "
                f"{position}: a proxy's idle timeout closes a silent WebSocket without a close "
                f"frame (nginx's proxy_read_timeout is {NGINX_READ_TIMEOUT:.0f} s by default)."
                + default,
                IDLE_FIX,
            )
        )
    return findings


def _peer_reaction(hop: Hop, peer: str) -> str:
    """What the side that received a bad frame did about it, as the record shows."""
    close = hop.close
    if close is None:
        return f"the {peer} has not closed the connection so far"
    offender = "client" if peer == "server" else "server"
    told = getattr(close, f"told_{offender}")  # the peer's close frame, under the raw relay
    if told is not None:
        code = "an empty close frame" if told[0] is None else f"close {told[0]}"
        verb = "closed with" if close.by == peer else "answered with"
        return f"the {peer} {verb} {code}" + (f" {told[1]!r}" if told[1] else "")
    if close.by == peer:
        how = getattr(close, f"{peer}_end")
        ended = "reset" if how == "reset" else "closed"
        return f"the {peer} {ended} the connection without a close frame"
    return f"the {peer} did not close the connection over it (the {close.by} ended the session)"


def _protocol_errors(hops: list[Hop]) -> list[Finding]:
    """A side sent a frame that breaks RFC 6455: the raw relay passed it on and the record
    shows how the peer reacted; mitmproxy's path closed both sides itself."""
    findings = []
    for position, hop in enumerate(hops, start=1):
        if hop.violations:
            first = hop.violations[0]
            peer = "server" if first.from_client else "client"
            more = len(hop.violations) - 1
            findings.append(
                Finding(
                    "protocol-error",
                    Severity.ERROR,
                    position,
                    f"The {first.sender} sent a frame that breaks the WebSocket protocol "
                    f"({first.rule}: {first.detail})"
                    + (f", and {more} more violation(s) followed" if more else "")
                    + f"; wsinspect at hop {position} passed it on unchanged, and "
                    f"{_peer_reaction(hop, peer)}.",
                    PROTOCOL_FIX,
                )
            )
            continue
        close = hop.close
        if close is None or close.by != "proxy" or close.offender is None:
            continue
        findings.append(
            Finding(
                "protocol-error",
                Severity.ERROR,
                position,
                f"The {close.offender} sent a frame that breaks the WebSocket protocol "
                f"({close.reason or 'no reason given'}), so the proxy at hop {position} "
                f"closed both sides with {close.code}. mitmproxy's own flow blames the "
                f"{close.offender} for the close; it was the proxy's.",
                PROTOCOL_FIX,
            )
        )
    return findings


def diagnose(session: Session) -> list[Finding]:
    """Every finding for a session, ordered by hop; a healthy session through a correctly
    configured proxy has no warning or error."""
    hops = session.hops
    upgraded = hops[0].response_status == 101
    findings = _stripped_before_capture(hops[0]) + _http10(1, hops[0], None, upgraded)
    for position, (before, after) in enumerate(zip(hops, hops[1:]), start=2):
        findings += _dropped_at(position, before, after)
        findings += _http10(position, after, before, upgraded)
        findings += _host_changed(position, before, after)
    findings += _rejected(session) + _accept_mismatch(hops) + _abnormal(hops)
    findings += _protocol_errors(hops)
    return sorted(findings, key=lambda f: f.hop)


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The most severe finding's severity (for a badge), None without findings."""
    return max((f.severity for f in findings), key=lambda s: s.rank, default=None)
