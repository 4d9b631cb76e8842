"""Preflight for transparent mode on a Linux gateway: will clients' traffic reach the proxy?

It only reads the host's state (IP forwarding, the nat table's REDIRECT rules, interface
addresses), for IPv4 (iptables) and IPv6 (ip6tables), and never changes it. Each problem says
precisely what is missing, with the exact commands that fix it and those that undo the fix. `wsinspect gateway setup` (gateway.py) runs
the same commands when asked to.
"""

from __future__ import annotations

import ipaddress
import logging
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mitmproxy.proxy import mode_specs

from .addresses import is_loopback
from .errors import HostError

logger = logging.getLogger("wsinspect")

SYSCTL_ROOT = Path("/proc/sys")
IP_FORWARD = "net.ipv4.ip_forward"
IPV6_FORWARDING = "net.ipv6.conf.all.forwarding"
RULE_COMMENT = "wsinspect"  # tags the nat rules the preflight suggests
DEFAULT_PORTS = ("80", "443")
# mitmproxy binds "" as one IPv4 and one IPv6 socket; "::" binds an IPv6-only one (asyncio
# sets IPV6_V6ONLY), which takes no IPv4 connection.
BOTH_FAMILIES_HOST = ""


@dataclass(frozen=True, slots=True)
class Family:
    """What differs between IPv4 and IPv6 for a transparent gateway."""

    name: str
    version: int
    iptables: str  # the tool of its nat table
    forwarding: str  # the sysctl that lets the host forward
    wildcard_hosts: tuple[str, ...]  # listen hosts that take this family on every interface

    @property
    def prefix(self) -> str:
        """Check names of IPv4 stay as they were ("IP forwarding"); IPv6 ones say IPv6."""
        return "" if self.version == 4 else "IPv6 "

    def available(self) -> bool:
        """False when the kernel runs without it (IPv6 off with ipv6.disable=1)."""
        return sysctl_path(self.forwarding).exists()


IPV4 = Family("IPv4", 4, "iptables", IP_FORWARD, (BOTH_FAMILIES_HOST, "0.0.0.0", "*"))
IPV6 = Family("IPv6", 6, "ip6tables", IPV6_FORWARDING, (BOTH_FAMILIES_HOST, "::", "*"))
FAMILIES = (IPV4, IPV6)


def sysctl_name(*parts: str) -> str:
    """A sysctl name as sysctl(8) writes it: dots separate the parts, and a dot within a part
    (a VLAN interface such as eth0.100) is written as a slash."""
    return ".".join(part.replace(".", "/") for part in parts)


def sysctl_path(name: str) -> Path:
    """The /proc/sys file of a sysctl name (see `sysctl_name`)."""
    return SYSCTL_ROOT.joinpath(*(part.replace("/", ".") for part in name.split(".")))


def read_sysctl(name: str) -> str | None:
    try:
        return sysctl_path(name).read_text().strip()
    except OSError:
        return None


def send_redirects_names(interface: str | None) -> list[str]:
    """The kernel sends ICMP redirects on an interface when `all` or the interface says so."""
    names = ["net.ipv4.conf.all.send_redirects"]
    if interface:
        names.append(sysctl_name("net", "ipv4", "conf", interface, "send_redirects"))
    return names


def redirect_rule(
    interface: str, port: str, listen_port: int, comment: str = RULE_COMMENT
) -> list[str]:
    """iptables arguments (after `-t nat -A|-D`) of the rule that sends clients' TCP to one
    port, arriving on `interface`, to the proxy. `port` is a number or a range `N:M`."""
    return [
        "PREROUTING", "-i", interface, "-p", "tcp", "--dport", port,
        "-m", "comment", "--comment", comment,
        "-j", "REDIRECT", "--to-ports", str(listen_port),
    ]  # fmt: skip


def iptables_command(action: str, rule: Sequence[str], family: Family = IPV4) -> str:
    return shlex.join([family.iptables, "-t", "nat", action, *rule])


# ----- reading the host ------------------------------------------------------------------


def run_tool(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        raise HostError(f"`{argv[0]}` is not installed (apt-get install iptables iproute2)")
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip() or f"exit status {result.returncode}").splitlines()[0]
        raise HostError(f"`{shlex.join(argv)}` failed: {message}")
    return result.stdout


