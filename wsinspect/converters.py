"""Pure converters from mitmproxy's HTTP objects to wsinspect's model.

Used by the recorder (live flows) and the flow-file reader (saved flows). They read only
mitmproxy's plain data classes (Request, Headers, HTTPFlow), never its proxy layers, so reading
a capture does not load the proxy core.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .http_rules import as_ws_url, header_tokens
from .model import Hop

if TYPE_CHECKING:
    from mitmproxy import http


# wsproto reports a connection lost without a close frame as code 1006, which never travels
# on the wire.
ABNORMAL_CLOSURE = 1006


def is_upgrade_attempt(request: http.Request) -> bool:
    return "websocket" in header_tokens(
        header_pairs(request.headers), "Upgrade"
    ) or "Sec-WebSocket-Key" in request.headers


def header_pairs(headers: http.Headers) -> list[tuple[str, str]]:
    """Headers in wire order with their original case."""
    return [
        (k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.fields
    ]


def _request_line(flow: http.HTTPFlow, absolute_form: bool) -> str:
    """The request line as the client sent it (origin or absolute form); in upstream mode,
    as the proxy sent it on to the upstream proxy."""
    request = flow.request
    if _sent_to_upstream_proxy(flow):
        # mitmproxy keeps the authority of a plain HTTP/1 request in upstream mode and writes
        # the request line in absolute form with the scheme it speaks (http, also for ws://).
        target = f"{request.scheme}://{request.authority}{request.path}"
    elif absolute_form:
        scheme = getattr(request, "wsinspect_scheme", request.scheme)  # see seams: ws:// scheme
        target = f"{scheme}://{request.host_header or request.authority}{request.path}"
    else:
        target = request.path
    return f"{request.method} {target} {request.http_version}"


def _sent_to_upstream_proxy(flow: http.HTTPFlow) -> bool:
    """Whether the request went to an upstream proxy as an absolute-form request: upstream
    mode, HTTP/1, outside a CONNECT tunnel (inside one it travels in origin form)."""
    request = flow.request
    return (
        flow.client_conn.proxy_mode.type_name == "upstream"
        and bool(request.authority)
        and not (request.is_http2 or request.is_http3)
    )


def _ws_url(request: http.Request) -> str:
    url = request.pretty_url
    host = request.pretty_host  # pretty_url drops an IPv6 literal's brackets
    scheme, sep, rest = url.partition("://")
    if ":" in host and rest.startswith(host):
        url = f"{scheme}{sep}[{host}]{rest[len(host):]}"
    return as_ws_url(url)


def hop_from_request(flow: http.HTTPFlow, absolute_form: bool = False) -> Hop:
    request = flow.request
    return Hop(
        mode=flow.client_conn.proxy_mode.full_spec,
        url=_ws_url(request),
        request_line=_request_line(flow, absolute_form),
        http_version=request.http_version,
        request_headers=header_pairs(request.headers),
        timestamp_start=request.timestamp_start or time.time(),
        client_addr=tuple(flow.client_conn.peername[:2]) if flow.client_conn.peername else None,
        server_addr=tuple(flow.server_conn.address[:2]) if flow.server_conn.address else None,
        flow_id=flow.id,
    )
