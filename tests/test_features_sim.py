"""Features on the market simulator: scale-freedom across instruments, and a flash crash seen."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from pretrade.features import FEATURES, compute_features
from pretrade.market import instruments
from pretrade.market.simulator import simulate

Z = ["z_" + f for f in FEATURES]


def _ready(scenario: str, sym: str, seed: int = 5, duration: int = 1500, **params) -> pd.DataFrame:
    res = simulate(scenario, seed=seed, duration=duration, syms=[sym, "ACME"], **params)
    df = compute_features(res.frames)
    return df[df["ready"] & (df["sym"] == sym)].set_index("time")


@pytest.fixture(scope="module")
def normal_days():
    es = instruments.UNIVERSE["ESZ6"]
    # The index future at 100x the price with a tick 40x larger (0.2 bp of price instead of 0.5).
    clone = dataclasses.replace(es, sym="ESX100", price=es.price * 100, tick=10.0)
    instruments.UNIVERSE[clone.sym] = clone
    try:
        return {sym: _ready("normal", sym) for sym in ("ESZ6", "ESX100", "GLOW", "BTCUSD")}
    finally:
        del instruments.UNIVERSE[clone.sym]


def test_instruments_of_every_scale_look_alike_in_normal_times(normal_days):
    spreads = {s: d["spread_bps"].median() for s, d in normal_days.items()}
    assert spreads["GLOW"] > 20 * spreads["ESZ6"]  # raw: a $5 stock's tick is 20 bps wide
    for sym, d in normal_days.items():
        z = d[Z]
        assert (z.median().abs() < 1.0).all(), (sym, z.median().round(2).to_dict())
        alarm = (z.abs().max(axis=1) > 4).mean()
        assert alarm < 0.1, (sym, alarm)  # not in permanent alarm


def test_same_market_at_100x_price_and_another_tick_size_gives_the_same_feature_distribution(
    normal_days,
):
    a, b = normal_days["ESZ6"][Z], normal_days["ESX100"][Z]
    assert np.allclose(a.median(), b.median(), atol=0.75), (
        (a.median() - b.median()).round(2).to_dict()
    )
    # A different relative tick changes the shape of tick-bound features (a spread of 1 tick
    # nearly always vs 1-3 ticks), so the tails are only required to stay below alarm (|z| 4) in
    # both; volatility clusters, so a 25-minute run can sit in a high-vol spell.
    for d in (a, b):
        q90 = d.abs().quantile(0.9)
        assert (q90 < 4).all(), q90.round(2).to_dict()


def test_a_flash_crash_shows_in_the_features_before_the_bottom():
    res = simulate(
        "flash-crash", seed=2, duration=1500, syms=["ESZ6", "ACME"], at=900.0, sym="ESZ6"
    )
    stress = res.labels["stress"].iloc[0]
    df = compute_features(res.frames)
    es = df[df["ready"] & (df["sym"] == "ESZ6")].set_index("time")
    before = es.loc[: stress["start"] - pd.Timedelta(seconds=1), Z]
    crash = es.loc[stress["start"] : stress["bottom_time"], Z]
    assert crash["z_ret_1m"].min() < -3
    assert crash["z_book_pressure"].min() < -2
    assert crash.abs().max(axis=1).mean() > before.abs().max(axis=1).mean() + 1
