"""Which proxy sits between two hops (or in front of, or behind, one), told from evidence on
the wire, and each proxy's configuration language for the fixes.

The signatures are what the real servers did to a WebSocket handshake, observed with nginx
1.22, Apache httpd 2.4, HAProxy 2.6, Caddy 2.6 and squid 5.7 (tests/test_proxies.py runs
them): headers they add, how they rewrite names and `Connection`, the `Server`/`Via` headers on
answers they send. Traefik and Envoy get fixes (from their documentation) but are never named
from the wire: no signature of theirs was observed.

Pure functions of header lists: no I/O, no UI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .model import header_tokens, header_value, header_values

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Dialect:
    """One proxy's fixes, each in its own configuration language."""

    name: str  # stable id: "nginx", "apache", ...
    title: str  # as people name it
    upgrade: str  # pass Upgrade and Connection on to the backend
    http11: str  # speak HTTP/1.1 to the backend
    host: str  # keep the client's Host
    idle_setting: str  # the setting that cuts a silent WebSocket
    idle_default: float | None  # its default in seconds; None: no default / not documented
    idle: str  # raise it
    answered: str  # where it says why it answered (or closed) itself

    @property
    def idle_default_text(self) -> str | None:
        """The default idle timeout as people write it: "60 s", "15 min"."""
        seconds = self.idle_default
        if seconds is None:
            return None
        return f"{seconds / 60:g} min" if seconds >= 120 and seconds % 60 == 0 else f"{seconds:g} s"


NGINX = Dialect(
    "nginx",
    "nginx",
    upgrade=(
        "in the http block:\n"
        "    map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n"
        "and in the location that proxies the WebSocket:\n"
        "    proxy_http_version 1.1;\n"
        "    proxy_set_header Upgrade $http_upgrade;\n"
        "    proxy_set_header Connection $connection_upgrade;"
    ),
    http11=(
        "in the location that proxies the WebSocket:\n"
        "    proxy_http_version 1.1;\n"
        "(nginx's default is 1.0; pass Upgrade and Connection on too, see upgrade-dropped.)"
    ),
    host="in the location:\n    proxy_set_header Host $http_host;",
    idle_setting="proxy_read_timeout",
    idle_default=60.0,
    idle=(
        "in the location that proxies the WebSocket:\n"
        "    proxy_read_timeout 1h;\n"
        "    proxy_send_timeout 1h;"
    ),
    answered=(
        "error.log names why it answered or closed itself (502: backend unreachable or it "
        "closed the connection, 'upstream prematurely closed connection'; 504: "
        "proxy_connect_timeout/proxy_read_timeout; 404/403: no location or an access rule "
        "matched the WebSocket path)."
    ),
)

APACHE = Dialect(
    "apache",
    "Apache httpd 2.4",
    upgrade=(
        "load mod_proxy and mod_proxy_http (2.4.47+) and let the WebSocket path upgrade:\n"
        "    ProxyPass /ws/ http://backend:8000/ws/ upgrade=websocket\n"
        "(before 2.4.47: LoadModule proxy_wstunnel_module and ProxyPass /ws/ "
        "ws://backend:8000/ws/). Without upgrade=websocket, mod_proxy_http drops Upgrade and "
        "sends Connection: Keep-Alive."
    ),
    http11=(
        "mod_proxy_http speaks HTTP/1.1 unless told not to: remove "
        "'SetEnv force-proxy-request-1.0 1' (and proxy-nokeepalive) for the WebSocket path."
    ),
    host="in the virtual host:\n    ProxyPreserveHost On",
    idle_setting="Timeout",
    idle_default=60.0,
    idle=(
        "a WebSocket tunnel idles out after the larger of Timeout (60 s by default) and "
        "ProxyTimeout (or timeout= on the ProxyPass line), so raise ProxyTimeout, or only the "
        "WebSocket route's:\n"
        "    ProxyPass /ws/ http://backend:8000/ws/ upgrade=websocket timeout=3600\n"
        "(a short ProxyTimeout alone never cuts a WebSocket; a short Timeout does, as "
        "ProxyTimeout defaults to it)."
    ),
    answered=(
        "the ErrorLog names why it answered itself (AH00957/AH01114: the backend refused "
        "the connection, 503; AH01102: error reading from the backend, 502)."
    ),
)

