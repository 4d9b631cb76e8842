"""Network namespaces for the transparent-mode tests: a client, a lab gateway and a server,
joined by veth pairs, with addresses from 10.231.0.0/16 and the unique local fd00:231::/32 that
exist only inside them.

    client 10.231.1.2    --- 10.231.1.1    [gateway] 10.231.2.1    --- 10.231.2.2    server
           fd00:231:1::2 --- fd00:231:1::1           fd00:231:2::1 --- fd00:231:2::2

IPv6 addresses are added with `nodad`: usable at once, with no duplicate address detection.

Names carry a random suffix so runs never collide; `Lab.destroy()` stops every process the lab
started and deletes the namespaces (their interfaces and iptables rules go with them). Nothing
touches the host's own network settings.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CLIENT_ADDR, GATEWAY_CLIENT_ADDR = "10.231.1.2", "10.231.1.1"
GATEWAY_SERVER_ADDR, SERVER_ADDR = "10.231.2.1", "10.231.2.2"
CLIENT_ADDR6, GATEWAY_CLIENT_ADDR6 = "fd00:231:1::2", "fd00:231:1::1"
GATEWAY_SERVER_ADDR6, SERVER_ADDR6 = "fd00:231:2::1", "fd00:231:2::2"


def require_netns() -> None:
    """The lab needs root and `ip netns`; without them the test fails and says so."""
    if os.geteuid() != 0:
        pytest.fail(
            "the transparent-mode lab needs root (network namespaces, iptables); "
            "run the tests as root, as CI does",
            pytrace=False,
        )
    missing = [tool for tool in ("ip", "iptables", "ip6tables") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"the transparent-mode lab needs {' and '.join(missing)}: "
            "`bash install.sh --test` installs iproute2 and iptables",
            pytrace=False,
        )


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(
            f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


class Process:
    """A process started in a namespace; its output (stdout and stderr) is read as it comes."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
        )
        self.lines: list[str] = []
        self._ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))
        self._ended.set()

    def wait_line(self, pattern: str, timeout: float = 20) -> re.Match:
        """Wait for an output line matching `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            ended = self._ended.is_set()
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if ended:
                raise AssertionError(f"process ended before {pattern!r}:\n" + self.output())
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in {timeout}s:\n" + self.output())
            time.sleep(0.02)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, wait for the end and for the rest of the output."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        self._ended.wait(5)
        return code

    def output(self) -> str:
        return "\n".join(self.lines)


class Lab:
    def __init__(self) -> None:
        suffix = secrets.token_hex(3)
        self.client = f"wsi-{suffix}-c"
        self.gateway = f"wsi-{suffix}-g"
        self.server = f"wsi-{suffix}-s"
        self.client_if = f"c{suffix}"
        self.gateway_client_if = f"g{suffix}c"  # the gateway's side facing the client
        self.gateway_server_if = f"g{suffix}s"
        self.server_if = f"s{suffix}"
        self.processes: list[Process] = []
        self._namespaces: list[str] = []

    def create(self) -> None:
        for ns in (self.client, self.gateway, self.server):
            run("ip", "netns", "add", ns)
            self._namespaces.append(ns)
            self.exec(ns, "ip", "link", "set", "lo", "up")
        self._link(self.client, self.client_if, CLIENT_ADDR, CLIENT_ADDR6)
        self._link(self.gateway, self.gateway_client_if, GATEWAY_CLIENT_ADDR, GATEWAY_CLIENT_ADDR6)
        self._link(self.server, self.server_if, SERVER_ADDR, SERVER_ADDR6)
        self._link(self.gateway, self.gateway_server_if, GATEWAY_SERVER_ADDR, GATEWAY_SERVER_ADDR6)
        for via in (GATEWAY_CLIENT_ADDR, GATEWAY_CLIENT_ADDR6):
            self.exec(self.client, "ip", "route", "add", "default", "via", via)
        for via in (GATEWAY_SERVER_ADDR, GATEWAY_SERVER_ADDR6):
            self.exec(self.server, "ip", "route", "add", "default", "via", via)
        # The gateway's way out is the server side, as on a real lab gateway.
        for via in (SERVER_ADDR, SERVER_ADDR6):
            self.exec(self.gateway, "ip", "route", "add", "default", "via", via)

    def _link(self, ns: str, name: str, address: str, address6: str) -> None:
        """Address an interface (creating its veth pair with its peer on the gateway side)."""
        if ns != self.gateway:
            peer = {self.client_if: self.gateway_client_if, self.server_if: self.gateway_server_if}
            run("ip", "link", "add", name, "netns", ns, "type", "veth",
                "peer", "name", peer[name], "netns", self.gateway)  # fmt: skip
        self.exec(ns, "ip", "addr", "add", f"{address}/24", "dev", name)
        self.exec(ns, "ip", "-6", "addr", "add", f"{address6}/64", "dev", name, "nodad")
        self.exec(ns, "ip", "link", "set", name, "up")

    def command(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def exec(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(*self.command(ns, *argv), check=check)

    def python(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.exec(ns, sys.executable, *args, check=check)

    def start(self, ns: str, *argv: str) -> Process:
        process = Process(self.command(ns, *argv))
        self.processes.append(process)
        return process

    def start_python(self, ns: str, *args: str) -> Process:
        return self.start(ns, sys.executable, *args)

    def wsinspect(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "wsinspect", *args]

    def run_wsinspect(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.exec(ns, *self.wsinspect(*args), check=check)

    def destroy(self) -> None:
        for process in self.processes:
            process.stop()
        for ns in reversed(self._namespaces):
            run("ip", "netns", "del", ns, check=False)
        self._namespaces.clear()


def make_lab(request: pytest.FixtureRequest) -> Lab:
    """A lab torn down when the test ends, passed or failed."""
    require_netns()
    lab = Lab()
    request.addfinalizer(lab.destroy)
    lab.create()
    return lab
