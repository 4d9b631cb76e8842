"""Masking credentials in exports, which are made to be shared.

Masked: Authorization and Proxy-Authorization (the scheme is kept), Cookie and Set-Cookie
(cookie names and Set-Cookie attributes are kept), other headers whose name looks like a secret
(X-Api-Key, X-Auth-Token…), token-like query parameters in URLs, request lines, Referer and
Location, and passwords in URLs. Sec-WebSocket-Key and -Accept are nonces, not secrets: they
are kept, since hops are matched by them. Payloads are kept: they are what is being shared.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import unquote_plus

from ..model import Hop

MASK = "REDACTED"

_SCHEME_HEADERS = {"authorization", "proxy-authorization"}
_URL_HEADERS = {"referer", "location", "content-location"}
_NOT_SECRET_HEADERS = {"sec-websocket-key", "sec-websocket-accept"}
_SECRET_WORDS = (
    "token", "secret", "passw", "auth", "apikey", "signature", "credential", "session", "jwt"
)
_SECRET_NAMES = {"key", "sig", "pwd", "pass"}


def is_secret_name(name: str) -> bool:
    """Whether a query parameter or header name looks like it carries a credential."""
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    return (
        squashed in _SECRET_NAMES
        or squashed.endswith("key")
        or any(word in squashed for word in _SECRET_WORDS)
    )


def redact_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, eq, _value = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and is_secret_name(unquote_plus(name)) else part)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """Mask token-like query parameters and a password in the userinfo; absolute URLs and
    origin-form targets alike, the rest of the text unchanged."""
    url = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@?#:]*):[^/@?#]*@", rf"\1:{MASK}@", url)
    base, hash_, fragment = url.partition("#")
    path, question, query = base.partition("?")
    if question:
        base = path + "?" + redact_query(query)
    return base + hash_ + fragment


def redact_header(name: str, value: str) -> str:
    lname = name.lower()
    if lname in _NOT_SECRET_HEADERS:
        return value
    if lname in _SCHEME_HEADERS:
        scheme, space, _credentials = value.strip().partition(" ")
        return f"{scheme} {MASK}" if space else MASK
    if lname == "cookie":
        return "; ".join(
            f"{pair.partition('=')[0].strip()}={MASK}" for pair in value.split(";") if pair.strip()
        )
    if lname == "set-cookie":
        first, semicolon, attributes = value.partition(";")
        return f"{first.partition('=')[0].strip()}={MASK}" + semicolon + attributes
    if lname in _URL_HEADERS:
        return redact_url(value)
    if is_secret_name(name):
        return MASK
    return value


def redact_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, redact_header(name, value)) for name, value in headers]


def redact_request_line(line: str) -> str:
    method, _, rest = line.partition(" ")
    target, space, version = rest.rpartition(" ")
    if not space:
        return line
    return f"{method} {redact_url(target)} {version}"


def redact_hop(hop: Hop) -> Hop:
    """A copy of `hop` with its credentials masked (same id, stats and messages)."""
    return dataclasses.replace(
        hop,
        url=redact_url(hop.url),
        request_line=redact_request_line(hop.request_line),
        request_headers=redact_headers(hop.request_headers),
        response_headers=redact_headers(hop.response_headers),
    )
