"""The handshake of each hop as display text: request, response and what they negotiated."""

from __future__ import annotations

from ..model import (
    Close, Hop, Session, Side, Violation, accept_for_key, header_tokens, header_value,
)
from ..report import side_end_parts
from .colours import Colours
from .format import SafeText


def _addr(addr: tuple[str, int] | None) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else "?"


def _headers(text: SafeText, headers: list[tuple[str, str]]) -> None:
    for name, value in headers:
        text.append(SafeText.line(f"  {name}", style="bold"))
        text.append(SafeText.line(f": {value}"))
        text.append("\n")


def accept_check(hop: Hop) -> tuple[bool | None, str]:
    """Whether the response's Sec-WebSocket-Accept answers the request's key, in words."""
    key = hop.websocket_key
    accept = header_value(hop.response_headers, "Sec-WebSocket-Accept")
    if hop.response_status is None:
        return None, "no response"
    if key is None:
        return False, "the request has no Sec-WebSocket-Key"
    expected = accept_for_key(key)
    if accept is None:
        if hop.response_status == 101:
            return False, f"missing; the key {key} calls for {expected}"
        return None, f"not sent (status {hop.response_status})"
    if accept.strip() == expected:
        return True, f"{accept} matches the key"
    return False, f"{accept} does not match the key; expected {expected}"


def negotiated(hop: Hop, header: str) -> str:
    """What the client offered in `header` and what the server chose."""
    offered = header_value(hop.request_headers, header)
    chosen = header_value(hop.response_headers, header)
    if offered is None and chosen is None:
        return "none"
    return f"offered {offered or '(none)'}; chosen {chosen or '(none)'}"


def hop_text(hop: Hop, position: int, colours: Colours) -> SafeText:
    text = SafeText()
    text.append(f"Hop {position}", style="bold reverse")
    text.append(
        f"  {hop.mode}  client {_addr(hop.client_addr)} → server "
        f"{_addr(hop.server_addr)}  {hop.outcome.value}"
    )
    if hop.capture:  # several captures lined up: the one this hop was read from
        text.append(SafeText.line(f"  from {hop.capture}"))
    text.append("\n")
    text.append("Request\n", style="bold underline")
    text.append(SafeText.line(f"  {hop.request_line}"))
    text.append("\n")
    _headers(text, hop.request_headers)
    text.append("Response", style="bold underline")
    if hop.response_status is None:
        text.append("\n  none" + (f": {hop.error}" if hop.error else "") + "\n")
    else:
        if hop.timestamp_response is not None:
            text.append(f"  after {1000 * (hop.timestamp_response - hop.timestamp_start):.1f} ms")
        version = hop.response_http_version or hop.http_version
        text.append(
            f"\n  {version} {hop.response_status} {hop.response_reason}\n"
        )
        _headers(text, hop.response_headers)
    text.append("Negotiation\n", style="bold underline")
    ok, words = accept_check(hop)
    mark, style = {True: ("✓", colours["check--passed"]), False: ("✗", colours["check--failed"]),
                   None: ("-", "")}[ok]
    text.append(f"  {mark} ", style=style)
    text.append(f"Sec-WebSocket-Accept: {words}\n")
    text.append(f"  Subprotocol: {negotiated(hop, 'Sec-WebSocket-Protocol')}\n")
    text.append(f"  Extensions: {negotiated(hop, 'Sec-WebSocket-Extensions')}\n")
    upgrade = header_tokens(hop.request_headers, "Upgrade")
    connection = header_tokens(hop.request_headers, "Connection")
    if "websocket" not in upgrade or "upgrade" not in connection:
        text.append(
            "  ✗ the request lacks Upgrade: websocket / Connection: Upgrade\n",
            style=colours["check--failed"],
        )
    if hop.close is not None:
        text.append("End\n", style="bold underline")
        end_text(text, hop.close)
    elif hop.error:
        text.append("End\n", style="bold underline")
        text.append(f"  {hop.error}\n")
    if hop.violations:
        text.append("Protocol violations (RFC 6455)\n", style="bold underline")
        for violation in hop.violations:
            violation_text(text, violation, colours)
    return text


def end_text(text: SafeText, close: Close) -> None:
    """How the WebSocket ended, then how each side of this hop saw it: the close frames it
    sent and was told, and how its connection ended."""
    if close.abnormal:
        text.append(f"  abnormal: {close.abnormal_reason or ''}\n")
    else:
        code = close.code if close.code is not None else "(no status code)"
        reason = f" {close.reason!r}" if close.reason else ""
        offender = f" (the {close.offender} broke the protocol)" if close.offender else ""
        text.append(f"  close {code}{reason} by {close.by}{offender}\n")
    for side in (Side.CLIENT, Side.SERVER):
        first, *more = side_end_parts(close.end_of(side), side)
        for line in (f"  {side}: {first}", *(f"    {part}" for part in more)):
            text.append(SafeText.line(line))
            text.append("\n")


def violation_text(text: SafeText, violation: Violation, colours: Colours) -> None:
    """Who sent the frame and the rule it breaks, then on a line of its own (a rule fills
    most of 80 columns) what exactly the frame did, which names its opcode where it matters."""
    text.append("  ✗ ", style=colours["check--failed"])
    text.append(SafeText.line(f"{violation.sender}: {violation.rule}", style="bold"))
    text.append("\n")
    text.append(SafeText.line(f"    {violation.detail}"))
    text.append("\n")


def session_handshakes(session: Session, colours: Colours) -> SafeText:
    parts = [hop_text(hop, i, colours) for i, hop in enumerate(session.hops, start=1)]
    return SafeText("\n").join(parts)
