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

from pretrade.gateway.limits_table import LimitsTable
from pretrade.risk.checks import Order

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
        rv, vol = table.rv_volume.get(o.sym, (math.nan, math.nan))
        rv = rv if rv > 0 else self.cfg.default_rv_1m
        vol = vol if vol > 0 else table.volume_1m(o.sym)
        if not vol > 0:
            return NO_ADVICE
        try:
            bps = float(self.model.predict_slippage(o.qty, 1 if o.side == "buy" else -1, book, rv, vol)[0])
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
