"""The transparent-mode preflight and `wsinspect gateway`, run inside a lab gateway namespace
(never on the host): what they read from real iptables and sysctl state, and that teardown
removes exactly what setup added."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.netns_lab import (
    GATEWAY_CLIENT_ADDR,
    GATEWAY_CLIENT_ADDR6,
    GATEWAY_SERVER_ADDR,
    Lab,
    make_lab,
)
from wsinspect import preflight

SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/send_redirects")


@pytest.fixture
def lab(request) -> Lab:
    return make_lab(request)


async def test_a_transparent_engine_gets_a_preflight_kept_in_its_log_for_the_app(start_proxy):
    """Only reads this host's state: the listener is on loopback, which never gets redirected
    connections, so the verdict is known whatever the host's rules."""
    proxy = await start_proxy(modes=("transparent",))
    results = preflight.run_for_servers(proxy.engine.servers())
    assert [(r.listen_host, r.listen_port) for r in results] == [("127.0.0.1", proxy.port)]
    preflight.log(results[0])
    logged = [r for r in proxy.engine.logs.records if "transparent listener" in r.message]
    assert logged[0].message == (
        f"preflight for the transparent listener 127.0.0.1:{proxy.port}: NOT ready"
    )
    assert logged[0].level == "warning"
    messages = [r.message for r in proxy.engine.logs.records]
    assert any(m.startswith("  MISSING  listen host: 127.0.0.1") for m in messages)


def nat(lab: Lab, tool: str = "iptables") -> str:
    return lab.exec(lab.gateway, tool, "-t", "nat", "-S").stdout


def nat_both(lab: Lab) -> tuple[str, str]:
    return nat(lab), nat(lab, "ip6tables")


def sysctls(lab: Lab) -> dict[str, str]:
    """The sysctls setup may change, IPv6 forwarding of every interface included (writing
    `all` overwrites them)."""
    interfaces = ("all", "default", "lo", lab.gateway_client_if, lab.gateway_server_if)
    names = (
        *SYSCTLS, f"net/ipv4/conf/{lab.gateway_client_if}/send_redirects",
        *(f"net/ipv6/conf/{i}/{key}" for i in interfaces for key in ("forwarding", "accept_ra")),
    )  # fmt: skip
    return {n: lab.exec(lab.gateway, "cat", f"/proc/sys/{n}").stdout.strip() for n in names}


def iptables(lab: Lab, *rule: str, tool: str = "iptables") -> None:
    lab.exec(lab.gateway, tool, "-t", "nat", *rule)


def check(lab: Lab, *args: str):
    return lab.run_wsinspect(lab.gateway, "gateway", "check", *args, check=False)


