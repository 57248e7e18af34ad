"""`pretrade hedge`: the hedging agent's schedule run continuously as hedge orders.

The process subscribes to the tickerplant's `quote` (spot = mid) and `features` (rv_1m, the risk
engine's realised volatility) rows, keeps the market clock (the data's event time, as the risk
engine does), and every `every` seconds of market time asks the agent for each configured option
position's hedge. Each order goes to the gateway over FIX as its own client (HEDGE1), tagged
strategy "hedge", so it is checked like any other order. Hedge units move only on fills; a
rejection is logged with the gateway's text and not resent (the next interval recomputes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pretrade.config import CONFIG_DIR, ROOT, load_toml

log = logging.getLogger(__name__)

# rv_1m is the volatility of one minute of trading; a trading year is 252 days of 6.5 hours
TRADING_MINUTES_PER_YEAR = 252 * 390
YEAR_NS = 365.25 * 86400 * 1e9  # time to expiry runs on the calendar (ACT/365.25)
RV_WINDOW_NS = 60 * 10**9  # rv_1m's window: a minute of returns
TERMINAL = {"2", "3", "4", "8", "C"}  # OrdStatus after which an order gets no more fills
KINDS = ("call", "put")
_POSITION_KEYS = {"name", "sym", "contracts", "strike", "maturity", "expiry", "kind", "multiplier", "lot",
                  "vol", "hedge_units"}
_HEDGE_KEYS = {"model", "cost", "every", "answer_timeout", "vol_bounds"}


class ConfigError(ValueError):
    """The hedge configuration cannot be used (the message names the file, line and field)."""


@dataclass(frozen=True)
class PositionConfig:
    """One option line to hedge, as configured."""

    name: str
    sym: str
    contracts: float         # > 0 sold (short), < 0 bought
    strike: float
    kind: str
    multiplier: float
    lot: int
    maturity: float | None   # the option's life in years (tau / T of the agent's state)
    expiry_ns: int | None    # expiry as UTC nanoseconds
    vol: float | None        # a configured implied vol; None: rv_1m from the risk engine
    hedge_units: float       # units held before today's fills (those are read back from the RDB)


@dataclass(frozen=True)
class HedgeConfig:
    """The whole hedge file: the model, costs, cadence and positions."""

    model: Path
    cost: float
    every: float
    answer_timeout: float
    positions: tuple[PositionConfig, ...]
    vol_bounds: tuple[float, float] = (0.05, 1.0)  # measured vol clamped into these (annual)


def annualised_vol(rv_1m: float) -> float:
    """The features' 1-minute realised volatility as an annual volatility (sqrt of time)."""
    return rv_1m * math.sqrt(TRADING_MINUTES_PER_YEAR)


