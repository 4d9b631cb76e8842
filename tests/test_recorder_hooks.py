"""The recorder's hooks, one by one, without a socket: mitmproxy's own test helpers (`taddons`
runs the addon in a Master with its options; `tflow` builds flows) drive each hook the way
mitmproxy would, and the store shows what was recorded. The real-socket tests
(test_recorder.py, test_seams.py) prove that mitmproxy calls these hooks as assumed here."""

from __future__ import annotations

import logging

import pytest
from mitmproxy import http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.connection import Server
from mitmproxy.flow import Error
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from wsinspect import seams, wire
from wsinspect.model import ConnectionEnd, MessageType, Outcome, SideEnd
from wsinspect.recorder import Recorder
from wsinspect.store import DEFAULT_MAX_PAYLOAD, SessionStore


@pytest.fixture
def store():
    store = SessionStore()
    yield store
    store.close()


@pytest.fixture
def recorder(store):
    recorder = Recorder(store)
    with taddons.context(recorder) as tctx:
        recorder.tctx = tctx
        yield recorder
        recorder.done()


def only_hop(store: SessionStore):
    (session,) = store.sessions()
    (hop,) = session.hops
    return hop


def messages(store: SessionStore, hop) -> list:
    store.flush()
    return list(store.iter_messages(hop.id))


def plain_request_flow() -> http.HTTPFlow:
    return tflow.tflow()  # GET http://address:22/path, no Upgrade


def upgrade_flow(**kwargs) -> http.HTTPFlow:
    flow = tflow.twebsocketflow(**kwargs)
    flow.websocket.messages = []  # as at the 101: messages arrive through the message hook
    return flow


# ----- options: load and configure ----------------------------------------------------------


def test_load_declares_the_options_with_their_defaults(recorder):
    options = recorder.tctx.options
    assert options.wsinspect_capture == ""
    assert options.wsinspect_max_payload == DEFAULT_MAX_PAYLOAD
    assert options.wsinspect_relay == "raw"
    assert options.wsinspect_trim is True


def test_the_relay_default_comes_from_the_constructor(store):
    recorder = Recorder(store, relay="mitmproxy")
    with taddons.context(recorder) as tctx:
        assert tctx.options.wsinspect_relay == "mitmproxy"
        assert recorder.relay_path() == "mitmproxy"
        recorder.done()


def test_configure_applies_the_relay_and_the_payload_cap(recorder, store):
    recorder.tctx.configure(recorder, wsinspect_relay="mitmproxy", wsinspect_max_payload=10)
    assert recorder.relay_path() == "mitmproxy"
    assert store.max_payload == recorder.max_payload() == 10
    recorder.tctx.configure(recorder, wsinspect_relay="raw")
    assert recorder.relay_path() == "raw"


def test_an_addon_without_a_store_opens_the_capture_the_options_name(tmp_path):
    path = tmp_path / "capture.db"
    recorder = Recorder()
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, wsinspect_capture=str(path), wsinspect_max_payload=64)
        assert recorder.store.path == path and recorder.store.max_payload == 64
        flow = upgrade_flow()
        recorder.request(flow)
        recorder.done()  # its own store: closed
    (session,) = SessionStore.open(path).sessions()
    assert session.first_hop.url == "ws://example.com/ws"


def test_a_reverse_listener_without_keep_host_header_is_warned_about(store, caplog):
    recorder = Recorder(store)
    with taddons.context(Proxyserver(), recorder) as tctx:  # it declares keep_host_header
        with caplog.at_level(logging.WARNING, logger="wsinspect"):
            tctx.configure(recorder, mode=["reverse:http://127.0.0.1:9"])
        assert "--set keep_host_header=true" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="wsinspect"):
            tctx.configure(recorder, keep_host_header=True)
            tctx.configure(recorder, mode=["regular"], keep_host_header=False)
        assert [r.message for r in caplog.records if r.name == "wsinspect"] == []
        recorder.done()


# ----- the handshake: request, response, error -------------------------------------------------