@pytest.mark.netns
def test_setup_then_teardown_leaves_the_gateway_exactly_as_it_was(lab):
    # Someone's own rules, which teardown must leave alone, one even commented "wsinspect".
    iptables(lab, "-A", "PREROUTING", "-p", "tcp", "--dport", "9999", "-j", "REDIRECT",
             "--to-ports", "9998")  # fmt: skip
    iptables(lab, "-A", "PREROUTING", "-i", lab.gateway_client_if, "-p", "tcp", "--dport", "80",
             "-m", "comment", "--comment", "wsinspect", "-j", "REDIRECT", "--to-ports", "8081")
    iptables(lab, "-A", "OUTPUT", "-p", "tcp", "--dport", "7000", "-m", "comment",
             "--comment", "wsinspect", "-j", "REDIRECT", "--to-ports", "7001")  # fmt: skip
    iptables(lab, "-A", "PREROUTING", "-p", "tcp", "--dport", "9999", "-m", "comment",
             "--comment", "wsinspect", "-j", "REDIRECT", "--to-ports", "9998", tool="ip6tables")
    # One interface forwards IPv6 on its own: writing `all` would overwrite it both ways.
    server_side = f"net/ipv6/conf/{lab.gateway_server_if}/forwarding"
    lab.exec(lab.gateway, "sh", "-c", f"echo 1 > /proc/sys/{server_side}")
    before_rules, before_sysctls = nat_both(lab), sysctls(lab)
    assert before_sysctls["net/ipv4/ip_forward"] == "0"
    assert before_sysctls["net/ipv6/conf/all/forwarding"] == "0"
    assert before_sysctls[server_side] == "1"

    for _ in range(2):  # a second setup adds nothing more
        setup = lab.run_wsinspect(
            lab.gateway, "gateway", "setup", "--interface", lab.gateway_client_if,
            "--ports", "80,443,8000-8100", "--listen-port", "8081",
        )  # fmt: skip
    assert "+ sysctl" not in setup.stdout and "tables" not in setup.stdout
    assert "run `wsinspect --mode transparent --listen-host '' --listen-port 8081`" in setup.stdout
    rules, rules6 = nat_both(lab)
    tag = re.search(r'--comment "?rules=(wsinspect:[0-9a-f]{8})', rules).group(1)
    assert f'--comment "rules={tag}"' in rules6  # one tag for both families
    for port in ("80", "443", "8000:8100"):
        assert rules.count(f'--dport {port} -m comment --comment "{tag}" ') == 1
        assert rules6.count(f'--dport {port} -m comment --comment "{tag}" ') == 1
    after = sysctls(lab)
    assert after["net/ipv4/ip_forward"] == "1" and after["net/ipv4/conf/all/send_redirects"] == "0"
    assert {v for n, v in after.items() if n.endswith("forwarding")} == {"1"}
    # What writing `all` overwrote is recorded, `all` first, for teardown to write back.
    assert re.findall(r'--comment "(net\.ipv6\.conf\.[^"]+)"', rules6) == [
        "net.ipv6.conf.all.forwarding=0", f"net.ipv6.conf.{lab.gateway_server_if}.forwarding=1"
    ]
    result = check(lab, "--listen-port", "8081")
    assert result.returncode == 0, result.stdout
    assert "listener *:8081: ready" in result.stdout
    assert "WARNING" not in result.stdout and "MISSING" not in result.stdout
    assert f"tcp port 8000:8100 arriving on {lab.gateway_client_if} -> 8081" in result.stdout
    assert "OK       IPv6 IP forwarding: on (/proc/sys/net/ipv6/conf/all/forwarding is 1)" in (
        result.stdout
    )
    assert f"OK       IPv6 REDIRECT rule: nat PREROUTING redirects tcp port 80 arriving on " in (
        result.stdout
    )

    teardown = lab.run_wsinspect(lab.gateway, "gateway", "teardown")
    assert "+ sysctl -w net.ipv4.ip_forward=0" in teardown.stdout
    assert (
        "+ sysctl -w net.ipv6.conf.all.forwarding=0\n"
        f"+ sysctl -w net.ipv6.conf.{lab.gateway_server_if}.forwarding=1\n" in teardown.stdout
    )
    assert nat_both(lab) == before_rules
    assert sysctls(lab) == before_sysctls
    assert "left 2 IPv4 nat rule(s) commented 'wsinspect' that setup did not" in teardown.stdout
    assert "left 1 IPv6 nat rule(s) commented 'wsinspect'" in teardown.stdout
    again = lab.run_wsinspect(lab.gateway, "gateway", "teardown")
    assert "nothing to remove: no rule or sysctl change recorded by setup\n" in again.stdout


@pytest.mark.netns
def test_setup_on_a_vlan_interface_uses_its_sysctl_and_teardown_undoes_it(lab):
    """sysctl names write the dot in `eth0.100` as a slash; /proc/sys has the dot. The name,
    not the link type, decides the path: the interface is a veth named as VLANs are (the
    lab's kernels need not have 802.1Q)."""
    vlan = f"{lab.gateway_client_if}.100"
    lab.exec(lab.gateway, "ip", "link", "add", "name", vlan, "type", "veth", "peer", "name",
             f"{lab.gateway_client_if}.101")  # fmt: skip
    lab.exec(lab.gateway, "ip", "link", "set", vlan, "up")
    redirects = f"/proc/sys/net/ipv4/conf/{vlan}/send_redirects"
    before_rules = nat_both(lab)
    assert lab.exec(lab.gateway, "cat", redirects).stdout.strip() == "1"

    setup = lab.run_wsinspect(
        lab.gateway, "gateway", "setup", "--interface", vlan, "--listen-port", "8081"
    )
    name = f"net.ipv4.conf.{lab.gateway_client_if}/100.send_redirects"
    assert f"+ sysctl -w {name}=0" in setup.stdout
    assert lab.exec(lab.gateway, "cat", redirects).stdout.strip() == "0"
    assert re.search(
        rf'-A PREROUTING -i {re.escape(vlan)} -p tcp -m tcp --dport 80 -m comment '
        r'--comment "wsinspect:[0-9a-f]{8}" -j REDIRECT --to-ports 8081', nat(lab),
    )
    result = check(lab, "--listen-port", "8081")
    assert result.returncode == 0, result.stdout
    # The name sysctl(8) takes, as the preflight prints it in its fixes.
    assert lab.exec(lab.gateway, "sysctl", "-n", name).stdout.strip() == "0"

    lab.run_wsinspect(lab.gateway, "gateway", "teardown")
    assert lab.exec(lab.gateway, "cat", redirects).stdout.strip() == "1"
    assert nat_both(lab) == before_rules


