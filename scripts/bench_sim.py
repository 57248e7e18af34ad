"""Benchmark: simulate a full 6.5-hour trading day for ten instruments and time it.

Run: .venv/bin/python scripts/bench_sim.py [--duration 6.5h] [--syms ...] [--seed N] [--tp HOST:PORT]
Prints the wall time, rows per table and rows per second. The target is under a minute.
With --tp the rows are also published to a running tickerplant (as `pretrade feed sim --speed
max` does), which measures the feed handler end to end.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")


def main() -> None:
    from pretrade.market.simulator import Simulation

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", default="6.5h")
    ap.add_argument("--syms", nargs="+")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenario", default="normal")
    ap.add_argument("--tp", help="also publish to this tickerplant HOST:PORT")
    args = ap.parse_args()
    from pretrade.market.feed import PUBLISH_ORDER, Publisher

    pub = Publisher(args.tp) if args.tp else None
    t0, c0 = time.perf_counter(), time.process_time()
    sim = Simulation(args.scenario, args.seed, args.syms, args.duration)
    setup = time.perf_counter() - t0
    rows: dict[str, int] = {}
    for block in sim.blocks():
        for name, df in block.items():
            rows[name] = rows.get(name, 0) + len(df)
        if pub is not None:
            for name in PUBLISH_ORDER:
                if name in block:
                    pub.publish(name, block[name])
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    total = sum(rows.values())
    if pub is not None:
        pub.close()
        print(f"published to {args.tp}: {sum(pub.sent.values()):,} rows, refused {sum(pub.refused.values()):,}")
    print(f"scenario {args.scenario} seed {args.seed}: {len(sim.insts)} instruments x {sim.n_sec} s "
          f"of market time")
    print(f"wall time {wall:.1f} s, CPU time {cpu:.1f} s (setup {setup:.2f} s); "
          f"target < 60 s: {'PASS' if wall < 60 else 'FAIL'}")
    for name, n in rows.items():
        print(f"  {name:6} {n:>12,} rows")
    print(f"  total  {total:>12,} rows, {total / wall:,.0f} rows/s; "
          f"{sim.n_sec / wall:,.0f}x real time")


if __name__ == "__main__":
    main()