def test_a_request_without_upgrade_is_not_recorded(recorder, store):
    flow = plain_request_flow()
    recorder.request(flow)
    recorder.response(flow)
    assert store.sessions() == []


def test_an_upgrade_request_and_its_101_make_an_open_hop(recorder, store):
    flow = upgrade_flow()
    recorder.request(flow)
    hop = only_hop(store)
    assert (hop.mode, hop.url, hop.outcome) == ("regular", "ws://example.com/ws", Outcome.OPEN)
    # a regular proxy's client sent the absolute form; mitmproxy's flow holds the origin form
    assert hop.request_line == "GET http://example.com/ws HTTP/1.1"
    assert ("sec-websocket-key", "1234") in hop.request_headers
    assert hop.response_status is None and hop.flow_id == flow.id
    recorder.request(flow)  # a hook run twice (e.g. a replayed flow) adds nothing
    recorder.response(flow)
    hop = only_hop(store)
    assert (hop.response_status, hop.response_reason, hop.response_http_version) == (
        101, "Switching Protocols", "HTTP/1.1"
    )
    assert hop.timestamp_response == 946681202 and hop.outcome == Outcome.OPEN


def test_a_regular_proxy_records_the_absolute_form_unless_tunnelled(recorder, store):
    direct, tunnelled = upgrade_flow(), upgrade_flow()
    recorder.http_connect(tunnelled)  # its client connection sent CONNECT first
    recorder.request(direct)
    recorder.request(tunnelled)
    lines = sorted(h.request_line for s in store.sessions() for h in s.hops)
    assert lines == ["GET /ws HTTP/1.1", "GET http://example.com/ws HTTP/1.1"]
    recorder.client_disconnected(tunnelled.client_conn)
    again = upgrade_flow()
    again.client_conn = tunnelled.client_conn  # the same connection, no CONNECT remembered
    recorder.request(again)
    assert sum(
        h.request_line.startswith("GET http://") for s in store.sessions() for h in s.hops
    ) == 2


def test_an_answer_other_than_101_ends_the_hop_as_rejected(recorder, store):
    flow = upgrade_flow()
    recorder.request(flow)
    flow.response = http.Response.make(403, b"go away", {"Content-Type": "text/plain"})
    flow.response.timestamp_end = 946681300
    recorder.response(flow)
    hop = only_hop(store)
    assert (hop.response_status, hop.response_reason, hop.outcome) == (
        403, "Forbidden", Outcome.REJECTED
    )
    assert hop.timestamp_end == 946681300
    assert ("Content-Type", "text/plain") in hop.response_headers


def test_an_error_before_the_answer_fails_the_hop(recorder, store):
    flow = upgrade_flow()
    flow.response = None
    recorder.request(flow)
    flow.error = Error("Connection refused")
    recorder.error(flow)
    hop = only_hop(store)
    assert (hop.outcome, hop.error, hop.close) == (Outcome.FAILED, "Connection refused", None)
    assert hop.timestamp_end is not None


def test_an_error_after_the_101_closes_the_hop_abnormally(recorder, store):
    flow = upgrade_flow()
    recorder.request(flow)
    recorder.response(flow)
    flow.error = Error("peer reset")
    recorder.error(flow)
    hop = only_hop(store)
    assert hop.outcome == Outcome.CLOSED and hop.error == "peer reset"
    assert hop.close.abnormal and hop.close.abnormal_reason == "peer reset"


def test_an_upgrade_the_proxy_refused_before_any_hook_is_a_proxy_answer(recorder, store):
    flow = upgrade_flow()
    flow.response = None
    flow.error = Error("Invalid HTTP request")
    recorder.error(flow)  # no request hook ran for it
    hop = only_hop(store)
    assert (hop.outcome, hop.response_status, hop.answered_by, hop.error) == (
        Outcome.REJECTED, 400, "proxy", "Invalid HTTP request"
    )
    recorder.error(plain_request_flow())  # an error of a plain request: not ours
    assert len(store.sessions()) == 1


