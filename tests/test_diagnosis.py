"""Every diagnosis rule on hand-built handshakes, the header diff, and findings in the report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsinspect import cli, diagnosis
from wsinspect.diagnosis import Change, Severity, boundaries, diagnose, header_diff
from wsinspect.http_rules import is_hop_by_hop
from tests.builders import (
    BACK, FRONT, KEY, SERVER, make_hop, upgrade_answer, upgrade_request,
)
from wsinspect.model import Close, Hop, Message, MessageType, Session, accept_for_key, header_value
from wsinspect.store import SessionStore



def listener_hop(
    mode: str = FRONT,
    headers: list[tuple[str, str]] | None = None,
    status: int | None = 101,
    answer: list[tuple[str, str]] | None = None,
    *,
    server_addr: tuple[str, int] | None = SERVER,
    **fields,
) -> Hop:
    """The hop `mode` records of a handshake with `headers` (default: the plain upgrade
    request), answered with `status` and `answer` (default: the plain 101) — the builders'
    hop in the words of this file's rules."""
    return make_hop(
        mode=mode, headers=headers, status=status, answer=answer, server_addr=server_addr, **fields
    )


def session(*hops: Hop) -> Session:
    return Session(1, list(hops))


def codes(findings) -> list[tuple[str, str, int]]:
    return [(f.code, f.severity.value, f.hop) for f in findings]


# ----- header diff -------------------------------------------------------------------------


def test_header_diff_kept_changed_dropped_added_with_names_in_any_case():
    before = [
        ("Host", "app.example"),
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic eA=="),
        ("X-Trace", "a"),
        ("x-trace", "b"),
        ("Cookie", "s=1"),
    ]
    after = [
        ("host", "127.0.0.1:8081"),
        ("CONNECTION", "close"),
        ("X-TRACE", "a, b"),
        ("cookie", "s=1"),
        ("X-Real-IP", "127.0.0.1"),
    ]
    diff = {c.name.lower(): c for c in header_diff(before, after)}
    assert [c.name for c in header_diff(before, after)] == [
        "Host", "Upgrade", "Connection", "Keep-Alive", "Proxy-Authorization", "X-Trace",
        "Cookie", "X-Real-IP",
    ]
    assert (diff["host"].change, diff["host"].before, diff["host"].after) == (
        Change.CHANGED, "app.example", "127.0.0.1:8081"
    )
    assert diff["connection"].change is Change.CHANGED
    assert diff["connection"].before == "keep-alive, Upgrade"
    assert diff["upgrade"].change is Change.DROPPED and diff["upgrade"].after is None
    assert diff["x-trace"].change is Change.KEPT  # two lines joined compare equal to one
    assert diff["cookie"].change is Change.KEPT
    assert diff["x-real-ip"].change is Change.ADDED and diff["x-real-ip"].before is None
    hop_by_hop = {name for name, c in diff.items() if c.hop_by_hop}
    assert hop_by_hop == {"upgrade", "connection", "keep-alive", "proxy-authorization"}


def test_headers_named_in_connection_are_hop_by_hop():
    diff = header_diff([("Connection", "X-Internal"), ("X-Internal", "1"), ("TE", "trailers")], [])
    assert all(c.hop_by_hop and c.change is Change.DROPPED for c in diff)
    assert not is_hop_by_hop("Sec-WebSocket-Key")
    assert is_hop_by_hop("Trailer") and is_hop_by_hop("proxy-connection")


header_names = st.sampled_from(
    ["Host", "Upgrade", "Connection", "Cookie", "X-A", "X-B", "Sec-WebSocket-Key"]
)
header_lists = st.lists(
    st.tuples(header_names, st.text("abc ,=", max_size=6)), max_size=8
)
spellings = st.sampled_from([str, str.lower, str.upper])


@given(header_lists, header_lists, spellings)
def test_header_diff_accounts_for_every_name_once_and_rebuilds_the_after_side(
    before, after, spell
):
    after = [(spell(k), v) for k, v in after]
    diff = header_diff(before, after)
    names = [c.name.lower() for c in diff]
    assert len(names) == len(set(names))
    assert set(names) == {k.lower() for k, _ in before + after}
    rebuilt = {c.name.lower(): c.after for c in diff if c.change is not Change.DROPPED}
    assert rebuilt == {k.lower(): header_value(after, k) for k, _ in after}
    for c in diff:
        assert (c.change is Change.KEPT) == (c.before is not None and c.before == c.after)
        assert (c.before is None) == (c.change is Change.ADDED)
        assert (c.after is None) == (c.change is Change.DROPPED)


