"""Real Apache httpd 2.4, HAProxy, Caddy 2 and squid from Debian between a real WebSocket client
and an echo server, each started from a config in a temporary directory: wsinspect on both
sides of each reverse proxy, in front of it alone for a dead backend, behind squid, a forward
proxy, and on both sides of it (the front listener in upstream mode). In a working and
several broken configurations: the findings exactly, the proxy named from the evidence on the
wire, and the fix in its own language."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)

from wsinspect import proxies
from wsinspect.diagnosis import diagnose, identify_proxy
from wsinspect.model import Outcome
from wsinspect.proxies import Sighting, identify

from .proxy_servers import (
    APACHE_BROKEN,
    APACHE_FIXED,
    SQUID_CAPITALISED,
    SQUID_FIXED,
    SQUID_LOWER_CASE,
    Apache,
    NGINX_FIXED,
    Caddy,
    HAProxy,
    Nginx,
    Squid,
    free_port,
    start_on_free_ports,
)

PRESERVE_HOST = "\nProxyPreserveHost On"


@pytest.fixture
def start_server(tmp_path):
    started = []

    async def start(cls, *args, **kwargs):
        server = cls(tmp_path / f"{cls.name}{len(started)}", *args, **kwargs)
        started.append(server)
        return await asyncio.to_thread(server.start)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def both_sides(start_proxy, start_server, echo_server, tmp_path):
    """client -> wsinspect regular -> the proxy -> wsinspect reverse -> echo server."""

    async def start(cls, *args, **kwargs):
        proxy, back_port = await start_on_free_ports(
            start_proxy,
            tmp_path,
            lambda front, back: [
                f"regular@{front}",
                f"reverse:http://127.0.0.1:{echo_server}@{back}",
            ],
        )
        return proxy, await start_server(cls, back_port, *args, **kwargs)

    return start


@pytest.fixture
async def in_front_of_a_dead_backend(start_proxy, start_server):
    """client -> wsinspect regular -> the proxy -> a port nothing listens on."""

    async def start(cls, *args, **kwargs):
        proxy = await start_proxy()
        return proxy, await start_server(cls, free_port(), *args, **kwargs)

    return start


def codes(session):
    return [(f.code, f.severity.value, f.hop) for f in diagnose(session)]


def answered(hop_count: int):
    return lambda s: len(s.hops) == hop_count and all(
        h.outcome is not Outcome.OPEN for h in s.hops
    )


async def echo_through(proxy, server, path="/chat") -> None:
    async with connect(f"ws://127.0.0.1:{server.port}{path}", proxy=proxy.url) as ws:
        await ws.send("through the proxy")
        assert await ws.recv() == "through the proxy"


async def rejected_through(proxy, server, status: int) -> None:
    with pytest.raises(InvalidStatus) as rejected:
        async with connect(f"ws://127.0.0.1:{server.port}/chat", proxy=proxy.url):
            pass
    assert rejected.value.response.status_code == status


async def cut_when_silent(proxy, server, within: float = 5.0) -> None:
    """One echo, then silence until the proxy cuts the connection without a close frame."""
    async with connect(f"ws://127.0.0.1:{server.port}/quiet", proxy=proxy.url) as ws:
        await ws.send("then silence")
        await ws.recv()
        await asyncio.wait_for(ws.wait_closed(), within)


def assert_idle_timeout(session, proxy_name: str, setting: str, fix_line: str, timeout: float):
    findings = diagnose(session)
    assert [(f.code, f.hop) for f in findings] == [("abnormal-close", 1), ("idle-timeout", 1)]
    idle = findings[1]
    assert idle.proxy == proxy_name and findings[0].proxy == proxy_name
    assert "hop 1 lost its server, hop 2 its client" in idle.message
    silence = float(idle.message.split("No frame passed for ")[1].split(" s")[0])
    assert timeout - 0.3 <= silence <= timeout + 0.5
    assert f"Its idle timeout is {setting}" in idle.message
    assert fix_line in idle.fix and "ping" in idle.fix


# ----- identification and dialects, without servers -----------------------------------------

CLIENT = [
    ("Host", "app.example"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


def test_no_evidence_leaves_the_proxy_untold_and_the_fix_is_every_common_proxys():
    identity = identify(Sighting(sent=CLIENT, received=CLIENT))
    assert identity.dialect is None and identity.evidence == ()
    assert identity.describe() == "The proxy could not be told from the wire."
    fix = proxies.fix(None, "idle")
    assert fix.splitlines()[0] == (
        "The proxy could not be told from the wire; the fix in each common proxy:"
    )
    for dialect in proxies.DIALECTS.values():
        assert f"{dialect.title}: {dialect.idle.splitlines()[0]}" in fix


def test_evidence_for_two_proxies_names_neither():
    """squid in front of HAProxy, seen as one boundary: both signatures, no single proxy."""
    received = [(n.lower(), v) for n, v in CLIENT] + [("via", "1.1 cache (squid/5.7)")]
    identity = identify(Sighting(sent=CLIENT, received=received))
    assert identity.dialect is None
    assert identity.candidates == ("squid", "HAProxy")
    assert identity.describe().startswith(
        "The proxy could not be told: the evidence points to squid and HAProxy (Via: 1.1 cache"
    )


def test_a_server_header_the_backend_sent_is_no_evidence_about_the_proxy():
    backend = [("Server", "nginx/1.22.1")]
    assert identify(Sighting(answered=backend, relayed=backend)).dialect is None
    assert identify(Sighting(relayed=backend)).dialect.name == "nginx"


def test_a_client_that_sends_lower_case_names_is_not_taken_for_haproxy():
    lower = [(n.lower(), v) for n, v in CLIENT]
    assert identify(Sighting(sent=lower, received=lower)).dialect is None
    assert identify(Sighting(sent=CLIENT, received=lower)).dialect.name == "haproxy"


def test_every_dialect_has_every_fix():
    for dialect in proxies.DIALECTS.values():
        for aspect in ("upgrade", "http11", "host", "idle", "answered", "idle_setting"):
            assert getattr(dialect, aspect).strip(), (dialect.name, aspect)


# ----- nginx, in front of a dead backend (its other cases are in test_nginx.py) --------------


@pytest.mark.nginx
async def test_nginx_in_front_of_a_dead_backend(in_front_of_a_dead_backend):
    proxy, nginx = await in_front_of_a_dead_backend(Nginx, NGINX_FIXED)
    await rejected_through(proxy, nginx, 502)
    session = await proxy.wait_session(answered(1))
    assert codes(session) == [("handshake-rejected", "error", 1)]
    (finding,) = diagnose(session)
    assert "It is nginx: Server: nginx/" in finding.message
    assert finding.proxy == "nginx" and "error.log" in finding.fix


# ----- Apache httpd 2.4 ----------------------------------------------------------------------


@pytest.mark.apache
async def test_apache_working_configuration(both_sides):
    proxy, apache = await both_sides(Apache, APACHE_FIXED + PRESERVE_HOST)
    await echo_through(proxy, apache)
    session = await proxy.wait_session(answered(2))
    assert codes(session) == []
    identity = identify_proxy(session, 2)
    assert identity.dialect.name == "apache"
    assert identity.evidence == (
        "X-Forwarded-Server: 127.0.0.1 added with X-Forwarded-For and -Host "
        "(mod_proxy_http adds those three, and no X-Forwarded-Proto)",
    )


@pytest.mark.apache
async def test_apache_without_upgrade_websocket_drops_the_upgrade(both_sides):
    proxy, apache = await both_sides(Apache, APACHE_BROKEN + PRESERVE_HOST)
    await rejected_through(proxy, apache, 426)
    session = await proxy.wait_session(answered(2))
    assert codes(session) == [
        ("upgrade-dropped", "error", 2),
        ("connection-dropped", "error", 2),
        ("handshake-rejected", "error", 2),
    ]
    dropped, connection, rejected = diagnose(session)
    assert "rewrote it to 'Keep-Alive'" in connection.message
    assert "It is Apache httpd 2.4: X-Forwarded-Server" in dropped.message
    for finding in (dropped, connection):
        assert finding.proxy == "apache"
        assert finding.fix.startswith("Apache httpd 2.4: ")
        assert "ProxyPass /ws/ http://backend:8000/ws/ upgrade=websocket" in finding.fix


@pytest.mark.apache
async def test_apache_rewrites_host_without_proxy_preserve_host(both_sides):
    proxy, apache = await both_sides(Apache, APACHE_FIXED)
    await echo_through(proxy, apache)
    session = await proxy.wait_session(answered(2))
    assert codes(session) == [("host-changed", "info", 2)]
    (finding,) = diagnose(session)
    assert finding.proxy == "apache" and "ProxyPreserveHost On" in finding.fix


@pytest.mark.apache
async def test_apache_short_timeout_cuts_a_silent_websocket(both_sides):
    proxy, apache = await both_sides(Apache, APACHE_FIXED + PRESERVE_HOST, timeout="1")
    await cut_when_silent(proxy, apache)
    session = await proxy.wait_session(answered(2))
    assert_idle_timeout(session, "apache", "Timeout (60 s by default)", "timeout=3600", 1.0)


@pytest.mark.apache
async def test_apache_short_proxy_timeout_alone_never_cuts_a_websocket(both_sides):
    """The tunnel idles out after the larger of Timeout and ProxyTimeout."""
    proxy, apache = await both_sides(
        Apache, APACHE_FIXED + PRESERVE_HOST + "\nProxyTimeout 1", timeout="60"
    )
    async with connect(f"ws://127.0.0.1:{apache.port}/quiet", proxy=proxy.url) as ws:
        await ws.send("then silence")
        await ws.recv()
        await asyncio.sleep(2.0)
        await ws.send("still here")
        assert await ws.recv() == "still here"
    session = await proxy.wait_session(answered(2))
    assert session.close.code == 1000
    assert codes(session) == []


@pytest.mark.apache
async def test_apache_in_front_of_a_dead_backend(in_front_of_a_dead_backend):
    proxy, apache = await in_front_of_a_dead_backend(Apache, APACHE_FIXED)
    await rejected_through(proxy, apache, 503)
    session = await proxy.wait_session(answered(1))
    assert codes(session) == [("handshake-rejected", "error", 1)]
    (finding,) = diagnose(session)
    assert "It is Apache httpd 2.4: Server: Apache/2.4" in finding.message
    assert finding.proxy == "apache" and "ErrorLog" in finding.fix


# ----- HAProxy -------------------------------------------------------------------------------


@pytest.mark.haproxy
async def test_haproxy_working_configuration(both_sides):
    proxy, haproxy = await both_sides(HAProxy, defaults="    timeout tunnel 1h")
    await echo_through(proxy, haproxy)
    session = await proxy.wait_session(answered(2))
    assert codes(session) == []
    identity = identify_proxy(session, 2)
    assert identity.dialect.name == "haproxy"
    assert identity.evidence[0].startswith(
        "every request header name arrived lower-cased (host, upgrade, …)"
    )


@pytest.mark.haproxy
@pytest.mark.parametrize(
    "rule, expected, what",
    [
        (
            "http-request set-header Connection close",
            [("connection-dropped", "error", 2), ("handshake-rejected", "error", 2)],
            "rewrote it to 'close'",
        ),
        (
            "http-request del-header Upgrade",
            [("upgrade-dropped", "error", 2), ("handshake-rejected", "error", 2)],
            "dropped it",
        ),
    ],
    ids=["set-connection-close", "del-upgrade"],
)
async def test_haproxy_rules_that_break_the_upgrade(both_sides, rule, expected, what):
    proxy, haproxy = await both_sides(HAProxy, frontend=f"    {rule}")
    await rejected_through(proxy, haproxy, 426)
    session = await proxy.wait_session(answered(2))
    assert codes(session) == expected
    dropped = diagnose(session)[0]
    assert what in dropped.message
    assert dropped.proxy == "haproxy" and dropped.fix.startswith("HAProxy: ")
    assert "'http-request del-header'/'set-header' rule" in dropped.fix


@pytest.mark.haproxy
@pytest.mark.parametrize(
    "defaults", ["    timeout tunnel 1s", "    timeout server 1s"], ids=["tunnel", "no-tunnel"]
)
async def test_haproxy_short_timeout_tunnel_cuts_a_silent_websocket(both_sides, defaults):
    """Without a timeout tunnel, an upgraded connection idles out after timeout server."""
    proxy, haproxy = await both_sides(HAProxy, defaults=defaults)
    await cut_when_silent(proxy, haproxy)
    session = await proxy.wait_session(answered(2))
    assert_idle_timeout(
        session, "haproxy", "timeout tunnel (no default of its own)", "timeout tunnel 1h", 1.0
    )


@pytest.mark.haproxy
async def test_haproxy_in_front_of_a_dead_backend(in_front_of_a_dead_backend):
    proxy, haproxy = await in_front_of_a_dead_backend(HAProxy)
    await rejected_through(proxy, haproxy, 503)
    session = await proxy.wait_session(answered(1))
    assert codes(session) == [("handshake-rejected", "error", 1)]
    (finding,) = diagnose(session)
    assert "It is HAProxy: every response header name arrived lower-cased" in finding.message
    assert finding.proxy == "haproxy" and "No server is available" in finding.fix


# ----- Caddy 2 -------------------------------------------------------------------------------


@pytest.mark.caddy
async def test_caddy_working_configuration(both_sides):
    proxy, caddy = await both_sides(Caddy)
    await echo_through(proxy, caddy)
    session = await proxy.wait_session(answered(2))
    assert codes(session) == []
    identity = identify_proxy(session, 2)
    assert identity.dialect.name == "caddy"
    assert identity.evidence == (
        "Server: Caddy on the answer it sent back",
        "header names rewritten in Go's canonical form (Sec-Websocket-Key), "
        "X-Forwarded-Proto and Accept-Encoding: gzip added",
    )


@pytest.mark.caddy
async def test_caddy_header_up_that_deletes_connection(both_sides):
    proxy, caddy = await both_sides(Caddy, "header_up -Connection")
    await rejected_through(proxy, caddy, 426)
    session = await proxy.wait_session(answered(2))
    assert codes(session) == [
        ("connection-dropped", "error", 2),
        ("handshake-rejected", "error", 2),
    ]
    connection = diagnose(session)[0]
    assert "dropped the header" in connection.message
    assert connection.proxy == "caddy" and connection.fix.startswith("Caddy 2: ")
    assert "header_up edits are applied after Caddy restores" in connection.fix


@pytest.mark.caddy
async def test_caddy_header_up_that_rewrites_host(both_sides):
    proxy, caddy = await both_sides(Caddy, "header_up Host {upstream_hostport}")
    await echo_through(proxy, caddy)
    session = await proxy.wait_session(answered(2))
    assert codes(session) == [("host-changed", "info", 2)]
    (finding,) = diagnose(session)
    assert finding.proxy == "caddy"
    assert "remove 'header_up Host {upstream_hostport}'" in finding.fix


@pytest.mark.caddy
async def test_caddy_short_read_timeout_cuts_a_silent_websocket(both_sides):
    proxy, caddy = await both_sides(Caddy, "transport http {\n    read_timeout 1s\n}")
    await cut_when_silent(proxy, caddy)
    session = await proxy.wait_session(answered(2))
    assert_idle_timeout(
        session,
        "caddy",
        "transport http read_timeout (no default of its own)",
        "read_timeout 1h",
        1.0,
    )


@pytest.mark.caddy
async def test_caddy_in_front_of_a_dead_backend(in_front_of_a_dead_backend):
    proxy, caddy = await in_front_of_a_dead_backend(Caddy)
    await rejected_through(proxy, caddy, 502)
    session = await proxy.wait_session(answered(1))
    assert codes(session) == [("handshake-rejected", "error", 1)]
    (finding,) = diagnose(session)
    assert "It is Caddy 2: Server: Caddy on the answer it sent back." in finding.message
    assert finding.proxy == "caddy" and "connect: connection refused" in finding.fix


# ----- squid, a forward proxy ----------------------------------------------------------------


async def absolute_form_through(
    proxy_port: int, url: str, upgrade: str = "websocket", wait_for_cut: bool = False
) -> int:
    """A WebSocket client that asks a forward proxy for `url` in absolute form (GET http://…),
    with `Upgrade: {upgrade}`, echoes one message and closes (or, with `wait_for_cut`, waits
    in silence until the proxy drops the connection). Returns the handshake's status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    ws = WSConnection(ConnectionType.CLIENT)
    target = "http://" + url.split("://", 1)[1]
    handshake = ws.send(Request(host=urlsplit(url).netloc, target=target))
    # older wsproto spells it "WebSocket", newer ones and browsers "websocket"
    spelled = f"Upgrade: {upgrade}\r".encode()
    writer.write(re.sub(rb"(?im)^upgrade: websocket\r$", spelled, handshake))
    status = None
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, RejectConnection):
                    return event.status_code
                if isinstance(event, AcceptConnection):
                    status = 101
                    writer.write(ws.send(TextMessage("through squid")))
                elif isinstance(event, TextMessage):
                    assert event.data == "through squid"
                    if not wait_for_cut:
                        writer.write(ws.send(CloseConnection(1000)))
                elif isinstance(event, CloseConnection):
                    return status
            if not data:
                return status
    finally:
        writer.close()


