"""SQL over named tables with DuckDB, answered with exact q types; and q's as-of join (aj).

The RDB (in-memory Arrow tables) and the HDB (Parquet partitions) both answer `s)` queries
through `SqlEngine`, so there is one implementation of "run SQL, return a q table".
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pretrade.schema import TABLES

log = logging.getLogger(__name__)

SQL_PREFIX = "s)"

# q nulls, by q type character (what kdb+ shows as 0N, 0n, ` and so on).
Q_NULLS: dict[str, Any] = {
    "b": False,
    "i": np.iinfo(np.int32).min,
    "j": np.iinfo(np.int64).min,
    "f": np.nan,
    "s": "",
    "C": "",
    "c": " ",
    "p": np.datetime64("NaT", "ns"),
    "d": np.datetime64("NaT", "D"),
    "n": np.timedelta64("NaT", "ns"),
}


def string_columns() -> frozenset[str]:
    """Names of the schema's string (C) columns: a text result column of that name is a string,
    any other text result column is a symbol (as kdb+ would give it)."""
    kinds: dict[str, set[str]] = {}
    for t in TABLES.values():
        for c in t.columns:
            kinds.setdefault(c.name, set()).add(c.qtype)
    return frozenset(name for name, qs in kinds.items() if qs == {"C"})


# DuckDB statement types a client may run: queries only (PIVOT is a MULTI statement).
READ_ONLY = frozenset({"SELECT", "EXPLAIN", "MULTI"})


def _quote(text: str) -> str:
    """An SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


class SqlError(Exception):
    """A query DuckDB refused, or a result with no q equivalent; the message says why."""


@dataclass
class QTable:
    """A query result as q columns: names, numpy arrays and the q type character of each."""

    names: list[str]
    columns: list[np.ndarray]
    qtypes: str

    def frame(self) -> pd.DataFrame:
        """The result as a pandas DataFrame."""
        return pd.DataFrame(dict(zip(self.names, self.columns, strict=True)))

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0


def strip_prefix(text: str) -> str:
    """The SQL of a query, without kdb+'s `s)` prefix when it has one."""
    text = text.strip()
    return text[len(SQL_PREFIX):] if text.startswith(SQL_PREFIX) else text


def q_type(arrow_type: pa.DataType, name: str, strings: frozenset[str]) -> str:
    """The q type character for a result column of this Arrow type and name."""
    t = pa.types
    if t.is_boolean(arrow_type):
        return "b"
    if t.is_integer(arrow_type):
        return "i" if arrow_type.bit_width < 32 or arrow_type == pa.int32() else "j"
    if t.is_floating(arrow_type):
        return "f"
    if t.is_decimal(arrow_type):
        return "j" if arrow_type.scale == 0 else "f"
    if t.is_timestamp(arrow_type):
        return "p"
    if t.is_date(arrow_type):
        return "d"
    if t.is_duration(arrow_type) or t.is_time(arrow_type) or t.is_interval(arrow_type):
        return "n"
    if t.is_string(arrow_type) or t.is_large_string(arrow_type) or t.is_string_view(arrow_type):
        return "C" if name in strings else "s"
    if t.is_dictionary(arrow_type):
        return q_type(arrow_type.value_type, name, strings)
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type):
        return "C"
    if t.is_null(arrow_type):
        return "f"
    raise SqlError(f"result column {name} has type {arrow_type}, which has no q type; cast it in SQL")