def test_boundaries_diff_requests_forwards_and_responses_backwards():
    front = listener_hop(FRONT, upgrade_request(), 101, [("Server", "nginx"), *upgrade_answer()])
    back = listener_hop(
        BACK, upgrade_request(connection="upgrade"), 101,
        [("Server", "uvicorn"), *upgrade_answer()],
        version="HTTP/1.1", t=100.005,
    )
    (boundary,) = boundaries(session(front, back))
    assert boundary.index == 1 and boundary.http_versions == ("HTTP/1.1", "HTTP/1.1")
    server = next(c for c in boundary.response if c.name == "Server")
    assert (server.before, server.after) == ("uvicorn", "nginx")  # backend's, then nginx's
    connection = next(c for c in boundary.request if c.name == "Connection")
    assert (connection.change, connection.hop_by_hop) == (Change.CHANGED, True)
    pending = listener_hop(BACK, upgrade_request(), None, t=100.005)
    assert boundaries(session(front, pending))[0].response == []


# ----- rules -------------------------------------------------------------------------------


def test_healthy_session_through_a_correctly_configured_proxy_has_no_findings():
    front = listener_hop(FRONT, upgrade_request(), 101, upgrade_answer(connection="upgrade"))
    lowered = upgrade_request(connection="upgrade", names=str.lower)
    back = listener_hop(BACK, lowered, 101, t=100.005)
    for hop in (front, back):
        hop.ended(Close(code=1000, by="client", timestamp=101.0))
    assert diagnose(session(front, back)) == []
    assert diagnose(session(front)) == []
    assert diagnosis.worst([]) is None


def test_upgrade_and_connection_dropped_by_the_proxy_between_hops():
    front = listener_hop(
        FRONT, upgrade_request(connection="keep-alive, Upgrade"), 426, reason="Upgrade Required"
    )
    back = listener_hop(BACK, upgrade_request(upgrade=None, connection="close"), 426, t=100.005)
    findings = diagnose(session(front, back))
    assert codes(findings) == [
        ("upgrade-dropped", "error", 2),
        ("connection-dropped", "error", 2),
        ("handshake-rejected", "error", 2),
    ]
    assert "between hop 1 and hop 2 dropped it" in findings[0].message
    assert "rewrote it to 'close'" in findings[1].message
    # Nothing on the wire tells which proxy it is: the fix is given for each common one.
    assert findings[0].proxy is None
    assert findings[0].fix.startswith("The proxy could not be told from the wire")
    assert "nginx: in the http block:" in findings[0].fix
    assert "proxy_set_header Upgrade $http_upgrade;" in findings[0].fix
    assert "ProxyPass /ws/ http://backend:8000/ws/ upgrade=websocket" in findings[0].fix
    assert "http_upgrade_request_protocols websocket allow all" in findings[0].fix
    assert "upgrade_type: websocket" in findings[0].fix  # Envoy
    assert "the server behind hop 2 at 127.0.0.1:8000" in findings[2].message
    assert diagnosis.worst(findings) is Severity.ERROR


@pytest.mark.parametrize(
    "after, what",
    [
        (None, "dropped the header"),
        ("", "emptied it"),
        ("keep-alive", "rewrote it to 'keep-alive'"),
    ],
)
def test_connection_dropped_variants(after, what):
    front = listener_hop(FRONT, upgrade_request(connection="keep-alive, Upgrade"))
    back = listener_hop(BACK, upgrade_request(connection=after), t=100.005)
    (finding,) = [f for f in diagnose(session(front, back)) if f.code == "connection-dropped"]
    assert what in finding.message and finding.hop == 2


def test_upgrade_token_among_several_and_names_in_other_case_count_as_kept():
    front = listener_hop(FRONT, upgrade_request(connection="keep-alive, Upgrade", names=str.upper))
    back = listener_hop(
        BACK, upgrade_request(upgrade="WebSocket", connection="upgrade", names=str.lower), t=100.005
    )
    assert diagnose(session(front, back)) == []


