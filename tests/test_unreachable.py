"""Sessions whose server cannot be reached, through a real wsinspect proxy: refused, a name that
does not resolve, an untrusted TLS certificate, a server that never answers. Each is an error
finding naming what failed and where, with the fix, so `wsinspect report --fail-on warning`
exits 1; and the fix the finding gives is checked to work where it can be.

A CONNECT to a server that is down is answered 502 by mitmproxy's default (eager) connection
strategy before any request is seen, and is recorded as a failed session for the CONNECT
target; with `connection_strategy=lazy` the WebSocket request inside the tunnel fails instead.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidProxyStatus, InvalidStatus

from wsinspect import cli
from wsinspect.diagnosis import diagnose
from wsinspect.model import Outcome
from wsinspect.store import SessionStore

from .conftest import echo_handler
from .proxy_servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def failed(session) -> bool:
    return session.outcome is Outcome.FAILED


async def absolute_form(proxy_port: int, url: str, wait: float = 5.0) -> bytes:
    """A WebSocket handshake for `url` in absolute form; returns what the proxy answered
    (b"" when nothing came within `wait` seconds and the client gave up)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    host = url.split("://", 1)[1].split("/", 1)[0]
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {url} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    try:
        return await asyncio.wait_for(reader.read(4096), wait)
    except asyncio.TimeoutError:
        return b""
    finally:
        writer.close()


def assert_fails_report(path: Path, capsys) -> None:
    assert cli.main(["report", str(path), "--fail-on", "warning"]) == 1
    capsys.readouterr()


def only_finding(session):
    (finding,) = diagnose(session)
    assert finding.severity.value == "error" and finding.hop == 1
    return finding


async def test_refused_in_absolute_form(proxy, capsys):
    dead = free_port()
    answer = await absolute_form(proxy.port, f"http://127.0.0.1:{dead}/chat")
    assert answer.startswith(b"HTTP/1.1 502")
    session = await proxy.wait_session(failed)
    finding = only_finding(session)
    assert finding.code == "server-unreachable"
    assert finding.message.startswith(
        f"Hop 1 (regular) got no answer: the connection to 127.0.0.1:{dead} was refused "
        f"([Errno 111] Connect call failed"
    )
    assert f"Start the WebSocket server on 127.0.0.1:{dead}" in finding.fix
    proxy.store.flush()
    assert_fails_report(proxy.store.path, capsys)


async def test_refused_through_connect_is_a_failed_session(proxy, capsys):
    """The default (eager) strategy: the CONNECT itself fails, with no WebSocket request."""
    dead = free_port()
    with pytest.raises((InvalidStatus, InvalidProxyStatus)) as refused:
        async with connect(f"ws://127.0.0.1:{dead}/chat", proxy=proxy.url, open_timeout=5):
            pass
    assert refused.value.response.status_code == 502
    session = await proxy.wait_session(failed)
    (hop,) = session.hops
    assert hop.url == f"127.0.0.1:{dead}"
    assert hop.request_line == f"CONNECT 127.0.0.1:{dead} HTTP/1.1"
    assert hop.server_addr == ("127.0.0.1", dead)
    assert hop.response_status is None  # the server never answered
    assert hop.error.startswith(f"[Errno 111] Connect call failed ('127.0.0.1', {dead})")
    assert hop.error.endswith("; the client got 502 Bad Gateway for its CONNECT")
    assert hop.timestamp_end >= hop.timestamp_start
    finding = only_finding(session)
    assert finding.code == "server-unreachable"
    assert finding.message.startswith(
        f"Hop 1 (regular) got no answer: the connection to 127.0.0.1:{dead} was refused "
        f"([Errno 111] Connect call failed"
    )
    assert f"Start the WebSocket server on 127.0.0.1:{dead}" in finding.fix
    proxy.store.flush()
    assert_fails_report(proxy.store.path, capsys)
    # A CONNECT that reaches its server records nothing until a WebSocket request is seen.
    async with serve(echo_handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/ok", proxy=proxy.url) as ws:
            await ws.send("fine")
            assert await ws.recv() == "fine"
        await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    assert [s.url for s in proxy.store.sessions()] == [
        f"127.0.0.1:{dead}", f"ws://127.0.0.1:{port}/ok"
    ]


async def test_refused_through_connect_with_the_lazy_strategy(start_proxy, capsys):
    proxy = await start_proxy(settings=["connection_strategy=lazy"])
    dead = free_port()
    with pytest.raises((InvalidStatus, InvalidProxyStatus)) as refused:
        async with connect(f"ws://127.0.0.1:{dead}/chat", proxy=proxy.url, open_timeout=5):
            pass
    assert refused.value.response.status_code == 502
    session = await proxy.wait_session(failed)
    finding = only_finding(session)
    assert finding.code == "server-unreachable"
    assert f"the connection to 127.0.0.1:{dead} was refused" in finding.message
    proxy.store.flush()
    assert_fails_report(proxy.store.path, capsys)


async def test_untrusted_certificate_and_the_fixes_that_work(
    start_proxy, tls_echo_server, server_cert, capsys
):
    proxy = await start_proxy()
    url = f"wss://127.0.0.1:{tls_echo_server}/secure"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, proxy=proxy.url, ssl=proxy.client_ssl(), open_timeout=5):
            pass
    assert refused.value.response.status_code == 502
    session = await proxy.wait_session(failed)
    finding = only_finding(session)
    assert finding.code == "upstream-tls"
    assert finding.message == (
        f"Hop 1 (regular) got no answer: TLS with 127.0.0.1:{tls_echo_server} failed "
        f"(Certificate verify failed: self-signed certificate). The client got no WebSocket."
    )
    proxy.store.flush()
    assert_fails_report(proxy.store.path, capsys)
    # The absolute form (GET https://…) fails the same way.
    answer = await absolute_form(proxy.port, f"https://127.0.0.1:{tls_echo_server}/abs")
    assert answer.startswith(b"HTTP/1.1 502")
    absolute = await proxy.wait_session(lambda s: failed(s) and s.url.endswith("/abs"))
    assert only_finding(absolute).code == "upstream-tls"
    # Both fixes the finding names work.
    assert "--set ssl_verify_upstream_trusted_ca=/path/to/ca.pem" in finding.fix
    assert "--set ssl_insecure=true" in finding.fix
    for setting in (f"ssl_verify_upstream_trusted_ca={server_cert[0]}", "ssl_insecure=true"):
        fixed = await start_proxy(settings=[setting])
        async with connect(url, proxy=fixed.url, ssl=fixed.client_ssl()) as ws:
            await ws.send("trusted")
            assert await ws.recv() == "trusted"
        session = await fixed.wait_session(lambda s: s.outcome is Outcome.CLOSED)
        assert diagnose(session) == []


