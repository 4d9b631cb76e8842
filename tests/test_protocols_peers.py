"""Application protocols decoded from real peers through a real wsinspect proxy on loopback.

Each peer comes from its protocol's own libraries and logs what it sends; the labels wsinspect
decodes from the capture must be those. The peers: python-socketio server and client;
mosquitto (Debian) with a websockets listener and paho-mqtt (3.1.1 and 5); the npm graphql-ws
server and client; subscriptions-transport-ws (the legacy `graphql-ws` subprotocol) server and
client; RabbitMQ's Web STOMP plugin (Debian rabbitmq-server) with @stomp/stompjs;
rpc-websockets (JSON-RPC 2.0) server and client; the @microsoft/signalr client against a hub
written here (no SignalR server can be installed on this machine).
Node peers run twice, straight and through wsinspect: both runs must end the same way with the
same results."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import socketio
from aiohttp import web
from websockets.asyncio.server import serve

from tests.builders import free_port
from wsinspect.model import Outcome
from wsinspect.protocols import analyse_hop

from .conftest import wait_for

NODE_DIR = Path(__file__).parent / "node"
PEERS = NODE_DIR / "protocol_peers.mjs"


async def reverse_proxy(start_proxy, port: int):
    return await start_proxy(modes=[f"reverse:http://127.0.0.1:{port}"])


async def captured(proxy):
    """The closed session's messages and their analysis."""
    session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED, timeout=15)
    proxy.store.flush()
    messages = proxy.store.messages(session.id, 0, 100_000)
    return messages, analyse_hop(session.first_hop, messages)


def decoded_labels(messages, analysis, from_client: bool) -> list[str]:
    return [d.label for m, d in zip(messages, analysis.decoded)
            if d is not None and m.from_client == from_client]


# --- Socket.IO ----------------------------------------------------------------------------

class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


SOCKET_IO_TYPES = {"0": "CONNECT", "1": "DISCONNECT", "4": "CONNECT_ERROR"}


def socketio_labels_sent(lines: list[str]) -> list[str]:
    """What a python-socketio peer logged it sent, as labels: Engine.IO packets by type name,
    Socket.IO events by the name it logged emitting, acks by the event it logged receiving."""
    labels, emitting, receiving = [], None, None
    for line in lines:
        if match := re.search(r'[Ee]mitting event "([^"]+)"', line):
            emitting = match[1]
        elif match := re.search(r'[Rr]eceived event "([^"]+)"', line):
            receiving = match[1]
        elif match := re.search(r"Sending packet (\w+) data (.*)", line):
            kind, data = match.groups()
            if kind != "MESSAGE":
                labels.append(kind.lower())
            elif data == "<binary>" or data[0] in "25":
                labels.append(emitting)
            elif data[0] in "36":
                labels.append(receiving)
            else:
                labels.append(SOCKET_IO_TYPES[data[0]])
    return labels