def test_a_connect_that_reached_no_server_is_a_failed_hop(recorder, store):
    flow = tflow.tflow(resp=True)
    flow.request.method = "CONNECT"
    flow.request.authority = "example.com:443"
    flow.response = http.Response.make(502, b"")
    recorder.http_connect_error(flow)
    assert store.sessions() == []  # the server connection had no error: refused otherwise
    flow.server_conn = Server(address=("example.com", 443), error="Connection refused")
    recorder.http_connect_error(flow)
    hop = only_hop(store)
    assert (hop.url, hop.outcome, hop.response_status) == (
        "example.com:443", Outcome.FAILED, None
    )
    assert hop.request_line.startswith("CONNECT example.com:443 ")
    assert hop.error == "Connection refused; the client got 502 Bad Gateway for its CONNECT"


def test_a_request_head_the_parser_refused_is_recorded_as_the_client_sent_it(recorder, store):
    client = tflow.tclient_conn()
    client.proxy_mode = ProxyMode.parse("regular@8080")
    head = b"GET /chat HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\nBad Header\r\n\r\n"
    recorder.on_refused_request(client, head, "invalid header")
    hop = only_hop(store)
    assert (hop.mode, hop.url, hop.request_line, hop.http_version) == (
        "regular@8080", "ws://app.example/chat", "GET /chat HTTP/1.1", "HTTP/1.1"
    )
    assert hop.request_headers[:3] == [
        ("Host", "app.example"), ("Upgrade", "websocket"), ("Bad Header", "")
    ]
    assert (hop.outcome, hop.answered_by, hop.error) == (Outcome.REJECTED, "proxy", "invalid header")


# ----- the WebSocket through mitmproxy's layer: start, message, end ----------------------------


def started(recorder) -> http.HTTPFlow:
    flow = upgrade_flow()
    recorder.request(flow)
    recorder.response(flow)
    recorder.websocket_start(flow)
    return flow


def test_websocket_start_taps_both_connections_until_the_end(recorder, store):
    flow = started(recorder)
    hop = only_hop(store)
    assert recorder.live_flow(hop.id) is flow
    taps = seams.frame_taps()
    assert taps[flow.client_conn.id] is recorder and taps[flow.server_conn.id] is recorder
    recorder.websocket_end(flow)
    assert recorder.live_flow(hop.id) is None
    assert flow.client_conn.id not in taps and flow.server_conn.id not in taps


def test_websocket_start_records_a_flow_it_missed_the_handshake_of(recorder, store):
    flow = upgrade_flow()  # e.g. it began before the script was reloaded
    recorder.websocket_start(flow)
    hop = only_hop(store)
    assert hop.response_status == 101 and hop.outcome == Outcome.OPEN


@pytest.mark.parametrize("trim", [True, False])
def test_each_message_is_recorded_and_trimmed_from_the_flow_when_asked(recorder, store, trim):
    recorder.tctx.configure(recorder, wsinspect_trim=trim)
    flow = started(recorder)
    sent = [
        WebSocketMessage(Opcode.TEXT, True, b"hello", 946681204),
        WebSocketMessage(Opcode.BINARY, False, b"\x00\xff", 946681205),
        WebSocketMessage(Opcode.TEXT, True, b"injected", 946681206, injected=True),
    ]
    for message in sent:
        flow.websocket.messages.append(message)
        recorder.websocket_message(flow)
    recorded = messages(store, only_hop(store))
    assert [(m.from_client, m.type, m.payload, m.timestamp, m.injected) for m in recorded] == [
        (True, MessageType.TEXT, b"hello", 946681204, False),
        (False, MessageType.BINARY, b"\x00\xff", 946681205, False),
        (True, MessageType.TEXT, b"injected", 946681206, True),
    ]
    assert flow.websocket.messages == (sent[-1:] if trim else sent)


