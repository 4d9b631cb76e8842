"""The raw relay against wsinspect's mitmproxy path, bare mitmdump, mitmdump relaying the
same tunnels as raw TCP (`--ignore-hosts '.*'`, the architecture's ceiling), a splice(2) relay
(the cheapest relay there can be: no byte enters a process) and a direct connection, side by
side in one process tree on loopback (issue 15).

    .venv/bin/python bench/relay_bench.py [--quick] [--sizes 64,1024,1048576]
        [--parts latency,memory] [--gib 1] [--profile profile.txt [--profile-size 1048576]]

- msg/s (and MB/s): messages echoed per second on one session, a window of 64 in flight,
  best of 2 (the kinds taking turns), each message counted once (there and back). At 1 MiB,
  300 messages, so that the capture's writer (which commits twice a second, or every 16 MiB)
  writes most of them inside the measured time: 60 fit in one burst and left its work out.
- proxy CPU: the proxy process's user+system CPU per echoed message (µs), or per echoed MiB
  (ms) at 1 MiB; the proxy relays each message twice, there and back.
- p50/p99: round trip of one 64 B message at a time.
- handshakes/s: sequential WebSocket opens and closes through the proxy.
- B/msg: the slope of the proxy's RSS per recorded message over a long session of 1 KiB
  messages, after a warm-up of 40,000, with the spread of its samples.
- 1 GiB message: the proxy's peak RSS growth while a raw client streams one 1 GiB binary
  frame to a raw sink (only the relays that stream: mitmdump and wsinspect's mitmproxy path
  hold whole messages).
- --profile: py-spy (--nonblocking, every thread: the store's writer too) records the
  raw-relay proxy during a run at --profile-size and prints where its CPU goes, by area and
  function.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

from benchkit import BIN, ECHO_SERVER, echo_rate, free_port, growth, memory, start_proxy, wait_port

KINDS = ["direct", "splice-relay", "mitmdump", "mitmdump-passthrough", "wsinspect-mitmproxy",
         "wsinspect"]
# The cheapest relay there can be, for a floor beside the proxies: CONNECT, then each
# direction moved socket -> pipe -> socket by splice(2) in the kernel, never copied into the
# process. It only connects to 127.0.0.1, whatever the CONNECT names.
SPLICE_RELAY = """
import fcntl, os, socket, sys, threading
def pump(src, dst):
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
    try:
        while n := os.splice(src.fileno(), w, 1 << 20):
            while n:
                n -= os.splice(r, dst.fileno(), n)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        os.close(r)
        os.close(w)
def handle(client):
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        chunk = client.recv(4096)
        if not chunk:
            client.close()
            return
        head += chunk
    port = int(head.split(b" ")[1].rsplit(b":", 1)[1])
    server = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"HTTP/1.1 200 Connection established\\r\\n\\r\\n")
    if rest := head.split(b"\\r\\n\\r\\n", 1)[1]:
        server.sendall(rest)
    pumps = [threading.Thread(target=pump, args=pair) for pair in ((client, server), (server, client))]
    for t in pumps:
        t.start()
    for t in pumps:
        t.join()
    client.close()
    server.close()
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    threading.Thread(target=handle, args=(listener.accept()[0],), daemon=True).start()
"""
SINK_SERVER = """
import asyncio, base64, hashlib, sys
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
async def sink(reader, writer):
    try:
        head = await reader.readuntil(b"\\r\\n\\r\\n")
    except asyncio.IncompleteReadError:
        return  # a port probe
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\\r\\n") if l.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: " + accept + b"\\r\\n\\r\\n")
    want = int(sys.argv[2])
    got = 0
    while got < want:
        chunk = await reader.read(1 << 20)
        if not chunk:
            return
        got += len(chunk)
    writer.write(b"\\x81\\x04done")
    await writer.drain()
    await reader.read()