async def serve_socketio(sio: socketio.AsyncServer) -> tuple[web.AppRunner, int]:
    """A python-socketio server on a loopback port the OS picks: its runner (to clean up) and
    the port."""
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def test_socketio_server_and_client(start_proxy):
    server_log, client_log = Lines(), Lines()
    server_loggers = [logging.getLogger("socketio.server"), logging.getLogger("engineio.server")]
    client_loggers = [logging.getLogger("socketio.client"), logging.getLogger("engineio.client")]
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=server_loggers[0],
                               engineio_logger=server_loggers[1])
    for logger in server_loggers:
        logger.addHandler(server_log)
    for logger in client_loggers:
        logger.addHandler(client_log)
    for logger in server_loggers + client_loggers:
        logger.setLevel(logging.INFO)

    @sio.on("chat")
    async def chat(sid, data):
        return "stored"

    @sio.on("upload")
    async def upload(sid, blob):
        await sio.emit("news", {"size": len(blob)}, to=sid)
        return len(blob)

    @sio.on("chat", namespace="/admin")
    async def admin_chat(sid, data):
        return "ok"

    runner, port = await serve_socketio(sio)

    async def conversation(url: str) -> list:
        client = socketio.AsyncClient(logger=client_loggers[0], engineio_logger=client_loggers[1])
        news = asyncio.get_running_loop().create_future()
        client.on("news", lambda data: news.set_result(data))
        client.on("ask", lambda data: "answer")
        await client.connect(url, transports=["websocket"], namespaces=["/", "/admin"])
        answers = [await client.call("chat", {"text": "hi"}),
                   await client.call("upload", b"\x00\x01\x02"), await news,
                   await client.call("chat", "x", namespace="/admin"),
                   await sio.call("ask", "q", to=client.get_sid("/"))]
        await client.disconnect()
        return answers

    try:
        straight = await conversation(f"http://127.0.0.1:{port}")
        server_log.lines.clear()
        client_log.lines.clear()
        proxy = await reverse_proxy(start_proxy, port)
        assert await conversation(proxy.url) == straight == ["stored", 3, {"size": 3}, "ok",
                                                             "answer"]
        messages, analysis = await captured(proxy)
    finally:
        for logger in server_loggers:
            logger.removeHandler(server_log)
        for logger in client_loggers:
            logger.removeHandler(client_log)
        for logger in server_loggers + client_loggers:
            logger.setLevel(logging.NOTSET)
        await runner.cleanup()
    assert analysis.protocol == "socket.io"
    # python-engineio logs a packet when it queues it; on disconnect the socket may close
    # before the last ones are written: what was captured is what was logged, up to there
    client_sent = socketio_labels_sent(client_log.lines)
    assert client_sent[:7] == ["CONNECT", "CONNECT", "chat", "upload", "upload", "chat", "ask"]
    client_decoded = decoded_labels(messages, analysis, True)
    assert client_decoded == client_sent[:len(client_decoded)] and len(client_decoded) >= 7
    server_sent = socketio_labels_sent(server_log.lines)
    assert server_sent[:2] == ["open", "CONNECT"] and "news" in server_sent
    server_decoded = decoded_labels(messages, analysis, False)
    assert server_decoded == server_sent[:len(server_decoded)] and "ask" in server_decoded
    # acks carry their call's label, id and latency; the attachment carries its event's
    upload_ack = next(d for m, d in zip(messages, analysis.decoded)
                      if d and not m.from_client and d.label == "upload")
    assert upload_ack.latency is not None and upload_ack.latency >= 0
    stats = analysis.stats
    assert (stats.calls, stats.answered, stats.unanswered) == (4, 4, 0)
    assert sorted(c.label for c in stats.slowest) == ["ask", "chat", "chat", "upload"]


# --- MQTT ----------------------------------------------------------------------------------

