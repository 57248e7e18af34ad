"""The firm's own order flow, with labelled erroneous orders (the fat-finger scenario).

Traders and strategies each have habits: the instruments they trade, their usual size, the time
of day they are active, limit or marketable orders, and how far from the touch they price. Most
orders are valid; a small share carry one of the errors seen in real incidents. Each erroneous
order's id and kind are ground truth (labels) for the order-entry error model.

The desk is persistent: its traders and their habits come from a firm seed that stays the same
from day to day (as the people do), while each day's seed drives that day's market and order
timing, a little drift in every habit, a trader now and then trying an instrument they do not
usually trade, and the direction each trader works in each instrument (mostly yesterday's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pretrade.market.instruments import Instrument
from pretrade.schema import empty_frame

ERROR_KINDS = ("extra_zeros", "price_decimal_shift", "price_qty_swapped", "wrong_side",
               "duplicate", "notional_as_qty")
NS = 1_000_000_000


@dataclass(frozen=True)
class Trader:
    """One trader or strategy and its habits."""

    account: str
    strategy: str
    syms: tuple[int, ...]  # indexes into the run's instruments
    size_lots: float       # typical order size in lots
    peak_tod: float        # most active time of day, as a fraction of the session
    width: float           # spread of activity around the peak (fraction of the session)
    p_limit: float         # share of limit orders (the rest are marketable limits)
    offset: float          # mean passive distance from the touch, in ticks


def _draw_trader(rng: np.random.Generator, n_inst: int, account: str, strategy: str, k: int) -> Trader:
    """One trader's habits, drawn from `rng`."""
    n_syms = int(rng.integers(1, min(4, n_inst) + 1))
    syms = tuple(sorted(rng.choice(n_inst, size=n_syms, replace=False).tolist()))
    return Trader(account, strategy, syms,
                  size_lots=float(np.exp(rng.uniform(0, 3.5) + (1.0 if strategy == "BLOCK" else 0))),
                  peak_tod=float(rng.choice([0.05, 0.3, 0.5, 0.7, 0.95])),
                  width=float(rng.uniform(0.1, 0.4)),
                  p_limit=float(rng.uniform(0.5, 0.95)),
                  offset=float(rng.uniform(0.0, 4.0)) if k % 3 else 0.5)


def make_traders(rng: np.random.Generator, n_inst: int) -> list[Trader]:
    """The desk: eight traders/strategies with distinct habits, drawn from the firm's generator."""
    names = [("ACC01", "VWAP"), ("ACC02", "TWAP"), ("ACC03", "POV"), ("ACC04", "PAIRS"),
             ("ACC05", "MANUAL"), ("ACC06", "HEDGE"), ("ACC07", "ARB"), ("ACC08", "BLOCK")]
    return [_draw_trader(rng, n_inst, acc, strat, k) for k, (acc, strat) in enumerate(names)]


def day_traders(desk: list[Trader], rng: np.random.Generator, n_inst: int,
                p_new_sym: float = 0.15, p_new_trader: float = 0.3) -> list[Trader]:
    """Today's habits of the desk: each drifts a little, and with probability `p_new_sym` a
    trader also trades one instrument outside their usual set today; with probability
    `p_new_trader` a new trader (an account never seen before) joins for the day. Both are cold
    starts for the model: no history in those instruments."""
    out = []
    for tr in desk:
        drift = np.exp(rng.normal(0.0, 0.1, 3))
        syms = tr.syms
        others = [i for i in range(n_inst) if i not in syms]
        if others and rng.random() < p_new_sym:
            syms = tuple(sorted((*syms, int(rng.choice(others)))))
        out.append(Trader(tr.account, tr.strategy, syms, size_lots=tr.size_lots * float(drift[0]),
                          peak_tod=float(np.clip(tr.peak_tod + rng.normal(0.0, 0.03), 0.0, 1.0)),
                          width=tr.width * float(drift[1]),
                          p_limit=float(np.clip(tr.p_limit + rng.normal(0.0, 0.03), 0.3, 0.98)),
                          offset=tr.offset * float(drift[2])))
    if rng.random() < p_new_trader:
        out.append(_draw_trader(rng, n_inst, f"NEW{int(rng.integers(1000, 10000))}", "MANUAL", len(out)))
    return out


