"""Execution advice on accepted orders: the impact model's predicted slippage and the algorithm
to use when it passes the configured budget ([impact] in config/limits.toml). Advisory only: it
never changes a decision, and the gateway runs without it when the model is missing or refused.

Inputs come from the gateway's live state (LimitsTable): the latest `book` row of the order's
instrument and the latest `features` row (rv_1m, volume_1m) the risk engine published. Where an
input is missing: no book yet -> no prediction (slippageBps NaN, algo ""); no features row ->
rv_1m = `default_rv_1m` of the config and volume_1m from the gateway's own trade tape (no
prediction while that is empty too).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pretrade.gateway.limits_table import LimitsTable
from pretrade.risk.checks import Order
from pretrade.schema import BOOK_LEVELS

log = logging.getLogger(__name__)

NO_ADVICE: tuple[float, str] = (math.nan, "")


@dataclass(frozen=True, slots=True)
class ImpactConfig:
    """The [impact] section: model path, slippage budget (bps), the algorithm orders use by
    default, and the 1-minute volatility assumed before the engine publishes features."""

    model: str = "models/impact.onnx"
    budget_bps: float = 10.0
    algo: str = "TWAP"
    default_rv_1m: float = 0.0004


def impact_config(raw: dict[str, Any] | None) -> ImpactConfig:
    """The [impact] section of the parsed limits TOML (defaults when absent), validated."""
    raw = dict(raw or {})
    unknown = set(raw) - set(ImpactConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"[impact]: unknown keys {sorted(unknown)}")
    c = ImpactConfig(**raw)
    if not (c.budget_bps > 0 and math.isfinite(c.budget_bps)) or not c.default_rv_1m > 0:
        raise ValueError(f"[impact]: budget_bps and default_rv_1m must be positive, got {c}")
    return c


def impact_row(qty: float, side: int, book: dict, rv_1m: float, volume_1m: float,
               horizon_s: float = 0.0) -> np.ndarray:
    """pretrade.models.impact.impact_features for ONE order against one book row, in scalar
    Python: the same computation, step by step (~10x faster than numpy on one-row arrays, which
    is what the gateway has). tests/test_gateway_advice.py proves the two equal."""
    nan, n = math.nan, BOOK_LEVELS

    def levels(name: str) -> list[float]:
        return [float(book.get(f"{name}{i}", nan)) for i in range(1, n + 1)]

    bid, ask = levels("bid"), levels("ask")
    bsz = [0.0 if x != x else x for x in levels("bsize")]
    asz = [0.0 if x != x else x for x in levels("asize")]
    if bid[0] != bid[0] or ask[0] != ask[0] or ask[0] <= bid[0]:
        raise ValueError("impact features need a two-sided, uncrossed book (bid1 < ask1)")
    qty, side, horizon = float(qty), float(side), float(horizon_s)
    if qty <= 0 or side not in (-1.0, 1.0):
        raise ValueError("qty must be positive and side +1 (buy) or -1 (sell)")
    if not horizon >= 0:
        raise ValueError("horizon_s must be a number of seconds >= 0")
    mid = (bid[0] + ask[0]) / 2
    px, sz, other = (ask, asz, bsz) if side > 0 else (bid, bsz, asz)
    dist = [abs(p - mid) / mid * 1e4 for p in px]
    deepest = max(d for d in dist if d == d)  # short books: missing levels count as the deepest seen
    dist = [deepest if d != d else d for d in dist]
    cum, c = [], 0.0
    for x in sz:
        c += x
        cum.append(c)
    sigma = rv_1m * 1e4
    sigma = sigma if sigma != sigma else max(sigma, 0.1)  # np.maximum keeps a NaN
    vol = volume_1m if volume_1m != volume_1m else max(volume_1m, 1.0)
    s5, o5 = sum(sz[:5]), sum(other[:5])
    return np.array([(ask[0] - bid[0]) / mid * 1e4,
                     math.log(qty / max(cum[0], 1.0)), math.log(qty / max(cum[2], 1.0)),
                     math.log(qty / max(cum[4], 1.0)), math.log(qty / max(cum[n - 1], 1.0)),
                     dist[2], dist[n - 1], _log(sigma), _log(qty / vol),
                     (s5 - o5) / max(s5 + o5, 1.0), math.log1p(horizon)], dtype=np.float32)


def _log(x: float) -> float:
    """math.log with numpy's answers for NaN (NaN) and 0 (-inf)."""
    return x if x != x else (-math.inf if x == 0 else math.log(x))


class Advisor:
    """Predicted slippage and recommended algorithm for one order, from the live table."""

    def __init__(self, model, cfg: ImpactConfig) -> None:
        self.model, self.cfg = model, cfg  # model: a pretrade.models.impact.ImpactModel

    def advise(self, o: Order, table: LimitsTable) -> tuple[float, str]:
        """(slippage bps, algo) of `o` against the table's book and features; NO_ADVICE when
        an input is missing or the book is not usable (one-sided, crossed)."""
        from pretrade.models.impact import recommend_algo

        book = table.books.get(o.sym)
        if book is None or o.qty <= 0:
            return NO_ADVICE
        rv = table.rv_volume.get(o.sym, (math.nan, math.nan))[0]
        rv = rv if rv > 0 else self.cfg.default_rv_1m
        vol = table.minute_volume(o.sym)
        if not vol > 0:
            return NO_ADVICE
        try:
            bps = float(self.model.predict(impact_row(o.qty, 1 if o.side == "buy" else -1, book, rv, vol))[0])
            return bps, recommend_algo(bps, self.cfg.budget_bps, self.cfg.algo)
        except ValueError:  # a one-sided or crossed book: no advice for this order
            return NO_ADVICE


def load_advisor(cfg: ImpactConfig, root: Path) -> Advisor | None:
    """The Advisor with its card-checked model, or None (logged once, with why) when the model
    is missing or refused: impact is advisory and must not stop the gateway."""
    from pretrade.models.card import ModelRefused
    from pretrade.models.impact import ImpactModel

    path = Path(cfg.model)
    path = path if path.is_absolute() else root / path
    try:
        model = ImpactModel(path)
    except (ModelRefused, OSError, ImportError) as e:
        log.warning("impact model not served (%s): orders get no slippage prediction or algo advice", e)
        return None
    log.info("impact model %s loaded from %s: budget %g bps, default algo %s",
             model.version, path, cfg.budget_bps, cfg.algo)
    return Advisor(model, cfg)
