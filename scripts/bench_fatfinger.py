"""Single-order latency of the fat-finger check: feature computation + onnxruntime on one row.

    .venv/bin/python scripts/bench_fatfinger.py [--model models/fatfinger.onnx] [--orders 20000]

Replays simulated orders one at a time, as the gateway does: order_features (with the trader's
history updated incrementally) then one onnxruntime call. Prints p50/p99/p99.9 in microseconds
of the features alone, the ONNX call alone (and an empty-graph baseline: onnxruntime's own
per-call overhead), and both together. Target: p99 < 50 us.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PYKX_UNLICENSED", "true")


def _pct(ns: list[int]) -> str:
    a = np.asarray(ns) / 1e3
    return f"p50 {np.percentile(a, 50):6.1f} us  p99 {np.percentile(a, 99):6.1f} us  p99.9 {np.percentile(a, 99.9):6.1f} us"


def _empty_graph(n_features: int) -> str:
    """An ONNX graph that only copies its input: onnxruntime's per-call overhead."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_features])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n_features])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = Path(tempfile.mkdtemp()) / "empty.onnx"
    path.write_bytes(m.SerializeToString())
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/fatfinger.onnx")
    ap.add_argument("--orders", type=int, default=20_000, help="orders to score (replayed, cycling)")
    ap.add_argument("--seed", type=int, default=31, help="simulation seed of the replayed day")
    ap.add_argument("--duration", type=int, default=1800, help="seconds of the replayed day")
    args = ap.parse_args()

    import onnxruntime as ort

    from pretrade.market.simulator import simulate
    from pretrade.models.fatfinger import (
        SIM_PARAMS,
        FatFingerModel,
        market_at_orders,
        orders_from_frame,
    )
    from pretrade.models.order_features import N_FEATURES, Market, TraderHistory, order_features

    model = FatFingerModel(args.model)
    res = simulate("fat-finger", seed=args.seed, duration=args.duration, **SIM_PARAMS)
    frame = res["order"].reset_index(drop=True)
    market = market_at_orders(frame, res.frames).to_numpy()
    orders = orders_from_frame(frame)
    markets = [Market(*m) for m in market]
    print(f"model {model.version}; {len(orders)} simulated orders replayed to {args.orders} scores")

    history = TraderHistory()
    feat, onnx, both = [], [], []
    row = np.empty((1, N_FEATURES), dtype=np.float32)
    sess, name = model.session, model.input_name
    for k in range(args.orders):
        j = k % len(orders)
        if j == 0:
            history = TraderHistory()  # a new day: replay from an empty history
        t0 = time.perf_counter_ns()
        order_features(orders[j], markets[j], history, out=row[0])
        t1 = time.perf_counter_ns()
        sess.run(["probability"], {name: row})
        t2 = time.perf_counter_ns()
        feat.append(t1 - t0)
        onnx.append(t2 - t1)
        both.append(t2 - t0)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    empty = ort.InferenceSession(_empty_graph(N_FEATURES), opts, providers=["CPUExecutionProvider"])
    base = []
    for _ in range(args.orders):
        t0 = time.perf_counter_ns()
        empty.run(["y"], {"x": row})
        base.append(time.perf_counter_ns() - t0)

    print(f"features only             {_pct(feat)}")
    print(f"onnxruntime, model        {_pct(onnx)}")
    print(f"onnxruntime, empty graph  {_pct(base)}   (per-call overhead baseline)")
    print(f"features + model (total)  {_pct(both)}   target p99 < 50 us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
