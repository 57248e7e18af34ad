"""The gateway's decision on one order: which limits bind, the live context, the checks.

`Gate.check(order, session, now_ns)` looks the limits up in the LimitsTable, fills the checks'
Context from the gateway's own state (reference price, position, order rates, recent orders, the
fat-finger model) and calls pretrade.risk.checks.check_order: the one implementation of the rules.
The mode (enforce, shadow, A/B) picks the binding limits; in shadow mode the dynamic decision is
computed too and returned beside the binding one. The fat-finger model binds only when approved
(gateway.governance); a candidate or shadow model is scored all the same and its own call is
returned beside the binding decision (`Verdict.model_call`), the same idea at the model level.
No FIX here: the benchmark calls it directly.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from pretrade.gateway.limits_table import FALLBACK_TIER, LimitsTable
from pretrade.gateway.shadow import Modes, arm_of
from pretrade.risk.checks import (
    ORD_REJ_REASON,
    PASS,
    Context,
    Decision,
    DuplicateWindow,
    Order,
    RateWindow,
    check_order,
)
from pretrade.risk.limits import CheckConfig, Limit

# The gateway's own denials, beside the checks' rules: no limits yet, today's positions not yet
# known (after a restart), venue not connected.
REJ_REASON = {**ORD_REJ_REASON, "NO_LIMITS": 99, "NO_POSITIONS": 99, "EXCHANGE_UNAVAILABLE": 99}
_TIER_STATE = {"ELEVATED": "RiskAlert_Elevated", "HIGH_ALERT": "RiskAlert_HighAnomaly",
               "CRITICAL": "RiskAlert_Critical", FALLBACK_TIER: "RiskAlert_StaleLimits"}


def risk_state(lim: Limit | None) -> str | None:
    """The tag-8011 value for an instrument under `lim`, or None when it is Normal."""
    if lim is None:
        return None
    if lim.state == "HALTED":
        return "RiskAlert_Halted"
    if lim.state == "REDUCING":
        return "RiskAlert_Reducing"
    return _TIER_STATE.get(lim.tier)


@dataclass(slots=True)
class Verdict:
    """The binding decision, the limits it used and where they came from (dynamic, static,
    fallback, none), the instrument's risk state, the non-binding shadow decision (shadow
    mode), the time the check took, and for an accepted order the impact model's predicted
    slippage (bps; NaN without a prediction) and recommended execution algorithm ("" without);
    `inputs`: the fat-finger model's input row when the model scored the order (None if not);
    `model_call`: a non-binding (candidate or shadow) model's own decision on the order under the
    binding limits, with its probability as value (None when the model binds or did not score)."""

    decision: Decision
    limits: str
    limit: Limit | None
    state: str | None
    latency_ns: int = 0
    shadow: Decision | None = None
    slippage_bps: float = math.nan
    algo: str = ""
    inputs: Any = None
    model_call: Decision | None = None


class Gate:
    """Per-order checks with the gateway's live state (positions, rates, recent orders)."""

    def __init__(self, table: LimitsTable, cfg: CheckConfig, modes: Modes | None = None,
                 model=None, advisor=None, model_status: str = "approved") -> None:
        if model is not None:  # the model's own calibrated block threshold (its card), not a generic one
            cfg = replace(cfg, fat_finger_threshold=model.threshold)
        self.table, self.cfg = table, cfg
        self.modes = modes or Modes()
        self.model = model  # a pretrade.models.fatfinger.FatFingerModel, or None
        self.model_status = model_status  # the model binds only when "approved" (gateway.governance)
        self.advisor = advisor  # a pretrade.gateway.advice.Advisor, or None (no impact advice)
        self.session_rates = RateWindow()
        self.strategy_rates = RateWindow()
        self.duplicates = DuplicateWindow(cfg.duplicate_window_ms * 1_000_000)
        self.positions: dict[str, int] = {}
        # False until today's positions are rebuilt (load_positions): no new order passes meanwhile
        self.positions_known = True
        self._early_fills: set[tuple[str, str]] = set()  # (sym, execid) seen before the rebuild
        self.lock = threading.Lock()  # sessions run on their own threads: one check at a time
        self.history = None  # the model's trader history: made on first use, or warmed at start
        self._ff = None  # (Order, Market, order_features) of the model's features: imported once

    def check(self, o: Order, session: str, now_ns: int | None = None) -> Verdict:
        """The decision on `o` from `session`; a passing new order or replace is counted in the
        rate windows and remembered for the duplicate check. Thread-safe."""
        with self.lock:
            return self._check(o, session, now_ns)

    @property
    def model_binds(self) -> bool:
        """The fat-finger model is loaded and approved: its FAT_FINGER rejections reject."""
        return self.model is not None and self.model_status == "approved"

    def set_model_status(self, status: str) -> None:
        """Apply the model's lifecycle status from the next order on: approved binds, candidate or
        shadow is scored but never rejects, retired unloads the model. Thread-safe."""
        with self.lock:
            self.model_status = status
            if status == "retired":
                self.model = None

    def advise(self, o: Order, v: Verdict) -> Verdict:
        """Fill an accepted new order's or replace's predicted slippage and algo into `v` (no-op
        without an advisor, or for rejects and cancels). Called after the order is on its way to
        the venue: advice is never on the order's path. Thread-safe (reads the table only)."""
        if self.advisor is not None and v.decision.ok and o.kind != "cancel":
            v.slippage_bps, v.algo = self.advisor.advise(o, self.table)
        return v

    def _check(self, o: Order, session: str, now_ns: int | None) -> Verdict:
        t0 = time.perf_counter_ns()
        now_ns = time.time_ns() if now_ns is None else now_ns
        table = self.table
        dyn, source = table.lookup(o.sym, o.strategy)
        state = risk_state(dyn)
        if o.kind == "cancel":
            return Verdict(PASS, source, dyn, state, time.perf_counter_ns() - t0)
        if dyn is None:
            why = ("no limits received from the risk engine yet" if source == "none"
                   else f"the risk engine publishes no limits for {o.sym}")
            d = Decision(False, "NO_LIMITS", f"NO_LIMITS: {why}; no order passes until they arrive")
            return Verdict(d, source, None, state, time.perf_counter_ns() - t0)
        if not self.positions_known:
            d = Decision(False, "NO_POSITIONS", "NO_POSITIONS: today's positions are not yet rebuilt from the "
                         "RDB's executions (gateway restarted); no order passes until they are")
            return Verdict(d, source, dyn, state, time.perf_counter_ns() - t0)
        ctx = Context(table.ref_price(o.sym), self.positions.get(o.sym, 0),
                      self.session_rates.count(session, now_ns),
                      self.strategy_rates.count(o.strategy, now_ns),
                      self.duplicates.seen(o, now_ns))
        binds = self.model_status == "approved"
        if self.model is not None:
            ctx.fat_finger_model = self.model.version if binds else f"{self.model.version}, {self.model_status}: not binding"
        memo: dict[str, Any] = {}
        scorer = self._scorer(ctx, dyn, now_ns, memo)
        bound = scorer if binds else None  # a model not approved never decides: the other rules do
        mode, share = self.modes.mode_of(o.sym, o.strategy)
        shadow = None
        if source == "fallback" or mode == "enforce":
            binding, limits = dyn, source
        elif mode == "shadow":
            binding, limits = table.static(o.sym, o.strategy), "static"
            shadow = check_order(o, dyn, ctx, self.cfg, bound)
        else:
            arm = arm_of(o.account, o.strategy, share)
            binding, limits = (dyn, "dynamic") if arm == "dynamic" else (table.static(o.sym, o.strategy), "static")
        d = check_order(o, binding, ctx, self.cfg, scorer)
        model_call = None
        if scorer is not None and not binds:  # scored as if it bound; its call recorded, never enforced
            if "p" in memo:
                model_call = d if d.code == "FAT_FINGER" else Decision(
                    True, "PASS", f"PASS: p {memo['p']:.3f} <= {self.cfg.fat_finger_threshold:g} (model "
                    f"{ctx.fat_finger_model})", self.cfg.fat_finger_threshold, memo["p"])
            if d.code == "FAT_FINGER":  # the model does not bind: the rules after it decide
                d = check_order(o, binding, ctx, self.cfg, None)
        if d.ok:
            self.session_rates.add(session, now_ns)
            self.strategy_rates.add(o.strategy, now_ns)
            self.duplicates.add(o, now_ns)
        return Verdict(d, limits, binding, state, time.perf_counter_ns() - t0, shadow, inputs=memo.get("x"),
                       model_call=model_call)

    def _scorer(self, ctx: Context, dyn: Limit, now_ns: int, memo: dict[str, Any]):
        """The fat-finger callable for check_order: scores at most once per order and leaves the
        probability and the model's input row in `memo` (p, x)."""
        model = self.model
        if model is None:
            return None
        if self._ff is None:
            from pretrade.models.order_features import Market, TraderHistory, order_features
            from pretrade.models.order_features import Order as FFOrder

            self._ff = (FFOrder, Market, order_features)
            if self.history is None:
                self.history = TraderHistory()
        FFOrder, Market, order_features = self._ff  # noqa: N806 (classes)
        table = self.table

        def score(o: Order) -> float:
            if "p" not in memo:
                bid, ask = table.bids.get(o.sym, math.nan), table.asks.get(o.sym, math.nan)
                market = o.price != o.price
                buy = o.side == "buy"
                px = ctx.ref_price if market else o.price
                marketable = market or (px >= ask if buy else px <= bid)
                anomaly = dyn.score if dyn.score == dyn.score else 0.0
                # model.score_order's computation, with the input row kept for people's marks
                x = order_features(
                    FFOrder(now_ns, o.sym, o.account or "-", 1 if buy else -1, float(o.qty), float(px), marketable),
                    Market(bid, ask, table.minute_volume(o.sym), table.vol_z.get(o.sym, 0.0), anomaly), self.history)
                memo["p"], memo["x"] = float(model.probability(x)[0]), x
            return memo["p"]

        return score

    def on_fill(self, sym: str, side: str, qty: int, execid: str = "") -> None:
        """A fill from the venue: the firm's position in `sym` moves. Before the rebuild, the
        fill is remembered so the RDB's copy of it is not counted twice."""
        with self.lock:
            self.positions[sym] = self.positions.get(sym, 0) + (qty if side == "buy" else -qty)
            if not self.positions_known:
                self._early_fills.add((sym, execid))

    def load_positions(self, fills: Iterable[tuple[str, str, str, int]]) -> dict[str, int]:
        """Rebuild today's positions from the recorded fills (sym, execid, side, qty), on top of
        the fills this process saw itself (each counted once); orders pass again. Returns the
        positions."""
        with self.lock:
            for sym, execid, side, qty in fills:
                if (sym, execid) not in self._early_fills:
                    self.positions[sym] = self.positions.get(sym, 0) + (qty if side == "buy" else -qty)
            self._early_fills.clear()
            self.positions_known = True
            return dict(self.positions)
