"""Refuses connections that would make the proxy connect to itself, endlessly.

A request whose destination is one of the proxy's own listeners is forwarded to the proxy,
which forwards it again, until file descriptors run out and no client is served. mitmproxy's
own guard (its proxyserver addon) compares the destination's text with "localhost",
"127.0.0.1", "::1" and the listen host only, so `127.1`, `2130706433`, `0x7f.1`, `0.0.0.0`,
`[::ffff:127.0.0.1]`, a name that resolves to this host, or a listener on 0.0.0.0 reached at a
LAN address all loop.

This guard compares addresses, not spellings: before a server connection is opened, its host is
resolved the way the connection will resolve it (getaddrinfo, which also takes the shorthand
IPv4 forms), each address is reduced to where a connection to it lands (an IPv4-mapped IPv6
address is its IPv4 address; the unspecified address is loopback), and it is refused when that
is a listener's own address and port, or any address of this host for a listener on every
address. As a backstop, for what resolving beforehand cannot see (a name that resolves
differently the second time, a NAT rule on this host), a connection that arrives from one of the
proxy's own outgoing connections is closed at once: the loop ends at its first turn.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time

from mitmproxy import connection, ctx
from mitmproxy.proxy import server_hooks

logger = logging.getLogger("wsinspect")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CONNECT_SETTLE = 0.1  # seconds a connection from this host waits for a server connection
_CONNECT_AGE = 1.0  # a server connection still being made after this is not one to itself


def landing_address(host: str) -> IPAddress | None:
    """The address a connection to the IP address `host` reaches; None if it is not one."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:  # Linux connects to the unspecified address on loopback
        address = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
    return address


def is_own_address(address: IPAddress) -> bool:
    """Whether `address` is an address of this host: binding to any other one fails."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses a connection to `host` tries, as the connection itself resolves them."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return []  # the connection will fail the same way and say so itself
    return [a for info in infos if (a := landing_address(str(info[4][0]))) is not None]


class LoopGuard:
    def __init__(self) -> None:
        # The own end (address, port) of each open server connection -> its peer's end and when
        # it was made: a client connecting from one of them is this proxy connecting to itself
        # if that connection went to the client's listener, or (after a NAT rule on this host,
        # where the server connection names the destination before translation) if it was
        # made the moment the client arrived. The kernel reuses a local port for connections
        # to other destinations, so an older connection to elsewhere proves nothing.
        self._outgoing: dict[tuple[IPAddress | None, int], tuple[tuple, float]] = {}
        # Server connections being opened (id -> (connection, when)). Their own end is known
        # once the connection is made, which may be just after the other end is accepted.
        self._connecting: dict[str, tuple[connection.Server, float]] = {}

    async def client_connected(self, client: connection.Client) -> None:
        """Close a connection that this proxy made to itself, or a transparent one whose
        original destination is the proxy (it was not redirected)."""
        if await self._from_this_proxy(client.peername, client.sockname):
            client.error = "this proxy connected to itself"
            logger.warning(
                f"wsinspect: closed a connection from this proxy to its own listener "
                f"{_format(client.sockname)}: a request was sent to the proxy itself"
            )
        elif client.proxy_mode.type_name == "transparent" and self._listener_at(
            [landing_address(client.sockname[0])] if client.sockname else [],
            client.sockname[1] if client.sockname else 0,
            client.transport_protocol,
        ):
            client.error = "not redirected: its original destination is this proxy itself"
            logger.info(
                f"wsinspect: closed a connection from {client.peername[0]} to the transparent "
                f"listener {_format(client.sockname)}: it was not redirected"
            )

    async def _from_this_proxy(self, peername: tuple | None, sockname: tuple | None) -> bool:
        """Whether `peername` is the own end of one of this proxy's server connections to
        `sockname` (see `_outgoing`). One that is still being made is waited for a moment: the
        kernel completes both ends of a connection to this host at once, the event loop sees
        them in either order."""
        peer = _endpoint(peername)
        if peer[0] is None or not is_own_address(peer[0]):
            return False
        deadline = time.monotonic() + _CONNECT_SETTLE
        while not self._made_to(peer, _endpoint(sockname)):
            now = time.monotonic()
            connecting = [s for s, t in self._connecting.values() if now - t < _CONNECT_AGE]
            if any(_endpoint(s.sockname) == peer for s in connecting):
                return True
            if not connecting or now > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Refuse a destination that is one of the proxy's listeners, however it is spelled.
        mitmproxy's guard may have refused it already, in words that do not say why."""
        if not data.server.address:
            return
        now = time.monotonic()
        for key in [k for k, (_, t) in self._connecting.items() if now - t > _CONNECT_AGE]:
            del self._connecting[key]  # also drops a connect that was cancelled
        self._connecting[data.server.id] = (data.server, now)
        host, port = data.server.address[:2]
        protocol = data.server.transport_protocol
        if not self._listener_at([], port, protocol, any_address=True):
            return  # no listener on that port: nothing to resolve
        listener = self._listener_at(await resolve(host, port), port, protocol)
        if listener is None:
            return
        shown = f"[{host}]" if ":" in host else host
        data.server.error = (
            f"refused to connect to {shown}:{port}, which is this proxy itself "
            f"(its listener {_format(listener)})"
        )
        logger.warning(f"wsinspect: {data.server.error}")

    def _made_to(self, own_end: tuple, listener: tuple) -> bool:
        """Whether a server connection whose own end is `own_end` went to `listener`, or was
        made just now to an address elsewhere (see `_outgoing`)."""
        made = self._outgoing.get(own_end)
        if made is None:
            return False
        peer, when = made
        if peer == listener:
            return True
        # After a NAT rule, the connection names a destination elsewhere; one to another
        # socket of this host reached that socket, not the listener.
        foreign = peer[0] is not None and not is_own_address(peer[0])
        return foreign and time.monotonic() - when < _CONNECT_AGE

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._connecting.pop(data.server.id, None)
        if data.server.sockname:
            self._outgoing[_endpoint(data.server.sockname)] = (
                _endpoint(data.server.peername), time.monotonic()
            )

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._connecting.pop(data.server.id, None)

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.sockname:
            self._outgoing.pop(_endpoint(data.server.sockname), None)

    @staticmethod
    def _listener_at(
        addresses: list[IPAddress | None], port: int, transport_protocol: str, *,
        any_address: bool = False,
    ) -> tuple | None:
        """The listener (its socket address) that a connection to one of `addresses` at `port`
        reaches; with `any_address`, any listener on that port."""
        for server in ctx.master.addons.get("proxyserver").servers:
            if server.mode.transport_protocol not in (transport_protocol, "both"):
                continue
            for listen_addr in server.listen_addrs:
                if listen_addr[1] != port:
                    continue
                if any_address:
                    return listen_addr
                bound = ipaddress.ip_address(listen_addr[0].partition("%")[0])
                for address in addresses:
                    if address is None or address.version != bound.version:
                        continue  # asyncio binds "::" IPv6-only
                    if address == bound or (bound.is_unspecified and is_own_address(address)):
                        return listen_addr
        return None


def _endpoint(address: tuple | None) -> tuple[IPAddress | None, int]:
    if not address:
        return None, 0
    return landing_address(str(address[0])), address[1]


def _format(address: tuple | None) -> str:
    if not address:
        return "?"
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
