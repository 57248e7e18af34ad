"""Order-level features of the fat-finger model: ONE function for training and live scoring.

`order_features(order, market, history)` turns one proposed order, the prevailing state of its
instrument and the trader's history into the model's input row, then adds the order to the
history (incrementally, O(1) per order). Training replays days of orders through it in time
order; the gateway calls it on every order, after `warm_history` has replayed earlier days.
Every feature is scale-free (ratios, logs, bps), so a $5 stock and a 78,000 USD crypto pair look
alike to the model.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

NS = 1_000_000_000
DAY_NS = 86_400 * NS

# The model's inputs, in order (the ONNX graph and the card list them in this order).
FEATURES: tuple[str, ...] = (
    "qty_vs_trader",      # log(qty) minus the trader's EWMA of log(qty) in this instrument
    "qty_z_trader",       # the same in units of the trader's EW standard deviation of log(qty)
    "trader_orders",      # log(1 + orders the trader has sent in this instrument): history depth
    "qty_vs_volume",      # log(1 + qty) - log(1 + market volume over the last minute)
    "qty_vs_firm",        # log(qty) minus the median log(qty) of the firm's recent orders in this instrument
    "notional_gap",       # |qty_vs_trader - log(mid)|: ~0 when the trader's usual notional was typed as qty
    "zeros_vs_trader",    # trailing zeros of qty minus the trader's EWMA of them here: an extra zero typed is +1
    "px_vs_touch_bps",    # side * (price - touch) / mid in bps: a buy above the ask is positive
    "px_vs_touch_spreads",  # the same distance in units of the prevailing spread (tick-size free)
    "px_vs_trader_bps",   # px_vs_touch_bps minus the trader's EWMA of it in this instrument
    "px_vs_mid_log",      # |log(price / mid)|: decimal shifts and swapped fields are ~2.3 or more
    "side_vs_trader",     # side * the trader's EWMA of today's sides in this instrument (-1: the opposite)
    "side_orders",        # log(1 + the trader's orders in this instrument today): how sure the side habit is
    "dup_log_seconds",    # log10 of seconds since the same account sent the same order, to 0.05 (6: never)
    "activity_ratio",     # trader's orders in the last minute vs their usual per-minute rate while active
    "time_of_day",        # UTC time of day as a fraction of the day
    "vol_z",              # the instrument's normalised 1-minute realized volatility (z_rv_1m)
    "spread_bps",         # the prevailing bid-ask spread in bps of the mid
    "anomaly",            # the instrument's anomaly score in [0, 1] (VAE, or a proxy: see docs)
    "marketable",         # 1 for a marketable order, 0 for a passive limit
)
N_FEATURES = len(FEATURES)
_ALPHA = 0.05        # EWMA weight of a trader's size and price habits (about the last 20 orders)
_FIRM_SIZES = 64     # recent sizes per instrument (all accounts) for the firm's habit
_NO_GAP = 10.0       # notional_gap when there is no size habit or no mid
_SIDE_ALPHA = 0.1    # EWMA weight of a trader's side in an instrument
_SESSION_GAP = 4 * 3600 * NS  # a pause this long starts a new session: the side habit starts afresh
_ACTIVE_GAP = 600 * NS  # gaps between a trader's orders count at most this much as active time
_HABIT_BPS = 500.0   # distances from the touch beyond this count as this much in the habit
_RECENT = 20         # orders per trader and instrument searched for duplicates
_NEVER = 6.0         # dup_log_seconds when no identical order was seen (10^6 s)
_CLIP_BPS = 1e6


@dataclass(frozen=True)
class Order:
    """A proposed order as the gateway sees it."""

    time_ns: int
    sym: str
    account: str
    side: int          # +1 buy, -1 sell
    qty: float
    price: float
    marketable: bool = False


@dataclass(frozen=True)
class Market:
    """The prevailing state of one instrument when the order arrives (NaN where unknown)."""

    bid: float = math.nan
    ask: float = math.nan
    volume_1m: float = 0.0
    vol_z: float = 0.0
    anomaly: float = 0.0


@dataclass
class _Habit:
    """A trader's running habits in one instrument."""

    n: int = 0
    n_today: int = 0     # orders in the current session
    last_ns: int = 0
    mean_lq: float = 0.0
    var_lq: float = 0.0
    mean_dev: float = 0.0
    zeros: float = 0.0   # EWMA of the trailing zeros of qty
    side: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=_RECENT))  # (t, side, qty, price)


@dataclass
class _Activity:
    """A trader's order times over the last minute, their order count and their time active."""

    last_ns: int = -1
    active_ns: int = 0   # time active: the gaps between orders, each capped at _ACTIVE_GAP
    total: int = 0
    last_min: deque = field(default_factory=deque)