HAPROXY = Dialect(
    "haproxy",
    "HAProxy",
    upgrade=(
        "in mode http HAProxy forwards WebSocket upgrades by itself: remove any "
        "'http-request del-header'/'set-header' rule that touches Upgrade or Connection "
        "(or use mode tcp for the WebSocket frontend)."
    ),
    http11=(
        "HAProxy speaks HTTP/1.1 to servers; an HTTP/1.0 request came from its client side "
        "or an 'http-request set-...' rule."
    ),
    host="HAProxy passes Host unchanged: remove the 'http-request set-header Host' rule.",
    idle_setting="timeout tunnel",
    idle_default=None,
    idle=(
        "in the defaults or the backend section:\n"
        "    timeout tunnel 1h\n"
        "(an upgraded connection idles out after timeout tunnel; without one, after "
        "timeout client / timeout server)."
    ),
    answered=(
        "its log's termination state says why it answered itself ('SC': the server refused "
        "the connection; 503 'No server is available': every server is down; 'sD'/'cD': a "
        "server/client timeout)."
    ),
)

CADDY = Dialect(
    "caddy",
    "Caddy 2",
    upgrade=(
        "reverse_proxy forwards WebSocket upgrades by itself: remove header_up lines that "
        "delete or set Upgrade or Connection (such as 'header_up -Connection' or "
        "'header_up Connection close'); header_up edits are applied after Caddy restores "
        "Upgrade/Connection, so they undo it."
    ),
    http11=(
        "in reverse_proxy:\n"
        "    transport http {\n"
        "        versions 1.1 2\n"
        "    }\n"
        "(a WebSocket needs an HTTP/1.1 upstream request)."
    ),
    host=(
        "Caddy passes the client's Host by default: remove 'header_up Host "
        "{upstream_hostport}' from the reverse_proxy block."
    ),
    idle_setting="transport http read_timeout",
    idle_default=None,
    idle=(
        "in reverse_proxy (no read_timeout by default):\n"
        "    transport http {\n"
        "        read_timeout 1h\n"
        "    }"
    ),
    answered=(
        "its log (JSON, one line per error) says why it answered itself, e.g. 'dial tcp "
        "...: connect: connection refused' for a 502."
    ),
)

SQUID = Dialect(
    "squid",
    "squid",
    upgrade=(
        "squid 5+ strips Upgrade unless told which protocols to pass; in squid.conf:\n"
        "    http_upgrade_request_protocols websocket allow all\n"
        "    http_upgrade_request_protocols WebSocket allow all\n"
        "squid matches the protocol exactly as the client spells it in Upgrade: browsers and "
        "most clients send 'websocket' in lower case, so 'WebSocket' alone, as squid's own "
        "example writes it, matches nothing for them (a few clients, such as older versions "
        "of Python's wsproto, send 'WebSocket'). Clients that use CONNECT need the port "
        "allowed instead (http_access allow CONNECT to it)."
    ),
    http11="squid forwards HTTP/1.1; an HTTP/1.0 request came from its client side.",
    host="squid keeps Host: something in front of it rewrote it.",
    idle_setting="read_timeout",
    idle_default=900.0,
    idle="in squid.conf (15 minutes by default):\n    read_timeout 1 hour",
    answered=(
        "the X-Squid-Error header of its answer and cache.log say why it answered itself "
        "(ERR_CONNECT_FAIL 111: the server refused the connection)."
    ),
)

