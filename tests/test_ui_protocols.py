"""Application protocols in the app, the JSON lines export and the report, with real peers
through a real wsinspect: python-socketio server and client, mosquitto with paho-mqtt, the
npm graphql-ws server and client. The labels each shows are checked against what the peers
logged they sent."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter

import paho.mqtt.client as mqtt
import socketio
from textual.widgets import Input

from tests.conftest import wait_for
from tests.test_protocols_peers import (  # noqa: F401  (mosquitto is a fixture)
    Lines,
    captured,
    mosquitto,
    mqtt_session,
    node_peers,
    reverse_proxy,
    sent,
    serve_socketio,
    socketio_labels_sent,
)
from tests.test_ui import open_first_session
from tests.ui_helpers import handshake_hop, screen_text
from wsinspect import formats
from wsinspect.model import Message, MessageType, Outcome
from wsinspect.report import report_json, report_text
from wsinspect.store import SessionStore
from wsinspect.ui import WsInspectApp
from wsinspect.ui.calls import CallsList
from wsinspect.ui.message_list import MessageList
from wsinspect.ui.payload import PayloadPane

SIZE = (140, 45)
DATA = (MessageType.TEXT, MessageType.BINARY)


def list_rows(app) -> dict[int, str]:
    """The message list's visible lines, by message index."""
    lines = screen_text(app).splitlines()
    header = next(i for i, line in enumerate(lines) if "+seconds" in line)
    rows = {}
    for line in lines[header + 1:]:
        if not (match := re.match(r"[▶ ]\s*(\d+) ", line)):
            break
        rows[int(match[1])] = line
    return rows


def payload_text(app) -> str:
    """What the payload pane shows, below the list."""
    text = screen_text(app)
    return text[text.index("─" * 20):]


async def decoded_whole(listing: MessageList) -> None:
    await wait_for(lambda: not listing.track.wants(listing.total), 10, "the decoding")


async def type_filter(pilot, listing: MessageList, query: str) -> list[int]:
    """Type `query` into the filter box; the message indexes the list then shows."""
    await pilot.press("slash")
    filter_input = pilot.app.screen.query_one("#filter-text", Input)
    filter_input.value = query
    listing.focus()  # keys go to the list again
    await pilot.pause()
    await wait_for(lambda: not listing.scanning, what="the filter's scan")
    return [listing.message_index(row) for row in range(listing.row_count)]


def jsonl_lines(store, tmp_path, hop: int = 1) -> list[dict]:
    formats.export(store, tmp_path / "out.jsonl", "jsonl", redact=False)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    return [line for line in lines if line["hop"] == hop]


# --- Socket.IO ----------------------------------------------------------------------------

async def socketio_server():
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=logging.getLogger("socketio.server"),
                               engineio_logger=logging.getLogger("engineio.server"))

    @sio.on("chat")
    async def chat(sid, data):
        return "stored"

    typed = asyncio.get_running_loop().create_future()
    sio.on("typing", lambda sid, data: typed.set_result(data))

    @sio.on("upload")
    async def upload(sid, blob):
        await sio.emit("news", {"size": len(blob)}, to=sid)
        await asyncio.sleep(0.05)  # the slowest call
        return len(blob)

    runner, port = await serve_socketio(sio)
    return runner, port, typed


