"""What adding a hop costs on the proxy's event loop, as the store grows.

    .venv/bin/python bench/store_bench.py [--sizes 1000,100000] [--adds 3000] [--repeat 3]

For each size, a store is filled with that many finished sessions (one hop each, a
Sec-WebSocket-Key each, answered), then --adds new handshakes are timed through
`SessionStore.add_hop`: a new keyed session, the same handshake seen by a second listener
(merged by key), and a keyless one, in turn. Per-hop times are printed with their ratio to the
smallest size's, measured in this same process: a ratio near 1 means the cost does not grow with
the store.
"""

from __future__ import annotations

import argparse
import time

from benchkit import make_hop

from wsinspect.model import Hop
from wsinspect.store import SessionStore


def handshake(n: int, start: float, mode: str = "regular", key: bool = True) -> Hop:
    return make_hop(
        f"ws://127.0.0.1:9000/feed/{n}", key=f"key{n:020d}==" if key else None, t=start, mode=mode
    )


def filled_store(sessions: int) -> tuple[SessionStore, float]:
    store = SessionStore()
    t = 1_700_000_000.0
    for n in range(sessions):
        hop = handshake(n, t)
        store.add_hop(hop)
        hop.response_status = 101
        hop.timestamp_response = t + 0.001
        t += 0.01
    return store, t


def per_add(sessions: int, adds: int) -> float:
    """Seconds per add_hop once the store holds `sessions` sessions."""
    store, t = filled_store(sessions)
    hops = []
    for i in range(adds):
        n = sessions + i
        kind = i % 3
        if kind == 0:
            hops.append(handshake(n, t))
        elif kind == 1:  # the previous handshake after a proxy: the second listener's view
            hops.append(handshake(n - 1, t + 0.0005, mode="reverse:http://127.0.0.1:9000@8081"))
        else:
            hops.append(handshake(n, t + 0.001, key=False))
        t += 0.01
    began = time.perf_counter()
    for hop in hops:
        store.add_hop(hop)
    elapsed = time.perf_counter() - began
    merged = sum(1 for s in store.sessions()[sessions:] if len(s.hops) == 2)
    assert merged == (adds + 1) // 3, merged  # every second listener's view joined its session
    return elapsed / adds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--adds", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    baseline = None
    for size in sizes:
        cost = min(per_add(size, args.adds) for _ in range(args.repeat))
        baseline = baseline or cost
        print(f"{size:>8} sessions: add_hop {cost * 1e6:8.1f} µs  ratio {cost / baseline:5.2f}")


if __name__ == "__main__":
    main()
