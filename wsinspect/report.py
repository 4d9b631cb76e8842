"""`wsinspect report`: what a capture holds, as text for people and JSON for scripts.

The JSON schema ("wsinspect-report/1") is documented in README.md; keep it stable.
"""

from __future__ import annotations

import dataclasses
import time

from . import diagnosis, timeline
from .formats.redact import redact_text
from .model import Hop, MessageType, Session, Side, SideEnd
from .protocols import ProtocolSummary, summarise
from .store import SessionStore
from .text import printable  # also imported from here by modules older than wsinspect.text

REPORT_FORMAT = "wsinspect-report/1"


def _error(text: str | None) -> str | None:
    """An error text as the report shows it: a refused request's error quotes its whole request
    line, so the URLs in it are masked as exports mask URLs (the capture keeps it whole)."""
    return redact_text(text) if text else text


def hop_json(hop: Hop, position: int) -> dict:
    return {
        "index": position,
        "mode": hop.mode,
        "http_version": hop.http_version,
        "request_line": hop.request_line,
        "client_addr": list(hop.client_addr) if hop.client_addr else None,
        "server_addr": list(hop.server_addr) if hop.server_addr else None,
        "request_headers": [[k, v] for k, v in hop.request_headers],
        "response_status": hop.response_status,
        "response_reason": hop.response_reason,
        "response_headers": [[k, v] for k, v in hop.response_headers],
        "outcome": hop.outcome.value,
        "error": _error(hop.error),
        "answered_by": hop.answered_by,
        "violations": [v.to_json() for v in hop.violations],
        "timestamp_start": hop.timestamp_start,
        "timestamp_end": hop.timestamp_end,
        "capture": hop.capture,
        "end": {side: hop.close.end_of(side).to_json() for side in (Side.CLIENT, Side.SERVER)}
        if hop.close
        else None,
    }


def session_json(session: Session) -> dict:
    stats = session.stats
    close = session.close
    # The server of the whole path is the backend: what the last hop's server side saw.
    backend = session.end_of(Side.SERVER)
    client = session.end_of(Side.CLIENT)
    return {
        "id": session.id,
        "url": session.url,
        "outcome": session.outcome.value,
        "status": session.status,
        "timestamp_start": session.timestamp_start,
        "timestamp_end": session.timestamp_end,
        "hops": [hop_json(hop, i) for i, hop in enumerate(session.hops, start=1)],
        "messages": {
            "from_client": stats.from_client,
            "from_server": stats.from_server,
            "bytes": stats.bytes,
            **{t.value: stats.by_type.get(t.value, 0) for t in MessageType},
        },
        "close": {
            "code": close.code if close else None,
            "reason": close.reason if close else "",
            "by": close.by if close else None,
            "abnormal": close.abnormal if close else False,
            "abnormal_reason": _error(close.abnormal_reason) if close else None,
            "offender": close.offender if close else None,
            "told_client": list(client.told) if client and client.told else None,
            "told_server": list(backend.told) if backend and backend.told else None,
            "client_end": client.connection_end if client else None,
            "server_end": backend.connection_end if backend else None,
            "client": client.to_json() if client else None,
            "backend": backend.to_json() if backend else None,
        },
        "ping_rtt": dataclasses.asdict(session.ping_rtt) if session.ping_rtt else None,
        "error": _error(session.first_hop.error),
        "findings": [f.to_json() for f in diagnosis.diagnose(session)],
    }


def has_findings(store: SessionStore, at_least: str) -> bool:
    """Whether any session has a finding of severity `at_least` ("error", "warning", "info")
    or worse: `wsinspect report --fail-on` exits 1 then."""
    threshold = diagnosis.Severity(at_least).rank
    return any(
        f.severity.rank >= threshold for s in store.sessions() for f in diagnosis.diagnose(s)
    )


def protocol_summary(store: SessionStore, session: Session) -> ProtocolSummary:
    """Hop 1's application protocol, its messages by label and its calls."""
    hop = session.first_hop
    return summarise(lambda: store.iter_messages(hop.id), hop.request_headers,
                     hop.response_headers, hop.url)


def protocol_text(summary: ProtocolSummary) -> str | None:
    """"socket.io, 4 calls: 3 answered (p50 1.2 ms, max 9.0 ms), 1 unanswered; slowest
    upload 9.0 ms (#7)", or None when the session speaks no protocol wsinspect knows."""
    if summary.protocol is None:
        return None
    stats = summary.stats
    text = f"{summary.protocol}, {plural(stats.calls, 'call')}"
    if stats.calls:
        text += f": {stats.answered} answered"
        if stats.answered:
            text += (f" (p50 {stats.latency_p50 * 1000:.1f} ms, "
                     f"max {stats.latency_max * 1000:.1f} ms)")
        text += f", {stats.unanswered} unanswered"
    if stats.slowest:
        slowest = stats.slowest[0]
        text += f"; slowest {slowest.label} {slowest.latency * 1000:.1f} ms (#{slowest.index})"
    return text