def _number(where: str, key: str, value: Any, positive: bool = True, nonzero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{where}: {key} must be > 0, got {value!r}")
    if nonzero and value == 0:
        raise ConfigError(f"{where}: {key} must not be 0 (> 0 sold, < 0 bought)")
    return float(value)


def _expiry_ns(where: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{where}: expiry {value!r} is not an ISO date or date-time") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)
    if not isinstance(value, dt.datetime):
        raise ConfigError(f"{where}: expiry must be a date or date-time (UTC), got {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1000


def parse_position(i: int, raw: Any) -> PositionConfig:
    """One `positions` entry checked and completed (lot from the instrument when left out)."""
    from pretrade.market.instruments import UNIVERSE

    where = f"positions[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table {{ sym = ..., contracts = ..., ... }}, got {raw!r}")
    unknown = set(raw) - _POSITION_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(_POSITION_KEYS))}")
    missing = [k for k in ("sym", "contracts", "strike") if k not in raw]
    if "maturity" not in raw and "expiry" not in raw:
        missing.append("maturity or expiry")
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    sym = raw["sym"]
    if not isinstance(sym, str) or not sym:
        raise ConfigError(f"{where}: sym must be an instrument name, got {sym!r}")
    kind = raw.get("kind", "call")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be call or put, got {kind!r}")
    lot = raw.get("lot", UNIVERSE[sym].lot if sym in UNIVERSE else None)
    if lot is None:
        raise ConfigError(f"{where}: lot is required for {sym}, which is not one of the simulated "
                          f"instruments ({', '.join(UNIVERSE)})")
    if isinstance(lot, bool) or not isinstance(lot, int) or lot <= 0:
        raise ConfigError(f"{where}: lot must be a positive integer, got {lot!r}")
    contracts = _number(where, "contracts", raw["contracts"], positive=False, nonzero=True)
    strike = _number(where, "strike", raw["strike"])
    maturity = _number(where, "maturity", raw["maturity"]) if "maturity" in raw else None
    expiry = _expiry_ns(where, raw["expiry"]) if "expiry" in raw else None
    vol = _number(where, "vol", raw["vol"]) if "vol" in raw else None
    units = _number(where, "hedge_units", raw.get("hedge_units", 0), positive=False)
    name = raw.get("name", f"{sym}-{kind}-{strike:g}")
    if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"{where}: name must be letters, digits, '-', '_' or '.', got {name!r}")
    return PositionConfig(name, sym, contracts, strike, kind,
                          _number(where, "multiplier", raw.get("multiplier", 1.0)), lot, maturity, expiry, vol, units)


def parse_config(data: dict[str, Any], source: str = "hedge config") -> HedgeConfig:
    """A hedge file's contents checked: ConfigError naming the field on anything unusable."""
    try:
        hedge = data.get("hedge", {})
        if not isinstance(hedge, dict):
            raise ConfigError("[hedge] must be a table")
        unknown = (set(hedge) - _HEDGE_KEYS) | (set(data) - {"hedge", "positions"})
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))}; [hedge] takes "
                              f"{', '.join(sorted(_HEDGE_KEYS))}, and a `positions` list")
        raw = data.get("positions")
        if not isinstance(raw, list) or not raw:
            raise ConfigError("positions: a non-empty list of { sym = ..., contracts = ..., ... } is required")
        positions = tuple(parse_position(i, r) for i, r in enumerate(raw))
        names = [p.name for p in positions]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"positions: name(s) {', '.join(twice)} used twice; give each line its own name")
        cost = _number("[hedge]", "cost", hedge.get("cost", 0.001), positive=False)
        if cost < 0:
            raise ConfigError(f"[hedge]: cost must be >= 0 (a fraction of notional per side), got {cost}")
        model = Path(hedge.get("model", "models/hedging_bs.onnx"))
        bounds = hedge.get("vol_bounds", [0.05, 1.0])
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not 0 < _number("[hedge]", "vol_bounds", bounds[0]) <= _number("[hedge]", "vol_bounds", bounds[1])):
            raise ConfigError(f"[hedge]: vol_bounds must be [low, high] with 0 < low <= high, got {bounds!r}")
        return HedgeConfig(model if model.is_absolute() else ROOT / model, cost,
                           _number("[hedge]", "every", hedge.get("every", 30.0)),
                           _number("[hedge]", "answer_timeout", hedge.get("answer_timeout", 30.0)), positions,
                           (float(bounds[0]), float(bounds[1])))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(path: str | Path) -> HedgeConfig:
    """The hedge file (config/hedge.toml) read and checked."""
    return parse_config(load_toml(Path(path)), str(path))


# ---- the hedger: market state, decisions, answers ---------------------------------------------
@dataclass
class Book:
    """One position's running state: units held, its expiry, the order in flight."""

    cfg: PositionConfig
    units: float
    expiry_ns: int | None
    maturity: float | None
    last_decision: int | None = None          # market time (ns)
    inflight: str | None = None               # ClOrdID awaiting a terminal answer
    sent_at: float = 0.0                      # wall time it was sent (monotonic)
    waiting: str | None = None                # what the first decision waits for (logged once)
    orders: dict[str, str] = field(default_factory=dict)  # ClOrdID -> side, every order sent