def nat_rules(family: Family = IPV4) -> str:
    """The nat table as `iptables -t nat -S` (or ip6tables) lists it."""
    return run_tool(family.iptables, "-t", "nat", "-S")


def interface_addresses(family: Family = IPV4) -> dict[str, list[str]]:
    """Addresses of each interface in the kernel's order, the one REDIRECT uses first: IPv4's
    primary address; for IPv6 the first listed, global scope coming before link-local."""
    addresses: dict[str, list[str]] = {}
    word = "inet" if family.version == 4 else "inet6"
    for line in run_tool("ip", "-o", f"-{family.version}", "addr", "show").splitlines():
        words = line.split()
        if len(words) >= 4 and words[2] == word:
            addresses.setdefault(words[1], []).append(words[3].split("/")[0])
    return addresses


def routable(address: str) -> bool:
    """An address other hosts route to (not loopback, not link-local)."""
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local)


def default_route_interfaces(family: Family = IPV4) -> set[str]:
    listing = run_tool("ip", f"-{family.version}", "route", "show", "default")
    routes = [line.split() for line in listing.splitlines()]
    return {words[words.index("dev") + 1] for words in routes if "dev" in words[:-1]}


def router_advertised_interfaces() -> set[str]:
    """Interfaces with IPv6 routes learned from router advertisements (`proto ra`)."""
    listing = run_tool("ip", "-6", "route", "show", "proto", "ra")
    routes = [line.split() for line in listing.splitlines()]
    return {words[words.index("dev") + 1] for words in routes if "dev" in words[:-1]}


def accept_ra_name(interface: str) -> str:
    return sysctl_name("net", "ipv6", "conf", interface, "accept_ra")


def routers_lost_to_forwarding() -> list[str]:
    """The accept_ra sysctls that must become 2 before IPv6 forwarding goes on. Turning it on
    makes the kernel delete, at once, the default routes learned from router advertisements
    on each interface whose accept_ra is not 2, and ignore further advertisements there."""
    return [
        name for interface in sorted(router_advertised_interfaces())
        if read_sysctl(name := accept_ra_name(interface)) == "1"
    ]  # fmt: skip


# ----- the nat table ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Redirect:
    """One REDIRECT rule of the nat table."""

    chain: str
    in_interface: str | None = None  # "!eth0" when negated
    protocol: str | None = None
    dports: str | None = None  # "80", "80:90" or "80,443"; "!80" when negated
    to_ports: str | None = None  # "8080" or "8080-8090"

    @property
    def named_interface(self) -> str | None:
        """The one interface the rule applies to; None for any (or all but one)."""
        if self.in_interface and not self.in_interface.startswith("!"):
            return self.in_interface
        return None

    def sends_to(self, port: int) -> bool:
        if self.to_ports is None:  # only the address changes: the port must already match
            return self.dports is not None and _port_in(port, self.dports)
        return _port_in(port, self.to_ports.replace("-", ":"))

    def describe(self) -> str:
        ports = f"port {self.dports}" if self.dports else "every port"
        where = f" arriving on {self.in_interface}" if self.in_interface else ""
        return f"{self.protocol or 'any protocol'} {ports}{where} -> {self.to_ports or 'same port'}"


def _port_in(port: int, spec: str) -> bool:
    if spec.startswith("!"):
        return False
    for part in spec.split(","):
        low, _, high = part.partition(":")
        if int(low) <= port <= int(high or low):
            return True
    return False


def _options(words: list[str]) -> dict[str, str]:
    """`-A CHAIN ! -i x -p tcp --dport 80 …` as {option: value}, negations as "!value"."""
    options: dict[str, str] = {}
    negate = False
    i = 0
    while i < len(words):
        word = words[i]
        if word == "!":
            negate = True
        elif word.startswith("-") and i + 1 < len(words) and not words[i + 1].startswith("-"):
            options[word] = ("!" if negate else "") + words[i + 1]
            negate = False
            i += 1
        i += 1
    return options


def parse_rules(text: str) -> list[tuple[str, dict[str, str], str]]:
    """Each appended rule of an `iptables -S` listing: (chain, options, line)."""
    rules = []
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) >= 2 and words[0] == "-A":
            rules.append((words[1], _options(words[2:]), line))
    return rules


