"""Transparent mode on a lab gateway that really routes: a client in its own network namespace
talks to a server in another one through a gateway namespace whose iptables REDIRECT hands the
connections to wsinspect. The client has no proxy setting."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import mitmdump
from tests.netns_lab import (
    CLIENT_ADDR,
    CLIENT_ADDR6,
    GATEWAY_CLIENT_ADDR,
    GATEWAY_SERVER_ADDR,
    GATEWAY_SERVER_ADDR6,
    SERVER_ADDR,
    SERVER_ADDR6,
    Lab,
    Process,
    make_lab,
    run,
)
from wsinspect.model import MessageType
from wsinspect.store import SessionStore

pytestmark = pytest.mark.netns

LISTEN_PORT = 8080
ADDON = Path(__file__).resolve().parent.parent / "addons" / "wsinspect.py"

# Echoes messages; answers "whoami" with the address the connection came from, which tells
# whether the connection went through the proxy (the gateway's address) or past it.
SERVER = """
import asyncio, ssl, sys
from websockets.asyncio.server import serve

async def handler(ws):
    async for message in ws:
        await ws.send(ws.remote_address[0] if message == "whoami" else message)

async def main(cert, key):
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    # None: every address, IPv4 and IPv6.
    async with serve(handler, None, 80), serve(handler, None, 8765), \\
            serve(handler, None, 443, ssl=tls):
        print("serving", flush=True)
        await asyncio.get_running_loop().create_future()

asyncio.run(main(*sys.argv[1:]))
"""

# Connects with no proxy setting at all; prints the replies as JSON (binary ones in hex).
CLIENT = """
import asyncio, json, ssl, sys
from websockets.asyncio.client import connect

async def main(url, address, cafile):
    tls = ssl.create_default_context(cafile=cafile) if cafile else None
    async with asyncio.timeout(15):
        async with connect(url, host=address, ssl=tls, proxy=None) as ws:
            replies = []
            for message in ("hello", b"\\x00\\x01", "whoami"):
                await ws.send(message)
                reply = await ws.recv()
                replies.append(reply if isinstance(reply, str) else reply.hex())
            await (await ws.ping(b"p1"))
    print(json.dumps(replies))

asyncio.run(main(*sys.argv[1:]))
"""


# Sends one HTTP request straight to a proxy port; prints the status line, or how it ended.
DIRECT = """
import socket, sys
host, port, target = sys.argv[1:]
with socket.create_connection((host, int(port)), timeout=10) as s:
    s.sendall(f"GET {target} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n".encode())
    try:
        answer = s.recv(1000).decode()
        print(answer.splitlines()[0] if answer else "closed")
    except ConnectionResetError:
        print("closed")
    except TimeoutError:
        print("no answer")