class Hedger:
    """The decision logic, free of I/O: fold market rows in, get orders out, fold answers in.
    Thread-safe (the feed and the FIX callbacks call it from their own threads)."""

    def __init__(self, agent, cfg: HedgeConfig, prefix: str | None = None, units_known: bool = True) -> None:
        self.agent, self.cfg = agent, cfg
        self.books = {p.name: Book(p, p.hedge_units, p.expiry_ns, p.maturity) for p in cfg.positions}
        self.spot: dict[str, float] = {}
        self.vol: dict[str, float] = {}
        self._rv_since: dict[str, int] = {}     # sym -> event time of its first rv_1m
        self.clock: int | None = None           # market time: the latest event time seen (ns)
        self.by_clordid: dict[str, Book] = {}
        self.prefix = prefix or f"H{time.time_ns() // 1_000_000}"
        self.known = threading.Event()          # today's earlier fills read back (or not asked for)
        if units_known:
            self.known.set()
        self._ids = itertools.count(1)
        self.lock = threading.Lock()

    # -- market in --
    def on_quotes(self, rows: list[dict[str, Any]]) -> None:
        """`quote` rows: the mid of each, and the market clock."""
        with self.lock:
            for r in rows:
                bid, ask = float(r["bid"]), float(r["ask"])
                if math.isfinite(bid) and math.isfinite(ask) and 0 < bid <= ask:
                    self.spot[r["sym"]] = (bid + ask) / 2
                self._tick(r.get("time"))

    def on_features(self, rows: list[dict[str, Any]]) -> None:
        """`features` rows: the engine's rv_1m, annualised, once its one-minute window is full
        (a minute after the first value; `ready` is the z-scores' longer warm-up, not needed here)."""
        with self.lock:
            for r in rows:
                sym, rv, t = r["sym"], float(r.get("rv_1m", math.nan)), r.get("time")
                self._tick(t)
                if not (math.isfinite(rv) and rv > 0):
                    continue
                first = self._rv_since.setdefault(sym, t if t is not None else 0)
                if bool(r.get("ready", False)) or t is None or t - first >= RV_WINDOW_NS:
                    if sym not in self.vol:
                        log.info("%s: volatility from the risk engine's rv_1m: %.3g a minute, %.3f a year",
                                 sym, rv, annualised_vol(rv))
                    self.vol[sym] = annualised_vol(rv)

    def _tick(self, t: int | None) -> None:
        if t is not None and (self.clock is None or t > self.clock):
            self.clock = int(t)

    # -- decisions out --
    def decide(self, logged_on: bool = True) -> list[tuple[Book, str, dict[str, Any]]]:
        """(book, ClOrdID, agent order) to send now: each position whose interval of market time
        has passed, with its data, and no order in flight. Marks them in flight when logged on."""
        out = []
        with self.lock:
            now = self.clock
            if now is None or not self.known.is_set():  # units unknown: a decision could double a hedge
                return out
            for b in self.books.values():
                if b.last_decision is not None and now - b.last_decision < self.cfg.every * 1e9:
                    continue
                if b.inflight is not None:
                    if time.monotonic() - b.sent_at < self.cfg.answer_timeout:
                        continue
                    log.warning("%s: no final answer to %s within %.0f s; deciding again (a late fill "
                                "still counts)", b.cfg.name, b.inflight, self.cfg.answer_timeout)
                    b.inflight = None
                order = self._decide_one(b, now)
                if order is None:
                    continue
                if not logged_on:
                    log.warning("%s: gateway session not logged on: %s %d %s not sent (decided again next "
                                "interval)", b.cfg.name, order["side"], order["qty"], order["sym"])
                    continue
                clordid = f"{self.prefix}-{b.cfg.name}-{next(self._ids)}"
                b.inflight, b.sent_at = clordid, time.monotonic()
                b.orders[clordid] = order["side"]
                self.by_clordid[clordid] = b
                out.append((b, clordid, order))
        return out

    def _decide_one(self, b: Book, now: int) -> dict[str, Any] | None:
        from pretrade.hedging.agent import OptionPosition

        p = b.cfg
        spot = self.spot.get(p.sym)
        measured = self.vol.get(p.sym)
        vol = p.vol if p.vol is not None else measured
        if spot is None or vol is None:
            why = f"a quote of {p.sym}" if spot is None else f"a minute of {p.sym}'s rv_1m from the risk engine"
            if b.waiting != why:
                log.info("%s: waiting for %s before the first decision", p.name, why)
                b.waiting = why
            return None
        b.waiting = None
        note = ""
        if p.vol is None:
            lo, hi = self.cfg.vol_bounds
            vol = min(max(vol, lo), hi)
            note = f" (rv_1m gives {measured:.3f}, clamped to [{lo:g}, {hi:g}])" if vol != measured else ""
        if b.expiry_ns is None:  # a life of `maturity` years from the first market time seen
            b.expiry_ns = now + int(b.maturity * YEAR_NS)
            log.info("%s: no expiry configured; its %.4g-year life runs from market time %s to %s",
                     p.name, b.maturity, _iso(now), _iso(b.expiry_ns))
        tau = (b.expiry_ns - now) / YEAR_NS
        b.last_decision = now
        if tau <= 0:
            log.warning("%s: expired at %s; no more hedging (holding %g units)", p.name, _iso(b.expiry_ns), b.units)
            return None
        if b.maturity is None or b.maturity < tau:
            b.maturity = tau  # the option's life for tau / T: from the first decision when only expiry is set
        pos = OptionPosition(p.sym, p.contracts, p.strike, b.maturity, p.kind, p.multiplier, b.units, p.lot)
        try:
            orders = self.agent.schedule(pos, {"spot": spot, "tau": tau, "vol": vol, "cost": self.cfg.cost})
        except ValueError as e:
            log.error("%s: the agent cannot decide (%s); spot %g vol %g tau %g", p.name, e, spot, vol, tau)
            return None
        head = (f"{p.name} ({'short' if p.contracts > 0 else 'long'} {abs(p.contracts):g} {p.kind} "
                f"K={p.strike:g} x{p.multiplier:g}): spot {spot:.4f} vol {vol:.3f}{note} tau {tau:.4f}y")
        if not orders:
            log.info("%s: hold %g units (inside the no-trade band)", head, b.units)
            return None
        o = orders[0]
        log.info("%s: %g -> %.1f units: %s %d %s", head, b.units, o["target_units"], o["side"], o["qty"], p.sym)
        return o

    # -- answers in --
    def on_report(self, f: dict[int, str]) -> None:
        """An ExecutionReport from the gateway: fills move the units; a rejection is logged with
        its text; a final status frees the position for its next decision."""
        from pretrade.gateway import messages as m

        clordid = f.get(m.CL_ORD_ID, "")
        with self.lock:
            b = self.by_clordid.get(clordid)
            if b is None:
                log.info("answer for an order this process did not send (%s): %s", clordid, f.get(m.TEXT, ""))
                return
            exec_type, status, text = f.get(m.EXEC_TYPE, ""), f.get(m.ORD_STATUS, ""), f.get(m.TEXT, "")
            if exec_type == "F":
                qty = float(f.get(m.LAST_QTY, "0") or 0)
                before = b.units
                b.units += qty if b.orders[clordid] == "buy" else -qty
                log.info("%s: fill %s %s %g @ %s: hedge units %g -> %g", b.cfg.name, clordid, b.orders[clordid],
                         qty, f.get(m.LAST_PX, "?"), before, b.units)
            elif exec_type == "8":
                log.warning("%s: %s rejected by the gateway: %s (not resent; the next interval decides again)",
                            b.cfg.name, clordid, text or "no reason given")
            elif exec_type == "0":
                log.info("%s: %s accepted", b.cfg.name, clordid)
            elif exec_type == "4":
                log.warning("%s: %s cancelled after %s filled: %s", b.cfg.name, clordid,
                            f.get(m.CUM_QTY, "?"), text)
            if status in TERMINAL and b.inflight == clordid:
                b.inflight = None

    def add_fills(self, units: dict[str, float]) -> None:
        """Units bought (+) or sold (-) by earlier runs of this process today, added to the
        configured start; then decisions may begin."""
        with self.lock:
            for name, u in units.items():
                b = self.books[name]
                log.info("%s: today's earlier fills %+g units: holding %g -> %g", name, u, b.units, b.units + u)
                b.units += u
        self.known.set()

    def unsent(self, clordid: str) -> None:
        """An order that could not be sent: its position is free for its next decision."""
        with self.lock:
            b = self.by_clordid.get(clordid)
            if b is not None and b.inflight == clordid:
                b.inflight = None

    def status(self) -> dict[str, dict[str, Any]]:
        """Each position's units held and order in flight (for logs and tests)."""
        with self.lock:
            return {n: {"units": b.units, "inflight": b.inflight} for n, b in self.books.items()}