def test_a_payload_over_the_cap_keeps_its_size_and_hash(recorder, store):
    recorder.tctx.configure(recorder, wsinspect_max_payload=4)
    flow = started(recorder)
    flow.websocket.messages.append(WebSocketMessage(Opcode.TEXT, True, b"0123456789", 1.0))
    recorder.websocket_message(flow)
    (message,) = messages(store, only_hop(store))
    assert (message.size, message.payload, message.truncated) == (10, b"0123", True)
    assert message.sha256 is not None


def test_a_close_frame_ends_the_hop_with_its_code_and_side(recorder, store):
    flow = started(recorder)
    flow.websocket.close_code, flow.websocket.close_reason = 1001, "going away"
    flow.websocket.closed_by_client = True
    recorder.websocket_end(flow)
    hop = only_hop(store)
    assert hop.outcome == Outcome.CLOSED and hop.timestamp_end == 946681205
    assert (hop.close.by, hop.close.code, hop.close.reason, hop.close.abnormal) == (
        "client", 1001, "going away", False
    )


def test_a_connection_lost_without_a_close_frame_is_an_abnormal_close(recorder, store):
    flow = started(recorder)
    flow.websocket.close_code = 1006
    recorder.websocket_end(flow)
    close = only_hop(store).close
    assert close.abnormal and close.code is None
    assert close.abnormal_reason == "the server connection was lost without a close frame"


def test_how_a_vanished_side_ended_and_what_each_side_sent_and_was_told(recorder, store):
    """Under mitmproxy's relay: the seams report the reset of the side that vanished and the
    close frames the proxy sent; the proxy closes the survivor's connection with a FIN."""
    flow = started(recorder)
    recorder.on_connection_end(flow.server_conn.id, "reset")
    recorder.on_close_sent(flow.client_conn.id, True, 1000, "")
    flow.websocket.close_code = 1006
    recorder.websocket_end(flow)
    close = only_hop(store).close
    assert close.abnormal_reason == (
        "the server connection was lost without a close frame: the server reset the connection"
    )
    assert close.end_of("server") == SideEnd(None, None, ConnectionEnd.RESET, None)
    assert close.end_of("client") == SideEnd(None, (1000, ""), None, ConnectionEnd.FIN)


def test_a_close_frame_each_side_sent_is_recorded_as_its_own(recorder, store):
    from wsproto import events

    flow = started(recorder)
    recorder.on_frame_event(
        flow.client_conn.id, True, events.CloseConnection(code=1000, reason="bye"), False
    )
    # an answer without a status code, which wsproto reports as 1005 (never sent on the wire)
    recorder.on_frame_event(flow.server_conn.id, False, events.CloseConnection(code=1005), False)
    flow.websocket.close_code, flow.websocket.close_reason = 1000, "bye"
    flow.websocket.closed_by_client = True
    recorder.websocket_end(flow)
    close = only_hop(store).close
    assert (close.client_sent, close.server_sent) == ((1000, "bye"), (None, ""))
    assert (close.told_client_end, close.told_server_end) == ("fin", "fin")


def test_frames_the_message_hook_misses_come_from_the_frame_tap(recorder, store):
    import wsproto.events as events

    flow = started(recorder)
    recorder.on_frame_event(flow.client_conn.id, True, events.Ping(b"p1"), False)
    recorder.on_frame_event(flow.server_conn.id, False, events.Pong(b"p1"), False)
    recorder.on_frame_event(flow.client_conn.id, True, events.CloseConnection(1000, "bye"), False)
    recorder.on_frame_event(flow.server_conn.id, False, events.CloseConnection(1006), False)
    recorder.on_close_sent(flow.client_conn.id, True, 1000, "bye")
    recorder.on_frame_event("another connection", True, events.Ping(b"x"), False)
    recorded = messages(store, only_hop(store))
    assert [(m.from_client, m.type, m.payload) for m in recorded] == [
        (True, MessageType.PING, b"p1"),
        (False, MessageType.PONG, b"p1"),
        (True, MessageType.CLOSE, b"\x03\xe8bye"),
    ]
    recorder.websocket_end(flow)
    assert only_hop(store).close.told_client == (1000, "bye")