async def test_socketio_labels_decoded_view_filter_calls_export_and_report(
    start_proxy, tmp_path
):
    runner, port, typed = await socketio_server()
    client_log = Lines()
    loggers = [logging.getLogger("socketio.client"), logging.getLogger("engineio.client")]
    for logger in loggers:
        logger.addHandler(client_log)
        logger.setLevel(logging.INFO)
    try:
        proxy = await reverse_proxy(start_proxy, port)
        app = WsInspectApp(proxy.store, proxy.engine)
        async with app.run_test(size=SIZE) as pilot:
            client = socketio.AsyncClient(logger=loggers[0], engineio_logger=loggers[1])
            news = asyncio.get_running_loop().create_future()
            client.on("news", lambda data: news.set_result(data))
            await client.connect(proxy.url, transports=["websocket"])
            # the session is open in the app while the peers talk: labels come live
            screen = await open_first_session(app, pilot)
            listing = screen.query_one(MessageList)
            assert [await client.call("chat", {"text": "hi"}),
                    await client.call("upload", b"\x00\x01\x02"), await news] == [
                "stored", 3, {"size": 3}]
            await client.emit("typing", {"who": "me"})
            assert await asyncio.wait_for(typed, 5) == {"who": "me"}
            await client.disconnect()
            session = await proxy.wait_session(lambda s: s.outcome is Outcome.CLOSED, 15)
            await wait_for(lambda: listing.total == session.stats.count, what="all messages")
            await decoded_whole(listing)
            await pilot.pause()
            track = listing.track
            assert track.protocol == "socket.io"
            assert "socket.io" in screen_text(app).splitlines()[2]  # the summary says it

            # the Label column: what the client logged it sent, message by message
            client_sent = socketio_labels_sent(client_log.lines)
            messages = proxy.store.messages(session.id, 0, listing.total)
            shown = [track.label(m.index) for m in messages if m.from_client and m.type in DATA]
            assert shown == client_sent[:len(shown)] and {"chat", "upload", "typing"} <= set(shown)
            await pilot.press("home")
            await pilot.pause()
            rows = list_rows(app)
            assert len(rows) > 5
            for index, line in rows.items():
                assert f" {track.summary(index)} " in line, line
            chat_call = next(m.index for m in messages
                             if m.from_client and track.label(m.index) == "chat")
            assert "label" in screen_text(app) and "chat" in rows[chat_call]

            # the decoded view of the chat call: event, ack id, arguments
            listing.select_message(chat_call)
            await pilot.pause()
            pane = screen.query_one(PayloadPane)
            assert pane.view == "decoded" and pane.decoded.label == "chat"
            shown = payload_text(app)
            assert "socket.io  chat  id " in shown and '"text": "hi"' in shown, shown
            await pilot.press("v")  # the raw text is one key away
            assert pane.view == "text"

            # filtering by label, then by protocol
            chats = await type_filter(pilot, listing, "label:chat")
            assert chats == [m.index for m in messages if track.label(m.index) == "chat"]
            assert len(chats) == 2  # the call and its ack
            engine = await type_filter(pilot, listing, "protocol:engine.io")
            assert engine and all(track.message_protocol(i) == "engine.io" for i in engine)
            assert {track.label(i) for i in engine} >= {"open"}
            await type_filter(pilot, listing, "")

            # the Calls tab: the slowest first, the unanswered none; choosing one jumps to it
            await pilot.press("a")
            await pilot.pause()
            text = screen_text(app)
            assert "socket.io  2 calls, 2 answered" in text and "0 unanswered" in text, text
            slowest = track.stats().slowest
            assert [c.label for c in slowest] == ["upload", "chat"]
            assert re.search(r"\d+\.\d ms  #\d+\s+C→S upload \(id \d+\)", text), text
            calls = screen.query_one(CallsList)
            calls.highlighted = 1  # below the "Slowest" heading
            await pilot.press("enter")
            await pilot.pause()
            assert screen.query_one("#session-tabs").active == "messages"
            assert listing.cursor_message == slowest[0].index
            assert "socket.io  upload" in payload_text(app)
    finally:
        for logger in loggers:
            logger.removeHandler(client_log)
            logger.setLevel(logging.NOTSET)
        await runner.cleanup()

    # the JSON lines export: protocol, label, id and latency, as the client logged them
    lines = jsonl_lines(proxy.store, tmp_path)
    labelled = [line["label"] for line in lines
                if line["direction"] == "client" and line["type"] in ("text", "binary")]
    assert labelled == client_sent[:len(labelled)]
    assert all(line["protocol"] is None and line["label"] is None
               for line in lines if line["type"] not in ("text", "binary"))
    call = next(line for line in lines if line["label"] == "chat")
    ack = next(line for line in lines if line["label"] == "chat" and line is not call)
    assert call["protocol"] == "socket.io" and call["direction"] == "client"
    assert ack["direction"] == "server" and ack["id"] == call["id"]
    assert 0 <= ack["latency"] <= ack["timestamp"] - call["timestamp"] + 1e-6
    assert "latency" not in call
    assert next(line for line in lines if line["label"] == "open")["protocol"] == "engine.io"

    # report --json: the protocol, counts by label, the calls
    stats = report_json(proxy.store)["sessions"][0]["application_protocol"]
    assert stats["protocol"] == "socket.io"
    assert (stats["calls"], stats["answered"], stats["unanswered"]) == (2, 2, 0)
    assert stats["labels"] == dict(Counter(line["label"] for line in lines if line["label"]))
    assert [c["label"] for c in stats["slowest"]] == ["upload", "chat"]
    assert stats["latency_max"] == stats["slowest"][0]["latency"] >= 0.05
    assert stats["latency_p50"] <= stats["latency_max"]
    text = report_text(proxy.store)
    assert re.search(r"  protocol: socket\.io, 2 calls: 2 answered \(p50 [\d.]+ ms, "
                     r"max [\d.]+ ms\), 0 unanswered; slowest upload [\d.]+ ms \(#\d+\)", text)


