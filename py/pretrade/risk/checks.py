"""The pre-trade checks the gateway runs on every new order and replace, in the order of issue 6.

`check_order(order, limit, ctx, cfg)` is a pure function: the live inputs it needs (reference
price, position, rates, whether the order duplicates a recent one, the fat-finger probability)
come in `Context`, which the caller fills from its own state (`RateWindow`, `DuplicateWindow`,
the fat-finger model). The first failing rule decides; a denial names the rule, the limit and the
value, e.g. `MAX_ORDER_QTY: 200 > 50 (tier HIGH_ALERT, model vae-3)`. Cancels always pass.
q/risk.q implements the same rules; tests/golden/checks.json pins both.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pretrade.risk.limits import CheckConfig, Limit

# Reason code -> FIX OrdRejReason (tag 103): 3 order exceeds limit, 6 duplicate order,
# 1 unknown symbol (restricted), 2 exchange closed (halted), 99 other.
ORD_REJ_REASON: dict[str, int] = {
    "INVALID_ORDER": 99, "TRADING_HALTED": 2, "REDUCING_ONLY": 3, "MAX_ORDER_QTY": 3,
    "MAX_NOTIONAL": 3, "PRICE_BAND": 3, "NO_REFERENCE_PRICE": 99, "FAT_FINGER": 99,
    "MAX_POSITION": 3, "CONCENTRATION": 3, "ORDER_RATE_SESSION": 3, "ORDER_RATE_STRATEGY": 3,
    "DUPLICATE_ORDER": 6, "RESTRICTED": 1,
}
RULES = ("INVALID_ORDER", "TRADING_HALTED", "REDUCING_ONLY", "MAX_ORDER_QTY", "MAX_NOTIONAL",
         "NO_REFERENCE_PRICE", "PRICE_BAND", "FAT_FINGER", "MAX_POSITION", "CONCENTRATION",
         "ORDER_RATE_SESSION", "ORDER_RATE_STRATEGY", "DUPLICATE_ORDER", "RESTRICTED")


@dataclass(slots=True)
class Order:
    """An order as the checks see it. price is NaN for a market order; kind is new, replace or
    cancel; side is buy or sell."""

    sym: str
    side: str
    qty: int
    price: float = math.nan
    strategy: str = ""
    account: str = ""
    kind: str = "new"


@dataclass(slots=True)
class Context:
    """The live inputs of one check: reference price (mid), the position the order adds to, the
    orders already sent in the rate window by this session and by this strategy, whether the same
    order was seen within the duplicate window, and the fat-finger probability (None: not known;
    `check_order` then asks its `fat_finger` callable, if any)."""

    ref_price: float
    position: int = 0
    session_rate: int = 0
    strategy_rate: int = 0
    duplicate: bool = False
    fat_finger_p: float | None = None
    fat_finger_model: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome: ok, the rule's code (PASS when ok), the text, the limit and the value."""

    ok: bool
    code: str
    text: str = ""
    limit: float = math.nan
    value: float = math.nan


PASS = Decision(True, "PASS")


def _n(x: float) -> str:
    """A number as a trader reads it: integers without a decimal point."""
    return str(int(x)) if float(x).is_integer() else f"{x:.6g}"


def _deny(code: str, value: float, limit: float, lim: Limit, detail: str = "") -> Decision:
    ctx = f"tier {lim.tier}, model {lim.model or 'none'}"
    text = f"{code}: {_n(value)} > {_n(limit)} ({detail + '; ' if detail else ''}{ctx})"
    return Decision(False, code, text, float(limit), float(value))


