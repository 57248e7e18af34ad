"""Fat-finger model: order features (one function, incremental history), ONNX export and serving."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pretrade.models.card import ModelRefused, write_card
from pretrade.models.fatfinger import (
    KIND,
    FatFingerModel,
    calibrate,
    export_onnx,
    fit_classifier,
    fit_platt,
    margins,
    reliability_table,
    threshold_for_fpr,
)
from pretrade.models.order_features import (
    FEATURES,
    N_FEATURES,
    NS,
    Market,
    Order,
    TraderHistory,
    order_features,
    trailing_zeros,
)
from pretrade.models.tree_onnx import margin_native, trees_from_hgb

F = {name: i for i, name in enumerate(FEATURES)}
MKT = Market(bid=99.99, ask=100.01, volume_1m=50_000, vol_z=0.5, anomaly=0.1)


def _habit(history: TraderHistory, n: int = 30, qty: float = 500, side: int = 1) -> int:
    """Feed a trader n ordinary orders in ACME, 10 s apart; returns the next time."""
    rng = np.random.default_rng(0)
    t = 0
    for _ in range(n):
        t += 10 * NS
        q = float(round(qty * math.exp(0.2 * rng.standard_normal()), -2) or 100)
        order_features(Order(t, "ACME", "ACC01", side, q, 99.99 if side > 0 else 100.01), MKT, history)
    return t


def test_size_price_side_and_duplicate_features_read_as_intended():
    h = TraderHistory()
    t = _habit(h)
    normal = order_features(Order(t + NS, "ACME", "ACC01", 1, 500, 99.99), MKT, h)
    big = order_features(Order(t + 20 * NS, "ACME", "ACC01", 1, 5_000, 99.98), MKT, h)
    assert abs(normal[F["qty_vs_trader"]]) < 0.5
    assert big[F["qty_vs_trader"]] == pytest.approx(math.log(10), abs=0.5)
    assert big[F["qty_z_trader"]] > 4
    above = order_features(Order(t + 30 * NS, "ACME", "ACC01", 1, 500, 110.0), MKT, h)
    assert above[F["px_vs_touch_bps"]] == pytest.approx((110 - 100.01) / 100 * 1e4, rel=1e-4)
    assert above[F["px_vs_mid_log"]] == pytest.approx(math.log(1.1), rel=1e-3)
    wrong = order_features(Order(t + 40 * NS, "ACME", "ACC01", -1, 500, 100.01), MKT, h)
    assert wrong[F["side_vs_trader"]] < -0.9
    first = order_features(Order(t + 50 * NS, "ACME", "ACC01", 1, 700, 99.97), MKT, h)
    dup = order_features(Order(t + 50 * NS + 20_000_000, "ACME", "ACC01", 1, 700, 99.97), MKT, h)
    assert first[F["dup_log_seconds"]] == 6.0
    assert dup[F["dup_log_seconds"]] == pytest.approx(math.log10(0.02), abs=0.025)
    assert dup[F["time_of_day"]] == pytest.approx(((t + 50 * NS) % (86_400 * NS)) / (86_400 * NS), abs=1e-6)
    assert dup[F["anomaly"]] == pytest.approx(0.1)


def test_firm_habit_and_notional_typed_as_quantity():
    """A new trader's size is read against the firm's habit in the instrument; a quantity equal
    to the trader's usual notional (qty * price) reads as a notional gap near zero."""
    h = TraderHistory()
    t = _habit(h)  # ACC01 trades ~500 ACME
    new = order_features(Order(t + NS, "ACME", "ACC09", 1, 50_000, 99.99), MKT, h)
    assert new[F["trader_orders"]] == 0.0 and new[F["qty_vs_trader"]] == 0.0
    assert new[F["qty_vs_firm"]] == pytest.approx(math.log(100), abs=0.5)
    assert new[F["notional_gap"]] == 10.0  # no size habit yet: no notional to compare with
    notional = order_features(Order(t + 2 * NS, "ACME", "ACC01", 1, 50_000, 99.99), MKT, h)
    usual = order_features(Order(t + 3 * NS, "ACME", "ACC01", 1, 500, 99.99), MKT, h)
    assert notional[F["notional_gap"]] < 0.5 < usual[F["notional_gap"]]
    assert usual[F["notional_gap"]] == pytest.approx(math.log(100), abs=0.5)


