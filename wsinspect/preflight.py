"""Preflight for transparent mode on a Linux gateway: will clients' traffic reach the proxy?

It only reads the host's state (IP forwarding, the nat table's REDIRECT rules, interface
addresses) and never changes it. Each problem says precisely what is missing, with the exact
commands that fix it and those that undo the fix. `wsinspect gateway setup` (gateway.py) runs
the same commands when asked to.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mitmproxy.proxy import mode_specs

from .engine import is_loopback

logger = logging.getLogger("wsinspect")

SYSCTL_ROOT = Path("/proc/sys")
IP_FORWARD = "net.ipv4.ip_forward"
RULE_COMMENT = "wsinspect"  # tags the nat rules the preflight suggests
DEFAULT_PORTS = ("80", "443")
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")


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


def iptables_command(action: str, rule: Sequence[str]) -> str:
    return shlex.join(["iptables", "-t", "nat", action, *rule])


# ----- reading the host ------------------------------------------------------------------


class HostError(Exception):
    """A tool the preflight needs is missing or refused; the message says which and why."""


def run_tool(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        raise HostError(f"`{argv[0]}` is not installed (apt-get install iptables iproute2)")
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip() or f"exit status {result.returncode}").splitlines()[0]
        raise HostError(f"`{shlex.join(argv)}` failed: {message}")
    return result.stdout


def nat_rules() -> str:
    """The nat table as `iptables -t nat -S` lists it."""
    return run_tool("iptables", "-t", "nat", "-S")


def interface_addresses() -> dict[str, list[str]]:
    """IPv4 addresses of each interface, primary address first (the one REDIRECT uses)."""
    addresses: dict[str, list[str]] = {}
    for line in run_tool("ip", "-o", "-4", "addr", "show").splitlines():
        words = line.split()
        if len(words) >= 4 and words[2] == "inet":
            addresses.setdefault(words[1], []).append(words[3].split("/")[0])
    return addresses


def default_route_interfaces() -> set[str]:
    listing = run_tool("ip", "-4", "route", "show", "default")
    routes = [line.split() for line in listing.splitlines()]
    return {words[words.index("dev") + 1] for words in routes if "dev" in words[:-1]}


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


@dataclass(frozen=True, slots=True)
class Check:
    """One thing transparent mode needs. `status` is "ok", "missing", "unknown" (could not
    be read) or "advice" (only matters in some topologies)."""

    name: str
    status: str
    detail: str
    fix: tuple[str, ...] = ()
    undo: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class Preflight:
    """The preflight of one transparent listener."""

    listen_host: str
    listen_port: int
    checks: tuple[Check, ...] = ()

    @property
    def ok(self) -> bool:
        return all(c.status in ("ok", "advice") for c in self.checks)

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
    """What the preflight read from the host; a failed read keeps its error message."""

    nat: str | None
    nat_error: str | None
    addresses: dict[str, list[str]]
    default_interfaces: set[str]

    @classmethod
    def read(cls) -> _Host:
        try:
            nat, nat_error = nat_rules(), None
        except HostError as e:
            nat, nat_error = None, str(e)
        try:
            addresses, defaults = interface_addresses(), default_route_interfaces()
        except HostError:
            addresses, defaults = {}, set()
        return cls(nat, nat_error, addresses, defaults)

    def client_interface(self) -> tuple[str, str]:
        """The interface clients most likely arrive on (the one addressed interface that does
        not carry the default route, or the only one), or "IF" and a note saying what it is."""
        addressed = sorted(name for name in self.addresses if name != "lo")
        candidates = [n for n in addressed if n not in self.default_interfaces] or addressed
        if len(candidates) == 1:
            return candidates[0], ""
        listed = ", ".join(candidates) or "none found"
        return "IF", f"IF: the interface your clients reach this gateway on ({listed})."


def _forwarding_check() -> Check:
    value = read_sysctl(IP_FORWARD)
    path = sysctl_path(IP_FORWARD)
    if value is None:
        return Check("IP forwarding", "unknown", f"cannot read {path}")
    if value == "1":
        return Check("IP forwarding", "ok", f"on ({path} is 1)")
    return Check(
        "IP forwarding",
        "missing",
        f"off ({path} is {value}): the gateway drops its clients' traffic to other hosts",
        fix=(f"sysctl -w {IP_FORWARD}=1",),
        undo=(f"sysctl -w {IP_FORWARD}={value}",),
    )


def _redirect_check(host: _Host, listen_port: int) -> tuple[Check, list[Redirect]]:
    """Also returns the rules that do redirect to the listener."""
    name = "REDIRECT rule"
    if host.nat is None:
        detail = f"cannot read the nat table: {host.nat_error}"
        return Check(name, "unknown", detail, notes=("Reading it needs root.",)), []
    reached = chains_reached(host.nat)
    tcp = [r for r in parse_redirects(host.nat) if r.protocol in (None, "tcp")]
    matching = [r for r in tcp if r.chain in reached and r.sends_to(listen_port)]
    if matching:
        found = "; ".join(r.describe() for r in matching)
        return Check(name, "ok", f"nat PREROUTING redirects {found}"), matching
    found = "; ".join(_why_not(r, listen_port, reached) for r in tcp)
    interface, note = host.client_interface()
    rules = [redirect_rule(interface, port, listen_port) for port in DEFAULT_PORTS]
    setup = (
        f"wsinspect gateway setup --interface {interface} --ports {','.join(DEFAULT_PORTS)} "
        f"--listen-port {listen_port}"
    )
    check = Check(
        name,
        "missing",
        f"no rule in the nat table's PREROUTING chain redirects TCP to port {listen_port}, "
        f"so clients' connections go past the proxy" + (f" (found: {found})" if found else ""),
        fix=(*(iptables_command("-A", r) for r in rules), f"(or: {setup})"),
        undo=(*(iptables_command("-D", r) for r in rules), "(or: wsinspect gateway teardown)"),
        notes=(*filter(None, [note]), "Other ports: a rule each, e.g. --dport 8765 or 8000:8100."),
    )
    return check, []


def _why_not(rule: Redirect, listen_port: int, reached: set[str]) -> str:
    if rule.chain == "OUTPUT":
        return f"{rule.describe()} in OUTPUT, which only redirects this host's own connections"
    if rule.chain not in reached:
        return f"{rule.describe()} in {rule.chain}, which PREROUTING never jumps to"
    return f"{rule.describe()}, not to {listen_port}"


def _listen_host_check(
    host: _Host, listen_host: str, listen_port: int, redirects: list[Redirect]
) -> Check:
    """REDIRECT rewrites a connection's destination to the primary address of the interface it
    arrived on, so the listener must accept connections to that address."""
    name = "listen host"
    if listen_host in WILDCARD_HOSTS:
        detail = f"{listen_host or '*'} accepts redirected connections on every interface"
        return Check(name, "ok", detail)
    fix = ("restart wsinspect with --listen-host 0.0.0.0 (every interface)",)
    if is_loopback(listen_host):
        return Check(
            name,
            "missing",
            f"{listen_host} is loopback only, but REDIRECT sends clients' connections to the "
            f"address of the interface they arrive on, where nothing listens on port {listen_port}",
            fix=fix,
        )
    if not redirects:
        detail = f"{listen_host}: it must be the primary address of the clients' interface"
        return Check(name, "ok", detail)
    elsewhere = [
        f"{address} on {interface}"
        for interface in {r.named_interface for r in redirects if r.named_interface}
        if (address := (host.addresses.get(interface) or ["no address"])[0]) != listen_host
    ]
    if any(r.named_interface is None for r in redirects):
        elsewhere.append("the address of any other interface they arrive on")
    if not elsewhere:
        return Check(name, "ok", f"{listen_host} is where REDIRECT sends clients' connections")
    return Check(
        name,
        "missing",
        f"wsinspect listens on {listen_host} only, but REDIRECT sends clients' connections to "
        + ", ".join(elsewhere),
        fix=fix,
    )


def _icmp_redirects_check(redirects: list[Redirect]) -> Check:
    interfaces = sorted({r.named_interface for r in redirects if r.named_interface})
    names = dict.fromkeys(n for i in interfaces or [None] for n in send_redirects_names(i))
    on = [n for n in names if read_sysctl(n) == "1"]
    if not on:
        return Check("ICMP redirects", "ok", "off")
    return Check(
        "ICMP redirects",
        "advice",
        "sent; when clients and servers share a network, they tell clients to bypass the gateway",
        fix=tuple(f"sysctl -w {n}=0" for n in on),
        undo=tuple(f"sysctl -w {n}=1" for n in on),
    )


def run(listen_host: str, listen_port: int) -> Preflight:
    """The preflight of a transparent listener at listen_host:listen_port."""
    host = _Host.read()
    redirect, matching = _redirect_check(host, listen_port)
    return Preflight(
        listen_host,
        listen_port,
        (
            _forwarding_check(),
            redirect,
            _listen_host_check(host, listen_host, listen_port, matching),
            _icmp_redirects_check(matching),
        ),
    )


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
    level = logging.INFO if result.ok else logging.WARNING
    for line in result.lines():
        logger.log(level, line)


def run_for_servers(servers: Sequence[tuple[str, Sequence[tuple[str, int]]]]) -> list[Preflight]:
    """The preflight of every transparent listener of a running engine (`Engine.servers()`)."""
    return [run(host, port) for host, port in transparent_listeners(servers)]