def test_upgrade_rewritten_to_another_protocol_is_dropped():
    front = listener_hop(FRONT, upgrade_request())
    back = listener_hop(BACK, upgrade_request(upgrade="h2c"), t=100.005)
    (finding,) = diagnose(session(front, back))
    assert finding.code == "upgrade-dropped" and "rewrote it to 'h2c'" in finding.message


def test_http10_upstream_between_hops_and_in_front_of_the_only_hop():
    front = listener_hop(FRONT, upgrade_request(), 505)
    dropped = upgrade_request(upgrade=None, connection="close")
    back = listener_hop(BACK, dropped, 505, version="HTTP/1.0")
    assert codes(diagnose(session(front, back))) == [
        ("upgrade-dropped", "error", 2),
        ("connection-dropped", "error", 2),
        ("http10-upstream", "error", 2),
        ("handshake-rejected", "error", 2),
    ]
    only = listener_hop(BACK, dropped, 505, version="HTTP/1.0")
    findings = diagnose(session(only))
    assert codes(findings) == [
        ("stripped-before-capture", "error", 1),
        ("http10-upstream", "error", 1),
        ("handshake-rejected", "error", 1),
    ]
    # HTTP/1.0 with Connection: close is what a plain nginx proxy_pass sends.
    assert findings[1].proxy == "nginx" and findings[1].fix.startswith("nginx: ")
    assert "proxy_http_version 1.1;" in findings[1].fix
    assert "It is nginx: the request went on as HTTP/1.0 with Connection: close" in (
        findings[1].message
    )


def test_http10_that_still_upgraded_is_a_warning():
    front = listener_hop(FRONT, upgrade_request())
    back = listener_hop(BACK, upgrade_request(), version="HTTP/1.0", t=100.005)
    assert codes(diagnose(session(front, back))) == [("http10-upstream", "warning", 2)]


def test_stripped_before_capture_names_what_is_missing():
    hop = listener_hop(BACK, upgrade_request(upgrade=None, connection="close"), 400)
    finding = diagnose(session(hop))[0]
    assert finding.code == "stripped-before-capture"
    assert "without Upgrade: websocket and Connection: upgrade" in finding.message
    only_connection = listener_hop(BACK, upgrade_request(connection="keep-alive"))
    (finding,) = diagnose(session(only_connection))
    assert "without Connection: upgrade." in finding.message
    # Without Sec-WebSocket-Key and -Version it is no WebSocket client's handshake.
    keyless = listener_hop(BACK, upgrade_request(connection=None, key=None))
    assert diagnose(session(keyless)) == []


def test_rejection_produced_by_the_proxy_between_hops():
    front = listener_hop(FRONT, upgrade_request(), 502, reason="Bad Gateway")
    back = listener_hop(BACK, upgrade_request(), None, t=100.005, error="Connection refused")
    finding, unreachable = diagnose(session(front, back))
    assert codes([finding, unreachable]) == [
        ("handshake-rejected", "error", 1),
        ("server-unreachable", "error", 2),
    ]
    assert "502 Bad Gateway" in finding.message
    assert "the proxy between hop 1 and hop 2 (hop 2 got no answer (Connection refused))" in (
        finding.message
    )
    assert "error.log" in finding.fix
    nginx_answered = listener_hop(BACK, upgrade_request(), 101, t=100.005)
    (finding,) = diagnose(session(front, nginx_answered))
    assert "(hop 2 got 101)" in finding.message


def test_rejection_of_a_single_hop_names_its_server():
    hop = listener_hop(FRONT, status=403, reason="Forbidden", server_addr=("10.0.0.5", 443))
    (finding,) = diagnose(session(hop))
    assert finding.hop == 1
    assert "403 Forbidden" in finding.message
    assert "the server behind hop 1 at 10.0.0.5:443" in finding.message


