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
from urllib.parse import urlsplit

from . import proxies
from .http_rules import header_tokens, header_value, is_hop_by_hop
from .model import ConnectionEnd, Hop, Outcome, Session, Side, accept_for_key
from .proxies import Identity, Sighting

# Two hops that lost their connections this close together were cut by the proxy between them.
CUT_WINDOW = 0.5
# A cut across hops after at least this much silence is that proxy's idle timeout; a single
# hop's connection that a proxy dropped after as long a silence looks like one. Short, so that
# a proxy's 1 s timeout (0.95 s of silence measured by the hop) is not missed.
IDLE_SILENCE = 0.5


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
    fix: str  # in the named proxy's configuration language, or in each common proxy's
    proxy: str | None = None  # the proxy the fix is for (a proxies.DIALECTS key), if told

    def to_json(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "hop": self.hop,
            "message": self.message,
            "fix": self.fix,
            "proxy": self.proxy,
        }


ACCEPT_FIX = (
    "Proxies pass Sec-WebSocket-Key and Sec-WebSocket-Accept unchanged unless told otherwise: "
    "remove any line that sets them (nginx proxy_set_header/add_header/more_set_headers, "
    "Apache RequestHeader/Header, HAProxy http-request/http-response set-header, Caddy "
    "header_up/header_down), or fix the server's handshake code: it must answer "
    "base64(SHA-1(key + 258EAFA5-E914-47DA-95CA-C5AB0DC85B11))."
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

SERVER_REJECTED_FIX = (
    "Fix the findings above first if there are any: a server refuses an upgrade whose "
    "Upgrade/Connection headers were lost or that arrived as HTTP/1.0. Otherwise check the "
    "server's log for the reason (path, Origin, authentication, subprotocol), and that the "
    "request reaches the WebSocket endpoint unchanged."
)
CLEAN_CLOSE_ADVICE = (
    "Applications should end WebSockets with a close frame (ws.close()) instead of dropping "
    "the connection."
)


# ----- the proxy at each place ---------------------------------------------------------------


def _between(before: Hop, after: Hop) -> Identity:
    """The proxy between two hops, from what each side of it recorded."""
    return proxies.identify(
        Sighting(
            sent=before.request_headers,
            received=after.request_headers,
            sent_version=before.http_version,
            received_version=after.http_version,
            answered=after.response_headers if after.response_status is not None else None,
            relayed=before.response_headers if before.response_status is not None else None,
        )
    )


def _in_front(hop: Hop) -> Identity:
    """The proxy in front of a hop (a reverse listener's client), from the request it sent."""
    return proxies.identify(
        Sighting(received=hop.request_headers, received_version=hop.http_version)
    )


def _behind(hop: Hop) -> Identity:
    """What answered a hop, when its answer carries a proxy's signature."""
    if hop.response_status is None or hop.answered_by == Side.PROXY:
        return Identity(None)
    return proxies.identify(Sighting(relayed=hop.response_headers))


def _proxy_at(hops: list[Hop], position: int) -> Identity:
    """The proxy whose doing shows at hop `position`: the one in front of it."""
    if position == 1:
        return _in_front(hops[0])
    return _between(hops[position - 2], hops[position - 1])


def identify_proxy(session: Session, position: int) -> Identity:
    """The proxy in front of hop `position` (1-based: in front of hop 1, between hop
    `position - 1` and it), or behind the last hop for `position = len(hops) + 1`."""
    if position == len(session.hops) + 1:
        return _behind(session.hops[-1])
    return _proxy_at(session.hops, position)


def _proxy_finding(
    code: str, severity: Severity, position: int, message: str, identity: Identity, aspect: str
) -> Finding:
    """A finding whose fix is in the configuration language of the proxy `identity` names."""
    if identity.evidence:
        message += " " + identity.describe()
    dialect = identity.dialect
    return Finding(
        code,
        severity,
        position,
        message,
        proxies.fix(dialect, aspect),
        dialect.name if dialect else None,
    )


# ----- the handshake -------------------------------------------------------------------------


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
        _proxy_finding(
            "stripped-before-capture",
            Severity.ERROR,
            1,
            f"Hop 1 received a WebSocket handshake (Sec-WebSocket-Key and -Version are there) "
            f"without {' and '.join(missing)}. Clients always send them, so a proxy in front "
            f"of wsinspect stripped them: they are hop-by-hop headers, which proxies drop "
            f"unless told to pass them on.",
            _in_front(hop),
            "upgrade",
        )
    ]