def setup_with_readonly(lab: Lab, path: str) -> subprocess.CompletedProcess:
    """Setup with one /proc/sys file read-only (a bind mount in a mount namespace of its own)."""
    script = (
        f"mount --bind {path} {path} && mount -o remount,bind,ro {path} && "
        f"exec {' '.join(lab.wsinspect('gateway', 'setup'))} "
        f"--interface {lab.gateway_client_if} --listen-port 8081"
    )
    return lab.exec(lab.gateway, "unshare", "-m", "sh", "-c", script, check=False)


@pytest.mark.netns
def test_a_setup_that_fails_half_way_leaves_nothing_changed(lab):
    """The client side's send_redirects is read-only (a bind mount in a mount namespace of the
    setup's own): setup fails after turning forwarding on and the `all` redirects off, and
    takes both back."""
    before = nat_both(lab), sysctls(lab)
    assert before[1]["net/ipv4/ip_forward"] == "0"
    readonly = f"/proc/sys/net/ipv4/conf/{lab.gateway_client_if}/send_redirects"
    result = setup_with_readonly(lab, readonly)
    assert result.returncode == 1
    assert "+ sysctl -w net.ipv4.ip_forward=1" in result.stdout
    assert "+ sysctl -w net.ipv4.ip_forward=0" in result.stdout  # taken back
    assert result.stderr == (
        f"wsinspect gateway: cannot set net.ipv4.conf.{lab.gateway_client_if}.send_redirects: "
        "Read-only file system (run as root); nothing was changed\n"
    )
    assert (nat_both(lab), sysctls(lab)) == before


@pytest.mark.netns
def test_a_setup_that_fails_on_the_ipv6_step_takes_back_both_families(lab):
    """IPv4 is all done (forwarding, redirects, rules) and IPv6 has its chain and records when
    turning IPv6 forwarding on fails: everything goes, in both tables."""
    before = nat_both(lab), sysctls(lab)
    result = setup_with_readonly(lab, "/proc/sys/net/ipv6/conf/all/forwarding")
    assert result.returncode == 1
    out = result.stdout
    done = out[: out.index("setup failed; undoing what it did:")]
    assert "+ iptables -t nat -A PREROUTING" in done and "+ sysctl -w net.ipv4.ip_forward=1" in done
    assert "+ ip6tables -t nat -N wsinspect-restore" in done
    assert "+ ip6tables -t nat -A wsinspect-restore" in done
    undone = out[out.index("setup failed; undoing what it did:") :]
    assert "+ iptables -t nat -D PREROUTING" in undone and "+ ip6tables -t nat -X" in undone
    assert "+ sysctl -w net.ipv4.ip_forward=0" in undone
    assert result.stderr == (
        "wsinspect gateway: cannot set net.ipv6.conf.all.forwarding: Read-only file system "
        "(run as root); nothing was changed\n"
    )
    assert (nat_both(lab), sysctls(lab)) == before


@pytest.mark.netns
def test_preflight_names_what_is_missing_with_commands_to_fix_and_undo(lab):
    result = check(lab, "--listen-port", "8080")
    assert result.returncode == 1
    out = result.stdout
    assert "listener *:8080: NOT ready" in out
    assert "MISSING  IP forwarding: off (/proc/sys/net/ipv4/ip_forward is 0)" in out
    assert "fix:  sysctl -w net.ipv4.ip_forward=1" in out
    assert "undo: sysctl -w net.ipv4.ip_forward=0" in out
    # The gateway's default route leaves on the server side, so clients are on the other one.
    assert (
        f"(or: wsinspect gateway setup --interface {lab.gateway_client_if} --ports 80,443 "
        "--listen-port 8080)" in out
    )
    assert "undo: iptables -t nat -D PREROUTING" in out
    # The gateway has IPv6 addresses: the same for ip6tables, with neither family set up.
    assert "MISSING  IPv6 IP forwarding: off (/proc/sys/net/ipv6/conf/all/forwarding is 0)" in out
    assert "fix:  sysctl -w net.ipv6.conf.all.forwarding=1" in out
    assert "MISSING  IPv6 REDIRECT rule: no rule in ip6tables' nat PREROUTING chain" in out
    assert (
        f"fix:  ip6tables -t nat -A PREROUTING -i {lab.gateway_client_if} -p tcp --dport 80 "
        "-m comment --comment wsinspect -j REDIRECT --to-ports 8080" in out
    )


