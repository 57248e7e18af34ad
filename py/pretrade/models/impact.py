"""Market impact: a neural network that predicts an order's slippage (bps) before it trades.

Training data are real executions in the simulator: at the end of every simulated minute one
market order of a random size and side is sent into each instrument's book with
`Simulation.submit` and walks it, and the scenario's execution algos work metaorders in clips;
slippage is side * (VWAP - arrival mid) / arrival mid in bps. Inputs (IMPACT_FEATURES) come from
what the gateway sees when an order arrives: the order's size, side and the horizon an algo works
it over, the prevailing `book` row (10 levels a side, schema columns) and the pretrade.features
row (rv_1m, volume_1m). The baseline in the same evaluation is the square-root
law slippage = Y * sigma * (Q / V) ** delta with Y and delta fitted on the same training rows.

Serving: `ImpactModel(path).predict_slippage(qty, side, book, rv_1m, volume_1m, horizon_s)`
(onnxruntime, card-checked) and `recommend_algo(predicted_bps, budget_bps)`. Training and the report:
`python -m pretrade.models.impact --out models`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pretrade.models.card import ModelRefused, onnx_session, read_card, write_card
from pretrade.schema import BOOK_LEVELS

log = logging.getLogger(__name__)

KIND = "impact"
IMPACT_FEATURES: tuple[str, ...] = (
    "spread_bps",        # bid-ask spread, bps of the mid
    "log_q_depth1",      # log(order size / size at the touch of the side it hits)
    "log_q_depth3",      # log(order size / cumulative size of the best 3 levels)
    "log_q_depth5",
    "log_q_depth10",
    "level3_bps",        # distance of the 3rd level from the mid, bps
    "level10_bps",       # distance of the deepest visible level from the mid, bps
    "log_sigma_bps",     # log of 1-minute realized volatility in bps (pretrade.features rv_1m)
    "log_q_volume",      # log(order size / traded volume of the last minute) (volume_1m)
    "imbalance",         # (depth of the side hit - other side) / sum over 5 levels
    "log_horizon_s",     # log(1 + seconds the order is worked over): 0 for an immediate order
)
N_IMPACT = len(IMPACT_FEATURES)
TRAIN_SEEDS = (21, 22, 23, 24, 25, 26)
TEST_SEEDS = (31, 32)
SIZE_RANGE = (0.05, 30.0)  # order sizes, in multiples of the market maker's first-level quote
METAORDERS_PER_HOUR = 6.0  # per instrument (the normal scenario's default is 2)


# ---- features -------------------------------------------------------------------------------
def _levels(book: pd.DataFrame | dict, side: str, n: int) -> np.ndarray:
    """(rows, n) array of one book column family, e.g. ask1..askN; NaN where missing."""
    cols = [f"{side}{i}" for i in range(1, n + 1)]
    if isinstance(book, dict):
        return np.array([[book.get(c, np.nan) for c in cols]], dtype=np.float64)
    return book[cols].to_numpy(dtype=np.float64)


def impact_features(qty: np.ndarray | float, side: np.ndarray | int, book: pd.DataFrame | dict,
                    rv_1m: np.ndarray | float, volume_1m: np.ndarray | float,
                    horizon_s: np.ndarray | float = 0.0) -> np.ndarray:
    """The model's input rows (n, N_IMPACT) float32: order size (units), side (+1 buy, -1 sell),
    the prevailing `book` rows (schema columns), rv_1m and volume_1m of pretrade.features, and
    the seconds an algo works the order over (0: sent at once)."""
    qty = np.atleast_1d(np.asarray(qty, dtype=np.float64))
    side = np.atleast_1d(np.asarray(side, dtype=np.float64))
    n = BOOK_LEVELS
    bid, bsz = _levels(book, "bid", n), np.nan_to_num(_levels(book, "bsize", n))
    ask, asz = _levels(book, "ask", n), np.nan_to_num(_levels(book, "asize", n))
    if np.any(np.isnan(bid[:, 0]) | np.isnan(ask[:, 0])) or np.any(ask[:, 0] <= bid[:, 0]):
        raise ValueError("impact features need a two-sided, uncrossed book (bid1 < ask1)")
    horizon = np.asarray(horizon_s, dtype=np.float64) * np.ones(len(qty))
    if np.any(qty <= 0) or not np.all(np.isin(side, (-1.0, 1.0))):
        raise ValueError("qty must be positive and side +1 (buy) or -1 (sell)")
    if np.any(~(horizon >= 0)):
        raise ValueError("horizon_s must be a number of seconds >= 0")
    mid = (bid[:, :1] + ask[:, :1]) / 2
    buy = side[:, None] > 0
    px = np.where(buy, ask, bid)           # the side an order of this side hits
    sz = np.where(buy, asz, bsz)
    other = np.where(buy, bsz, asz)
    dist = np.abs(px - mid) / mid * 1e4
    dist = np.where(np.isnan(dist), np.nanmax(dist, axis=1, keepdims=True), dist)  # short books
    cum = np.cumsum(sz, axis=1)
    q = qty[:, None]

    def lq(k: int) -> np.ndarray:
        return np.log(q[:, 0] / np.maximum(cum[:, k - 1], 1.0))

    sigma_bps = np.maximum(np.asarray(rv_1m, dtype=np.float64) * 1e4, 0.1) * np.ones(len(qty))
    vol = np.maximum(np.asarray(volume_1m, dtype=np.float64), 1.0) * np.ones(len(qty))
    s5, o5 = sz[:, :5].sum(axis=1), other[:, :5].sum(axis=1)
    X = np.column_stack([
        (ask[:, 0] - bid[:, 0]) / mid[:, 0] * 1e4,
        lq(1), lq(3), lq(5), lq(10),
        dist[:, 2], dist[:, n - 1],
        np.log(sigma_bps),
        np.log(qty / vol),
        (s5 - o5) / np.maximum(s5 + o5, 1.0),
        np.log1p(horizon),
    ])
    return X.astype(np.float32)


def sqrt_law_inputs(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sigma (bps) and Q/V of the square-root law, read back from impact feature rows."""
    i_s, i_q = IMPACT_FEATURES.index("log_sigma_bps"), IMPACT_FEATURES.index("log_q_volume")
    return np.exp(X[:, i_s].astype(np.float64)), np.exp(X[:, i_q].astype(np.float64))


