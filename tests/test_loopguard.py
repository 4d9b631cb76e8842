"""A request whose destination is the proxy itself, however it is spelled, is refused with a
clear error instead of being forwarded to the proxy again and again (issue 16): in `wsinspect`
and in `mitmdump -s addons/wsinspect.py`, on regular (absolute form and CONNECT) and reverse
listeners. The proxy goes on serving others, keeps its file descriptors and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.builders import free_port
from tests.conftest import mitmdump, wait_for
from tests.netns_lab import GATEWAY_CLIENT_ADDR, SERVER_ADDR, make_lab
from wsinspect.engine import Engine
from wsinspect.loopguard import landing_address
from wsinspect.store import SessionStore

ADDON = Path(__file__).resolve().parent.parent / "addons" / "wsinspect.py"

# Every spelling of 127.0.0.1 that getaddrinfo (and so the proxy's connection) understands,
# the names of this host, and what Linux connects to for the unspecified address.
IPV4_SPELLINGS = [
    "127.0.0.1", "127.1", "2130706433", "0x7f.1", "0x7f000001", "017700000001", "0.0.0.0",
    "0", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "localhost", socket.gethostname(),
]  # fmt: skip
IPV6_SPELLINGS = ["[::1]", "[0:0:0:0:0:0:0:1]", "[::]"]


def ask(port: int, head: str, host: str = "127.0.0.1", timeout: float = 10) -> str:
    """Send one request head to a listener; its answer (status line and body), or what
    happened instead."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head.encode())
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and len(answer) > answer.index(b"\r\n\r\n") + 4:
                    break
        except TimeoutError:
            return "no answer: " + answer.decode("latin-1")
        except ConnectionResetError:
            return "reset"
    return answer.decode("latin-1")


def upgrade(target: str, authority: str) -> str:
    return (
        f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )


def assert_refused(answer: str, what: str) -> None:
    assert answer.startswith("HTTP/1.1 502"), f"{what}: {answer[:300]!r}"
    assert "which is this proxy itself" in answer, f"{what}: {answer[:500]!r}"


def refuse_every_spelling(port: int, spellings: list[str], listener: str = "127.0.0.1") -> None:
    for spelling in spellings:
        authority = f"{spelling}:{port}"
        assert_refused(ask(port, upgrade(f"http://{authority}/", authority), listener), authority)
        connect_head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
        assert_refused(ask(port, connect_head, listener), f"CONNECT {authority}")


async def echo_through(proxy_port: int, echo_port: int, text: str) -> str:
    url, proxy = f"ws://127.0.0.1:{echo_port}/", f"http://127.0.0.1:{proxy_port}"
    async with connect(url, proxy=proxy) as ws:
        await ws.send(text)
        return await ws.recv()


def refusals(store: SessionStore) -> list:
    """The recorded sessions the loop guard refused."""
    return [s for s in store.sessions() if "this proxy itself" in (s.first_hop.error or "")]


def open_fds(pid: int | None = None) -> int:
    return len(os.listdir(f"/proc/{pid or 'self'}/fd"))


def test_landing_address_reduces_every_form_to_where_a_connection_lands():
    assert str(landing_address("::ffff:127.0.0.1")) == "127.0.0.1"
    assert str(landing_address("0.0.0.0")) == "127.0.0.1"
    assert str(landing_address("::")) == "::1"
    assert str(landing_address("fe80::1%eth0")) == "fe80::1"
    assert landing_address("localhost") is None


async def test_every_spelling_of_the_proxy_is_refused_and_others_are_served(
    tmp_path, confdir, echo_server
):
    reverse_port = free_port()
    store = SessionStore(tmp_path / "cap.db")
    engine = Engine(
        store, ["regular", f"reverse:http://127.1:{reverse_port}@{reverse_port}"],
        listen_port=0, confdir=str(confdir),
    )  # fmt: skip
    await engine.start()
    try:
        port = next(a[0][1] for spec, a in engine.servers() if spec == "regular")
        assert await echo_through(port, echo_server, "before") == "before"
        fds = open_fds()
        await asyncio.to_thread(refuse_every_spelling, port, IPV4_SPELLINGS)
        # A reverse listener whose target is itself connects when the client does (mitmproxy's
        # eager connection strategy): refused, the client's connection is closed at once.
        answer = await asyncio.to_thread(ask, reverse_port, upgrade("/", "x"))
        assert answer in ("", "reset")
        assert await echo_through(port, echo_server, "after") == "after"
        await wait_for(lambda: open_fds() <= fds + 2, 5, "the refused connections' fds closed")
        # Each spelling twice: its upgrade request in absolute form, and its CONNECT (a failed
        # CONNECT is recorded too; its URL is the authority, as no scheme is known yet).
        refused = await wait_for(
            lambda: len(refusals(store)) == 2 * len(IPV4_SPELLINGS) and refusals(store)
        )
        assert {s.first_hop.url.split("://")[-1].split("/")[0] for s in refused} >= {
            f"{spelling}:{port}" for spelling in IPV4_SPELLINGS if ":" not in spelling
        }
        sessions = store.sessions()
        assert len(sessions) == len(refused) + 2  # the two echoes, and nothing looped
        logged = [r for r in engine.logs.records if r.message.startswith("wsinspect: refused")]
        assert len(logged) == len(IPV4_SPELLINGS) * 2 + 1  # absolute form, CONNECT; reverse
    finally:
        await engine.stop()
        store.close()