# --- MQTT ---------------------------------------------------------------------------------

async def test_mqtt_topics_fields_filter_calls_export_and_report(
    start_proxy, mosquitto, tmp_path  # noqa: F811 (the fixture imported above)
):
    port, _ = mosquitto
    proxy = await reverse_proxy(start_proxy, port)
    client_log = Lines()
    logger = logging.getLogger("paho-ui")
    logger.setLevel(logging.DEBUG)
    client_log.setLevel(logging.DEBUG)
    logger.addHandler(client_log)
    app = WsInspectApp(proxy.store, proxy.engine)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await asyncio.to_thread(mqtt_session, proxy.port, mqtt.MQTTv5, logger, "through")
            messages, _ = await captured(proxy)
            screen = await open_first_session(app, pilot)
            listing = screen.query_one(MessageList)
            await decoded_whole(listing)
            await pilot.pause()
            track = listing.track
            assert track.protocol == "mqtt"
            client_sent = [m[1] for line in client_log.lines
                           if (m := re.match(r"Sending (\w+)", line))]
            shown = [track.label(m.index) for m in messages if m.from_client and m.type in DATA]
            assert ", ".join(shown) == ", ".join(client_sent)

            # a PUBLISH row says its topic; the CONNECT's decoded view its fields
            publishes = await type_filter(pilot, listing, "label:/PUBLISH.*qos1/")
            assert len(publishes) == 2  # the client's and the broker's delivery
            rows = list_rows(app)
            assert all(re.search(r"PUBLISH.* wsinspect/qos1 ", rows[i]) for i in publishes)
            everything = await type_filter(pilot, listing, "protocol:mqtt")
            assert everything == [m.index for m in messages if m.type in DATA]
            await type_filter(pilot, listing, "")
            connect = next(m.index for m in messages if track.label(m.index) == "CONNECT")
            listing.select_message(connect)
            await pilot.pause()
            shown = payload_text(app)
            assert "mqtt  CONNECT" in shown and '"client id": "through"' in shown, shown
            assert '"version": "5"' in shown

            await pilot.press("a")
            await pilot.pause()
            assert "mqtt  8 calls, 8 answered" in screen_text(app)
    finally:
        logger.removeHandler(client_log)

    lines = jsonl_lines(proxy.store, tmp_path)
    assert ", ".join(line["label"] for line in lines
                     if line["direction"] == "client" and line["label"]) == ", ".join(client_sent)
    # (a message holding several packets joins their labels, and their topics, with ", ")
    published = [line["topic"] for line in lines if "PUBLISH" in line["label"] or ""]
    assert {t for topics in published for t in topics.split(", ")} == {
        "wsinspect/qos0", "wsinspect/qos1", "wsinspect/qos2"}
    subscribe = next(line for line in lines if line["label"] == "SUBSCRIBE")
    suback = next(line for line in lines if line["label"] == "SUBACK")
    assert subscribe["topic"] == "wsinspect/#" and suback["id"] == subscribe["id"]
    assert suback["latency"] >= 0 and "latency" not in subscribe
    stats = report_json(proxy.store)["sessions"][0]["application_protocol"]
    assert stats["protocol"] == "mqtt" and (stats["calls"], stats["answered"]) == (8, 8)
    assert stats["labels"]["CONNECT"] == 1 and stats["labels"]["PUBLISH"] == 6


