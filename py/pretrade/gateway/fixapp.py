"""`pretrade gateway`: the FIX gateway between the firm's clients and the exchange.

An acceptor for clients (SenderCompID PRETRADE; clients and their Logon passwords from
config/fix_clients.toml) and an initiator to the exchange (EXCH). Every NewOrderSingle and
OrderCancelReplaceRequest runs the pre-trade checks (gate.Gate) against limits that arrive by
subscription to the tickerplant (limits_table.LimitsTable); cancels always pass. A denial is an
ExecutionReport OrdStatus=8 with OrdRejReason and a Text naming the rule, limit and value (a
denied replace: OrderCancelReject with that Text). Forwarded orders carry tag 8011 with the
instrument's risk state when it is not Normal. Decisions, order and execution events go to the
tickerplant. Malformed messages get QuickFIX's session-level Reject (35=3) or a
BusinessMessageReject (35=j); the session and the process stay up.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pretrade.gateway import messages as m
from pretrade.gateway.gate import REJ_REASON, Gate
from pretrade.gateway.process import TpPublisher
from pretrade.gateway.sessions import (
    EXCHANGE_ID,
    GATEWAY_ID,
    FixClient,
    application,
)
from pretrade.risk.checks import Decision, Order

log = logging.getLogger(__name__)

_HEADER = {8, 9, 10, 34, 35, 49, 52, 56, 43, 97, 122, 115, 128}


@dataclass
class Route:
    """A client order as forwarded: who sent it, its ClOrdID there, and its terms."""

    client: str
    clordid: str
    account: str
    strategy: str
    sym: str
    side: str
    qty: int
    price: float


class RecentInputs:
    """The fat-finger model's input rows of the last `size` scored decisions, by ClOrdID, so a
    person's later mark of a decision can carry what the model saw (thread-safe)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._rows: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, clordid: str, row: Any) -> None:
        with self._lock:
            self._rows[clordid] = row
            self._rows.move_to_end(clordid)
            if len(self._rows) > self.size:
                self._rows.popitem(last=False)

    def get(self, clordid: str) -> Any | None:
        with self._lock:
            return self._rows.get(clordid)

    def __len__(self) -> int:
        return len(self._rows)


