"""The exchange simulator: orders match, rest and move the simulator's book; cancels and replaces
work; bad orders are rejected; the same over a real FIX session with `pretrade exchange`'s app."""

from __future__ import annotations

import pytest

from conftest import free_port
from pretrade.gateway import messages as m
from pretrade.gateway.exchange import Venue

pytestmark = pytest.mark.fix


@pytest.fixture(scope="module")
def venue():
    return Venue.primed(seed=2, syms=["ESZ6", "ACME"])


def book(venue, sym):
    return next(s.book for s in venue.sim.sims if s.ins.sym == sym)


def types(out):
    return [(t, f.get(m.EXEC_TYPE), f.get(m.ORD_STATUS)) for t, f in out]


def test_marketable_order_fills_and_moves_the_book(venue):
    b = book(venue, "ESZ6")
    ask, _, _, ask_size = b.best_ask(), None, None, b.top()[3]
    out = venue.new("m1", "ESZ6", "buy", ask_size, None)
    fills = [f for t, f in out if f.get(m.EXEC_TYPE) == "F"]
    assert out[0][1][m.EXEC_TYPE] == "0" and fills
    assert sum(int(f[m.LAST_QTY]) for f in fills) == ask_size
    assert fills[-1][m.ORD_STATUS] == "2" and fills[-1][m.CUM_QTY] == ask_size
    assert b.best_ask() > ask  # the level was taken out


def test_limit_order_rests_then_cancel_removes_it(venue):
    b = book(venue, "ESZ6")
    px = (b.best_bid() - 3) * b.tick_size
    out = venue.new("r1", "ESZ6", "buy", 4, px)
    assert types(out) == [("8", "0", "0")]
    oid = venue.orders["r1"].book_id
    assert oid in b.orders
    out = venue.cancel("r2", "r1")
    assert types(out) == [("8", "4", "4")] and out[0][1][m.ORIG_CL_ORD_ID] == "r1"
    assert oid not in b.orders
    again = venue.cancel("r3", "r2")
    assert again[0][0] == m.CANCEL_REJECT and "already cancelled" in again[0][1][m.TEXT]


def test_replace_moves_the_order_and_can_fill(venue):
    b = book(venue, "ACME")
    px = (b.best_bid() - 5) * b.tick_size
    venue.new("p1", "ACME", "buy", 200, round(px, 2))
    out = venue.replace("p2", "p1", 300, round(b.best_ask() * b.tick_size, 2))  # now marketable
    assert out[0][1][m.EXEC_TYPE] == "5" and out[0][1][m.ORDER_QTY] == 300
    assert any(f.get(m.EXEC_TYPE) == "F" for _, f in out[1:])
    assert venue.replace("p3", "nope", 100, 1.0)[0][0] == m.CANCEL_REJECT


def test_bad_orders_are_rejected_with_a_reason(venue):
    assert venue.new("u1", "NOPE", "buy", 1, 1.0)[0][1][m.ORD_REJ_REASON] == 1
    bad_lot = venue.new("u2", "ACME", "buy", 150, 100.0)[0][1]
    assert bad_lot[m.ORD_STATUS] == "8" and "lot size" in bad_lot[m.TEXT]
    bad_tick = venue.new("u3", "ESZ6", "buy", 1, 5000.1)[0][1]
    assert "tick" in bad_tick[m.TEXT]
    venue.new("u4", "ESZ6", "buy", 1, 4000.0)
    assert venue.new("u4", "ESZ6", "buy", 1, 4000.0)[0][1][m.ORD_REJ_REASON] == 6


def test_over_fix(tmp_path, venue):
    pytest.importorskip("quickfix", reason="QuickFIX is not installed: pip install -e '.[fix]'")
    from pretrade.gateway.exchange import start_exchange
    from pretrade.gateway.fixclient import FixInitiator

    port = free_port()
    exchange = start_exchange(tmp_path / "ex", port, members=["MEMBER2"], venue=venue)
    c = FixInitiator(tmp_path / "c", port, "MEMBER2", "EXCH")
    try:
        assert c.wait_logon(10)
        c.send(m.NEW_ORDER, {m.CL_ORD_ID: "f1", m.SYMBOL: "ESZ6", m.SIDE: "2", m.ORDER_QTY: 2,
                             m.ORD_TYPE: "1", m.TRANSACT_TIME: m.utc_now()})
        ack, fill = c.next(), c.next()
        assert (ack[m.EXEC_TYPE], fill[m.EXEC_TYPE], fill[m.ORD_STATUS]) == ("0", "F", "2")
        c.send(m.CANCEL, {m.CL_ORD_ID: "f2", m.ORIG_CL_ORD_ID: "f1", m.SYMBOL: "ESZ6", m.SIDE: "2",
                          m.ORDER_QTY: 2, m.TRANSACT_TIME: m.utc_now()})
        rej = c.next()
        assert rej[m.MSG_TYPE] == m.CANCEL_REJECT and rej[m.CXL_REJ_RESPONSE_TO] == "1"
    finally:  # the acceptor first: it logs the session out
        exchange.stop()
        c.stop()
