"""The streaming feature engine: feed it ticks as they come, ask it for features every 100 ms.

`update(table, rows)` queues ticks (any chunk size, any table of the schema that features use);
`snapshot(grid_time)` applies every queued tick with time <= grid_time in time order and returns
one feature row per instrument. The batch path (`pretrade.features.batch`) drives this same engine
over history, so training and live features are one implementation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pretrade.features import kernel as K
from pretrade.features.spec import FEATURES, N_FEATURES, FeatureConfig
from pretrade.schema import BOOK_LEVELS, table

log = logging.getLogger(__name__)

TABLES = ("trade", "l3", "quote", "book", "news")  # the kernel's table order
_SIDE = {"buy": 1, "sell": -1, "b": 1, "s": -1, "B": 1, "S": -1}
_L3_EVENT = {"add": K.L3_ADD, "modify": K.L3_MODIFY, "delete": K.L3_DELETE, "trade": K.L3_TRADE}
_MARKET_WIDE = {"", "*"}  # news rows with these syms apply to every instrument
_BOOK_COLS = table("book").names[2:]


@dataclass
class FeatureSnapshot:
    """Features of every known instrument at one grid time.

    raw: the features in their natural units (NaN where not yet defined); z: normalised against
    each instrument's own baseline (0 where undefined), the models' input; ready: False during
    an instrument's warm-up.
    """

    time: np.datetime64
    syms: list[str]
    raw: np.ndarray  # (n_syms, n_features)
    z: np.ndarray  # (n_syms, n_features)
    ready: np.ndarray  # (n_syms,) bool

    def frame(self):
        """The snapshot as a pandas DataFrame: time, sym, ready, raw features, z_ features."""
        return _frame(np.full(len(self.syms), self.time), self.syms, self.raw, self.z, self.ready)


def _frame(times, syms, raw, z, ready):
    import pandas as pd

    data: dict[str, Any] = {"time": times, "sym": syms, "ready": ready}
    for k, name in enumerate(FEATURES):
        data[name] = raw[:, k]
    for k, name in enumerate(FEATURES):
        data["z_" + name] = z[:, k]
    return pd.DataFrame(data)


def _column(rows: Any, name: str) -> np.ndarray:
    try:
        col = rows[name]
    except (KeyError, IndexError):
        raise ValueError(f"missing column {name!r}") from None
    return col.to_numpy() if hasattr(col, "to_numpy") else np.asarray(col)


def _times(rows: Any) -> np.ndarray:
    t = _column(rows, "time")
    if t.dtype.kind == "M":
        return t.astype("datetime64[ns]").view(np.int64)
    if t.dtype.kind in "iu":
        return t.astype(np.int64)
    return np.asarray(t, dtype="datetime64[ns]").view(np.int64)


def _text(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _codes(values: np.ndarray, mapping: Mapping[str, int], default: int) -> np.ndarray:
    """Symbols (str or bytes) as small integer codes; unknown ones get `default`."""
    import pandas as pd

    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    lookup = np.array(
        [mapping.get(u, default) for u in _text(np.asarray(uniques, dtype=object))] + [default],
        dtype=np.int8,
    )
    return lookup[codes]  # code -1 (a null) picks the trailing default


class FeatureEngine:
    """Per-instrument feature state machines, vectorised across instruments.

    Instruments are registered as their first tick arrives. Grid times must increase; when a
    snapshot skips grid steps the missed steps are computed too, so time windows stay exact.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self._cfg = self.config.as_array()
        self._index: dict[str, int] = {}
        self.syms: list[str] = []
        self._state = K.new_state(0, self._cfg)
        self._global = np.zeros(K.N_GLOBAL, dtype=np.int64)
        self._pending: dict[str, list[tuple[np.ndarray, ...]]] = {t: [] for t in TABLES}
        self.last_time: int | None = None  # last grid time, ns
        self.late_ticks = 0

    # ---- input -------------------------------------------------------------------------------

    @property
    def rejected_ticks(self) -> int:
        """Ticks that were unusable (crossed or empty quotes, one-sided before any two-sided one,
        trades without a price or size, unknown L3 events, news without a sentiment)."""
        return int(self._global[K.G_BAD])

    def update(self, table_name: str, rows: Any) -> int:
        """Queue ticks of one table (a DataFrame or a mapping of columns); returns rows queued.

        Tables other than trade, quote, book, l3 and news are ignored (0). Raises ValueError on
        a row set missing a column the features need.
        """
        if table_name not in self._pending:
            return 0
        t = _times(rows)
        if len(t) == 0:
            return 0
        inst = self._instruments(_column(rows, "sym"), market_wide=table_name == "news")
        if table_name == "trade":
            side = _codes(_column(rows, "side"), _SIDE, 0)
            cols = (
                t,
                inst,
                _column(rows, "price").astype(np.float64),
                _column(rows, "size").astype(np.float64),
                side,
            )
        elif table_name == "l3":
            ev = _codes(_column(rows, "event"), _L3_EVENT, -1)
            cols = (t, inst, ev)
        elif table_name == "quote":
            v = np.column_stack(
                [_column(rows, c).astype(np.float64) for c in ("bid", "ask", "bsize", "asize")]
            )
            cols = (t, inst, v)
        elif table_name == "book":
            v = np.column_stack([_column(rows, c).astype(np.float64) for c in _BOOK_COLS])
            cols = (t, inst, v)
        else:
            cols = (t, inst, _column(rows, "sentiment").astype(np.float64))
        if self.last_time is not None:
            late = int(np.count_nonzero(t <= self.last_time))
            if late:
                self.late_ticks += late
                log.debug(
                    "%d late %s ticks (at or before the last grid time) go into the next step",
                    late,
                    table_name,
                )
        self._pending[table_name].append(cols)
        return len(t)

    def _instruments(self, syms: np.ndarray, market_wide: bool) -> np.ndarray:
        import pandas as pd

        codes, uniques = pd.factorize(np.asarray(syms, dtype=object))
        names = _text(np.asarray(uniques, dtype=object))
        lookup = np.empty(len(names), dtype=np.int64)
        for k, s in enumerate(names):
            if market_wide and s in _MARKET_WIDE:
                lookup[k] = -1
            else:
                lookup[k] = self._register(s)
        return lookup[codes]

    def _register(self, sym: str) -> int:
        i = self._index.get(sym)
        if i is not None:
            return i
        i = len(self.syms)
        self._index[sym] = i
        self.syms.append(sym)
        cap = self._state["S"].shape[0]
        if i >= cap:
            grown = K.new_state(max(16, 2 * cap), self._cfg)
            for name, arr in self._state.items():
                grown[name][:cap] = arr
            self._state = grown
        return i

    # ---- output ------------------------------------------------------------------------------

    def snapshot(self, grid_time: Any) -> FeatureSnapshot:
        """Features at grid_time from every tick with time <= grid_time (earlier steps filled in)."""
        g = (
            int(np.datetime64(grid_time, "ns").view(np.int64))
            if not isinstance(grid_time, (int, np.integer))
            else int(grid_time)
        )
        if self.last_time is None:
            grid = np.array([g], dtype=np.int64)
        else:
            if g <= self.last_time:
                raise ValueError(f"grid time {g} is not after the last one {self.last_time}")
            grid = np.arange(
                self.last_time + self.config.step_ns, g + 1, self.config.step_ns, dtype=np.int64
            )
            if len(grid) == 0 or grid[-1] != g:
                grid = np.append(grid, g)
        raw, z, ready = self.run(grid)
        n = len(self.syms)
        return FeatureSnapshot(
            np.datetime64(g, "ns"), list(self.syms), raw[-1, :n], z[-1, :n], ready[-1, :n]
        )

    def run(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance over increasing grid times (int64 ns); arrays (len(grid), n_syms, ...) per step."""
        grid = np.asarray(grid, dtype=np.int64)
        ticks = [self._take(name, int(grid[-1])) for name in TABLES]
        n = len(self.syms)
        cap = self._state["S"].shape[0]
        raw = np.empty((len(grid), cap, N_FEATURES))
        z = np.empty((len(grid), cap, N_FEATURES))
        ready = np.empty((len(grid), cap), dtype=np.bool_)
        consumed = np.zeros(K.N_TABLES, dtype=np.int64)
        st = self._state
        K.advance(
            st["S"],
            st["I"],
            st["R"],
            st["Q"],
            st["VB"],
            st["NS"],
            self._global,
            self._cfg,
            *ticks[0],
            *ticks[1],
            *ticks[2],
            *ticks[3],
            *ticks[4],
            grid,
            raw,
            z,
            ready,
            consumed,
        )
        for name, cols, used in zip(TABLES, ticks, consumed, strict=True):
            if used < len(cols[0]):  # only possible for ticks after the last grid time
                self._pending[name].insert(0, tuple(c[used:] for c in cols))
        self.last_time = int(grid[-1])
        return raw[:, :n], z[:, :n], ready[:, :n]

    def _take(self, name: str, until: int) -> tuple[np.ndarray, ...]:
        """Queued ticks of one table with time <= until, time-sorted; later ones stay queued."""
        chunks = self._pending[name]
        if not chunks:
            return _EMPTY[name]
        cols = (
            chunks[0]
            if len(chunks) == 1
            else tuple(np.concatenate(c) for c in zip(*chunks, strict=True))
        )
        t = cols[0]
        if len(t) > 1 and np.any(t[1:] < t[:-1]):
            order = np.argsort(t, kind="stable")
            cols = tuple(c[order] for c in cols)
            t = cols[0]
        cut = int(np.searchsorted(t, until, side="right"))
        self._pending[name] = [tuple(c[cut:] for c in cols)] if cut < len(t) else []
        return tuple(np.ascontiguousarray(c[:cut]) for c in cols)


_EMPTY: Mapping[str, tuple[np.ndarray, ...]] = {
    "trade": (
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0),
        np.empty(0),
        np.empty(0, np.int8),
    ),
    "l3": (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int8)),
    "quote": (np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 4))),
    "book": (np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 4 * BOOK_LEVELS))),
    "news": (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)),
}