@pytest.fixture
async def behind_squid(start_proxy, start_server, echo_server, tmp_path):
    """client -> squid (its proxy) -> wsinspect reverse -> echo server."""

    async def start(directives: str):
        proxy, back_port = await start_on_free_ports(
            start_proxy,
            tmp_path,
            lambda _, back: [f"reverse:http://127.0.0.1:{echo_server}@{back}"],
        )
        return proxy, back_port, await start_server(Squid, directives)

    return start


@pytest.mark.squid
@pytest.mark.parametrize(
    "directives, upgrade",
    [
        ("", "websocket"),
        (SQUID_CAPITALISED, "websocket"),
        (SQUID_LOWER_CASE, "WebSocket"),
    ],
    ids=["default", "squids-example-vs-lower-case-client", "lower-case-vs-capitalised-client"],
)
async def test_squid_strips_upgrade_unless_the_clients_spelling_is_allowed(
    behind_squid, directives, upgrade
):
    proxy, back_port, squid = await behind_squid(directives)
    url = f"ws://127.0.0.1:{back_port}/chat"
    assert await absolute_form_through(squid.port, url, upgrade) == 426
    session = await proxy.wait_session(answered(1))
    assert codes(session) == [
        ("stripped-before-capture", "error", 1),
        ("handshake-rejected", "error", 1),
    ]
    stripped = diagnose(session)[0]
    assert "It is squid: Via: 1.1 wsinspect-test (squid/5" in stripped.message
    assert stripped.proxy == "squid" and stripped.fix.startswith("squid: ")
    assert "    http_upgrade_request_protocols websocket allow all\n" in stripped.fix
    assert "    http_upgrade_request_protocols WebSocket allow all\n" in stripped.fix
    assert "'WebSocket' alone, as squid's own example writes it, matches nothing" in stripped.fix


