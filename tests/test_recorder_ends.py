"""Both sides' view of a WebSocket's end across two hops, with real parts: a raw-socket client,
a wsinspect regular listener, a wsinspect reverse listener and a raw-socket backend, in the
four ways a WebSocket ends (the client closes, the server closes, the backend resets, the
client vanishes), on both relay paths. Each peer logs the close frame it got and how its
connection ended, and the capture must say the same of the client (hop 1's client side) and of
the backend (the last hop's server side). The raw relay must also give each peer what it gets
without wsinspect in the way."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.proxy_servers import NGINX_FIXED, Nginx
from tests.rawpeers import frame, raw_client, raw_server, read_frame
from tests.test_cli import start_process
from wsinspect.http_rules import close_code_reason, close_payload
from wsinspect.lineup import open_captures
from wsinspect.model import Outcome, Side
from wsinspect.report import session_json, session_text, side_end_parts
from wsinspect.ui.handshake import session_handshakes

BIN = Path(sys.executable).parent
CASES = ["client-closes", "server-closes", "backend-resets", "client-vanishes"]


@dataclass
class PeerLog:
    """What one peer got: the close frame (code, reason), and how its connection ended
    ("fin", "reset"; None when it reset the connection itself)."""

    close: tuple[int | None, str] | None = None
    end: str | None = None
    answered: bool = False  # it answered the close frame it got with its own


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a reset, not a FIN."""
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    writer.close()


async def peer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    is_client: bool,
    opens_close: tuple[int, str] | None = None,
    vanishes: bool = False,
) -> PeerLog:
    """One side: it sends a close frame first (`opens_close`) or answers one with the same
    code, half-closes after the close handshake, then reads to the end of its connection.
    A side that `vanishes` resets its connection instead."""
    log = PeerLog()
    if vanishes:
        await asyncio.sleep(0.3)
        reset(writer)
        return log
    if opens_close is not None:
        writer.write(frame(0x8, close_payload(*opens_close), mask=is_client))
    try:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == 0x8 and log.close is None:
                log.close = close_code_reason(payload)
                with contextlib.suppress(OSError):  # unless the connection is gone already
                    if opens_close is None:
                        writer.write(frame(0x8, payload, mask=is_client))
                        log.answered = True
                    writer.write_eof()
    except asyncio.IncompleteReadError:
        log.end = "fin"
    except ConnectionResetError:
        log.end = "reset"
    writer.close()
    return log


def roles(case: str) -> tuple[dict, dict]:
    """The client's and the backend's part in `case`."""
    client, backend = {"is_client": True}, {"is_client": False}
    if case == "client-closes":
        client["opens_close"] = (1000, "bye")
    elif case == "server-closes":
        backend["opens_close"] = (4000, "done")
    elif case == "backend-resets":
        backend["vanishes"] = True
    else:
        client["vanishes"] = True
    return client, backend


async def run_case(case: str, proxy_port: int | None, target_port: int, backend_logs: list):
    """The client's log, running `case` through the proxy at `proxy_port` to `target_port`
    (or straight to `target_port` without a proxy)."""
    client_role, _ = roles(case)
    host = f"127.0.0.1:{target_port}"
    if proxy_port is None:
        reader, writer = await raw_client(target_port, "/ends", host)
    else:
        reader, writer = await raw_client(proxy_port, f"ws://{host}/ends", host)
    client_log = await peer(reader, writer, **client_role)
    await wait_for(lambda: backend_logs, 10, "the backend's log")
    return client_log


async def backend_server(case: str, logs: list) -> asyncio.Server:
    _, backend_role = roles(case)

    async def script(reader, writer):
        logs.append(await peer(reader, writer, **backend_role))

    return await raw_server(script)


def closed_hop(proxy):
    return next((h for s in proxy.store.sessions() for h in s.hops
                 if h.outcome is Outcome.CLOSED), None)  # fmt: skip


