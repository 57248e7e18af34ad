"""The market simulator: agents trading in limit order books, several instruments at once.

Model (docs/architecture.md, "Market simulator", explains the choices):
- each instrument has a fundamental log-price on a one-second grid: a common market factor plus
  an idiosyncratic part, with stochastic volatility (a sum of three Ornstein-Uhlenbeck log-vol
  components with time scales from a minute to hours: volatility clusters) and an intraday U;
- order flow is an event stream whose rate follows the intraday U, the volatility and the stress;
  each event is one agent acting: the market maker requotes its ladder around a reference price
  (fundamental + propagator impact of recent signed flow - inventory skew) and widens, shrinks
  and pulls it under stress; noise traders send limit orders (with random lifetimes) and
  heavy-tailed market orders; momentum traders chase the last 30 s; informed traders trade
  toward the fundamental; execution algos work metaorders in clips;
- the propagator kernel decays as a power law (t^-1/2, a sum of four exponentials), which makes
  the impact of a metaorder traded at a steady rate grow like the square root of its size.

Everything random comes from one seed: the same seed gives identical frames. The engine runs in
blocks of BLOCK_SECONDS; random numbers are drawn per block, so results do not depend on how a
consumer reads them.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pretrade.market.book import BUY, EXTERNAL, SELL, OrderBook
from pretrade.market.instruments import Instrument, resolve
from pretrade.market.tape import Tape
from pretrade.schema import BOOK_LEVELS, empty_frame, table

BLOCK_SECONDS = 60
DAY_SECONDS = 23_400          # a 6.5-hour session
NS = 1_000_000_000
DEFAULT_START = "2026-11-20 14:30:00"  # 09:30 New York, in UTC

# agents (owners of resting orders)
NOISE, MM, ALGO = 1, 2, 3
# event types of the order-flow stream
EV_MM, EV_LIMIT, EV_MARKET, EV_MOMENTUM, EV_INFORMED, EV_ALGO = range(6)
# weights of the stream's event types at zero stress, and their change at full stress
_BASE_WEIGHTS = np.array([0.35, 0.45, 0.07, 0.04, 0.09])
_STRESS_GAIN = np.array([4.0, -0.6, 1.0, 2.0, 0.0])
# propagator: G(t) ~ t^-1/2 as a sum of exponentials with these time scales (seconds)
_TAUS = np.array([1.0, 5.0, 25.0, 125.0, 625.0, 3125.0])
_WEIGHTS = _TAUS ** -0.5 / (_TAUS ** -0.5).sum()
_SIDE = {BUY: "buy", SELL: "sell"}


@dataclass
class Metaorder:
    """A parent order worked by an execution algo in clips at a steady pace (ground truth)."""

    sym: str
    start: float          # seconds after the simulation start
    side: int             # BUY or SELL
    qty: int              # total size (units, a multiple of the lot)
    clip: int             # size of each child (units)
    interval: float       # seconds between children
    style: str = "market"  # "market": market orders; "iceberg": limit at the touch, chasing
    kind: str = "metaorder"  # label: "metaorder" or "iceberg"
    # filled in by the run
    filled: int = 0
    notional: float = 0.0
    arrival_mid: float = float("nan")   # mid (ticks) at the first child
    end_mid: float = float("nan")       # mid (ticks) when the last child filled
    arrival_fund: float = float("nan")  # fundamental (ticks) at the first child
    end_fund: float = float("nan")      # fundamental (ticks) at the end
    end: float = float("nan")


@dataclass
class Plan:
    """What a scenario asks of the market: paths on the one-second grid and scheduled actions.

    Arrays are (instruments, seconds): stress in [0, 1] (market makers widen, shrink and pull
    quotes; cancels and momentum rise), vol_mult (multiplies fundamental volatility) and shift
    (added to the fundamental log-price: a repricing such as a news reaction).
    """

    stress: np.ndarray
    vol_mult: np.ndarray
    shift: np.ndarray
    metaorders: list[Metaorder] = field(default_factory=list)
    news: list[tuple[int, str, str, float]] = field(default_factory=list)  # (ns, sym, headline, sentiment)
    stress_labels: list[dict] = field(default_factory=list)  # sym, kind, start, peak, end (seconds)
    orderflow: object | None = None  # an orderflow.OrderFlow for the firm's own orders


def neutral_plan(n_inst: int, n_sec: int) -> Plan:
    """A plan that changes nothing: the 'normal' market."""
    return Plan(np.zeros((n_inst, n_sec)), np.ones((n_inst, n_sec)), np.zeros((n_inst, n_sec)))


def intraday_u(start_tod: float, n_sec: int) -> np.ndarray:
    """The intraday activity U-shape (mean about 1 over a session) for each second of the run."""
    tod = (start_tod + np.arange(n_sec)) % DAY_SECONDS / DAY_SECONDS
    return 0.55 + 1.6 * (np.exp(-tod / 0.07) + np.exp(-(1 - tod) / 0.07))


def _log_vol(rng: np.random.Generator, n_inst: int, n_sec: int) -> np.ndarray:
    """Log-volatility: three OU components (1 min, 15 min, 90 min), variance-corrected."""
    taus, sd = np.array([120.0, 900.0, 5400.0]), np.array([0.45, 0.45, 0.35])
    a = np.exp(-1.0 / taus)
    innov = rng.standard_normal((n_sec, n_inst, 3)) * (sd * np.sqrt(1 - a * a))
    z = rng.standard_normal((n_inst, 3)) * sd
    out = np.empty((n_inst, n_sec))
    for s in range(n_sec):
        z = a * z + innov[s]
        out[:, s] = z.sum(axis=1)
    return out - (sd ** 2).sum()


@dataclass
class Paths:
    """Per-instrument paths on the one-second grid: fundamental (ticks) and event rates."""

    fund: np.ndarray   # (inst, sec) fundamental price in ticks
    rate: np.ndarray   # (inst, sec) events per second
    weights: np.ndarray  # (inst, sec, 5) cumulative event-type probabilities


def build_paths(rng: np.random.Generator, insts: list[Instrument], plan: Plan,
                start_tod: float, rate_scale: float) -> Paths:
    """Fundamentals and event rates for every instrument, from the plan and the seed."""
    n_inst, n_sec = plan.stress.shape
    u = intraday_u(start_tod, n_sec)
    logvol = _log_vol(rng, n_inst, n_sec)
    volpath = np.exp(logvol)
    common = rng.standard_normal(n_sec)
    idio = rng.standard_normal((n_inst, n_sec))
    fund = np.empty((n_inst, n_sec))
    rate = np.empty((n_inst, n_sec))
    for i, ins in enumerate(insts):
        rho = min(0.9, 0.6 * ins.beta)
        sigma = ins.daily_vol / math.sqrt(DAY_SECONDS) * volpath[i] * np.sqrt(u) * plan.vol_mult[i]
        dx = sigma * (rho * common + math.sqrt(1 - rho * rho) * idio[i])
        dx[0] = 0.0
        fund[i] = ins.price * np.exp(np.cumsum(dx) + plan.shift[i]) / ins.tick
        rate[i] = (ins.rate * rate_scale * u * volpath[i] ** 0.8 * np.sqrt(plan.vol_mult[i])
                   * (1 + plan.stress[i]))
    w = _BASE_WEIGHTS * np.maximum(0.05, 1 + plan.stress[..., None] * _STRESS_GAIN)
    weights = np.cumsum(w / w.sum(axis=-1, keepdims=True), axis=-1)
    return Paths(fund, rate, weights)


class InstrumentSim:
    """One instrument's book and agents; `run_block` advances it one block of seconds."""

    def __init__(self, ins: Instrument, index: int, paths: Paths, plan: Plan,
                 rng: np.random.Generator, start_ns: int, book_interval_ns: int,
                 metaorders: list[Metaorder]) -> None:
        self.ins, self.i, self.rng = ins, index, rng
        self.paths, self.plan = paths, plan
        self.start_ns, self.book_interval = start_ns, book_interval_ns
        self.book = OrderBook(ins.tick, ins.lot)
        self.unit = ins.mm_size * ins.lot          # flow is measured in units of MM top size
        self.impact_scale = 1.2                    # ticks per unit of flow at G(0)
        self.flow = np.zeros(len(_TAUS))           # propagator state per time scale
        self.flow_t = start_ns
        self.inventory = 0
        self.mm_key: tuple = ()
        self.mm_hit = False
        self.mm_orders: dict[int, dict[int, int]] = {BUY: {}, SELL: {}}  # side -> price -> oid
        self.expiry: list[tuple[int, int]] = []    # heap of (expiry ns, oid) of noise orders
        self.metaorders = metaorders
        self.algo_live: dict[int, int] = {}        # metaorder index -> resting child oid
        self.algo_oid: dict[int, int] = {}         # resting child oid -> metaorder index
        self.n_sec = paths.fund.shape[1]
        self.fund: list[float] = paths.fund[index].tolist()
        self.plan_stress: list[float] = plan.stress[index].tolist()
        self.mid_at = np.full(self.n_sec, np.nan)  # mid (ticks) at the start of each second
        self.tape = Tape(self.book, book_interval_ns)
        self.children = self._schedule_children()

    # ---- scheduling -----------------------------------------------------------------------------
    def _schedule_children(self) -> tuple[np.ndarray, np.ndarray]:
        times, which = [], []
        for k, m in enumerate(self.metaorders):
            n = -(-m.qty // m.clip) * (3 if m.style == "iceberg" else 1)
            t = self.start_ns + ((m.start + np.arange(n) * m.interval) * NS).astype(np.int64)
            t = t[t < self.start_ns + self.n_sec * NS]
            times.append(t)
            which.append(np.full(len(t), k))
        if not times:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(times), np.concatenate(which)

    def _block_events(self, s0: int, s1: int) -> tuple[np.ndarray, ...]:
        """The block's events in time order: times, types, metaorder index, uniforms, normal."""
        rng = self.rng
        counts = rng.poisson(self.paths.rate[self.i, s0:s1])
        n = int(counts.sum())
        sec = np.repeat(np.arange(s0, s1), counts)
        times = self.start_ns + sec * NS + (rng.random(n) * NS).astype(np.int64)
        order = np.argsort(times, kind="stable")
        times, sec = times[order], sec[order]
        cum = self.paths.weights[self.i, sec]
        types = (rng.random(n)[:, None] > cum[:, :-1]).sum(axis=1)
        u1, u2, u3, z = rng.random(n), rng.random(n), rng.random(n), rng.standard_normal(n)
        payload = np.full(n, -1)
        ct, cw = self.children
        lo, hi = self.start_ns + s0 * NS, self.start_ns + s1 * NS
        sel = (ct >= lo) & (ct < hi)
        if sel.any():
            k = int(sel.sum())
            times = np.concatenate([times, ct[sel]])
            types = np.concatenate([types, np.full(k, EV_ALGO)])
            payload = np.concatenate([payload, cw[sel]])
            u1, u2, u3, z = (np.concatenate([a, np.zeros(k)]) for a in (u1, u2, u3, z))
            order = np.argsort(times, kind="stable")
            times, types, payload, u1, u2, u3, z = (a[order] for a in (times, types, payload, u1, u2, u3, z))
        return times, types, payload, u1, u2, u3, z

    # ---- state ----------------------------------------------------------------------------------
    def mid(self) -> float:
        """Mid price in ticks (NaN when a side is empty)."""
        b, a = self.book.best_bid(), self.book.best_ask()
        return (b + a) / 2 if b is not None and a is not None else math.nan

    def _decay(self, t: int) -> None:
        if t > self.flow_t:
            self.flow *= np.exp(-(t - self.flow_t) / NS / _TAUS)
            self.flow_t = t

    def _on_fills(self, t: int, fills) -> None:
        if not fills:
            return
        self._decay(t)
        signed = 0
        for f in fills:
            signed += f.aggressor_side * f.size
            if f.resting_owner == MM:
                self.inventory -= f.aggressor_side * f.size
                self.mm_hit = True
            elif f.resting_owner == ALGO and f.resting_id in self.algo_oid:
                self._credit(self.algo_oid[f.resting_id], t, f.size, f.price)
        self.flow += signed / self.unit

    def stress(self, sec: int) -> float:
        """Stress now: the scenario's, or the flow's own when one-sided flow overwhelms the MM."""
        endo = min(1.0, max(0.0, (abs(self.flow[0]) - 4.0) / 6.0))
        return max(self.plan_stress[sec], endo)

    def reference(self, sec: int) -> float:
        """The market maker's fair price in ticks: fundamental + impact - inventory skew."""
        impact = self.impact_scale * float(self.flow @ _WEIGHTS)
        skew = max(-2.0, min(2.0, self.inventory / (10.0 * self.unit)))
        return self.fund[sec] + impact - skew

    # ---- agents ---------------------------------------------------------------------------------
    def _requote(self, t: int, sec: int, u: float) -> None:
        book, lot = self.book, self.ins.lot
        self._decay(t)
        s = self.stress(sec)
        ref = self.reference(sec)
        spread = 1 + int(round(2 * s))
        bid0 = math.floor(ref - (spread - 1) / 2)
        nlev = max(1, int(round(10 * (1 - 0.8 * s))))
        selling = self.flow[0] < 0
        key = (bid0, spread, nlev, round(s, 1), selling)
        flicker = s > 0.3 and u < s  # under stress the MM pulls its whole ladder and reposts it
        if key == self.mm_key and not self.mm_hit and not flicker:
            return  # nothing moved and no quote was hit: the ladder stands
        self.mm_key, self.mm_hit = key, False
        tilt = {BUY: 1 - (0.6 * s if selling else 0.2 * s), SELL: 1 - (0.2 * s if selling else 0.6 * s)}
        base = self.ins.mm_size * (1 - 0.7 * s)
        wants = {side: {first - side * k: max(lot, int(base * tilt[side] * (1 + 0.3 * k)) * lot)
                        for k in range(nlev)}
                 for side, first in ((BUY, bid0), (SELL, bid0 + spread))}
        for side, want in wants.items():  # first withdraw what no longer fits, both sides
            mine = self.mm_orders[side]
            for price, oid in list(mine.items()):
                if oid not in book.orders:
                    del mine[price]
                elif flicker or price not in want:
                    book.cancel(t, oid)
                    del mine[price]
        for side, want in wants.items():  # then post, never crossing (post-only)
            mine = self.mm_orders[side]
            opp = book.best_ask() if side == BUY else book.best_bid()
            for price, size in want.items():
                oid = mine.get(price)
                if oid is not None:
                    if book.orders[oid][2] < size // 2:
                        book.modify(t, oid, size)
                elif opp is None or (price < opp if side == BUY else price > opp):
                    oid, _ = book.submit(t, side, size, price, MM)
                    mine[price] = oid

    def _limit(self, t: int, sec: int, u1: float, u2: float, u3: float, z: float) -> None:
        book, ins = self.book, self.ins
        side = BUY if u1 < 0.5 else SELL
        best = book.best_bid() if side == BUY else book.best_ask()
        opp = book.best_ask() if side == BUY else book.best_bid()
        if best is None:
            best = math.floor(self.reference(sec)) if side == BUY else math.ceil(self.reference(sec))
        k = int(math.log(max(u2, 1e-12)) / math.log(0.62))
        if k == 0 and opp is not None and abs(opp - best) > 1 and u3 < 0.3:
            k = -1  # improve inside a wide spread
        price = best - side * k
        if opp is not None and (price >= opp if side == BUY else price <= opp):
            price = opp - side
        size = max(1, int(0.3 * ins.mm_size * math.exp(0.8 * z))) * ins.lot
        oid, fills = book.submit(t, side, size, price, NOISE)
        self._on_fills(t, fills)
        life = -math.log(max(1e-12, u3 / 0.3 if u3 < 0.3 else (u3 - 0.3) / 0.7)) * 15.0  # mean 15 s
        heapq.heappush(self.expiry, (t + int(life * NS), oid))

    def _market(self, t: int, side: int, units: float) -> None:
        size = max(1, int(units)) * self.ins.lot
        _, fills = self.book.submit(t, side, size, None, NOISE)
        self._on_fills(t, fills)

    def _algo(self, t: int, sec: int, k: int) -> None:
        m, book = self.metaorders[k], self.book
        if m.filled >= m.qty or not math.isnan(m.end):
            return
        if math.isnan(m.arrival_mid):
            m.arrival_mid = self.mid()
            m.arrival_fund = self.fund[sec]
        live = self.algo_live.pop(k, None)
        if live is not None:
            self.algo_oid.pop(live, None)
            book.cancel(t, live)
        size = min(m.clip, m.qty - m.filled)
        if m.style == "iceberg":
            opp = book.best_bid() if m.side == SELL else book.best_ask()
            price = opp if opp is not None else math.floor(self.reference(sec))
            oid, fills = book.submit(t, m.side, size, price, ALGO)
            if oid in book.orders:
                self.algo_live[k] = oid
                self.algo_oid[oid] = k
        else:
            _, fills = book.submit(t, m.side, size, None, ALGO)
        self._on_fills(t, fills)
        for f in fills:
            self._credit(k, t, f.size, f.price)

    def _credit(self, k: int, t: int, size: int, price: int) -> None:
        m = self.metaorders[k]
        m.filled += size
        m.notional += size * price * self.ins.tick
        if m.filled >= m.qty and math.isnan(m.end):
            m.end = (t - self.start_ns) / NS
            m.end_mid = self.mid()
            m.end_fund = self.fund[min(int(m.end), self.n_sec - 1)]

    # ---- the venue: orders from outside ---------------------------------------------------------
    def external(self, t: int, side: int, size: int, price: int | None) -> tuple[int, list]:
        """An outside order (the exchange simulator's): matched, rested, and felt by the agents."""
        self.tape.before(t)
        oid, fills = self.book.submit(t, side, size, price, EXTERNAL)
        self._on_fills(t, fills)
        self.tape.after(t)
        return oid, fills

    def cancel_external(self, t: int, orderid: int) -> int:
        """Cancel a resting outside order; the size removed (0 if it is gone)."""
        o = self.book.orders.get(orderid)
        if o is None or o[3] != EXTERNAL:
            return 0
        self.tape.before(t)
        size = self.book.cancel(t, orderid)
        self.tape.after(t)
        return size

    # ---- the loop -------------------------------------------------------------------------------
    def run_block(self, s0: int, s1: int) -> dict[str, dict[str, np.ndarray]]:
        """Advance seconds [s0, s1); the rows produced, as column arrays per table."""
        book, tape = self.book, self.tape
        times, types, payload, u1, u2, u3, z = (a.tolist() for a in self._block_events(s0, s1))
        fund = self.fund
        next_sec = s0
        for j in range(len(times)):
            t = times[j]
            sec = (t - self.start_ns) // NS
            while next_sec <= sec:
                self.mid_at[next_sec] = self.mid()
                next_sec += 1
            exp = self.expiry
            while exp and exp[0][0] <= t:
                te, oid = heapq.heappop(exp)
                tape.before(te)
                book.cancel(te, oid)
                tape.after(te)
            tape.before(t)
            typ = types[j]
            if typ == EV_MM:
                self._requote(t, sec, u1[j])
            elif typ == EV_LIMIT:
                self._limit(t, sec, u1[j], u2[j], u3[j], z[j])
            elif typ == EV_MARKET:
                units = 0.15 * self.ins.mm_size * min(30.0, max(u2[j], 1e-9) ** (-1 / 1.6))
                self._market(t, BUY if u1[j] < 0.5 else SELL, units)
            elif typ == EV_MOMENTUM:
                past = self.mid_at[max(0, sec - 30)]
                now = self.mid()
                if abs(now - past) >= 3:
                    units = 0.3 * self.ins.mm_size * (1 + 2 * u2[j]) * (1 + self.stress(sec))
                    self._market(t, BUY if now > past else SELL, units)
            elif typ == EV_INFORMED:
                gap = fund[sec] - self.mid()
                if abs(gap) > 3:
                    units = 0.25 * self.ins.mm_size * min(3.0, abs(gap) / 2) * (0.5 + u2[j])
                    self._market(t, BUY if gap > 0 else SELL, units)
            else:
                self._algo(t, sec, payload[j])
            tape.after(t)
        end = self.start_ns + s1 * NS
        while self.expiry and self.expiry[0][0] < end:  # lifetimes that end in this block
            te, oid = heapq.heappop(self.expiry)
            tape.before(te)
            book.cancel(te, oid)
            tape.after(te)
        tape.flush()
        while next_sec < s1:
            self.mid_at[next_sec] = self.mid()
            next_sec += 1
        return self._drain()

    def _drain(self) -> dict[str, dict[str, np.ndarray]]:
        """This block's rows as column arrays per table (prices in price units)."""
        ins, book = self.ins, self.book
        tick, dec = ins.tick, ins.decimals
        out: dict[str, dict[str, np.ndarray]] = {}
        q = self.tape.quotes
        if q:
            qa = np.array([(r[0], -1 if r[1] is None else r[1], -1 if r[2] is None else r[2],
                            r[3], r[4]) for r in q], dtype=np.int64)
            out["quote"] = {"time": qa[:, 0], "bid": _px(qa[:, 1], tick, dec),
                            "ask": _px(qa[:, 2], tick, dec), "bsize": qa[:, 3], "asize": qa[:, 4]}
        if book.trades:
            ta = np.array(book.trades, dtype=np.int64)
            out["trade"] = {"time": ta[:, 0], "price": _px(ta[:, 1], tick, dec), "size": ta[:, 2],
                            "side": np.where(ta[:, 3] > 0, "buy", "sell").astype(object)}
        if book.l3:
            l3 = book.l3
            la = np.array([(r[0], r[2], r[3], r[4], r[5]) for r in l3], dtype=np.int64)
            out["l3"] = {"time": la[:, 0], "event": np.array([r[1] for r in l3], dtype=object),
                         "orderid": la[:, 1], "side": np.where(la[:, 2] > 0, "buy", "sell").astype(object),
                         "price": _px(la[:, 3], tick, dec), "size": la[:, 4]}
        if self.tape.snaps:
            out["book"] = _book_columns(self.tape.snaps, tick, dec)
        for cols in out.values():
            cols["sym"] = np.full(len(cols["time"]), ins.sym, dtype=object)
        self.tape.quotes, self.tape.snaps = [], []
        book.l3, book.trades = [], []
        return out


def _px(ticks: np.ndarray, tick: float, dec: int) -> np.ndarray:
    """Tick counts as prices rounded to the tick's decimals; negative counts (no price) as NaN."""
    out = np.round(ticks.astype(np.float64) * tick, dec)
    out[ticks < 0] = np.nan
    return out


def _book_columns(rows: list[tuple], tick: float, dec: int) -> dict[str, np.ndarray]:
    """Snapshot rows (time, bid prices, bid sizes, ask prices, ask sizes) as book columns."""
    L = BOOK_LEVELS
    none, zero = [-1] * L, [0] * L  # padding for missing levels: no price (NaN), size 0
    bp = np.array([r[1] + none[len(r[1]):] for r in rows], dtype=np.int64)
    bs = np.array([r[2] + zero[len(r[2]):] for r in rows], dtype=np.int64)
    ap = np.array([r[3] + none[len(r[3]):] for r in rows], dtype=np.int64)
    as_ = np.array([r[4] + zero[len(r[4]):] for r in rows], dtype=np.int64)
    cols = {"time": np.array([r[0] for r in rows], dtype=np.int64)}
    bpx, apx = _px(bp, tick, dec), _px(ap, tick, dec)
    for k in range(L):
        cols[f"bid{k + 1}"] = bpx[:, k]
    for k in range(L):
        cols[f"bsize{k + 1}"] = bs[:, k]
    for k in range(L):
        cols[f"ask{k + 1}"] = apx[:, k]
    for k in range(L):
        cols[f"asize{k + 1}"] = as_[:, k]
    return cols


def merge_columns(parts: list[dict[str, np.ndarray]], name: str) -> pd.DataFrame:
    """Per-instrument column arrays of one table as one frame in the schema, sorted by time."""
    parts = [p for p in parts if p]
    if not parts:
        return empty_frame(name)
    t = np.concatenate([p["time"] for p in parts])
    order = np.argsort(t, kind="stable")
    data = {"time": pd.to_datetime(t[order], unit="ns")}
    for c in table(name).columns[1:]:
        data[c.name] = np.concatenate([p[c.name] for p in parts])[order].astype(c.dtype, copy=False)
    return pd.DataFrame(data)


def parse_duration(value: float | int | str) -> int:
    """Seconds from 3600, '90s', '30m', '6.5h' (a clear error otherwise)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        mult = {"s": 1, "m": 60, "h": 3600}.get(text[-1:])
        try:
            seconds = float(text[:-1]) * mult if mult else float(text)
        except ValueError:
            raise ValueError(f"duration {value!r}: use seconds or a number with s, m or h (e.g. 30m, 6.5h)") from None
    if seconds < 1:
        raise ValueError(f"duration {value!r} must be at least one second")
    return int(math.ceil(seconds))


# ---- the run ------------------------------------------------------------------------------------
TABLE_ORDER = ("quote", "trade", "book", "l3", "news", "order")


@dataclass
class SimResult:
    """A finished run: one DataFrame per table (schema columns) and the ground-truth labels.

    labels:
      stress      sym, kind, start, peak, end, bottom_time, bottom_price (one row per stress episode)
      metaorders  sym, kind, side, qty, filled, start, end, arrival_mid, end_mid, vwap,
                  impact_bps (signed mid move, start to end), excess_impact_bps (the same net of the
                  fundamental's own move: the impact alone), adv_units (filled / MM quote size)
      errors      time, sym, orderid, account, strategy, kind (erroneous orders of the firm's flow)
      desk        account, sym, typical_qty (each trader's median order size in each instrument today)
    """

    scenario: str
    seed: int
    params: dict
    frames: dict[str, pd.DataFrame]
    labels: dict[str, pd.DataFrame]

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.frames[name]


class Simulation:
    """A seeded, scenario-driven run over several instruments, produced block by block.

    `blocks()` yields {table: DataFrame} for each BLOCK_SECONDS of market time (rows in time
    order, all instruments merged); `labels()` gives the ground truth once the run is done.
    """

    def __init__(self, scenario: str = "normal", seed: int = 0, syms: list[str] | None = None,
                 duration: float | str = 1800, start: str = DEFAULT_START,
                 book_interval_ms: float = 100.0, rate_scale: float = 1.0, **params) -> None:
        from pretrade.market.scenarios import build_plan

        if rate_scale <= 0 or book_interval_ms <= 0:
            raise ValueError("rate_scale and book_interval_ms must be positive")
        self.scenario, self.seed = scenario, int(seed)
        self.insts = resolve(syms)
        self.n_sec = parse_duration(duration)
        ts = pd.Timestamp(start)
        self.start_ns = ts.value
        start_tod = max(0.0, (ts - ts.normalize()).total_seconds() - 14.5 * 3600)
        seeds = np.random.SeedSequence(self.seed).spawn(2 + len(self.insts))
        plan_rng = np.random.default_rng(seeds[0])
        self.plan, self.params = build_plan(scenario, self.insts, self.n_sec, self.start_ns,
                                            start_tod, plan_rng, params)
        self.paths = build_paths(np.random.default_rng(seeds[1]), self.insts, self.plan,
                                 start_tod, rate_scale)
        self.sims = [
            InstrumentSim(ins, i, self.paths, self.plan, np.random.default_rng(seeds[2 + i]),
                          self.start_ns, int(book_interval_ms * 1e6),
                          [m for m in self.plan.metaorders if m.sym == ins.sym])
            for i, ins in enumerate(self.insts)
        ]
        self.done = False
        self.clock = 0  # seconds of market time simulated so far

    @property
    def syms(self) -> list[str]:
        return [i.sym for i in self.insts]

    def submit(self, sym: str, side: str, size: int, price: float | None = None,
               t_ns: int | None = None) -> tuple[int, list[dict]]:
        """Send an outside order into `sym`'s book (None price: a market order).

        Returns the order id and its fills as dicts (price in price units, size, resting id).
        The order is stamped `t_ns` (default: the end of market time simulated so far); its
        trades, quotes and L3 events appear in the next block the simulation yields.
        """
        sim, side_i, t = self._venue(sym, side, t_ns)
        if size <= 0 or size % sim.ins.lot:
            raise ValueError(f"size {size} must be a positive multiple of {sym}'s lot size {sim.ins.lot}")
        ticks = None if price is None else int(round(price / sim.ins.tick))
        if price is not None and abs(ticks * sim.ins.tick - price) > 1e-9 * max(1.0, abs(price)):
            raise ValueError(f"price {price} is not a multiple of {sym}'s tick {sim.ins.tick}")
        oid, fills = sim.external(t, side_i, size, ticks)
        return oid, [{"price": round(f.price * sim.ins.tick, sim.ins.decimals), "size": f.size,
                      "resting_id": f.resting_id} for f in fills]

    def cancel(self, sym: str, orderid: int, t_ns: int | None = None) -> int:
        """Cancel an outside order still resting in `sym`'s book; the size removed (0 if none)."""
        sim, _, t = self._venue(sym, "buy", t_ns)
        return sim.cancel_external(t, orderid)

    def _venue(self, sym: str, side: str, t_ns: int | None) -> tuple[InstrumentSim, int, int]:
        sims = {s.ins.sym: s for s in self.sims}
        if sym not in sims:
            raise ValueError(f"{sym!r} is not traded in this simulation ({', '.join(sims)})")
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
        t = self.start_ns + self.clock * NS if t_ns is None else int(t_ns)
        return sims[sym], BUY if side == "buy" else SELL, t

    def blocks(self) -> Iterator[dict[str, pd.DataFrame]]:
        """Every table's rows, BLOCK_SECONDS of market time at a time."""
        for s0 in range(0, self.n_sec, BLOCK_SECONDS):
            self.clock = s0
            s1 = min(self.n_sec, s0 + BLOCK_SECONDS)
            parts = [sim.run_block(s0, s1) for sim in self.sims]
            out = {name: merge_columns([p.get(name, {}) for p in parts], name)
                   for name in ("quote", "trade", "book", "l3")}
            out["news"] = self._news(s0, s1)
            if self.plan.orderflow is not None:
                mids = np.array([sim.mid_at * sim.ins.tick for sim in self.sims])
                out["order"] = self.plan.orderflow.rows(s0, s1, mids)
            self.clock = s1
            yield out
        self.done = True

    def stream(self) -> Iterator[tuple[str, pd.DataFrame]]:
        """(table, rows) pairs, block by block in time order; empty tables are skipped."""
        for block in self.blocks():
            for name in TABLE_ORDER:
                df = block.get(name)
                if df is not None and len(df):
                    yield name, df

    def _news(self, s0: int, s1: int) -> pd.DataFrame:
        lo, hi = self.start_ns + s0 * NS, self.start_ns + s1 * NS
        rows = [r for r in self.plan.news if lo <= r[0] < hi]
        if not rows:
            return empty_frame("news")
        return pd.DataFrame({"time": pd.to_datetime([r[0] for r in rows], unit="ns"),
                             "sym": [r[1] for r in rows], "headline": [r[2] for r in rows],
                             "sentiment": np.array([r[3] for r in rows], dtype=np.float64)})

    def labels(self, quotes: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
        """Ground truth; with the run's quotes, stress rows also get the price bottom."""
        t0 = pd.Timestamp(self.start_ns, unit="ns")

        def at(sec: float) -> pd.Timestamp:
            return t0 + pd.to_timedelta(sec, unit="s")

        stress = pd.DataFrame([{**lab, "start": at(lab["start"]), "peak": at(lab["peak"]),
                                "end": at(lab["end"])} for lab in self.plan.stress_labels],
                              columns=["sym", "kind", "start", "peak", "end"])
        stress["bottom_time"] = pd.NaT
        stress["bottom_price"] = np.nan
        if quotes is not None and len(stress):
            for r in stress.itertuples():
                q = quotes[(quotes.sym == r.sym) & (quotes.time >= r.start) & (quotes.time <= r.end)]
                mid = (q.bid + q.ask) / 2
                if mid.notna().any():
                    k = mid.idxmin()
                    stress.loc[r.Index, ["bottom_time", "bottom_price"]] = [q.time[k], mid[k]]
        metas = []
        for sim in self.sims:
            for m in sim.metaorders:
                end = m.end if not math.isnan(m.end) else self.n_sec - 1
                last = min(int(end), self.n_sec - 1)
                end_mid = m.end_mid if not math.isnan(m.end_mid) else sim.mid_at[last]
                end_fund = m.end_fund if not math.isnan(m.end_fund) else sim.fund[last]
                tick = sim.ins.tick
                arrival = m.arrival_mid * tick
                vwap = m.notional / m.filled if m.filled else np.nan
                excess = (end_mid - end_fund) - (m.arrival_mid - m.arrival_fund)
                metas.append({"sym": m.sym, "kind": m.kind, "side": "buy" if m.side == BUY else "sell",
                              "qty": m.qty, "filled": m.filled, "start": at(m.start), "end": at(end),
                              "arrival_mid": arrival, "end_mid": end_mid * tick, "vwap": vwap,
                              "impact_bps": m.side * (end_mid * tick - arrival) / arrival * 1e4,
                              "excess_impact_bps": m.side * excess * tick / arrival * 1e4,
                              "adv_units": m.filled / (sim.ins.mm_size * sim.ins.lot)})
        meta_cols = ["sym", "kind", "side", "qty", "filled", "start", "end", "arrival_mid",
                     "end_mid", "vwap", "impact_bps", "excess_impact_bps", "adv_units"]
        errors = (self.plan.orderflow.labels() if self.plan.orderflow is not None
                  else pd.DataFrame(columns=["time", "sym", "orderid", "account", "strategy", "kind"]))
        desk = (self.plan.orderflow.desk_sizes() if self.plan.orderflow is not None
                else pd.DataFrame(columns=["account", "sym", "typical_qty"]))
        return {"stress": stress, "metaorders": pd.DataFrame(metas, columns=meta_cols), "errors": errors,
                "desk": desk}


def simulate(scenario: str = "normal", seed: int = 0, syms: list[str] | None = None,
             duration: float | str = 1800, **params) -> SimResult:
    """Run a scenario to the end: frames per table (schema columns) and ground-truth labels.

    `syms` picks instruments from pretrade.market.instruments.UNIVERSE (all ten by default);
    `duration` is seconds or '30m' / '6.5h'; other keywords are the scenario's parameters
    (`pretrade scenario --list`) or the engine's: start, book_interval_ms, rate_scale.
    """
    sim = Simulation(scenario, seed, syms, duration, **params)
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLE_ORDER}
    for block in sim.blocks():
        for name, df in block.items():
            parts[name].append(df)
    frames = {name: (pd.concat([p for p in dfs if len(p)], ignore_index=True)
                     if any(len(p) for p in dfs) else empty_frame(name))
              for name, dfs in parts.items()}
    return SimResult(scenario, sim.seed, sim.params, frames, sim.labels(frames["quote"]))