def parse_redirects(text: str) -> list[Redirect]:
    return [
        Redirect(
            chain=chain,
            in_interface=options.get("-i"),
            protocol=options.get("-p"),
            dports=options.get("--dport") or options.get("--dports"),
            to_ports=options.get("--to-ports"),
        )
        for chain, options, _ in parse_rules(text)
        if options.get("-j") == "REDIRECT"
    ]


def chains_reached(text: str, start: str = "PREROUTING") -> set[str]:
    """`start` and every user chain it jumps or goes to, directly or not."""
    edges: dict[str, set[str]] = {}
    for chain, options, _ in parse_rules(text):
        target = options.get("-j") or options.get("-g")
        if target:
            edges.setdefault(chain, set()).add(target)
    reached, todo = {start}, [start]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    return reached


# ----- the checks ------------------------------------------------------------------------


class Status(StrEnum):
    """How one check of the preflight turned out."""

    OK = "ok"
    MISSING = "missing"
    UNKNOWN = "unknown"  # could not be read
    WARNING = "warning"  # one family's clients bypass the proxy while the other's reach it
    ADVICE = "advice"  # only matters in some topologies


@dataclass(frozen=True, slots=True)
class Check:
    """One thing transparent mode needs, and how it stands."""

    name: str
    status: Status
    detail: str
    fix: tuple[str, ...] = ()
    undo: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


@dataclass(frozen=True, slots=True)
class Preflight:
    """The preflight of one transparent listener."""

    listen_host: str
    listen_port: int
    checks: tuple[Check, ...] = ()

    @property
    def ok(self) -> bool:
        return all(c.status in (Status.OK, Status.ADVICE, Status.WARNING) for c in self.checks)

    @property
    def warned(self) -> bool:
        return any(c.status is Status.WARNING for c in self.checks)

    def lines(self) -> list[str]:
        host = self.listen_host or "*"
        verdict = "ready" if self.ok else "NOT ready"
        lines = [f"preflight for the transparent listener {host}:{self.listen_port}: {verdict}"]
        for check in self.checks:
            lines.append(f"  {check.status.upper():<8} {check.name}: {check.detail}")
            for label, commands in (("fix", check.fix), ("undo", check.undo)):
                for i, command in enumerate(commands):
                    lines.append(f"  {'':<8}   {label + ':' if i == 0 else '':<6}{command}")
            lines += [f"  {'':<8}   {note}" for note in check.notes]
        return lines


@dataclass(frozen=True, slots=True)
class _Host:
    """What the preflight read from the host for one family; a failed read keeps its error."""

    family: Family
    nat: str | None
    nat_error: str | None
    addresses: dict[str, list[str]]
    default_interfaces: set[str]

    @classmethod
    def read(cls, family: Family) -> _Host:
        try:
            nat, nat_error = nat_rules(family), None
        except HostError as e:
            nat, nat_error = None, str(e)
        try:
            addresses, defaults = interface_addresses(family), default_route_interfaces(family)
        except HostError:
            addresses, defaults = {}, set()
        return cls(family, nat, nat_error, addresses, defaults)

    def routable_addresses(self) -> list[str]:
        return [a for addrs in self.addresses.values() for a in addrs if routable(a)]

    def client_interface(self) -> tuple[str, str]:
        """The interface clients most likely arrive on (the one addressed interface that does
        not carry the default route, or the only one), or "IF" and a note saying what it is."""
        addressed = sorted(
            name for name, addrs in self.addresses.items()
            if name != "lo" and any(routable(a) for a in addrs)
        )  # fmt: skip
        candidates = [n for n in addressed if n not in self.default_interfaces] or addressed
        if len(candidates) == 1:
            return candidates[0], ""
        listed = ", ".join(candidates) or "none found"
        return "IF", f"IF: the interface your clients reach this gateway on ({listed})."


def _forwarding_check(family: Family, status: Status) -> Check:
    """`status`: what a problem is for this family ("missing", or "warning")."""
    name = f"{family.prefix}IP forwarding"
    value = read_sysctl(family.forwarding)
    path = sysctl_path(family.forwarding)
    if value is None:
        return Check(name, Status.UNKNOWN, f"cannot read {path}")
    if value == "1":
        return Check(name, Status.OK, f"on ({path} is 1)")
    notes: tuple[str, ...] = ()
    fix = (f"sysctl -w {family.forwarding}=1",)
    undo = (f"sysctl -w {family.forwarding}={value}",)
    if family is IPV6:
        try:
            kept = routers_lost_to_forwarding()
        except HostError:
            kept = []
        fix = (*(f"sysctl -w {n}=2" for n in kept), *fix)
        undo = (*undo, *(f"sysctl -w {n}=1" for n in kept))
        notes = (
            "Forwarding on makes every interface a router: one whose accept_ra is not 2 "
            "drops the default routes it learned from router advertisements and ignores new "
            "ones (`wsinspect gateway setup` sets 2 first where such routes exist).",
        )
    return Check(
        name,
        status,
        f"off ({path} is {value}): the gateway drops its clients' traffic to other hosts",
        fix=fix,
        undo=undo,
        notes=notes,
    )