# ---- data -----------------------------------------------------------------------------------
def simulated_executions(seed: int, duration: int = 3600, metaorders_per_hour: float = METAORDERS_PER_HOUR,
                         ) -> pd.DataFrame:
    """Executions in the simulator's books: market orders of random sizes, one per instrument at
    the end of every simulated minute (kind "order", horizon 0), and the metaorders the `normal`
    scenario's execution algos work in clips (kind "metaorder", horizon = clips x interval).
    Columns: time, sym, kind, side, qty, horizon_s, fill_ratio, slippage_bps, the book row seen
    at arrival, rv_1m, volume_1m (features strictly before arrival)."""
    from pretrade.features.batch import compute_features
    from pretrade.market.simulator import BUY, Simulation

    rng = np.random.default_rng(np.random.SeedSequence([seed, 8]))
    sim = Simulation("normal", seed, duration=duration, metaorders_per_hour=metaorders_per_hour)
    frames: dict[str, list[pd.DataFrame]] = {}
    rows = []
    for block in sim.blocks():
        for name, df in block.items():
            if name in ("quote", "trade", "book", "l3", "news") and len(df):
                frames.setdefault(name, []).append(df)
        if sim.clock >= sim.n_sec:
            break
        t_ns = sim.start_ns + sim.clock * 1_000_000_000
        for s in sim.sims:
            ins, book = s.ins, s.book
            bp, bs, ap, az = book.snapshot(BOOK_LEVELS)
            if not bp or not ap:
                continue
            side = BUY if rng.random() < 0.5 else -BUY
            lots = max(1, round(ins.mm_size * math.exp(rng.uniform(*np.log(SIZE_RANGE)))))
            qty = lots * ins.lot
            row: dict[str, Any] = {"time": t_ns, "sym": ins.sym, "kind": "order", "side": int(side), "qty": qty,
                                   "horizon_s": 0.0}
            for k in range(BOOK_LEVELS):
                row[f"bid{k + 1}"] = bp[k] * ins.tick if k < len(bp) else np.nan
                row[f"bsize{k + 1}"] = bs[k] if k < len(bs) else 0
                row[f"ask{k + 1}"] = ap[k] * ins.tick if k < len(ap) else np.nan
                row[f"asize{k + 1}"] = az[k] if k < len(az) else 0
            mid = (bp[0] + ap[0]) / 2 * ins.tick
            _, fills = sim.submit(ins.sym, "buy" if side == BUY else "sell", qty)
            filled = sum(f["size"] for f in fills)
            if not filled:
                continue
            vwap = sum(f["price"] * f["size"] for f in fills) / filled
            row["fill_ratio"] = filled / qty
            row["slippage_bps"] = side * (vwap - mid) / mid * 1e4
            rows.append(row)
    tables = {k: pd.concat(v, ignore_index=True) for k, v in frames.items()}
    feats = compute_features(tables)[["time", "sym", "rv_1m", "volume_1m"]]
    out = pd.DataFrame(rows)
    out["time"] = pd.to_datetime(out["time"], unit="ns")
    metas = _metaorder_rows(sim, tables["book"])
    if len(metas):
        out = pd.concat([out, metas], ignore_index=True)
    out = pd.merge_asof(out.sort_values("time", kind="stable"), feats.sort_values("time", kind="stable"),
                        on="time", by="sym", direction="backward", allow_exact_matches=False)
    out["seed"] = seed
    return out.dropna(subset=["rv_1m", "volume_1m"]).reset_index(drop=True)