def check_order(o: Order, lim: Limit, ctx: Context, cfg: CheckConfig,
                fat_finger: Callable[[Order], float] | None = None) -> Decision:
    """The first rule `o` breaks under `lim`, or PASS. Cancels always pass."""
    if o.kind == "cancel":
        return PASS
    qty, price = o.qty, o.price
    buy = o.side == "buy"
    if o.side not in ("buy", "sell") or not qty > 0 or price <= 0 or price == math.inf:
        return Decision(False, "INVALID_ORDER",
                        f"INVALID_ORDER: side {o.side}, qty {qty}, price {price} "
                        "(side must be buy or sell, qty and price positive)")
    pos = ctx.position
    new_pos = pos + qty if buy else pos - qty
    reduces = pos != 0 and abs(new_pos) < abs(pos) and new_pos * pos >= 0
    if lim.state == "HALTED":
        why = f"{lim.halt} halt" if lim.halt else "halted"
        return Decision(False, "TRADING_HALTED",
                        f"TRADING_HALTED: {lim.sym} is HALTED ({why}; tier {lim.tier}, model "
                        f"{lim.model or 'none'}); only cancels pass")
    if lim.state == "REDUCING" and not reduces:
        return Decision(False, "REDUCING_ONLY",
                        f"REDUCING_ONLY: {o.side} {qty} takes position {pos} to {new_pos}; only "
                        f"orders that reduce the position pass (tier {lim.tier}, model "
                        f"{lim.model or 'none'})", 0.0, float(abs(new_pos)))
    if qty > lim.max_qty:
        return _deny("MAX_ORDER_QTY", qty, lim.max_qty, lim)
    ref = ctx.ref_price
    market = price != price  # NaN: a market order
    if not ref > 0:  # NaN, zero or negative: no usable reference price, fail closed
        return Decision(False, "NO_REFERENCE_PRICE",
                        f"NO_REFERENCE_PRICE: no reference price for {o.sym}; orders wait for market data")
    px = ref if market else price
    notional = qty * px
    if notional > lim.max_notional:
        return _deny("MAX_NOTIONAL", notional, lim.max_notional, lim)
    if not market:
        passive = price <= ref if buy else price >= ref
        band = lim.passive_band_bps if passive else lim.band_bps
        dev = abs(price - ref) / ref * 1e4
        if dev > band:
            return _deny("PRICE_BAND", round(dev, 2), band, lim,
                         f"{'passive' if passive else 'aggressive'} {o.side} at {_n(price)} vs reference {_n(ref)}, bps")
    p = ctx.fat_finger_p
    if p is None and fat_finger is not None:
        p = fat_finger(o)
    if p is not None and p > cfg.fat_finger_threshold:
        return Decision(False, "FAT_FINGER",
                        f"FAT_FINGER: p {p:.3f} > {_n(cfg.fat_finger_threshold)} (model "
                        f"{ctx.fat_finger_model or 'fatfinger'})", cfg.fat_finger_threshold, float(p))
    if not reduces:
        if abs(new_pos) > lim.max_position:
            return _deny("MAX_POSITION", abs(new_pos), lim.max_position, lim,
                         f"position {pos} -> {new_pos} after a full fill")
        conc = abs(new_pos) * px / cfg.capital
        if conc > cfg.max_concentration:
            return _deny("CONCENTRATION", round(conc, 6), cfg.max_concentration, lim,
                         "position notional / capital after a full fill")
    if ctx.session_rate + 1 > cfg.max_session_rate:
        return _deny("ORDER_RATE_SESSION", ctx.session_rate + 1, cfg.max_session_rate, lim,
                     "orders per second, this session")
    if ctx.strategy_rate + 1 > lim.max_rate:
        return _deny("ORDER_RATE_STRATEGY", ctx.strategy_rate + 1, lim.max_rate, lim,
                     f"orders per second, strategy {o.strategy or '-'}")
    if ctx.duplicate:
        return Decision(False, "DUPLICATE_ORDER",
                        f"DUPLICATE_ORDER: {o.account or '-'} {o.sym} {o.side} {qty} @ "
                        f"{'market' if market else _n(price)} again within {cfg.duplicate_window_ms} ms")
    if o.sym in cfg.restricted:
        return Decision(False, "RESTRICTED", f"RESTRICTED: {o.sym} is on the restricted list")
    return PASS


class RateWindow:
    """Events per key in a sliding window (orders per second per session or strategy)."""

    def __init__(self, window_ns: int = 1_000_000_000) -> None:
        self.window_ns = window_ns
        self._events: dict[object, deque[int]] = {}

    def count(self, key: object, now: int) -> int:
        """Events of `key` in the window ending at `now` (ns)."""
        q = self._events.get(key)
        if not q:
            return 0
        edge = now - self.window_ns
        while q and q[0] <= edge:
            q.popleft()
        return len(q)

    def add(self, key: object, now: int) -> None:
        """Record one event of `key` at `now`."""
        q = self._events.get(key)
        if q is None:
            q = self._events[key] = deque()
        q.append(now)


class DuplicateWindow:
    """Remembers (account, sym, side, qty, price) for a window; `seen` says if one recurs."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self._last: dict[tuple, int] = {}

    def seen(self, o: Order, now: int) -> bool:
        """True if the same order was recorded within the window before `now`."""
        t = self._last.get((o.account, o.sym, o.side, o.qty, o.price))
        return t is not None and now - t < self.window_ns

    def add(self, o: Order, now: int) -> None:
        """Record `o` at `now`; entries older than the window are dropped now and then."""
        self._last[(o.account, o.sym, o.side, o.qty, o.price)] = now
        if len(self._last) > 100_000:
            edge = now - self.window_ns
            self._last = {k: t for k, t in self._last.items() if t > edge}
