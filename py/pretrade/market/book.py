"""A limit order book for one instrument: price-time priority matching on integer tick prices.

Prices inside the book are integers (multiples of the tick size), so any price scale goes
through exactly; callers convert with `tick_size`. Every change is recorded as an L3 event
(add, modify, delete, trade) and every match as a trade print, so the simulator and a venue
built on this book (the exchange simulator) emit the same market data.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

BUY = 1
SELL = -1

# owners: who placed an order (the simulator tracks its agents with these; anything else is free)
EXTERNAL = 0


@dataclass(frozen=True)
class Fill:
    """One match between an incoming order and a resting one, at the resting order's price."""

    resting_id: int
    resting_owner: int
    price: int
    size: int
    aggressor_side: int


class OrderBook:
    """Price levels of resting orders per side; each level keeps its orders in arrival order.

    `l3` and `trades` collect the events since the caller last drained them:
    l3 rows are (time, event, orderid, side, price_ticks, size) and trade rows are
    (time, price_ticks, size, aggressor_side).
    """

    def __init__(self, tick_size: float = 0.01, lot_size: int = 1) -> None:
        if tick_size <= 0 or lot_size <= 0:
            raise ValueError("tick_size and lot_size must be positive")
        self.tick_size = tick_size
        self.lot_size = lot_size
        self.levels: dict[int, dict[int, dict[int, int]]] = {BUY: {}, SELL: {}}
        self.depth: dict[int, dict[int, int]] = {BUY: {}, SELL: {}}  # side -> price -> total size
        self._bid_prices: list[int] = []  # ascending; best bid is last
        self._ask_prices: list[int] = []  # ascending; best ask is first
        self.orders: dict[int, list[int]] = {}  # orderid -> [side, price, size, owner]
        self.l3: list[tuple] = []
        self.trades: list[tuple] = []
        self.next_id = 1
        self.version = 0  # counts changes, so a watcher knows whether anything happened

    # ---- reading ----------------------------------------------------------------------------
    def best_bid(self) -> int | None:
        """Best bid in ticks, or None when the bid side is empty."""
        return self._bid_prices[-1] if self._bid_prices else None

    def best_ask(self) -> int | None:
        """Best ask in ticks, or None when the ask side is empty."""
        return self._ask_prices[0] if self._ask_prices else None

    def top(self) -> tuple[int | None, int | None, int, int]:
        """(best bid, best ask, bid size, ask size), sizes 0 where a side is empty."""
        b = self._bid_prices[-1] if self._bid_prices else None
        a = self._ask_prices[0] if self._ask_prices else None
        return (b, a, self.depth[BUY][b] if b is not None else 0,
                self.depth[SELL][a] if a is not None else 0)

    def snapshot(self, n: int = 10) -> tuple[list[int], list[int], list[int], list[int]]:
        """The best `n` levels a side: (bid prices, bid sizes, ask prices, ask sizes)."""
        bp = self._bid_prices[-1:-n - 1:-1]
        ap = self._ask_prices[:n]
        bd, ad = self.depth[BUY], self.depth[SELL]
        return bp, [bd[p] for p in bp], ap, [ad[p] for p in ap]

    # ---- changing ---------------------------------------------------------------------------
    def submit(self, t: int, side: int, size: int, price: int | None = None,
               owner: int = EXTERNAL, orderid: int | None = None) -> tuple[int, list[Fill]]:
        """Match an order against the opposite side, rest any limit remainder.

        `price` None is a market order (its remainder is dropped). Returns the order id and the
        fills in match order. The id is allocated here unless given (replay keeps feed ids).
        """
        if side not in (BUY, SELL):
            raise ValueError(f"side must be {BUY} (buy) or {SELL} (sell), not {side!r}")
        if size <= 0 or size % self.lot_size:
            raise ValueError(f"size {size} must be a positive multiple of the lot size {self.lot_size}")
        if orderid is None:
            orderid = self.next_id
            self.next_id += 1
        elif orderid >= self.next_id:
            self.next_id = orderid + 1
        fills = self._match(t, side, size, price)
        left = size - sum(f.size for f in fills)
        if left and price is not None:
            self._rest(t, orderid, side, price, left, owner)
        return orderid, fills

    def add(self, t: int, orderid: int, side: int, price: int, size: int, owner: int = EXTERNAL) -> None:
        """Rest an order without matching it (replay of an L3 feed, where the venue matched)."""
        if orderid in self.orders:
            raise KeyError(f"order {orderid} already rests in the book")
        if orderid >= self.next_id:
            self.next_id = orderid + 1
        self._rest(t, orderid, side, price, size, owner)

    def cancel(self, t: int, orderid: int) -> int:
        """Remove a resting order; returns the size removed (0 if it is not in the book)."""
        o = self.orders.pop(orderid, None)
        if o is None:
            return 0
        side, price, size, _ = o
        self._unlink(side, price, orderid, size)
        self.l3.append((t, "delete", orderid, side, price, size))
        self.version += 1
        return size

    def modify(self, t: int, orderid: int, size: int) -> bool:
        """Change a resting order's size: a decrease keeps its place, an increase goes to the back."""
        o = self.orders.get(orderid)
        if o is None:
            return False
        if size <= 0:
            self.cancel(t, orderid)
            return True
        side, price, old, _ = o
        level = self.levels[side][price]
        if size > old:
            del level[orderid]
        level[orderid] = size
        o[2] = size
        self.depth[side][price] += size - old
        self.l3.append((t, "modify", orderid, side, price, size))
        self.version += 1
        return True

    def execute(self, t: int, orderid: int, size: int, aggressor_side: int | None = None) -> int:
        """Fill `size` of a resting order (replay of a trade event); returns the size filled."""
        o = self.orders.get(orderid)
        if o is None:
            return 0
        side, price, old, _ = o
        done = min(size, old)
        self._fill(t, orderid, o, done, -side if aggressor_side is None else aggressor_side)
        return done

    # ---- internals --------------------------------------------------------------------------
    def _rest(self, t: int, orderid: int, side: int, price: int, size: int, owner: int) -> None:
        levels = self.levels[side]
        level = levels.get(price)
        if level is None:
            level = levels[price] = {}
            self.depth[side][price] = 0
            bisect.insort(self._bid_prices if side == BUY else self._ask_prices, price)
        level[orderid] = size
        self.depth[side][price] += size
        self.orders[orderid] = [side, price, size, owner]
        self.l3.append((t, "add", orderid, side, price, size))
        self.version += 1

    def _unlink(self, side: int, price: int, orderid: int, size: int) -> None:
        level = self.levels[side][price]
        del level[orderid]
        self.depth[side][price] -= size
        if not level:
            del self.levels[side][price]
            del self.depth[side][price]
            prices = self._bid_prices if side == BUY else self._ask_prices
            del prices[bisect.bisect_left(prices, price)]

    def _fill(self, t: int, orderid: int, o: list[int], size: int, aggressor: int) -> Fill:
        side, price, old, owner = o
        self.l3.append((t, "trade", orderid, side, price, size))
        self.version += 1
        self.trades.append((t, price, size, aggressor))
        if size >= old:
            del self.orders[orderid]
            self._unlink(side, price, orderid, old)
        else:
            o[2] = old - size
            self.levels[side][price][orderid] = old - size
            self.depth[side][price] -= size
        return Fill(orderid, owner, price, size, aggressor)

    def _match(self, t: int, side: int, size: int, limit: int | None) -> list[Fill]:
        fills: list[Fill] = []
        opp = SELL if side == BUY else BUY
        prices = self._ask_prices if side == BUY else self._bid_prices
        levels = self.levels[opp]
        while size and prices:
            best = prices[0] if side == BUY else prices[-1]
            if limit is not None and (best > limit if side == BUY else best < limit):
                break
            level = levels[best]
            while size and best in levels:
                oid, rest = next(iter(level.items()))
                take = min(size, rest)
                fills.append(self._fill(t, oid, self.orders[oid], take, side))
                size -= take
        return fills