class Gateway:
    """The order path: client messages in, checks, exchange messages out, reports back."""

    def __init__(self, gate: Gate, clients: dict[str, FixClient], publisher: TpPublisher,
                 sender: str = GATEWAY_ID, exchange: str = EXCHANGE_ID) -> None:
        self.gate, self.clients, self.publisher = gate, clients, publisher
        self.sender, self.exchange = sender, exchange
        self.routes: dict[str, Route] = {}               # gateway ClOrdID -> route
        self.by_client: dict[tuple[str, str], str] = {}  # (client, ClOrdID) -> gateway ClOrdID
        self.exchange_up = threading.Event()
        self.inputs = RecentInputs()  # ClOrdID -> the fat-finger input row of its decision
        self._ids = itertools.count(1)
        self._start = time.strftime("%H%M%S")
        self._lock = threading.Lock()
        self.client_app = self._client_app()
        self.exchange_app = self._exchange_app()

    # ---- QuickFIX applications ----------------------------------------------------------------
    def _client_app(self):
        gw = self

        def from_admin(msg, sid):
            if m.msg_type(msg) == m.LOGON:
                gw.logon(sid.getTargetCompID().getValue(), m.get(msg, m.PASSWORD))

        return application(
            on_logon=lambda sid: log.info("client %s logged on", sid.getTargetCompID().getValue()),
            on_logout=lambda sid: log.info("client %s logged out", sid.getTargetCompID().getValue()),
            from_admin=from_admin,
            from_app=lambda msg, sid: gw.from_client(msg, sid.getTargetCompID().getValue()))

    def _exchange_app(self):
        gw = self

        def on_logon(sid):
            log.info("exchange session %s logged on", sid)
            gw.exchange_up.set()

        def on_logout(sid):
            log.warning("exchange session %s logged out: new orders are rejected until it is back", sid)
            gw.exchange_up.clear()

        return application(on_logon=on_logon, on_logout=on_logout,
                           from_app=lambda msg, sid: gw.from_exchange(msg))

    # ---- logon --------------------------------------------------------------------------------
    def logon(self, comp_id: str, password: str | None) -> None:
        """Refuse a Logon (quickfix.RejectLogon) from an unknown client or with a wrong password."""
        import quickfix as fix

        c = self.clients.get(comp_id)
        if c is None or not c.accepts(password or ""):
            why = "unknown client" if c is None else "wrong or missing password (tag 554)"
            log.warning("logon of %s refused: %s", comp_id, why)
            raise fix.RejectLogon(f"logon refused: {why}")

    # ---- client -> gateway --------------------------------------------------------------------
    def from_client(self, msg, client: str) -> None:
        """A client's application message; raises quickfix.UnsupportedMessageType for types the
        gateway does not take (QuickFIX answers with a BusinessMessageReject)."""
        import quickfix as fix

        t = m.msg_type(msg)
        if t == m.NEW_ORDER:
            self.new_order(m.parse_fields(msg), client)
        elif t == m.CANCEL:
            self.cancel(m.parse_fields(msg), client)
        elif t == m.REPLACE:
            self.replace(m.parse_fields(msg), client)
        else:
            raise fix.UnsupportedMessageType()

    def _order(self, f: dict[int, str], client: str, kind: str) -> Order:
        market = f.get(m.ORD_TYPE) == "1"
        price = math.nan if market else m.to_float(f.get(m.PRICE))
        qty = float(f.get(m.ORDER_QTY, "0") or 0)
        account = f.get(m.ACCOUNT) or (self.clients[client].account if client in self.clients else client)
        return Order(f.get(m.SYMBOL, ""), m.SIDES.get(f.get(m.SIDE, ""), f.get(m.SIDE, "")),
                     int(qty) if qty.is_integer() else -1, price, f.get(m.STRATEGY, ""), account, kind)

    def new_order(self, f: dict[int, str], client: str) -> None:
        """Check a NewOrderSingle; forward it to the exchange, or reject it to the client."""
        cl = f.get(m.CL_ORD_ID, "")
        o = self._order(f, client, "new")
        if f.get(m.ORD_TYPE) not in ("1", "2") or (f.get(m.ORD_TYPE) == "2" and m.PRICE not in f):
            v = None
            d = Decision(False, "INVALID_ORDER", f"INVALID_ORDER: OrdType {f.get(m.ORD_TYPE)} "
                         "not supported or limit order without Price (the gateway takes 1 market, 2 limit)")
        else:
            v = self.gate.check(o, client)
            d = v.decision
        if d.ok and not self.exchange_up.is_set():
            d = Decision(False, "EXCHANGE_UNAVAILABLE", "EXCHANGE_UNAVAILABLE: the exchange session is not logged on")
        if not d.ok:
            self._decision(o, cl, d, v)
            self._to_client(client, m.EXEC_REPORT, {
                m.ORDER_ID: "NONE", m.CL_ORD_ID: cl, m.EXEC_ID: self._gid("R"), m.EXEC_TYPE: "8",
                m.ORD_STATUS: "8", m.SYMBOL: o.sym, m.SIDE: f.get(m.SIDE), m.ORDER_QTY: f.get(m.ORDER_QTY),
                m.PRICE: f.get(m.PRICE), m.LEAVES_QTY: 0, m.CUM_QTY: 0, m.AVG_PX: 0,
                m.ORD_REJ_REASON: REJ_REASON.get(d.code, 99), m.TEXT: d.text, m.TRANSACT_TIME: m.utc_now()})
            self._event("order", o, cl, "reject", d.text)
            return
        gid = self._gid("G")
        with self._lock:
            self.routes[gid] = Route(client, cl, o.account, o.strategy, o.sym, o.side, o.qty, o.price)
            self.by_client[(client, cl)] = gid
        out = {k: v for k, v in f.items() if k not in _HEADER and k != m.RISK_STATE}
        out[m.CL_ORD_ID] = gid
        out[m.ACCOUNT] = o.account
        if v is not None and v.state:
            out[m.RISK_STATE] = v.state
        self._to_exchange(m.NEW_ORDER, out)
        self._decision(o, cl, d, self.gate.advise(o, v))  # after the forward: advice is off the order's path
        self._event("order", o, cl, "new", v.state or "")

    def cancel(self, f: dict[int, str], client: str) -> None:
        """Forward an OrderCancelRequest (cancels always pass); an unknown order is answered
        with an OrderCancelReject."""
        cl, orig = f.get(m.CL_ORD_ID, ""), f.get(m.ORIG_CL_ORD_ID, "")
        o = self._order(f, client, "cancel")
        self._decision(o, cl, Decision(True, "PASS", "cancel: always passes"), None)
        self._forward_amend(m.CANCEL, f, client, cl, orig, o)

    def replace(self, f: dict[int, str], client: str) -> None:
        """Check an OrderCancelReplaceRequest's new terms; forward it, or answer an
        OrderCancelReject whose Text names the rule."""
        cl, orig = f.get(m.CL_ORD_ID, ""), f.get(m.ORIG_CL_ORD_ID, "")
        o = self._order(f, client, "replace")
        v = self.gate.check(o, client)
        d = v.decision
        if not d.ok:
            self._decision(o, cl, d, v)
            self._to_client(client, m.CANCEL_REJECT, {
                m.ORDER_ID: "NONE", m.CL_ORD_ID: cl, m.ORIG_CL_ORD_ID: orig, m.ORD_STATUS: "8",
                m.CXL_REJ_RESPONSE_TO: "2", m.CXL_REJ_REASON: 99, m.TEXT: d.text})
            self._event("order", o, cl, "reject", d.text)
            return
        self._forward_amend(m.REPLACE, f, client, cl, orig, o, v.state)
        self._decision(o, cl, d, self.gate.advise(o, v))

    def _forward_amend(self, t: str, f: dict[int, str], client: str, cl: str, orig: str, o: Order,
                       state: str | None = None) -> None:
        with self._lock:
            gorig = self.by_client.get((client, orig))
            route = self.routes.get(gorig) if gorig else None
            if route is not None:
                gid = self._gid("G")
                qty = o.qty if t == m.REPLACE else route.qty
                price = o.price if t == m.REPLACE else route.price
                self.routes[gid] = Route(client, cl, route.account, route.strategy, route.sym, route.side, qty, price)
                self.by_client[(client, cl)] = gid
        if route is None:
            self._to_client(client, m.CANCEL_REJECT, {
                m.ORDER_ID: "NONE", m.CL_ORD_ID: cl, m.ORIG_CL_ORD_ID: orig, m.ORD_STATUS: "8",
                m.CXL_REJ_RESPONSE_TO: "1" if t == m.CANCEL else "2", m.CXL_REJ_REASON: 1,
                m.TEXT: f"unknown order {orig}"})
            return
        out = {k: v for k, v in f.items() if k not in _HEADER and k != m.RISK_STATE}
        out[m.CL_ORD_ID], out[m.ORIG_CL_ORD_ID] = gid, gorig
        if state:
            out[m.RISK_STATE] = state
        self._to_exchange(t, out)
        self._event("order", o, cl, "cancel" if t == m.CANCEL else "replace", "")

    # ---- exchange -> gateway ------------------------------------------------------------------
    def from_exchange(self, msg) -> None:
        """An ExecutionReport or OrderCancelReject from the exchange, passed back to its client
        with the client's ClOrdIDs; fills move the position."""
        f = m.parse_fields(msg)
        t = m.msg_type(msg)
        with self._lock:
            route = self.routes.get(f.get(m.CL_ORD_ID, ""))
            orig = self.routes.get(f.get(m.ORIG_CL_ORD_ID, ""))
        if route is None:
            if not (t == m.EXEC_REPORT and f.get(m.EXEC_TYPE) == "F" and f.get(m.SIDE) in m.SIDES and f.get(m.SYMBOL)):
                log.error("exchange sent %s for unknown ClOrdID %s: dropped", t, f.get(m.CL_ORD_ID))
                return
            # a fill of an order routed before this process started: the firm's position moves all
            # the same (and the fill is recorded); there is no client route to pass it back on
            route = Route("", f.get(m.CL_ORD_ID, ""), f.get(m.ACCOUNT, ""), f.get(m.STRATEGY, ""), f[m.SYMBOL],
                          m.SIDES[f[m.SIDE]], 0, math.nan)
            log.warning("fill %s of %s %s for ClOrdID %s, routed before this gateway started: position "
                        "moved and recorded, not passed to a client", f.get(m.EXEC_ID), route.side, route.sym,
                        route.clordid)
        f[m.CL_ORD_ID] = route.clordid
        if orig is not None:
            f[m.ORIG_CL_ORD_ID] = orig.clordid
        if t == m.EXEC_REPORT and f.get(m.EXEC_TYPE) == "F":
            self.gate.on_fill(route.sym, route.side, int(float(f.get(m.LAST_QTY, "0"))), f.get(m.EXEC_ID, ""))
        if route.client:
            self._to_client(route.client, t, {k: v for k, v in f.items() if k not in _HEADER})
        if t == m.EXEC_REPORT:
            self.publisher.put("execution", {
                "sym": route.sym, "execid": f.get(m.EXEC_ID, ""), "orderid": f.get(m.ORDER_ID, ""),
                "clordid": route.clordid, "account": route.account, "strategy": route.strategy,
                "side": route.side, "qty": int(float(f.get(m.LAST_QTY) or f.get(m.ORDER_QTY) or 0)),
                "price": float(f.get(m.LAST_PX) or f.get(m.PRICE) or "nan"),
                "ordtype": "market" if f.get(m.ORD_TYPE) == "1" else "limit",
                "event": _EXEC_EVENT.get(f.get(m.EXEC_TYPE, ""), f.get(m.EXEC_TYPE, "")),
                "reason": f.get(m.TEXT, "")})

    # ---- plumbing -----------------------------------------------------------------------------
    def _gid(self, prefix: str) -> str:
        return f"{prefix}{self._start}-{next(self._ids)}"

    def _to_client(self, client: str, t: str, fields: dict[int, Any]) -> None:
        import quickfix as fix

        if not fix.Session.sendToTarget(m.build(t, fields), self.sender, client):
            log.error("could not send %s to client %s (not logged on?)", t, client)

    def _to_exchange(self, t: str, fields: dict[int, Any]) -> None:
        import quickfix as fix

        fix.Session.sendToTarget(m.build(t, fields), self.sender, self.exchange)

    def _decision(self, o: Order, cl: str, d: Decision, v) -> None:
        limits = v.limits if v is not None else "none"
        row = {"sym": o.sym, "orderid": "", "clordid": cl, "account": o.account, "strategy": o.strategy,
               "side": o.side, "qty": o.qty, "price": o.price, "rule": d.code, "limit": d.limit,
               "value": d.value, "outcome": f"{'pass' if d.ok else 'reject'}/{limits}",
               "latencyNs": v.latency_ns if v is not None else 0, "text": d.text,
               "slippageBps": v.slippage_bps if v is not None and d.ok else math.nan,
               "algo": v.algo if v is not None and d.ok else ""}
        self.publisher.put("decision", row)
        if v is not None and v.inputs is not None:
            self.inputs.put(cl, v.inputs)
        if v is not None and v.shadow is not None:
            s = v.shadow
            self.publisher.put("decision", {**row, "rule": s.code, "limit": s.limit, "value": s.value,
                                            "outcome": f"shadow-{'pass' if s.ok else 'reject'}/dynamic",
                                            "text": s.text})
        if v is not None and v.model_call is not None:  # a candidate/shadow model's own call
            c = v.model_call
            self.publisher.put("decision", {**row, "rule": c.code, "limit": c.limit, "value": c.value,
                                            "outcome": f"shadow-{'pass' if c.ok else 'reject'}/model",
                                            "text": c.text, "slippageBps": math.nan, "algo": ""})
        if not d.ok:  # the decision row is the record; the log line is for debugging
            log.debug("rejected %s %s from %s: %s", o.kind, cl, o.account, d.text)

    def _event(self, table: str, o: Order, cl: str, event: str, reason: str) -> None:
        self.publisher.put(table, {"sym": o.sym, "orderid": "", "clordid": cl, "account": o.account,
                                   "strategy": o.strategy, "side": o.side, "qty": o.qty, "price": o.price,
                                   "ordtype": "market" if o.price != o.price else "limit",
                                   "event": event, "reason": reason})


_EXEC_EVENT = {"0": "ack", "4": "cancelled", "5": "replaced", "8": "rejected", "F": "fill", "C": "expired"}