def test_history_is_per_trader_and_instrument_and_scale_free():
    """A trader's habit in one instrument says nothing about another; prices scale away."""
    h = TraderHistory()
    t = _habit(h)
    other = order_features(Order(t + NS, "ESZ6", "ACC01", 1, 5_000, 5000.0), Market(4999.75, 5000.25), h)
    assert other[F["qty_vs_trader"]] == 0.0 and other[F["trader_orders"]] == 0.0
    a = order_features(Order(1, "X", "A", 1, 100, 10.5), Market(9.99, 10.01), TraderHistory())
    b = order_features(Order(1, "X", "A", 1, 100, 1050.0), Market(999.0, 1001.0), TraderHistory())
    np.testing.assert_allclose(a[[F["px_vs_touch_bps"], F["px_vs_mid_log"], F["spread_bps"]]],
                               b[[F["px_vs_touch_bps"], F["px_vs_mid_log"], F["spread_bps"]]], rtol=1e-5)


def test_batch_replay_equals_live_calls_order_by_order():
    """Training (feature_matrix over a frame) and live (one call per order) give the same rows."""
    import pandas as pd

    from pretrade.models.fatfinger import feature_matrix

    rng = np.random.default_rng(3)
    n = 200
    orders = pd.DataFrame({
        "time": pd.to_datetime(np.sort(rng.integers(0, 600 * NS, n)), unit="ns"),
        "sym": rng.choice(["ACME", "GLOW"], n), "account": rng.choice(["ACC01", "ACC02"], n),
        "side": rng.choice(["buy", "sell"], n), "qty": rng.choice([100, 200, 500, 5000], n),
        "price": rng.choice([9.99, 10.0, 10.01, 100.0], n), "ordtype": rng.choice(["limit", "marketable"], n)})
    market = pd.DataFrame({"bid": 9.99, "ask": 10.01, "volume_1m": rng.uniform(0, 1e5, n),
                           "vol_z": rng.normal(size=n), "anomaly": rng.uniform(size=n)})
    batch = feature_matrix(orders, market)
    h = TraderHistory()
    for k, r in enumerate(orders.itertuples()):
        live = order_features(Order(r.time.value, r.sym, r.account, 1 if r.side == "buy" else -1, r.qty, r.price,
                                    r.ordtype == "marketable"), Market(*market.iloc[k]), h)
        np.testing.assert_array_equal(live, batch[k])


def test_an_extra_zero_reads_as_one_more_trailing_zero_than_usual():
    h = TraderHistory()
    t = _habit(h)  # sizes like 400, 500, 600: two trailing zeros
    typo = order_features(Order(t + NS, "ACME", "ACC01", 1, 5_000, 99.99), MKT, h)
    assert typo[F["zeros_vs_trader"]] == pytest.approx(1.0, abs=0.15)
    assert trailing_zeros(5_000) == 3 and trailing_zeros(1234) == 0 and trailing_zeros(2.5) == 0


def test_the_side_habit_starts_afresh_each_session_and_activity_ignores_the_night():
    """Yesterday's side is not today's: after a night the first order of the other side is not read
    as a wrong side, while a flip within the session is. Overnight gaps do not count as time
    active, so the usual order rate is the rate while trading."""
    h = TraderHistory()
    t = _habit(h, side=1)
    same_day = order_features(Order(t + NS, "ACME", "ACC01", -1, 500, 100.01), MKT, TraderHistory())
    flip = order_features(Order(t + 5 * NS, "ACME", "ACC01", -1, 500, 100.01), MKT, h)
    assert flip[F["side_vs_trader"]] < -0.9 and same_day[F["side_vs_trader"]] == 0.0
    next_day = t + 20 * 3600 * NS
    first = order_features(Order(next_day, "ACME", "ACC01", -1, 500, 100.01), MKT, h)
    assert first[F["side_vs_trader"]] == 0.0 and first[F["side_orders"]] == 0.0
    second = order_features(Order(next_day + 10 * NS, "ACME", "ACC01", -1, 500, 100.01), MKT, h)
    assert second[F["side_vs_trader"]] > 0.9  # today's side, learnt from today's first order
    assert first[F["activity_ratio"]] < 1.0  # not inflated by a usual rate spread over the night
    assert first[F["trader_orders"]] == pytest.approx(math.log1p(31))  # the size habit carries over


def _order_rows(n: int = 300, seed: int = 3):
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "time": pd.to_datetime(np.sort(rng.integers(0, 2 * 86_400 * NS, n)), unit="ns"),
        "sym": rng.choice(["ACME", "GLOW"], n), "account": rng.choice(["ACC01", "ACC02", "ACC03"], n),
        "side": rng.choice(["buy", "sell"], n), "qty": rng.choice([100, 200, 500, 5000], n).astype(float),
        "price": rng.choice([9.99, 10.0, 10.01, 100.0], n), "ordtype": rng.choice(["limit", "marketable"], n),
        "bid": rng.choice([9.99, np.nan], n, p=[0.9, 0.1]), "ask": 10.01})