@pytest.mark.squid
@pytest.mark.parametrize("upgrade", ["websocket", "WebSocket"])
async def test_squid_working_configuration(behind_squid, upgrade):
    proxy, back_port, squid = await behind_squid(SQUID_FIXED)
    url = f"ws://127.0.0.1:{back_port}/chat"
    assert await absolute_form_through(squid.port, url, upgrade) == 101
    session = await proxy.wait_session(answered(1))
    assert session.close.code == 1000
    assert codes(session) == []
    assert identify_proxy(session, 1).dialect.name == "squid"


@pytest.mark.squid
async def test_squid_short_read_timeout_cuts_a_silent_websocket(behind_squid):
    proxy, back_port, squid = await behind_squid(SQUID_FIXED + "\nread_timeout 2 seconds")
    url = f"ws://127.0.0.1:{back_port}/quiet"
    assert await absolute_form_through(squid.port, url, wait_for_cut=True) == 101
    session = await proxy.wait_session(answered(1))
    findings = diagnose(session)
    assert [(f.code, f.hop) for f in findings] == [("abnormal-close", 1), ("idle-timeout", 1)], (
        session.first_hop.close, session.first_hop.stats.last_timestamp
    )
    idle = findings[1]
    silence = float(idle.message.split("No frame passed for ")[1].split(" s")[0])
    # squid keeps time in whole seconds and looks for timed-out connections about once a
    # second: its 2 s read_timeout cut after 2.99 s on an idle machine, 3.99 s under CI's load
    assert 1.0 <= silence <= 5.0
    assert "Its idle timeout is read_timeout (15 min by default)." in idle.message
    assert idle.proxy == "squid" and "read_timeout 1 hour" in idle.fix


