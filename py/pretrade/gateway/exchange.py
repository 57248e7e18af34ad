"""`pretrade exchange`: a FIX 4.4 venue on top of the simulator's matching engine.

`Venue` is the exchange's order handling without FIX: NewOrderSingle, cancel and replace against
a seeded `Simulation`'s books; accepted orders match, rest and move the book. It returns the FIX
messages to send as (MsgType, {tag: value}). `ExchangeApp` is the QuickFIX Application that feeds it.

Two ways to run: without `--tp` the books are primed with one block of simulated flow and stay
still (a venue for tests); with `--tp` the venue IS the market: `run_market` advances the
simulation one second of market time at a time (paced by `--speed`, after a `--warmup` published
as fast as possible) and publishes its quote/trade/book/l3 rows to the tickerplant with the
feed's publisher, so outside orders trade in the same books everyone watches.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pretrade.gateway import messages as m
from pretrade.gateway.sessions import EXCHANGE_ID, EXCHANGE_PORT, GATEWAY_ID, application

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

Out = tuple[str, dict[int, Any]]


@dataclass
class VenueOrder:
    """One order on the venue: its ids, terms and fills so far."""

    order_id: str
    clordid: str
    sym: str
    side: str
    qty: int
    price: float | None
    book_id: int = 0
    cum: int = 0
    notional: float = 0.0
    done: bool = False

    @property
    def leaves(self) -> int:
        return 0 if self.done else self.qty - self.cum

    def status(self) -> str:
        if self.cum >= self.qty:
            return "2"
        if self.done:
            return "4"
        return "1" if self.cum else "0"

    def report(self, exec_type: str, exec_id: str, extra: dict[int, Any] | None = None) -> Out:
        """An ExecutionReport on this order's current state."""
        f = {m.ORDER_ID: self.order_id, m.CL_ORD_ID: self.clordid, m.EXEC_ID: exec_id,
             m.EXEC_TYPE: exec_type, m.ORD_STATUS: self.status(), m.SYMBOL: self.sym,
             m.SIDE: m.FIX_SIDE[self.side], m.ORDER_QTY: self.qty, m.PRICE: self.price,
             m.ORD_TYPE: "1" if self.price is None else "2", m.LEAVES_QTY: self.leaves,
             m.CUM_QTY: self.cum, m.AVG_PX: self.notional / self.cum if self.cum else 0.0,
             m.TRANSACT_TIME: m.utc_now()}
        f.update(extra or {})
        return m.EXEC_REPORT, f