async def test_a_server_that_never_answers(proxy, capsys):
    """It accepts the connection and says nothing; the client gives up after 1 s."""

    async def silent(reader, writer):
        await reader.read()  # until the proxy hangs up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await absolute_form(proxy.port, f"http://127.0.0.1:{port}/", wait=1.0) == b""
        session = await proxy.wait_session(failed)
    finding = only_finding(session)
    assert finding.code == "server-timeout"
    waited = float(finding.message.split("the client gave up after ")[1].split(" s")[0])
    assert 0.9 <= waited <= 2.0
    assert f"without an answer from 127.0.0.1:{port} (Client disconnected.)" in finding.message
    assert "a server that accepts connections but never answers" in finding.fix
    proxy.store.flush()
    assert_fails_report(proxy.store.path, capsys)


DNS_PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from wsinspect.engine import Engine
    from wsinspect.store import SessionStore
    from tests.test_unreachable import absolute_form

    async def main(capture, confdir):
        store = SessionStore(capture)
        engine = Engine(store, ["regular"], listen_port=0, confdir=confdir)
        await engine.start()
        answer = await absolute_form(engine.listen_addrs()[0][1], "http://ws.example/chat")
        while not store.sessions() or store.sessions()[0].outcome.value == "open":
            await asyncio.sleep(0.02)
        await engine.stop()
        store.close()
        print(answer.split(b"\\r\\n")[0].decode())

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.netns
async def test_a_name_that_does_not_resolve(tmp_path, confdir, capsys):
    """wsinspect in a network namespace of its own with only loopback: the resolver is out of
    reach, so the lookup fails there and nothing leaves the machine."""
    capture = tmp_path / "dns.db"
    result = await asyncio.to_thread(
        subprocess.run,
        [
            "unshare", "--net", "sh", "-c",
            'ip link set lo up && exec "$0" -c "$1" "$2" "$3"',
            sys.executable, DNS_PROBE, str(capture), str(confdir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "HTTP/1.1 502 Bad Gateway"
    store = SessionStore.open(capture)
    (session,) = store.sessions()
    finding = only_finding(session)
    assert finding.code == "server-unreachable"
    assert finding.message.startswith(
        "Hop 1 (regular) got no answer: the name ws.example could not be resolved ([Errno -"
    )
    assert "Use a host name that resolves on the machine wsinspect runs on" in finding.fix
    store.close()
    assert_fails_report(capture, capsys)


async def test_a_healthy_session_through_the_same_proxy_has_no_finding(proxy, capsys):
    async with serve(echo_handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/ok", proxy=proxy.url) as ws:
            await ws.send("fine")
            assert await ws.recv() == "fine"
        session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED)
    assert diagnose(session) == []
    proxy.store.flush()
    assert cli.main(["report", str(proxy.store.path), "--fail-on", "warning"]) == 0
    capsys.readouterr()