def report_json(store: SessionStore) -> dict:
    return {
        "format": REPORT_FORMAT,
        "sessions": [
            {
                **session_json(s),
                "timeline": over_time_json(over_time(store, s)),
                "application_protocol": protocol_summary(store, s).to_json(),
            }
            for s in store.sessions()
        ],
    }


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def close_text(session: Session) -> str:
    close = session.close
    if close is None:
        return _error(session.first_hop.error) or ""
    if close.abnormal:
        told = close.told_survivor()
        told_text = f"; the {close.survivor} was told {told[0]}" if told else ""
        return f"abnormal: {_error(close.abnormal_reason)}{told_text}"
    code = close.code if close.code is not None else "close with no status code"
    reason = f" {close.reason!r}" if close.reason else ""
    offender = f" (the {close.offender} broke the protocol)" if close.offender else ""
    return f"{code}{reason} by {close.by}{offender}"


def close_frame_text(frame: tuple[int | None, str] | None) -> str:
    """"close 1000 'bye'", "an empty close frame" or "no close frame"."""
    if frame is None:
        return "no close frame"
    code, reason = frame
    if code is None:
        return "an empty close frame"
    return f"close {code}" + (f" {reason!r}" if reason else "")


CONNECTION_ENDS = {"fin": "FIN", "reset": "reset (RST)"}


def side_end_parts(end: SideEnd, who: str) -> list[str]:
    """How one side (`who`) saw its WebSocket end, in parts: "sent close 1000, was told close
    1000", "the client's connection ended with a FIN", "the proxy sent the client a FIN". A
    close frame the proxy did not see is not claimed unsent: mitmproxy's own relay ends both
    connections after the first close frame, before an answer arrives."""
    sent = f"sent {close_frame_text(end.sent)}" if end.sent else "no close frame from it seen"
    parts = [f"{sent}, was told {close_frame_text(end.told)}"]
    if end.connection_end is not None:
        parts.append(
            f"the {who}'s connection ended with a {CONNECTION_ENDS[end.connection_end]}"
        )
    if end.told_connection_end is not None:
        parts.append(f"the proxy sent the {who} a {CONNECTION_ENDS[end.told_connection_end]}")
    return parts


def rtt_text(session: Session) -> str | None:
    """"3 pings answered, round trip 0.4/1.2/3.0 ms (min/mean/max)", or None without any."""
    rtt = session.ping_rtt
    if rtt is None:
        return None
    ms = "/".join(f"{value * 1000:.1f}" for value in (rtt.min, rtt.mean, rtt.max))
    return f"{plural(rtt.count, 'ping')} answered, round trip {ms} ms (min/mean/max)"


def destination(hop: Hop) -> str:
    """The suffix " to host:port" for a transparent hop: the address its client really
    connected to, which the URL (built from the Host header) need not show."""
    if hop.server_addr and hop.mode.startswith("transparent"):
        host, port = hop.server_addr[:2]
        return f" to [{host}]:{port}" if ":" in host else f" to {host}:{port}"
    return ""


