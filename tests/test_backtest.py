"""Walk-forward evaluation: folds without look-ahead, risk metrics, static limits, the report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pretrade.backtest.baseline import tune_static_limits
from pretrade.backtest.folds import LookAheadError, check_no_lookahead, walk_forward
from pretrade.backtest.metrics import classification_report, detection_lead_time
from pretrade.models.fatfinger import OrderSet
from pretrade.models.order_features import FEATURES, N_FEATURES

S = 1_000_000_000
DAY = 86_400 * S


def test_folds_train_only_on_the_past_with_an_embargo():
    t = np.arange(10_000, dtype=np.int64) * S  # one row per second
    folds = list(walk_forward(t, n_folds=4, embargo_ns=60 * S, min_train=0.3))
    assert len(folds) == 4
    covered = np.concatenate([f.test for f in folds])
    assert len(np.unique(covered)) == len(covered) == 7_000  # test windows tile the later 70%
    for f in folds:
        assert t[f.train].max() < t[f.test].min() - 60 * S
        assert len(f.train) > 0
    assert len(folds[-1].train) > len(folds[0].train)  # expanding: each fold retrains on more


def test_shuffling_the_future_into_the_past_fails():
    t = np.arange(5_000, dtype=np.int64) * S
    rng = np.random.default_rng(0)
    shuffled = t.copy()
    rng.shuffle(shuffled)
    with pytest.raises(LookAheadError):
        list(walk_forward(shuffled, n_folds=3, embargo_ns=0))
    late = t.copy()
    late[10] = t[-1] + S  # one future row hidden early in the history
    with pytest.raises(LookAheadError):
        list(walk_forward(late, n_folds=3, embargo_ns=0))


def test_the_guard_refuses_training_rows_inside_the_embargo():
    check_no_lookahead(np.array([0, 10 * S]), np.array([100 * S]), embargo_ns=60 * S)
    with pytest.raises(LookAheadError, match="embargo"):
        check_no_lookahead(np.array([0, 50 * S]), np.array([100 * S]), embargo_ns=60 * S)


def test_classification_report_counts_what_risk_cares_about():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    flagged = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    kind = np.array(["", "", "", "", "extra_zeros", "extra_zeros", "wrong_side", "wrong_side"])
    gross = np.array([0, 0, 0, 0, 1, 1, 0, 0], dtype=bool)
    times = np.array([0, 1, 2, 3, DAY, DAY + 1, DAY + 2, DAY + 3], dtype=np.int64)
    r = classification_report(y, flagged.astype(float), flagged, kind, gross, times)
    assert r["fpr"] == 0.25 and r["valid_flagged"] == 1
    assert r["false_alarms_per_day"] == 0.5  # two days in the data
    assert r["fnr"] == 0.25 and r["recall"] == 0.75 and r["precision"] == 0.75
    assert r["recall_gross"] == 1.0 and r["recall_subtle"] == 0.5
    assert r["recall_by_kind"]["wrong_side"] == {"errors": 2, "caught": 1, "recall": 0.5}
    assert 0 < r["pr_auc"] <= 1


def test_detection_lead_time_is_generic_over_any_score():
    t = np.arange(0, 100, dtype=np.int64) * S
    score = np.where(t >= 40 * S, 0.95, 0.01)
    assert detection_lead_time(t, score, 0.9, start=30 * S, bottom=70 * S) == 30.0
    assert math.isnan(detection_lead_time(t, score, 0.99, start=30 * S, bottom=70 * S))
    assert math.isnan(detection_lead_time(t, score, 0.9, start=0, bottom=20 * S))  # alarm came after


def _orderset(n: int = 3000, seed: int = 0) -> OrderSet:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    kind = np.where(rng.random(n) < 0.05, "extra_zeros", "").astype(object)
    y = (kind != "").astype(np.int8)
    qty = np.round(np.exp(rng.normal(5, 0.5, n)))
    qty[y == 1] *= 100
    X[:, FEATURES.index("qty_vs_trader")] += 6.0 * y
    X[:, FEATURES.index("px_vs_touch_bps")] = rng.normal(0, 3, n)
    X[:, FEATURES.index("px_vs_mid_log")] = np.abs(rng.normal(0, 1e-4, n))
    t = np.sort(rng.integers(0, 5 * 3600 * S, n)).astype(np.int64)
    return OrderSet(X, y, kind.astype(str), y.astype(bool), t, rng.choice(["ACME", "GLOW"], n).astype(object),
                    qty, np.zeros(n, dtype=np.int64), np.full(n, np.nan), y.astype(bool))


def test_static_limits_tuned_on_training_data_block_gross_sizes_only():
    d = _orderset()
    lim = tune_static_limits(d.qty, d.sym, d.X, d.y, target_fpr=0.001)
    flags = lim.flags(d.qty, d.sym, d.X)
    assert flags[d.y == 0].mean() <= 0.001
    assert flags[d.y == 1].mean() > 0.95
    assert (lim.score(d.qty, d.sym, d.X)[flags] >= 1).all()


def test_walk_forward_and_report_end_to_end(tmp_path):
    from pretrade.backtest.fatfinger import run_walk_forward
    from pretrade.backtest.report import write_report

    d = _orderset(6000)  # enough rows per fold for its out-of-fold threshold
    res = run_walk_forward(d, n_folds=2, embargo_s=60, seed=0)
    assert len(res.folds) == 2
    for f in res.folds:
        assert f["train_end"] < f["test_start"]
    m = res.report("model")
    assert m["recall"] > 0.9 and m["orders"] == len(res.test_idx)
    path = write_report(res, tmp_path, {"command": "test", "seeds": [0], "duration": 0, "embargo_s": 60,
                                        "sim_params": {}})
    text = path.read_text()
    assert "static limits" in text and "extra_zeros" in text and "scaled to the model" in text

    # --card: the figures go into a (copied) shipped model's card, which still loads
    import json
    import shutil
    from pathlib import Path

    from pretrade.backtest.cli import attach_to_card
    from pretrade.backtest.fatfinger import score_served
    from pretrade.models.fatfinger import FatFingerModel

    models = Path(__file__).resolve().parents[1] / "models"
    for name in ("fatfinger.onnx", "fatfinger.json"):
        shutil.copy(models / name, tmp_path / name)
    res.served = score_served(res, tmp_path / "fatfinger.onnx")
    attach_to_card(str(tmp_path / "fatfinger.onnx"), res, path,
                   {"command": "test", "seeds": [0], "history_seeds": [], "cal_seeds": [], "embargo_s": 60})
    wf = json.loads((tmp_path / "fatfinger.json").read_text())["walk_forward"]
    assert wf["model"]["recall_gross"] == m["recall_gross"] and wf["folds"] == 2
    assert wf["served"]["version"] == FatFingerModel(tmp_path / "fatfinger.onnx").version
    sm = res.report("static_matched")
    assert sm["valid_flagged"] <= m["valid_flagged"]
    assert res.report("layered")["recall"] >= m["recall"]
    for png in ("fatfinger_pr_roc.png", "fatfinger_reliability.png", "fatfinger_recall_by_kind.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_history_days_train_every_fold_and_are_never_tested():
    from pretrade.backtest.fatfinger import run_walk_forward

    hist, held = _orderset(2000, seed=1), _orderset(1500, seed=2)
    held.time = held.time + hist.time.max() + DAY  # the held-out days come after the history
    res = run_walk_forward(held, n_folds=2, embargo_s=60, seed=0, min_train=0.0, history=hist)
    assert len(res.data) == len(hist) + len(held)
    assert res.test_idx.min() == len(hist) and len(res.test_idx) == len(held)  # every held-out row, once
    assert all(f["train_orders"] >= len(hist) for f in res.folds)
    late = _orderset(500, seed=3)
    late.time = late.time + held.time.max() + S  # a "history" after the test days: look-ahead
    with pytest.raises(LookAheadError):
        run_walk_forward(held, n_folds=2, embargo_s=60, seed=0, min_train=0.0, history=late)


def test_gross_is_measured_against_the_traders_typical_size_and_by_intent_beside_it():
    """An extra zero on an order a third of the trader's typical size is gross by intent, not by
    what a risk officer sees; the size oracle's bound says how many such errors no detector can see."""
    import pandas as pd

    from pretrade.backtest.report import size_oracle_bound
    from pretrade.models.fatfinger import label_orders

    orders = pd.DataFrame({"orderid": ["a", "b", "c", "d"], "qty": [300.0, 1000.0, 3000.0, 100.0],
                           "price": [100.0, 100.0, 100.0, 112.0]})
    errors = pd.DataFrame({"orderid": ["a", "b", "d"], "kind": ["extra_zeros", "extra_zeros", "price_decimal_shift"]})
    market = pd.DataFrame({"bid": [99.9] * 4, "ask": [100.1] * 4})
    kind, gross, intent = label_orders(orders, errors, market, np.full(4, 100.0))
    assert list(kind) == ["extra_zeros", "extra_zeros", "", "price_decimal_shift"]
    assert list(gross) == [False, True, False, True]       # 3x typical is not gross to the eye; 12% off is
    assert list(intent) == [True, True, False, True]       # every extra zero is gross by intent
    assert list(label_orders(orders, errors, market)[1]) == list(intent)   # without typical sizes: by intent

    n = 10_000
    rng = np.random.default_rng(0)
    d = _orderset()
    d = d.take(np.arange(min(len(d), n)))
    d.typical = np.full(len(d), 10.0)
    d.qty = np.where(d.y == 1, 10.0 * np.where(np.arange(len(d)) % 2 == 0, 0.2, 5.0), rng.lognormal(np.log(10), 0.3, len(d)))
    d.gross_intent = d.y.astype(bool)
    d.kind = np.where(d.y == 1, "extra_zeros", "")
    b = size_oracle_bound(d)
    assert b["errors"] == int(d.y.sum()) and 0.45 < b["recall"] < 0.55   # the small half is invisible