def test_accept_mismatch_from_the_server_and_from_a_proxy():
    wrong = upgrade_answer(accept="d3Jvbmc=")
    front = listener_hop(FRONT, upgrade_request(), 101, wrong)
    back = listener_hop(BACK, upgrade_request(), 101, wrong, t=100.005)
    (finding,) = diagnose(session(front, back))
    assert (finding.code, finding.hop) == ("accept-mismatch", 2)
    assert "the server behind hop 2" in finding.message
    assert accept_for_key(KEY) in finding.message
    proxy_broke_it = session(front, listener_hop(BACK, upgrade_request(), 101, t=100.005))
    (finding,) = diagnose(proxy_broke_it)
    assert finding.hop == 1 and "the proxy between hop 1 and hop 2" in finding.message
    missing = listener_hop(FRONT, upgrade_request(), 101, [("Upgrade", "websocket")])
    (finding,) = diagnose(session(missing))
    assert "no Sec-WebSocket-Accept" in finding.message


@pytest.mark.parametrize(
    "mode, error, code, what, fix",
    [
        (
            FRONT,
            "[Errno 111] Connect call failed ('127.0.0.1', 8000)",
            "server-unreachable",
            "the connection to 127.0.0.1:8000 was refused",
            "Start the WebSocket server on 127.0.0.1:8000, or point the client at",
        ),
        (
            BACK,
            "[Errno 111] Connect call failed ('127.0.0.1', 9000)",
            "server-unreachable",
            "the connection to 127.0.0.1:9000 was refused",
            "point the reverse listener's target (--mode reverse:http://HOST:PORT@…)",
        ),
        (
            FRONT,
            "[Errno -3] Temporary failure in name resolution",
            "server-unreachable",
            "the name app.example could not be resolved",
            "Use a host name that resolves on the machine wsinspect runs on",
        ),
        (
            FRONT,
            "Certificate verify failed: self-signed certificate",
            "upstream-tls",
            "TLS with 127.0.0.1:8000 failed",
            "--set ssl_insecure=true",
        ),
        (
            FRONT,
            "Client disconnected.",
            "server-timeout",
            "the client gave up after 3.0 s without an answer from 127.0.0.1:8000",
            "a server that accepts connections but never answers",
        ),
        (
            FRONT,
            "[Errno 110] Connection timed out",
            "server-timeout",
            "the connection to 127.0.0.1:8000 timed out after 3.0 s",
            "raise the client's handshake timeout",
        ),
        (
            FRONT,
            "[Errno 104] Connection reset by peer",
            "server-unreachable",
            "127.0.0.1:8000 could not be reached",
            "Check that the server at 127.0.0.1:8000 is up",
        ),
    ],
    ids=["refused", "refused-reverse-target", "dns", "tls", "client-gave-up", "timeout", "other"],
)
def test_a_hop_without_an_answer_is_an_error_naming_what_failed_and_where(
    mode, error, code, what, fix
):
    """What mitmproxy records as flow.error when the server cannot be reached."""
    server_addr = ("127.0.0.1", 9000) if mode == BACK else ("127.0.0.1", 8000)
    if "name resolution" in error:
        server_addr = None  # never resolved, never connected
    hop = listener_hop(mode, upgrade_request(), None, server_addr=server_addr, error=error)
    hop.timestamp_end = hop.timestamp_start + 3.0
    (finding,) = diagnose(session(hop))
    assert (finding.code, finding.severity, finding.hop) == (code, Severity.ERROR, 1)
    assert f"Hop 1 ({mode}) got no answer: {what} ({error})." in finding.message
    assert fix in finding.fix


def test_an_absolute_form_target_that_was_never_connected_is_named_from_the_url():
    hop = listener_hop(FRONT, status=None, server_addr=None, error="[Errno 111] Connect call")
    hop.url = "ws://127.0.0.1:4567/chat"
    (finding,) = diagnose(session(hop))
    assert "the connection to 127.0.0.1:4567 was refused" in finding.message
    hop.url = "wss://secure.example/chat"
    hop.error = "Certificate verify failed: hostname mismatch"
    (finding,) = diagnose(session(hop))
    assert "TLS with secure.example:443 failed" in finding.message
    assert "a name matching secure.example" in finding.fix


def with_traffic(hop: Hop, last_message: float, end: float, abnormal: bool, by="server") -> Hop:
    hop.stats.add(Message(True, MessageType.TEXT, 2, b"hi", last_message))
    hop.ended(Close.lost(by, end) if abnormal else Close(code=1000, by=by, timestamp=end))
    return hop