def _metaorder_rows(sim, book: pd.DataFrame) -> pd.DataFrame:
    """The run's completed metaorders as execution rows, each with the last `book` row before
    its first child (the book the algo saw when it started)."""
    rows = []
    for s in sim.sims:
        for m in s.metaorders:
            if m.filled < m.qty or math.isnan(m.arrival_mid):
                continue
            arrival = m.arrival_mid * s.ins.tick
            vwap = m.notional / m.filled
            rows.append({"time": pd.Timestamp(sim.start_ns + int(m.start * 1e9), unit="ns"), "sym": m.sym,
                         "kind": "metaorder", "side": int(m.side), "qty": m.qty,
                         "horizon_s": math.ceil(m.qty / m.clip) * m.interval, "fill_ratio": 1.0,
                         "slippage_bps": m.side * (vwap - arrival) / arrival * 1e4})
    if not rows:
        return pd.DataFrame()
    cols = [c for c in book.columns if c != "time" and c != "sym"]
    df = pd.DataFrame(rows).sort_values("time", kind="stable")
    b = book.loc[book["bid1"].notna() & book["ask1"].notna() & (book["bid1"] < book["ask1"])]
    df = pd.merge_asof(df, b[["time", "sym", *cols]].sort_values("time", kind="stable"), on="time", by="sym",
                       direction="backward", allow_exact_matches=False)
    return df.dropna(subset=["bid1", "ask1"])


def dataset(seeds: tuple[int, ...], duration: int = 3600) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Feature rows, slippage targets (bps) and the raw executions of several simulated runs."""
    df = pd.concat([simulated_executions(s, duration) for s in seeds], ignore_index=True)
    X = impact_features(df["qty"].to_numpy(), df["side"].to_numpy(), df, df["rv_1m"].to_numpy(),
                        df["volume_1m"].to_numpy(), df["horizon_s"].to_numpy())
    return X, df["slippage_bps"].to_numpy(dtype=np.float64), df


# ---- the square-root law ----------------------------------------------------------------------
def sqrt_law(X: np.ndarray, Y: float, delta: float) -> np.ndarray:
    """Square-root-law slippage in bps: Y * sigma_bps * (Q / V) ** delta."""
    sigma, qv = sqrt_law_inputs(X)
    return Y * sigma * qv ** delta


def fit_sqrt_law(X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Y and delta minimising the mean absolute error on (X, y), from a log-log least-squares start."""
    from scipy.optimize import minimize

    sigma, qv = sqrt_law_inputs(X)
    ok = y > 0
    A = np.column_stack([np.ones(ok.sum()), np.log(qv[ok])])
    coef, *_ = np.linalg.lstsq(A, np.log(y[ok] / sigma[ok]), rcond=None)

    def mae(p: np.ndarray) -> float:
        return float(np.mean(np.abs(np.exp(p[0]) * sigma * qv ** p[1] - y)))

    res = minimize(mae, coef, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 4000})
    return {"Y": float(np.exp(res.x[0])), "delta": float(res.x[1])}