@pytest.fixture
def mosquitto(tmp_path):
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert os.path.exists(binary), "mosquitto is needed (install.sh --test installs it)"
    port = free_port()
    log = tmp_path / "mosquitto.log"
    config = tmp_path / "mosquitto.conf"
    # mosquitto 2.0.11 exits ("Unable to start any listening sockets") when its only listener
    # is a websockets one, so a plain MQTT listener on loopback comes first
    config.write_text(
        f"listener {free_port()} 127.0.0.1\n"
        f"listener {port} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n"
        f"persistence false\nlog_dest file {log}\nlog_type all\n"
        f"user {getpass.getuser()}\n"  # as root it would become user mosquitto, locked out
    )
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            process.poll()
            assert process.returncode is None, log.read_text() if log.exists() else "no log"
            subprocess.run(["sleep", "0.05"])
        yield port, log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def mqtt_session(port: int, version: int, logger: logging.Logger, name: str) -> None:
    """paho-mqtt over WebSocket: subscribe, publish at QoS 0, 1 and 2, receive them back."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name,
                         protocol=version, transport="websockets")
    client.enable_logger(logger)
    received, unsubscribed = [], []
    client.on_message = lambda c, userdata, message: received.append(message.topic)
    client.on_unsubscribe = lambda *args: unsubscribed.append(True)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        client.subscribe("wsinspect/#", qos=2)
        wait_until(lambda: client.is_connected())
        for qos in (0, 1, 2):
            client.publish(f"wsinspect/qos{qos}", f"payload {qos}", qos=qos).wait_for_publish(5)
        wait_until(lambda: len(received) == 3)
        client.unsubscribe("wsinspect/#")
        wait_until(lambda: unsubscribed)  # the broker's answers all came before DISCONNECT
    finally:
        client.disconnect()
        client.loop_stop()
    assert sorted(received) == ["wsinspect/qos0", "wsinspect/qos1", "wsinspect/qos2"]


def wait_until(predicate, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        subprocess.run(["sleep", "0.02"])
    raise AssertionError("timed out")


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5"])
async def test_mqtt_paho_through_mosquitto(start_proxy, mosquitto, version):
    port, broker_log = mosquitto
    proxy = await reverse_proxy(start_proxy, port)
    client_log = Lines()
    logger = logging.getLogger(f"paho-{version}")
    logger.setLevel(logging.DEBUG)
    client_log.setLevel(logging.DEBUG)
    logger.addHandler(client_log)
    try:
        # straight to the broker, then through wsinspect: each run gets its messages back
        await asyncio.to_thread(mqtt_session, port, version, logging.getLogger("paho"), "straight")
        await asyncio.to_thread(mqtt_session, proxy.port, version, logger, "through")
        messages, analysis = await captured(proxy)
    finally:
        logger.removeHandler(client_log)
    assert analysis.protocol == "mqtt"
    client_sent = [m[1] for line in client_log.lines if (m := re.match(r"Sending (\w+)", line))]
    # several packets written at once may share a WebSocket message
    assert ", ".join(decoded_labels(messages, analysis, True)) == ", ".join(client_sent)
    await wait_for(lambda: "Client through disconnected" in broker_log.read_text(),
                   what="the broker's log")
    broker_sent = re.findall(r"Sending (\w+) to through\b", broker_log.read_text())
    assert ", ".join(decoded_labels(messages, analysis, False)) == ", ".join(broker_sent)
    decoded = [d for d in analysis.decoded if d]
    published = [p.topic for d in decoded for p in d.parts if p.label == "PUBLISH"]
    assert sorted(published) == sorted(["wsinspect/qos0", "wsinspect/qos1", "wsinspect/qos2"] * 2)
    subscribe = next(p for d in decoded for p in d.parts if p.label == "SUBSCRIBE")
    assert subscribe.topic == "wsinspect/#" and subscribe.id is not None
    connect = next(p for d in decoded for p in d.parts if p.label == "CONNECT")
    assert connect.fields["version"] == ("5" if version == mqtt.MQTTv5 else "3.1.1")
    # client calls: SUBSCRIBE, PUBLISH q1, PUBLISH q2, PUBREL, UNSUBSCRIBE; the broker's own
    # QoS 1 and 2 deliveries and its PUBREL are calls the client answers
    stats = analysis.stats
    assert stats.calls == 8 and stats.answered == 8 and stats.latency_max is not None
    assert {c.label for c in stats.slowest} <= {"SUBSCRIBE", "PUBLISH", "PUBREL", "UNSUBSCRIBE"}


# --- Node peers: GraphQL (both dialects), JSON-RPC, STOMP, SignalR ---------------------------

def node() -> str:
    path = shutil.which("node")
    assert path, "node is needed (install.sh --test installs it)"
    assert (NODE_DIR / "node_modules" / "graphql-ws").is_dir(), "run install.sh --test"
    return path


async def node_peers(kind: str, url: str | None = None, url_for_port=None) -> list[dict]:
    """Run protocol_peers.mjs; returns its JSON log lines."""
    process = await asyncio.create_subprocess_exec(
        node(), str(PEERS), kind, *([url] if url else []), cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        if url_for_port:
            first = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
            target = await url_for_port(first["port"])
            process.stdin.write(target.encode() + b"\n")
            await process.stdin.drain()
        out, err = await asyncio.wait_for(process.communicate(), 40)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    log = [json.loads(line) for line in out.decode().splitlines()]
    assert log[-1] == {"done": True}
    return log


def sent(log: list[dict], peer: str) -> list[str]:
    return [entry["sent"] for entry in log if entry.get("peer") == peer]


def results(log: list[dict]) -> list:
    return [entry for entry in log if "result" in entry or "error" in entry]


async def straight_and_through(start_proxy, kind: str, path: str):
    """The Node peers run straight, then through wsinspect: the same results both times."""
    straight = await node_peers(kind, url_for_port=lambda port: _url(port, path))
    proxies = []

    async def through(port: int) -> str:
        proxies.append(await reverse_proxy(start_proxy, port))
        return f"ws://127.0.0.1:{proxies[0].port}{path}"

    log = await node_peers(kind, url_for_port=through)
    assert results(log) == results(straight) and results(log)
    messages, analysis = await captured(proxies[0])
    return log, messages, analysis


async def _url(port: int, path: str) -> str:
    return f"ws://127.0.0.1:{port}{path}"


@pytest.mark.parametrize("kind, protocol, call", [
    ("graphql-ws", "graphql-transport-ws", "subscribe"),
    ("subscriptions-transport-ws", "graphql-ws", "start"),
])
async def test_graphql_over_websocket_both_dialects(start_proxy, kind, protocol, call):
    log, messages, analysis = await straight_and_through(start_proxy, kind, "/graphql")
    assert analysis.protocol == protocol
    for peer, from_client in (("client", True), ("server", False)):
        logged = [json.loads(text)["type"] for text in sent(log, peer)]
        assert decoded_labels(messages, analysis, from_client) == logged
    calls = [d for d in analysis.decoded if d and d.label == call]
    assert [d.operation for d in calls] == ["Hello", "Greetings"]
    answers = [d for d in analysis.decoded if d and d.latency is not None]
    assert [d.label for d in answers] == [
        "next" if call == "subscribe" else "data", "complete"] * 1 + [
        "next" if call == "subscribe" else "data"] * 2 + ["complete"]
    assert [d.operation for d in answers] == ["Hello"] * 2 + ["Greetings"] * 3
    assert (analysis.stats.calls, analysis.stats.answered) == (2, 2)


async def test_jsonrpc_rpc_websockets_server_and_client(start_proxy):
    log, messages, analysis = await straight_and_through(start_proxy, "json-rpc", "/")
    assert analysis.protocol == "json-rpc"
    methods = {}
    for peer, from_client in (("client", True), ("server", False)):
        logged = []
        for text in sent(log, peer):
            data = json.loads(text)
            if "method" in data:
                methods[data.get("id")] = data["method"]
                logged.append(data["method"])
            elif "id" in data:  # a response: the label of its call
                logged.append(methods[data["id"]])
            else:
                logged.append(data["notification"])
        assert decoded_labels(messages, analysis, from_client) == logged
    assert decoded_labels(messages, analysis, True) == ["sum", "slow", "fail", "greet", "rpc.on"]
    stats = analysis.stats
    assert (stats.calls, stats.answered, stats.unanswered) == (4, 4, 0)
    assert stats.slowest[0].label == "slow" and stats.slowest[0].latency >= 0.15
    assert stats.latency_max == stats.slowest[0].latency


# --- STOMP: RabbitMQ's Web STOMP plugin ------------------------------------------------------

@pytest.fixture
async def rabbitmq(tmp_path):
    """RabbitMQ with only the Web STOMP listener, on loopback, with its own epmd."""
    server = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    epmd = shutil.which("epmd")
    assert server.exists() and epmd, "rabbitmq-server is needed (install.sh --test installs it)"
    web_stomp, epmd_port, dist_port = free_port(), free_port(), free_port()
    home = tmp_path / "rabbitmq"
    home.mkdir()
    (home / "rabbitmq.conf").write_text(
        "listeners.tcp = none\nstomp.listeners.tcp = none\n"
        f"web_stomp.tcp.port = {web_stomp}\nweb_stomp.tcp.ip = 127.0.0.1\n"
        "loopback_users = none\n"
    )
    (home / "enabled_plugins").write_text("[rabbitmq_web_stomp].\n")
    env = {
        **os.environ, "HOME": str(home), "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": f"wsinspect{web_stomp}@localhost",
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"), "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": str(home / "plugins"),
        "RABBITMQ_DIST_PORT": str(dist_port), "RABBITMQ_LOGS": "-",
    }
    log = open(home / "server.log", "wb")
    epmd_process = await asyncio.create_subprocess_exec(
        epmd, "-port", str(epmd_port), env=env, stdout=log, stderr=log)
    process = await asyncio.create_subprocess_exec(
        str(server), env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        async def listening():
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", web_stomp)
                writer.close()
                return True
            assert process.returncode is None, (home / "server.log").read_text()[-2000:]
            return False

        for _ in range(600):
            if await listening():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("RabbitMQ did not start: " + (home / "server.log").read_text())
        yield web_stomp
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), 20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        epmd_process.terminate()
        await epmd_process.wait()
        log.close()


def stomp_command(frame: str) -> str:
    return "heartbeat" if not frame.strip("\r\n") else frame.lstrip("\r\n").split("\n", 1)[0]


async def test_stomp_stompjs_through_rabbitmq_web_stomp(start_proxy, rabbitmq):
    straight = await node_peers("stomp", f"ws://127.0.0.1:{rabbitmq}/ws")
    proxy = await reverse_proxy(start_proxy, rabbitmq)
    log = await node_peers("stomp", f"ws://127.0.0.1:{proxy.port}/ws")
    assert results(log) == results(straight) == [{"result": ["hello"]}]
    messages, analysis = await captured(proxy)
    assert analysis.protocol == "stomp"  # from the subprotocol RabbitMQ chose
    logged = [stomp_command(frame) for frame in sent(log, "client")]
    assert logged == ["CONNECT", "SUBSCRIBE", "SEND", "DISCONNECT"]
    assert decoded_labels(messages, analysis, True) == logged
    server = decoded_labels(messages, analysis, False)
    assert server[0] == "CONNECTED" and "MESSAGE" in server and server.count("RECEIPT") >= 2
    decoded = [d for d in analysis.decoded if d]
    assert [d.destination for d in decoded if d.label in ("SUBSCRIBE", "SEND", "MESSAGE")] == \
        ["/queue/wsinspect"] * 3
    receipts = {d.id: d.latency for d in decoded if d.label == "RECEIPT"}
    assert receipts["sub-1"] is not None and receipts["send-1"] is not None
    # stompjs asks a receipt for its DISCONNECT too, and may close before it comes
    stats = analysis.stats
    assert stats.calls == 3 and stats.answered >= 2
    assert {c.label for c in stats.unanswered_calls} <= {"DISCONNECT"}


# --- SignalR: the @microsoft/signalr client ---------------------------------------------------

async def signalr_hub(websocket, sent_by_hub: list[str]):
    """A hub speaking the SignalR JSON protocol: Add (invoked), Notify (sent; answered by a
    News invocation), Counter (streamed)."""
    async def send(*records: dict) -> None:
        text = "".join(json.dumps(r) + "\x1e" for r in records)
        sent_by_hub.append(text)
        await websocket.send(text)

    handshaken = False
    async for message in websocket:
        for record in filter(None, message.split("\x1e")):
            data = json.loads(record)
            if not handshaken:
                handshaken = True
                await send({})
            elif data["type"] == 1 and data["target"] == "Add":
                await send({"type": 3, "invocationId": data["invocationId"],
                            "result": sum(data["arguments"])})
            elif data["type"] == 1 and data["target"] == "Notify":
                await send({"type": 1, "target": "News", "arguments": ["hi back"]})
            elif data["type"] == 4:
                for item in range(data["arguments"][0]):
                    await send({"type": 2, "invocationId": data["invocationId"], "item": item})
                await send({"type": 3, "invocationId": data["invocationId"]})
            elif data["type"] == 7:
                return


def signalr_labels(texts: list[str], targets: dict) -> list[str]:
    labels, handshaken = [], False
    for text in texts:
        parts = []
        for record in filter(None, text.split("\x1e")):
            data = json.loads(record)
            if not handshaken:
                handshaken = True
                parts.append("handshake")
            elif data["type"] in (1, 4):
                targets[data.get("invocationId")] = data["target"]
                parts.append(data["target"])
            elif data["type"] in (2, 3):
                parts.append(targets[data["invocationId"]])
            else:
                parts.append({6: "Ping", 7: "Close", 5: "CancelInvocation"}[data["type"]])
        labels.append(", ".join(parts))
    return labels


async def test_signalr_client(start_proxy):
    sent_by_hub: list[str] = []
    async with serve(lambda ws: signalr_hub(ws, sent_by_hub), "127.0.0.1", 0) as hub:
        port = hub.sockets[0].getsockname()[1]
        straight = await node_peers("signalr", f"http://127.0.0.1:{port}/hub")
        sent_by_hub.clear()
        proxy = await reverse_proxy(start_proxy, port)
        log = await node_peers("signalr", f"http://127.0.0.1:{proxy.port}/hub")
        messages, analysis = await captured(proxy)
    assert results(log) == results(straight) == [
        {"result": 5}, {"result": "hi back"}, {"result": [0, 1, 2]}]
    assert analysis.protocol == "signalr"
    targets: dict = {}
    client_texts = sent(log, "client")
    client_labels = signalr_labels(client_texts, targets)
    assert decoded_labels(messages, analysis, True) == client_labels
    assert [label for label in client_labels if label != "Ping"] == [
        "handshake", "Add", "Notify", "Counter", "Close"]
    assert decoded_labels(messages, analysis, False) == signalr_labels(sent_by_hub, targets)
    stats = analysis.stats
    assert (stats.calls, stats.answered) == (2, 2)
    assert sorted(c.label for c in stats.slowest) == ["Add", "Counter"]