def test_abnormal_close_without_silence():
    hop = with_traffic(listener_hop(FRONT), 101.3, 101.5, abnormal=True)
    (finding,) = diagnose(session(hop))
    assert codes([finding]) == [("abnormal-close", "warning", 1)]
    assert "the server connection was lost" in finding.message


def test_idle_timeout_names_the_silence_and_nginx_default():
    nginx_101 = upgrade_answer(connection="upgrade") + [("Server", "nginx/1.22.1")]
    front = with_traffic(listener_hop(FRONT, answer=nginx_101), 110.0, 170.2, True)
    back = with_traffic(listener_hop(BACK, t=100.005), 110.0, 170.201, abnormal=True, by="client")
    findings = diagnose(session(front, back))
    assert codes(findings) == [("abnormal-close", "warning", 1), ("idle-timeout", "warning", 1)]
    assert "the proxy between hop 1 and hop 2 cut both sides" in findings[0].message
    idle = findings[1]
    assert "No frame passed for 60.20 s on either side of the proxy between hop 1 and hop 2" in (
        idle.message
    )
    assert "(1 ms apart: hop 1 lost its server, hop 2 its client)" in idle.message
    assert "It is nginx: Server: nginx/1.22.1 on the answer it sent back." in idle.message
    assert "Its idle timeout is proxy_read_timeout (60 s by default)." in idle.message
    assert "60 s matches the default of nginx's proxy_read_timeout (60 s)." in idle.message
    assert idle.proxy == "nginx" and idle.fix.startswith("nginx: ")
    assert "proxy_read_timeout 1h;" in idle.fix and "ping" in idle.fix
    assert findings[0].proxy == "nginx" and "error.log" in findings[0].fix


def test_idle_timeout_judged_across_the_hops_with_no_fixed_threshold():
    """A proxy's 2 s timeout measured 1.81 s of silence at hop 1 (its last frame came later
    than hop 2's): the cut across both hops is the signature, and the silence is reported."""
    front = with_traffic(listener_hop(FRONT), 110.19, 112.0, abnormal=True, by="server")
    back = with_traffic(listener_hop(BACK, t=100.005), 110.0, 112.002, abnormal=True, by="client")
    findings = diagnose(session(front, back))
    assert codes(findings) == [("abnormal-close", "warning", 1), ("idle-timeout", "warning", 1)]
    assert "No frame passed for 1.81 s on either side" in findings[1].message
    # The proxy could not be told: every common proxy's setting and default is named.
    assert "nginx proxy_read_timeout 60 s" in findings[1].message
    assert "Apache httpd 2.4 Timeout 60 s" in findings[1].message
    assert "HAProxy timeout tunnel," in findings[1].message
    assert "squid read_timeout 15 min" in findings[1].message
    assert findings[1].fix.startswith("The proxy could not be told from the wire")
    assert "timeout tunnel 1h" in findings[1].fix and "read_timeout 1h" in findings[1].fix
    # Connections that ended apart were not cut by one proxy; a short silence at a single
    # hop is no idle timeout.
    apart = with_traffic(listener_hop(BACK, t=100.005), 110.0, 113.0, abnormal=True, by="client")
    front_short = with_traffic(listener_hop(FRONT), 111.5, 112.0, abnormal=True, by="server")
    assert codes(diagnose(session(front_short, apart))) == [("abnormal-close", "warning", 1)]
    # A backend that crashed: hop 2 lost its server, not its client; no cut by the proxy.
    crashed = with_traffic(listener_hop(BACK, t=100.005), 110.0, 112.0, abnormal=True, by="server")
    assert codes(diagnose(session(front, crashed))) == [("abnormal-close", "warning", 1)]


def test_idle_timeout_counts_from_the_handshake_without_messages():
    hop = listener_hop(FRONT, close=Close(by="server", abnormal=True, timestamp=105.01))
    finding = diagnose(session(hop))[-1]
    assert finding.code == "idle-timeout" and "No frame passed for 5.00 s" in finding.message
    assert "matches the default" not in finding.message


