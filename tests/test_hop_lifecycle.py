"""The hop life cycle (wsinspect.model.Hop's transitions) and the HTTP rules every producer
shares (wsinspect.http_rules): socket-free unit tests."""

from __future__ import annotations

import json

import pytest

from wsinspect.http_rules import (
    as_ws_url,
    authority,
    close_code_reason,
    close_payload,
    end_to_end,
    is_hop_by_hop,
    parse_head,
    parse_status_line,
    request_line_parts,
    ws_url,
)
from wsinspect.model import Close, ConnectionEnd, Hop, Outcome, RecordError, Side


def _hop() -> Hop:
    return Hop(
        mode="regular",
        url="ws://example.test/chat",
        request_line="GET /chat HTTP/1.1",
        http_version="HTTP/1.1",
        request_headers=[("Host", "example.test"), ("Upgrade", "websocket")],
        timestamp_start=100.0,
    )


def test_a_101_answer_keeps_the_hop_open_and_any_other_rejects_it_at_its_end():
    hop = _hop()
    hop.answered(101, "Switching Protocols", [("Upgrade", "websocket")], "HTTP/1.1", 101.0)
    assert (hop.outcome, hop.timestamp_response, hop.timestamp_end) == (Outcome.OPEN, 101.0, None)
    hop = _hop()
    hop.answered(403, "Forbidden", [], "HTTP/1.1", 101.0, finished=101.5)
    assert (hop.outcome, hop.response_status, hop.timestamp_end) == (Outcome.REJECTED, 403, 101.5)
    hop = _hop()
    hop.answered(200, "OK", [], "HTTP/1.1", 102.0)
    assert hop.timestamp_end == 102.0
    hop.validate()


def test_a_refusal_is_the_proxys_own_400():
    hop = _hop()
    hop.refused("", 103.0)
    assert hop.outcome is Outcome.REJECTED
    assert (hop.response_status, hop.response_reason, hop.answered_by) == (400, "Bad Request", "proxy")
    assert (hop.error, hop.timestamp_response, hop.timestamp_end) == ("refused by the proxy", 103.0, 103.0)
    hop.validate()


def test_an_error_before_the_answer_fails_the_hop_and_after_it_ends_the_websocket_abnormally():
    hop = _hop()
    hop.errored("connection refused", 104.0)
    assert (hop.outcome, hop.error, hop.timestamp_end, hop.close) == (
        Outcome.FAILED, "connection refused", 104.0, None
    )
    hop = _hop()
    hop.answered(101, "Switching Protocols", [], "HTTP/1.1", 101.0)
    hop.errored("peer reset", 105.0)
    assert hop.outcome is Outcome.CLOSED
    assert hop.close == Close(abnormal=True, abnormal_reason="peer reset", timestamp=105.0)
    # a close recorded before the error stays what it was
    hop = _hop()
    hop.answered(101, "Switching Protocols", [], "HTTP/1.1", 101.0)
    hop.close = Close(code=1000, by="client", timestamp=104.0)
    hop.errored("peer reset", 105.0)
    assert hop.close.code == 1000 and not hop.close.abnormal


def test_an_end_takes_the_closes_time_and_a_lost_connection_says_which_side_vanished():
    hop = _hop()
    hop.answered(101, "Switching Protocols", [], "HTTP/1.1", 101.0)
    hop.ended(Close.lost("server", 110.0))
    assert (hop.outcome, hop.timestamp_end) == (Outcome.CLOSED, 110.0)
    assert hop.close.abnormal and hop.close.by == "server"
    assert hop.close.abnormal_reason == "the server connection was lost without a close frame"
    assert Close.lost("client", 1.0, "it timed out").abnormal_reason == "it timed out"
    hop.validate()


def test_the_survivor_of_a_close_and_what_it_was_told():
    close = Close.lost("server", 1.0)
    close.told_client = (1000, "")
    assert (close.survivor, close.told_survivor()) == ("client", (1000, ""))
    assert close.told("server") is None
    assert Close(by="proxy").survivor is None and Close(by="proxy").told_survivor() is None