FILLS_SQL = "s)select clordid, side, qty from execution where event = 'fill' and account = '{account}'"


def units_from_fills(rows: list[dict[str, Any]], names: set[str], prefix: str) -> dict[str, float]:
    """Signed units per position from `execution` fill rows of this client, by the position name
    in each ClOrdID (PREFIX-NAME-N); this run's own orders (`prefix`) and others' are left out."""
    out: dict[str, float] = {}
    for r in rows:
        cl = r["clordid"].decode() if isinstance(r["clordid"], bytes) else str(r["clordid"])
        side = r["side"].decode() if isinstance(r["side"], bytes) else str(r["side"])
        head, sep, rest = cl.partition("-")
        name = rest.rpartition("-")[0]
        if not sep or head == prefix or not head.startswith("H"):
            continue
        if name not in names:
            log.warning("fill of %s for a position not in the config (%r): not counted", cl, name)
            continue
        out[name] = out.get(name, 0.0) + (1 if side == "buy" else -1) * float(r["qty"])
    return out


def read_back(hedger: Hedger, rdb: str, account: str, user: str, password: str, stop: threading.Event) -> None:
    """Today's fills of earlier runs from the RDB into the units; retried every 2 s until read
    (no decision before: a restarted process would hedge what it already holds)."""
    from pretrade.client import connect
    from pretrade.ipc.codec import QError

    warned = False
    while not stop.is_set():
        try:
            with connect(rdb, user, password, timeout=10.0) as c:
                df = c.query(FILLS_SQL.format(account=account.replace("'", "''")))
            rows = df.to_dict("records") if hasattr(df, "to_dict") else []
            hedger.add_fills(units_from_fills(rows, set(hedger.books), hedger.prefix))
            log.info("today's fills of %s read back from the RDB %s (%d rows): decisions may begin", account, rdb,
                     len(rows))
            return
        except (OSError, ConnectionError, TimeoutError, QError) as e:
            if not warned:
                log.error("cannot read today's fills from the RDB %s (%s): no decision until it answers; "
                          "retrying every 2 s (--rdb '' starts from the config's hedge_units)", rdb, e)
                warned = True
            stop.wait(2.0)


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rows_of(df: Any) -> list[dict[str, Any]]:
    """A subscription's DataFrame as rows, `time` as integer nanoseconds (None when absent)."""
    import numpy as np

    recs = df.to_dict("records")
    if "time" in df.columns:
        times = df["time"].to_numpy().astype("datetime64[ns]").astype(np.int64)
        for r, t in zip(recs, times, strict=True):
            r["time"] = int(t)
    for r in recs:
        if isinstance(r.get("sym"), bytes):
            r["sym"] = r["sym"].decode()
    return recs


