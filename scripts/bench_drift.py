"""Input drift on simulated days: the largest PSI and KS a rolling window reaches, and the cost.

    .venv/bin/python scripts/bench_drift.py                 # about two minutes on 2 cores
    .venv/bin/python scripts/bench_drift.py --window 600 --models models

Replays the VAE's inputs (the same feature code as training and the engine) of held-out days
through `DriftMonitor` as the engine feeds it (one call per 100 ms grid step with every ready
instrument's row), with the card's training reference, and prints per day the largest PSI and KS
any window reached and which feature, and the first time a level was crossed under the default
thresholds. Days: a normal day (seed 104, never trained on: false drift alarms); a flash crash
(seed 105) and a news shock (seed 108), which are the anomaly model's job, not drift, so the model
must not be taken off; a volatility regime shift and a liquidity drought (markets that stopped
looking like training). Also the per-cycle cost of
`DriftMonitor.add` for 10 and 1,000 instruments.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")

from pretrade.models.drift import DriftConfig, DriftMonitor, Reference  # noqa: E402
from pretrade.models.train_vae import _matrix, simulated_features  # noqa: E402

DAYS = [
    ("normal", 104, 7200, {}),
    ("flash-crash", 105, 3600, {"at": 1800.0, "sym": "ESZ6"}),
    ("news-shock", 108, 3600, {"at": 0.5}),
    ("vol-regime-shift", 106, 3600, {"at": 0.25, "factor": 2.5}),
    ("liquidity-drought", 107, 3600, {"at": 0.3, "length": 1500.0}),
]


def replay(ref: Reference, cfg: DriftConfig, df) -> dict:
    """Feed one day's ready rows, grid step by grid step; the extremes and first crossings."""
    X = _matrix(df, ref.features)
    t = df["time"].to_numpy().view(np.int64)
    steps, starts = np.unique(t, return_index=True)
    bounds = [*starts[1:], len(t)]
    m = DriftMonitor(ref, cfg)
    best_psi = np.zeros(len(ref.features))
    best_ks = np.zeros(len(ref.features))
    first = {}
    t0 = int(steps[0])
    for g, a, b in zip(steps, starts, bounds, strict=True):
        r = m.add(X[a:b])
        if r is None or m.filled < cfg.min_fill * len(m.ring) or r.rows < cfg.min_rows:
            continue
        best_psi, best_ks = np.maximum(best_psi, r.psi), np.maximum(best_ks, r.ks)
        if r.worst != "ok" and r.worst not in first:
            first[r.worst] = {"after_s": (int(g) - t0) / 1e9, "features": r.drifting(1)[:3]}
    jp, jk = int(best_psi.argmax()), int(best_ks.argmax())
    return {"max_psi": round(float(best_psi[jp]), 3), "max_psi_feature": ref.features[jp],
            "max_ks": round(float(best_ks[jk]), 3), "max_ks_feature": ref.features[jk],
            "first": first or "never past warn"}


def cost(ref: Reference, n: int, calls: int = 2000) -> float:
    """Microseconds per DriftMonitor.add of n rows (checks included, one every 50 calls)."""
    m = DriftMonitor(ref, DriftConfig())
    X = np.random.default_rng(0).normal(0, 1, (n, len(ref.features)))
    t = time.perf_counter()
    for _ in range(calls):
        m.add(X)
    return (time.perf_counter() - t) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--window", type=float, default=DriftConfig.window_s)
    args = ap.parse_args()
    card = json.loads((args.models / "vae.json").read_text())
    ref = Reference.from_dict(card["reference"])
    cfg = DriftConfig(window_s=args.window)
    print(f"reference: {ref.rows} training rows of {card['version']}; thresholds {cfg}")
    for name, seed, seconds, params in DAYS:
        t = time.perf_counter()
        df, _ = simulated_features(name, seed, seconds, **params)
        res = replay(ref, cfg, df)
        print(f"{name:18s} seed {seed} {seconds} s: {json.dumps(res)} ({time.perf_counter() - t:.0f} s)")
    for n in (10, 1000):
        print(f"DriftMonitor.add, {n} instruments: {cost(ref, n):.1f} us per cycle")


if __name__ == "__main__":
    main()