def _matching_redirects(host: _Host, listen_port: int) -> list[Redirect]:
    """The REDIRECT rules PREROUTING reaches that send TCP to the listener."""
    if host.nat is None:
        return []
    reached = chains_reached(host.nat)
    return [
        r for r in parse_redirects(host.nat)
        if r.protocol in (None, "tcp") and r.chain in reached and r.sends_to(listen_port)
    ]  # fmt: skip


def _redirect_check(host: _Host, listen_port: int, status: Status) -> Check:
    family = host.family
    name = f"{family.prefix}REDIRECT rule"
    if host.nat is None:
        detail = f"cannot read the {family.name} nat table: {host.nat_error}"
        return Check(name, Status.UNKNOWN, detail, notes=("Reading it needs root.",))
    if matching := _matching_redirects(host, listen_port):
        found = "; ".join(r.describe() for r in matching)
        return Check(name, Status.OK, f"nat PREROUTING redirects {found}")
    reached = chains_reached(host.nat)
    tcp = [r for r in parse_redirects(host.nat) if r.protocol in (None, "tcp")]
    found = "; ".join(_why_not(r, listen_port, reached) for r in tcp)
    interface, note = host.client_interface()
    rules = [redirect_rule(interface, port, listen_port) for port in DEFAULT_PORTS]
    setup = (
        f"wsinspect gateway setup --interface {interface} --ports {','.join(DEFAULT_PORTS)} "
        f"--listen-port {listen_port}"
    )
    table = "the nat table's" if family is IPV4 else "ip6tables' nat"
    consequence = (
        "so clients' connections go past the proxy" if status is Status.MISSING
        else "IPv6 clients bypass wsinspect" if family is IPV6
        else "IPv4 clients bypass wsinspect"
    )  # fmt: skip
    return Check(
        name,
        status,
        f"no rule in {table} PREROUTING chain redirects TCP to port {listen_port}, "
        + consequence
        + (f" (found: {found})" if found else ""),
        fix=(*(iptables_command("-A", r, family) for r in rules), f"(or: {setup})"),
        undo=(
            *(iptables_command("-D", r, family) for r in rules),
            "(or: wsinspect gateway teardown)",
        ),
        notes=(*filter(None, [note]), "Other ports: a rule each, e.g. --dport 8765 or 8000:8100."),
    )


def _why_not(rule: Redirect, listen_port: int, reached: set[str]) -> str:
    if rule.chain == "OUTPUT":
        return f"{rule.describe()} in OUTPUT, which only redirects this host's own connections"
    if rule.chain not in reached:
        return f"{rule.describe()} in {rule.chain}, which PREROUTING never jumps to"
    return f"{rule.describe()}, not to {listen_port}"