def plural(count: int, noun: str) -> str:
    """"1 session", "2 sessions"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def session_text(
    session: Session,
    figures: timeline.Figures | None = None,
    protocol: ProtocolSummary | None = None,
) -> list[str]:
    """The report's lines for one session. Each line is made printable whole (not field by
    field), so no recorded value can add a line or a control sequence whichever field holds
    it."""
    stats = session.stats
    status = session.status if session.status is not None else "-"
    lines = [
        f"#{session.id} {session.url}  {session.outcome.value}  {status}  hops {len(session.hops)}"
    ]
    for i, hop in enumerate(session.hops, start=1):
        answer = (
            f"{hop.response_status} {hop.response_reason}"
            if hop.response_status is not None
            else (_error(hop.error) or "no response")
        )
        source = f" (from {hop.capture})" if hop.capture else ""
        lines.append(
            f"  hop {i} [{hop.mode}]{destination(hop)} {hop.request_line} -> {answer}{source}"
        )
    by_type = ", ".join(f"{t} {n}" for t, n in sorted(stats.by_type.items()))
    lines.append(
        f"  messages: {stats.from_client} from client, {stats.from_server} from server, "
        f"{_size(stats.bytes)}" + (f" ({by_type})" if by_type else "")
    )
    if protocol is not None and (calls := protocol_text(protocol)):
        lines.append(f"  protocol: {calls}")
    if (pings := rtt_text(session)):
        lines.append(f"  pings: {pings}")
    if figures is not None:
        lines.append(f"  over time: {over_time_text(figures)}")
    if (ended := close_text(session)):
        lines.append(f"  end: {ended}")
    for side, who in ((Side.CLIENT, "client"), (Side.SERVER, "backend")):
        if (end := session.end_of(side)) is not None:
            lines.append(f"  {who}'s end: {'; '.join(side_end_parts(end, who))}")
    for boundary in diagnosis.boundaries(session):
        lines += boundary_text(boundary)
    fixes_shown: set[str] = set()
    for finding in diagnosis.diagnose(session):
        lines += finding_text(finding, fix_shown=finding.fix in fixes_shown)
        fixes_shown.add(finding.fix)
    return [printable(line) for line in lines]


def boundary_text(boundary: diagnosis.HopBoundary) -> list[str]:
    """The headers the proxy between two hops did not keep (hop-by-hop ones marked *)."""
    lines = []
    for direction, changes in (("request", boundary.request), ("response", boundary.response)):
        altered = [
            f"{c.change.value} {c.name}{'*' if c.hop_by_hop else ''}"
            + (f" {c.before!r} -> {c.after!r}" if c.change is diagnosis.Change.CHANGED else "")
            for c in changes
            if c.change is not diagnosis.Change.KEPT
        ]
        if altered:
            lines.append(
                f"  hop {boundary.index} -> {boundary.index + 1} {direction}: "
                + "; ".join(altered)
            )
    return [printable(line) for line in lines]


def finding_text(finding: diagnosis.Finding, fix_shown: bool = False) -> list[str]:
    lines = [f"  {finding.severity.value} {finding.code} (hop {finding.hop}): {finding.message}"]
    if fix_shown:
        lines.append("    fix: as above")
    else:
        first, *more = finding.fix.splitlines() or [""]
        lines.append("    fix: " + first)
        lines += ["         " + line for line in more]
    return [printable(line) for line in lines]


def report_text(store: SessionStore) -> str:
    sessions = store.sessions()
    if not sessions:
        return "no WebSocket sessions recorded"
    lines = []
    for session in sessions:
        lines += session_text(session, over_time(store, session), protocol_summary(store, session))
    lines.append(plural(len(sessions), "session"))
    return "\n".join(lines)


# ----- over time: the figures of the app's Timeline tab -------------------------------------


def over_time(store: SessionStore, session: Session) -> timeline.Figures | None:
    """A session's peak rates, silences and ping round trips, None if it never upgraded."""
    if session.status != 101:
        return None
    return timeline.session_figures(session, store.iter_timings(session.first_hop.id))


def over_time_json(figures: timeline.Figures | None) -> dict | None:
    return None if figures is None else figures.to_json()


def over_time_text(figures: timeline.Figures) -> str:
    """"peak 51/s (9.8 KiB/s) from the client; peak 6/s (9.8 KiB/s) from the server;
    3 silences of 0.50 s or more, the longest 60.45 s (the idle timeout); ping round trip p50
    18.0 ms, max 50.0 ms": peaks are the busiest whole second of the session."""
    peaks = "; ".join(
        f"peak {peak.messages}/s ({_size(peak.bytes)}/s) from the {side}"
        for side, peak in (("client", figures.peak_client), ("server", figures.peak_server))
    )
    longest = figures.max_silence
    silence = f"{plural(figures.silences, 'silence')} of {timeline.SILENCE:.2f} s or more"
    if longest is not None:
        idle = " (the idle timeout)" if longest.idle_timeout else ""
        silence += f", the longest {longest.seconds:.2f} s{idle}"
    text = f"{peaks}; {silence}"
    if figures.rtt is not None:
        text += (
            f"; ping round trip p50 {figures.rtt.p50 * 1000:.1f} ms, "
            f"max {figures.rtt.max * 1000:.1f} ms"
        )
    return text


def _clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def upgrade_line(session: Session) -> str:
    """The line headless mode prints when an upgrade attempt appears."""
    hop = session.first_hop
    return printable(
        f"{_clock(hop.timestamp_start)} #{session.id} upgrade  {hop.request_line} "
        f"({session.url}) via {hop.mode}{destination(hop)}"
    )


def event_line(session: Session) -> str:
    """The line headless mode prints when a session's outcome or hops change."""
    stamp = _clock(session.last_activity)
    status = session.status if session.status is not None else "-"
    detail = close_text(session) if session.outcome.value != "open" else ""
    hops = f" hops={len(session.hops)}" if len(session.hops) > 1 else ""
    return printable(
        f"{stamp} #{session.id} {session.outcome.value:<8} {status} {session.url}"
        f"{hops} msgs={session.stats.count}" + (f" {detail}" if detail else "")
    )


def log_line(timestamp: float, level: str, message: str) -> str:
    """The line headless mode prints for a proxy warning or error (a client's failed TLS
    handshake, a transparent-mode failure): their text quotes what peers sent."""
    return printable(f"{_clock(timestamp)} proxy {level}: {message}")