def q_column(col: pa.ChunkedArray | pa.Array, qtype: str) -> np.ndarray:
    """An Arrow result column as the numpy array of its q type, nulls as q nulls."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    null = Q_NULLS[qtype]
    if qtype in "sC":
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            values = [b.decode("utf-8", "replace") if b is not None else "" for b in col.to_pylist()]
            return np.array(values, dtype=object)
        col = pc.fill_null(col.cast(pa.string()), "") if not pa.types.is_null(col.type) else col
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
    if pa.types.is_null(col.type):
        return np.full(len(col), null)
    if qtype == "p":
        return col.cast(pa.timestamp("ns", tz=col.type.tz)).cast(pa.timestamp("ns")).to_numpy(
            zero_copy_only=False)
    if qtype == "d":
        return col.cast(pa.date32()).to_numpy(zero_copy_only=False).astype("datetime64[D]")
    if qtype == "n":
        if pa.types.is_interval(col.type):
            ns = [None if v is None else (v.months * 30 + v.days) * 86_400_000_000_000 + v.nanoseconds
                  for v in col.to_pylist()]
            return np.array([np.timedelta64("NaT") if v is None else v for v in ns], dtype="timedelta64[ns]")
        if pa.types.is_time(col.type):
            col = col.cast(pa.time64("ns")).cast(pa.int64())
            return col.to_numpy(zero_copy_only=False).astype("timedelta64[ns]")
        return col.cast(pa.duration("ns")).to_numpy(zero_copy_only=False)
    target = {"b": pa.bool_(), "i": pa.int32(), "j": pa.int64(), "f": pa.float64()}[qtype]
    try:
        col = col.cast(target)
    except pa.ArrowInvalid as e:
        raise SqlError(f"result does not fit a q {qtype} column: {e}") from None
    if col.null_count:
        col = pc.fill_null(col, pa.scalar(null, target))
    return col.to_numpy(zero_copy_only=False)


def to_qtable(result: pa.Table, strings: frozenset[str] | None = None) -> QTable:
    """An Arrow result as a QTable; duplicate column names get a numeric suffix (q needs unique)."""
    strings = string_columns() if strings is None else strings
    names: list[str] = []
    for name in result.column_names:
        unique, n = name, 1
        while unique in names:
            unique, n = f"{name}{n}", n + 1
        names.append(unique)
    qtypes = "".join(q_type(f.type, f.name, strings) for f in result.schema)
    columns = [q_column(result.column(i), q) for i, q in enumerate(qtypes)]
    return QTable(names, columns, qtypes)


class SqlEngine:
    """A DuckDB connection over named tables; `query` returns q-typed results or raises SqlError.

    Clients may only read: statements other than queries (COPY, CREATE, ATTACH, SET, ...) are
    refused, and DuckDB may touch no file outside `readable` (the HDB's root; nothing for the
    RDB, whose tables are in memory), so `read_csv('/etc/passwd')` fails too."""

    def __init__(self, threads: int = 1, readable: Sequence[str] = ()) -> None:
        import duckdb

        self._duckdb = duckdb
        self.con = duckdb.connect(config={"threads": threads})
        if readable:
            dirs = ", ".join(_quote(str(d).rstrip("/") + "/") for d in readable)
            self.con.execute(f"SET allowed_directories = [{dirs}]")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")
        self.strings = string_columns()

    def register(self, name: str, table: pa.Table | pd.DataFrame) -> None:
        """Make an Arrow table or DataFrame queryable as `name` (no copy)."""
        self.con.register(name, table)

    def unregister(self, name: str) -> None:
        """Forget a registered table (no error if there is none)."""
        self.con.unregister(name)

    def execute(self, sql: str) -> None:
        """Run a statement whose result is not wanted (DDL such as CREATE VIEW)."""
        self.con.execute(sql)

    def arrow(self, text: str) -> pa.Table:
        """Run a query and return its result as Arrow (empty table for statements without one)."""
        sql = strip_prefix(text)
        try:
            kinds = {s.type.name for s in self.con.extract_statements(sql)}
            if not kinds or not kinds <= READ_ONLY:
                raise SqlError(f"only queries are allowed here (SELECT, WITH, FROM, DESCRIBE, SHOW, "
                               f"EXPLAIN, PIVOT), not {', '.join(sorted(kinds - READ_ONLY)) or 'nothing'}")
            rel = self.con.sql(sql)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        except self._duckdb.Error as e:
            raise SqlError(str(e)) from None

    def query(self, text: str) -> QTable:
        """Run SQL (with or without the `s)` prefix) and return the result with q types."""
        start = _time.perf_counter()
        result = self.to_q(self.arrow(text))
        log.debug("sql %.1f ms, %d rows: %s", 1e3 * (_time.perf_counter() - start), len(result), text[:200])
        return result

    def to_q(self, result: pa.Table) -> QTable:
        """An Arrow result as q columns, using this engine's string column names."""
        return to_qtable(result, self.strings)

    def aj(self, left: str | bytes, right: str | bytes, on: str | Sequence[str] = "sym",
           time: str = "time") -> QTable:
        """`.pretrade.aj[left; right]` over IPC: the as-of join of two tables, each given as a
        table name (a symbol) or an SQL query (a string), e.g. trades with prevailing quotes."""
        def frame(side: str | bytes) -> pd.DataFrame:
            if isinstance(side, bytes | bytearray):
                return self.arrow(bytes(side).decode()).to_pandas()
            if not isinstance(side, str):
                raise SqlError(f"aj: expected a table name or an SQL string, got {type(side).__name__}")
            return self.arrow(f'select * from "{side}"').to_pandas()

        keys = [on] if isinstance(on, str) else [str(k) for k in on]
        try:
            joined = aj(frame(left), frame(right), keys, time)
        except KeyError as e:
            raise SqlError(str(e.args[0])) from None
        return self.to_q(pa.Table.from_pandas(joined, preserve_index=False))

    def close(self) -> None:
        self.con.close()


