"""Tickerplant throughput and latency, beside a bare asyncio TCP sink as the ceiling.

    .venv/bin/python scripts/bench_tick.py [--updates 300000] [--batches 30000] [--rate 5000]

Each figure runs in separate processes: the tickerplant (`pretrade tp`, journal on, in a temporary
folder), one publisher sending pre-encoded `.u.upd` messages as fast as it can (async, ended by a
sync query so every update is counted once processed), and one subscriber. The sink is a bare
asyncio server that parses frame headers and discards async messages (throughput ceiling) or
relays them to its subscriber (latency ceiling). Latency: the publisher writes its send time
(time.time_ns) into the size column at a moderate rate; the subscriber stamps arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "py"))
os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")

from pretrade.ipc import codec, wire  # noqa: E402
from pretrade.up import free_port  # noqa: E402

PY = sys.executable



def wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("server exited") from None
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(wire.handshake_bytes("bench"))
    assert s.recv(1)
    return s


def read_frame(s: socket.socket) -> tuple[int, bytes]:
    head = _exact(s, 8)
    return head[1], _exact(s, struct.unpack("<I", head[4:])[0] - 8)


def _exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def upd_payload(rows: int, size: int = 0) -> bytes:
    """A `.u.upd[`trade; data]` call: one row of atoms, or `rows` rows of columns (no time)."""
    import numpy as np

    if rows == 1:
        data = codec.encode_row(["ES", 4500.25, size, "buy"], "sfjs")
    else:
        data = codec.encode_columns([np.array(["ES", "NQ"] * (rows // 2), dtype=object),
                                     np.full(rows, 4500.25), np.arange(rows, dtype=np.int64),
                                     np.array(["buy"] * rows, dtype=object)], "sfjs")
    return b"\x00\x00\x03\x00\x00\x00\xf5.u.upd\x00\xf5trade\x00" + data


# --- roles run in their own processes ----------------------------------------------------------

def role_publish(port: int, rows: int, n: int) -> dict:
    """Send n updates of `rows` rows as fast as possible, then a sync query; time it all."""
    s = connect(port)
    frame = wire.frame(upd_payload(rows), wire.ASYNC)
    per_chunk = max(1, min(n, (256 << 10) // len(frame)))
    chunk = frame * per_chunk
    sent = 0
    t0 = time.perf_counter()
    while sent + per_chunk <= n:
        s.sendall(chunk)
        sent += per_chunk
    if sent < n:
        s.sendall(frame * (n - sent))
    s.sendall(wire.frame(codec.encode(b".u.i"), wire.SYNC))
    _, answer = read_frame(s)
    elapsed = time.perf_counter() - t0
    return {"elapsed": elapsed, "answer": repr(codec.loads(answer))}


def role_drain(port: int) -> dict:
    """Subscribe to trade and read (and discard) everything until the connection closes."""
    s = connect(port)
    s.sendall(wire.frame(codec.encode([".u.sub", "trade", ""]), wire.SYNC))
    read_frame(s)
    print("ready", flush=True)
    total = 0
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
    except OSError:
        pass
    return {"bytes": total}


def role_latency_sub(port: int, n: int) -> dict:
    """Subscribe, then stamp the arrival of n messages; latency = arrival - send time (size)."""
    s = connect(port)
    s.sendall(wire.frame(codec.encode([".u.sub", "trade", ""]), wire.SYNC))
    read_frame(s)
    print("ready", flush=True)
    got = []
    for _ in range(n):
        _, payload = read_frame(s)
        got.append((time.time_ns(), payload))
    lat = []
    for arrived, payload in got:
        msg = codec.loads(payload)
        data = msg[2]
        sent = int(data["size"].iloc[0]) if hasattr(data, "iloc") else int(data[2])
        lat.append((arrived - sent) / 1000)
    return {"latency_us": lat}


def role_latency_pub(port: int, n: int, rate: int) -> dict:
    """Send n one-row updates at `rate` per second, each carrying its send time."""
    s = connect(port)
    template = bytearray(upd_payload(1, size=0x0102030405060708))
    at = template.find(struct.pack("<q", 0x0102030405060708))
    gap = 1e9 / rate
    start = time.time_ns()
    for i in range(n):
        wait = (start + i * gap - time.time_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)  # sleep, not spin: a spinning publisher would take a core from the TP
        struct.pack_into("<q", template, at, time.time_ns())
        s.sendall(wire.frame(bytes(template), wire.ASYNC))
    s.sendall(wire.frame(codec.encode(b".u.i"), wire.SYNC))
    read_frame(s)
    return {}


def role_sink(port: int) -> None:
    """A bare asyncio kdb+ IPC endpoint: handshake, frame parsing, sync answered with (::),
    async discarded, or relayed to connections that sent a sync message (subscribers)."""

    subscribers: list[asyncio.Transport] = []

    class Sink(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.buf = bytearray()
            self.logged = False

        def data_received(self, data):
            self.buf += data
            if not self.logged:
                end = self.buf.find(b"\x00")
                if end < 0:
                    return
                self.t.write(b"\x03")
                del self.buf[: end + 1]
                self.logged = True
            buf, pos = self.buf, 0
            while len(buf) - pos >= 8:
                length = int.from_bytes(buf[pos + 4: pos + 8], "little")
                if len(buf) - pos < length:
                    break
                if buf[pos + 1] == wire.SYNC:
                    self.t.write(wire.frame(b"\x65\x00", wire.RESPONSE))
                    if self.t not in subscribers:
                        subscribers.append(self.t)
                elif subscribers:
                    frame = bytes(buf[pos: pos + length])
                    for sub in subscribers:
                        if sub is not self.t:
                            sub.write(frame)
                pos += length
            del buf[:pos]

        def connection_lost(self, exc):
            if self.t in subscribers:
                subscribers.remove(self.t)

    async def main():
        server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- orchestration -----------------------------------------------------------------------------

def spawn(*args: str, out=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([PY, __file__, *args], stdout=out, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=600)
    return json.loads(out.strip().splitlines()[-1])


def start_server(kind: str, port: int, logdir: Path) -> subprocess.Popen:
    if kind == "sink":
        proc = spawn("_sink", str(port), out=subprocess.DEVNULL)
    else:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "py"))
        proc = subprocess.Popen(
            [PY, "-m", "pretrade.cli", "--log-level=WARNING", "tp", "--port", str(port),
             "--journal", str(logdir / f"tp{port}")], env=env)
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def throughput(kind: str, rows: int, n: int, logdir: Path, subscriber: bool) -> float:
    """Rows per second through `kind` (tp or sink)."""
    port = free_port()
    server = start_server(kind, port, logdir)
    drain = None
    try:
        if subscriber and kind == "tp":
            drain = spawn("_drain", str(port))
            assert drain.stdout.readline().strip() == "ready"
        r = result(spawn("_publish", str(port), str(rows), str(n)))
        if kind == "tp":
            assert r["answer"] == str(n), r  # .u.i: every update journaled
    finally:
        stop(server)
        if drain is not None:
            drain.wait(30)
    return n * rows / r["elapsed"]


def latency(kind: str, n: int, rate: int, logdir: Path) -> tuple[float, float, float]:
    import numpy as np

    port = free_port()
    server = start_server(kind, port, logdir)
    try:
        sub = spawn("_latsub", str(port), str(n))
        assert sub.stdout.readline().strip() == "ready"
        result(spawn("_latpub", str(port), str(n), str(rate)))
        lat = np.array(result(sub)["latency_us"])
    finally:
        stop(server)
    return tuple(np.percentile(lat, [50, 99, 99.9]))


def journal_walk(n: int, logdir: Path) -> tuple[float, float]:
    """Seconds to validate a journal of n one-row records, and to replay it with iter_records."""
    import numpy as np

    from pretrade.tick import journal as jn

    rec = codec.encode(["upd", "trade", [np.datetime64("2026-11-21T10:00", "ns"), "ES", 1.0, 1, "buy"]])
    path = logdir / "walk"
    with jn.Journal(path) as j:
        j.append(rec * n, n)
    t0 = time.perf_counter()
    assert jn.validate(path).count == n
    t1 = time.perf_counter()
    assert sum(1 for _ in jn.iter_records(path)) == n
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--updates", type=int, default=300_000, help="single-row updates to send")
    p.add_argument("--batches", type=int, default=30_000, help="100-row updates to send")
    p.add_argument("--rate", type=int, default=2_000, help="updates/s for the latency run")
    p.add_argument("--seconds", type=float, default=3.0, help="length of the latency run")
    p.add_argument("--repeat", type=int, default=3,
                   help="run each throughput figure this many times and keep the best (default 3:"
                        " the machine is shared, and other work only ever slows a run down)")
    p.add_argument("--only", choices=["all", "throughput", "latency", "journal"], default="all",
                   help="run only one part (default all)")
    args = p.parse_args()
    nlat = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory(prefix="bench_tick_") as tmp:
        logdir = Path(tmp)
        rows = []
        parts = [("single-row updates", 1, args.updates), ("100-row updates", 100, args.batches)]
        for label, rows_per, n in parts if args.only in ("all", "throughput") else []:
            sink, tp0, tp1 = (max(throughput(kind, rows_per, n, logdir, sub) for _ in range(args.repeat))
                              for kind, sub in [("sink", False), ("tp", False), ("tp", True)])
            unit = "updates/s" if rows_per == 1 else "rows/s"
            rows.append((f"{label} ({unit}), journal on", sink, tp0, tp1))
        walk = journal_walk(args.updates, logdir) if args.only in ("all", "journal") else None
        lats = [] if args.only not in ("all", "latency") else [
            ("sink relay", latency("sink", nlat, args.rate, logdir)),
            ("tp", latency("tp", nlat, args.rate, logdir))]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nmachine: {os.cpu_count()} cores, load average {load} (other work on the machine"
          " shows up in the figures, most in the latency tail)")
    if rows:
        print(f"\nthroughput: best of {args.repeat} runs each")
        print(f"{'figure':<44}{'sink (ceiling)':>16}{'tp, no sub':>14}{'tp, 1 sub':>14}{'tp/sink':>9}")
        for label, sink, tp0, tp1 in rows:
            print(f"{label:<44}{sink:>16,.0f}{tp0:>14,.0f}{tp1:>14,.0f}{tp1 / sink:>9.2f}")
    if walk:
        print(f"\njournal of {args.updates:,} one-row records: validate (start-up walk) {walk[0]:.2f} s"
              f" ({walk[0] / args.updates * 1e6:.1f} us/record), replay with iter_records {walk[1]:.2f} s")
    if lats:
        print(f"\nlatency publisher -> subscriber, {nlat} one-row updates at {args.rate}/s (microseconds)")
        print(f"{'':<12}{'p50':>10}{'p99':>10}{'p99.9':>10}")
        for name, (p50, p99, p999) in lats:
            print(f"{name:<12}{p50:>10.1f}{p99:>10.1f}{p999:>10.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        role, rest = sys.argv[1], [int(x) for x in sys.argv[2:]]
        out = {"_publish": role_publish, "_drain": role_drain, "_latsub": role_latency_sub,
               "_latpub": role_latency_pub, "_sink": role_sink}[role](*rest)
        if out is not None:
            print(json.dumps(out), flush=True)
    else:
        main()
