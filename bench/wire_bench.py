"""Speed and memory of the passive frame parser (wsinspect.wire), against wsproto in this process.

    .venv/bin/python bench/wire_bench.py [--quick] [--gib 1]

Unmasking: MB/s of `wire.unmask` (websockets' C extension when installed) and of its
pure-Python fallback at 64 B, 1 KiB and 1 MiB, beside wsproto's masker (what mitmproxy's
WebSocket layer runs).
Parsing: one direction of a session (client frames masked, server frames not; deflate on or
off) is built by wsproto's own sender and fed in 64 KiB reads, as the relay reads it, to a
`FrameParser` and to a wsproto receiver: µs per message at 64 B and 1 KiB, MB/s at 1 MiB.
Memory: one message of --gib GiB streamed in 64 KiB reads in a child process: the traced
peak and the resident-set growth, against the 16 MiB + cap the relay allows.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from wsproto import ConnectionType, WSConnection
from wsproto import events as wse
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import XorMaskerSimple

from wsinspect import wire
from wsinspect.wire import Deflate, FrameParser, negotiated_deflate, unmask

READ = 64 * 1024


def best_of(fn, repeat: int = 5) -> float:
    """The fastest of `repeat` runs of fn(), in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_unmask(quick: bool) -> None:
    print("unmask, MB/s (ratio: wire.unmask against wsproto's masker)")
    print(f"  wire.unmask is {'websockets C extension' if wire.unmask_c else 'pure Python'}")
    rng = random.Random(1)
    key = rng.randbytes(4)
    for size, label in ((64, "64 B"), (1024, "1 KiB"), (1 << 20, "1 MiB")):
        data = rng.randbytes(size)
        loops = max(1, (4 << 20 if quick else 32 << 20) // size)
        assert wire.unmask(data, key) == wire.unmask_python(data, key) == XorMaskerSimple(
            key).process(data)
        rates = {}
        for name, fn in (("wire", wire.unmask), ("python", wire.unmask_python),
                         ("wsproto", lambda d, k: XorMaskerSimple(k).process(d))):
            def run(fn=fn):
                for _ in range(loops):
                    fn(data, key)

            rates[name] = size * loops / best_of(run) / 1e6
        print(f"  {label:>6}: wire {rates['wire']:8.0f}   pure-Python fallback "
              f"{rates['python']:6.0f}   wsproto {rates['wsproto']:6.0f}   "
              f"ratio {rates['wire'] / rates['wsproto']:6.1f}x")


def wsproto_pair(deflate: bool) -> tuple[WSConnection, WSConnection, Deflate | None]:
    """A wsproto client and server after an in-memory handshake, and what it negotiated."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    extensions = [PerMessageDeflate()] if deflate else []
    server.receive_data(client.send(wse.Request(host="bench", target="/",
                                                extensions=extensions)))
    list(server.events())
    response = server.send(wse.AcceptConnection(
        extensions=[PerMessageDeflate()] if deflate else []))
    client.receive_data(response)
    list(client.events())
    head = response.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")[1:]
    negotiated = negotiated_deflate([tuple(line.split(": ", 1)) for line in head])
    assert (negotiated is not None) == deflate
    return client, server, negotiated


def json_like(size: int, rng: random.Random) -> str:
    """Text that compresses like typical JSON traffic (about 3:1)."""
    parts, n = [], 0
    while n < size:
        part = (f'{{"id":{rng.randint(0, 10**6)},"px":{rng.random():.6f},'
                f'"sym":"S{rng.randint(0, 99)}"}}')
        parts.append(part)
        n += len(part)
    return "".join(parts)[:size]


def bench_parser(quick: bool) -> None:
    print("parser, one direction fed in 64 KiB reads (ratio: wsproto's time / wire's time)")
    rng = random.Random(2)
    for size, label, count in ((64, "64 B", 20000), (1024, "1 KiB", 10000),
                               (1 << 20, "1 MiB", 24)):
        if quick:
            count = max(4, count // 5)
        texts = [json_like(size, rng) for _ in range(min(count, 50))]
        for masked in (True, False):
            for deflate in (False, True):
                client, server, negotiated = wsproto_pair(deflate)
                sender, receiver = (client, server) if masked else (server, client)
                stream = b"".join(sender.send(wse.TextMessage(texts[i % len(texts)]))
                                  for i in range(count))
                reads = [stream[i:i + READ] for i in range(0, len(stream), READ)]

                def ours():
                    parser = FrameParser(masked, negotiated)
                    messages = 0
                    for data in reads:
                        messages += len(parser.feed(data, 0.0))
                    assert messages == count, messages

                def baseline():
                    fresh_client, fresh_server, _ = wsproto_pair(deflate)
                    fresh = fresh_server if masked else fresh_client
                    for data in reads:
                        fresh.receive_data(data)
                        for _ in fresh.events():
                            pass

                repeat = 3 if size > 1024 else 5
                t_wire, t_wsproto = best_of(ours, repeat), best_of(baseline, repeat)
                what = f"{label:>6} {'masked' if masked else 'unmasked':>8} " \
                       f"{'deflate' if deflate else 'plain':>7}"
                if size > 1024:
                    print(f"  {what}: wire {size * count / t_wire / 1e6:7.0f} MB/s   "
                          f"wsproto {size * count / t_wsproto / 1e6:7.0f} MB/s   "
                          f"ratio {t_wsproto / t_wire:5.2f}x")
                else:
                    print(f"  {what}: wire {t_wire / count * 1e6:6.2f} µs/msg   "
                          f"wsproto {t_wsproto / count * 1e6:6.2f} µs/msg   "
                          f"ratio {t_wsproto / t_wire:5.2f}x")
                del sender, receiver


def rss() -> tuple[int, int]:
    """(current, peak) resident set of this process, in bytes."""
    status = Path("/proc/self/status").read_text()
    return tuple(int(re.search(rf"{name}:\s+(\d+) kB", status).group(1)) * 1024
                 for name in ("VmRSS", "VmHWM"))


def memory_child(gib: float) -> None:
    """Stream one masked message of `gib` GiB through a parser; print the figures."""
    cap = 16 << 20
    key = b"\x1f\x2e\x3d\x4c"
    plain = random.Random(3).randbytes(READ)
    masked = unmask(plain, key)  # every 64 KiB read starts at key phase 0
    count = int(gib * (1 << 30)) // READ
    size = count * READ
    parser = FrameParser(True, max_payload=cap)
    header = bytes((0x82, 0x80 | 127)) + size.to_bytes(8, "big") + key
    before, _ = rss()
    tracemalloc.start()
    start = time.perf_counter()
    events = parser.feed(header, 0.0)
    for _ in range(count):
        events += parser.feed(masked, 0.0)
    elapsed = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    _, peak = rss()
    (message,) = events
    assert message.size == size and message.sha256 and len(message.payload) == cap
    print(f"  {size / 2**30:.2f} GiB message, 64 KiB reads, cap {cap >> 20} MiB: "
          f"{size / elapsed / 1e6:.0f} MB/s (tracing on); traced peak {traced / 2**20:.1f} MiB, "
          f"RSS growth {(peak - before) / 2**20:.1f} MiB (allowed: 16 MiB + cap = "
          f"{(16 << 20) / 2**20 + cap / 2**20:.0f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer messages and loops")
    ap.add_argument("--gib", type=float, default=1.0, help="size of the memory test message")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.gib)
        return
    bench_unmask(args.quick)
    bench_parser(args.quick)
    print("memory")
    subprocess.run([sys.executable, __file__, "--memory-child", "--gib", str(args.gib)],
                   check=True, timeout=600)


if __name__ == "__main__":
    main()
