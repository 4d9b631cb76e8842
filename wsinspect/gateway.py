"""`wsinspect gateway setup|teardown|check`: make this Linux host a lab gateway for
transparent mode, and later remove exactly what was added.

Setup turns IP forwarding on, ICMP redirects off and adds one nat REDIRECT rule per port, for
IPv4 (iptables) and, when the kernel has IPv6, for IPv6 (ip6tables). What it did is recorded
in the network namespace it belongs to, as comments of a chain of each family's nat table that
nothing jumps to (so no packet ever passes it), which is gone when the namespace is, or at
reboot like what it records: the sysctl values before setup changed them, and the tag its rules
carry as their comment, "wsinspect:" and an id chosen at the first setup. Teardown deletes the
rules with that tag only (a rule of someone else's commented "wsinspect" stays), puts those
values back and deletes the chains. A setup that fails half-way, in either family, undoes what
it did before failing, in both.

IPv6 forwarding is one switch with side effects: writing net.ipv6.conf.all.forwarding writes
the same value into `default` and every interface's own `forwarding`, and turning it on drops
the default routes learned from router advertisements where accept_ra is not 2. So setup
records every interface's value it will overwrite, and sets accept_ra to 2 first where such
routes exist; teardown writes `all` back first, then the rest.
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from . import preflight
from .errors import GatewayError

RESTORE_CHAIN = "wsinspect-restore"  # rules: -m comment --comment NAME=VALUE-before-setup
TAG_KEY = "rules"  # the restore chain's comment "rules=TAG" names the tag of setup's rules


def _iptables(family: preflight.Family, action: str, *rule: str, quiet: bool = False) -> bool:
    """Run `iptables -t nat ACTION RULE…` (ip6tables for IPv6). Quiet ones are questions (-C,
    -S): they return whether the answer was yes; others print themselves and raise when they
    fail."""
    argv = [family.iptables, "-t", "nat", action, *rule]
    if not quiet:
        print(f"+ {shlex.join(argv)}", flush=True)
    try:
        result = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise GatewayError(f"`{argv[0]}` is not installed (apt-get install iptables)") from None
    if result.returncode != 0 and not quiet:
        message = (result.stderr.strip() or f"exit status {result.returncode}").splitlines()[0]
        raise GatewayError(f"`{shlex.join(argv)}` failed: {message}")
    return result.returncode == 0


def _recorded(nat: str) -> tuple[str | None, dict[str, str]]:
    """What setup recorded in the restore chain (from `iptables -t nat -S`): the tag of the
    rules it added, and each sysctl name -> its value before setup."""
    tag, saved = None, {}
    for chain, options, _ in preflight.parse_rules(nat):
        key, _, value = options.get("--comment", "").partition("=")
        if chain != RESTORE_CHAIN or not value:
            continue
        if key == TAG_KEY:
            tag = tag or value
        else:
            saved.setdefault(key, value)
    return tag, saved


def _remember(
    family: preflight.Family, comment: str, undo: list[Callable[[], object]]
) -> None:
    """Add a comment to the family's restore chain (and to `undo`, how to take it out)."""
    entry = (RESTORE_CHAIN, "-m", "comment", "--comment", comment)
    _iptables(family, "-A", *entry)
    undo.append(lambda: _iptables(family, "-D", *entry))


def _roll_back(undo: list[Callable[[], object]]) -> list[str]:
    """Undo the steps of a failed setup, newest first; the errors of those that failed."""
    failed = []
    for step in reversed(undo):
        try:
            step()
        except GatewayError as e:
            failed.append(str(e))
    return failed


def _write_sysctl(name: str, value: str) -> None:
    print(f"+ sysctl -w {name}={value}", flush=True)
    try:
        preflight.sysctl_path(name).write_text(value)
    except OSError as e:
        raise GatewayError(f"cannot set {name}: {e.strerror} (run as root)") from None


def parse_ports(text: str) -> list[str]:
    """"80,443,8000-8100" as iptables --dport values ("80", "443", "8000:8100")."""
    ports = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\s*[-:]\s*(\d+))?\s*", part)
        numbers = [int(n) for n in match.groups() if n] if match else []
        if not numbers or not all(1 <= n <= 65535 for n in numbers) or numbers != sorted(numbers):
            raise GatewayError(f"bad port {part.strip()!r} in --ports (e.g. 80,443,8000-8100)")
        ports.append(":".join(str(n) for n in numbers))
    return ports


def _families() -> list[preflight.Family]:
    return [f for f in preflight.FAMILIES if f.available()]