async def test_a_listener_on_every_ipv6_address_refuses_its_own_addresses(tmp_path, confdir):
    store = SessionStore(tmp_path / "cap.db")
    engine = Engine(store, ["regular"], listen_host="::", listen_port=0, confdir=str(confdir))
    await engine.start()
    try:
        port = engine.listen_addrs()[0][1]
        await asyncio.to_thread(refuse_every_spelling, port, IPV6_SPELLINGS, "::1")
        # The IPv6-only listener does not take IPv4: 127.0.0.1 at its port is not the proxy, and
        # the connection fails as any unreachable server does.
        authority = f"127.0.0.1:{port}"
        head = upgrade(f"http://{authority}/", authority)
        answer = await asyncio.to_thread(ask, port, head, "::1")
        assert answer.startswith("HTTP/1.1 502") and "this proxy itself" not in answer, answer
    finally:
        await engine.stop()
        store.close()


def run_and_refuse(argv: list[str], ready: str, port: int, echo_port: int, capture: Path) -> None:
    """Start a proxy process, send it to itself in every spelling, check it still serves others
    with as many fds as before, then stop it: no traceback, and every refusal recorded."""
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as when started with &
    )  # fmt: skip
    output = ""
    try:
        for line in process.stdout:
            output += line
            if ready in line:
                break
        assert asyncio.run(echo_through(port, echo_port, "before")) == "before", output
        fds = open_fds(process.pid)
        refuse_every_spelling(port, IPV4_SPELLINGS)
        assert asyncio.run(echo_through(port, echo_port, "after")) == "after"
        deadline = time.monotonic() + 5
        while open_fds(process.pid) > fds + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_fds(process.pid) <= fds + 2
    finally:
        process.send_signal(signal.SIGTERM)
        output += process.communicate(timeout=20)[0]
    assert process.returncode == 0, output
    assert "Traceback" not in output and "closed database" not in output, output
    store = SessionStore.open(capture)
    assert len(refusals(store)) == 2 * len(IPV4_SPELLINGS), output  # absolute form, CONNECT
    store.close()


def test_wsinspect_headless_refuses_itself_and_stops_cleanly(
    tmp_path, confdir, echo_server_thread
):
    port = free_port()
    argv = [
        sys.executable, "-m", "wsinspect", "--headless", "-w", str(tmp_path / "cap.db"),
        "--listen-port", str(port), "--confdir", str(confdir),
    ]  # fmt: skip
    run_and_refuse(argv, "recording to", port, echo_server_thread, tmp_path / "cap.db")


def test_standalone_addon_refuses_itself_and_stops_cleanly(tmp_path, confdir, echo_server_thread):
    port = free_port()
    argv = [
        *mitmdump(confdir), "-s", str(ADDON), "--listen-host", "127.0.0.1",
        "--listen-port", str(port), "--set", f"wsinspect_capture={tmp_path / 'cap.db'}",
    ]  # fmt: skip
    run_and_refuse(argv, "listening at", port, echo_server_thread, tmp_path / "cap.db")


@pytest.fixture
def echo_server_thread():
    """An echo server on its own thread and loop, for tests that drive a proxy process."""
    from websockets.sync.server import serve

    def handler(ws):
        for message in ws:
            ws.send(message)

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.socket.getsockname()[1]
        server.shutdown()


LOOP_CLIENT = """
import socket, sys
port, target = sys.argv[1:]
with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:
    s.sendall(
        f"GET http://{target}/ HTTP/1.1\\r\\nHost: {target}\\r\\nUpgrade: websocket\\r\\n"
        "Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
        "Sec-WebSocket-Version: 13\\r\\n\\r\\n".encode()
    )
    print((s.recv(1000).decode() or "closed").splitlines()[0])
"""


@pytest.mark.netns
def test_a_loop_through_a_nat_rule_ends_at_its_first_turn(request, tmp_path):
    """A destination that is not the proxy by any address, sent back to it by a NAT rule on
    the proxy's host: resolving beforehand cannot see it; the connection arriving from the
    proxy's own outgoing end is closed, so the loop ends after one turn."""
    lab = make_lab(request)
    port = 8083
    lab.exec(
        lab.gateway, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", SERVER_ADDR,
        "--dport", "9999", "-j", "DNAT", "--to-destination", f"{GATEWAY_CLIENT_ADDR}:{port}",
    )  # fmt: skip
    proxy = lab.start(
        lab.gateway, *lab.wsinspect(
            "--headless", "-w", str(tmp_path / "cap.db"), "--listen-host", "0.0.0.0",
            "--listen-port", str(port), "--confdir", str(tmp_path / "conf"),
        ),
    )  # fmt: skip
    proxy.wait_line("recording to")
    for _ in range(3):
        answer = lab.python(
            lab.gateway, "-c", LOOP_CLIENT, str(port), f"{SERVER_ADDR}:9999", check=False
        )
        assert answer.stdout.strip().startswith("HTTP/1.1 502"), answer.stderr + proxy.output()
    assert proxy.stop() == 0, proxy.output()
    assert "Traceback" not in proxy.output(), proxy.output()
    store = SessionStore.open(tmp_path / "cap.db")
    # Three requests, three failed sessions: each looped once (the proxy's own request was cut
    # before the proxy read it, so it is no session) and ended there.
    sessions = store.sessions()
    assert [s.url for s in sessions] == [f"ws://{SERVER_ADDR}:9999/"] * 3
    assert all(s.first_hop.error for s in sessions)
    store.close()