def _version(host: str) -> int | None:
    """4 or 6 for an address literal, None for a name."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def _listen_host_check(
    host: _Host, listen_host: str, listen_port: int, redirects: list[Redirect], status: Status
) -> Check:
    """REDIRECT rewrites a connection's destination to the (first) address of the interface it
    arrived on, so the listener must accept connections to that address."""
    family = host.family
    name = f"{family.prefix}listen host"
    if listen_host in family.wildcard_hosts:
        detail = f"{listen_host or '*'} accepts redirected connections on every interface"
        return Check(name, Status.OK, detail)
    if family is IPV4:
        fix = ("restart wsinspect with --listen-host 0.0.0.0 (every interface)",)
    else:
        fix = ("restart wsinspect with --listen-host '' (every address, IPv4 and IPv6)",)
    version = _version(listen_host)
    if version is not None and version != family.version:
        detail = (
            f"{listen_host} takes IPv{version} connections only, but REDIRECT sends "
            f"{family.name} clients' connections to this host's {family.name} address"
        )
        return Check(name, status, detail, fix=fix)
    if is_loopback(listen_host):
        return Check(
            name,
            status,
            f"{listen_host} is loopback only, but REDIRECT sends clients' connections to the "
            f"address of the interface they arrive on, where nothing listens on port {listen_port}",
            fix=fix,
        )
    if not redirects:
        detail = f"{listen_host}: it must be the primary address of the clients' interface"
        return Check(name, Status.OK, detail)
    elsewhere = [
        f"{address} on {interface}"
        for interface in {r.named_interface for r in redirects if r.named_interface}
        if (address := (host.addresses.get(interface) or ["no address"])[0]) != listen_host
    ]
    if any(r.named_interface is None for r in redirects):
        elsewhere.append("the address of any other interface they arrive on")
    if not elsewhere:
        return Check(name, Status.OK, f"{listen_host} is where REDIRECT sends clients' connections")
    return Check(
        name,
        status,
        f"wsinspect listens on {listen_host} only, but REDIRECT sends clients' connections to "
        + ", ".join(elsewhere),
        fix=fix,
    )


def _icmp_redirects_check(redirects: list[Redirect]) -> Check:
    interfaces = sorted({r.named_interface for r in redirects if r.named_interface})
    names = dict.fromkeys(n for i in interfaces or [None] for n in send_redirects_names(i))
    on = [n for n in names if read_sysctl(n) == "1"]
    if not on:
        return Check("ICMP redirects", Status.OK, "off")
    return Check(
        "ICMP redirects",
        Status.ADVICE,
        "sent; when clients and servers share a network, they tell clients to bypass the gateway",
        fix=tuple(f"sysctl -w {n}=0" for n in on),
        undo=tuple(f"sysctl -w {n}=1" for n in on),
    )


def run(listen_host: str, listen_port: int) -> Preflight:
    """The preflight of a transparent listener at listen_host:listen_port, for IPv4 and, when
    this host has IPv6 addresses beyond link-local, for IPv6. A family's problems are
    "missing" when its redirect rule is there, or when neither family has one; a family with
    no rule while the other has one gets a warning: its clients bypass wsinspect."""
    v4 = _Host.read(IPV4)
    v6 = _Host.read(IPV6) if IPV6.available() else None
    in_use = [v4] + ([v6] if v6 is not None and v6.routable_addresses() else [])
    matching = {host.family: _matching_redirects(host, listen_port) for host in in_use}
    any_redirect = any(matching.values())
    checks: list[Check] = []
    for host in in_use:
        status = Status.MISSING if matching[host.family] or not any_redirect else Status.WARNING
        checks += [
            _forwarding_check(host.family, status),
            _redirect_check(host, listen_port, status),
            _listen_host_check(host, listen_host, listen_port, matching[host.family], status),
        ]
    checks.append(_icmp_redirects_check(matching[IPV4]))
    if len(in_use) == 1:
        why = "IPv6 is off in this kernel" if v6 is None else "no IPv6 address beyond link-local"
        detail = f"{why}: no IPv6 client can route through this host"
        checks.append(Check("IPv6", Status.OK, detail))
    return Preflight(listen_host, listen_port, tuple(checks))


def transparent_listeners(
    servers: Sequence[tuple[str, Sequence[tuple[str, int]]]],
) -> list[tuple[str, int]]:
    """The (host, port) of each transparent listener among (mode spec, addresses) pairs."""
    found: list[tuple[str, int]] = []
    for spec, addrs in servers:
        if mode_specs.ProxyMode.parse(spec).type_name != "transparent" or not addrs:
            continue
        hosts = [h for h, _ in addrs]
        # mitmproxy binds "" (every address) as one IPv4 and one IPv6 socket.
        host = "" if {"0.0.0.0", "::"} <= set(hosts) else hosts[0]
        found.append((host, addrs[0][1]))
    return found


def log(result: Preflight) -> None:
    """Log the preflight to the wsinspect logger, whose records the engine keeps for the app."""
    level = logging.INFO if result.ok and not result.warned else logging.WARNING
    for line in result.lines():
        logger.log(level, line)


def run_for_servers(servers: Sequence[tuple[str, Sequence[tuple[str, int]]]]) -> list[Preflight]:
    """The preflight of every transparent listener of a running engine (`Engine.servers()`)."""
    return [run(host, port) for host, port in transparent_listeners(servers)]
