"""Scenarios: each one's ground-truth labels agree with what its data shows."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pretrade.market.instruments import UNIVERSE
from pretrade.market.scenarios import SCENARIOS, describe, parse_params
from pretrade.market.simulator import simulate

S = pd.Timedelta(seconds=1)


def _per_second(res, sym: str) -> pd.DataFrame:
    """Top of book sampled every second: mid, spread in ticks, bid and ask size."""
    q = res["quote"]
    q = q[q.sym == sym].set_index("time")
    out = q.resample("1s").last().ffill()
    out["mid"] = (out.bid + out.ask) / 2
    out["spread"] = (out.ask - out.bid) / UNIVERSE[sym].tick
    return out


def _window(df: pd.DataFrame, lo, hi) -> pd.DataFrame:
    return df[(df.index >= lo) & (df.index < hi)]


def _depth(res, sym: str, side: str) -> pd.Series:
    b = res["book"]
    b = b[b.sym == sym].set_index("time")
    return b[[f"{side}size{k}" for k in range(1, 6)]].sum(axis=1)


def test_list_names_every_scenario_with_its_parameters() -> None:
    text = describe()
    for name in ("normal", "vol-regime-shift", "liquidity-drought", "news-shock", "flash-crash", "fat-finger"):
        assert name in SCENARIOS and name in text
    assert "severity=0.02" in text
    out = subprocess.run([sys.executable, "-m", "pretrade.cli", "scenario", "--list"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "flash-crash" in out.stdout
    assert parse_params(["severity=0.03", "clip=50"], "flash-crash") == {"severity": 0.03, "clip": 50}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_params(["nope=1"], "flash-crash")


@pytest.fixture(scope="module")
def crash():
    return simulate("flash-crash", 3, syms=["ESZ6", "ACME"], duration=900, at=420, start="2026-11-20 17:00")


def test_flash_crash_labels_match_the_data(crash) -> None:
    lab = crash.labels["stress"].iloc[0]
    assert lab.sym == "ESZ6" and lab.kind == "flash-crash"
    assert lab.start < lab.bottom_time <= lab.end
    sec = _per_second(crash, "ESZ6")
    before = _window(sec, lab.start - 120 * S, lab.start)
    start_mid = before.mid.iloc[-1]
    # spread 1 -> 3 ticks, within seconds
    assert before.spread.median() == 1 and _window(sec, lab.start + 5 * S, lab.peak).spread.median() >= 2.5
    # the price falls about 2% within a minute, then recovers partly
    assert sec.mid.asof(lab.start + 60 * S) < start_mid * 0.985
    drop = start_mid - lab.bottom_price
    assert 0.015 < drop / start_mid < 0.04
    after = sec.mid.asof(lab.end)
    assert lab.bottom_price + 0.2 * drop < after < start_mid
    # realized volatility at least doubles
    rv = np.log(sec.mid).diff()
    assert _window(rv.to_frame("r"), lab.start, lab.peak).r.std() > 2 * _window(rv.to_frame("r"), lab.start - 300 * S, lab.start).r.std()
    # bid depth thins and the book tilts to the sell side
    bid, ask = _depth(crash, "ESZ6", "b"), _depth(crash, "ESZ6", "a")
    b0 = bid[(bid.index >= lab.start - 120 * S) & (bid.index < lab.start)].mean()
    b1 = bid[(bid.index >= lab.start + 5 * S) & (bid.index < lab.peak)].mean()
    assert b1 < 0.5 * b0
    imb = bid / (bid + ask)
    assert imb[(imb.index >= lab.start + 5 * S) & (imb.index < lab.peak)].mean() < 0.3 < imb[(imb.index < lab.start)].mean()
    # liquidity providers pull quotes: order messages surge, trade-to-order ratio collapses
    l3 = crash["l3"]
    l3 = l3[l3.sym == "ESZ6"]

    def ratio(lo, hi):
        w = l3[(l3.time >= lo) & (l3.time < hi)]
        trades = (w.event == "trade").sum()
        return trades / max(1, len(w) - trades), (w.event == "delete").sum() / (hi - lo).total_seconds()

    tor0, del0 = ratio(lab.start - 120 * S, lab.start)
    tor1, del1 = ratio(lab.start + 5 * S, lab.peak)
    assert tor1 < 0.5 * tor0 and del1 > 3 * del0
    # the iceberg seller is labelled and sold
    ice = crash.labels["metaorders"].query("kind == 'iceberg'").iloc[0]
    assert ice.side == "sell" and ice.sym == "ESZ6" and ice.filled > 0.25 * ice.qty
    # the other instrument is far calmer
    other = _per_second(crash, "ACME")
    assert abs(other.mid.asof(lab.peak) / other.mid.asof(lab.start) - 1) < 0.01


def test_news_shock() -> None:
    res = simulate("news-shock", 4, syms=["ACME", "GLOW"], duration=900, at=300, sym="ACME",
                   start="2026-11-20 17:00")
    news = res["news"]
    lab = res.labels["stress"].iloc[0]
    shock = news[news.sentiment < -0.5]
    assert len(shock) == 1 and shock.iloc[0].sym == "ACME" and shock.iloc[0].time == lab.start
    assert news.sentiment.between(-1, 1).all() and len(news) > 1 and list(news.columns) == [
        "time", "sym", "headline", "sentiment"]
    sec = _per_second(res, "ACME")
    m0 = sec.mid.asof(lab.start - S)
    assert sec.mid.asof(lab.start + 60 * S) < m0 * 0.99  # the market reacts to the negative news
    assert _window(sec, lab.start, lab.start + 60 * S).spread.mean() > _window(sec, lab.start - 120 * S, lab.start).spread.mean()


def test_vol_regime_shift() -> None:
    res = simulate("vol-regime-shift", 5, syms=["ACME", "BOLT"], duration=1800, at=900, factor=2.5,
                   start="2026-11-20 17:00")
    lab = res.labels["stress"].iloc[0]
    ratios = []
    for sym in ("ACME", "BOLT"):
        r = np.log(_per_second(res, sym).mid.resample("10s").last()).diff()
        ratios.append(r[r.index >= lab.start + 60 * S].std() / r[r.index < lab.start].std())
    assert np.mean(ratios) > 1.8


def test_liquidity_drought() -> None:
    res = simulate("liquidity-drought", 6, syms=["ACME"], duration=1200, at=400, length=500, depth=0.8,
                   start="2026-11-20 17:00")
    lab = res.labels["stress"].iloc[0]
    depth = _depth(res, "ACME", "b") + _depth(res, "ACME", "a")
    before = depth[(depth.index >= lab.start - 200 * S) & (depth.index < lab.start)].mean()
    during = depth[(depth.index >= lab.peak) & (depth.index < lab.end - 30 * S)].mean()
    after = depth[depth.index >= lab.end + 60 * S].mean()
    assert during < 0.5 * before and after > 0.7 * before
    sec = _per_second(res, "ACME")
    assert _window(sec, lab.peak, lab.end - 30 * S).spread.median() > _window(sec, lab.start - 200 * S, lab.start).spread.median()


def test_fat_finger_labels_match_the_orders() -> None:
    res = simulate("fat-finger", 7, syms=["ACME", "GLOW", "BTCUSD", "ESZ6"], duration=1200,
                   orders_per_hour=6000, error_rate=0.05)
    orders, errors = res["order"], res.labels["errors"]
    assert list(orders.columns) == ["time", "sym", "orderid", "clordid", "account", "strategy", "side",
                                    "qty", "price", "ordtype", "event", "reason"]
    assert orders.time.is_monotonic_increasing and orders.orderid.is_unique
    assert set(errors.kind) == {"extra_zeros", "price_decimal_shift", "price_qty_swapped", "wrong_side",
                                "duplicate", "notional_as_qty"}
    assert 0.02 < len(errors) / len(orders) < 0.1
    o = orders.set_index("orderid")
    valid = orders[~orders.orderid.isin(errors.orderid)]
    # each trader has habits: a typical size and side per instrument
    typical = valid.groupby(["account", "sym"]).qty.median()
    usual_side = valid.groupby(["account", "sym"]).side.agg(lambda s: s.mode().iloc[0])
    assert valid.groupby(["account", "sym"]).side.agg(lambda s: s.nunique()).max() == 1
    for e in errors.itertuples():
        row = o.loc[e.orderid]
        key = (row.account, row.sym)
        if e.kind in ("extra_zeros", "notional_as_qty") and key in typical:
            assert row.qty >= 2 * typical[key], e
        elif e.kind == "wrong_side" and key in usual_side:
            assert row.side != usual_side[key], e
        elif e.kind == "duplicate":
            same = orders[(orders.account == row.account) & (orders.sym == row.sym) & (orders.qty == row.qty)
                          & (orders.price == row.price) & (orders.side == row.side) & (orders.orderid != e.orderid)]
            assert ((row.name != same.orderid) & (same.time <= row.time)
                    & (same.time >= row.time - pd.Timedelta("60ms"))).any(), e
    # valid prices sit near the prevailing market; decimal-shifted ones are far off it
    q = res["quote"].assign(mid=lambda d: (d.bid + d.ask) / 2)[["time", "sym", "mid"]].dropna()
    priced = pd.merge_asof(orders, q, on="time", by="sym")
    priced["ticks"] = (priced.price - priced.mid).abs() / priced.sym.map(lambda s: UNIVERSE[s].tick)
    ok = priced[~priced.orderid.isin(errors.orderid)]
    assert ok.ticks.median() <= 3 and ok.ticks.quantile(0.99) <= 30
    shifted = priced[priced.orderid.isin(errors.query("kind == 'price_decimal_shift'").orderid)]
    ratio = shifted.price / shifted.mid
    assert len(shifted) and ((ratio > 5) | (ratio < 0.2)).all()


def test_the_fat_finger_desk_is_the_same_people_day_after_day() -> None:
    """The firm seed fixes the desk: another day (seed) brings the same traders with habits that
    drift a little (and now and then a newcomer or a new instrument); another firm, other habits."""
    from pretrade.market.instruments import resolve
    from pretrade.market.orderflow import OrderFlow

    insts = resolve(None)

    def desk(day_seed: int, firm_seed: int = 7) -> dict:
        flow = OrderFlow(np.random.default_rng(day_seed), insts, 600, 0, 0.0, 600.0, 0.0, firm_seed)
        return {t.account: t for t in flow.traders}

    days = [desk(s) for s in range(11, 21)]
    regulars = [f"ACC0{k}" for k in range(1, 9)]
    for d in days:
        assert set(regulars) <= set(d)
        for acc in regulars:
            base = days[0][acc]
            assert 0.5 < d[acc].size_lots / base.size_lots < 2.0  # drift, not a new person
            assert abs(d[acc].peak_tod - base.peak_tod) < 0.2
    usual = {acc: set.intersection(*(set(d[acc].syms) for d in days)) for acc in regulars}
    assert all(usual.values())  # every regular keeps instruments they trade every day
    assert any(set(d[acc].syms) - usual[acc] for d in days for acc in regulars)  # some try another one
    assert any(set(d) - set(regulars) for d in days)  # a newcomer joins on some days
    assert [t.size_lots for t in desk(11).values()] != [t.size_lots for t in desk(11, firm_seed=8).values()]
    assert [t.size_lots for t in desk(11).values()] == [t.size_lots for t in desk(11).values()]  # seeded
