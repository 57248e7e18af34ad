"""Benchmark of the feature engine: the batch path over a simulated day, the live path per 100 ms cycle.

    .venv/bin/python scripts/bench_features.py                 # 6.5 h day, 10 instruments; 1,000 live
    .venv/bin/python scripts/bench_features.py --duration 30m  # quicker

Batch: compute_features over a simulated day of 10 instruments (the simulation itself is not
timed). Live: 1,000 instruments (the day's 10 instruments' ticks, copied 100 times under new
names), fed one 100 ms cycle at a time as the real-time engine does: update() with that cycle's
rows of every table, then snapshot(); per-cycle times after a warm-up minute.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")

from pretrade.features import FeatureEngine, compute_features, grid_for  # noqa: E402
from pretrade.features.engine import TABLES  # noqa: E402
from pretrade.market.simulator import parse_duration, simulate  # noqa: E402


def bench_batch(frames: dict[str, pd.DataFrame]) -> None:
    ticks = sum(len(frames[t]) for t in TABLES if t in frames)
    compute_features({k: v.head(1000) for k, v in frames.items()})  # compile / load the kernel
    t = time.perf_counter()
    df = compute_features(frames)
    dt = time.perf_counter() - t
    steps = df["time"].nunique()
    print(
        f"batch: {ticks:,} ticks, {steps:,} grid steps x {df['sym'].nunique()} instruments "
        f"= {len(df):,} feature rows in {dt:.2f} s ({ticks / dt / 1e6:.2f} M ticks/s)"
    )


def bench_live_same_day(frames: dict[str, pd.DataFrame], seconds: int) -> None:
    """The same ticks through the live API one snapshot at a time: the per-call overhead."""
    sub = _first(frames, seconds)
    grid = grid_for(sub, 100_000_000)
    eng = FeatureEngine()
    for name in TABLES:
        if name in sub and len(sub[name]):
            eng.update(name, sub[name])
    t = time.perf_counter()
    for g in grid:
        eng.snapshot(int(g))
    dt = time.perf_counter() - t
    print(
        f"live API, 10 instruments, {len(grid):,} snapshots one by one: {dt:.2f} s "
        f"({dt / len(grid) * 1e6:.0f} us per snapshot)"
    )


def _first(frames, seconds):
    t0 = min(v["time"].min() for v in frames.values() if len(v))
    end = t0 + pd.Timedelta(seconds=seconds)
    return {k: v[v["time"] < end] for k, v in frames.items() if k in TABLES}


def bench_live_1000(frames: dict[str, pd.DataFrame], seconds: int, copies: int = 100) -> None:
    sub = _first(frames, seconds)
    step = 100_000_000
    grid = grid_for(sub, step)
    cycles: list[dict[str, pd.DataFrame]] = [dict() for _ in grid]
    for name, df in sub.items():
        if not len(df):
            continue
        big = pd.concat([df.assign(sym=df["sym"] + f".{k}") for k in range(copies)])
        big = big.sort_values("time", kind="stable")
        t = big["time"].to_numpy().view(np.int64)
        cut = np.searchsorted(t, grid, side="right")
        lo = 0
        for j, hi in enumerate(cut):
            if hi > lo:
                cycles[j][name] = big.iloc[lo:hi].reset_index(drop=True)
            lo = hi
    eng = FeatureEngine()
    upd, snap, rows = [], [], []
    for j, g in enumerate(grid):
        t0 = time.perf_counter()
        n = sum(eng.update(name, df) for name, df in cycles[j].items())
        t1 = time.perf_counter()
        eng.snapshot(int(g))
        t2 = time.perf_counter()
        if j >= 600:  # after a warm-up minute
            upd.append(t1 - t0)
            snap.append(t2 - t1)
            rows.append(n)
    upd_a, snap_a = np.array(upd) * 1e3, np.array(snap) * 1e3
    tot = upd_a + snap_a
    print(
        f"live, {len(eng.syms):,} instruments, {len(tot):,} cycles of 100 ms "
        f"({np.mean(rows):,.0f} ticks per cycle on average):"
    )
    for label, a in (("update (all tables)", upd_a), ("snapshot", snap_a), ("whole cycle", tot)):
        print(
            f"  {label:20} p50 {np.percentile(a, 50):6.2f} ms  p99 {np.percentile(a, 99):6.2f} ms  "
            f"max {a.max():6.2f} ms"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", default="6.5h", help="simulated day's length (default 6.5h)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--live-seconds",
        type=int,
        default=180,
        help="market seconds replayed through the 1,000-instrument live bench",
    )
    args = ap.parse_args()
    t = time.perf_counter()
    sim = simulate("normal", seed=args.seed, duration=args.duration)
    print(
        f"simulated {args.duration} for {len(sim['quote']['sym'].unique())} instruments "
        f"in {time.perf_counter() - t:.1f} s (not part of the figures below)"
    )
    bench_batch(sim.frames)
    bench_live_same_day(sim.frames, min(parse_duration(args.duration), 1800))
    bench_live_1000(sim.frames, args.live_seconds)


if __name__ == "__main__":
    main()
