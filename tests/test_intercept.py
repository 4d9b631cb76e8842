"""Holding messages in flight (wsinspect/intercept.py, wsinspect/interceptor.py): real websockets
peers through a real wsinspect engine on loopback, on the run's relay (`--relay mitmproxy` runs
them on mitmproxy's path). websockets negotiates permessage-deflate unless told not to, so
most of these sessions are deflate sessions."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from wsinspect import formats
from wsinspect.errors import ResendError
from wsinspect.intercept import (
    DROPPED,
    EDITED,
    FORWARDED,
    Held,
    HeldQueue,
    RuleError,
    parse_rule,
)
from wsinspect.store import SessionStore
from wsinspect.wire import BINARY, CONTINUATION, PING, TEXT, Control, DataMessage, FrameParser

from .conftest import wait_for
from .rawpeers import frame, raw_client, raw_server


@pytest.fixture
async def server():
    """A server that keeps what it receives and its connections (to send from); yields
    (port, received, connections)."""
    received: list[str | bytes] = []
    connections: list = []

    async def handler(ws):
        connections.append(ws)
        async for message in ws:
            received.append(message)

    async with serve(handler, "127.0.0.1", 0) as srv:
        yield srv.sockets[0].getsockname()[1], received, connections


async def held_now(proxy, count: int = 1):
    interceptor = proxy.engine.interceptor
    return await wait_for(
        lambda: interceptor.held() if interceptor.pending_count() >= count else None,
        5.0, f"{count} held message(s)",
    )


def data_messages(store, session_id):
    return [
        (m.direction.value, m.payload, m.injected, m.intercept)
        for m in store.messages(session_id, 0, 1000)
        if m.type.value in ("text", "binary")
    ]


def test_rules_read_their_terms_and_refuse_nonsense():
    rule = parse_rule('~client ~text /"op":\\s*"send"/')
    assert rule.matches(True, "text", b'{"op": "send"}')
    assert not rule.matches(False, "text", b'{"op": "send"}')
    assert not rule.matches(True, "binary", b'{"op": "send"}')
    assert not rule.matches(True, "text", b'{"op": "recv"}')
    words = parse_rule("~server hello there")
    assert words.matches(False, "text", b"oh hello there!") and not words.matches(
        False, "text", b"hello"
    )
    assert parse_rule("") is None and parse_rule("   ") is None
    assert parse_rule("~binary").matches(True, "binary", b"\xff")
    labelled = parse_rule("label:chat ~text")
    assert labelled.matches(True, "text", b"x", frozenset({"chat"}))
    assert not labelled.matches(True, "text", b"x", frozenset({"join"}))
    for bad, says in [
        ("~client ~server", "opposite"),
        ("~sideways", "unknown rule term"),
        ("/(/", "does not compile"),
        ("/a/ b", "not both"),
    ]:
        with pytest.raises(RuleError, match=says):
            parse_rule(bad)


async def test_a_held_client_message_waits_with_what_follows_it_until_forwarded(
    start_proxy, server, relay_path
):
    port, received, connections = server
    proxy = await start_proxy(settings=["wsinspect_intercept=~client hold"])
    async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url) as ws:
        await ws.send("first")
        await wait_for(lambda: received == ["first"], what="the first message")
        await ws.send("hold me")
        await ws.send("after it")
        await ws.send(b"\x01binary after it")
        [held] = await held_now(proxy)
        assert held.message.payload == b"hold me" and held.from_client
        await asyncio.sleep(0.2)
        assert received == ["first"]  # the rest of the direction waits behind it
        if relay_path == "raw":
            # the other direction flows, and a ping is answered, while the message is held
            await connections[0].send("from the server")
            assert await asyncio.wait_for(ws.recv(), 5) == "from the server"
            await asyncio.wait_for(await ws.ping(b"keepalive"), 5)
            await asyncio.wait_for(await connections[0].ping(b"server ping"), 5)
            assert received == ["first"]
        proxy.engine.interceptor.decide(held.id, FORWARDED)
        await wait_for(lambda: len(received) == 4, what="the held messages forwarded")
        assert received == ["first", "hold me", "after it", b"\x01binary after it"]
        if relay_path != "raw":
            # mitmproxy's layer waited for the hook: the server's message comes after
            await connections[0].send("from the server")
            assert await asyncio.wait_for(ws.recv(), 5) == "from the server"
        assert proxy.engine.interceptor.held() == []
        session = await proxy.wait_session(lambda s: s.stats.count >= 5)
    await proxy.wait_session(lambda s: s.outcome.value == "closed")
    records = [r for r in data_messages(proxy.store, session.id) if r[0] == "client"]
    assert records == [
        ("client", b"first", False, None),
        ("client", b"hold me", False, FORWARDED),
        ("client", b"after it", False, None),
        ("client", b"\x01binary after it", False, None),
    ]
    [message] = [m for m in proxy.store.messages(session.id, 0, 100) if m.intercept]
    assert message.held >= 0.2


async def test_an_edited_server_message_in_a_deflate_session_leaves_later_ones_readable(
    start_proxy, server, relay_path
):
    port, received, connections = server
    proxy = await start_proxy(settings=["wsinspect_intercept=~server ~text /secret/"])
    async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url) as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        sentence = "the secret word is swordfish and the secret number is 42; " * 4
        warm_up = "warm up: " + sentence[:60].replace("secret", "public")
        await connections[0].send(warm_up)
        assert await asyncio.wait_for(ws.recv(), 5) == warm_up
        await connections[0].send(sentence)
        [held] = await held_now(proxy)
        if relay_path == "raw":  # the server's pong goes on ahead of its held message
            await asyncio.wait_for(await ws.ping(b"are you there"), 5)
        await connections[0].send("behind it")
        proxy.engine.interceptor.decide(held.id, EDITED, b"redacted")
        assert await asyncio.wait_for(ws.recv(), 5) == "redacted"
        assert await asyncio.wait_for(ws.recv(), 5) == "behind it"
        # Later compressed messages repeat what the client never saw: they still inflate.
        for i in range(3):
            await connections[0].send(f"{i}: " + sentence)
            [later] = await held_now(proxy)
            proxy.engine.interceptor.decide(later.id, FORWARDED)
            assert await asyncio.wait_for(ws.recv(), 5) == f"{i}: " + sentence
        await connections[0].send("plain " + sentence.replace("secret", "public"))
        assert await asyncio.wait_for(ws.recv(), 5) == "plain " + sentence.replace(
            "secret", "public"
        )
        # and the client's own compressed messages still reach the server
        await ws.send(sentence.replace("secret", "public"))
        await wait_for(lambda: len(received) == 1, what="the client's message")
        assert received == [sentence.replace("secret", "public")]
        session = await proxy.wait_session(lambda s: s.stats.count >= 9)
    await proxy.wait_session(lambda s: s.outcome.value == "closed")
    server_side = [r for r in data_messages(proxy.store, session.id) if r[0] == "server"]
    assert server_side[1:4] == [
        ("server", sentence.encode(), False, EDITED),
        ("server", b"redacted", True, None),
        ("server", b"behind it", False, None),
    ]


async def test_a_dropped_client_message_never_arrives_and_later_deflated_ones_do(
    start_proxy, server, tmp_path
):
    port, received, _ = server
    capture = tmp_path / "dropped.db"
    proxy = await start_proxy(settings=["wsinspect_intercept=~client /^drop/"], capture=capture)
    async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url) as ws:
        words = "alpha beta gamma delta epsilon zeta eta theta " * 6
        await ws.send("drop " + words)
        [held] = await held_now(proxy)
        await ws.send("kept " + words)
        proxy.engine.interceptor.decide(held.id, DROPPED)
        await ws.send("also kept " + words)
        await wait_for(lambda: len(received) == 2, what="the messages after the dropped one")
        assert received == ["kept " + words, "also kept " + words]
        with pytest.raises(ResendError, match="no held message"):
            proxy.engine.interceptor.decide(held.id, FORWARDED)
        session = await proxy.wait_session(lambda s: s.stats.count >= 3)
    await proxy.wait_session(lambda s: s.outcome.value == "closed")
    expected = [
        ("client", ("drop " + words).encode(), False, DROPPED),
        ("client", ("kept " + words).encode(), False, None),
        ("client", ("also kept " + words).encode(), False, None),
    ]
    assert data_messages(proxy.store, session.id)[:3] == expected
    proxy.store.flush()
    # the fate is in the capture file, and in its JSON lines export
    saved = SessionStore.open(capture)
    assert data_messages(saved, session.id)[:3] == expected
    out = tmp_path / "dropped.jsonl"
    formats.export(saved, out, "jsonl")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    fates = [line["intercept"] for line in lines if line["type"] == "text"]
    assert fates[0]["fate"] == DROPPED and fates[0]["held"] >= 0 and fates[1:] == [None, None]
    saved.close()
    # a capture from before messages were held still opens, with no fates
    older = tmp_path / "older.db"
    for suffix in ("", "-wal"):  # the proxy's store is still open: its WAL too
        if (part := capture.with_name(capture.name + suffix)).exists():
            shutil.copy(part, older.with_name(older.name + suffix))
    with sqlite3.connect(older) as db:
        db.execute("ALTER TABLE messages DROP COLUMN intercept")
        db.execute("ALTER TABLE messages DROP COLUMN held")
    old = SessionStore.open(older)
    assert [m[3] for m in data_messages(old, session.id)[:3]] == [None, None, None]
    old.close()


async def test_a_held_message_times_out_forwarded_unchanged(start_proxy, server):
    port, received, _ = server
    proxy = await start_proxy(
        settings=["wsinspect_intercept=~client", "wsinspect_intercept_timeout=0.3"]
    )
    async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url, compression=None) as ws:
        await ws.send(b"\x00\x01 as it came")
        await wait_for(lambda: received == [b"\x00\x01 as it came"], 5.0, "the timeout")
        session = await proxy.wait_session(lambda s: s.stats.count >= 1)
    await proxy.wait_session(lambda s: s.outcome.value == "closed")
    [message] = [m for m in proxy.store.messages(session.id, 0, 10) if m.type.value == "binary"]
    assert (message.intercept, message.payload) == (FORWARDED, b"\x00\x01 as it came")
    assert 0.25 <= message.held < 3


async def test_the_rule_is_set_and_cleared_by_its_command(start_proxy, server):
    port, received, _ = server
    proxy = await start_proxy()
    commands = proxy.engine.master.commands
    commands.call("wsinspect.intercept", "~client ~text")
    async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url) as ws:
        await ws.send("held by the command's rule")
        [held] = await held_now(proxy)
        [line] = commands.call("wsinspect.held")
        assert line.startswith(f"{held.id} client text ") and line.endswith(
            " held by the command's rule"
        )
        commands.call("wsinspect.intercept", "")
        commands.call("wsinspect.edit", held.id, "68 69", "hex")
        await ws.send("not held: the rule is off")
        await wait_for(lambda: len(received) == 2, what="both messages")
        assert received == ["hi", "not held: the rule is off"]


async def test_a_forwarded_message_goes_on_as_its_original_bytes(start_proxy, relay_path):
    """A fragmented message with a ping between its frames, held and forwarded: the server
    gets the very bytes the client sent (the raw relay); the same messages (mitmproxy's)."""
    got = bytearray()

    async def script(reader, writer):
        while chunk := await reader.read(65536):
            got.extend(chunk)

    srv = await raw_server(script)
    port = srv.sockets[0].getsockname()[1]
    proxy = await start_proxy(settings=["wsinspect_intercept=~client /hold this/"])
    _, writer = await raw_client(proxy.port, f"ws://127.0.0.1:{port}/", f"127.0.0.1:{port}")
    sent = (
        frame(TEXT, b"hold ", mask=True, fin=False)
        + frame(PING, b"inside", mask=True)
        + frame(CONTINUATION, b"this", mask=True)
        + frame(TEXT, b"after it", mask=True)
    )
    writer.write(sent)
    [held] = await held_now(proxy)
    await asyncio.sleep(0.2)
    if relay_path == "raw":
        assert bytes(got) == b""  # the ping inside the message travels with it
    else:  # mitmproxy's layer passes the ping on; no message yet
        assert not [e for e in FrameParser(True).feed(bytes(got)) if type(e) is DataMessage]
    proxy.engine.interceptor.decide(held.id, FORWARDED)
    if relay_path == "raw":
        await wait_for(lambda: len(got) >= len(sent), what="the forwarded bytes")
        assert bytes(got) == sent
    else:

        def messages():
            events = FrameParser(True).feed(bytes(got))
            found = [e.payload for e in events if type(e) is DataMessage]
            return found if len(found) == 2 else None

        assert await wait_for(messages, what="the forwarded messages") == [
            b"hold this", b"after it",
        ]
    writer.close()
    srv.close()


async def test_the_app_sets_the_rule_counts_held_messages_and_forwards_them(
    start_proxy, server, relay_path
):
    from textual.widgets import Input

    from wsinspect.ui import WsInspectApp
    from wsinspect.ui.intercept import HeldEditScreen, HeldScreen, RuleScreen

    from .test_ui import SIZE, open_first_session
    from .ui_helpers import screen_text

    port, received, _ = server
    proxy = await start_proxy()
    app = WsInspectApp(proxy.store, proxy.engine)
    async with app.run_test(size=SIZE) as pilot:
        # the keys are palette commands (a binding with a tooltip is one)
        offered = {a.binding.description for a in app.screen.active_bindings.values()
                   if a.binding.tooltip}
        assert {"Intercept", "Held"} <= offered
        await pilot.press("I")
        await wait_for(lambda: isinstance(app.screen, RuleScreen), what="the rule dialog")
        app.screen.query_one(Input).value = "~client /^hold/"
        await pilot.press("enter")
        await wait_for(lambda: "intercept ~client /^hold/" in screen_text(app),
                       what="the rule in the status line")
        async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url) as ws:
            await ws.send("hold one")
            await ws.send("hold two")
            # both at once on the raw relay; mitmproxy's path holds its connection at the first
            held = "2 held (H)" if relay_path == "raw" else "1 held (H)"
            await wait_for(lambda: held in screen_text(app), what="the held count")
            await pilot.press("H")
            await wait_for(lambda: isinstance(app.screen, HeldScreen), what="the held list")
            await wait_for(lambda: "hold one" in screen_text(app), what="the held rows")
            await pilot.press("e")
            await wait_for(lambda: isinstance(app.screen, HeldEditScreen), what="the editor")
            app.screen.query_one(Input).value = "edited one"
            await pilot.press("enter")
            await wait_for(lambda: received == ["edited one"], what="the edited message")
            await wait_for(lambda: "hold one" not in screen_text(app)
                           and "hold two" in screen_text(app), what="the list updated")
            await pilot.press("f")
            await wait_for(lambda: received == ["edited one", "hold two"], what="the forward")
            await pilot.press("escape")
            await wait_for(lambda: "held (H)" not in screen_text(app), what="no held count")
            await proxy.wait_session(lambda s: s.stats.count >= 3)
            await open_first_session(app, pilot)
            await wait_for(lambda: "held:edited" in screen_text(app)
                           and "held:forwarded" in screen_text(app), what="the fates marked")