def test_hop_by_hop_headers_include_proxy_ones_and_those_connection_names():
    headers = [
        ("Host", "a"), ("Connection", "Upgrade, X-Trace"), ("Upgrade", "websocket"),
        ("X-Trace", "1"), ("Proxy-Authorization", "Basic x"), ("Keep-Alive", "5"),
        ("Cookie", "c=1"), ("Sec-WebSocket-Key", "k"),
    ]
    assert end_to_end(headers) == [("Host", "a"), ("Cookie", "c=1"), ("Sec-WebSocket-Key", "k")]
    assert end_to_end(headers, drop=("HOST", "sec-websocket-key")) == [("Cookie", "c=1")]
    assert is_hop_by_hop("TE") and is_hop_by_hop("x-a", {"x-a"}) and not is_hop_by_hop("Origin")


def test_a_message_head_keeps_lines_without_a_colon_and_stops_at_the_blank_line():
    head = b"GET /x HTTP/1.1\r\nHost: a \r\nbroken line\r\nX:y:z\r\n\r\nbody: not a header"
    line, headers = parse_head(head)
    assert line == "GET /x HTTP/1.1"
    assert headers == [("Host", "a"), ("broken line", ""), ("X", "y:z")]
    assert request_line_parts(line) == ("GET", "/x", "HTTP/1.1")
    assert request_line_parts("GET") == ("GET", "", "")
    assert request_line_parts("GET /a b HTTP/1.1") == ("GET", "/a", "")
    assert parse_status_line("HTTP/1.1 101 Switching Protocols") == (
        "HTTP/1.1", 101, "Switching Protocols"
    )
    assert parse_status_line("HTTP/1.1 ok") == ("HTTP/1.1", None, "")


def test_websocket_urls():
    assert ws_url(True, "::1", 8443, "/a?b") == "wss://[::1]:8443/a?b"
    assert ws_url(False, "h", 80, "/") == "ws://h:80/"
    assert authority("10.0.0.1", 1) == "10.0.0.1:1"
    assert as_ws_url("https://h/x") == "wss://h/x" and as_ws_url("http://h") == "ws://h"
    assert as_ws_url("wss://h/") == "wss://h/"


@pytest.mark.parametrize(
    ("code", "reason"), [(1000, ""), (4001, "gone away"), (1011, "é ✓")]
)
def test_a_close_payload_reads_back_as_written(code, reason):
    assert close_code_reason(close_payload(code, reason)) == (code, reason)


def test_a_close_payload_without_a_code_and_with_bad_utf8():
    assert close_code_reason(b"") == (None, "")
    assert close_code_reason(b"\x03") == (None, "")
    assert close_code_reason(b"\x03\xe8\xff") == (1000, "\ufffd")


def test_who_closed_is_a_side_written_and_read_as_its_text():
    close = Close(code=1000, by="client", offender="server", timestamp=1.0)
    assert close.by is Side.CLIENT and close.offender is Side.SERVER
    record = json.loads(json.dumps(close.to_json()))
    assert (record["by"], record["offender"]) == ("client", "server")
    assert f"by {close.by}" == "by client"
    read = Close.from_json(record)  # as a capture written before Side existed holds it
    assert read == close and read.by is Side.CLIENT
    with pytest.raises(RecordError, match="close by is not one of client, server, proxy"):
        Close.from_json({**record, "by": "nobody"})
    assert Side.CLIENT.peer is Side.SERVER and Side.PROXY.peer is None
    ends = Close.lost("client", 2.0, "it reset", client_end="reset", server_end="fin")
    assert (ends.client_end, ends.server_end) == (ConnectionEnd.RESET, ConnectionEnd.FIN)
    assert json.loads(json.dumps(ends.to_json()))["client_end"] == "reset"
    with pytest.raises(RecordError, match="close server_end is not one of fin, reset"):
        Close.from_json({**ends.to_json(), "server_end": "rst"})


def test_replay_comparison_and_preflight_statuses_keep_their_text():
    from wsinspect.preflight import Check, Preflight, Status
    from wsinspect.replay import Comparison, Match, compare

    assert [str(m) for m in Match] == ["match", "differ", "missing", "extra"]
    assert compare([], []).counts() == {"match": 0, "differ": 0, "missing": 0, "extra": 0}
    assert Comparison().matched
    preflight = Preflight("", 8080, (Check("forwarding", Status.WARNING, "v6 off"),))
    assert preflight.ok and preflight.warned
    assert preflight.lines()[1].split() == ["WARNING", "forwarding:", "v6", "off"]