# ---- the network ----------------------------------------------------------------------------
def _net(mean: np.ndarray, std: np.ndarray, hidden: int = 64):
    """An MLP on standardised inputs (the scaling is part of the graph, so ONNX needs none)."""
    import torch

    class ImpactNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
            self.body = torch.nn.Sequential(
                torch.nn.Linear(N_IMPACT, hidden), torch.nn.SiLU(),
                torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                torch.nn.Linear(hidden, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body((x - self.mean) / self.std)

    return ImpactNet()


def train_net(X: np.ndarray, y: np.ndarray, seed: int = 0, epochs: int = 600, lr: float = 3e-3):
    """Fit the MLP with an L1 loss (the evaluation's metric) by full-batch Adam; returns the module."""
    import torch

    torch.manual_seed(seed)
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-6
    net = _net(mean, std)
    xt = torch.from_numpy(X.astype(np.float32))
    yt = torch.from_numpy(y.astype(np.float32))[:, None]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(net(xt), yt)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return net


def torch_predict(net, X: np.ndarray) -> np.ndarray:
    """Predicted slippage (bps) from the torch module."""
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(X.astype(np.float32))).numpy()[:, 0].astype(np.float64)


def export_onnx(net, path: str | Path) -> None:
    """Write the network to ONNX: input `features` (n, N_IMPACT) float32, output `slippage_bps` (n, 1)."""
    import torch

    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(2, N_IMPACT),), str(path), input_names=["features"],
                          output_names=["slippage_bps"],
                          dynamic_axes={"features": {0: "n"}, "slippage_bps": {0: "n"}},
                          opset_version=17, dynamo=False)


# ---- serving --------------------------------------------------------------------------------
def recommend_algo(predicted_bps: float, budget_bps: float, current: str = "TWAP",
                   pov_above: float = 2.0, split_above: float = 4.0) -> str:
    """The execution algorithm to use for an order whose predicted slippage is `predicted_bps`.

    Within budget: keep `current`. Over budget: VWAP (trade with the volume curve), POV when the
    prediction passes `pov_above` x the budget (cap participation), SPLIT (work the order as
    several parent orders over a longer horizon) past `split_above` x the budget.
    """
    if not (budget_bps > 0 and math.isfinite(budget_bps)):
        raise ValueError(f"budget_bps must be a positive number, not {budget_bps!r}")
    if not math.isfinite(predicted_bps):
        raise ValueError(f"predicted_bps must be a number, not {predicted_bps!r}")
    if predicted_bps <= budget_bps:
        return current
    if predicted_bps <= pov_above * budget_bps:
        return "VWAP"
    if predicted_bps <= split_above * budget_bps:
        return "POV"
    return "SPLIT"


class ImpactModel:
    """The served impact model: the ONNX network, checked against its card."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        card = read_card(self.path, KIND, required=("features", "sqrt_law"))
        if list(card["features"]) != list(IMPACT_FEATURES):
            raise ModelRefused(f"model {self.path} was trained on features {card['features']}, "
                               f"this code computes {list(IMPACT_FEATURES)}")
        self.session = onnx_session(self.path)
        self.card, self.version = card, str(card["version"])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted slippage (bps) for feature rows (n, N_IMPACT)."""
        out = self.session.run(None, {"features": np.asarray(X, dtype=np.float32).reshape(-1, N_IMPACT)})[0]
        return out[:, 0].astype(np.float64)

    def predict_slippage(self, qty: np.ndarray | float, side: np.ndarray | int, book: pd.DataFrame | dict,
                         rv_1m: np.ndarray | float, volume_1m: np.ndarray | float,
                         horizon_s: np.ndarray | float = 0.0) -> np.ndarray:
        """Predicted slippage (bps, > 0 is a cost) of orders of `qty` units and `side` (+1/-1)
        against the prevailing book rows and features (rv_1m, volume_1m of pretrade.features),
        sent at once (horizon 0) or worked by an algo over `horizon_s` seconds."""
        return self.predict(impact_features(qty, side, book, rv_1m, volume_1m, horizon_s))


def predict_slippage(model: ImpactModel, qty: np.ndarray | float, side: np.ndarray | int,
                     book: pd.DataFrame | dict, rv_1m: np.ndarray | float,
                     volume_1m: np.ndarray | float, horizon_s: np.ndarray | float = 0.0) -> np.ndarray:
    """Predicted slippage (bps) of orders; see ImpactModel.predict_slippage."""
    return model.predict_slippage(qty, side, book, rv_1m, volume_1m, horizon_s)