TRAEFIK = Dialect(
    "traefik",
    "Traefik",
    upgrade=(
        "Traefik forwards WebSocket upgrades by itself: remove a headers middleware that "
        "sets or deletes Upgrade or Connection on the WebSocket router."
    ),
    http11="Traefik speaks HTTP/1.1 to HTTP backends (check the service's serversTransport).",
    host="the service's loadBalancer passHostHeader: true (the default).",
    idle_setting="entryPoints.<name>.transport.respondingTimeouts.readTimeout",
    idle_default=60.0,
    idle=(
        "in the static configuration (60 s by default since v2.11.2; 0 disables it):\n"
        "    entryPoints:\n"
        "      websecure:\n"
        "        transport:\n"
        "          respondingTimeouts:\n"
        "            readTimeout: 0"
    ),
    answered="its access and debug logs say why it answered itself.",
)

ENVOY = Dialect(
    "envoy",
    "Envoy",
    upgrade=(
        "in the HttpConnectionManager:\n"
        "    upgrade_configs:\n"
        "    - upgrade_type: websocket\n"
        "(and no route with upgrade_configs enabled: false for this path)."
    ),
    http11=(
        "the cluster's http_protocol_options (HTTP/1.1), or keep upgrade_configs for "
        "HTTP/2 upstreams so Envoy tunnels the WebSocket."
    ),
    host="leave out the route's host_rewrite_literal / auto_host_rewrite.",
    idle_setting="stream_idle_timeout",
    idle_default=300.0,
    idle=(
        "the HttpConnectionManager's stream_idle_timeout (5 min by default), or the route's "
        "idle_timeout:\n"
        "    route: { cluster: ws, idle_timeout: 3600s }"
    ),
    answered="its access log's response flags say why it answered itself (UF, UH, UT...).",
)

DIALECTS = {d.name: d for d in (NGINX, APACHE, HAPROXY, CADDY, SQUID, TRAEFIK, ENVOY)}


def fix(dialect: Dialect | None, aspect: str) -> str:
    """The fix for `aspect` ("upgrade", "http11", "host", "idle", "answered") in `dialect`'s
    language, or, when the proxy could not be told, in each common proxy's."""
    if dialect is not None:
        return f"{dialect.title}: {getattr(dialect, aspect)}"
    lines = ["The proxy could not be told from the wire; the fix in each common proxy:"]
    lines += [f"{d.title}: {getattr(d, aspect)}" for d in DIALECTS.values()]
    return "\n".join(lines)


# ----- identification ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sighting:
    """What the hops saw of one proxy. `sent` is the request as it reached the proxy and
    `received` as the proxy passed it on; `answered` is the response as the proxy got it and
    `relayed` as it sent it back (or produced it). A side no hop captured is None."""

    sent: Headers | None = None
    received: Headers | None = None
    received_version: str | None = None
    sent_version: str | None = None
    answered: Headers | None = None
    relayed: Headers | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """The proxy the evidence points to (None: none, or several), and the evidence."""

    dialect: Dialect | None
    evidence: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()  # titles, when the evidence points to several

    def describe(self) -> str:
        """A sentence naming the proxy and why, or saying it could not be told."""
        if self.dialect is not None:
            return f"It is {self.dialect.title}: {'; '.join(self.evidence)}."
        if self.candidates:
            return (
                f"The proxy could not be told: the evidence points to "
                f"{' and '.join(self.candidates)} ({'; '.join(self.evidence)})."
            )
        return "The proxy could not be told from the wire."


def _has(headers: Headers | None, name: str) -> bool:
    return headers is not None and header_value(headers, name) is not None


def _added(s: Sighting, name: str) -> str | None:
    """The value of a request header the proxy added (or, without `sent`, that is there)."""
    value = header_value(s.received or [], name)
    return value if value is not None and not _has(s.sent, name) else None


def _own_response(s: Sighting, name: str) -> str | None:
    """The value of a response header the proxy put there itself: on what it relayed, and not
    (the same) on what it was answered."""
    value = header_value(s.relayed or [], name)
    if value is None or (s.answered is not None and header_value(s.answered, name) == value):
        return None
    return value


SERVER_NAMES = {"nginx": "nginx", "apache": "apache", "caddy": "caddy", "squid": "squid"}


