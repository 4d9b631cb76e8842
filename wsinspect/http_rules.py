"""What HTTP/1 and RFC 6455 say, written once: header lookup, which headers are hop-by-hop,
reading a message head, WebSocket URLs and close frame payloads.

Pure functions of text and bytes; it imports nothing of wsinspect, so the model, the readers,
the recorder, replay and the demo's stand-in proxy all read the rules from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Headers = Sequence[tuple[str, str]]

# ----- headers -------------------------------------------------------------------------------


def header_values(headers: Headers, name: str) -> list[str]:
    lname = name.lower()
    return [v for k, v in headers if k.lower() == lname]


def header_value(headers: Headers, name: str) -> str | None:
    values = header_values(headers, name)
    return ", ".join(values) if values else None


def header_tokens(headers: Headers, name: str) -> list[str]:
    """Comma-separated tokens of a header across all its lines, lower-cased."""
    return [
        token.strip().lower()
        for value in header_values(headers, name)
        for token in value.split(",")
        if token.strip()
    ]


# RFC 9110 7.6.1 and RFC 2616 13.5.1; any Proxy-* header, and any header a Connection header
# names, is hop-by-hop too.
HOP_BY_HOP = frozenset(
    {"connection", "upgrade", "keep-alive", "te", "trailer", "trailers", "transfer-encoding"}
)
# The handshake's own headers (RFC 6455 4.1): each connection makes them anew.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key", "sec-websocket-version", "sec-websocket-accept",
        "sec-websocket-extensions", "sec-websocket-protocol",
    }
)


def is_hop_by_hop(name: str, connection_tokens: Iterable[str] = ()) -> bool:
    lname = name.lower()
    return lname in HOP_BY_HOP or lname.startswith("proxy-") or lname in connection_tokens


def end_to_end(headers: Headers, drop: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The headers a proxy passes on, in order: not the hop-by-hop ones (including those the
    Connection header names), nor those named in `drop` (any case)."""
    connection = set(header_tokens(headers, "Connection"))
    dropped = {name.lower() for name in drop}
    return [
        (k, v) for k, v in headers if not is_hop_by_hop(k, connection) and k.lower() not in dropped
    ]


# ----- message heads -------------------------------------------------------------------------


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The first line and the headers (wire order, original case) of an HTTP/1 message head,
    with or without its blank line. A line without a colon is kept, as a name with no value:
    a head a proxy refused is shown as it came."""
    first, *lines = head.decode("latin-1").split("\r\n\r\n", 1)[0].split("\r\n")
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        headers.append((name.strip(), value.strip()) if sep else (line, ""))
    return first, headers


def request_line_parts(request_line: str) -> tuple[str, str, str]:
    """Method, target and HTTP version of a request line; "" for a part it lacks (a version
    only when the line has all three)."""
    parts = request_line.split(" ")
    target = parts[1] if len(parts) > 1 else ""
    return parts[0], target, parts[-1] if len(parts) == 3 else ""


def parse_status_line(status_line: str) -> tuple[str, int | None, str]:
    """Version, status (None unless digits) and reason of a response's first line."""
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    return version, int(code) if code.isdigit() else None, reason


# ----- WebSocket URLs ------------------------------------------------------------------------


def authority(host: str, port: int) -> str:
    """host:port, an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ws_url(secure: bool, host: str, port: int, resource: str) -> str:
    return f"{'wss' if secure else 'ws'}://{authority(host, port)}{resource}"


def as_ws_url(url: str) -> str:
    """An http:// or https:// URL as the ws:// or wss:// one it upgrades to; others unchanged."""
    for http, ws in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(http):
            return ws + url[len(http) :]
    return url


# ----- close frames (RFC 6455 5.5.1) ---------------------------------------------------------


def close_payload(code: int, reason: str = "") -> bytes:
    return int(code).to_bytes(2, "big") + reason.encode()


def close_code_reason(payload: bytes) -> tuple[int | None, str]:
    """Code and reason of a close frame's payload; (None, "") when it carries no code.
    Invalid UTF-8 in the reason is shown with replacement characters."""
    if len(payload) < 2:
        return None, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", errors="replace")