def test_warm_history_equals_replaying_the_orders_one_by_one():
    """The gateway warms its history from earlier days' orders: the same history as live replay,
    whatever the row order of the frame."""
    from pretrade.models.order_features import warm_history

    orders = _order_rows()
    live = TraderHistory()
    for r in orders.itertuples():
        order_features(Order(r.time.value, r.sym, r.account, 1 if r.side == "buy" else -1, r.qty, r.price,
                             r.ordtype == "marketable"), Market(r.bid, r.ask), live)
    shuffled = orders.sample(frac=1.0, random_state=0)
    assert warm_history(shuffled) == live
    assert warm_history(orders.drop(columns=["bid", "ask"])).habits.keys() == live.habits.keys()
    # the next order scores the same against either history
    nxt = Order(3 * 86_400 * NS, "ACME", "ACC01", 1, 5000, 10.0)
    np.testing.assert_array_equal(order_features(nxt, MKT, warm_history(orders)), order_features(nxt, MKT, live))


def test_warm_history_skips_bad_rows_and_counts_them(caplog):
    from pretrade.models.order_features import warm_history

    orders = _order_rows(50)
    good = warm_history(orders)
    bad = orders.copy()
    bad.loc[3, "qty"], bad.loc[7, "price"], bad.loc[9, "side"] = np.nan, -1.0, "short"
    bad.loc[11, "account"], bad.loc[13, "time"] = None, None
    with caplog.at_level("INFO", logger="pretrade.models.order_features"):
        warmed = warm_history(bad)
    assert "5 rows skipped" in caplog.text
    assert sum(h.n for h in warmed.habits.values()) == sum(h.n for h in good.habits.values()) - 5
    assert warm_history(orders.iloc[:0]) == TraderHistory()
    with pytest.raises(ValueError, match="price"):
        warm_history(orders.drop(columns=["price"]))


@pytest.mark.parametrize("bad", [dict(qty=0), dict(qty=float("nan")), dict(price=-1.0), dict(side=2),
                                 dict(account="")])
def test_bad_orders_are_refused_at_the_boundary(bad):
    h = TraderHistory()
    kw = dict(time_ns=1, sym="ACME", account="ACC01", side=1, qty=100.0, price=100.0) | bad
    with pytest.raises(ValueError):
        order_features(Order(**kw), MKT, h)
    assert not h.habits  # nothing recorded for a refused order


def test_missing_quote_gives_neutral_price_features():
    row = order_features(Order(1, "ACME", "ACC01", 1, 100, 100.0), Market(), TraderHistory())
    assert row[F["px_vs_touch_bps"]] == 0 and row[F["spread_bps"]] == 0 and np.isfinite(row).all()


