"""Per-order latency of the impact prediction and of one hedging schedule call, as a gateway calls them.

    .venv/bin/python scripts/bench_impact.py [--orders 5000] [--seed 77]

Impact: impact_features on one order and its book row, then one onnxruntime call; the baseline in
the same run is the fitted square-root law on the same features (formula, no network). Hedging:
HedgingAgent.schedule for one position (state, one onnxruntime call, lot rounding). Prints p50,
p99 and p99.9 in microseconds.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("PYKX_UNLICENSED", "true")


def _pct(ns: list[int]) -> str:
    a = np.asarray(ns) / 1e3
    return f"p50 {np.percentile(a, 50):7.1f} us  p99 {np.percentile(a, 99):7.1f} us  p99.9 {np.percentile(a, 99.9):7.1f} us"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impact", default="models/impact.onnx")
    ap.add_argument("--hedging", default="models/hedging_heston.onnx")
    ap.add_argument("--orders", type=int, default=5000, help="calls to time (cycling over the executions)")
    ap.add_argument("--seed", type=int, default=77, help="simulation seed of the executions replayed")
    args = ap.parse_args()

    from pretrade.hedging.agent import HedgingAgent, OptionPosition
    from pretrade.models.impact import ImpactModel, impact_features, recommend_algo, sqrt_law
    from pretrade.schema import BOOK_LEVELS

    model = ImpactModel(args.impact)
    law = model.card["sqrt_law"]
    from pretrade.models.impact import simulated_executions

    df = simulated_executions(args.seed, duration=600)
    cols = [f"{k}{i}" for k in ("bid", "bsize", "ask", "asize") for i in range(1, BOOK_LEVELS + 1)]
    rows = [dict(zip(cols, r, strict=True)) for r in df[cols].itertuples(index=False)]
    qty, side = df["qty"].to_numpy(), df["side"].to_numpy()
    rv, vol = df["rv_1m"].to_numpy(), df["volume_1m"].to_numpy()
    hor = df["horizon_s"].to_numpy()
    n = len(df)
    nn, base = [], []
    for k in range(args.orders):
        j = k % n
        t0 = time.perf_counter_ns()
        p = model.predict_slippage(qty[j], side[j], rows[j], rv[j], vol[j], hor[j])
        recommend_algo(float(p[0]), 10.0)
        t1 = time.perf_counter_ns()
        sqrt_law(impact_features(qty[j], side[j], rows[j], rv[j], vol[j], hor[j]), **law)
        t2 = time.perf_counter_ns()
        nn.append(t1 - t0)
        base.append(t2 - t1)
    print(f"impact, {args.orders} single-order calls over {n} simulated executions (seed {args.seed})")
    print(f"  network (features + ONNX + recommend_algo): {_pct(nn)}")
    print(f"  baseline square-root law (features + formula): {_pct(base)}")

    agent = HedgingAgent(args.hedging)
    pos = OptionPosition("ACME", contracts=10, strike=100, maturity=30 / 365, multiplier=100, lot=100)
    rng = np.random.default_rng(0)
    spots = rng.uniform(90, 110, args.orders)
    hs = []
    for k in range(args.orders):
        t0 = time.perf_counter_ns()
        agent.schedule(pos, {"spot": spots[k], "tau": 15 / 365, "vol": 0.2, "cost": 0.001})
        hs.append(time.perf_counter_ns() - t0)
    print(f"hedging schedule, {args.orders} calls ({args.hedging}): {_pct(hs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