class Venue:
    """Order handling over a Simulation's books; thread-safe (one lock)."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.insts = {s.ins.sym: s.ins for s in sim.sims}
        self.orders: dict[str, VenueOrder] = {}       # clordid -> order (every clordid it had)
        self.by_book: dict[tuple[str, int], VenueOrder] = {}  # (sym, book id) -> resting order
        self._ids = itertools.count(1)
        self._exec = itertools.count(1)
        self.lock = threading.Lock()

    @classmethod
    def primed(cls, scenario: str = "normal", seed: int = 0, syms: list[str] | None = None) -> Venue:
        """A venue whose books hold one block of simulated flow (liquidity on both sides)."""
        from pretrade.market.simulator import BLOCK_SECONDS, Simulation

        sim = Simulation(scenario, seed=seed, syms=syms, duration=BLOCK_SECONDS * 2)
        next(sim.blocks())
        return cls(sim)

    def _eid(self) -> str:
        return f"X{next(self._exec)}"

    def mid(self, sym: str) -> float:
        """The mid price of `sym`'s book (NaN when a side is empty)."""
        book = next(s.book for s in self.sim.sims if s.ins.sym == sym)
        b, a = book.best_bid(), book.best_ask()
        return math.nan if b is None or a is None else (b + a) / 2 * book.tick_size

    def _reject(self, clordid: str, sym: str, side: str, qty: Any, text: str, reason: int) -> list[Out]:
        return [(m.EXEC_REPORT, {m.ORDER_ID: "NONE", m.CL_ORD_ID: clordid, m.EXEC_ID: self._eid(),
                                 m.EXEC_TYPE: "8", m.ORD_STATUS: "8", m.SYMBOL: sym,
                                 m.SIDE: m.FIX_SIDE.get(side, "1"), m.ORDER_QTY: qty, m.LEAVES_QTY: 0,
                                 m.CUM_QTY: 0, m.AVG_PX: 0.0, m.ORD_REJ_REASON: reason, m.TEXT: text,
                                 m.TRANSACT_TIME: m.utc_now()})]

    def _terms(self, sym: str, qty: int, price: float | None) -> str | None:
        """Why these terms cannot trade here, or None."""
        ins = self.insts.get(sym)
        if ins is None:
            return f"unknown symbol {sym}; this venue trades {', '.join(self.insts)}"
        if qty <= 0 or qty % ins.lot:
            return f"quantity {qty} is not a positive multiple of {sym}'s lot size {ins.lot}"
        if price is not None and (price <= 0 or abs(round(price / ins.tick) * ins.tick - price) > 1e-9 * price):
            return f"price {price} is not a positive multiple of {sym}'s tick {ins.tick}"
        return None

    def new(self, clordid: str, sym: str, side: str, qty: int, price: float | None) -> list[Out]:
        """Accept, match and rest a new order; its ExecutionReports (and those of resting
        orders of ours it traded with)."""
        with self.lock:
            if clordid in self.orders:
                return self._reject(clordid, sym, side, qty, f"duplicate ClOrdID {clordid}", 6)
            why = self._terms(sym, qty, price)
            if why:
                return self._reject(clordid, sym, side, qty, why, 1 if why.startswith("unknown") else 99)
            o = VenueOrder(f"E{next(self._ids)}", clordid, sym, side, qty, price)
            self.orders[clordid] = o
            return [o.report("0", self._eid()), *self._submit(o)]

    def _submit(self, o: VenueOrder) -> list[Out]:
        oid, fills = self.sim.submit(o.sym, o.side, o.leaves, o.price)
        o.book_id = oid
        out = []
        for f in fills:
            out.append(self._fill(o, f["size"], f["price"]))
            other = self.by_book.get((o.sym, f["resting_id"]))
            if other is not None:
                out.append(self._fill(other, f["size"], f["price"]))
        if o.leaves:
            if o.price is None:  # a market order's remainder is not rested
                o.done = True
                out.append(o.report("4", self._eid(), {m.TEXT: "market order remainder cancelled: no more liquidity"}))
            else:
                self.by_book[(o.sym, oid)] = o
        return out

    def _fill(self, o: VenueOrder, size: int, price: float) -> Out:
        o.cum += size
        o.notional += size * price
        if o.cum >= o.qty:
            self.by_book.pop((o.sym, o.book_id), None)
        return o.report("F", self._eid(), {m.LAST_QTY: size, m.LAST_PX: price})

    def _cancel_reject(self, clordid: str, orig: str, to: str, text: str, o: VenueOrder | None) -> list[Out]:
        return [(m.CANCEL_REJECT, {m.ORDER_ID: o.order_id if o else "NONE", m.CL_ORD_ID: clordid,
                                   m.ORIG_CL_ORD_ID: orig, m.ORD_STATUS: o.status() if o else "8",
                                   m.CXL_REJ_RESPONSE_TO: to, m.CXL_REJ_REASON: 0 if o else 1,
                                   m.TEXT: text})]

    def _live(self, orig: str) -> tuple[VenueOrder | None, str]:
        o = self.orders.get(orig)
        if o is None:
            return None, f"unknown order {orig}"
        if o.leaves == 0:
            return o, f"order {orig} is already {'filled' if o.cum >= o.qty else 'cancelled'}"
        return o, ""

    def cancel(self, clordid: str, orig: str) -> list[Out]:
        """Cancel a resting order: ExecutionReport Canceled, or OrderCancelReject."""
        with self.lock:
            o, why = self._live(orig)
            if why:
                return self._cancel_reject(clordid, orig, "1", why, o)
            self.sim.cancel(o.sym, o.book_id)
            self.by_book.pop((o.sym, o.book_id), None)
            o.done = True
            o.clordid = clordid
            self.orders[clordid] = o
            return [o.report("4", self._eid(), {m.ORIG_CL_ORD_ID: orig})]

    def replace(self, clordid: str, orig: str, qty: int, price: float | None) -> list[Out]:
        """Change a resting order's quantity and price (it loses its place): ExecutionReport
        Replaced (and any fills at the new price), or OrderCancelReject."""
        with self.lock:
            o, why = self._live(orig)
            if not why:
                why = self._terms(o.sym, qty, price) or ("" if qty > o.cum else
                                                         f"new quantity {qty} is not above the filled {o.cum}")
            if why:
                return self._cancel_reject(clordid, orig, "2", why, o)
            self.sim.cancel(o.sym, o.book_id)
            self.by_book.pop((o.sym, o.book_id), None)
            o.qty, o.price, o.clordid = qty, price, clordid
            self.orders[clordid] = o
            return [o.report("5", self._eid(), {m.ORIG_CL_ORD_ID: orig}), *self._submit(o)]


