"""Where wsinspect listens unless told otherwise, and which hosts are this machine itself.

Neutral ground: the proxy, its preflight and the commands that only name a port (`gateway`,
`hello`) read these without loading the proxy core.
"""

from __future__ import annotations

import ipaddress

DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 8080


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
