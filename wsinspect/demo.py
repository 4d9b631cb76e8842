"""`wsinspect demo`: the README's both-sides topology on loopback, with traffic, in one command.

    demo clients -> wsinspect regular -> hop (nginx, or a Python stand-in) -> wsinspect reverse
    -> echo backend

The hop has two locations: /fixed/ passes the upgrade on (HTTP/1.1, Upgrade and Connection
set), /broken/ is a plain proxy_pass (HTTP/1.0, Upgrade and Connection dropped). Three clients
make a healthy session, a broken one and a chatty one. Everything runs in this process except
a real nginx, and everything (nginx, servers, the temporary directory) goes away on exit.
"""

from __future__ import annotations

import abc
import asyncio
import json
import shutil
import tempfile
import time
import weakref
from pathlib import Path

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from .addresses import free_port
from .engine import Engine
from .errors import DemoError, EngineError
from .http_rules import end_to_end, header_values, parse_head, request_line_parts
from .model import Outcome
from .nginx import NginxProcess, find_nginx
from .store import SessionStore

HOST = "127.0.0.1"
CHATTY_MESSAGES = 300
SETTLE_TIMEOUT = 15.0


# ----- loopback servers: the echo backend and the Python hop --------------------------------------


class LoopbackServer(abc.ABC):
    """A TCP server on an OS-chosen loopback port whose connections `stop()` closes and
    waits for, so nothing is left running when the demo ends."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.connections: dict[asyncio.StreamWriter, asyncio.Task] = {}
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections[writer] = asyncio.current_task()
        try:
            await self.serve(reader, writer)
        finally:
            self.connections.pop(writer, None)

    @abc.abstractmethod
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handle one connection."""

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        self.server = None
        tasks = list(self.connections.values())
        for writer in list(self.connections):
            writer.close()
        if tasks:
            await asyncio.wait(tasks, timeout=2)


