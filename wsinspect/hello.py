"""`wsinspect hello`: one short WebSocket session through a running wsinspect, to see it work.

It starts an echo server on 127.0.0.1 (a port the OS picks), asks the proxy for
ws://127.0.0.1:PORT/hello, and sends a text message, a binary one, a ping and a close,
printing a line per step and a verdict. Nothing leaves this machine unless the proxy given
is elsewhere. Exit status: 0 every step worked, 1 one failed.
"""

from __future__ import annotations

import asyncio
import os

from wsproto import ConnectionType, WSConnection
from wsproto.utilities import RemoteProtocolError
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from .demo import EchoBackend
from .errors import StepFailed

STEP_TIMEOUT = 5.0
PATH = "/hello"
TEXT = "hello through wsinspect"
BINARY = bytes(range(8))
PING = b"are you there"


class HelloClient:
    """A wsproto client speaking through an HTTP proxy (absolute-form request line)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.reader = reader
        self.writer = writer
        self.pending: list = []

    async def send(self, event) -> None:
        self.writer.write(self.ws.send(event))
        await self.writer.drain()

    async def next_event(self, *wanted: type):
        """The next event of a `wanted` type; a close or the end of the connection first is
        a StepFailed."""
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, wanted):
                    return event
                if isinstance(event, (CloseConnection, RejectConnection)):
                    raise StepFailed(f"the connection was closed instead ({describe(event)})")
            data = await asyncio.wait_for(self.reader.read(65536), STEP_TIMEOUT)
            if not data:
                raise StepFailed("the connection ended")
            try:
                self.ws.receive_data(data)
                self.pending.extend(self.ws.events())
            except RemoteProtocolError as e:
                raise StepFailed(f"the answer is not WebSocket ({e}): is this a proxy?") from None


def url(echo_port: int) -> str:
    return f"ws://127.0.0.1:{echo_port}{PATH}"


def describe(event) -> str:
    if isinstance(event, RejectConnection):
        return f"HTTP {event.status_code}"
    if isinstance(event, CloseConnection):
        return f"close {event.code} {event.reason or ''}".rstrip()
    return type(event).__name__


async def session(proxy: tuple[str, int], echo_port: int, say) -> None:
    """The steps, each `say`ing a line; raises StepFailed at the first that fails."""
    host, port = proxy
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), STEP_TIMEOUT
        )
    except (OSError, asyncio.TimeoutError) as e:
        reason = os.strerror(e.errno) if getattr(e, "errno", None) else type(e).__name__
        raise StepFailed(
            f"cannot reach the proxy at {shown}: {reason}; is wsinspect running? "
            f"(start it with: wsinspect --listen-port {port})"
        ) from None
    say(f"connected to the proxy at {shown}")
    client = HelloClient(reader, writer)
    authority = f"127.0.0.1:{echo_port}"
    try:
        await client.send(Request(host=authority, target=f"http://{authority}{PATH}"))
        answer = await client.next_event(AcceptConnection, RejectConnection)
        if isinstance(answer, RejectConnection):
            body = b""
            while answer.has_body and len(body) < 4096:
                part = await client.next_event(RejectData)
                body += part.data
                if part.body_finished:
                    break
            said = body.decode("utf-8", "replace").strip().splitlines()
            hint = ""
            if answer.status_code == 407:
                hint = " (the proxy wants credentials: --set proxyauth)"
            raise StepFailed(
                f"the upgrade to {url(echo_port)} was refused: HTTP {answer.status_code}"
                + hint + (f": {said[0]}" if said else "")
            )
        say(f"handshake: {url(echo_port)} upgraded (101)")
        await client.send(TextMessage(data=TEXT))
        echoed = await client.next_event(TextMessage)
        if echoed.data != TEXT:
            raise StepFailed(f"text message: sent {TEXT!r}, got back {echoed.data!r}")
        say(f"text message: sent and echoed ({len(TEXT)} characters)")
        await client.send(BytesMessage(data=BINARY))
        echoed = await client.next_event(BytesMessage)
        if bytes(echoed.data) != BINARY:
            raise StepFailed(
                f"binary message: sent {BINARY.hex()}, got back {bytes(echoed.data).hex()}"
            )
        say(f"binary message: sent and echoed ({len(BINARY)} bytes)")
        await client.send(Ping(payload=PING))
        pong = await client.next_event(Pong)
        if bytes(pong.payload) != PING:
            raise StepFailed(f"ping: the pong carried {bytes(pong.payload)!r}, not {PING!r}")
        say("ping: answered by a pong")
        await client.send(CloseConnection(code=1000, reason="bye"))
        closed = await client.next_event(CloseConnection)
        say(f"close: 1000 sent, {closed.code} came back")
    except asyncio.TimeoutError:
        raise StepFailed(f"no answer within {STEP_TIMEOUT:g} s") from None
    except ConnectionError as e:
        raise StepFailed(f"the connection broke ({e.strerror or type(e).__name__})") from None
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def run(proxy: tuple[str, int]) -> int:
    def say(line: str) -> None:
        print(f"wsinspect hello: {line}", flush=True)

    backend = EchoBackend()
    await backend.start()
    try:
        say(f"echo server listening at 127.0.0.1:{backend.port}")
        try:
            await session(proxy, backend.port, say)
        except StepFailed as e:
            say(f"FAILED: {e}")
            return 1
    finally:
        await backend.stop()
    say(f"OK: the session went through the proxy; wsinspect lists it as {url(backend.port)}")
    return 0
