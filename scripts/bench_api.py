"""Benchmark the REST API against real processes: `GET /limits` (HTTP + a fresh IPC connection
to the risk engine) against the bare IPC query it wraps (baseline, same run), the token check,
and the delay from a tickerplant publish to the event on the API's SSE stream.

    .venv/bin/python scripts/bench_api.py [--n 300] [--events 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "py")]
os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")


def pct(xs: list[float]) -> str:
    a = np.array(xs) * 1e6
    return f"p50 {np.percentile(a, 50):8.0f} us   p99 {np.percentile(a, 99):8.0f} us   (n={len(a)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=300, help="requests per measure")
    ap.add_argument("--events", type=int, default=200, help="alerts published for the stream delay")
    args = ap.parse_args()

    import httpx

    from conftest import free_port
    from pretrade.client import connect
    from pretrade.ops.auth import Tokens
    from test_api import Stack, start

    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), ["--scenario", "normal", "--seed", "2", "--syms", "ESZ6", "NQZ6", "--duration", "30"])
        try:
            stack.feed()
            port = free_port()
            p = stack.ports
            stack.procs.append(start(["api", "--port", str(port), "--tp", f"localhost:{p['tp']}",
                                      "--rte", f"localhost:{p['rte']}", "--rdb", f"localhost:{p['rdb']}",
                                      "--hdb", f"localhost:{p['hdb']}", "--audit", f"{tmp}/audit.jsonl"],
                                     Path(tmp) / "api.log", port))
            base, hdr = f"http://127.0.0.1:{port}", {"Authorization": "Bearer demo-trader-token"}

            ipc, http = [], []
            with httpx.Client(base_url=base, headers=hdr) as c:
                for _ in range(10):
                    c.get("/limits")
                for _ in range(args.n):  # interleaved, so background load hits both alike
                    t0 = time.perf_counter()
                    with connect(f"localhost:{p['rte']}") as q:
                        q.query(".rte.limits", "")
                    ipc.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    assert c.get("/limits").status_code == 200
                    http.append(time.perf_counter() - t0)
            tokens = Tokens.load(ROOT / "config" / "api_users.toml")
            t0 = time.perf_counter()
            for _ in range(10000):
                tokens.user_for("demo-trader-token")
            tok = (time.perf_counter() - t0) / 10000

            delays: list[float] = []
            sent: dict[str, float] = {}
            done = threading.Event()

            def listen() -> None:
                with httpx.stream("GET", f"{base}/alerts/stream", params={"token": "demo-trader-token"},
                                  timeout=60) as r:
                    event = None
                    for line in r.iter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event == "riskAlert":
                            now = time.perf_counter()
                            for row in json.loads(line[6:]):
                                if row["text"] in sent:
                                    delays.append(now - sent[row["text"]])
                            if len(delays) >= args.events:
                                done.set()
                                return

            threading.Thread(target=listen, daemon=True).start()
            time.sleep(1.0)
            with connect(f"localhost:{p['tp']}") as tpc:
                for i in range(args.events):
                    text = f"bench {i}"
                    sent[text] = time.perf_counter()
                    tpc.publish("riskAlert", [{"sym": "ESZ6", "strategy": "", "seq": 0, "severity": "info",
                                               "kind": "bench", "tier": "", "who": "bench", "text": text}])
                    time.sleep(0.01)
            done.wait(30)
        finally:
            stack.close()

    print(f"IPC .rte.limits[`] (fresh connection, baseline)  {pct(ipc)}")
    print(f"HTTP GET /limits (token, IPC, JSON)              {pct(http)}")
    print(f"  API overhead over the bare IPC query, p50: {np.median(http) / np.median(ipc):.2f}x")
    print(f"token check (SHA-256 + compare, 2 users)         {tok * 1e6:8.2f} us")
    print(f"tickerplant publish -> SSE event at a client     {pct(delays)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