# ---- model, ONNX, card ---------------------------------------------------------------------------
def _synthetic(n: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    y = ((X[:, 0] > 1.8) | (X[:, 6] > 2.2) | (rng.random(n) < 0.01)).astype(np.int8)
    return X, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    X, y = _synthetic()
    clf = fit_classifier(X, y, seed=0, max_iter=60)
    cal = fit_platt(margins(clf, X), y)
    path = tmp_path_factory.mktemp("ff") / "fatfinger.onnx"
    export_onnx(clf, cal, path)
    write_card(path, {"kind": KIND, "version": "test", "features": list(FEATURES),
                      "calibration": {"method": "platt", **cal}, "threshold": 0.5,
                      "margin_threshold": float((0.0 - cal["b"]) / cal["a"])})
    return clf, cal, path, X


def test_native_tree_walk_equals_scikit_learn_exactly(trained):
    clf, _, _, X = trained
    Xt, _ = _synthetic(300, seed=1)
    np.testing.assert_array_equal(margin_native(trees_from_hgb(clf), Xt), margins(clf, Xt))


def test_onnx_agrees_with_native_model(trained):
    clf, cal, path, _ = trained
    Xt, _ = _synthetic(2000, seed=2)
    served = FatFingerModel(path)
    p_onnx = served.probability(Xt)
    p_native = calibrate(margins(clf, Xt), cal)
    assert np.abs(p_onnx - p_native).max() < 1e-5
    p, block = served.score(Xt)
    np.testing.assert_array_equal(p, p_onnx)
    np.testing.assert_array_equal(block, margins(clf, Xt) >= served.margin_threshold)
    one, blocked = served.score_order(Order(1, "ACME", "ACC01", 1, 100, 100.0), MKT, TraderHistory())
    assert 0.0 <= one <= 1.0 and isinstance(blocked, bool)


def test_threshold_and_calibration_come_from_days_the_model_did_not_see(monkeypatch):
    """Out-of-fold margins: each group of whole days is scored by a model fitted on the other
    days; the final model is fitted on every day; the threshold flags <= TARGET_FPR of the valid
    orders among those margins."""
    from pretrade.models import fatfinger as ff

    X, y = _synthetic(3000)
    day = np.repeat(np.arange(6), 500)
    X[:, F["time_of_day"]] = day / 10  # marks each row's day, to see which days a fit gets
    s = ff.OrderSet(X, y, np.where(y == 1, "extra_zeros", ""), y.astype(bool), np.arange(3000),
                    np.full(3000, "ACME", dtype=object), np.ones(3000), day, np.full(3000, np.nan), y.astype(bool))
    seen = []
    real_fit = ff.fit_classifier

    def fit(Xf, yf, seed, **kw):
        seen.append(set(np.round(Xf[:, F["time_of_day"]] * 10).astype(int).tolist()))
        return real_fit(Xf, yf, seed, max_iter=30, **kw)

    monkeypatch.setattr(ff, "fit_classifier", fit)
    oof = ff.out_of_fold_margins(s, seed=0)
    assert seen == [{2, 3, 4, 5}, {0, 1, 4, 5}, {0, 1, 2, 3}]  # whole days, each pair scored by the others
    fitted = ff.fit_calibrated(s, seed=0)
    assert seen[3] == set(range(6))  # the served model: every day
    assert (oof[y == 0] >= fitted.margin_threshold).mean() <= ff.TARGET_FPR
    in_sample = ff.margins(fitted.clf, X)
    assert not np.allclose(in_sample, oof)  # the threshold did not come from in-sample scores


def test_same_seed_same_model_bytes(tmp_path):
    X, y = _synthetic(800)
    out = []
    for k in range(2):
        clf = fit_classifier(X, y, seed=7, max_iter=30)
        export_onnx(clf, fit_platt(margins(clf, X), y), tmp_path / f"m{k}.onnx")
        out.append((tmp_path / f"m{k}.onnx").read_bytes())
    assert out[0] == out[1]


def test_registry_refuses_tampered_or_mismatched_artifacts(trained, tmp_path):
    _, _, path, _ = trained
    card = json.loads(path.with_suffix(".json").read_text())
    bad = tmp_path / "fatfinger.onnx"
    bad.write_bytes(path.read_bytes()[:-10])  # truncated after the card was written
    (tmp_path / "fatfinger.json").write_text(json.dumps(card))
    with pytest.raises(ModelRefused, match="does not match its card"):
        FatFingerModel(bad)
    bad.write_bytes(path.read_bytes())
    (tmp_path / "fatfinger.json").write_text(json.dumps({**card, "features": list(reversed(FEATURES))}))
    with pytest.raises(ModelRefused, match="features"):
        FatFingerModel(bad)
    (tmp_path / "fatfinger.json").write_text(json.dumps({**card, "kind": "vae-anomaly"}))
    with pytest.raises(ModelRefused, match="not 'fatfinger'"):
        FatFingerModel(bad)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    write_card(junk, card)
    with pytest.raises(ModelRefused, match="failed to load"):
        FatFingerModel(junk)


def test_threshold_and_reliability_helpers():
    p_valid = np.linspace(0, 0.5, 10_000)
    thr = threshold_for_fpr(p_valid, fpr=0.001)
    assert (p_valid >= thr).sum() <= 10 and (p_valid >= thr).sum() >= 9
    table = reliability_table(np.array([0.0, 0.001, 0.9, 0.97]), np.array([0, 0, 1, 1]))
    assert sum(r["orders"] for r in table) == 4
    assert table[-1]["observed_rate"] == 1.0


def test_market_state_is_the_last_one_before_the_order_never_after():
    import pandas as pd

    from pretrade.models.fatfinger import market_at_orders

    t = pd.to_datetime([10 * NS, 20 * NS, 30 * NS], unit="ns")
    quotes = pd.DataFrame({"time": t, "sym": "ACME", "bid": [99.0, 100.0, 200.0], "ask": [99.2, 100.2, 200.2],
                           "bsize": 1, "asize": 1})
    feats = pd.DataFrame({"time": t, "sym": "ACME", "ready": True, "volume_1m": [1.0, 2.0, 3.0],
                          "z_rv_1m": [0.0, 0.5, 9.0], "z_spread_bps": 0.0})
    orders = pd.DataFrame({"time": pd.to_datetime([25 * NS, 5 * NS], unit="ns"), "sym": "ACME"})
    m = market_at_orders(orders, {"quote": quotes}, feats)
    assert m.loc[0, "bid"] == 100.0 and m.loc[0, "volume_1m"] == 2.0 and m.loc[0, "vol_z"] == 0.5
    assert np.isnan(m.loc[1, "bid"]) and m.loc[1, "volume_1m"] == 0.0  # nothing known yet


def test_the_committed_model_loads_and_matches_this_engine():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "models" / "fatfinger.onnx"
    if not path.exists():
        pytest.skip("models/fatfinger.onnx not trained in this checkout")
    model = FatFingerModel(path)
    p, block = model.score(np.zeros((3, N_FEATURES), dtype=np.float32))
    assert p.shape == (3,) and not block.any()  # an ordinary order is not blocked
