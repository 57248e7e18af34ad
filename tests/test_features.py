"""Features: batch/live parity, no look-ahead, scale-freedom, warm-up, and what each feature measures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pretrade.features import FEATURES, FeatureConfig, FeatureEngine, compute_features, grid_for
from pretrade.schema import BOOK_LEVELS

FAST = FeatureConfig(warmup_steps=600, norm_halflife_steps=1200)
STEP = FAST.step_ns
T0 = int(np.datetime64("2026-11-20 14:30:00", "ns").astype(np.int64))


def synth_ticks(
    seed=0,
    syms=("AAA", "BBB", "CCC"),
    seconds=600,
    start="2026-11-20 14:30:00",
    price=100.0,
    tick=0.01,
    size_mult=1,
    news=True,
):
    """Random but plausible ticks of every table the features read, in the schema's columns."""
    rng = np.random.default_rng(seed)
    t0 = np.datetime64(start, "ns").astype(np.int64)
    ns = seconds * 1_000_000_000
    factor = np.cumsum(rng.standard_normal(seconds * 10)) * 0.5
    out = {k: [] for k in ("trade", "quote", "book", "l3", "news")}
    for j, s in enumerate(syms):
        p0 = price * (1 + 0.3 * j)
        idio = np.cumsum(rng.standard_normal(seconds * 10))
        path_ticks = np.round(p0 / tick + factor + idio)  # mid in ticks on a 100 ms grid

        def mid_at(t, path=path_ticks):
            return path[np.minimum((t - t0) // 100_000_000, len(path) - 1)]

        nq = rng.poisson(seconds * 20)
        qt = np.sort(t0 + rng.integers(0, ns, nq))
        m = mid_at(qt)
        spread = 1 + (rng.random(nq) < 0.2)
        bid = (m - (spread > 1)) * tick
        ask = (m + 1) * tick
        bsz = rng.integers(1, 50, nq) * 100 * size_mult
        asz = rng.integers(1, 50, nq) * 100 * size_mult
        out["quote"].append(
            pd.DataFrame(
                {
                    "time": qt.astype("datetime64[ns]"),
                    "sym": s,
                    "bid": bid,
                    "ask": ask,
                    "bsize": bsz,
                    "asize": asz,
                }
            )
        )
        # book snapshots consistent with the quote in force
        bt = np.sort(t0 + rng.integers(0, ns, seconds * 5))
        k = np.searchsorted(qt, bt, side="right") - 1
        bt, k = bt[k >= 0], k[k >= 0]
        cols = {"time": bt.astype("datetime64[ns]"), "sym": s}
        for lv in range(1, BOOK_LEVELS + 1):
            cols[f"bid{lv}"] = bid[k] - (lv - 1) * tick
        for lv in range(1, BOOK_LEVELS + 1):
            cols[f"bsize{lv}"] = (
                bsz[k] if lv == 1 else rng.integers(1, 80, len(bt)) * 100 * size_mult
            )
        for lv in range(1, BOOK_LEVELS + 1):
            cols[f"ask{lv}"] = ask[k] + (lv - 1) * tick
        for lv in range(1, BOOK_LEVELS + 1):
            cols[f"asize{lv}"] = (
                asz[k] if lv == 1 else rng.integers(1, 80, len(bt)) * 100 * size_mult
            )
        out["book"].append(pd.DataFrame(cols))
        nt = rng.poisson(seconds * 4)
        tt = np.sort(t0 + rng.integers(0, ns, nt))
        side = np.where(rng.random(nt) < 0.5, "buy", "sell")
        size = (rng.integers(1, 10, nt) * 100 * np.where(rng.random(nt) < 0.02, 20, 1)) * size_mult
        out["trade"].append(
            pd.DataFrame(
                {
                    "time": tt.astype("datetime64[ns]"),
                    "sym": s,
                    "price": mid_at(tt) * tick,
                    "size": size,
                    "side": side,
                }
            )
        )
        nl = rng.poisson(seconds * 30)
        lt = np.sort(t0 + rng.integers(0, ns, nl))
        ev = rng.choice(["add", "modify", "delete", "trade"], nl, p=[0.45, 0.1, 0.4, 0.05])
        out["l3"].append(
            pd.DataFrame(
                {
                    "time": lt.astype("datetime64[ns]"),
                    "sym": s,
                    "event": ev,
                    "orderid": np.arange(nl),
                    "side": "buy",
                    "price": mid_at(lt) * tick,
                    "size": 100,
                }
            )
        )
        if news:
            nn = max(1, seconds // 120)
            ntm = np.sort(t0 + rng.integers(0, ns, nn))
            out["news"].append(
                pd.DataFrame(
                    {
                        "time": ntm.astype("datetime64[ns]"),
                        "sym": s,
                        "headline": "x",
                        "sentiment": rng.uniform(-1, 1, nn),
                    }
                )
            )
    return {
        k: pd.concat(v, ignore_index=True).sort_values("time", kind="stable").reset_index(drop=True)
        for k, v in out.items()
        if v
    }


PRICE_COLS = {
    "trade": ["price"],
    "quote": ["bid", "ask"],
    "l3": ["price"],
    "book": [f"{s}{k}" for s in ("bid", "ask") for k in range(1, BOOK_LEVELS + 1)],
}


def _t(seconds: float) -> np.datetime64:
    return np.datetime64(T0 + int(round(seconds * 1e9)), "ns")


def drive_live(tables, config, grid, seed=1, skip=0.2):
    """The live path: ticks in random-size chunks per table (running ahead of the grid), snapshots
    at grid times, some grid times skipped (the engine fills them in)."""
    rng = np.random.default_rng(seed)
    eng = FeatureEngine(config)
    times = {k: df["time"].to_numpy().view(np.int64) for k, df in tables.items()}
    cur = dict.fromkeys(tables, 0)
    frames = []
    for j, g in enumerate(grid):
        for name, df in tables.items():
            end = np.searchsorted(times[name], g, side="right")
            while cur[name] < end:
                n = int(rng.integers(1, 300))
                eng.update(name, df.iloc[cur[name] : cur[name] + n])
                cur[name] += n
        if 0 < j < len(grid) - 1 and rng.random() < skip:
            continue
        frames.append(eng.snapshot(g).frame())
    live = pd.concat(frames, ignore_index=True)
    return live[~live["news_sentiment"].isna()].reset_index(drop=True), eng


def _compare(a: pd.DataFrame, b: pd.DataFrame, rtol=1e-9, atol=1e-12) -> None:
    m = a.merge(b, on=["time", "sym"], suffixes=("_a", "_b"))
    assert len(m) == len(a)
    assert (m["ready_a"] == m["ready_b"]).all()
    for name in list(FEATURES) + ["z_" + f for f in FEATURES]:
        np.testing.assert_allclose(
            m[name + "_a"], m[name + "_b"], rtol=rtol, atol=atol, equal_nan=True, err_msg=name
        )


@pytest.fixture(scope="module")
def ticks():
    return synth_ticks(seed=3, seconds=300)


@pytest.fixture(scope="module")
def batch(ticks):
    return compute_features(ticks, FAST)


def test_batch_and_live_paths_give_the_same_features(ticks, batch):
    grid = grid_for(ticks, STEP)
    live, eng = drive_live(ticks, FAST, grid)
    assert len(live) > 0.7 * len(batch)
    _compare(live, batch)
    assert eng.rejected_ticks == 0
    assert eng.late_ticks == 0


def test_batch_path_does_not_depend_on_block_size(ticks, batch):
    _compare(compute_features(ticks, FAST, block_steps=777), batch, rtol=0, atol=0)


def test_no_look_ahead_future_ticks_do_not_change_past_rows(ticks, batch):
    cut = T0 + 150 * 1_000_000_000 + 37_000_000  # mid-step, so the next step's ticks are cut too
    past = {k: df[df["time"].to_numpy().view(np.int64) <= cut] for k, df in ticks.items()}
    grid = grid_for(ticks, STEP)
    early = compute_features(past, FAST, grid=grid[grid <= cut - cut % STEP])
    full = batch[batch["time"] <= early["time"].max()]
    _compare(early, full, rtol=0, atol=0)


def test_scale_free_prices_x100_give_the_same_features(ticks, batch):
    scaled = {}
    for name, df in ticks.items():
        df = df.copy()
        for c in PRICE_COLS.get(name, []):
            df[c] = df[c] * 100.0
        scaled[name] = df
    _compare(compute_features(scaled, FAST), batch, rtol=1e-7, atol=1e-9)


def test_outputs_are_flagged_not_ready_during_warm_up(batch):
    for _, rows in batch.groupby("sym"):
        first = rows.index[rows["spread_bps"].notna()][0]
        t_first = rows.loc[first, "time"]
        warm = rows["time"] < t_first + pd.Timedelta(FAST.warmup_steps * STEP, "ns")
        assert not rows.loc[warm, "ready"].any()
        assert rows.loc[~warm, "ready"].all()


def test_normalised_features_are_centred_and_scaled_after_warm_up(batch):
    z = batch.loc[batch["ready"], ["z_" + f for f in FEATURES if f != "news_sentiment"]]
    assert (z.abs().median() < 1.5).all()
    assert (z.std() < 3).all()


# ---- what each feature measures, on hand-built ticks ---------------------------------------------


def _quotes(rows):
    return pd.DataFrame(rows, columns=["time", "sym", "bid", "ask", "bsize", "asize"])


def _trades(rows):
    return pd.DataFrame(rows, columns=["time", "sym", "price", "size", "side"])


def _book(t, sym, bid, ask, bsizes, asizes, tick=0.01):
    row = {"time": [t], "sym": [sym]}
    for k in range(BOOK_LEVELS):
        row[f"bid{k + 1}"] = [bid - k * tick]
    for k in range(BOOK_LEVELS):
        row[f"bsize{k + 1}"] = [bsizes[k]]
    for k in range(BOOK_LEVELS):
        row[f"ask{k + 1}"] = [ask + k * tick]
    for k in range(BOOK_LEVELS):
        row[f"asize{k + 1}"] = [asizes[k]]
    return pd.DataFrame(row)


def _row(snap, sym, name):
    return snap.raw[snap.syms.index(sym), FEATURES.index(name)]


def test_spread_imbalance_and_pressure_from_the_top_of_book():
    eng = FeatureEngine(FAST)
    eng.update("quote", _quotes([(_t(0.01), "X", 99.99, 100.01, 300, 100)]))
    snap = eng.snapshot(_t(0.1))
    assert _row(snap, "X", "spread_bps") == pytest.approx(2.0)
    assert _row(snap, "X", "imbalance_top") == pytest.approx(0.5)
    assert _row(snap, "X", "imbalance_depth") == pytest.approx(0.5)  # no book: the top stands in
    assert _row(snap, "X", "book_pressure") == pytest.approx(np.log(301 / 101))
    assert _row(snap, "X", "depth_top") == 400


def test_book_imbalance_uses_the_top_n_levels_and_pressure_weights_by_level():
    eng = FeatureEngine(FAST)
    bs = [100] * BOOK_LEVELS
    asz = [100, 100, 100, 100, 100, 900, 900, 900, 900, 900]
    eng.update("book", _book(_t(0.01), "X", 99.99, 100.01, bs, asz))
    snap = eng.snapshot(_t(0.1))
    assert _row(snap, "X", "imbalance_depth") == pytest.approx(0.0)  # levels 6..10 are beyond N=5
    w = 1 / np.arange(1, BOOK_LEVELS + 1)
    assert _row(snap, "X", "book_pressure") == pytest.approx(np.log((w @ bs + 1) / (w @ asz + 1)))


def test_liquidity_decay_measures_how_long_depth_takes_to_come_back():
    eng = FeatureEngine(FAST)
    full = [1000] * BOOK_LEVELS
    eng.update("book", _book(_t(0.0), "X", 99.99, 100.01, full, full))
    eng.update("trade", _trades([(_t(0.01 + k * 0.1), "X", 100.0, 10, "buy") for k in range(30)]))
    eng.update("trade", _trades([(_t(5.0), "X", 100.01, 4000, "buy")]))  # a large trade
    thin = [1000] * 5 + [0] * 5
    eng.update("book", _book(_t(5.01), "X", 99.99, 100.01, full, [200] * 5 + [0] * 5))
    eng.update("book", _book(_t(6.0), "X", 99.99, 100.01, full, [600] * 5 + [0] * 5))
    eng.update("book", _book(_t(7.5), "X", 99.99, 100.01, full, thin))  # back to 10,000: recovered
    assert _row(eng.snapshot(_t(4.9)), "X", "liquidity_decay") == 0.0
    assert _row(eng.snapshot(_t(6.5)), "X", "liquidity_decay") == pytest.approx(
        1.5
    )  # still waiting
    assert _row(eng.snapshot(_t(8.0)), "X", "liquidity_decay") == pytest.approx(2.5)
    assert _row(eng.snapshot(_t(30.0)), "X", "liquidity_decay") == pytest.approx(2.5)  # held


def test_trade_to_order_ratio_counts_l3_messages_over_ten_seconds():
    eng = FeatureEngine(FAST)
    eng.update("quote", _quotes([(_t(0.0), "X", 99.99, 100.01, 100, 100)]))
    ev = ["trade"] * 10 + ["add"] * 50 + ["delete"] * 40
    times = [_t(1 + 0.05 * k) for k in range(len(ev))]
    eng.update(
        "l3",
        pd.DataFrame(
            {
                "time": times,
                "sym": "X",
                "event": ev,
                "orderid": 1,
                "side": "buy",
                "price": 100.0,
                "size": 1,
            }
        ),
    )
    assert _row(eng.snapshot(_t(10.0)), "X", "trade_to_order") == pytest.approx(10 / 90)
    assert np.isnan(_row(eng.snapshot(_t(20.0)), "X", "trade_to_order"))  # nothing in the window


def test_vpin_is_one_for_one_sided_flow_and_low_for_balanced_flow():
    eng = FeatureEngine(FAST)
    eng.update("quote", _quotes([(_t(0.0), s, 99.99, 100.01, 100, 100) for s in ("B", "M")]))
    n = 2000
    eng.update("trade", _trades([(_t(0.01 + k * 0.01), "B", 100.0, 10, "buy") for k in range(n)]))
    eng.update(
        "trade",
        _trades(
            [(_t(0.01 + k * 0.01), "M", 100.0, 10, "buy" if k % 2 else "sell") for k in range(n)]
        ),
    )
    snap = eng.snapshot(_t(30.0))
    assert _row(snap, "B", "vpin") == pytest.approx(1.0)
    assert _row(snap, "M", "vpin") < 0.05


def test_cross_correlation_of_instruments_moving_together_and_apart():
    rng = np.random.default_rng(0)
    steps = 700
    common = np.cumsum(rng.integers(-1, 2, steps))
    other = np.cumsum(rng.integers(-1, 2, steps))
    rows = []
    for k in range(steps):
        t = _t(k * 0.1 + 0.05)
        for sym, path in (("A", common), ("B", common), ("C", other)):
            rows.append((t, sym, 100 + 0.01 * path[k], 100.02 + 0.01 * path[k], 100, 100))
    eng = FeatureEngine(FAST)
    eng.update("quote", _quotes(rows))
    eng.snapshot(_t(0.1))
    snap = eng.snapshot(_t(steps * 0.1))
    # A's return equals B's, and C is independent: corr(A, (B + C) / 2) = 1 / sqrt(2)
    assert 0.6 < _row(snap, "A", "cross_corr") < 0.85
    assert abs(_row(snap, "C", "cross_corr")) < 0.3


def test_news_sentiment_decays_with_a_half_life_and_market_wide_news_reaches_everyone():
    eng = FeatureEngine(FAST)
    eng.update("quote", _quotes([(_t(0.0), s, 99.99, 100.01, 100, 100) for s in ("A", "B")]))
    eng.update(
        "news",
        pd.DataFrame(
            {
                "time": [_t(0.05), _t(0.06)],
                "sym": ["A", "*"],
                "headline": ["a", "all"],
                "sentiment": [0.8, -0.2],
            }
        ),
    )
    snap = eng.snapshot(_t(0.1))
    assert _row(snap, "A", "news_sentiment") == pytest.approx(0.6, rel=2e-3)
    assert _row(snap, "B", "news_sentiment") == pytest.approx(-0.2, rel=2e-3)
    assert _row(eng.snapshot(_t(60.1)), "A", "news_sentiment") == pytest.approx(0.3, rel=2e-3)


def test_realized_volatility_from_mid_returns():
    eng = FeatureEngine(FAST)
    mids = 100 * np.exp(np.cumsum(np.tile([0.001, -0.001], 300)))
    eng.update(
        "quote",
        _quotes(
            [(_t(0.05 + 0.1 * k), "X", m - 0.005, m + 0.005, 100, 100) for k, m in enumerate(mids)]
        ),
    )
    eng.snapshot(_t(0.1))  # the first snapshot starts the grid
    snap = eng.snapshot(_t(60.0))
    assert _row(snap, "X", "rv_1m") == pytest.approx(0.001 * np.sqrt(599), rel=1e-6)
    assert _row(snap, "X", "micro_vol") == pytest.approx(0.001 * np.sqrt(600), rel=1e-6)
    assert _row(snap, "X", "ret_1m") == pytest.approx(np.log(mids[-1] / mids[0]), abs=1e-12)


def test_bad_ticks_are_counted_and_skipped_and_the_engine_keeps_going():
    eng = FeatureEngine(FAST)
    eng.update(
        "quote",
        _quotes(
            [
                (_t(0.01), "X", 100.02, 100.00, 100, 100),  # crossed
                (_t(0.02), "X", float("nan"), 100.0, 100, 100),
                (_t(0.03), "X", 99.99, 100.01, 100, 100),
            ]
        ),
    )
    eng.update("trade", _trades([(_t(0.04), "X", 100.0, 0, "buy")]))
    with pytest.raises(ValueError, match="missing column 'ask'"):
        eng.update("quote", pd.DataFrame({"time": [_t(0.05)], "sym": ["X"], "bid": [1.0]}))
    assert eng.update("order", pd.DataFrame({"time": [_t(0.05)], "sym": ["X"]})) == 0  # not ours
    snap = eng.snapshot(_t(0.1))
    assert eng.rejected_ticks == 3
    assert _row(snap, "X", "spread_bps") == pytest.approx(2.0)
    with pytest.raises(ValueError, match="not after"):
        eng.snapshot(_t(0.1))


def test_late_ticks_are_kept_for_the_next_step():
    eng = FeatureEngine(FAST)
    eng.update("quote", _quotes([(_t(0.01), "X", 99.99, 100.01, 100, 100)]))
    eng.snapshot(_t(0.1))
    eng.update("trade", _trades([(_t(0.05), "X", 100.0, 7, "buy")]))  # arrives after its step
    snap = eng.snapshot(_t(0.2))
    assert eng.late_ticks == 1
    assert _row(snap, "X", "volume_1m") == 7


def test_columns_as_plain_lists_as_from_ipc():
    eng = FeatureEngine(FAST)
    eng.update(
        "quote",
        {
            "time": [_t(0.01)],
            "sym": ["X"],
            "bid": [99.99],
            "ask": [100.01],
            "bsize": [1],
            "asize": [3],
        },
    )
    eng.update(
        "trade",
        {
            "time": [T0 + 20_000_000],
            "sym": [b"X"],
            "price": [100.0],
            "size": [5],
            "side": [b"sell"],
        },
    )
    snap = eng.snapshot(T0 + STEP)
    assert _row(snap, "X", "imbalance_top") == pytest.approx(-0.5)
    assert _row(snap, "X", "volume_1m") == 5


def test_a_one_sided_book_shows_as_missing_depth_while_mid_and_spread_stay_defined():
    eng = FeatureEngine(FAST)
    eng.update(
        "quote",
        _quotes(
            [
                (_t(0.01), "X", 99.99, 100.01, 100, 100),
                (_t(0.02), "X", float("nan"), 100.02, 0, 300),
            ]
        ),
    )
    snap = eng.snapshot(_t(0.1))
    assert _row(snap, "X", "imbalance_top") == -1.0
    assert _row(snap, "X", "depth_top") == 300
    assert _row(snap, "X", "spread_bps") == pytest.approx(0.03 / 100.005 * 1e4)
    assert eng.rejected_ticks == 0
