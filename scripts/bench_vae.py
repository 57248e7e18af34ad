"""Benchmark of the served VAE anomaly score: onnxruntime batched over instruments, vs torch.

    .venv/bin/python scripts/bench_vae.py [--model models/vae.onnx]

Times one scoring call (errors + calibration + tiers + contributions) for batches of 1, 100 and
1,000 instruments, the real-time engine's unit of work every 100 ms, and the torch model on the
same batch as the baseline (rebuilt from nothing: only the ONNX artifact is loaded, so torch runs
an equally sized untrained VAE).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _times(fn, reps: int) -> np.ndarray:
    fn()
    out = np.empty(reps)
    for k in range(reps):
        t = time.perf_counter()
        fn()
        out[k] = time.perf_counter() - t
    return out * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/vae.onnx")
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args()
    from pretrade.features import FEATURES
    from pretrade.models.anomaly import AnomalyScorer

    scorer = AnomalyScorer(args.model)
    print(f"model {scorer.version}: {len(scorer.features)} features")
    rng = np.random.default_rng(0)
    try:
        import torch

        from pretrade.models.vae import VAE, VaeConfig, errors

        torch.set_num_threads(1)
        tmodel = VAE(
            len(scorer.features),
            VaeConfig(
                **{
                    k: tuple(v) if k == "hidden" else v
                    for k, v in scorer.card["model"].items()
                    if k in VaeConfig.__dataclass_fields__
                }
            ),
        )
        tmodel.eval()
    except ImportError:
        tmodel = None
    for n in (1, 100, 1000):
        z = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
        t = _times(lambda z=z: scorer.score(z), args.reps)
        line = (
            f"onnxruntime, {n:5d} instruments: p50 {np.percentile(t, 50):.3f} ms  "
            f"p99 {np.percentile(t, 99):.3f} ms"
        )
        if tmodel is not None:
            zz = z[:, scorer.columns]
            tt = _times(lambda zz=zz: errors(tmodel, zz), args.reps)
            line += f"   | torch errors only: p50 {np.percentile(tt, 50):.3f} ms  p99 {np.percentile(tt, 99):.3f} ms"
        print(line)


if __name__ == "__main__":
    main()