def _http10(position: int, hop: Hop, previous: Hop | None, upgraded: bool) -> list[Finding]:
    if hop.http_version != "HTTP/1.0" or (previous and previous.http_version == "HTTP/1.0"):
        return []
    if previous is None:
        if not _is_handshake(hop):
            return []
        who = "whatever sent it to hop 1 (a proxy in front of wsinspect, or the client)"
        identity = _in_front(hop)
    else:
        who = f"the proxy between hop {position - 1} and hop {position}"
        identity = _between(previous, hop)
    return [
        _proxy_finding(
            "http10-upstream",
            Severity.WARNING if upgraded else Severity.ERROR,
            position,
            f"Hop {position} received the handshake as HTTP/1.0: {who} forwarded it with "
            f"HTTP/1.0, which has no Upgrade mechanism.",
            identity,
            "http11",
        )
    ]


def _dropped_at(position: int, before: Hop, after: Hop) -> list[Finding]:
    findings = []
    between = f"the proxy between hop {position - 1} and hop {position}"
    identity = _between(before, after)
    if _has_upgrade(before.request_headers) and not _has_upgrade(after.request_headers):
        now = header_value(after.request_headers, "Upgrade")
        what = "dropped it" if now is None else f"rewrote it to {now!r}"
        findings.append(
            _proxy_finding(
                "upgrade-dropped",
                Severity.ERROR,
                position,
                f"Hop {position - 1} received Upgrade: websocket but hop {position} did not: "
                f"{between} {what}. Upgrade is a hop-by-hop header, so proxies drop it unless "
                f"told to pass it on.",
                identity,
                "upgrade",
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
            _proxy_finding(
                "connection-dropped",
                Severity.ERROR,
                position,
                f"Hop {position - 1}'s Connection header carried the 'upgrade' token but hop "
                f"{position}'s did not: {between} {what}.",
                identity,
                "upgrade",
            )
        )
    return findings


def _host_changed(position: int, before: Hop, after: Hop) -> list[Finding]:
    old = header_value(before.request_headers, "Host")
    new = header_value(after.request_headers, "Host")
    if old is None or new is None or old.lower() == new.lower():
        return []
    return [
        _proxy_finding(
            "host-changed",
            Severity.INFO,
            position,
            f"The proxy between hop {position - 1} and hop {position} sent Host: {new} instead "
            f"of the client's {old} (proxies often send their backend's address unless told "
            f"otherwise); servers that check Host or Origin may refuse the upgrade.",
            _between(before, after),
            "host",
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
    if hops[depth].answered_by == Side.PROXY:
        refusal = (hops[depth].error or "no reason given").rstrip(".")  # mitmproxy ends with "."
        return [
            Finding(
                "handshake-rejected",
                Severity.ERROR,
                depth + 1,
                f"The upgrade was answered with {answer} by the proxy at hop {depth + 1} "
                f"itself, which refused the request: {refusal}.",
                REFUSED_FIX,
            )
        ]
    message = f"The upgrade was answered with {answer} instead of 101 Switching Protocols; "
    if depth + 1 == len(hops):
        identity = _behind(hops[depth])
        message += f"{_server_behind(hops[depth], depth + 1)} produced that answer"
        dialect = identity.dialect
        if dialect is None:
            return [
                Finding(
                    "handshake-rejected", Severity.ERROR, depth + 1, message + ".",
                    SERVER_REJECTED_FIX,
                )
            ]
        # A proxy answered: it either refused itself or relayed its backend's refusal.
        return [
            Finding(
                "handshake-rejected",
                Severity.ERROR,
                depth + 1,
                f"{message} (or relayed it from its own backend). {identity.describe()}",
                proxies.fix(dialect, "answered")
                + f"\nIf its backend refused the upgrade, {dialect.title} did not pass it on: "
                + dialect.upgrade,
                dialect.name,
            )
        ]
    deeper = hops[depth + 1]
    if deeper.response_status is None:
        got = f"got no answer ({deeper.error})" if deeper.error else "got no answer"
    else:
        got = f"got {deeper.response_status}"
    message += (
        f"the proxy between hop {depth + 1} and hop {depth + 2} (hop {depth + 2} {got}) "
        f"produced that answer."
    )
    return [
        _proxy_finding(
            "handshake-rejected",
            Severity.ERROR,
            depth + 1,
            message,
            _between(hops[depth], deeper),
            "answered",
        )
    ]


# ----- no answer at all ----------------------------------------------------------------------

REFUSED_SIGNS = ("connect call failed", "connection refused", "errno 111")
DNS_SIGNS = (
    "name resolution",
    "name or service not known",
    "nodename nor servname",
    "no address associated",
    "getaddrinfo",
    "errno -2]",
    "errno -3]",
    "errno -5]",
)
TLS_SIGNS = ("certificate", "tls", "ssl")
TIMEOUT_SIGNS = ("timed out", "timeout", "errno 110")
CLIENT_GAVE_UP = "client disconnected"


def _target(hop: Hop) -> tuple[str, str]:
    """The server a hop tried to reach, as "host:port", and its host."""
    if hop.mode.startswith("reverse:"):
        url = urlsplit(hop.mode[len("reverse:") :].rsplit("@", 1)[0])
    else:
        url = urlsplit(hop.url)
    if hop.server_addr:
        host, port = str(hop.server_addr[0]), hop.server_addr[1]
    else:
        host = url.hostname or "?"
        port = url.port or (443 if url.scheme in ("https", "wss") else 80)
    return f"{host}:{port}", host


def _unreachable(hops: list[Hop]) -> list[Finding]:
    """A hop that got no answer at all: its server was refused, unknown, untrusted or silent."""
    findings = []
    for position, hop in enumerate(hops, start=1):
        if hop.outcome is not Outcome.FAILED or hop.response_status is not None:
            continue
        error = hop.error or "no answer"
        text = error.lower()
        address, host = _target(hop)
        where = f"Hop {position} ({hop.mode})"
        if hop.mode.startswith("reverse:"):
            aim = "the reverse listener's target (--mode reverse:http://HOST:PORT@…)"
        else:
            aim = "the client"
        if any(sign in text for sign in REFUSED_SIGNS):
            code, what = "server-unreachable", f"the connection to {address} was refused"
            fix = (
                f"Start the WebSocket server on {address}, or point {aim} at the address "
                f"where it listens."
            )
        elif any(sign in text for sign in DNS_SIGNS):
            code, what = "server-unreachable", f"the name {host} could not be resolved"
            fix = (
                f"Use a host name that resolves on the machine wsinspect runs on (check its "
                f"spelling, DNS or /etc/hosts), or the server's IP address; then point {aim} "
                f"at it."
            )
        elif any(sign in text for sign in TLS_SIGNS):
            code, what = "upstream-tls", f"TLS with {address} failed"
            fix = (
                "For a self-signed backend, or one signed by a private CA, give wsinspect that "
                "CA: --set ssl_verify_upstream_trusted_ca=/path/to/ca.pem, or, for a test, skip "
                "the check with --set ssl_insecure=true. Otherwise fix the server's "
                f"certificate (a name matching {host}, not expired, the whole chain)."
            )
        elif any(sign in text for sign in TIMEOUT_SIGNS) or CLIENT_GAVE_UP in text:
            code = "server-timeout"
            waited = (hop.timestamp_end or hop.timestamp_start) - hop.timestamp_start
            if CLIENT_GAVE_UP in text:
                what = (
                    f"the client gave up after {waited:.1f} s without an answer from "
                    f"{address}"
                )
            else:
                what = f"the connection to {address} timed out after {waited:.1f} s"
            fix = (
                f"Check that the server at {address} is up and answers WebSocket handshakes: "
                "a server that accepts connections but never answers (stuck, overloaded, or "
                "another protocol on that port), or a firewall that drops packets, looks like "
                "this. If it is only slow, raise the client's handshake timeout."
            )
        else:
            code, what = "server-unreachable", f"{address} could not be reached"
            fix = f"Check that the server at {address} is up and reachable from wsinspect."
        findings.append(
            Finding(
                code,
                Severity.ERROR,
                position,
                f"{where} got no answer: {what} ({error}). The client got no WebSocket.",
                fix,
            )
        )
    return findings


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


# ----- the end -------------------------------------------------------------------------------


def _last_sign_of_life(hop: Hop) -> float:
    return max(
        t
        for t in (hop.timestamp_start, hop.timestamp_response, hop.stats.last_timestamp)
        if t is not None
    )


def connection_end(hop: Hop) -> float | None:
    """When a hop's connection ended: its close, else its end; None while open."""
    return hop.close.timestamp if hop.close and hop.close.timestamp else hop.timestamp_end


def _silence(hop: Hop) -> float | None:
    """Seconds between the hop's last sign of life and the end of its connection."""
    end = connection_end(hop)
    return None if end is None else max(0.0, end - _last_sign_of_life(hop))


@dataclass(frozen=True, slots=True)
class Cut:
    """The proxy between hop `position` and the next dropped both of its connections at
    once: hop `position` lost its server and the next hop its client, without close frames."""

    position: int
    silence: float  # seconds without a frame on either side before the cut
    apart: float  # seconds between the two connections' ends
    since: float  # the last sign of life on either side, when the silence began


def cut_across(hops: list[Hop]) -> Cut | None:
    for position, (before, after) in enumerate(zip(hops, hops[1:]), start=1):
        lost_server = before.close and before.close.abnormal and before.close.by == Side.SERVER
        lost_client = after.close and after.close.abnormal and after.close.by == Side.CLIENT
        ends = connection_end(before), connection_end(after)
        if not (lost_server and lost_client) or None in ends:
            continue
        apart = abs(ends[0] - ends[1])
        if apart <= CUT_WINDOW:
            last = max(_last_sign_of_life(before), _last_sign_of_life(after))
            return Cut(position, max(0.0, min(ends) - last), apart, last)
    return None


def _defaults_matching(silence: float, dialects: Iterable[proxies.Dialect]) -> list[str]:
    return [
        f"{d.title}'s {d.idle_setting} ({d.idle_default_text})"
        for d in dialects
        if d.idle_default is not None
        and abs(silence - d.idle_default) <= max(1.0, 0.05 * d.idle_default)
    ]


def _idle_timeout(position: int, message: str, silence: float, identity: Identity) -> Finding:
    dialect = identity.dialect
    if dialect is not None:
        default = (
            f"{dialect.idle_default_text} by default"
            if dialect.idle_default is not None
            else "no default of its own"
        )
        message += (
            f" {identity.describe()} Its idle timeout is {dialect.idle_setting} ({default})."
        )
        candidates = [dialect]
    else:
        if identity.evidence:
            message += " " + identity.describe()
        message += (
            " Common idle timeouts: "
            + ", ".join(
                f"{d.title} {d.idle_setting}"
                + (f" {d.idle_default_text}" if d.idle_default is not None else "")
                for d in proxies.DIALECTS.values()
            )
            + "."
        )
        candidates = list(proxies.DIALECTS.values())
    matching = _defaults_matching(silence, candidates)
    if matching:
        message += f" {silence:.0f} s matches the default of {' and '.join(matching)}."
    fix = (
        proxies.fix(dialect, "idle")
        + f"\nOr have the client or the server send a ping more often than the timeout "
        f"(more often than every {silence:.1f} s, the silence measured here)."
    )
    return Finding(
        "idle-timeout", Severity.WARNING, position, message, fix, dialect.name if dialect else None
    )


def _first_abnormal(hops: list[Hop]) -> int | None:
    """The position of the first hop that ended without a close frame."""
    return next(
        (i for i, hop in enumerate(hops, start=1) if hop.close and hop.close.abnormal), None
    )


def _idle(hops: list[Hop], position: int, cut: Cut | None) -> tuple[float, float] | None:
    """The silence before the abnormal end at hop `position` that makes it an idle timeout,
    as (when it began, seconds): one across the cut, or with one side of the proxy captured
    (the cut cannot be seen on both then) the hop's own. With both captured, only a cut
    across them is an idle timeout."""
    if cut is not None and cut.silence >= IDLE_SILENCE:
        return cut.since, cut.silence
    hop = hops[position - 1]
    by = hop.close.by if hop.close else None
    client_left = by == Side.CLIENT and not hop.mode.startswith("reverse")
    other_side_unseen = (by == Side.SERVER and position == len(hops)) or (
        by == Side.CLIENT and position == 1 and not client_left
    )
    silence = _silence(hop)
    if other_side_unseen and silence is not None and silence >= IDLE_SILENCE:
        return _last_sign_of_life(hop), silence
    return None


def idle_silence(hops: list[Hop]) -> tuple[float, float] | None:
    """The silence the idle-timeout finding measured, as (when it began, seconds); None
    when there is no such finding."""
    position = _first_abnormal(hops)
    return None if position is None else _idle(hops, position, cut_across(hops))


def _abnormal(hops: list[Hop]) -> list[Finding]:
    position = _first_abnormal(hops)
    if position is None:
        return []
    hop = hops[position - 1]
    close = hop.close
    assert close is not None
    what = close.abnormal_reason or f"the {close.by or 'peer'} connection was lost"
    message = f"The WebSocket ended without a close frame at hop {position}: {what}."
    deeper = hops[position] if position < len(hops) else None
    if close.by == Side.SERVER and deeper and deeper.close and deeper.close.abnormal:
        message += (
            f" Hop {position + 1} lost its connection the same way, so the proxy between hop "
            f"{position} and hop {position + 1} cut both sides."
        )
    told = close.told_survivor()
    if told is not None:
        code, reason = told
        message += (
            f" The {close.by} died; the proxy told the {close.survivor} close {code}"
            + (f" {reason!r}" if reason else " with no reason")
            + (", as if all was well." if code == 1000 else ".")
        )
    # A client that hangs up on a listener it talks to directly is no proxy's doing; a
    # reverse listener's client is the proxy in front of it.
    client_left = close.by == Side.CLIENT and not hop.mode.startswith("reverse")
    cut = cut_across(hops)
    if cut is not None:
        identity = _proxy_at(hops, cut.position + 1)
    elif close.by == Side.SERVER:
        identity = _between(hop, deeper) if deeper else _behind(hop)
    elif not client_left:
        identity = _proxy_at(hops, position)
    else:
        identity = Identity(None)
    closed = Finding(
        "abnormal-close",
        Severity.WARNING,
        position,
        message,
        (
            proxies.fix(identity.dialect, "answered") + "\n" + CLEAN_CLOSE_ADVICE
            if identity.dialect or not client_left
            else CLEAN_CLOSE_ADVICE
        ),
        identity.dialect.name if identity.dialect else None,
    )
    idle = _idle(hops, position, cut)
    if idle is None:
        return [closed]
    _, silence = idle
    if cut is not None and cut.silence >= IDLE_SILENCE:
        idle_finding = _idle_timeout(
            cut.position,
            f"No frame passed for {cut.silence:.2f} s on either side of the proxy between "
            f"hop {cut.position} and hop {cut.position + 1}; then it dropped both of its "
            f"connections at the same moment ({cut.apart * 1000:.0f} ms apart: hop "
            f"{cut.position} lost its server, hop {cut.position + 1} its client), without a "
            f"close frame: that proxy's idle timeout, about {cut.silence:.1f} s.",
            silence,
            identity,
        )
    else:
        idle_finding = _idle_timeout(
            position,
            f"No frame passed for {silence:.2f} s before the connection was cut at hop "
            f"{position}, without a close frame: that looks like a proxy's idle timeout "
            f"(only one side of it was captured, so the cut could not be seen on both).",
            silence,
            identity,
        )
    return [closed, idle_finding]


def _peer_reaction(hop: Hop, peer: str) -> str:
    """What the side that received a bad frame did about it, as the record shows."""
    close = hop.close
    if close is None:
        return f"the {peer} has not closed the connection so far"
    offender = Side(peer).peer
    told = close.told(offender)  # the peer's close frame, under the raw relay
    if told is not None:
        code = "an empty close frame" if told[0] is None else f"close {told[0]}"
        verb = "closed with" if close.by == peer else "answered with"
        return f"the {peer} {verb} {code}" + (f" {told[1]!r}" if told[1] else "")
    if close.by == peer:
        how = getattr(close, f"{peer}_end")
        ended = "reset" if how == ConnectionEnd.RESET else "closed"
        return f"the {peer} {ended} the connection without a close frame"
    return f"the {peer} did not close the connection over it (the {close.by} ended the session)"


def _protocol_errors(hops: list[Hop]) -> list[Finding]:
    """A side sent a frame that breaks RFC 6455: the raw relay passed it on and the record
    shows how the peer reacted; mitmproxy's path closed both sides itself."""
    findings = []
    for position, hop in enumerate(hops, start=1):
        if hop.violations:
            first = hop.violations[0]
            peer = first.sender.peer
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
        if close is None or close.by != Side.PROXY or close.offender is None:
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
    findings += _unreachable(hops)
    findings += _rejected(session) + _accept_mismatch(hops) + _abnormal(hops)
    findings += _protocol_errors(hops)
    return sorted(findings, key=lambda f: f.hop)


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The most severe finding's severity (for a badge), None without findings."""
    return max((f.severity for f in findings), key=lambda s: s.rank, default=None)