class EchoBackend(LoopbackServer):
    """A WebSocket echo server; refuses a handshake that lost its upgrade headers, as real
    servers do."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        try:
            while data := await reader.read(65536):
                try:
                    ws.receive_data(data)
                except RemoteProtocolError as e:
                    writer.write(ws.send(e.event_hint or RejectConnection()))
                    return
                for event in ws.events():
                    if isinstance(event, Request):
                        writer.write(ws.send(AcceptConnection()))
                    elif isinstance(event, (TextMessage, BytesMessage)):
                        echoed = type(event)(event.data, message_finished=event.message_finished)
                        writer.write(ws.send(echoed))
                    elif isinstance(event, Ping):
                        writer.write(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        writer.write(ws.send(event.response()))
                        return
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


# ----- the Python hop: nginx's two locations -------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        await _close(writer)


def forwarded_head(head: bytes, upstream_port: int) -> bytes | None:
    """The request head nginx would send upstream for `head`, or None for an unknown path.

    Like nginx: Host becomes the proxy_pass address and hop-by-hop headers are not passed on;
    /fixed/ adds `proxy_http_version 1.1` and the Upgrade/Connection lines, /broken/ is plain
    proxy_pass (HTTP/1.0, Connection: close)."""
    request_line, headers = parse_head(head)
    method, target, _ = request_line_parts(request_line)
    passed = end_to_end(headers, drop=("host",))
    upgrade = next(iter(header_values(headers, "Upgrade")), "")
    if target.startswith("/fixed/"):
        version = "HTTP/1.1"
        # nginx leaves out a header whose value is empty
        added = [("Upgrade", upgrade)] if upgrade else []
        added.append(("Connection", "upgrade" if upgrade else "close"))
    elif target.startswith("/broken/"):
        version, added = "HTTP/1.0", [("Connection", "close")]
    else:
        return None
    out = [f"{method} {target} {version}", f"Host: {HOST}:{upstream_port}"]
    out += [f"{name}: {value}" for name, value in added + passed]
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


class PythonHop(LoopbackServer):
    """A stand-in for nginx when none is installed."""

    kind = "python"

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = forwarded_head(await reader.readuntil(b"\r\n\r\n"), self.upstream_port)
            if head is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                await _close(writer)
                return
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            await _close(writer)
            return
        up_writer.write(head)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


# ----- real nginx ----------------------------------------------------------------------------

DEMO_SERVER = """
    server {{
        listen {host}:{port};
        location /fixed/ {{
            proxy_pass http://{host}:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
        location /broken/ {{
            proxy_pass http://{host}:{upstream_port};
        }}
    }}
"""


class NginxHop:
    """A real nginx (wsinspect.nginx's launcher) serving the demo's two locations. Started
    from the loop's thread, so it ends with the demo even when the demo is killed."""

    kind = "nginx"

    def __init__(self, binary: str, folder: Path, upstream_port: int) -> None:
        self.launcher = NginxProcess(
            binary,
            folder,
            lambda port: DEMO_SERVER.format(host=HOST, port=port, upstream_port=upstream_port),
        )

    @property
    def port(self) -> int:
        return self.launcher.port

    async def start(self) -> None:
        await self.launcher.start_on_loop()

    async def stop(self) -> None:
        await asyncio.to_thread(self.launcher.stop)


# ----- clients -------------------------------------------------------------------------------


class DemoClient:
    """A wsproto WebSocket client that asks the regular listener for ws://hop/path."""

    def __init__(self) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pending: list = []

    async def __aenter__(self) -> DemoClient:
        return self

    async def __aexit__(self, *exc) -> None:
        if self.writer is not None:
            await _close(self.writer)

    async def open(self, proxy_port: int, hop_port: int, path: str):
        """Connect; returns the AcceptConnection or RejectConnection event."""
        self.reader, self.writer = await asyncio.open_connection(HOST, proxy_port)
        authority = f"{HOST}:{hop_port}"
        await self.send(Request(host=authority, target=f"http://{authority}{path}"))
        return await self.next_event((AcceptConnection, RejectConnection))

    async def send(self, event) -> None:
        self.writer.write(self.ws.send(event))
        await self.writer.drain()

    async def next_event(self, wanted: tuple[type, ...]):
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, wanted):
                    return event
            data = await self.reader.read(65536)
            if not data:
                raise DemoError(f"the connection closed before a {wanted[0].__name__}")
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())

    async def close(self) -> None:
        """The closing handshake; the connection itself closes on leaving `async with`."""
        await self.send(CloseConnection(code=1000, reason="done"))
        await self.next_event((CloseConnection,))


def price_update(seq: int) -> str:
    symbols = ("ACME", "GLOBEX", "INITECH", "UMBRELLA")
    return json.dumps(
        {
            "type": "tick",
            "seq": seq,
            "symbol": symbols[seq % len(symbols)],
            "price": round(100 + (seq * 7919 % 1000) / 100, 2),
            "book": {"bid": seq % 17, "ask": seq % 13},
        }
    )


async def healthy_session(proxy_port: int, hop_port: int) -> None:
    async with DemoClient() as client:
        await client.open(proxy_port, hop_port, "/fixed/chat")
        for event in (
            TextMessage(data="hello through a correctly configured proxy"),
            TextMessage(data=json.dumps({"op": "subscribe", "topics": ["prices", "news"]})),
            BytesMessage(data=bytes(range(32))),
        ):
            await client.send(event)
            await client.next_event((TextMessage, BytesMessage))
        await client.send(Ping(payload=b"are you there"))
        await client.next_event((Pong,))
        await client.close()


async def broken_session(proxy_port: int, hop_port: int) -> None:
    """The upgrade through the misconfigured location, which the backend refuses."""
    async with DemoClient() as client:
        await client.open(proxy_port, hop_port, "/broken/chat")


async def chatty_session(proxy_port: int, hop_port: int) -> None:
    async with DemoClient() as client:
        await client.open(proxy_port, hop_port, "/fixed/ticker")
        for seq in range(CHATTY_MESSAGES):
            await client.send(TextMessage(data=price_update(seq)))
        for _ in range(CHATTY_MESSAGES):
            await client.next_event((TextMessage,))
        await client.close()


# ----- the whole demo ------------------------------------------------------------------------


class Demo:
    """Backend, engine (regular and reverse listeners) and hop; `async with` cleans up."""

    def __init__(
        self, *, hop: str = "auto", port: int | None = None, capture: Path | None = None
    ) -> None:
        self.hop_choice = hop
        self.port = port
        self.folder = Path(tempfile.mkdtemp(prefix="wsinspect-demo-"))
        # The folder holds the CA's private key: removed by stop(), or at the latest when the
        # interpreter exits, whatever way out it took.
        self.remove_files = weakref.finalize(self, shutil.rmtree, self.folder, True)
        try:
            self.store = SessionStore(capture or self.folder / "demo.db")
        except BaseException:
            self.remove_files()
            raise
        self.backend: EchoBackend | None = None
        self.engine: Engine | None = None
        self.hop: PythonHop | NginxHop | None = None
        self.proxy_port = 0
        self.stopped = False

    async def __aenter__(self) -> Demo:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        nginx = find_nginx() if self.hop_choice != "python" else None
        if self.hop_choice == "nginx" and nginx is None:
            raise DemoError("--hop nginx: no nginx found (PATH or /usr/sbin/nginx)")
        self.backend = EchoBackend()
        await self.backend.start()
        reverse_port = await self._start_engine(self.backend.port)
        if nginx:
            self.hop = NginxHop(nginx, self.folder / "nginx", reverse_port)
        else:
            self.hop = PythonHop(reverse_port)
        await self.hop.start()

    async def _start_engine(self, backend_port: int) -> int:
        """Both listeners; the reverse one needs a known port for the hop's config, so ports
        taken between free_port() and the bind are retried."""
        attempts = 1 if self.port else 3
        for attempt in range(1, attempts + 1):
            front, back = self.port or free_port(HOST), free_port(HOST)
            self.engine = Engine(
                self.store,
                [f"regular@{front}", f"reverse:http://{HOST}:{backend_port}@{back}"],
                listen_host=HOST,
                confdir=str(self.folder / "mitmproxy"),
            )
            try:
                await self.engine.start()
            except EngineError:
                self.engine = None
                if attempt == attempts:
                    raise
            else:
                self.proxy_port = front
                return back

    async def run_clients(self) -> None:
        """The three sessions, one after another, then wait until the store has them whole."""
        await healthy_session(self.proxy_port, self.hop.port)
        await broken_session(self.proxy_port, self.hop.port)
        await chatty_session(self.proxy_port, self.hop.port)
        await self.settled()

    def _settled(self) -> bool:
        sessions = self.store.sessions()
        return len(sessions) == 3 and all(
            len(s.hops) == 2 and all(h.outcome is not Outcome.OPEN for h in s.hops)
            for s in sessions
        )

    async def settled(self) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not self._settled():
            if time.monotonic() > deadline:
                raise DemoError("the demo's sessions were not all recorded in time")
            await asyncio.sleep(0.05)
        self.store.flush()

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            if self.hop is not None:
                await self.hop.stop()
                self.hop = None
            if self.engine is not None:
                await self.engine.stop()
                self.engine = None
            if self.backend is not None:
                await self.backend.stop()
                self.backend = None
            self.store.close()
        finally:
            self.remove_files()