"""


@pytest.fixture
def lab(request) -> Lab:
    return make_lab(request)


@pytest.fixture
def server(lab, server_cert):
    process = lab.start_python(lab.server, "-c", SERVER, *map(str, server_cert))
    process.wait_line("^serving$")
    return process


def client(
    lab: Lab, url: str, proxy: Process, cafile: str = "", address: str = SERVER_ADDR
) -> list[str]:
    """Run a WebSocket client in the client namespace; its TCP connection goes to the server's
    address whatever host the URL names."""
    result = lab.python(lab.client, "-c", CLIENT, url, address, cafile, check=False)
    assert result.returncode == 0, (
        f"client for {url} failed:\n{result.stderr}\nwsinspect:\n{proxy.output()}"
    )
    return json.loads(result.stdout)


def start_wsinspect(lab: Lab, tmp_path, capture, *modes: str, listen_host: str = "0.0.0.0"):
    process = lab.start(
        lab.gateway,
        *lab.wsinspect(
            "--mode", "transparent", *modes, "--headless", "-w", str(capture),
            "--listen-host", listen_host, "--listen-port", str(LISTEN_PORT),
            "--confdir", str(tmp_path / "conf"), "--set", "ssl_insecure=true",
        ),
    )  # fmt: skip
    process.wait_line("recording to")
    return process


def test_clients_traffic_is_intercepted_and_recorded_with_its_original_destination(
    lab, server, tmp_path
):
    setup = lab.run_wsinspect(
        lab.gateway, "gateway", "setup",
        "--interface", lab.gateway_client_if, "--ports", "80,443,8765",
        "--listen-port", str(LISTEN_PORT),
    )  # fmt: skip
    assert "gateway ready" in setup.stdout
    capture = tmp_path / "cap.db"
    # Setup redirected IPv6 too: a listener on 0.0.0.0 would leave IPv6 clients nowhere.
    proxy = start_wsinspect(lab, tmp_path, tmp_path / "refused.db")
    assert f"preflight for the transparent listener 0.0.0.0:{LISTEN_PORT}: NOT ready" in (
        proxy.output()
    )
    assert "MISSING  IPv6 listen host: 0.0.0.0 takes IPv4 connections only" in proxy.output()
    assert proxy.stop() == 0
    proxy = start_wsinspect(lab, tmp_path, capture, listen_host="")
    assert f"preflight for the transparent listener *:{LISTEN_PORT}: ready" in proxy.output()
    assert "proxy authentication" not in proxy.output()  # meaningless for transparent mode

    cafile = str(tmp_path / "conf" / "mitmproxy-ca-cert.pem")
    conversations = [
        ("ws://10.231.2.2/plain", "", 80),
        ("wss://10.231.2.2/secure", cafile, 443),
        # Any port; the Host header names a host that does not even resolve.
        ("ws://echo.lab:8765/any", "", 8765),
    ]
    for url, ca, _ in conversations:
        # The server saw the gateway connect, not the client: the proxy was in between.
        assert client(lab, url, proxy, ca) == ["hello", "0001", GATEWAY_SERVER_ADDR]
    proxy.wait_line(r"#3 closed +101 .* 1000 by client")
    # Not redirected, a connection's original destination is the proxy itself: mitmproxy would
    # connect to itself again and again; wsinspect closes it at once.
    direct = lab.python(lab.client, "-c", DIRECT, GATEWAY_CLIENT_ADDR, str(LISTEN_PORT), "/")
    assert direct.stdout.strip() == "closed"
    assert client(lab, "ws://10.231.2.2/after", proxy) == ["hello", "0001", GATEWAY_SERVER_ADDR]
    proxy.wait_line(r"#4 closed +101 ")
    assert proxy.stop() == 0, proxy.output()
    # The headless line names the original destination, which the Host header does not show.
    assert "(ws://echo.lab:8765/any) via transparent to 10.231.2.2:8765" in proxy.output()

    store = SessionStore.open(capture)
    sessions = store.sessions()
    assert [s.url for s in sessions] == [url for url, _, _ in conversations] + [
        "ws://10.231.2.2/after"
    ]
    for session, (url, _, port) in zip(sessions, conversations):
        hop = session.first_hop
        assert hop.mode == "transparent"
        assert hop.server_addr == (SERVER_ADDR, port), url
        assert hop.client_addr[0] == CLIENT_ADDR
        assert session.status == 101 and session.close.code == 1000 and session.close.by == "client"
        messages = store.messages(session.id, 0, 100)
        assert [(m.from_client, m.type, m.payload) for m in messages] == [
            (True, MessageType.TEXT, b"hello"),
            (False, MessageType.TEXT, b"hello"),
            (True, MessageType.BINARY, b"\x00\x01"),
            (False, MessageType.BINARY, b"\x00\x01"),
            (True, MessageType.TEXT, b"whoami"),
            (False, MessageType.TEXT, GATEWAY_SERVER_ADDR.encode()),
            (True, MessageType.PING, b"p1"),
            (False, MessageType.PONG, b"p1"),
            (True, MessageType.CLOSE, b"\x03\xe8"),
            (False, MessageType.CLOSE, b"\x03\xe8"),  # the answer, recorded by the raw relay
        ]
    store.close()

    text = run(*lab.wsinspect("report", str(capture))).stdout
    assert "hop 1 [transparent] to 10.231.2.2:443 GET /secure HTTP/1.1 -> 101" in text
    report = json.loads(run(*lab.wsinspect("report", str(capture), "--json")).stdout)
    assert [s["hops"][0]["server_addr"] for s in report["sessions"]][:3] == [
        [SERVER_ADDR, port] for _, _, port in conversations
    ]

    lab.run_wsinspect(lab.gateway, "gateway", "teardown")
    rules = lab.exec(lab.gateway, "iptables", "-t", "nat", "-S").stdout
    assert "REDIRECT" not in rules


def test_preflight_reports_the_missing_rule_and_its_printed_fix_works(lab, server, tmp_path):
    lab.exec(lab.gateway, "sysctl", "-w", "net.ipv4.ip_forward=1")
    proxy = start_wsinspect(lab, tmp_path, tmp_path / "cap.db", "--mode", "regular@8081")
    output = proxy.output()
    assert f"listener 0.0.0.0:{LISTEN_PORT}: NOT ready" in output
    assert "OK       IP forwarding: on" in output
    assert (
        f"MISSING  REDIRECT rule: no rule in the nat table's PREROUTING chain redirects TCP to "
        f"port {LISTEN_PORT}" in output
    )
    fix = re.findall(r"(iptables -t nat -A .*)$", output, re.MULTILINE)
    undo = re.findall(r"(iptables -t nat -D .*)$", output, re.MULTILINE)
    rule = (
        f"PREROUTING -i {lab.gateway_client_if} -p tcp --dport 80 "
        f"-m comment --comment wsinspect -j REDIRECT --to-ports {LISTEN_PORT}"
    )
    assert fix[0] == f"iptables -t nat -A {rule}" and undo[0] == f"iptables -t nat -D {rule}"

    # The preflight is right: without the rule the connection goes straight to the server.
    assert client(lab, "ws://10.231.2.2/past", proxy) == ["hello", "0001", CLIENT_ADDR]

    for command in fix:
        lab.exec(lab.gateway, *shlex.split(command))
    check = lab.run_wsinspect(
        lab.gateway, "gateway", "check", "--listen-host", "0.0.0.0", "--listen-port",
        str(LISTEN_PORT),
    )  # fmt: skip
    assert f"listener 0.0.0.0:{LISTEN_PORT}: ready" in check.stdout
    # IPv4 only, as the fix printed: a warning that IPv6 clients bypass wsinspect.
    assert "WARNING  IPv6 REDIRECT rule:" in check.stdout
    assert client(lab, "ws://10.231.2.2/through", proxy) == ["hello", "0001", GATEWAY_SERVER_ADDR]
    proxy.wait_line(r"#1 closed +101 ws://10\.231\.2\.2/through")

    # A regular listener on every address, asked to connect to itself at the gateway's own
    # address, refuses instead of looping (mitmproxy only spots loopback and the listen host).
    direct = lab.python(
        lab.client, "-c", DIRECT, GATEWAY_CLIENT_ADDR, "8081", f"http://{GATEWAY_CLIENT_ADDR}:8081/"
    )
    assert direct.stdout.strip() == "HTTP/1.1 502 Bad Gateway"
    assert "listening beyond loopback without proxy authentication" in proxy.output()

    for command in undo:
        lab.exec(lab.gateway, *shlex.split(command))
    assert "REDIRECT" not in lab.exec(lab.gateway, "iptables", "-t", "nat", "-S").stdout
    assert proxy.stop() == 0
    recorded = SessionStore.open(tmp_path / "cap.db")
    assert [s.url for s in recorded.sessions()] == ["ws://10.231.2.2/through"]
    recorded.close()


def test_standalone_addon_refuses_to_connect_to_itself(lab, tmp_path):
    """`mitmdump -s addons/wsinspect.py` carries the same guard: a listener on every address,
    asked to connect to itself at the gateway's own address, answers 502 instead of looping."""
    proxy = lab.start(
        lab.gateway, *mitmdump(tmp_path / "conf"), "-s", str(ADDON),
        "--mode", "regular@8082", "--listen-host", "0.0.0.0",
        "--set", f"wsinspect_capture={tmp_path / 'c.db'}",
    )  # fmt: skip
    proxy.wait_line(r"listening at .*8082")
    direct = lab.python(
        lab.client, "-c", DIRECT, GATEWAY_CLIENT_ADDR, "8082", f"http://{GATEWAY_CLIENT_ADDR}:8082/"
    )
    assert direct.stdout.strip() == "HTTP/1.1 502 Bad Gateway", proxy.output()
    assert "which is this proxy itself" in proxy.output()
    assert proxy.stop() == 0, proxy.output()