def answer(fn: Callable[..., QTable], *args: Any) -> bytes:
    """Run a query function for an IPC client and encode its result as a q table with exact
    types; an SqlError becomes the q error the client sees (with DuckDB's message)."""
    from pretrade.ipc.codec import QError, encode_table

    try:
        table = fn(*args)
    except SqlError as e:
        raise QError(str(e)) from None
    return encode_table(table.columns, table.qtypes, table.names)


def aj_args(left: Any, right: Any, on: Any = "sym", time: Any = "time", *rest: Any) -> tuple:
    """The arguments of `.pretrade.aj[left; right; on; time]` as sent by q (on may be a symbol
    vector; a generic null means the default)."""
    if rest:
        raise SqlError(f".pretrade.aj takes 2 to 4 arguments, got {4 + len(rest)}")
    on = "sym" if on is None else on
    keys = list(on) if isinstance(on, np.ndarray | list | tuple) else on
    return left, right, keys, "time" if time is None else time


def _codes(left: pd.DataFrame, right: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Integer group codes for the key columns, shared by both tables."""
    both = pd.concat([left[keys], right[keys]], ignore_index=True)
    codes = both.groupby(keys, sort=False, dropna=False).ngroup().to_numpy().astype(np.int64)
    return codes[: len(left)], codes[len(left):]


def aj(left: pd.DataFrame, right: pd.DataFrame, on: str | Sequence[str] = "sym",
       time: str = "time") -> pd.DataFrame:
    """q's as-of join `aj[on,time; left; right]`: each left row, in its order, gets the columns of
    the last right row (in row order among equal times) with the same `on` keys and
    right.time <= left.time. Unmatched rows get q nulls (NaN, 0N, empty symbol); a column both
    tables have (other than the keys) takes the right's value where there is a match."""
    keys = [on] if isinstance(on, str) else list(on)
    for name, df in (("left", left), ("right", right)):
        missing = [c for c in [*keys, time] if c not in df.columns]
        if missing:
            raise KeyError(f"aj: the {name} table has no column(s) {missing}")
    lcode, rcode = _codes(left, right, keys)
    lkey, rkey = _sort_keys(lcode, rcode, left[time].to_numpy(), right[time].to_numpy())
    order = np.argsort(rkey, kind="stable")  # stable: equal times keep their row order
    lorder = np.argsort(lkey)  # sorted needles make the search far faster
    pos = np.empty(len(left), dtype=np.int64)
    pos[lorder] = np.searchsorted(rkey[order], lkey[lorder], side="right") - 1
    matched = pos >= 0
    matched[matched] = rcode[order[pos[matched]]] == lcode[matched]
    rows = order[np.where(matched, pos, 0)] if len(order) else np.zeros(len(left), dtype=np.int64)

    out = left.copy(deep=False)
    for name in right.columns:
        if name in keys or name == time:
            continue
        values = right[name].to_numpy()
        picked = values[rows] if len(values) else np.empty(len(left), dtype=values.dtype)
        if name in left.columns:
            picked = np.where(matched, picked, left[name].to_numpy())
        elif not matched.all():
            picked = _with_nulls(picked, matched)
        out[name] = picked
    return out


def _sort_keys(lcode: np.ndarray, rcode: np.ndarray, lt: np.ndarray,
               rt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One int64 key per row that sorts as (group code, time): code * span + time offset, or
    the time's rank among all times when offsets would overflow (many groups, long spans)."""
    li, ri = _as_int64(lt), _as_int64(rt)
    if not len(lt) + len(rt):
        return lcode, rcode
    if li is not None and ri is not None:
        every = np.concatenate([li, ri])
        lo, hi = int(every.min()), int(every.max())
        groups = int(max(lcode.max(initial=0), rcode.max(initial=0))) + 1
        span = hi - lo + 1
        if groups * span < 2**62:
            return lcode * span + (li - lo), rcode * span + (ri - lo)
    _, rank = np.unique(np.concatenate([lt, rt]), return_inverse=True)
    span = int(rank.max()) + 1
    return lcode * span + rank[: len(lt)], rcode * span + rank[len(lt):]


def _as_int64(a: np.ndarray) -> np.ndarray | None:
    """Times (or integers) as int64 in one unit (ns), or None for other types (floats)."""
    if a.dtype.kind == "M":
        return a.astype("datetime64[ns]").view(np.int64)
    if a.dtype.kind == "m":
        return a.astype("timedelta64[ns]").view(np.int64)
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    return None


def _with_nulls(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """values where keep, else the q null of their type."""
    kind = values.dtype.kind
    qtype = {"f": "f", "M": "p", "m": "n", "b": "b"}.get(kind)
    if kind in "iu":
        qtype = "i" if values.dtype.itemsize <= 4 else "j"
    if qtype is None:  # text (object or str dtype)
        values = np.asarray(values, dtype=object)
        return np.where(keep, values, "")
    return np.where(keep, values, np.array(Q_NULLS[qtype]).astype(values.dtype))