# ---- the process ------------------------------------------------------------------------------
def feed(hedger: Hedger, tp: str, user: str, password: str, stop: threading.Event,
         on_update=None) -> None:
    """Subscribe to `quote` and `features` of the positions' syms; reconnect with backoff."""
    from pretrade.client import connect

    syms = sorted({b.cfg.sym for b in hedger.books.values()})
    delay = 0.5
    while not stop.is_set():
        try:
            client = connect(tp, user, password, timeout=10.0)
            sub = client.subscribe(["quote", "features"], syms)
        except (OSError, ConnectionError) as e:
            log.warning("tickerplant %s unreachable (%s); retrying in %.1f s", tp, e, delay)
            stop.wait(delay)
            delay = min(2 * delay, 30.0)
            continue
        log.info("subscribed to %s for quote and features of %s", tp, ", ".join(syms))
        delay = 0.5
        try:
            while not stop.is_set():
                item = sub.get(timeout=0.5)
                if item is None:
                    if sub.error is not None:
                        log.warning("lost the tickerplant %s (%s); reconnecting", tp, sub.error)
                        break
                    continue
                table, df = item
                try:
                    rows = rows_of(df)
                    (hedger.on_quotes if table == "quote" else hedger.on_features)(rows)
                except (KeyError, ValueError, TypeError) as e:
                    log.error("a %s update was not usable (%s); skipped", table, e)
                    continue
                if on_update is not None:
                    on_update()
        finally:
            sub.close()
            client.close()


