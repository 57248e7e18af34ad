"""Every table of pretrade, defined once.

The tickerplant validates updates against these definitions, the RDB and HDB store them, the
q schema (tickerplant/sym.q) is generated from them (`pretrade schema --q`), and a test keeps the
generated file in sync. As kdb+tick requires, every table starts with `time` (a timestamp with
nanoseconds) and `sym` (a symbol).

Column types are q type characters:
  b boolean  j long  i int  f float  s symbol  p timestamp  d date  n timespan  c char
  C string (a list of char vectors: one string per row)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOK_LEVELS = 10

# q type character -> (q type number of the vector, q name used in sym.q, numpy dtype)
Q_TYPES: dict[str, tuple[int, str, str]] = {
    "b": (1, "boolean", "bool"),
    "i": (6, "int", "int32"),
    "j": (7, "long", "int64"),
    "f": (9, "float", "float64"),
    "c": (10, "char", "S1"),
    "s": (11, "symbol", "object"),
    "p": (12, "timestamp", "datetime64[ns]"),
    "d": (14, "date", "datetime64[D]"),
    "n": (16, "timespan", "timedelta64[ns]"),
    "C": (0, "string", "object"),
}


@dataclass(frozen=True)
class Column:
    """One column: its name, its q type character and what it means."""

    name: str
    qtype: str
    doc: str = ""

    def __post_init__(self) -> None:
        if self.qtype not in Q_TYPES:
            raise ValueError(f"column {self.name}: unknown q type {self.qtype!r}")

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype this column takes in memory."""
        return np.dtype(Q_TYPES[self.qtype][2])


@dataclass(frozen=True)
class Table:
    """A table: a name, its columns in order (time and sym first) and a one-line purpose."""

    name: str
    columns: tuple[Column, ...]
    doc: str

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if names[:2] != ["time", "sym"] or self.columns[0].qtype != "p" or self.columns[1].qtype != "s":
            raise ValueError(f"table {self.name}: must start with time (p) and sym (s)")
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: duplicate column names")

    @property
    def names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]

    @property
    def qtypes(self) -> str:
        """The q type characters of the columns, in order (as q's `meta` shows them)."""
        return "".join(c.qtype for c in self.columns)

    def column(self, name: str) -> Column:
        """The column called `name`; KeyError if there is none."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name}")


def _cols(spec: str) -> tuple[Column, ...]:
    """Columns from a compact 'name:type name:type' spec."""
    return tuple(Column(*item.split(":")) for item in spec.split())


_TIME_SYM = "time:p sym:s "
_ORDER_FLOW = (
    "orderid:s clordid:s account:s strategy:s side:s qty:j price:f ordtype:s event:s reason:C"
)

# The risk engine's features (pretrade.features.spec.FEATURES, in order; a test keeps them equal:
# importing the spec here would be circular).
_FEATURES = ("rv_1m micro_vol spread_bps imbalance_top imbalance_depth book_pressure trade_to_order "
             "liquidity_decay volume_1m depth_top ret_1m cross_corr news_sentiment vpin")

_BOOK = " ".join(
    [f"bid{i}:f" for i in range(1, BOOK_LEVELS + 1)]
    + [f"bsize{i}:j" for i in range(1, BOOK_LEVELS + 1)]
    + [f"ask{i}:f" for i in range(1, BOOK_LEVELS + 1)]
    + [f"asize{i}:j" for i in range(1, BOOK_LEVELS + 1)]
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        Table("trade", _cols(_TIME_SYM + "price:f size:j side:s"),
              "Market trades; side is the aggressor's (buy or sell)."),
        Table("quote", _cols(_TIME_SYM + "bid:f ask:f bsize:j asize:j"),
              "Top of book: best bid and ask with their sizes."),
        Table("book", _cols(_TIME_SYM + _BOOK),
              f"L2 depth snapshot, {BOOK_LEVELS} levels a side (level 1 is the best)."),
        Table("l3", _cols(_TIME_SYM + "event:s orderid:j side:s price:f size:j"),
              "Market-by-order (L3) events: add, modify, delete, trade; they count order messages."),
        Table("news", _cols(_TIME_SYM + "headline:C sentiment:f"),
              "Alternative data: headlines with a sentiment score in [-1, 1]."),
        Table("order", _cols(_TIME_SYM + _ORDER_FLOW),
              "The firm's own order events (new, ack, cancel, replace, reject, ...)."),
        Table("execution", _cols(_TIME_SYM + "execid:s " + _ORDER_FLOW),
              "Fills and other execution reports on the firm's own orders."),
        Table("features", _cols(_TIME_SYM + "ready:b " + " ".join(f"{f}:f" for f in _FEATURES.split())
                                + " z_rv_1m:f"),
              "Microstructure features of each instrument on the risk engine's 100 ms grid; z_rv_1m is "
              "rv_1m normalised against the instrument's own baseline (the fat-finger model's vol_z)."),
        Table("riskScore", _cols(_TIME_SYM + "score:f error:f tier:s top:C model:s stale:b"),
              "Anomaly score per instrument and cycle: score in [0, 1], tier, top contributing features."),
        Table("limits", _cols(_TIME_SYM + "strategy:s seq:j tier:s state:s halt:s maxQty:j "
                              "maxNotional:f bandBps:f passiveBandBps:f maxPosition:j maxRate:j "
                              "score:f top:C model:s prevTier:s prevMaxQty:j reason:C"),
              "Dynamic limits per instrument and strategy; seq is monotonic, newer seq wins."),
        Table("riskAlert", _cols(_TIME_SYM + "strategy:s seq:j severity:s kind:s tier:s who:s text:C"),
              "Risk engine alerts and audited actions (tier changes, halts, kill switch, resets)."),
        Table("decision", _cols(_TIME_SYM + "orderid:s clordid:s account:s strategy:s side:s qty:j "
                                "price:f rule:s limit:f value:f outcome:s latencyNs:j text:C "
                                "slippageBps:f algo:s"),
              "One row per pre-trade check outcome: the rule, its limit and the order's value; an "
              "accepted order's predicted slippage (bps) and recommended execution algorithm."),
        Table("heartbeat", _cols(_TIME_SYM + "seq:j cycles:j instruments:j status:s"),
              "Liveness of a process (sym is the process name); the gateway watches the risk engine's."),
    ]
}


def table(name: str) -> Table:
    """The table called `name`, with a clear error naming the known ones."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}") from None


def empty_frame(name: str):
    """An empty pandas DataFrame with the table's columns and dtypes."""
    import pandas as pd

    t = table(name)
    return pd.DataFrame({c.name: np.array([], dtype=c.dtype) for c in t.columns})


def q_schema() -> str:
    """The q schema file (tickerplant/sym.q) that kdb+tick loads, generated from TABLES."""
    lines = [
        "/ sym.q: table schemas for kdb+tick, generated by `pretrade schema --q`.",
        "/ Do not edit: py/pretrade/schema.py is the source of truth.",
    ]
    for t in TABLES.values():
        cols = ";".join(
            f"{c.name}:()" if c.qtype == "C" else f"{c.name}:`{Q_TYPES[c.qtype][1]}$()"
            for c in t.columns
        )
        lines.append(f"{t.name}:([]{cols})")
    return "\n".join(lines) + "\n"
