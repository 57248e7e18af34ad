"""The gateway's in-process limits table, fed by its tickerplant subscription; fails closed.

`LimitsTable.on_update(table, frame)` takes the subscribed tables: `limits` (into a LimitBook:
newer seq wins), `heartbeat` (the risk engine's liveness), `quote` (reference prices) and
`trade` (the last minute's volume, an input of the fat-finger model), and `book` and `features`
(the latest depth and rv_1m/volume_1m per instrument: the impact model's inputs; z_rv_1m, the
fat-finger model's vol_z, when the engine's rows carry it). `lookup(sym, strategy)`
answers which limits bind an order now:

- no limits ever received: None (no order passes);
- limits fresh (a heartbeat or limits message from the engine within the TTL): the dynamic row;
- stale: conservative static limits (config/limits.toml ceilings times `fallback_scale`, tier
  STALE_FALLBACK) and an alert; back to dynamic limits only when fresh limits arrive.

Freshness is judged on arrival (local monotonic clock), never on the rows' own timestamps, which
may be a replay's event time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from pretrade.risk.limits import ALL, Limit, LimitBook, RiskConfig, static_limit

log = logging.getLogger(__name__)

ENGINE = "rte"  # the heartbeat sym of the risk engine
FALLBACK_TIER = "STALE_FALLBACK"
_MINUTE_NS = 60_000_000_000


class LimitsTable:
    """Dynamic limits, engine liveness and market reference data, as the checks read them."""

    def __init__(self, config: RiskConfig, ttl_s: float = 3.0, fallback_scale: float = 0.5,
                 clock: Callable[[], float] = time.monotonic,
                 on_alert: Callable[[str, str, str], None] | None = None) -> None:
        if ttl_s <= 0 or not 0 < fallback_scale <= 1:
            raise ValueError("ttl_s must be > 0 and fallback_scale in (0, 1]")
        self.config, self.ttl_s, self.fallback_scale = config, ttl_s, fallback_scale
        self.clock = clock
        self.on_alert = on_alert  # (severity, kind, text)
        self.book = LimitBook()
        self.ever = False          # any limits received since start
        self.fallback = False      # static fallback in force
        self.last_fresh = -math.inf
        self.bids: dict[str, float] = {}
        self.asks: dict[str, float] = {}
        self._volume: dict[str, deque] = {}
        self._volume_sum: dict[str, int] = {}  # the sizes in _volume, kept as trades come and go
        self.books: dict[str, dict] = {}                       # sym -> latest `book` row
        self.rv_volume: dict[str, tuple[float, float]] = {}    # sym -> (rv_1m, volume_1m) of `features`
        self.vol_z: dict[str, float] = {}                      # sym -> z_rv_1m of `features` (fat-finger input)
        self._static: dict[tuple[str, str], Limit] = {}
        self._lock = threading.Lock()  # transitions only; lookups read without it

    # ---- updates from the subscription --------------------------------------------------------
    def on_update(self, table: str, frame) -> None:
        """Apply one published update (the Subscription's on_update callback)."""
        if table == "limits":
            self.apply_limits([Limit.from_row(r) for r in frame.to_dict("records")])
        elif table == "heartbeat":
            if any(str(s) == ENGINE for s in frame["sym"]):
                self.last_fresh = self.clock()
        elif table == "quote":
            for sym, bid, ask in zip(frame["sym"], frame["bid"], frame["ask"], strict=True):
                self.bids[sym], self.asks[sym] = float(bid), float(ask)
        elif table == "trade":
            times = frame["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
            for sym, t, size in zip(frame["sym"], times, frame["size"], strict=True):
                self.add_trade(str(sym), int(t), int(size))
        elif table == "book":
            for row in frame.to_dict("records"):
                self.books[str(row["sym"])] = row
        elif table == "features":
            for sym, rv, vol in zip(frame["sym"], frame["rv_1m"], frame["volume_1m"], strict=True):
                self.rv_volume[str(sym)] = (float(rv), float(vol))
            if "z_rv_1m" in frame.columns:  # the engine's normalised volatility, when it publishes it
                for sym, z in zip(frame["sym"], frame["z_rv_1m"], strict=True):
                    self.vol_z[str(sym)] = float(z) if z == z else 0.0

    def apply_limits(self, rows: list[Limit]) -> int:
        """Apply rows (newer seq wins); rows newer than those held end a fallback. Returns
        the number of rows taken."""
        taken = sum(self.book.apply(r) for r in rows)
        if not taken:
            return 0
        with self._lock:
            self.last_fresh = self.clock()
            self.ever = True
            if self.fallback:
                self.fallback = False
                self._alert("info", "limits_fresh", f"fresh limits arrived (seq {self.book.last_seq}): "
                            "dynamic limits bind again")
        return taken

    def add_trade(self, sym: str, t_ns: int, size: int) -> None:
        """Record a market trade (for the last minute's volume)."""
        q = self._volume.setdefault(sym, deque())
        q.append((t_ns, size))
        total = self._volume_sum.get(sym, 0) + size
        while q and q[0][0] <= t_ns - _MINUTE_NS:
            total -= q.popleft()[1]
        self._volume_sum[sym] = total

    # ---- reading ------------------------------------------------------------------------------
    def stale(self, now: float | None = None) -> bool:
        """True if the static fallback binds now; switches to it (with an alert) when the engine's
        heartbeat and limits are older than the TTL."""
        if self.fallback:
            return True
        now = self.clock() if now is None else now
        if not self.ever or now - self.last_fresh <= self.ttl_s:
            return False
        with self._lock:
            if not self.fallback:
                self.fallback = True
                self._alert("error", "limits_stale",
                            f"no heartbeat or limits from the risk engine for {now - self.last_fresh:.1f} s "
                            f"(TTL {self.ttl_s:g} s): conservative static limits bind "
                            f"({self.fallback_scale:g} x the configured ceilings)")
        return True

    def lookup(self, sym: str, strategy: str = ALL) -> tuple[Limit | None, str]:
        """The limits binding an order now and where they come from: (row, "dynamic"),
        (static row, "fallback") or (None, "none") when no limits were ever received."""
        if not self.ever:
            return None, "none"
        if self.stale():
            return self.conservative(sym, strategy), "fallback"
        return self.book.get(sym, strategy), "dynamic"

    def conservative(self, sym: str, strategy: str = ALL) -> Limit:
        """The fallback: the static ceilings scaled down by fallback_scale (cached)."""
        key = (sym, strategy)
        lim = self._static.get(key)
        if lim is None:
            s = self.config.static(sym, strategy)
            k = self.fallback_scale
            s = replace(s, max_qty=int(s.max_qty * k), max_notional=s.max_notional * k,
                        max_position=int(s.max_position * k), max_rate=max(1, int(s.max_rate * k)))
            lim = replace(static_limit(sym, strategy, s, reason="static fallback: risk engine stale"),
                          tier=FALLBACK_TIER)
            self._static[key] = lim
        return lim

    def static(self, sym: str, strategy: str = ALL) -> Limit:
        """The configured static ceilings as a Limit (shadow mode's binding limits, A/B's static arm)."""
        key = ("static", sym, strategy)
        lim = self._static.get(key)  # type: ignore[arg-type]
        if lim is None:
            lim = static_limit(sym, strategy, self.config.static(sym, strategy))
            self._static[key] = lim  # type: ignore[index]
        return lim

    def ref_price(self, sym: str) -> float:
        """The mid of the latest quote (NaN when none, or a side is missing)."""
        b, a = self.bids.get(sym, math.nan), self.asks.get(sym, math.nan)
        return (b + a) / 2 if b > 0 and a > 0 else math.nan

    def minute_volume(self, sym: str) -> float:
        """The market's volume over the last minute as the models were trained on it: the risk
        engine's `volume_1m` feature when it has published one above 0, else the gateway's own
        trade tape (`volume_1m`)."""
        rv_vol = self.rv_volume.get(sym)
        return rv_vol[1] if rv_vol is not None and rv_vol[1] > 0 else self.volume_1m(sym)

    def volume_1m(self, sym: str) -> float:
        """Market volume in the minute before the latest trade of `sym` (O(1): a running sum)."""
        return float(self._volume_sum.get(sym, 0))

    def _alert(self, severity: str, kind: str, text: str) -> None:
        (log.error if severity == "error" else log.warning if severity == "warning" else log.info)(text)
        if self.on_alert is not None:
            self.on_alert(severity, kind, text)