def market_seconds(venue: Venue, s0: int, s1: int, stop: threading.Event | None = None
                   ) -> Iterator[dict[str, pd.DataFrame]]:
    """Advance the venue's simulation second by second over [s0, s1) and yield each second's
    tables (all instruments merged); the venue's lock is held while a second is simulated, so
    outside orders land between seconds, stamped at the start of the next one."""
    from pretrade.market.simulator import merge_columns

    sim = venue.sim
    for s in range(s0, min(s1, sim.n_sec)):
        if stop is not None and stop.is_set():
            return
        with venue.lock:
            sim.clock = s
            parts = [x.run_block(s, s + 1) for x in sim.sims]
            sim.clock = s + 1
        yield {name: merge_columns([p.get(name, {}) for p in parts], name)
               for name in ("quote", "trade", "book", "l3")}


def run_market(venue: Venue, tp: str | None, speed: float | None, warmup: int,
               stop: threading.Event | None = None) -> dict:
    """Publish the venue's market to the tickerplant `tp`: the first `warmup` seconds as fast as
    the tickerplant takes them, the rest at `speed` x real time (None: as fast as possible).
    Returns what feed.pump reports (rows sent and refused, seconds)."""
    from pretrade.market.feed import Publisher, pump

    pub = Publisher(tp)
    try:
        first = pump(market_seconds(venue, 0, warmup, stop), pub, None) if warmup > 0 else {}
        log.info("market warm-up done: %d s of market time", warmup)
        rest = pump(market_seconds(venue, warmup, venue.sim.n_sec, stop), pub, speed)
    finally:
        pub.close()
    return {"sent": dict(pub.sent), "refused": dict(pub.refused),
            "seconds": first.get("seconds", 0.0) + rest["seconds"]}


def _side(text: str | None) -> str:
    return m.SIDES.get(text or "", "")