async def test_a_label_rule_holds_the_json_rpc_calls_it_names(start_proxy, server):
    port, received, _ = server
    proxy = await start_proxy(settings=["wsinspect_intercept=~client label:transfer"])
    call = '{"jsonrpc": "2.0", "method": "%s", "params": [1], "id": %d}'
    async with connect(f"ws://127.0.0.1:{port}/", proxy=proxy.url) as ws:
        await ws.send(call % ("balance", 1))
        await wait_for(lambda: received == [call % ("balance", 1)], what="the first call")
        await ws.send(call % ("transfer", 2))
        [held] = await held_now(proxy)
        assert held.message.payload == (call % ("transfer", 2)).encode()
        proxy.engine.interceptor.decide(held.id, DROPPED)
        await ws.send(call % ("balance", 3))
        await wait_for(lambda: len(received) == 2, what="the call after the dropped one")
        assert received == [call % ("balance", 1), call % ("balance", 3)]


def _stream(messages, from_client):
    """Frames of `messages` (payload, fragments, ping between fragments?), and a ping between
    messages after each odd one."""
    out = b""
    for i, (payload, pieces, ping_inside) in enumerate(messages):
        size = max(1, -(-len(payload) // pieces))
        chunks = [payload[j:j + size] for j in range(0, len(payload), size)] or [b""]
        for n, chunk in enumerate(chunks):
            out += frame(BINARY if n == 0 else CONTINUATION, chunk, mask=from_client,
                         fin=n == len(chunks) - 1)
            if ping_inside and n == 0 and len(chunks) > 1:
                out += frame(PING, b"in", mask=from_client)
        if i % 2:
            out += frame(PING, b"between", mask=from_client)
    return out


def _relay_through_queue(stream, cuts, from_client, held_fates, end=False):
    """Feed `stream` in `cuts`-sized reads through a FrameParser and a HeldQueue holding
    every message whose index is in `held_fates`, deciding them once all is read; `end`:
    then the sender's FIN (what is left goes out)."""
    parser = FrameParser(from_client)
    queue = HeldQueue(from_client, None, 0, True)
    sent, holds, count = [], [], itertools.count()
    index = {}

    def matches(message):
        index[id(message)] = n = next(count)
        return n in held_fates

    def hold(message):
        holds.append(held := Held(len(holds), from_client, message, 0.0))
        return held

    pos, cut = 0, itertools.cycle(cuts)
    while pos < len(stream):
        data = stream[pos:pos + next(cut)]
        pos += len(data)
        events = parser.feed(data)
        steps = queue.take(data, events, matches, hold, parser.at_message_boundary)
        sent += [what for step, what in steps if step == "send"]
    for held in holds:
        fate = held_fates[index[id(held.message)]]
        sent += [what for step, what in queue.decide(held, fate, 1.0, b"new") if step == "send"]
    if end:
        sent += [what for step, what in queue.release_all() if step == "send"]
    return b"".join(sent), queue


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    messages=st.lists(st.tuples(st.binary(max_size=40), st.integers(1, 3), st.booleans()),
                      min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    from_client=st.booleans(),
    fates=st.dictionaries(st.integers(0, 7), st.sampled_from([FORWARDED, EDITED, DROPPED])),
)
def test_the_held_queue_keeps_every_byte_in_order_whatever_the_reads(
    messages, cuts, from_client, fates
):
    stream = _stream(messages, from_client)
    out, queue = _relay_through_queue(stream, cuts, from_client, fates)
    assert queue.idle
    if not fates:
        assert out == stream  # nothing held: the very bytes, however they were read
    got = [e.payload for e in FrameParser(from_client).feed(out) if type(e) is DataMessage]
    expected = []
    for i, (payload, _, _) in enumerate(messages):
        fate = fates.get(i)
        if fate != DROPPED:
            expected.append(b"new" if fate == EDITED else payload)
    assert got == expected
    if all(f == FORWARDED for f in fates.values()):
        # unchanged messages go out as their bytes: only pings between messages moved ahead
        strip = lambda b: [e for e in FrameParser(from_client).feed(b)
                           if type(e) is not Control or e.payload != b"between"]
        assert [(type(e), e.payload) for e in strip(out)] == [
            (type(e), e.payload) for e in strip(stream)
        ]


async def test_messages_are_held_and_edited_over_tls_both_ways(start_proxy, tls_echo_server):
    """wss:// through CONNECT: the relay's sends go through mitmproxy's TLS layers."""
    proxy = await start_proxy(settings=["ssl_insecure=true", "wsinspect_intercept=/^hold/"])
    async with connect(
        f"wss://localhost:{tls_echo_server}/secure", proxy=proxy.url, ssl=proxy.client_ssl()
    ) as ws:
        await ws.send("hold: to the server")
        [held] = await held_now(proxy)
        assert held.from_client
        proxy.engine.interceptor.decide(held.id, EDITED, b"hold: edited")
        # the echo comes back and is held in its turn, from the server
        [echo] = await held_now(proxy)
        assert not echo.from_client and echo.message.payload == b"hold: edited"
        proxy.engine.interceptor.decide(echo.id, FORWARDED)
        assert await asyncio.wait_for(ws.recv(), 5) == "hold: edited"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    messages=st.lists(st.tuples(st.binary(max_size=40), st.integers(1, 3), st.booleans()),
                      max_size=4),
    garbage=st.binary(min_size=1, max_size=60),
    cuts=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    from_client=st.booleans(),
    hold_all=st.booleans(),
)
def test_the_held_queue_lets_broken_streams_through(messages, garbage, cuts, from_client,
                                                     hold_all):
    """Whatever follows the valid frames (the parser may lose the boundaries, or wait for the
    rest of a frame until the sender's FIN), every byte goes out, and nothing held is lost."""
    valid = _stream(messages, from_client)
    stream = valid + garbage
    # a frame with a reserved opcode is no message; it goes on at once all the same
    reserved = frame(0x3, b"odd", mask=from_client)
    out, queue = _relay_through_queue(valid + reserved, cuts, from_client, {})
    assert out == valid + reserved and queue.idle
    fates = dict.fromkeys(range(len(messages) + 8), FORWARDED) if hold_all else {}
    out, _ = _relay_through_queue(stream, cuts, from_client, fates, end=True)
    assert sorted(out) == sorted(stream)  # pings between messages may go ahead
    if not hold_all:
        assert out == stream
