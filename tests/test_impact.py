"""The market-impact model: features from a book, the square-root law fit, the algo recommendation,
ONNX agreement, card checks, and the shipped model against the fitted law on a held-out run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pretrade.models.card import ModelRefused, write_card
from pretrade.models.impact import (
    IMPACT_FEATURES,
    N_IMPACT,
    ImpactModel,
    export_onnx,
    fit_sqrt_law,
    impact_features,
    predict_slippage,
    recommend_algo,
    simulated_executions,
    sqrt_law,
    torch_predict,
    train_net,
)

MODEL = Path(__file__).resolve().parents[1] / "models" / "impact.onnx"


def _book(bid: float = 99.99, ask: float = 100.01, size: int = 100) -> dict:
    row = {}
    for i in range(1, 11):
        row[f"bid{i}"], row[f"ask{i}"] = bid - 0.01 * (i - 1), ask + 0.01 * (i - 1)
        row[f"bsize{i}"], row[f"asize{i}"] = size * i, size
    return row


def test_features_read_the_side_the_order_hits():
    book = _book()
    buy = impact_features(300, 1, book, 0.001, 5000)[0]
    sell = impact_features(300, -1, book, 0.001, 5000)[0]
    f = dict(zip(IMPACT_FEATURES, buy, strict=True))
    assert buy.shape == (N_IMPACT,) and buy.dtype == np.float32
    assert f["spread_bps"] == pytest.approx(2.0, rel=1e-4)
    assert f["log_q_depth1"] == pytest.approx(np.log(300 / 100), rel=1e-5)    # asks: 100 a level
    assert f["log_q_depth10"] == pytest.approx(np.log(300 / 1000), rel=1e-5)
    assert dict(zip(IMPACT_FEATURES, sell, strict=True))["log_q_depth1"] == pytest.approx(np.log(3.0), rel=1e-5)  # bid1 100
    assert dict(zip(IMPACT_FEATURES, sell, strict=True))["log_q_depth3"] == pytest.approx(np.log(300 / 600), rel=1e-5)
    assert f["log_sigma_bps"] == pytest.approx(np.log(10.0), rel=1e-5)
    assert f["log_q_volume"] == pytest.approx(np.log(300 / 5000), rel=1e-5)
    assert f["imbalance"] < 0 < dict(zip(IMPACT_FEATURES, sell, strict=True))["imbalance"]  # asks thinner than bids
    assert f["log_horizon_s"] == 0.0  # sent at once
    worked = dict(zip(IMPACT_FEATURES, impact_features(300, 1, book, 0.001, 5000, horizon_s=120)[0], strict=True))
    assert worked["log_horizon_s"] == pytest.approx(np.log1p(120), rel=1e-5)


def test_features_refuse_bad_input():
    with pytest.raises(ValueError, match="uncrossed"):
        impact_features(100, 1, _book(bid=100.02, ask=100.01), 0.001, 1000)
    with pytest.raises(ValueError, match="positive"):
        impact_features(0, 1, _book(), 0.001, 1000)
    with pytest.raises(ValueError, match="side"):
        impact_features(100, 2, _book(), 0.001, 1000)
    with pytest.raises(ValueError, match="horizon"):
        impact_features(100, 1, _book(), 0.001, 1000, horizon_s=-1)


def test_sqrt_law_fit_recovers_its_parameters():
    rng = np.random.default_rng(0)
    n = 2000
    X = np.zeros((n, N_IMPACT), np.float32)
    X[:, IMPACT_FEATURES.index("log_sigma_bps")] = np.log(rng.uniform(2, 20, n))
    X[:, IMPACT_FEATURES.index("log_q_volume")] = np.log(rng.uniform(0.01, 3, n))
    y = sqrt_law(X, 0.8, 0.5) * np.exp(0.05 * rng.standard_normal(n))
    law = fit_sqrt_law(X, y)
    assert law["Y"] == pytest.approx(0.8, rel=0.05) and law["delta"] == pytest.approx(0.5, abs=0.03)


def test_recommend_algo_escalates_with_predicted_slippage():
    assert recommend_algo(4.0, 5.0) == "TWAP"
    assert recommend_algo(4.0, 5.0, current="DMA") == "DMA"
    assert recommend_algo(7.0, 5.0) == "VWAP"
    assert recommend_algo(15.0, 5.0) == "POV"
    assert recommend_algo(40.0, 5.0) == "SPLIT"
    with pytest.raises(ValueError):
        recommend_algo(4.0, 0.0)
    with pytest.raises(ValueError):
        recommend_algo(float("nan"), 5.0)


def test_onnx_agrees_with_torch_and_card_is_checked(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((256, N_IMPACT)).astype(np.float32)
    y = np.abs(X[:, 1]) * 3 + X[:, 0] ** 2
    net = train_net(X, y, seed=0, epochs=30)
    path = tmp_path / "impact.onnx"
    export_onnx(net, path)
    write_card(path, {"kind": "impact", "version": "t", "features": list(IMPACT_FEATURES),
                      "sqrt_law": {"Y": 1.0, "delta": 0.5}})
    model = ImpactModel(path)
    np.testing.assert_allclose(model.predict(X), torch_predict(net, X), rtol=1e-4, atol=1e-4)
    write_card(path, {"kind": "impact", "version": "t", "features": ["size"], "sqrt_law": {}})
    with pytest.raises(ModelRefused, match="features"):
        ImpactModel(path)


def test_executions_are_deterministic_by_seed():
    a = simulated_executions(5, duration=420, metaorders_per_hour=30)
    b = simulated_executions(5, duration=420, metaorders_per_hour=30)
    assert a.equals(b)
    orders, metas = a[a["kind"] == "order"], a[a["kind"] == "metaorder"]
    assert len(orders) > 40 and len(metas) > 3
    assert (orders["slippage_bps"] > 0).all()  # market orders pay at least half the spread
    assert (orders["horizon_s"] == 0).all() and (metas["horizon_s"] > 0).all()
    assert metas[["bid1", "ask1", "rv_1m"]].notna().all().all()  # the book and features at the start


@pytest.fixture(scope="module")
def held_out():
    return simulated_executions(77, duration=1200)


@pytest.mark.skipif(not MODEL.exists(), reason="models/impact.onnx not trained yet")
def test_shipped_model_beats_the_fitted_sqrt_law_on_a_held_out_run(held_out):
    """On a run no training saw: >= 20% lower MAE than the card's fitted law overall, and no worse
    on the largest 5% of immediate orders (the largest metaorders are too few in 20 minutes to
    compare; the card's evaluation on two held-out hours covers them)."""
    model = ImpactModel(MODEL)
    df = held_out
    args = (df["qty"].to_numpy(), df["side"].to_numpy(), df, df["rv_1m"].to_numpy(), df["volume_1m"].to_numpy(),
            df["horizon_s"].to_numpy())
    pred = predict_slippage(model, *args)
    X = impact_features(*args)
    y = df["slippage_bps"].to_numpy()
    law = sqrt_law(X, **model.card["sqrt_law"])
    assert np.mean(np.abs(pred - y)) <= 0.8 * np.mean(np.abs(law - y))
    now = (df["kind"] == "order").to_numpy()
    big = df["qty"].to_numpy() / df["volume_1m"].to_numpy()
    top = now & (big >= np.quantile(big[now], 0.95))
    assert np.mean(np.abs(pred[top] - y[top])) <= np.mean(np.abs(law[top] - y[top]))
    # bigger orders on the same book are predicted to cost more
    row = df.iloc[[0, 0]]
    q = np.array([1.0, 50.0]) * df["qty"].iloc[0]
    p = model.predict_slippage(q, np.array([1, 1]), row, row["rv_1m"].to_numpy(), row["volume_1m"].to_numpy())
    assert p[1] > p[0]


@pytest.mark.skipif(not MODEL.exists(), reason="models/impact.onnx not trained yet")
def test_shipped_card_records_the_targets_met_on_held_out_seeds():
    ev = ImpactModel(MODEL).card["evaluation"]
    assert ev["all"]["reduction"] >= 0.2 and ev["metaorders"]["orders"] > 50
    assert ev["top5_q_over_v"]["reduction"] >= 0 and ev["top5_q_over_depth"]["reduction"] >= 0