def test_a_protocol_error_is_the_proxys_close_naming_the_offender(recorder, store):
    import wsproto.events as events

    flow = started(recorder)
    recorder.on_frame_event(
        flow.server_conn.id, False, events.CloseConnection(1002, "bad opcode"), True
    )
    assert messages(store, only_hop(store)) == []
    recorder.websocket_end(flow)
    close = only_hop(store).close
    assert (close.by, close.offender, close.code, close.reason) == (
        "proxy", "server", 1002, "bad opcode"
    )


# ----- the WebSocket through the raw relay: wire events and its end ------------------------------


def control(from_client: bool, opcode: int, payload: bytes, t: float) -> wire.Control:
    return wire.Control(from_client, t, 0, True, opcode, payload)


def test_wire_events_become_messages_and_pongs_get_their_ping_rtt(recorder, store):
    flow = started(recorder)
    recorder.on_wire_events(flow, [
        wire.DataMessage(True, 10.0, 0, True, "text", 5, b"hello", None, False, 1, 10.0),
        control(True, wire.PING, b"a", 11.0),
        control(True, wire.PING, b"b", 11.5),
        control(False, wire.PONG, b"b", 12.0),  # answers the ping with its payload
        control(False, wire.PONG, b"z", 12.5),  # answers none by payload: the oldest
        wire.DataMessage(False, 13.0, 0, True, "binary", 9, b"abc", "ff" * 32, False, 3, 12.9),
    ])  # fmt: skip
    recorder.on_injected(flow, True, True, b"resent")
    recorded = messages(store, only_hop(store))
    assert [(m.type, m.payload, m.rtt) for m in recorded] == [
        (MessageType.TEXT, b"hello", None),
        (MessageType.PING, b"a", None),
        (MessageType.PING, b"b", None),
        (MessageType.PONG, b"b", 0.5),
        (MessageType.PONG, b"z", 1.5),
        (MessageType.BINARY, b"abc", None),
        (MessageType.TEXT, b"resent", None),
    ]
    assert (recorded[5].size, recorded[5].sha256) == (9, "ff" * 32)
    assert recorded[-1].injected


def test_the_raw_relays_end_takes_the_first_close_frame_and_what_each_side_was_told(
    recorder, store
):
    flow = started(recorder)
    recorder.on_wire_events(flow, [
        control(False, wire.CLOSE, b"\x03\xe9later", 20.0),
        control(True, wire.CLOSE, b"\x03\xe8", 20.1),
        control(False, wire.CLOSE, b"\x03\xeaignored", 20.2),  # a side's second close
    ])  # fmt: skip
    recorder.on_relay_end(flow, seams.RelayEnd("server", "fin", "fin", 21.0))
    hop = only_hop(store)
    assert (hop.outcome, hop.timestamp_end) == (Outcome.CLOSED, 21.0)
    close = hop.close
    assert (close.by, close.code, close.reason) == ("server", 1001, "later")
    assert (close.told_client, close.told_server) == ((1001, "later"), (1000, ""))
    assert (close.client_end, close.server_end) == ("fin", "fin")
    assert (flow.websocket.close_code, flow.websocket.closed_by_client) == (1001, False)


def test_the_raw_relays_end_without_a_close_frame_says_who_hung_up_how(recorder, store):
    flow = started(recorder)
    recorder.on_wire_events(flow, [
        wire.Violation(True, 30.0, 0, False, "RFC 6455 5.2: reserved bits", "RSV2 set", 1),
    ])  # fmt: skip
    recorder.on_relay_end(flow, seams.RelayEnd("client", "fin", "reset", 31.0))
    hop = only_hop(store)
    assert [v.rule for v in hop.violations] == ["RFC 6455 5.2: reserved bits"]
    close = hop.close
    assert close.by == "client" and close.abnormal and close.offender == "client"
    assert close.abnormal_reason == (
        "the client closed the connection (FIN) without a close frame; wsinspect passed the "
        "same FIN on to the server; then the server reset the connection, passed on to the client"
    )
    assert flow.websocket.close_code == 1006