def answers(hedger: Hedger, fix, stop: threading.Event) -> None:
    """Pass the gateway's ExecutionReports to the hedger; log the session's ups and downs."""
    import queue

    from pretrade.gateway import messages as m

    up, down_since = False, time.monotonic()
    warned = False
    while not stop.is_set():
        now_up = fix.logged_on.is_set()
        if now_up != up:
            up, down_since, warned = now_up, time.monotonic(), False
            (log.info if up else log.warning)(
                "FIX session to the gateway %s", "logged on" if up else "down; QuickFIX reconnects every second")
        elif not up and not warned and time.monotonic() - down_since > 15:
            log.error("not logged on to the gateway for 15 s: is it running, and is this client's password "
                      "(see its password_env in the FIX clients file) the gateway's?")
            warned = True
        try:
            f = fix.next(timeout=0.5)
        except queue.Empty:
            continue
        if f.get(m.MSG_TYPE) == m.EXEC_REPORT:
            hedger.on_report(f)
        else:
            log.warning("gateway sent %s (not an ExecutionReport): %s", f.get(m.MSG_TYPE), f.get(m.TEXT, ""))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=CONFIG_DIR / "hedge.toml",
                   help="positions to hedge, model, cost, cadence (default config/hedge.toml)")
    p.add_argument("--tp", default="localhost:5010",
                   help="tickerplant HOST:PORT: quote (spot) and features (rv_1m) in (default localhost:5010)")
    p.add_argument("--user", default=os.environ.get("PRETRADE_USER", ""),
                   help="IPC user name for the tickerplant (default $PRETRADE_USER)")
    p.add_argument("--password-env", default="PRETRADE_PASSWORD", metavar="VAR",
                   help="environment variable holding that user's password (default PRETRADE_PASSWORD)")
    p.add_argument("--gateway", default="127.0.0.1:9876", help="FIX gateway HOST:PORT (default 127.0.0.1:9876)")
    p.add_argument("--rdb", default="localhost:5011",
                   help="RDB HOST:PORT: today's fills of earlier runs (execution rows of this client) are added to "
                        "the config's hedge_units before the first decision (retried while the RDB is down); '' "
                        "starts from hedge_units alone (default localhost:5011)")
    p.add_argument("--comp-id", default="HEDGE1",
                   help="this client's SenderCompID; its password comes from the environment variable named "
                        "by password_env of [client.COMP_ID] in the clients file (default HEDGE1)")
    p.add_argument("--clients", default=None, help="FIX clients file (default config/fix_clients.toml)")
    p.add_argument("--every", type=float, default=None,
                   help="seconds of market time between decisions per position (default: every in the "
                        "config's [hedge], else 30)")
    p.add_argument("--model", default=None, help="hedging ONNX model with its card (default: the config's model)")
    p.add_argument("--workdir", default="var/fix/hedge", help="QuickFIX settings, stores and logs (default var/fix/hedge)")