@pytest.mark.parametrize(
    "between", ["nothing", pytest.param("nginx", marks=pytest.mark.nginx)]
)
@pytest.mark.parametrize("relay", ["raw", "mitmproxy"])
@pytest.mark.parametrize("case", CASES)
async def test_each_end_of_a_two_hop_session_is_what_that_peer_got(
    start_proxy, tmp_path, case, relay, between
):
    """Two wsinspect processes (one engine may not proxy to its own listener: its loop guard
    refuses), their captures lined up as `wsinspect report front.db back.db` does."""
    logs: list[PeerLog] = []
    backend = await backend_server(case, logs)
    backend_port = backend.sockets[0].getsockname()[1]
    settings = [f"wsinspect_relay={relay}"]
    captures = [tmp_path / "front.db", tmp_path / "back.db"]
    front = await start_proxy(["regular"], settings, captures[0])
    confdir = tmp_path / "back-conf"
    confdir.mkdir()
    back, back_port = await start_process(
        str(BIN / "wsinspect"), "--headless", "--listen-port", "0", "-w", str(captures[1]),
        "--confdir", str(confdir), "--mode", f"reverse:http://127.0.0.1:{backend_port}",
        "--set", f"wsinspect_relay={relay}", listening=r"listening at 127\.0\.0\.1:(\d+)",
    )  # fmt: skip
    nginx = Nginx(tmp_path / "nginx", back_port, NGINX_FIXED).start() if between == "nginx" else None
    try:
        target_port = nginx.port if nginx else back_port
        client_log = await run_case(case, front.port, target_port, logs)
        await wait_for(lambda: closed_hop(front), 10, "the front hop closed")
        front.store.flush()
        await asyncio.sleep(0.5)  # the back process records its hop's end
    finally:
        if nginx:
            nginx.stop()
        back.send_signal(signal.SIGTERM)
        await asyncio.wait_for(back.communicate(), 20)
    [backend_log] = logs
    lined_up = open_captures(captures)
    [session] = lined_up.sessions()
    assert [hop.outcome for hop in session.hops] == [Outcome.CLOSED, Outcome.CLOSED]
    client_end, backend_end = session.end_of(Side.CLIENT), session.end_of(Side.SERVER)

    assert client_end.told == client_log.close
    assert backend_end.told == backend_log.close
    # What the proxy did to each peer's connection is what the peer saw of its end. mitmproxy's
    # layer closes a connection whole right after its close frame: a peer's answering close
    # then reaches a closed socket, whose kernel may answer with a reset that overtakes the
    # FIN the peer has not read yet.
    for told, log in ((client_end, client_log), (backend_end, backend_log)):
        late_answer = relay == "mitmproxy" and log.answered and log.end == "reset"
        assert told.told_connection_end == ("fin" if late_answer else log.end)

    # the side that vanished: its own reset, recorded by the hop next to it
    if case == "client-vanishes":
        assert client_end.connection_end == "reset"
    if case == "backend-resets":
        assert backend_end.connection_end == "reset"

    closes = session_json(session)["close"]
    assert closes["told_client"] == (list(client_log.close) if client_log.close else None)
    assert closes["told_server"] == (list(backend_log.close) if backend_log.close else None)
    assert closes["backend"] == backend_end.to_json()
    assert closes["client"] == client_end.to_json()
    hops = session_json(session)["hops"]
    assert hops[0]["end"]["client"] == closes["client"]
    assert hops[1]["end"]["server"] == closes["backend"]
    text = session_text(session)
    assert sum(line.startswith(("  client's end: ", "  backend's end: ")) for line in text) == 2

    # What each peer sent, as the hop next to it recorded: a peer answers a close frame with
    # the same code. mitmproxy's layer ends both connections after the first close frame, so
    # the answer never reaches it and is not recorded.
    client_role, backend_role = roles(case)
    answers = relay == "raw"
    assert client_end.sent == client_role.get("opens_close", answers and client_log.close or None)
    assert backend_end.sent == backend_role.get(
        "opens_close", answers and backend_log.close or None
    )
    handshake_tab = session_handshakes(session, {"check--passed": "", "check--failed": ""})
    for hop in session.hops:  # each hop's sides, as the app's Handshake tab shows them
        for side in (Side.CLIENT, Side.SERVER):
            first, *more = side_end_parts(hop.close.end_of(side), side)
            assert f"  {side}: {first}\n" + "".join(f"    {p}\n" for p in more) in handshake_tab.plain
    if relay == "raw" and not nginx:
        # the raw relay passes each end on as it happened: both peers get what they get
        # without wsinspect in the way
        direct_logs: list[PeerLog] = []
        direct = await backend_server(case, direct_logs)
        direct_port = direct.sockets[0].getsockname()[1]
        assert await run_case(case, None, direct_port, direct_logs) == client_log
        assert direct_logs == [backend_log]
        direct.close()
    backend.close()
    lined_up.close()