def test_a_client_hanging_up_after_silence_is_no_idle_timeout_unless_it_is_a_proxy():
    direct = with_traffic(listener_hop(FRONT), 101.0, 130.0, abnormal=True, by="client")
    assert codes(diagnose(session(direct))) == [("abnormal-close", "warning", 1)]
    behind_nginx = with_traffic(listener_hop(BACK), 101.0, 130.0, abnormal=True, by="client")
    assert codes(diagnose(session(behind_nginx))) == [
        ("abnormal-close", "warning", 1),
        ("idle-timeout", "warning", 1),
    ]


def test_clean_close_after_silence_is_no_finding():
    hop = with_traffic(listener_hop(FRONT), 101.0, 200.0, abnormal=False)
    assert diagnose(session(hop)) == []


def test_host_changed_is_information_only():
    front = listener_hop(FRONT, upgrade_request(host="app.example"))
    back = listener_hop(BACK, upgrade_request(host="127.0.0.1:8081"), t=100.005)
    (finding,) = diagnose(session(front, back))
    assert codes([finding]) == [("host-changed", "info", 2)]
    assert "proxy_set_header Host $http_host;" in finding.fix
    same_but_case = listener_hop(BACK, upgrade_request(host="APP.example"), t=100.005)
    assert diagnose(session(front, same_but_case)) == []


# ----- in the report and the command line ----------------------------------------------------


def capture(path, *sessions_hops: list[Hop]):
    store = SessionStore(path)
    for hops in sessions_hops:
        for hop in hops:
            store.add_hop(hop)
    store.close()
    return path


def test_findings_in_the_json_and_text_report(tmp_path, capsys):
    key = "a2V5LWZvci1yZXBvcnQ="
    nginx = [("Server", "nginx/1.22.1")]
    front = listener_hop(FRONT, upgrade_request(key=key), 426, nginx, reason="Upgrade Required")
    dropped = upgrade_request(upgrade=None, connection="close", key=key)
    back = listener_hop(BACK, dropped, 426, t=100.005)
    path = capture(tmp_path / "c.db", [front, back])
    assert cli.main(["report", str(path), "--json"]) == 0
    (reported,) = json.loads(capsys.readouterr().out)["sessions"]
    assert len(reported["hops"]) == 2
    assert [f["code"] for f in reported["findings"]] == [
        "upgrade-dropped", "connection-dropped", "handshake-rejected",
    ]
    assert set(reported["findings"][0]) == {"code", "severity", "hop", "message", "fix", "proxy"}
    assert reported["findings"][0]["proxy"] == "nginx"
    assert reported["findings"][0]["severity"] == "error" and reported["findings"][0]["hop"] == 2
    assert cli.main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    assert "  error upgrade-dropped (hop 2): Hop 1 received Upgrade: websocket" in text
    assert "    fix: nginx: in the http block:" in text
    assert "             proxy_set_header Upgrade $http_upgrade;" in text
    assert "hop 1 -> 2 request: dropped Upgrade*; changed Connection* 'Upgrade' -> 'close'" in text
    assert text.count("proxy_set_header Upgrade") == 1  # the same fix is printed once
    assert "  error connection-dropped (hop 2): " in text and "    fix: as above" in text


def test_diagnosis_imports_without_textual():
    code = (
        "import sys, wsinspect.diagnosis, wsinspect.correlate; "
        "assert 'textual' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fail_on_exit_codes(tmp_path, capsys):
    healthy = capture(tmp_path / "healthy.db", [listener_hop(FRONT)])
    warning = capture(
        tmp_path / "warning.db", [with_traffic(listener_hop(FRONT), 101.0, 101.5, abnormal=True)]
    )
    error = capture(tmp_path / "error.db", [listener_hop(FRONT, status=502)])
    assert cli.main(["report", str(healthy), "--fail-on", "warning"]) == 0
    assert cli.main(["report", str(warning), "--fail-on", "error"]) == 0
    assert cli.main(["report", str(warning), "--fail-on", "warning"]) == 1
    assert cli.main(["report", str(error), "--json", "--fail-on", "error"]) == 1
    assert cli.main(["report", str(error)]) == 0  # without --fail-on, findings do not fail
    assert cli.main(["report", str(tmp_path / "missing.db"), "--fail-on", "error"]) == 2
    with pytest.raises(SystemExit) as exit:
        cli.main(["report", str(healthy), "--fail-on", "sometimes"])
    assert exit.value.code == 2
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