async def main():
    server = await asyncio.start_server(sink, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proxy_url(port: int | None) -> str | None:
    return f"http://127.0.0.1:{port}" if port else None


async def rate(echo_port: int, port: int | None, size: int, count: int) -> float:
    async with connect(
        f"ws://127.0.0.1:{echo_port}/", proxy=proxy_url(port), max_size=None,
        compression=None, ping_interval=None,
    ) as ws:
        return await echo_rate(ws, os.urandom(size), count)


async def latencies(echo_port: int, port: int | None, count: int) -> tuple[float, float]:
    """p50 and p99 round trip in ms of one 64 B message at a time."""
    payload = os.urandom(64)
    times = []
    async with connect(
        f"ws://127.0.0.1:{echo_port}/", proxy=proxy_url(port), compression=None,
        ping_interval=None,
    ) as ws:
        for _ in range(count):
            start = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000


async def handshakes(echo_port: int, port: int | None, seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        async with connect(
            f"ws://127.0.0.1:{echo_port}/", proxy=proxy_url(port), compression=None,
            ping_interval=None,
        ):
            done += 1
    return done / (time.perf_counter() - start)


async def huge_message(sink_port: int, port: int, pid: int, size: int) -> int:
    """Peak RSS growth of the proxy while one `size`-byte frame streams through it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    host = f"127.0.0.1:{sink_port}"
    # through a CONNECT tunnel, like websockets' proxy support (and so that --ignore-hosts
    # applies to the pass-through baseline)
    writer.write(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(0.5)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the peak (VmHWM) from now
    before, _ = memory(pid)
    # masked with a zero key: the payload bytes are sent as they are
    writer.write(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", size) + b"\0\0\0\0")
    chunk = os.urandom(1 << 20)
    sent = 0
    while sent < size:
        n = min(len(chunk), size - sent)
        writer.write(chunk[:n])
        await writer.drain()
        sent += n
    assert await asyncio.wait_for(reader.readexactly(6), 120) == b"\x81\x04done"
    writer.close()
    _, peak = memory(pid)
    return max(0, peak - before)


AREAS = [  # (area, what a frame's file path contains), first match wins
    ("wsinspect frame parser", "wsinspect/wire.py"),
    ("wsinspect store (SQLite writer thread included)", "wsinspect/store.py"),
    ("wsinspect recorder", "wsinspect/recorder.py"),
    ("wsinspect model", "wsinspect/model.py"),
    ("wsinspect raw relay (seams)", "wsinspect/seams.py"),
    ("mitmproxy layers and server", "mitmproxy/"),
    ("asyncio (sockets, event loop)", "asyncio/"),
]


def profile_summary(path: Path, top: int = 12) -> str:
    """Own time (samples holding the GIL) by area and by function, from py-spy's raw output."""
    own: collections.Counter = collections.Counter()
    areas: collections.Counter = collections.Counter()
    total = 0
    # py-spy's raw format is "frame;frame;... count" a line, but a frame's name may hold
    # newlines (a module docstring): a sample is the lines up to one ending in its count
    for line in re.findall(r"(?s).*? \d+(?:\n|$)", path.read_text()):
        stack, _, n = line.strip().rpartition(" ")
        leaf = stack.split(";")[-1]
        own[leaf] += int(n)
        areas[next((a for a, part in AREAS if part in leaf), "other")] += int(n)
        total += int(n)
    by_area = "\n".join(f"{100 * n / total:6.1f}%  {a}" for a, n in areas.most_common())
    by_function = "\n".join(f"{100 * n / total:6.1f}%  {f}" for f, n in own.most_common(top))
    return f"by area:\n{by_area}\nby function:\n{by_function}"


async def main(args) -> None:
    tmp = tempfile.mkdtemp(prefix="wsinspect-relay-bench-")

    def confdir(kind: str) -> str:
        """A confdir of its own: proxies starting at once in one would race to make its CA."""
        path = Path(tmp, f"{kind}-conf")
        path.mkdir(exist_ok=True)
        return str(path)

    echo_port, sink_port = free_port(), free_port()
    gib = int(args.gib * 2**30)
    procs = [
        subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)]),
        subprocess.Popen([sys.executable, "-c", SINK_SERVER, str(sink_port), str(gib + 14)]),
    ]
    try:
        await wait_port(echo_port)
        await wait_port(sink_port)
        ports: dict[str, int | None] = {"direct": None}
        pids: dict[str, int] = {}
        logs = {}
        for kind in KINDS[1:]:
            ports[kind] = free_port()
            logs[kind] = open(f"{tmp}/{kind}.log", "wb")
            if kind == "splice-relay":
                proc = subprocess.Popen([sys.executable, "-c", SPLICE_RELAY, str(ports[kind])],
                                        stdout=logs[kind], stderr=subprocess.STDOUT)
            else:
                proc = start_proxy(kind, ports[kind], confdir(kind), f"{tmp}/{kind}.db", logs[kind])
            procs.append(proc)
            pids[kind] = proc.pid

        def alive(kind: str) -> None:
            proc = next((p for p in procs if p.pid == pids.get(kind)), None)
            if proc is not None and proc.poll() is not None:
                tail = Path(f"{tmp}/{kind}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{kind} exited with {proc.returncode}:\n{tail}")

        for kind in KINDS[1:]:
            await wait_port(ports[kind], 90)  # four proxies starting at once on a busy machine
        quick = args.quick
        counts = {64: 4000 if quick else 15000, 1024: 4000 if quick else 15000,
                  2**20: 20 if quick else 300}
        sizes = [(size, counts[size]) for size in args.sizes]
        rates: dict[tuple[str, int], float] = {}
        cpu: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
        for size, count in sizes:
            for _ in range(2):  # best of 2, the kinds taking turns
                for kind in KINDS:
                    alive(kind)
                    before = cpu_seconds(pids[kind]) if kind in pids else 0.0
                    got = await rate(echo_port, ports[kind], size, count)
                    rates[kind, size] = max(rates.get((kind, size), 0.0), got)
                    if kind in pids:
                        cpu[kind, size].append((cpu_seconds(pids[kind]) - before) / count)

        print("one process tree, loopback; ratios against bare mitmdump in this run\n")
        print(f"{'':24}" + "".join(f"{k:>22}" for k in KINDS))
        def label(size: int) -> str:
            return f"{size} B" if size < 1024 else f"{size // 1024} KiB" if size < 2**20 else "1 MiB"

        for size, _ in sizes:
            row = []
            for kind in KINDS:
                r = rates[kind, size]
                ratio = r / rates["mitmdump", size]
                row.append(f"{r:>9.0f} ({ratio:>5.1f}x)" if size < 2**20 else f"{r * size / 1e6:>7.1f} MB/s ({ratio:>4.1f}x)")
            print(f"{('msg/s ' if size < 2**20 else 'MB/s ') + label(size):24}" + "".join(f"{c:>22}" for c in row))
        if (1024, counts[1024]) in sizes:
            print(f"{'MB/s 1 KiB':24}" + "".join(f"{rates[k, 1024] * 1024 / 1e6:>22.1f}" for k in KINDS))
        for size, _ in sizes:
            # CPU per echoed message: the proxy relays it twice, there and back
            unit, scale = ("ms/MiB", 1e3) if size == 2**20 else ("us/msg", 1e6)
            print(f"{f'CPU {unit} {label(size)}':24}" + "".join(
                f"{scale * min(cpu[k, size]):>22.1f}" if k in pids else f"{'-':>22}" for k in KINDS))
        if "latency" in args.parts:
            lat = {k: await latencies(echo_port, ports[k], 500 if quick else 3000) for k in KINDS}
            hs = {k: await handshakes(echo_port, ports[k], 1.5 if quick else 4) for k in KINDS}
            print(f"{'p50 / p99 ms (64 B)':24}" + "".join(f"{f'{lat[k][0]:.3f} / {lat[k][1]:.3f}':>22}" for k in KINDS))
            print(f"{'handshakes/s':24}" + "".join(f"{hs[k]:>22.0f}" for k in KINDS))

        if args.profile:
            spy = shutil.which("py-spy") or str(BIN / "py-spy")
            out = Path(args.profile)
            # all threads (the store's writer too), not only the one holding the GIL
            prof = subprocess.Popen([spy, "record", "--nonblocking", "--format", "raw", "-r", "200",
                                     "-o", str(out), "-p", str(pids["wsinspect"])],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(1.0)
            size = args.profile_size
            await rate(echo_port, ports["wsinspect"], size, 30000 if size < 2**20 else 300)
            prof.send_signal(signal.SIGINT)
            prof.wait(30)
            print(f"\nraw relay, {size} B messages: CPU time by function (py-spy, all threads)\n"
                  + profile_summary(out))

        for p in procs[2:]:
            p.send_signal(signal.SIGTERM)
            p.wait(20)
        procs = procs[:2]

        if "memory" not in args.parts:
            return
        # messages recorded (both ways) at each sample; the first 40,000 are the warm-up
        # (SQLite's page cache, the allocator's arenas, the largest batch in flight)
        warm = 40000
        steps = [s // 2 for s in range(warm, (120000 if quick else 320000) + 1, warm // 2)]
        print("\nproxy RSS over one long session (1 KiB messages): its slope by least squares "
              f"over the samples after {warm} messages, and their spread")
        for kind in ("mitmdump", "wsinspect-mitmproxy", "wsinspect"):
            port = free_port()
            proc = start_proxy(kind, port, confdir(kind), f"{tmp}/{kind}-growth.db")
            procs.append(proc)
            await wait_port(port, 90)
            samples = await growth(echo_port, port, proc.pid, steps, 1024)
            n = [float(x) for x, _ in samples]
            r = [float(y) for _, y in samples]
            mean_n, mean_r = sum(n) / len(n), sum(r) / len(r)
            slope = (sum((a - mean_n) * (b - mean_r) for a, b in zip(n, r))
                     / sum((a - mean_n) ** 2 for a in n))
            print(f"{kind:>22} {slope:>7.1f} B/msg from {samples[0][0]} to {samples[-1][0]} "
                  f"messages, RSS {min(r) / 2**20:.1f}-{max(r) / 2**20:.1f} MiB "
                  f"({len(samples)} samples)")
            print(f"{'':>22} MiB: " + " ".join(f"{y / 2**20:.0f}" for y in r))
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
            procs.remove(proc)

        print(f"\npeak RSS growth while one {args.gib:g} GiB frame streams through")
        for kind in ("mitmdump-passthrough", "wsinspect"):
            port = free_port()
            proc = start_proxy(kind, port, confdir(kind), f"{tmp}/{kind}-huge.db")
            procs.append(proc)
            await wait_port(port, 90)
            start = time.perf_counter()
            grew = await huge_message(sink_port, port, proc.pid, gib)
            elapsed = time.perf_counter() - start
            print(f"{kind:>22} {grew / 2**20:>7.1f} MiB   ({gib / elapsed / 1e6:.0f} MB/s)")
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
            procs.remove(proc)
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, for a smoke run")
    parser.add_argument("--gib", type=float, default=1.0, help="size of the huge message")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the raw relay into FILE")
    parser.add_argument("--profile-size", type=int, default=64, choices=(64, 1024, 2**20),
                        help="message size of the profiled run")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")],
                        default=[64, 1024, 2**20], help="message sizes, of 64,1024,1048576")
    parser.add_argument("--parts", type=lambda v: set(v.split(",")),
                        default={"latency", "memory"},
                        help="what to measure besides msg/s: latency (p50/p99, handshakes/s) "
                             "and memory (long session, 1 GiB message)")
    asyncio.run(main(parser.parse_args()))
