"""What a book shows the market: a quote on every top-of-book change, and depth snapshots.

Snapshots are sampled on change, at most one per interval: the last state of the book in each
interval that changed it, stamped at the time of that last change. So an as-of join of the book
table is never stale by more than the interval, and a quiet book costs nothing. The simulator and
the L3 replay both use this, so their quote and book tables mean the same thing.
"""

from __future__ import annotations

from pretrade.market.book import OrderBook
from pretrade.schema import BOOK_LEVELS


class Tape:
    """Quote rows (time, bid, ask, bsize, asize) and snapshot rows (time, bids, bsizes, asks, asizes)."""

    def __init__(self, book: OrderBook, interval_ns: int) -> None:
        if interval_ns <= 0:
            raise ValueError("the snapshot interval must be positive")
        self.book, self.interval = book, interval_ns
        self.quotes: list[tuple] = []
        self.snaps: list[tuple] = []
        self.top: tuple = (None, None, 0, 0)
        self.version = book.version
        self.dirty = False
        self.last_change = 0
        self.window_end = 0

    def before(self, t: int) -> None:
        """Call before changing the book at time t: closes the previous interval if it changed."""
        if self.dirty and t >= self.window_end:
            self.snaps.append((self.last_change, *self.book.snapshot(BOOK_LEVELS)))
            self.dirty = False

    def after(self, t: int) -> bool:
        """Call after changing the book at time t; True when the top of book changed."""
        if self.book.version == self.version:
            return False
        self.version = self.book.version
        if not self.dirty:
            self.window_end = (t // self.interval + 1) * self.interval
        self.dirty, self.last_change = True, t
        top = self.book.top()
        if top == self.top:
            return False
        self.top = top
        self.quotes.append((t, *top))
        return True

    def flush(self) -> None:
        """Emit the pending snapshot now (at the end of a block or of the data)."""
        self.before(1 << 62)