@dataclass
class _Window:
    """The last `_FIRM_SIZES` values in arrival order and sorted, for an O(log n) running median."""

    arrived: deque = field(default_factory=deque)
    ranked: list = field(default_factory=list)

    def median(self) -> float:
        s, n = self.ranked, len(self.ranked)
        return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])

    def add(self, x: float) -> None:
        if len(self.arrived) == _FIRM_SIZES:
            del self.ranked[bisect.bisect_left(self.ranked, self.arrived.popleft())]
        self.arrived.append(x)
        bisect.insort(self.ranked, x)


@dataclass
class TraderHistory:
    """Per-trader state the features need, updated incrementally by `order_features`."""

    habits: dict[tuple[str, str], _Habit] = field(default_factory=dict)
    activity: dict[str, _Activity] = field(default_factory=dict)
    firm_sizes: dict[str, _Window] = field(default_factory=dict)  # sym -> recent log sizes, all accounts


def trailing_zeros(qty: float) -> int:
    """Trailing zeros of a whole quantity (0 for a fractional one): 5,000 -> 3."""
    if qty != int(qty):
        return 0
    q, n = int(qty), 0
    while q and q % 10 == 0 and n < 12:
        q //= 10
        n += 1
    return n


def validate_order(order: Order) -> None:
    """Raise ValueError for an order the features cannot describe (the boundary check)."""
    if order.side not in (1, -1):
        raise ValueError(f"order side must be +1 (buy) or -1 (sell), got {order.side!r}")
    if not (order.qty > 0 and math.isfinite(order.qty)):
        raise ValueError(f"order qty must be a positive number, got {order.qty!r}")
    if not (order.price > 0 and math.isfinite(order.price)):
        raise ValueError(f"order price must be a positive number, got {order.price!r}")
    if not order.account or not order.sym:
        raise ValueError("order needs a sym and an account")


def order_features(order: Order, market: Market, history: TraderHistory,
                   out: np.ndarray | None = None) -> np.ndarray:
    """The model's input row (float32, FEATURES order) for `order`; then records it in `history`."""
    validate_order(order)
    row = np.empty(N_FEATURES, dtype=np.float32) if out is None else out
    key = (order.account, order.sym)
    h = history.habits.get(key)
    if h is None:
        h = history.habits[key] = _Habit()
    act = history.activity.get(order.account)
    if act is None:
        act = history.activity[order.account] = _Activity(last_ns=order.time_ns)
    side, qty, price, t = order.side, float(order.qty), float(order.price), order.time_ns

    firm = history.firm_sizes.get(order.sym)
    if firm is None:
        firm = history.firm_sizes[order.sym] = _Window()
    lq = math.log(qty)
    zeros = trailing_zeros(qty)
    sd = math.sqrt(h.var_lq) if h.n > 1 else 1.0
    qty_vs = lq - h.mean_lq if h.n else 0.0
    bid, ask = market.bid, market.ask
    quoted = bid > 0 and ask > 0 and ask >= bid  # False for NaN
    if quoted:
        mid = (bid + ask) / 2
        touch = ask if side > 0 else bid
        dev = max(-_CLIP_BPS, min(_CLIP_BPS, side * (price - touch) / mid * 1e4))
        spread = (ask - bid) / mid * 1e4
        px_mid = abs(math.log(price / mid))
    else:
        dev = spread = px_mid = 0.0
    dup = _NEVER
    for (t0, s0, q0, p0) in reversed(h.recent):
        if s0 == side and q0 == qty and p0 == price:
            # floor 1 us; on a grid of 0.05 (12% in time): few enough distinct values that the
            # model's histogram bins resolve every one (it bins by quantile otherwise, and the
            # "never" value fills almost every quantile)
            dup = round(math.log10(max(t - t0, 1_000) / NS) * 20) / 20
            break
    while act.last_min and act.last_min[0] <= t - 60 * NS:
        act.last_min.popleft()
    usual = act.total * 60 * NS / max(60 * NS, act.active_ns + min(max(t - act.last_ns, 0), _ACTIVE_GAP))
    if h.n and t - h.last_ns > _SESSION_GAP:  # a new session: today's side is not yesterday's
        h.side, h.n_today = 0.0, 0

    row[0] = qty_vs
    row[1] = qty_vs / max(sd, 0.1) if h.n > 1 else 0.0
    row[2] = math.log1p(h.n)
    row[3] = math.log1p(qty) - math.log1p(max(market.volume_1m, 0.0))
    row[4] = lq - firm.median() if firm.ranked else 0.0
    row[5] = abs(qty_vs - math.log(mid)) if quoted and h.n else _NO_GAP
    row[6] = zeros - h.zeros if h.n else 0.0
    row[7] = dev
    row[8] = max(-_CLIP_BPS, min(_CLIP_BPS, dev / spread)) if spread > 0 else 0.0
    row[9] = dev - h.mean_dev if h.n else 0.0
    row[10] = px_mid
    row[11] = side * h.side
    row[12] = math.log1p(h.n_today)
    row[13] = dup
    row[14] = (len(act.last_min) + 1) / (usual + 1)
    row[15] = (t % DAY_NS) / DAY_NS
    row[16] = market.vol_z if math.isfinite(market.vol_z) else 0.0
    row[17] = spread
    row[18] = min(1.0, max(0.0, market.anomaly)) if math.isfinite(market.anomaly) else 0.0
    row[19] = 1.0 if order.marketable else 0.0

    # record the order: running means at first (weight 1/n), then EWMAs; winsorised so that
    # one wild order (often an error itself) barely moves the habit
    w = max(1.0 / (h.n + 1), _ALPHA)
    x = min(max(lq, h.mean_lq - 4 * sd), h.mean_lq + 4 * sd) if h.n >= 10 else lq
    d = x - h.mean_lq if h.n else 0.0
    h.mean_lq = h.mean_lq + w * d if h.n else lq
    h.var_lq = (1 - w) * (h.var_lq + w * d * d) if h.n > 1 else 0.25
    firm.add(lq)
    h.mean_dev += w * (max(-_HABIT_BPS, min(_HABIT_BPS, dev)) - h.mean_dev)
    h.zeros += w * (min(zeros, h.zeros + 1) - h.zeros) if h.n else zeros
    h.side += max(1.0 / (h.n_today + 1), _SIDE_ALPHA) * (side - h.side)
    h.n += 1
    h.n_today += 1
    h.last_ns = max(h.last_ns, t)
    h.recent.append((t, side, qty, price))
    act.total += 1
    act.active_ns += min(max(t - act.last_ns, 0), _ACTIVE_GAP)
    act.last_ns = max(act.last_ns, t)
    act.last_min.append(t)
    return row


