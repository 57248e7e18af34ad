"""The firm's strategies in the flash-crash story, as FIX order decisions (no I/O here).

`Seller` is the story's aggressive seller: it works a parent order in 100-lot market clips at a
steady pace of market time, then, chasing the price once it has fallen 1.5%, sends one 200-lot
market order. `MarketMaker`
keeps a bid and an ask at the touch, re-quoting every second of market time, within an inventory
limit of its own. `Ledger` books the fills of every strategy: position, cash, P&L marked to a
price, and the peak exposure seen.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NewOrder:
    """An order a strategy wants sent: price None is a market order."""

    clordid: str
    strategy: str
    side: str
    qty: int
    price: float | None
    account: str = ""  # FIX Account (1); empty: the session's account


@dataclass(frozen=True)
class Cancel:
    """A cancel of a resting order of the strategy."""

    clordid: str
    orig: str
    strategy: str


@dataclass
class Seller:
    """Clips of `clip` lots every `interval` s from `start` (s after the crash onset) until
    `parent` lots have been sent; then, chasing the price, one `chase`-lot market order once the
    mid is `chase_drop` below the mid when it started."""

    parent: int = 800
    clip: int = 100
    interval: float = 6.0
    start: float = -15.0
    chase: int = 200
    chase_drop: float = 0.015
    strategy: str = "algo"
    account: str = "CLIENT1-EXEC"  # the execution desk's own account: its size habits are its own
    sent: int = 0
    chased: bool = False
    next_clip: float | None = None
    arrival: float = math.nan
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def step(self, t: float, mid: float) -> list[NewOrder]:
        """Orders due at `t` (seconds after the crash onset, market time) with the mid at `mid`."""
        out = []
        if self.next_clip is None:
            self.next_clip = self.start
        if t >= self.start and math.isnan(self.arrival):
            self.arrival = mid
        if t >= self.next_clip and self.sent < self.parent:
            qty = min(self.clip, self.parent - self.sent)
            out.append(NewOrder(f"SELL-{next(self._ids)}", self.strategy, "sell", qty, None, self.account))
            self.sent += qty
            self.next_clip += self.interval
            if self.next_clip <= t:  # late (a stalled clock): no burst of catch-up clips
                self.next_clip = t + self.interval
        if not self.chased and mid <= self.arrival * (1 - self.chase_drop):
            self.chased = True
            out.append(NewOrder(f"CHASE-{next(self._ids)}", self.strategy, "sell", self.chase, None, self.account))
        return out


@dataclass
class MarketMaker:
    """A bid and an ask of `size` lots at the touch from `start`, checked every `every` s and
    re-quoted (cancel, new) when the touch has moved; no bid when long `max_inventory` or more,
    no ask when that short; after a rejection it waits `pause` seconds before quoting again."""

    size: int = 5
    every: float = 1.0
    start: float = -15.0
    max_inventory: int = 40
    tick: float = 0.25
    strategy: str = "mm"
    pause: float = 5.0
    live: dict[str, tuple[str, float]] = field(default_factory=dict)  # side -> (resting clordid, price)
    last: float | None = None
    paused_until: float = -math.inf
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def step(self, t: float, bid: float, ask: float, position: int) -> list[NewOrder | Cancel]:
        """Cancels and new quotes due at `t` given the touch and the strategy's position."""
        if t < self.start or t < self.paused_until or (self.last is not None and t - self.last < self.every):
            return []
        if not (math.isfinite(bid) and math.isfinite(ask)) or ask <= bid:
            return []
        self.last = t
        out: list[NewOrder | Cancel] = []
        for side, touch, ok in (("buy", bid, position < self.max_inventory),
                                ("sell", ask, position > -self.max_inventory)):
            price = round(round(touch / self.tick) * self.tick, 10)
            live = self.live.get(side)
            if live is not None and ok and live[1] == price:
                continue  # still at the touch
            if live is not None:
                out.append(Cancel(f"MMX-{next(self._ids)}", live[0], self.strategy))
                del self.live[side]
            if ok:
                o = NewOrder(f"MM-{next(self._ids)}", self.strategy, side, self.size, price)
                self.live[side] = (o.clordid, price)
                out.append(o)
        return out

    def done(self, clordid: str) -> None:
        """A quote that no longer rests (filled, rejected or cancelled)."""
        self.live = {s: v for s, v in self.live.items() if v[0] != clordid}

    def rejected(self, clordid: str, t: float) -> None:
        """A quote of ours was rejected at `t`: stop quoting for `pause` seconds."""
        if any(v[0] == clordid for v in self.live.values()):
            self.paused_until = t + self.pause
        self.done(clordid)


@dataclass
class Ledger:
    """Fills per strategy: position (lots), cash, and the firm's peak exposure."""

    position: dict[str, int] = field(default_factory=dict)
    cash: dict[str, float] = field(default_factory=dict)
    peak_exposure: float = 0.0
    peak_position: int = 0

    def fill(self, strategy: str, side: str, qty: int, price: float, mark: float) -> None:
        """Book one fill; exposure is |firm position| x `mark` (the mid when it happened)."""
        sign = 1 if side == "buy" else -1
        self.position[strategy] = self.position.get(strategy, 0) + sign * qty
        self.cash[strategy] = self.cash.get(strategy, 0.0) - sign * qty * price
        firm = sum(self.position.values())
        self.peak_position = max(self.peak_position, abs(firm))
        if math.isfinite(mark):
            self.peak_exposure = max(self.peak_exposure, abs(firm) * mark)

    def pnl(self, mark: float) -> dict[str, float]:
        """P&L per strategy marked to `mark`."""
        return {s: self.cash.get(s, 0.0) + p * mark for s, p in self.position.items()}