class OrderFlow:
    """A seeded schedule of the firm's orders; priced from the market's mids as the run goes."""

    def __init__(self, rng: np.random.Generator, insts: list[Instrument], n_sec: int,
                 start_ns: int, start_tod: float, orders_per_hour: float, error_rate: float,
                 firm_seed: int = 7) -> None:
        if not 0 <= error_rate <= 1:
            raise ValueError(f"error_rate {error_rate} must be in [0, 1]")
        self.insts, self.start_ns = insts, start_ns
        firm = np.random.default_rng(firm_seed)
        desk = make_traders(firm, len(insts))
        usual_direction = firm.choice([1, -1], size=(len(desk), len(insts)))
        self.traders = day_traders(desk, rng, len(insts))
        newcomers = rng.choice([1, -1], size=(len(self.traders) - len(desk), len(insts)))
        usual_direction = np.vstack([usual_direction, newcomers])
        n_cand = rng.poisson(orders_per_hour * n_sec / 3600 * 2)
        t = np.sort(rng.random(n_cand) * n_sec)
        who = rng.integers(0, len(self.traders), n_cand)
        tod = (start_tod + t) % 23_400 / 23_400
        peak = np.array([tr.peak_tod for tr in self.traders])[who]
        width = np.array([tr.width for tr in self.traders])[who]
        keep = rng.random(n_cand) < (0.3 + 1.4 * np.exp(-0.5 * ((tod - peak) / width) ** 2)) / 1.7
        self.t, self.who = t[keep], who[keep]
        n = len(self.t)
        self.sym_pick = rng.random(n)
        self.u = rng.random((n, 4))
        self.z = rng.standard_normal(n)
        self.err = np.where(rng.random(n) < error_rate, rng.integers(0, len(ERROR_KINDS), n), -1)
        # each trader works one direction per instrument in a day (wrong side is the opposite),
        # mostly the same as yesterday
        self.direction = np.where(rng.random(usual_direction.shape) < 0.2, -usual_direction, usual_direction)
        self.errors: list[dict] = []
        self._seq = 0

    def rows(self, s0: int, s1: int, mids: np.ndarray) -> pd.DataFrame:
        """The order events sent in seconds [s0, s1); `mids` is (instruments, seconds) in price units."""
        sel = np.nonzero((self.t >= s0) & (self.t < s1))[0]
        rows = []
        for j in sel:
            tr = self.traders[self.who[j]]
            i = tr.syms[int(self.sym_pick[j] * len(tr.syms))]
            ins = self.insts[i]
            mid = mids[i, int(self.t[j])]
            if not math.isfinite(mid):
                mid = ins.price
            rows.extend(self._order(j, tr, i, ins, mid))
        if not rows:
            return empty_frame("order")
        df = pd.DataFrame(rows, columns=["time", "sym", "orderid", "clordid", "account", "strategy",
                                         "side", "qty", "price", "ordtype", "event", "reason"])
        df["time"] = pd.to_datetime(df["time"].astype("int64"), unit="ns")
        df["qty"] = df["qty"].astype("int64")
        df["price"] = df["price"].astype("float64")
        return df.sort_values("time", kind="stable", ignore_index=True)  # a duplicate can trail a later order

    def _order(self, j: int, tr: Trader, i: int, ins: Instrument, mid: float) -> list[tuple]:
        u, side = self.u[j], int(self.direction[self.who[j], i])
        lots = max(1, int(round(tr.size_lots * math.exp(0.5 * self.z[j]))))
        if lots >= 10:
            lots = int(round(lots, -1))
        qty = lots * ins.lot
        limit = u[0] < tr.p_limit
        ticks = int(-math.log(max(u[1], 1e-9)) * tr.offset) if limit else -1
        half = ins.tick / 2
        price = mid - side * (half + ticks * ins.tick)
        price = round(round(price / ins.tick) * ins.tick, ins.decimals)
        ordtype = "limit" if limit else "marketable"
        kind = ERROR_KINDS[self.err[j]] if self.err[j] >= 0 else None
        if kind == "extra_zeros":
            qty *= 10 if u[2] < 0.7 else 100
        elif kind == "price_decimal_shift":
            price = round(price * (10 if u[2] < 0.5 else 0.1), ins.decimals + 1)
        elif kind == "price_qty_swapped":
            qty, price = max(ins.lot, int(round(price))), float(qty)
        elif kind == "wrong_side":
            side = -side
            price = round(round((mid - side * (half + ticks * ins.tick)) / ins.tick) * ins.tick, ins.decimals)
        elif kind == "notional_as_qty":
            qty = max(qty, int(round(qty * mid)))
        t_ns = self.start_ns + int(self.t[j] * NS)
        first = self._row(t_ns, ins.sym, tr, side, qty, price, ordtype)
        if kind == "duplicate":
            dup = self._row(t_ns + int((1 + 49 * u[3]) * 1e6), ins.sym, tr, side, qty, price, ordtype)
            self._label(dup, kind)
            return [first, dup]
        if kind:
            self._label(first, kind)
        return [first]

    def _row(self, t_ns: int, sym: str, tr: Trader, side: int, qty: int, price: float, ordtype: str) -> tuple:
        self._seq += 1
        return (t_ns, sym, f"FF{self._seq:07d}", f"C{self._seq:07d}", tr.account, tr.strategy,
                "buy" if side > 0 else "sell", qty, price, ordtype, "new", "")

    def _label(self, row: tuple, kind: str) -> None:
        self.errors.append({"time": pd.Timestamp(row[0], unit="ns"), "sym": row[1], "orderid": row[2],
                            "account": row[4], "strategy": row[5], "kind": kind})

    def desk_sizes(self) -> pd.DataFrame:
        """Ground truth of today's size habits: each trader's typical (median) order quantity in
        each instrument they trade (account, sym, typical_qty)."""
        rows = [(tr.account, self.insts[i].sym, tr.size_lots * self.insts[i].lot)
                for tr in self.traders for i in tr.syms]
        return pd.DataFrame(rows, columns=["account", "sym", "typical_qty"])

    def labels(self) -> pd.DataFrame:
        """Erroneous orders so far: time, sym, orderid, account, strategy, kind."""
        cols = ["time", "sym", "orderid", "account", "strategy", "kind"]
        return pd.DataFrame(self.errors, columns=cols)
