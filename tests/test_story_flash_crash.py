"""`pretrade scenario flash-crash --json`: the story end to end through real processes (tickerplant,
risk engine, gateway, exchange-as-market), static limits against dynamic, from one seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("quickfix", reason="QuickFIX is not installed: pip install -e '.[fix]'")

pytestmark = [pytest.mark.slow, pytest.mark.fix, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
DYNAMIC_RULES = {"MAX_ORDER_QTY", "MAX_NOTIONAL", "TRADING_HALTED", "REDUCING_ONLY"}


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("story") / "story.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "py"), PYKX_UNLICENSED="true")
    p = subprocess.run([sys.executable, "-m", "pretrade.cli", "scenario", "flash-crash", "--seed", "7",
                        "--json", str(out)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=280)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "limit changes" in p.stdout and "rejected" in p.stdout
    return json.loads(out.read_text())


def test_dynamic_limits_cut_max_order_size_before_the_price_bottom(story) -> None:
    assert story["seed"] == 7 and story["sym"] == "ESZ6"
    cuts = [c for c in story["runs"]["dynamic"]["limit_changes"]
            if c["field"] == "max_order_qty" and c["new"] < c["old"]]
    assert cuts, story["runs"]["dynamic"]["limit_changes"]
    assert pd.Timestamp(cuts[0]["time"]) < pd.Timestamp(story["price_bottom_time"])
    assert cuts[0]["old"] == 500 and cuts[0]["new"] <= 250 and cuts[0]["reason"]
    assert story["runs"]["static"]["limit_changes"] == []


def test_the_200_lot_order_is_rejected_under_dynamic_and_accepted_under_static(story) -> None:
    dyn = story["runs"]["dynamic"]["chase_orders"]
    st = story["runs"]["static"]["chase_orders"]
    assert [c["qty"] for c in dyn] == [200] and [c["qty"] for c in st] == [200]
    assert st[0]["outcome"] == "accepted"  # passed every check and reached the venue
    assert dyn[0]["outcome"] == "rejected"
    rej = [r for r in story["runs"]["dynamic"]["rejected"] if r["qty"] == 200]
    assert rej[0]["rule"] in DYNAMIC_RULES and "tier " in rej[0]["text"], rej[0]   # the engine's limits, not a static rule
    assert rej[0]["time"][19] == "." and len(rej[0]["time"]) == 29


def test_dynamic_limits_lose_less_than_static(story) -> None:
    st, dyn = story["runs"]["static"], story["runs"]["dynamic"]
    assert dyn["pnl"] > st["pnl"], (st["pnl_by_strategy"], dyn["pnl_by_strategy"])
    for run in (st, dyn):
        assert run["accepted"] > 0 and run["blocked_valid"] == len(run["rejected"])
        assert run["peak_exposure"] > 0
