"""The simulator: schema, determinism, venue API and the stylized facts a quant checks first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pretrade.market.instruments import UNIVERSE
from pretrade.market.simulator import Simulation, parse_duration, simulate
from pretrade.schema import table


@pytest.fixture(scope="module")
def midday() -> object:
    """Ninety minutes at mid-day for four instruments (the stylized-fact sample)."""
    return simulate("normal", 11, syms=["ACME", "BOLT", "EMBR", "DYNE"], duration="90m",
                    start="2026-11-20 16:30")


def _mid_series(res, sym: str, freq: str) -> pd.Series:
    q = res["quote"]
    q = q[q.sym == sym]
    mid = pd.Series(((q.bid + q.ask) / 2).to_numpy(), index=q.time).dropna()
    return mid.resample(freq).last().ffill()


def test_frames_follow_the_schema(midday) -> None:
    for name in ("quote", "trade", "book", "l3"):
        df = midday[name]
        spec = table(name)
        assert list(df.columns) == spec.names, name
        for c in spec.columns:
            if c.qtype != "s":
                assert df[c.name].dtype == c.dtype, (name, c.name)
        assert df.time.is_monotonic_increasing and len(df) > 1000
    assert set(midday["trade"].side) == {"buy", "sell"}
    assert set(midday["l3"].event) == {"add", "modify", "delete", "trade"}
    for sym, g in midday["trade"].groupby("sym"):  # every price is a multiple of the tick
        ticks = g.price / UNIVERSE[sym].tick
        assert np.allclose(ticks, ticks.round())


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = simulate("flash-crash", 5, syms=["ESZ6", "GLOW"], duration=150, at=60)
    b = simulate("flash-crash", 5, syms=["ESZ6", "GLOW"], duration=150, at=60)
    c = simulate("flash-crash", 6, syms=["ESZ6", "GLOW"], duration=150, at=60)
    for name in ("quote", "trade", "book", "l3"):
        pd.testing.assert_frame_equal(a[name], b[name])
    pd.testing.assert_frame_equal(a.labels["stress"], b.labels["stress"])
    assert not a["trade"].equals(c["trade"])


@pytest.mark.slow
def test_intraday_volume_is_u_shaped() -> None:
    """Traded volume per half hour, normalized per instrument and averaged (as it is measured)."""
    res = simulate("normal", 3, syms=["ACME", "BOLT", "EMBR", "DYNE", "FLUX"], duration="6.5h",
                   rate_scale=0.2, metaorders_per_hour=0)
    t = res["trade"]
    half_hour = ((t.time - t.time.dt.normalize()).dt.total_seconds() - 14.5 * 3600) // 1800
    vol = t.groupby([t.sym, half_hour])["size"].sum().unstack(0)
    profile = (vol / vol.mean()).mean(axis=1)
    assert len(profile) == 13
    middle = profile.iloc[3:10].mean()
    assert profile.iloc[0] > 1.4 * middle and profile.iloc[-1] > 1.4 * middle


def test_returns_are_fat_tailed(midday) -> None:
    for sym in midday.frames["quote"].sym.unique():
        r = np.log(_mid_series(midday, sym, "10s")).diff().dropna()
        assert r.kurt() > 1.0, sym  # excess kurtosis: fatter tails than normal


def test_volatility_clusters(midday) -> None:
    acfs = []
    for sym in ["ACME", "BOLT", "EMBR", "DYNE"]:
        a = np.log(_mid_series(midday, sym, "30s")).diff().dropna().abs()
        acfs.append([a.autocorr(lag) for lag in range(1, 21)])
    acf = np.mean(acfs, axis=0)
    assert acf[:5].mean() > 0.05           # absolute returns are positively autocorrelated
    assert acf.mean() > 0.02               # ... and stay so over ten minutes (slow decay)
    r = np.log(_mid_series(midday, "ACME", "30s")).diff().dropna()
    assert abs(r.autocorr(5)) < 0.2        # while returns themselves are not predictable


def test_spread_and_depth_are_plausible(midday) -> None:
    q = midday["quote"]
    for sym, g in q.groupby("sym"):
        spread = ((g.ask - g.bid) / UNIVERSE[sym].tick).round().dropna()
        shares = spread.value_counts(normalize=True)
        assert shares.get(1.0, 0) > 0.6, sym          # mostly one tick
        assert 0.02 < 1 - shares.get(1.0, 0) < 0.4     # but not degenerate
        assert spread.min() >= 1                       # never crossed
    b = midday["book"]
    depth = b[[f"bsize{k}" for k in range(1, 11)]].sum(axis=1)
    assert depth.std() > 0.2 * depth.mean() and (b.bsize1 > 0).mean() > 0.95
    assert (b[[f"bid{k}" for k in range(1, 6)]].notna().all(axis=1)).mean() > 0.9
    assert (b[[f"bid{k}" for k in range(1, 11)]].notna().all(axis=1)).mean() > 0.6


def test_instruments_are_correlated(midday) -> None:
    mids = pd.DataFrame({s: _mid_series(midday, s, "1min") for s in ["ACME", "BOLT", "EMBR", "DYNE"]})
    corr = np.log(mids).diff().dropna().corr().to_numpy()
    assert corr[np.triu_indices(4, 1)].mean() > 0.1


def test_metaorder_impact_is_concave() -> None:
    res = simulate("normal", 4, syms=["ACME", "BOLT", "EMBR", "DYNE"], duration="90m",
                   metaorders_per_hour=20)
    m = res.labels["metaorders"]
    m = m[m.filled > 0].copy()
    assert len(m) > 80
    m["bucket"] = pd.qcut(m.adv_units, 5)
    g = m.groupby("bucket", observed=True).agg(size=("adv_units", "mean"), impact=("excess_impact_bps", "mean"))
    assert (g.impact > 0).all()
    exponent = np.polyfit(np.log(g["size"]), np.log(g.impact), 1)[0]
    assert 0.3 < exponent < 0.8, exponent  # roughly square root


def test_the_market_is_a_venue() -> None:
    """Outside orders go into the live book and move it (the exchange simulator's use)."""
    sim = Simulation("normal", 1, syms=["ESZ6"], duration=120)
    blocks = sim.blocks()
    next(blocks)
    book = sim.sims[0].book
    bid, ask, _, asize = book.top()
    oid, fills = sim.submit("ESZ6", "buy", asize + 1, (ask + 5) * 0.25)
    assert sum(f["size"] for f in fills) == asize + 1 and fills[0]["price"] == ask * 0.25
    assert book.best_ask() > ask  # the order took the offer: the book moved
    oid, _ = sim.submit("ESZ6", "sell", 7, (ask + 50) * 0.25)
    assert sim.cancel("ESZ6", oid) == 7 and sim.cancel("ESZ6", oid) == 0
    with pytest.raises(ValueError, match="tick"):
        sim.submit("ESZ6", "buy", 1, 5000.1)
    rest = next(blocks)  # the simulation goes on from the changed book; the trades are in it
    t0 = pd.Timestamp(sim.start_ns + 60 * 10**9, unit="ns")
    assert (rest["trade"].time == t0).sum() == len(fills) and len(rest["trade"]) > len(fills)


def test_stream_gives_the_same_rows_in_time_order() -> None:
    sim = Simulation("news-shock", 8, syms=["ACME", "GLOW"], duration=150, at=70)
    parts: dict[str, list[pd.DataFrame]] = {}
    last_block_start = pd.Timestamp(0)
    for name, df in sim.stream():
        assert df.time.is_monotonic_increasing and df.time.iloc[0] >= last_block_start - pd.Timedelta("60s")
        last_block_start = max(last_block_start, df.time.iloc[0])
        parts.setdefault(name, []).append(df)
    full = simulate("news-shock", 8, syms=["ACME", "GLOW"], duration=150, at=70)
    for name in ("quote", "trade", "book", "l3", "news"):
        pd.testing.assert_frame_equal(pd.concat(parts[name], ignore_index=True), full[name])


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown instrument"):
        simulate("normal", 1, syms=["NOPE"], duration=10)
    with pytest.raises(ValueError, match="unknown scenario"):
        simulate("crash", 1, duration=10)
    with pytest.raises(ValueError, match="no parameter"):
        simulate("normal", 1, duration=10, severity=2)
    assert parse_duration("6.5h") == 23400 and parse_duration("90s") == 90
    with pytest.raises(ValueError, match="duration"):
        parse_duration("ten minutes")
