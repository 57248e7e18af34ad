"""Matching engine: price-time priority, partial fills, modify/cancel rules, L3 events and prints."""

from __future__ import annotations

import pytest

from pretrade.market.book import BUY, SELL, OrderBook


def test_price_then_time_priority() -> None:
    b = OrderBook(0.01, 1)
    first, _ = b.submit(1, BUY, 10, 100)
    second, _ = b.submit(2, BUY, 10, 100)
    better, _ = b.submit(3, BUY, 5, 101)
    _, fills = b.submit(4, SELL, 12, None)
    assert [(f.resting_id, f.price, f.size) for f in fills] == [(better, 101, 5), (first, 100, 7)]
    assert b.orders[first][2] == 3 and b.orders[second][2] == 10
    assert b.top() == (100, None, 13, 0)
    assert all(f.aggressor_side == SELL for f in fills)


def test_limit_remainder_rests_and_market_remainder_is_dropped() -> None:
    b = OrderBook(0.25, 1)
    b.submit(1, SELL, 5, 400)
    oid, fills = b.submit(2, BUY, 8, 401)
    assert sum(f.size for f in fills) == 5
    assert b.orders[oid][:3] == [BUY, 401, 3]  # the rest of the limit order rests at its price
    _, fills = b.submit(3, SELL, 100, None)
    assert sum(f.size for f in fills) == 3 and b.best_bid() is None and not b.orders


def test_limit_does_not_trade_through_its_price() -> None:
    b = OrderBook()
    b.submit(1, SELL, 5, 102)
    _, fills = b.submit(2, BUY, 5, 101)
    assert fills == [] and b.top() == (101, 102, 5, 5)


def test_modify_down_keeps_priority_modify_up_loses_it() -> None:
    b = OrderBook()
    a, _ = b.submit(1, BUY, 10, 100)
    c, _ = b.submit(2, BUY, 10, 100)
    b.modify(3, a, 4)
    _, fills = b.submit(4, SELL, 4, None)
    assert fills[0].resting_id == a
    b.submit(5, BUY, 10, 100)  # a third order, so c is no longer alone
    b.modify(6, c, 20)           # size up: c goes to the back of the level
    _, fills = b.submit(7, SELL, 5, None)
    assert fills[0].resting_id != c
    assert b.depth[BUY][100] == 25


def test_cancel_and_events() -> None:
    b = OrderBook()
    a, _ = b.submit(10, BUY, 10, 100)
    assert b.cancel(11, a) == 10 and b.cancel(12, a) == 0
    assert b.best_bid() is None and not b.depth[BUY]
    s, _ = b.submit(13, SELL, 3, 105)
    b.submit(14, BUY, 2, 105)
    assert [e[1] for e in b.l3] == ["add", "delete", "add", "trade"]
    assert b.l3[-1] == (14, "trade", s, SELL, 105, 2)
    assert b.trades == [(14, 105, 2, BUY)]


def test_lot_size_and_side_are_checked() -> None:
    b = OrderBook(0.01, 100)
    with pytest.raises(ValueError, match="lot size"):
        b.submit(1, BUY, 150, 100)
    with pytest.raises(ValueError, match="side"):
        b.submit(1, 0, 100, 100)


def test_snapshot_levels_best_first() -> None:
    b = OrderBook()
    for k in range(12):
        b.submit(k, BUY, 1 + k, 100 - k)
        b.submit(k, SELL, 1 + k, 101 + k)
    bp, bs, ap, as_ = b.snapshot(10)
    assert bp == list(range(100, 90, -1)) and bs == list(range(1, 11))
    assert ap == list(range(101, 111)) and as_ == list(range(1, 11))


def test_execute_replays_a_trade_on_a_resting_order() -> None:
    b = OrderBook()
    a, _ = b.submit(1, SELL, 10, 200)
    assert b.execute(2, a, 4) == 4 and b.orders[a][2] == 6
    assert b.trades[-1] == (2, 200, 4, BUY)
    assert b.execute(3, a, 10) == 6 and a not in b.orders
    assert b.execute(4, 999, 1) == 0


def test_tape_quotes_every_top_change_and_samples_the_last_state_per_interval() -> None:
    from pretrade.market.tape import Tape

    b = OrderBook()
    tape = Tape(b, 100)
    for t, price in ((50, 100), (60, 101), (250, 102)):
        tape.before(t)
        b.submit(t, BUY, 1, price)
        assert tape.after(t)
    tape.before(300)
    b.submit(300, BUY, 1, 90)  # below the top: no quote, but the book changed
    assert not tape.after(300)
    tape.before(301)
    assert not tape.after(301)  # nothing happened
    tape.flush()
    assert [q[:2] for q in tape.quotes] == [(50, 100), (60, 101), (250, 102)]
    assert [(s[0], s[1][0], len(s[1])) for s in tape.snaps] == [(60, 101, 2), (250, 102, 3), (300, 102, 4)]