# --- GraphQL over WebSocket (the npm graphql-ws server and client) -------------------------

async def test_graphql_operations_in_the_label_column_decoded_view_and_calls(start_proxy):
    proxies = []

    async def through(port: int) -> str:
        proxies.append(await reverse_proxy(start_proxy, port))
        return f"ws://127.0.0.1:{proxies[0].port}/graphql"

    log = await node_peers("graphql-ws", url_for_port=through)
    proxy = proxies[0]
    messages, _ = await captured(proxy)
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_first_session(app, pilot)
        listing = screen.query_one(MessageList)
        await decoded_whole(listing)
        await pilot.press("home")
        await pilot.pause()
        track = listing.track
        assert track.protocol == "graphql-transport-ws"
        for peer, from_client in (("client", True), ("server", False)):
            logged = [json.loads(text)["type"] for text in sent(log, peer)]
            assert [track.label(m.index) for m in messages
                    if m.from_client == from_client and m.type in DATA] == logged
        rows = list_rows(app)
        subscribes = [m.index for m in messages if track.label(m.index) == "subscribe"]
        assert [track.summary(i) for i in subscribes] == ["subscribe Hello",
                                                         "subscribe Greetings"]
        assert all(track.summary(i) in rows[i] for i in subscribes)
        # the decoded view: the operation, its id and its query
        listing.select_message(subscribes[1])
        await pilot.pause()
        shown = payload_text(app)
        assert "graphql-transport-ws  subscribe  operation Greetings  id " in shown, shown
        assert '"query": "subscription Greetings { greetings }"' in shown
        assert await type_filter(pilot, listing, "label:Greetings") == [
            m.index for m in messages if "Greetings" in track.summary(m.index)]
        await type_filter(pilot, listing, "")
        await pilot.press("a")
        await pilot.pause()
        assert "graphql-transport-ws  2 calls, 2 answered" in screen_text(app)


# --- a live session whose protocol shows only in its content -------------------------------

async def test_a_live_session_gains_its_label_column_when_its_content_tells_the_protocol():
    store = SessionStore()
    hop = handshake_hop("/rpc", time.time())  # its subprotocol, "chat", names no protocol
    store.add_hop(hop)

    def add(from_client: bool, payload: bytes) -> None:
        store.add_message(hop, Message(from_client, MessageType.TEXT, len(payload), payload,
                                       time.time()))

    add(True, b"hello")
    store.flush()
    app = WsInspectApp(store)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_session(1)
        await pilot.pause()
        screen = app.screen
        listing = screen.query_one(MessageList)
        await pilot.pause(0.2)
        assert listing.track.protocol is None and " label " not in screen_text(app)
        add(True, b'{"jsonrpc":"2.0","method":"sum","params":[1,2],"id":1}')
        add(True, b'{"jsonrpc":"2.0","method":"ping","id":2}')
        add(False, b'{"jsonrpc":"2.0","result":3,"id":1}')
        await wait_for(lambda: listing.track.decoded == 4, what="the new messages decoded")
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "json-rpc" in text.splitlines()[2] and " label " in text, text
        rows = list_rows(app)
        # the first message is decoded too, once the protocol is known
        assert [rows[i].split("B  ")[1].split()[0] for i in range(4)] == [
            "invalid", "sum", "ping", "sum"]
        await pilot.press("a")
        await pilot.pause()
        text = screen_text(app)
        assert "json-rpc  2 calls, 1 answered" in text and "1 unanswered" in text, text
        assert re.search(r"no answer  #2\s+C→S ping \(id 2\)", text), text