def setup(interface: str, ports: Sequence[str], listen_port: int) -> None:
    named_well = re.fullmatch(r"[\w.@-]{1,15}", interface)
    if not named_well or not Path("/sys/class/net", interface).exists():
        raise GatewayError(f"no network interface {interface!r} on this host (see `ip link`)")
    # Both tables are read before anything changes: a kernel without IPv6 NAT (ip6table_nat)
    # stops setup here.
    nats = {family: preflight.nat_rules(family) for family in _families()}
    recorded_tags = [tag for nat in nats.values() if (tag := _recorded(nat)[0])]
    tag = recorded_tags[0] if recorded_tags else f"{preflight.RULE_COMMENT}:{secrets.token_hex(4)}"
    undo: list[Callable[[], object]] = []  # how to take back each step done so far
    try:
        for family, nat in nats.items():
            _set_up(family, interface, ports, listen_port, nat, tag, undo)
    except BaseException as e:
        if undo:
            print("setup failed; undoing what it did:", flush=True)
        failed = _roll_back(undo)
        if not isinstance(e, GatewayError):
            raise
        outcome = f"could not undo everything: {failed[0]}" if failed else "nothing was changed"
        raise GatewayError(f"{e}; {outcome}") from None
    host = "''" if preflight.IPV6 in nats else "0.0.0.0"
    print(
        f"gateway ready: run `wsinspect --mode transparent --listen-host {host} "
        f"--listen-port {listen_port}`; undo with `wsinspect gateway teardown`",
        flush=True,
    )


def _wanted_sysctls(family: preflight.Family, interface: str) -> dict[str, str]:
    """The sysctl values setup sets for a family, in the order it sets them."""
    if family is preflight.IPV4:
        wanted = {preflight.IP_FORWARD: "1"}
        return wanted | {name: "0" for name in preflight.send_redirects_names(interface)}
    # accept_ra first: turning forwarding on would drop those routes at once.
    turning_on = preflight.read_sysctl(preflight.IPV6_FORWARDING) != "1"
    lost = preflight.routers_lost_to_forwarding() if turning_on else []
    return {name: "2" for name in lost} | {preflight.IPV6_FORWARDING: "1"}


def _overwritten_with(name: str, value: str) -> list[tuple[str, str]]:
    """The sysctls (name, value now) that writing `value` into `name` changes besides it:
    net.ipv6.conf.all.forwarding is copied into `default` and every interface."""
    if name != preflight.IPV6_FORWARDING:
        return []
    conf = preflight.sysctl_path("net.ipv6.conf")
    names = [
        preflight.sysctl_name("net", "ipv6", "conf", entry.name, "forwarding")
        for entry in sorted(conf.iterdir()) if entry.name != "all"
    ]  # fmt: skip
    return [(n, v) for n in names if (v := preflight.read_sysctl(n)) not in (None, value)]


def _set_up(
    family: preflight.Family, interface: str, ports: Sequence[str], listen_port: int,
    nat: str, tag: str, undo: list[Callable[[], object]],
) -> None:
    recorded_tag, saved = _recorded(nat)
    if f"-N {RESTORE_CHAIN}" not in nat.splitlines():
        _iptables(family, "-N", RESTORE_CHAIN)
        undo.append(lambda: _iptables(family, "-X", RESTORE_CHAIN))
    if recorded_tag is None:
        _remember(family, f"{TAG_KEY}={tag}", undo)
    for name, value in _wanted_sysctls(family, interface).items():
        current = preflight.read_sysctl(name)
        if current is None:
            raise GatewayError(f"cannot read {preflight.sysctl_path(name)}")
        if current == value:
            continue
        # Remembered before the change; what the write overwrites elsewhere comes after it,
        # as teardown (and a rollback) write them back in this order.
        before = [(name, current), *_overwritten_with(name, current)]
        for other, other_value in before:
            if other not in saved:
                _remember(family, f"{other}={other_value}", undo)
        _write_sysctl(name, value)
        undo.append(lambda before=before: [_write_sysctl(n, v) for n, v in before])
    for port in ports:
        rule = preflight.redirect_rule(interface, port, listen_port, comment=tag)
        if not _iptables(family, "-C", *rule, quiet=True):
            _iptables(family, "-A", *rule)
            undo.append(lambda rule=rule: _iptables(family, "-D", *rule))


def teardown() -> None:
    """Delete the rules setup added (those with its recorded tag), restore the sysctl values
    it changed and delete the chains that recorded them, in each family."""
    removed = False
    for family in _families():
        removed |= _tear_down(family)
    if not removed:
        print("nothing to remove: no rule or sysctl change recorded by setup")


def _tear_down(family: preflight.Family) -> bool:
    """Teardown in one family; whether setup had recorded anything there."""
    nat = preflight.nat_rules(family)
    tag, saved = _recorded(nat)
    tagged = [
        line for _, options, line in preflight.parse_rules(nat)
        if tag is not None and options.get("--comment") == tag
    ]  # fmt: skip
    for line in tagged:
        _iptables(family, "-D", *shlex.split(line)[1:])
    for name, value in saved.items():
        if preflight.sysctl_path(name).exists():  # an interface may be gone since
            _write_sysctl(name, value)
    has_chain = f"-N {RESTORE_CHAIN}" in nat.splitlines()
    if has_chain:
        _iptables(family, "-F", RESTORE_CHAIN)
        _iptables(family, "-X", RESTORE_CHAIN)
    others = [o for _, o, _ in preflight.parse_rules(nat) if o.get("--comment") == "wsinspect"]
    if others:
        print(
            f"left {len(others)} {family.name} nat rule(s) commented 'wsinspect' that setup did "
            f"not record (added by hand, or by an older wsinspect): `{family.iptables} -t nat "
            "-S` lists them"
        )
    return bool(tagged) or has_chain


def check(listen_host: str, listen_port: int) -> bool:
    result = preflight.run(listen_host, listen_port)
    print("\n".join(result.lines()), flush=True)
    return result.ok
