"""Refuses connections that would make the proxy connect to itself, endlessly.

A connection that reaches a transparent listener without being redirected has the listener
itself as its original destination; mitmproxy would connect there, that connection would
arrive at the listener again, and so on until file descriptors run out. mitmproxy's own guard
(in its proxyserver addon) only recognises loopback names and the literal listen host, so a
listener on 0.0.0.0 reached at the gateway's LAN address loops. This addon also recognises, for
listeners on every address, any address of this host.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from mitmproxy import connection, ctx
from mitmproxy.proxy import server_hooks

logger = logging.getLogger("wsinspect")


def is_own_address(host: str) -> bool:
    """Whether `host` is an address of this host: binding to any other one fails."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


class LoopGuard:
    def client_connected(self, client: connection.Client) -> None:
        """A transparent connection whose original destination is the proxy: close it now."""
        if client.proxy_mode.type_name == "transparent" and self._is_proxy(
            client.sockname, client.transport_protocol
        ):
            client.error = "not redirected: its original destination is this proxy itself"
            logger.info(
                f"wsinspect: closed a connection from {client.peername[0]} to the transparent "
                f"listener {client.sockname[0]}:{client.sockname[1]}: it was not redirected"
            )

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.error or not self._is_proxy(
            data.server.address, data.server.transport_protocol
        ):
            return
        host, port = data.server.address[:2]
        data.server.error = f"refused to connect to {host}:{port}, which is this proxy itself"

    @staticmethod
    def _is_proxy(address: tuple | None, transport_protocol: str) -> bool:
        """Whether `address` is one of the proxy's listeners on every address of this host."""
        if not address:
            return False
        wildcard_ports = {
            addr[1]
            for server in ctx.master.addons.get("proxyserver").servers
            if server.mode.transport_protocol in (transport_protocol, "both")
            for addr in server.listen_addrs
            if addr[0] in ("0.0.0.0", "::")
        }
        return address[1] in wildcard_ports and is_own_address(address[0])