def _server_header(s: Sighting):
    """A Server line the proxy put on its answer (Caddy adds one next to the backend's;
    nginx replaces the backend's)."""
    theirs = header_values(s.answered or [], "Server")
    for value in header_values(s.relayed or [], "Server"):
        name = SERVER_NAMES.get(value.split("/")[0].split(" ")[0].lower())
        if name and value not in theirs:
            return name, f"Server: {value} on the answer it sent back"
    return None


def _squid_via(s: Sighting):
    for where, value in (
        ("request", _added(s, "Via")),
        ("answer", _own_response(s, "Via")),
    ):
        if value and "(squid" in value.lower():
            return "squid", f"Via: {value} added to the {where}"
    error = _own_response(s, "X-Squid-Error")
    return error and ("squid", f"X-Squid-Error: {error} on its answer")


def _apache_forwarded_server(s: Sighting):
    server = _added(s, "X-Forwarded-Server")
    if server is None or _added(s, "X-Forwarded-Proto") is not None:
        return None
    return "apache", (
        f"X-Forwarded-Server: {server} added with X-Forwarded-For and -Host "
        f"(mod_proxy_http adds those three, and no X-Forwarded-Proto)"
    )


def _apache_keep_alive(s: Sighting):
    value = header_value(s.received or [], "Connection")
    if value != "Keep-Alive" or header_value(s.sent or [], "Connection") == value:
        return None
    return "apache", "Connection rewritten to 'Keep-Alive' (mod_proxy_http's spelling)"


def _lower_cased(names: list[str]) -> bool:
    return bool(names) and all(n == n.lower() for n in names)


def _haproxy_lower_case(s: Sighting):
    for what, before, after in (
        ("request", s.sent, s.received),
        ("response", s.answered, s.relayed),
    ):
        names = [n for n, _ in after or []]
        if len(names) < 3 or not _lower_cased(names):
            continue
        if before is not None and _lower_cased([n for n, _ in before]):
            continue  # nothing to lower-case: the names came that way
        example = f"{names[0]}, {names[1]}, …"
        return "haproxy", f"every {what} header name arrived lower-cased ({example})"
    return None


def _go_canonical(s: Sighting):
    """Caddy's Go HTTP client spells names canonically (Sec-Websocket-Key) and adds
    X-Forwarded-Proto and Accept-Encoding: gzip."""
    key = next((n for n, _ in s.received or [] if n.lower() == "sec-websocket-key"), None)
    if key != "Sec-Websocket-Key" or _added(s, "X-Forwarded-Proto") is None:
        return None
    gzip = _added(s, "Accept-Encoding") == "gzip"
    return "caddy", (
        "header names rewritten in Go's canonical form (Sec-Websocket-Key), "
        "X-Forwarded-Proto" + (" and Accept-Encoding: gzip" if gzip else "") + " added"
    )


def _nginx_http10(s: Sighting):
    if s.received_version != "HTTP/1.0" or s.sent_version == "HTTP/1.0":
        return None
    if header_tokens(s.received or [], "Connection") != ["close"]:
        return None
    return "nginx", (
        "the request went on as HTTP/1.0 with Connection: close (what a plain nginx "
        "proxy_pass sends)"
    )


SIGNATURES: tuple[Callable[[Sighting], tuple[str, str] | None], ...] = (
    _server_header,
    _squid_via,
    _apache_forwarded_server,
    _apache_keep_alive,
    _haproxy_lower_case,
    _go_canonical,
    _nginx_http10,
)


def identify(sighting: Sighting) -> Identity:
    """The proxy whose signature the headers carry; none, or several, leaves it untold."""
    found: dict[str, list[str]] = {}
    for signature in SIGNATURES:
        hit = signature(sighting)
        if hit:
            found.setdefault(hit[0], []).append(hit[1])
    evidence = tuple(e for hits in found.values() for e in hits)
    if len(found) == 1:
        (name,) = found
        return Identity(DIALECTS[name], evidence)
    return Identity(None, evidence, tuple(DIALECTS[n].title for n in found))
