"""Impact advice in the gateway: accepted orders get the impact model's predicted slippage and,
over the [impact] budget, a recommended algorithm; the model is advisory (a refused model leaves
the gateway running without advice). Real model (models/impact.onnx), no FIX."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pretrade.gateway.advice import Advisor, ImpactConfig, impact_config, load_advisor
from pretrade.gateway.gate import Gate
from pretrade.gateway.limits_table import LimitsTable
from pretrade.models.impact import ImpactModel
from pretrade.risk.checks import Order
from pretrade.risk.limits import load_config, static_limit
from pretrade.schema import BOOK_LEVELS, TABLES

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "impact.onnx"


def book_frame(sym: str = "ACME", mid: float = 100.0, size: int = 2000) -> pd.DataFrame:
    """One `book` row: 10 levels a side, one cent apart, `size` each."""
    row: dict = {"time": pd.Timestamp.now(), "sym": sym}
    for i in range(1, BOOK_LEVELS + 1):
        row[f"bid{i}"], row[f"ask{i}"] = mid - 0.005 - 0.01 * (i - 1), mid + 0.005 + 0.01 * (i - 1)
        row[f"bsize{i}"] = row[f"asize{i}"] = size
    return pd.DataFrame([row])[TABLES["book"].names]


@pytest.fixture(scope="module")
def model() -> ImpactModel:
    return ImpactModel(MODEL)


@pytest.fixture
def table() -> LimitsTable:
    t = LimitsTable(load_config())
    t.on_update("book", book_frame())
    t.on_update("quote", pd.DataFrame({"sym": ["ACME"], "bid": [99.995], "ask": [100.005]}))
    t.on_update("features", pd.DataFrame({"sym": ["ACME"], "rv_1m": [0.0004], "volume_1m": [50000.0]}))
    t.apply_limits([static_limit("ACME", "", load_config().static("ACME", ""))])
    return t


def test_slippage_grows_with_size_and_the_algo_follows_the_budget(model, table):
    adv = Advisor(model, ImpactConfig(budget_bps=1.0))
    small, _ = adv.advise(Order("ACME", "buy", 100, math.nan), table)
    big, algo = adv.advise(Order("ACME", "buy", 9000, math.nan), table)
    assert math.isfinite(small) and big > small
    assert adv.advise(Order("ACME", "buy", 100, math.nan), table)[1] == "TWAP"  # within budget
    assert big > 1.0 and algo in ("VWAP", "POV", "SPLIT")
    # the same prediction under a larger budget keeps the default algorithm
    assert Advisor(model, ImpactConfig(budget_bps=big + 1, algo="VWAP")).advise(
        Order("ACME", "buy", 9000, math.nan), table) == (pytest.approx(big), "VWAP")


def test_missing_inputs_give_no_advice_or_the_documented_default(model, table):
    adv = Advisor(model, ImpactConfig())
    bps, algo = adv.advise(Order("OTHER", "buy", 100, math.nan), table)  # no book: no prediction
    assert math.isnan(bps) and algo == ""
    table.rv_volume.clear()  # no features: default rv, volume from the trade tape (empty: no prediction)
    assert math.isnan(adv.advise(Order("ACME", "buy", 100, math.nan), table)[0])
    table.add_trade("ACME", 1_000_000_000, 40000)
    bps, algo = adv.advise(Order("ACME", "buy", 100, math.nan), table)
    assert math.isfinite(bps) and algo


def test_gate_advises_accepted_orders_only(model, table):
    cfg = load_config()
    gate = Gate(table, cfg.checks, advisor=Advisor(model, ImpactConfig()))
    o = Order("ACME", "buy", 500, math.nan, account="a")
    ok = gate.check(o, "S1")
    assert ok.decision.ok and math.isnan(ok.slippage_bps)  # the check itself carries no advice
    assert gate.advise(o, ok) is ok and math.isfinite(ok.slippage_bps) and ok.algo
    big = Order("ACME", "buy", 10_000_000, math.nan, account="a")
    rejected = gate.advise(big, gate.check(big, "S1"))
    assert not rejected.decision.ok and math.isnan(rejected.slippage_bps) and rejected.algo == ""
    cancel = Order("ACME", "buy", 500, math.nan, account="a", kind="cancel")
    assert gate.advise(cancel, gate.check(cancel, "S1")).algo == ""
    plain = Gate(table, cfg.checks)
    p = plain.advise(o, plain.check(Order("ACME", "sell", 500, math.nan, account="b"), "S2"))
    assert p.decision.ok and math.isnan(p.slippage_bps) and p.algo == ""


def test_refused_or_missing_model_is_logged_and_the_gateway_runs_without(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "pretrade.gateway.advice")
    assert load_advisor(ImpactConfig(model=str(tmp_path / "absent.onnx")), ROOT) is None
    shutil.copy(MODEL, tmp_path / "impact.onnx")  # a model without its card is refused
    assert load_advisor(ImpactConfig(model=str(tmp_path / "impact.onnx")), ROOT) is None
    assert sum("impact model not served" in r.message for r in caplog.records) == 2
    assert load_advisor(ImpactConfig(), ROOT) is not None  # the project's model, by relative path


def test_config_section_is_validated():
    assert impact_config(None) == ImpactConfig()
    assert impact_config({"budget_bps": 3}).budget_bps == 3
    with pytest.raises(ValueError, match="unknown keys"):
        impact_config({"budget": 3})
    with pytest.raises(ValueError, match="positive"):
        impact_config({"budget_bps": 0})
    from pretrade.config import CONFIG_DIR, load_toml

    assert impact_config(load_toml(CONFIG_DIR / "limits.toml")["impact"]).budget_bps > 0


def test_the_scalar_row_is_the_batch_features_computation():
    """advice.impact_row (the gateway's one-order path) equals models.impact.impact_features on
    random books: both sides, short books (missing levels), empty and NaN sizes, wide spreads,
    tiny and huge orders, missing volatility or volume, a worked horizon; and refuses the same
    bad inputs."""
    import numpy as np

    from pretrade.gateway.advice import impact_row
    from pretrade.models.impact import impact_features

    rng = np.random.default_rng(7)
    for k in range(400):
        mid, tick = float(rng.choice([0.5, 37.2, 101.0, 4999.75, 78000.0])), float(rng.choice([1e-4, 0.01, 0.25]))
        depth = int(rng.integers(1, BOOK_LEVELS + 1))
        book: dict = {"sym": "X"}
        for i in range(1, depth + 1):
            book[f"bid{i}"] = mid - tick * (i + int(rng.integers(0, 3)))
            book[f"ask{i}"] = mid + tick * (i + int(rng.integers(0, 3)))
            book[f"bsize{i}"] = float(rng.choice([0, 1, 37, 2000, np.nan]))
            book[f"asize{i}"] = float(rng.choice([0, 5, 900, 150000]))
        if k % 7 == 0 and depth > 2:
            book[f"bid{depth}"] = np.nan  # a hole in a short book
        qty = float(rng.choice([1, 3, 100, 12345, 1e7]))
        side = int(rng.choice([-1, 1]))
        rv = float(rng.choice([0.0, 1e-6, 4e-4, 0.02]))
        vol = float(rng.choice([0.0, 0.5, 1e5]))
        horizon = float(rng.choice([0.0, 30.0]))
        want = impact_features(qty, side, book, rv, vol, horizon)[0]
        got = impact_row(qty, side, book, rv, vol, horizon)
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=f"book {book}, qty {qty}, side {side}")
    crossed = {"bid1": 100.0, "ask1": 99.0, "bsize1": 1, "asize1": 1}
    for bad in ((1, 1, crossed), (1, 1, {"bid1": 99.0}), (0, 1, book_frame().iloc[0].to_dict()),
                (1, 0, book_frame().iloc[0].to_dict())):
        for f in (impact_features, impact_row):
            with pytest.raises(ValueError):
                f(*bad, 4e-4, 1e5)