def test_ipv6_clients_are_intercepted_through_ip6tables_on_a_dual_stack_listener(
    lab, server, tmp_path
):
    """The same gateway over IPv6: setup adds the ip6tables rules too, and a listener on ''
    takes both families' redirected connections."""
    url = f"ws://[{SERVER_ADDR6}]/direct"
    # Without the gateway set up, IPv6 is not even forwarded.
    direct = lab.python(lab.client, "-c", CLIENT, url, SERVER_ADDR6, "", check=False)
    assert direct.returncode == 1
    lab.exec(lab.gateway, "sysctl", "-w", "net.ipv6.conf.all.forwarding=1")
    # Forwarded and not redirected: the server sees the client itself.
    assert client(lab, url, Process(["true"]), address=SERVER_ADDR6) == [
        "hello", "0001", CLIENT_ADDR6
    ]
    lab.exec(lab.gateway, "sysctl", "-w", "net.ipv6.conf.all.forwarding=0")
    setup = lab.run_wsinspect(
        lab.gateway, "gateway", "setup",
        "--interface", lab.gateway_client_if, "--ports", "80,443",
        "--listen-port", str(LISTEN_PORT),
    )  # fmt: skip
    assert "+ ip6tables -t nat -A PREROUTING" in setup.stdout
    assert "--listen-host ''" in setup.stdout
    capture = tmp_path / "cap.db"
    proxy = start_wsinspect(lab, tmp_path, capture, listen_host="")
    output = proxy.output()
    assert f"preflight for the transparent listener *:{LISTEN_PORT}: ready" in output
    assert "WARNING" not in output and "MISSING" not in output, output

    cafile = str(tmp_path / "conf" / "mitmproxy-ca-cert.pem")
    conversations = [
        (f"ws://[{SERVER_ADDR6}]/plain6", "", SERVER_ADDR6, 80),
        (f"wss://[{SERVER_ADDR6}]/secure6", cafile, SERVER_ADDR6, 443),
        ("ws://10.231.2.2/plain4", "", SERVER_ADDR, 80),  # the same listener, IPv4
    ]
    for url, ca, address, _ in conversations:
        seen = GATEWAY_SERVER_ADDR6 if ":" in address else GATEWAY_SERVER_ADDR
        assert client(lab, url, proxy, ca, address) == ["hello", "0001", seen]
    proxy.wait_line(r"#3 closed +101 .* 1000 by client")
    assert proxy.stop() == 0, proxy.output()
    assert f"via transparent to [{SERVER_ADDR6}]:443" in proxy.output()

    store = SessionStore.open(capture)
    sessions = store.sessions()
    # The recorder puts back the brackets of an IPv6 literal host, which mitmproxy drops.
    assert [s.url for s in sessions] == [url for url, *_ in conversations]
    for session, (url, _, address, port) in zip(sessions, conversations):
        hop = session.first_hop
        assert hop.mode == "transparent"
        assert hop.server_addr == (address, port), url
        assert hop.client_addr[0] == (CLIENT_ADDR6 if ":" in address else CLIENT_ADDR), url
        assert session.status == 101 and session.close.code == 1000 and session.close.by == "client"
        seen = GATEWAY_SERVER_ADDR6 if ":" in address else GATEWAY_SERVER_ADDR
        messages = store.messages(session.id, 0, 100)
        assert [(m.from_client, m.type, m.payload) for m in messages] == [
            (True, MessageType.TEXT, b"hello"),
            (False, MessageType.TEXT, b"hello"),
            (True, MessageType.BINARY, b"\x00\x01"),
            (False, MessageType.BINARY, b"\x00\x01"),
            (True, MessageType.TEXT, b"whoami"),
            (False, MessageType.TEXT, seen.encode()),
            (True, MessageType.PING, b"p1"),
            (False, MessageType.PONG, b"p1"),
            (True, MessageType.CLOSE, b"\x03\xe8"),
            (False, MessageType.CLOSE, b"\x03\xe8"),  # the answer, which the raw relay sees
        ]
    store.close()
    report = json.loads(run(*lab.wsinspect("report", str(capture), "--json")).stdout)
    assert [s["hops"][0]["server_addr"] for s in report["sessions"]] == [
        [address, port] for _, _, address, port in conversations
    ]

    lab.run_wsinspect(lab.gateway, "gateway", "teardown")
    for tool in ("iptables", "ip6tables"):
        assert "REDIRECT" not in lab.exec(lab.gateway, tool, "-t", "nat", "-S").stdout
    forwarding = lab.exec(lab.gateway, "sysctl", "-n", "net.ipv6.conf.all.forwarding")
    assert forwarding.stdout.strip() == "0"
