"""Lining up hops into sessions: by Sec-WebSocket-Key, the keyless fallback, and (with
hypothesis) many interleaved handshakes that must never be merged across sessions."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import KEY, make_hop, upgrade_answer, upgrade_request
from wsinspect.correlate import find_session
from wsinspect.model import Hop
from wsinspect.store import SessionStore

LISTENERS = [
    "regular@8080",
    "reverse:http://127.0.0.1:9000@8081",
    "reverse:http://127.0.0.1:9001@127.0.0.1:8082",
]
NGINX = ("127.0.0.1", 80)


def handshake(
    mode: str,
    key: str | None,
    t: float,
    path: str = "/chat",
    agent: str = "client/1",
    answered_at: float | None = None,
) -> Hop:
    """The hop `mode` records of a client's upgrade with `key` (None: a key stripped by a
    proxy, the rest of the handshake kept) to `path`, through nginx, answered at
    `answered_at` (None: still waiting)."""
    headers = upgrade_request(key=key or KEY) + [("User-Agent", agent)]
    if key is None:
        headers = [(name, value) for name, value in headers if name != "Sec-WebSocket-Key"]
    return make_hop(
        f"ws://app.example{path}",
        mode=mode,
        headers=headers,
        t=t,
        server_addr=NGINX,
        status=None if answered_at is None else 101,
        answered_at=answered_at,
    )


def test_keyless_hop_joins_the_one_handshake_waiting_for_an_answer():
    store = SessionStore()
    first = store.add_hop(handshake(LISTENERS[0], None, 100.0))
    after_nginx = handshake(LISTENERS[1], None, 100.01)
    after_nginx.request_headers[0] = ("Host", "127.0.0.1:8081")  # nginx's $proxy_host
    after_nginx.request_headers.append(("X-Forwarded-For", "127.0.0.1"))  # added: fine
    assert store.add_hop(after_nginx) is first and len(first.hops) == 2


def test_a_proxy_that_strips_the_key_still_lines_up():
    store = SessionStore()
    first = store.add_hop(handshake(LISTENERS[0], "a2V5", 100.0))
    assert store.add_hop(handshake(LISTENERS[1], None, 100.01)) is first


def test_keyless_hops_are_not_merged_without_a_single_clear_candidate():
    cases = {
        "other path": [handshake(LISTENERS[0], None, 100.0, "/other")],
        "header changed": [handshake(LISTENERS[0], None, 100.0, agent="x/2")],
        "too late": [handshake(LISTENERS[0], None, 97.0)],
        "already answered": [handshake(LISTENERS[0], None, 100.0, answered_at=100.005)],
        "two waiting": [
            handshake(LISTENERS[0], None, 100.0),
            handshake(LISTENERS[0], None, 100.002, "/elsewhere", agent="x/2"),
        ],
        "same listener": [handshake(LISTENERS[1], None, 100.0)],
    }
    for name, earlier in cases.items():
        store = SessionStore()
        for hop in earlier:
            store.add_hop(hop)
        later = handshake(LISTENERS[1], None, 100.01)
        assert find_session(later, store.sessions()) is None, name


def test_a_key_reused_by_concurrent_clients_is_told_apart_by_path_or_not_merged():
    store = SessionStore()
    a = store.add_hop(handshake(LISTENERS[0], "c2FtZQ==", 100.0, "/a"))
    b = store.add_hop(handshake(LISTENERS[0], "c2FtZQ==", 100.001, "/b"))
    assert store.add_hop(handshake(LISTENERS[1], "c2FtZQ==", 100.01, "/b")) is b
    c = store.add_hop(handshake(LISTENERS[0], "c2FtZQ==", 100.002, "/a"))
    lone = store.add_hop(handshake(LISTENERS[1], "c2FtZQ==", 100.02, "/a"))
    assert lone not in (a, c) and len(lone.hops) == 1  # two sessions could own it
    assert len(a.hops) == len(c.hops) == 1


def test_key_matches_must_be_earlier_and_still_waiting():
    store = SessionStore()
    done = store.add_hop(handshake(LISTENERS[0], "b2xk", 100.0, answered_at=100.5))
    assert store.add_hop(handshake(LISTENERS[1], "b2xk", 101.0)) is not done
    later = store.add_hop(handshake(LISTENERS[1], "bmV3", 200.0))
    assert store.add_hop(handshake(LISTENERS[0], "bmV3", 199.5)) is not later


def test_a_three_listener_chain_is_one_session_in_order():
    store = SessionStore()
    first = store.add_hop(handshake(LISTENERS[0], "Y2hhaW4=", 100.0))
    store.add_hop(handshake(LISTENERS[1], "Y2hhaW4=", 100.01))
    store.add_hop(handshake(LISTENERS[2], "Y2hhaW4=", 100.02))
    assert [h.mode for h in first.hops] == LISTENERS
    assert len(store.sessions()) == 1


# ----- many interleaved handshakes ------------------------------------------------------------


@dataclass
class Client:
    start: float
    chain: int  # listeners it passes, from the first
    key: str | None
    path: str
    agent: str
    delays: list[float]


clients = st.builds(
    Client,
    start=st.floats(0, 3),
    chain=st.integers(1, 3),
    key=st.sampled_from(["a2V5MQ==", "a2V5Mg==", None]),
    path=st.sampled_from(["/a", "/b"]),
    agent=st.sampled_from(["ua/1", "ua/2"]),
    delays=st.lists(st.floats(0.001, 0.2), min_size=3, max_size=3),
)


def replay(population: list[Client]) -> tuple[SessionStore, dict[int, int]]:
    """Feed every client's hops to a store in the order listeners would see them; the
    responses travel back through the chain afterwards. Returns hop id -> client number."""
    events = []
    for number, client in enumerate(population):
        t = client.start
        hops = []
        for position in range(client.chain):
            hop = handshake(LISTENERS[position], client.key, t, client.path, client.agent)
            hops.append(hop)
            events.append((t, 0, number, hop))
            t += client.delays[position]
        for hop in reversed(hops):
            t += 0.01
            events.append((t, 1, number, hop))
    store = SessionStore()
    owner = {}
    for t, kind, number, hop in sorted(events, key=lambda e: (e[0], e[1])):
        if kind == 0:
            store.add_hop(hop)
            owner[hop.id] = number
        else:
            hop.answered(101, "Switching Protocols", upgrade_answer(), "HTTP/1.1", t)
    return store, owner


@settings(max_examples=300, deadline=None)
@given(st.lists(clients, min_size=1, max_size=25))
def test_interleaved_handshakes_are_never_merged_across_clients(population):
    store, owner = replay(population)
    for session in store.sessions():
        assert len({owner[h.id] for h in session.hops}) == 1
        # In path order, each listener once (a hop left unmerged starts a session of its own).
        positions = [LISTENERS.index(h.mode) for h in session.hops]
        assert positions == list(range(positions[0], positions[0] + len(positions)))


@settings(max_examples=300, deadline=None)
@given(st.lists(clients, min_size=1, max_size=25))
def test_with_distinct_keys_every_client_is_exactly_one_session(population):
    for number, client in enumerate(population):
        client.key = f"key-{number}"
    store, owner = replay(population)
    assert len(store.sessions()) == len(population)
    for session in store.sessions():
        client = population[owner[session.first_hop.id]]
        assert len(session.hops) == client.chain