# ---- evaluation and training ------------------------------------------------------------------
def evaluate(y: np.ndarray, pred_nn: np.ndarray, pred_law: np.ndarray, X: np.ndarray) -> dict[str, Any]:
    """MAE of both models overall, on the largest 5% of orders (by Q / V and by Q / depth10), and
    separately on immediate orders and on metaorders (horizon > 0)."""
    _, qv = sqrt_law_inputs(X)
    qd = X[:, IMPACT_FEATURES.index("log_q_depth10")]
    meta = X[:, IMPACT_FEATURES.index("log_horizon_s")] > 0
    out: dict[str, Any] = {"orders": int(len(y)), "mean_slippage_bps": float(y.mean())}
    for name, mask in (("all", np.ones(len(y), bool)), ("top5_q_over_v", qv >= np.quantile(qv, 0.95)),
                       ("top5_q_over_depth", qd >= np.quantile(qd, 0.95)), ("immediate", ~meta),
                       ("metaorders", meta)):
        if not mask.any():
            continue
        nn = float(np.mean(np.abs(pred_nn[mask] - y[mask])))
        law = float(np.mean(np.abs(pred_law[mask] - y[mask])))
        out[name] = {"orders": int(mask.sum()), "mae_nn_bps": nn, "mae_sqrt_law_bps": law,
                     "reduction": 1 - nn / law}
    return out


def train_impact(out_dir: str | Path = "models", seed: int = 0, train_seeds: tuple[int, ...] = TRAIN_SEEDS,
                 test_seeds: tuple[int, ...] = TEST_SEEDS, duration: int = 3600,
                 epochs: int = 600) -> dict[str, Any]:
    """Simulate, fit the network and the square-root law, evaluate on held-out seeds, export ONNX
    and its card; returns the card."""
    t0 = time.perf_counter()
    X, y, _ = dataset(train_seeds, duration)
    Xt, yt, _ = dataset(test_seeds, duration)
    log.info("data: %d training and %d held-out executions (%.0f s)", len(y), len(yt), time.perf_counter() - t0)
    law = fit_sqrt_law(X, y)
    net = train_net(X, y, seed=seed, epochs=epochs)
    metrics = evaluate(yt, torch_predict(net, Xt), sqrt_law(Xt, **law), Xt)
    metrics["train_mae_nn_bps"] = float(np.mean(np.abs(torch_predict(net, X) - y)))
    log.info("held-out: %s", json.dumps(metrics))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "impact.onnx"
    export_onnx(net, path)
    data_hash = hashlib.sha256(X.tobytes() + y.tobytes()).hexdigest()
    card = {
        "kind": KIND,
        "version": f"impact-1.0.0+{data_hash[:8]}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "features": list(IMPACT_FEATURES),
        "input": "pretrade.models.impact.impact_features(qty, side, book, rv_1m, volume_1m, horizon_s), float32",
        "output": "slippage_bps (n, 1): predicted side * (VWAP - arrival mid) / mid, bps",
        "training_data": {"scenario": "normal", "seeds": list(train_seeds), "seconds": duration,
                          "orders": int(len(y)), "sha256": data_hash,
                          "sizes": f"log-uniform {SIZE_RANGE} x the market maker's first-level quote",
                          "how": "one market order per instrument per simulated minute (Simulation.submit) "
                                 "and the scenario's metaorders (execution algos, clips every 3 s)",
                          "metaorders_per_hour": METAORDERS_PER_HOUR,
                          "metaorders": int((X[:, IMPACT_FEATURES.index("log_horizon_s")] > 0).sum())},
        "test_data": {"seeds": list(test_seeds), "orders": int(len(yt))},
        "model": {"type": "MLP 64-64 SiLU, L1 loss, full-batch Adam", "seed": seed, "epochs": epochs},
        "sqrt_law": law,
        "evaluation": metrics,
    }
    write_card(path, card)
    log.info("wrote %s (%s) in %.0f s", path, card["version"], time.perf_counter() - t0)
    return read_card(path, KIND)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="models", help="folder for impact.onnx and impact.json (default models)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (weights)")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=list(TRAIN_SEEDS),
                        help="simulation seeds trained on (one simulated hour each by default)")
    parser.add_argument("--test-seeds", type=int, nargs="+", default=list(TEST_SEEDS),
                        help="held-out simulation seeds the figures are measured on")
    parser.add_argument("--duration", type=int, default=3600, help="seconds per simulated run")
    parser.add_argument("--epochs", type=int, default=600, help="training epochs")


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # the machine is shared; one thread is as fast at these sizes
    card = train_impact(args.out, args.seed, tuple(args.train_seeds), tuple(args.test_seeds), args.duration,
                        args.epochs)
    print(json.dumps(card["evaluation"], indent=2))
    print(f"square-root law fitted: {card['sqrt_law']}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m pretrade.models.impact", description=__doc__.splitlines()[0])
    add_arguments(ap)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raise SystemExit(run(ap.parse_args()))
