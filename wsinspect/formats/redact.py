"""Masking credentials in exports, which are made to be shared.

Masked: Authorization and Proxy-Authorization (the scheme is kept), Cookie and Set-Cookie
(cookie names and Set-Cookie attributes are kept; a part without a name is masked whole), other
headers whose name looks like a secret (X-Api-Key, X-Auth-Token…), token-like subprotocols in
Sec-WebSocket-Protocol (`access_token, <JWT>` is how browsers pass a token to a WebSocket),
token-like query parameters and passwords in URLs wherever a URL appears: the URL, request
lines, Referer and Location, and the text of errors (a refused request's error quotes its
request line). Sec-WebSocket-Key and -Accept are nonces, not secrets: they are kept, since hops
are matched by them. Payloads are kept: they are what is being shared.
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
# A subprotocol that announces the credential in the next one: `access_token, <token>`.
_CREDENTIAL_MARKERS = {"bearer", "basic"}
# A JWT, or a long run of token characters with letters and digits: not a protocol name
# (graphql-transport-ws, v12.stomp, ocpp2.0.1 and wamp.2.json are kept).
_TOKEN_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_.-]*|(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9+/=_.~-]{20,}")
# Where a URL may sit in free text: from a scheme, or any word with a query in it.
# Quotes, brackets and parentheses around it are punctuation, not part of it.
_URL_IN_TEXT = re.compile(r"""[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>()\[\]]*|[^\s"'<>()\[\]]*\?[^\s"'<>()\[\]]*""")


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
    url = re.sub(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/@?#:\s]*):[^/@?#\s]*@", rf"\1:{MASK}@", url)
    base, hash_, fragment = url.partition("#")
    path, question, query = base.partition("?")
    if question:
        base = path + "?" + redact_query(query)
    return base + hash_ + fragment


def redact_text(text: str) -> str:
    """Free text (an error) with every URL in it masked as `redact_url` masks one; what
    `wsinspect report` and exports show of an error."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)


def _cookie_pair(pair: str) -> str:
    name, eq, _value = pair.partition("=")
    return f"{name.strip()}={MASK}" if eq else MASK


def redact_subprotocols(value: str) -> str:
    """Sec-WebSocket-Protocol values: token-like ones masked, and the one after a value that
    names a credential (`access_token`, `bearer`)."""
    protocols = []
    after_marker = False
    for protocol in value.split(","):
        bare = protocol.strip()
        secret = after_marker or bool(_TOKEN_LIKE.fullmatch(bare))
        protocols.append(protocol.replace(bare, MASK) if secret and bare else protocol)
        after_marker = is_secret_name(bare) or bare.lower() in _CREDENTIAL_MARKERS
    return ",".join(protocols)


def redact_header(name: str, value: str) -> str:
    lname = name.lower()
    if lname in _NOT_SECRET_HEADERS:
        return value
    if lname in _SCHEME_HEADERS:
        scheme, space, _credentials = value.strip().partition(" ")
        return f"{scheme} {MASK}" if space else MASK
    if lname == "cookie":
        return "; ".join(_cookie_pair(pair) for pair in value.split(";") if pair.strip())
    if lname == "set-cookie":
        first, semicolon, attributes = value.partition(";")
        return _cookie_pair(first) + semicolon + attributes
    if lname == "sec-websocket-protocol":
        return redact_subprotocols(value)
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
    close = hop.close
    if close is not None and close.abnormal_reason:
        close = dataclasses.replace(close, abnormal_reason=redact_text(close.abnormal_reason))
    return dataclasses.replace(
        hop,
        url=redact_url(hop.url),
        request_line=redact_request_line(hop.request_line),
        request_headers=redact_headers(hop.request_headers),
        response_headers=redact_headers(hop.response_headers),
        error=redact_text(hop.error) if hop.error else hop.error,
        close=close,
    )