@pytest.mark.netns
def test_a_gateway_redirecting_ipv4_only_warns_that_ipv6_clients_bypass_it(lab):
    """Setup's commands run by hand for IPv4 only, as the preflight printed them before."""
    lab.exec(lab.gateway, "sysctl", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    iptables(lab, "-A", "PREROUTING", "-i", lab.gateway_client_if, "-p", "tcp", "--dport", "80",
             "-j", "REDIRECT", "--to-ports", "8080")  # fmt: skip
    result = check(lab, "--listen-host", "0.0.0.0", "--listen-port", "8080")
    # IPv4 works, so the listener is ready; the IPv6 gap is a warning with its fix.
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert "listener 0.0.0.0:8080: ready" in out
    assert (
        "WARNING  IPv6 REDIRECT rule: no rule in ip6tables' nat PREROUTING chain redirects TCP "
        "to port 8080, IPv6 clients bypass wsinspect" in out
    )
    assert (
        f"fix:  ip6tables -t nat -A PREROUTING -i {lab.gateway_client_if} -p tcp --dport 80 "
        "-m comment --comment wsinspect -j REDIRECT --to-ports 8080" in out
    )
    assert (
        f"(or: wsinspect gateway setup --interface {lab.gateway_client_if} --ports 80,443 "
        "--listen-port 8080)" in out
    )
    assert (
        "WARNING  IPv6 listen host: 0.0.0.0 takes IPv4 connections only, but REDIRECT sends "
        "IPv6 clients' connections to this host's IPv6 address" in out
    )
    assert "restart wsinspect with --listen-host '' (every address, IPv4 and IPv6)" in out

    # With the rule, a listener on "::" takes IPv6 only: now IPv4 clients would bypass it.
    iptables(lab, "-A", "PREROUTING", "-i", lab.gateway_client_if, "-p", "tcp", "--dport", "80",
             "-j", "REDIRECT", "--to-ports", "8080", tool="ip6tables")  # fmt: skip
    out = check(lab, "--listen-host", "::", "--listen-port", "8080").stdout
    assert "OK       IPv6 REDIRECT rule: nat PREROUTING redirects tcp port 80" in out
    assert "MISSING  listen host: :: takes IPv6 connections only" in out
    out = check(lab, "--listen-host", GATEWAY_CLIENT_ADDR6, "--listen-port", "8080").stdout
    assert f"OK       IPv6 listen host: {GATEWAY_CLIENT_ADDR6} is where REDIRECT sends" in out
    result = check(lab, "--listen-port", "8080")
    assert result.returncode == 0 and "WARNING" not in result.stdout, result.stdout


@pytest.mark.netns
def test_preflight_follows_jumps_and_explains_rules_that_do_not_help(lab):
    iptables(lab, "-A", "OUTPUT", "-p", "tcp", "--dport", "80", "-j", "REDIRECT",
             "--to-ports", "8080")  # fmt: skip
    iptables(lab, "-A", "PREROUTING", "-p", "tcp", "--dport", "80", "-j", "REDIRECT",
             "--to-ports", "9090")  # fmt: skip
    out = check(lab, "--listen-port", "8080").stdout
    assert "in OUTPUT, which only redirects this host's own connections" in out
    assert "tcp port 80 -> 9090, not to 8080" in out

    iptables(lab, "-N", "LAB")
    iptables(lab, "-A", "LAB", "-p", "tcp", "-m", "multiport", "--dports", "80,443", "-j",
             "REDIRECT", "--to-ports", "8080")  # fmt: skip
    out = check(lab, "--listen-port", "8080").stdout
    assert "tcp port 80,443 -> 8080 in LAB, which PREROUTING never jumps to" in out

    iptables(lab, "-A", "PREROUTING", "-i", lab.gateway_client_if, "-j", "LAB")
    out = check(lab, "--listen-port", "8080").stdout
    assert "OK       REDIRECT rule: nat PREROUTING redirects tcp port 80,443 -> 8080" in out


@pytest.mark.netns
def test_listen_host_must_take_the_redirected_connections(lab):
    iptables(lab, "-A", "PREROUTING", "-i", lab.gateway_client_if, "-p", "tcp", "--dport", "80",
             "-j", "REDIRECT", "--to-ports", "8080")  # fmt: skip
    out = check(lab, "--listen-host", "127.0.0.1", "--listen-port", "8080").stdout
    assert "MISSING  listen host: 127.0.0.1 is loopback only" in out
    assert "restart wsinspect with --listen-host 0.0.0.0" in out
    # REDIRECT sends to the address of the interface the connection arrived on.
    out = check(lab, "--listen-host", GATEWAY_CLIENT_ADDR, "--listen-port", "8080").stdout
    assert f"OK       listen host: {GATEWAY_CLIENT_ADDR} is where REDIRECT sends" in out
    out = check(lab, "--listen-host", GATEWAY_SERVER_ADDR, "--listen-port", "8080").stdout
    assert (
        f"wsinspect listens on {GATEWAY_SERVER_ADDR} only, but REDIRECT sends clients' "
        f"connections to {GATEWAY_CLIENT_ADDR} on {lab.gateway_client_if}" in out
    )


@pytest.mark.netns
@pytest.mark.parametrize(
    "args, message",
    [
        (["--interface", "nosuch0"], "no network interface 'nosuch0' on this host"),
        (["--interface", "lo", "--ports", "80,http"], "bad port 'http' in --ports"),
        (["--interface", "lo", "--ports", "90-80"], "bad port '90-80' in --ports"),
        (["--interface", "lo", "--listen-port", "0"], "bad --listen-port 0 (1 to 65535)"),
    ],
)
def test_setup_refuses_bad_input_in_one_line_and_changes_nothing(lab, args, message):
    before = nat(lab), sysctls(lab)
    result = lab.run_wsinspect(lab.gateway, "gateway", "setup", *args, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"wsinspect gateway: {message}")
    assert result.stderr.count("\n") == 1
    assert (nat(lab), sysctls(lab)) == before


# A router advertisement (RFC 4861 4.2) with a router lifetime of 1800 s and no options; the
# kernel fills in the ICMPv6 checksum, and picks the link-local source RAs must have.
ADVERTISE = """
import socket, struct, sys
index = socket.if_nametoindex(sys.argv[1])
with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    s.sendto(struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0), ("ff02::1", 0, 0, index))
"""


def wait_for(predicate, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} in {timeout}s"
        time.sleep(0.1)


@pytest.mark.netns
def test_setup_keeps_the_default_route_learned_from_router_advertisements(lab):
    """Turning IPv6 forwarding on deletes, at once, the default routes learned from router
    advertisements on interfaces whose accept_ra is not 2: setup sets 2 there first, and
    teardown puts 1 back. The server namespace advertises itself as the gateway's router."""
    lab.exec(lab.gateway, "ip", "-6", "route", "del", "default")

    def learned() -> str:
        return lab.exec(lab.gateway, "ip", "-6", "route", "show", "default", "proto", "ra").stdout

    def link_local_ready() -> bool:
        shown = lab.exec(lab.server, "ip", "-6", "addr", "show", "dev", lab.server_if, "scope",
                         "link").stdout  # fmt: skip
        return "inet6 fe80::" in shown and "tentative" not in shown

    def advertise() -> None:
        lab.python(lab.server, "-c", ADVERTISE, lab.server_if)
        wait_for(learned, "default route from the router advertisement")

    wait_for(link_local_ready, "link-local address past duplicate address detection")
    advertise()
    # What setup avoids: forwarding on with accept_ra 1 loses the route there and then.
    lab.exec(lab.gateway, "sysctl", "-w", "net.ipv6.conf.all.forwarding=1")
    assert learned() == ""
    lab.exec(lab.gateway, "sysctl", "-w", "net.ipv6.conf.all.forwarding=0")
    advertise()
    route = learned()
    assert route.startswith("default via fe80::") and f"dev {lab.gateway_server_if} " in route
    before = nat_both(lab), sysctls(lab)
    accept_ra = f"net.ipv6.conf.{lab.gateway_server_if}.accept_ra"

    out = check(lab, "--listen-port", "8081").stdout
    assert f"fix:  sysctl -w {accept_ra}=2" in out
    assert "drops the default routes it learned from router advertisements" in out

    setup = lab.run_wsinspect(
        lab.gateway, "gateway", "setup", "--interface", lab.gateway_client_if,
        "--listen-port", "8081",
    ).stdout  # fmt: skip
    assert setup.index(f"+ sysctl -w {accept_ra}=2") < setup.index(
        "+ sysctl -w net.ipv6.conf.all.forwarding=1"
    )
    assert learned().split(" expires")[0] == route.split(" expires")[0]
    result = check(lab, "--listen-port", "8081")
    assert result.returncode == 0 and "WARNING" not in result.stdout, result.stdout

    teardown = lab.run_wsinspect(lab.gateway, "gateway", "teardown").stdout
    assert f"+ sysctl -w {accept_ra}=1" in teardown
    assert (nat_both(lab), sysctls(lab)) == before
    assert learned().split(" expires")[0] == route.split(" expires")[0]
