"""Upstream mode (`--mode upstream:http://proxy:port`): the hop records the request line the
proxy sent on to the upstream proxy, checked against what a raw-socket upstream proxy read."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from tests.rawpeers import raw_client
from wsinspect.model import accept_for_key


async def upstream_proxy(heads: list[bytes]) -> asyncio.Server:
    """An upstream proxy that is also the WebSocket server: it answers a CONNECT with 200 and
    the upgrade inside the tunnel (or an absolute-form upgrade directly) with 101, logging
    every request head it read, then echoes nothing and closes after a close frame."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head)
            if head.startswith(b"CONNECT "):
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade"
                b"\r\nSec-WebSocket-Accept: " + accept_for_key(key).encode() + b"\r\n\r\n"
            )
            await writer.drain()
            await reader.read(65536)  # the client's close frame, or its end
            writer.write(b"\x88\x02\x03\xe8")  # close 1000, unmasked
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_upstream_mode_records_the_absolute_form_sent_upstream(start_proxy):
    heads: list[bytes] = []
    upstream = await upstream_proxy(heads)
    upstream_port = upstream.sockets[0].getsockname()[1]
    proxy = await start_proxy([f"upstream:http://127.0.0.1:{upstream_port}"])
    # ws:// in the client's request line; mitmproxy speaks http:// to the upstream proxy
    reader, writer = await raw_client(proxy.port, "ws://127.0.0.1:9/chat?room=1", "127.0.0.1:9")
    writer.write(b"\x88\x82abcd" + bytes(b ^ k for b, k in zip(b"\x03\xe8", b"ab")))
    await writer.drain()
    await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await asyncio.sleep(0.3)
    sent_line = heads[0].split(b"\r\n", 1)[0].decode()
    assert sent_line == "GET http://127.0.0.1:9/chat?room=1 HTTP/1.1"
    [session] = proxy.store.sessions()
    assert session.first_hop.request_line == sent_line
    assert session.url == "ws://127.0.0.1:9/chat?room=1"
    upstream.close()


async def test_upstream_mode_through_a_connect_tunnel_records_the_tunnelled_line(start_proxy):
    """A client that uses the proxy with CONNECT: mitmproxy sends CONNECT on to the upstream
    proxy and the upgrade inside the tunnel in origin form, which is what is recorded."""
    heads: list[bytes] = []
    upstream = await upstream_proxy(heads)
    upstream_port = upstream.sockets[0].getsockname()[1]
    proxy = await start_proxy([f"upstream:http://127.0.0.1:{upstream_port}"])
    async with connect("ws://127.0.0.1:9/tunnelled", proxy=proxy.url, open_timeout=10):
        pass
    await asyncio.sleep(0.3)
    lines = [head.split(b"\r\n", 1)[0].decode() for head in heads]
    assert lines == ["CONNECT 127.0.0.1:9 HTTP/1.1", "GET /tunnelled HTTP/1.1"]
    [session] = proxy.store.sessions()
    assert session.first_hop.request_line == lines[1]
    upstream.close()