@pytest.fixture
async def both_sides_of_squid(start_proxy, start_server, echo_server, tmp_path):
    """client -> wsinspect (squid as its upstream proxy) -> squid -> wsinspect reverse -> echo
    server: the front listener passes the client's absolute-form request on to squid."""

    started = 0

    async def start(directives: str):
        nonlocal started
        started += 1
        squid = await start_server(Squid, directives)
        proxy, back_port = await start_on_free_ports(
            start_proxy,
            tmp_path,
            lambda front, back: [
                f"upstream:http://127.0.0.1:{squid.port}@{front}",
                f"reverse:http://127.0.0.1:{echo_server}@{back}",
            ],
            name=f"wsinspect{started}-",
        )
        return proxy, back_port

    return start


@pytest.mark.squid
async def test_both_sides_of_squid_without_and_with_the_upgrade_allowed(both_sides_of_squid):
    proxy, back_port = await both_sides_of_squid("")
    assert await absolute_form_through(proxy.port, f"ws://127.0.0.1:{back_port}/chat") == 426
    session = await proxy.wait_session(answered(2))
    assert codes(session) == [
        ("upgrade-dropped", "error", 2),
        ("connection-dropped", "error", 2),
        ("handshake-rejected", "error", 2),
    ]
    upgrade, connection, _ = diagnose(session)
    assert "rewrote it to 'keep-alive'" in connection.message
    for finding in (upgrade, connection):
        assert finding.proxy == "squid"
        assert "It is squid: Via: 1.1 wsinspect-test (squid/5" in finding.message
        assert "http_upgrade_request_protocols websocket allow all" in finding.fix

    fixed, back_port = await both_sides_of_squid(SQUID_FIXED)
    assert await absolute_form_through(fixed.port, f"ws://127.0.0.1:{back_port}/chat") == 101
    session = await fixed.wait_session(answered(2))
    assert session.close.code == 1000
    assert codes(session) == []
    assert identify_proxy(session, 2).dialect.name == "squid"