def warm_history(orders: pd.DataFrame) -> TraderHistory:
    """The traders' history after earlier orders (e.g. the HDB's `order` table, new orders only).

    Columns time (datetime64[ns]), sym, account, side ("buy"/"sell"), qty, price, ordtype, and
    optionally bid, ask (the prevailing quote at the order; NaN where unknown). Rows are replayed
    in time order (stable) through `order_features`, so the history equals what live replay of the
    same orders gives. Rows with a bad time, qty, price, side, sym or account are skipped and counted."""
    missing = {"time", "sym", "account", "side", "qty", "price"} - set(orders.columns)
    if missing:
        raise ValueError(f"warm_history: orders lack column(s) {sorted(missing)}")
    history = TraderHistory()
    if "event" in orders.columns:
        orders = orders[orders["event"] == "new"]
    n = len(orders)
    t = orders["time"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    side = np.select([orders["side"].to_numpy() == "buy", orders["side"].to_numpy() == "sell"], [1, -1], 0)
    qty = orders["qty"].to_numpy(dtype=np.float64)
    price = orders["price"].to_numpy(dtype=np.float64)
    nan = np.full(n, math.nan)
    bid = orders["bid"].to_numpy(dtype=np.float64) if "bid" in orders.columns else nan
    ask = orders["ask"].to_numpy(dtype=np.float64) if "ask" in orders.columns else nan
    mk = (orders["ordtype"].isin(["marketable", "market"]).to_numpy() if "ordtype" in orders.columns
          else np.zeros(n, dtype=bool))
    syms, accounts = orders["sym"].to_numpy(dtype=object), orders["account"].to_numpy(dtype=object)
    row = np.empty(N_FEATURES, dtype=np.float32)
    bad = 0
    nat = np.iinfo(np.int64).min
    for k in np.argsort(t, kind="stable"):
        s, a = syms[k], accounts[k]
        try:
            if t[k] == nat:
                raise ValueError("no time")
            o = Order(int(t[k]), s if isinstance(s, str) else "", a if isinstance(a, str) else "",
                      int(side[k]), float(qty[k]), float(price[k]), bool(mk[k]))
            order_features(o, Market(float(bid[k]), float(ask[k])), history, out=row)
        except ValueError:
            bad += 1
    log.info("trader history warmed from %d earlier orders (%d accounts, %d trader-instrument pairs)%s",
             n - bad, len(history.activity), len(history.habits),
             f"; {bad} rows skipped (bad time, qty, price, side, sym or account)" if bad else "")
    return history
