"""The pre-trade checks against the golden cases (shared with q/risk.q), plus their helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pretrade.risk.checks import (
    ORD_REJ_REASON,
    PASS,
    RULES,
    Context,
    DuplicateWindow,
    Order,
    RateWindow,
    check_order,
)
from pretrade.risk.limits import ALL, CheckConfig, Limit, LimitBook

GOLDEN = json.loads((Path(__file__).parent / "golden" / "checks.json").read_text())


def golden_config() -> CheckConfig:
    c = dict(GOLDEN["config"])
    c["restricted"] = frozenset(c["restricted"])
    return CheckConfig(**c)


def golden_limit(over: dict) -> Limit:
    d = {**GOLDEN["base_limit"], **over}
    return Limit(0, d["sym"], d["strategy"], 1, d["tier"], d["state"], d["halt"], d["max_qty"],
                 d["max_notional"], d["band_bps"], d["passive_band_bps"], d["max_position"],
                 d["max_rate"], model=d["model"])


def golden_case(case: dict) -> tuple[Order, Limit, Context]:
    o = dict(case["order"])
    if o.get("price") is None:
        o["price"] = math.nan
    ctx = {**GOLDEN["base_context"], **case.get("context", {})}
    if ctx["ref_price"] is None:
        ctx["ref_price"] = math.nan
    return Order(**o), golden_limit(case.get("limit", {})), Context(**ctx)


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_golden(case):
    order, lim, ctx = golden_case(case)
    d = check_order(order, lim, ctx, golden_config())
    assert d.code == case["expect"], d.text
    assert d.ok == (case["expect"] == "PASS")
    if "text" in case:
        assert d.text == case["text"]
    if not d.ok:
        assert d.text.startswith(d.code + ":")


def test_golden_covers_every_rule():
    assert set(RULES) <= {c["expect"] for c in GOLDEN["cases"]}
    assert set(RULES) == set(ORD_REJ_REASON)


def test_denial_names_limit_and_value():
    order, lim, ctx = golden_case(GOLDEN["cases"][9])
    d = check_order(order, lim, ctx, golden_config())
    assert (d.limit, d.value) == (50.0, 200.0)


def test_fat_finger_model_runs_only_after_the_cheap_checks():
    calls = []

    def model(o):
        calls.append(o)
        return 0.99

    cfg = golden_config()
    lim = golden_limit({})
    big = Order("SIM1", "buy", 500, 100.0)
    assert check_order(big, lim, Context(100.0), cfg, model).code == "MAX_ORDER_QTY"
    assert calls == []
    d = check_order(Order("SIM1", "buy", 5, 100.0), lim, Context(100.0), cfg, model)
    assert d.code == "FAT_FINGER" and len(calls) == 1 and "0.990" in d.text


def test_limit_book_newer_seq_wins_and_falls_back_to_the_instrument():
    book = LimitBook()
    base = golden_limit({})
    assert book.get("SIM1") is None                         # nothing yet: caller refuses
    assert book.apply(base)
    from dataclasses import replace

    assert not book.apply(replace(base, seq=0, max_qty=999))   # older: ignored
    assert book.get("SIM1").max_qty == 50
    assert book.apply(replace(base, seq=5, max_qty=7))
    assert book.get("SIM1", "mm").max_qty == 7               # no mm row: the instrument's
    book.apply(replace(base, strategy="mm", seq=6, max_qty=3))
    assert book.get("SIM1", "mm").max_qty == 3 and book.get("SIM1", ALL).max_qty == 7
    assert book.last_seq == 6


def test_rate_window_slides():
    w = RateWindow(1_000)
    for t in (0, 100, 500):
        w.add("s", t)
    assert w.count("s", 600) == 3
    assert w.count("s", 1_050) == 2     # the event at 0 has left the window
    assert w.count("other", 0) == 0


def test_duplicate_window():
    w = DuplicateWindow(1_000)
    o = Order("A", "buy", 10, 100.0, account="X")
    assert not w.seen(o, 0)
    w.add(o, 0)
    assert w.seen(Order("A", "buy", 10, 100.0, account="X"), 999)
    assert not w.seen(Order("A", "buy", 10, 100.0, account="Y"), 999)
    assert not w.seen(o, 1_000)


def test_pass_is_the_shared_constant():
    order, lim, ctx = golden_case(GOLDEN["cases"][0])
    assert check_order(order, lim, ctx, golden_config()) is PASS
