"""Where wsinspect listens unless told otherwise, which hosts are this machine itself, and a
free port for a child that must be told one.

Neutral ground: the proxy, its preflight and the commands that only name a port (`gateway`,
`hello`) read these without loading the proxy core.
"""

from __future__ import annotations

import ipaddress
import socket

DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 8080


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = DEFAULT_LISTEN_HOST) -> int:
    """A TCP port nothing listens on at `host` now (the OS's choice), for a process that must
    be told its port before it starts; another process may take it first, so such a start is
    retried."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