class ExchangeApp:
    """The QuickFIX Application of the venue: decodes orders, calls the Venue, sends reports."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.app = application(on_create=lambda sid: log.info("session %s created", sid),
                               on_logon=lambda sid: log.info("session %s logged on", sid),
                               on_logout=lambda sid: log.info("session %s logged out", sid),
                               from_app=lambda msg, sid: self.on_message(msg, sid))

    def on_message(self, msg, sid) -> None:
        """Handle one application message from a member; unsupported types get a
        BusinessMessageReject (QuickFIX sends it for UnsupportedMessageType)."""
        import quickfix as fix

        t = m.msg_type(msg)
        cl = m.get(msg, m.CL_ORD_ID, "")
        if t == m.NEW_ORDER:
            price = m.get(msg, m.PRICE)
            market = m.get(msg, m.ORD_TYPE) == "1"
            out = self.venue.new(cl, m.get(msg, m.SYMBOL, ""), _side(m.get(msg, m.SIDE)),
                                 int(float(m.get(msg, m.ORDER_QTY, "0"))),
                                 None if market or price is None else float(price))
        elif t == m.CANCEL:
            out = self.venue.cancel(cl, m.get(msg, m.ORIG_CL_ORD_ID, ""))
        elif t == m.REPLACE:
            price = m.get(msg, m.PRICE)
            out = self.venue.replace(cl, m.get(msg, m.ORIG_CL_ORD_ID, ""),
                                     int(float(m.get(msg, m.ORDER_QTY, "0"))),
                                     None if m.get(msg, m.ORD_TYPE) == "1" or price is None else float(price))
        else:
            raise fix.UnsupportedMessageType()
        for mt, fields in out:
            fix.Session.sendToTarget(m.build(mt, fields), sid)


class RunningExchange:
    """A started venue acceptor: `app` (with its `venue`) and `stop()`."""

    def __init__(self, acceptor, app: ExchangeApp) -> None:
        self.acceptor, self.app = acceptor, app

    def stop(self) -> None:
        """Stop the acceptor."""
        self.acceptor.stop()


def start_exchange(workdir: Path, port: int, host: str = "127.0.0.1", members: list[str] | None = None,
                   venue: Venue | None = None) -> RunningExchange:
    """Start the venue's acceptor on `port` (members: the SenderCompIDs allowed to connect)."""
    from pretrade.gateway.sessions import FixEngine, settings

    app = ExchangeApp(venue or Venue.primed())
    s = settings("exchange", Path(workdir), members or [GATEWAY_ID], sender=EXCHANGE_ID, host=host, port=port)
    return RunningExchange(FixEngine("acceptor", app.app, s).start(), app)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fix-port", type=int, default=EXCHANGE_PORT, help=f"FIX acceptor port (default {EXCHANGE_PORT})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--members", default=GATEWAY_ID,
                   help=f"comma-separated SenderCompIDs allowed to connect (default {GATEWAY_ID})")
    p.add_argument("--scenario", default="normal", help="simulator scenario of the market (default normal)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    p.add_argument("--syms", default="", help="comma-separated instruments (default: the simulator's ten)")
    p.add_argument("--tp", default="", metavar="HOST:PORT",
                   help="publish the venue's market (quote, trade, book, l3) to this tickerplant and advance it "
                        "in time; without it the books are primed once and stay still")
    p.add_argument("--speed", type=_speed, default=None, metavar="X",
                   help="with --tp: market time at X times real time, or 'max' (default max)")
    p.add_argument("--warmup", type=int, default=0, metavar="SECONDS",
                   help="with --tp: publish the first SECONDS of market time as fast as possible (default 0)")
    p.add_argument("--duration", default="6.5h", help="with --tp: market time to simulate (default 6.5h)")
    p.add_argument("--start", default=None, help="with --tp: market time of the first second (default the simulator's; 'now' for a live stack)")
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="a scenario parameter (repeatable), e.g. -p at=600 -p sym=ESZ6")
    p.add_argument("--workdir", default="var/fix/exchange",
                   help="QuickFIX settings, message store and logs (default var/fix/exchange)")


def _speed(value: str) -> float | None:
    from pretrade.market.feed import parse_speed

    return parse_speed(value)


def _venue(args: argparse.Namespace) -> Venue:
    """The venue the arguments ask for (ValueError on a bad scenario, parameter or instrument)."""
    from pretrade.market.scenarios import parse_params
    from pretrade.market.simulator import DEFAULT_START, Simulation

    syms = [s for s in args.syms.split(",") if s] or None
    if not args.tp:
        return Venue.primed(args.scenario, args.seed, syms)
    sim = Simulation(args.scenario, args.seed, syms, args.duration, start=args.start or DEFAULT_START,
                     **parse_params(args.param, args.scenario))
    return Venue(sim)


def run(args: argparse.Namespace) -> int:
    from pretrade.gateway.process import wait_for_signal

    try:
        venue = _venue(args)
    except ValueError as e:
        log.error("exchange not started: %s", e)
        return 2
    running = start_exchange(Path(args.workdir), args.fix_port, args.host,
                             [x for x in args.members.split(",") if x], venue)
    log.info("exchange %s listening on %s:%d for %s (FIX 4.4); instruments: %s", EXCHANGE_ID, args.host,
             args.fix_port, args.members, ", ".join(venue.insts))
    stop = threading.Event()
    market = None
    if args.tp:
        def _market() -> None:
            try:
                res = run_market(venue, args.tp, args.speed, args.warmup, stop)
                log.info("market simulation finished (%s); the books stay open", res["sent"])
            except (ConnectionError, OSError) as e:
                log.error("market stopped: tickerplant %s: %s; the books stay open", args.tp, e)

        market = threading.Thread(target=_market, name="exchange-market", daemon=True)
        market.start()
    try:
        wait_for_signal()
    finally:
        stop.set()
        if market is not None:
            market.join(timeout=5)
        running.stop()
    return 0