def run(args: argparse.Namespace) -> int:
    from pretrade.gateway.fixclient import FixInitiator
    from pretrade.gateway.process import wait_for_signal
    from pretrade.gateway.sessions import GATEWAY_ID, load_clients
    from pretrade.hedging.agent import HedgingAgent
    from pretrade.ipc.client import parse_addr
    from pretrade.models.card import ModelRefused

    try:
        cfg = load_config(args.config)
        if args.every is not None:
            cfg = replace(cfg, every=_number("--every", "every", args.every))
        if args.model:
            cfg = replace(cfg, model=Path(args.model))
        agent = HedgingAgent(cfg.model)
        client = load_clients(args.clients, warn=False).get(args.comp_id)
        if client is None:
            raise ValueError(f"no [client.{args.comp_id}] in the FIX clients file "
                             f"({args.clients or CONFIG_DIR / 'fix_clients.toml'}): the gateway would refuse it")
        if client.password is None:
            raise ValueError(f"{args.comp_id}'s password is not set: its password_env variable in the FIX "
                             "clients file is empty or unset")
        host, port = parse_addr(args.gateway)
    except (ConfigError, ModelRefused, ValueError, FileNotFoundError) as e:
        log.error("hedge not started: %s", e)
        return 1
    hedger = Hedger(agent, cfg, units_known=not args.rdb)
    for b in hedger.books.values():
        p = b.cfg
        log.info("position %s: %s %g %s %s K=%g x%g, lot %d, %s, vol %s, holding %g units", p.name,
                 "short" if p.contracts > 0 else "long", abs(p.contracts), p.sym, p.kind, p.strike, p.multiplier,
                 p.lot, f"expiry {_iso(p.expiry_ns)}" if p.expiry_ns else f"maturity {p.maturity:g}y",
                 f"{p.vol:g} (configured)" if p.vol else "rv_1m annualised", p.hedge_units)
    log.info("agent %s (%s); cost %g per side; a decision every %g s of market time", agent.version, cfg.model,
             cfg.cost, cfg.every)
    fix = FixInitiator(Path(args.workdir), port, args.comp_id, GATEWAY_ID, password=client.password, host=host)
    stop = threading.Event()

    def send_due() -> None:
        from pretrade.gateway import messages as m
        from pretrade.hedging.orders import new_order_fields

        for b, clordid, order in hedger.decide(fix.logged_on.is_set()):
            log.info("%s: sending %s %s %d %s (strategy hedge)", b.cfg.name, clordid, order["side"], order["qty"],
                     order["sym"])
            try:
                fix.send(m.NEW_ORDER, new_order_fields(order, clordid))
            except Exception as e:  # noqa: BLE001 - a session that went down between check and send
                log.error("%s: could not send %s (%s); decided again next interval", b.cfg.name, clordid, e)
                hedger.unsent(clordid)

    password = os.environ.get(args.password_env, "")
    if not args.rdb:
        log.warning("no --rdb: units start from the config's hedge_units; fills of earlier runs today are not counted")
    threads = [threading.Thread(target=feed, name="hedge-feed", daemon=True,
                                args=(hedger, args.tp, args.user, password, stop, send_due)),
               threading.Thread(target=answers, name="hedge-answers", daemon=True, args=(hedger, fix, stop))]
    if args.rdb:
        threads.append(threading.Thread(target=read_back, name="hedge-read-back", daemon=True,
                                        args=(hedger, args.rdb, client.account, args.user, password, stop)))
    for t in threads:
        t.start()
    try:
        wait_for_signal()
    finally:
        log.info("stopping: logging out of the gateway; final units %s",
                 ", ".join(f"{n} {s['units']:g}" for n, s in hedger.status().items()))
        stop.set()
        fix.stop()
        for t in threads:
            t.join(timeout=3)
    return 0
