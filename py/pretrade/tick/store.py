"""Today's tables in memory: cheap appends of rows or column chunks, concatenated lazily.

Each table keeps Arrow record batches (so DuckDB scans them and Parquet writes them without a
copy) plus a buffer of single rows, which is turned into a batch only when a reader asks or the
buffer fills. Column types come from py/pretrade/schema.py; data of the wrong shape or type is
refused with a clear error and nothing already stored is touched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pretrade.schema import Column, Table

# q type character -> Arrow type used in memory and in Parquet.
ARROW_TYPES: dict[str, pa.DataType] = {
    "b": pa.bool_(),
    "i": pa.int32(),
    "j": pa.int64(),
    "f": pa.float64(),
    "c": pa.string(),
    "s": pa.string(),
    "p": pa.timestamp("ns"),
    "d": pa.date32(),
    "n": pa.duration("ns"),
    "C": pa.string(),
}

ROW_BUFFER = 4096  # single rows buffered before they become one batch
SMALL_CHUNK = 8  # column chunks this short are buffered as rows too
SMALL_BATCHES = 64  # small batches allowed before they are merged into one
SEALED_ROWS = 65536  # a batch this big is never merged again


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema of a table, with each field's q type kept in its metadata."""
    return pa.schema(
        [pa.field(c.name, ARROW_TYPES[c.qtype], metadata={"qtype": c.qtype}) for c in table.columns]
    )


def _text(value: Any) -> str:
    """A symbol or string atom as str (char vectors arrive as bytes)."""
    if isinstance(value, bytes | bytearray | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    raise TypeError(f"expected a symbol or string, got {type(value).__name__} {value!r}")


def column_array(column: Column, values: Any) -> pa.Array:
    """One column's values (numpy array, list or pandas Series) as an Arrow array of its q type."""
    q = column.qtype
    where = f"column {column.name} ({q})"
    if q in "sCc":
        if isinstance(values, bytes | bytearray) and q == "C":
            values = [values]  # one string row that arrived as a bare char vector
        try:
            arr = pa.array(values, pa.string())  # str and UTF-8 bytes; fast for numpy arrays
        except (pa.ArrowException, TypeError):
            try:
                arr = pa.array([_text(v) for v in values], pa.string())
            except TypeError as e:
                raise TypeError(f"{where}: {e}") from None
        return pc.fill_null(arr, "") if arr.null_count else arr  # q's null symbol is the empty one
    arr = np.asarray(values)
    kind = arr.dtype.kind
    if q == "p":
        if kind != "M":
            raise TypeError(f"{where}: expected timestamps, got {arr.dtype}")
        arr = arr.astype("datetime64[ns]")
    elif q == "d":
        if kind != "M":
            raise TypeError(f"{where}: expected dates, got {arr.dtype}")
        arr = arr.astype("datetime64[D]")
    elif q == "n":
        if kind != "m":
            raise TypeError(f"{where}: expected timespans, got {arr.dtype}")
        arr = arr.astype("timedelta64[ns]")
    elif q == "f":
        if kind not in "fiub":
            raise TypeError(f"{where}: expected numbers, got {arr.dtype}")
        arr = arr.astype(np.float64)
    elif q in "ij":
        if kind not in "iub":
            raise TypeError(f"{where}: expected integers, got {arr.dtype}")
        arr = arr.astype(np.int32 if q == "i" else np.int64)
    elif q == "b" and kind != "b":
        raise TypeError(f"{where}: expected booleans, got {arr.dtype}")
    return pa.array(arr, ARROW_TYPES[q], from_pandas=True)  # NaN and NaT are nulls, as in q


_NS = np.dtype("datetime64[ns]")
_SPAN_NS = np.dtype("timedelta64[ns]")


def _bad(value: Any) -> TypeError:
    return TypeError(f"bad atom {value!r} ({type(value).__name__})")


def _timestamp(v: Any) -> np.datetime64:
    if type(v) is np.datetime64:
        return v if v.dtype == _NS else v.astype(_NS)  # one unit, or Arrow refuses the buffer
    if hasattr(v, "to_datetime64"):  # pandas Timestamp
        return v.to_datetime64().astype(_NS)
    if isinstance(v, dt.datetime):
        return np.datetime64(v.replace(tzinfo=None) if v.tzinfo is None else
                             v.astimezone(dt.UTC).replace(tzinfo=None), "ns")
    raise _bad(v)


def _date(v: Any) -> np.datetime64:
    if isinstance(v, np.datetime64 | dt.date):
        return np.datetime64(v, "D")
    raise _bad(v)


def _timespan(v: Any) -> np.timedelta64:
    if type(v) is np.timedelta64:
        return v if v.dtype == _SPAN_NS else v.astype(_SPAN_NS)
    if hasattr(v, "to_timedelta64"):
        return v.to_timedelta64().astype(_SPAN_NS)
    if isinstance(v, dt.timedelta):
        return np.timedelta64(v, "ns")
    raise _bad(v)


def _float(v: Any) -> float:
    if type(v) is float:
        return v
    if isinstance(v, float | int | np.floating | np.integer) and not isinstance(v, bool | np.bool_):
        return float(v)
    raise _bad(v)


def _int(v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, np.integer) and not isinstance(v, np.bool_):
        return int(v)
    raise _bad(v)


def _bool(v: Any) -> bool:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    raise _bad(v)


def _symbol(v: Any) -> str:
    return v if type(v) is str else _text(v)


# q type character -> check-and-convert of one atom, into the form the row buffer holds.
ATOMS = {"p": _timestamp, "d": _date, "n": _timespan, "f": _float, "i": _int, "j": _int,
         "b": _bool, "s": _symbol, "C": _symbol, "c": _symbol}


def _atom(column: Column, value: Any) -> Any:
    """Check one atom of a row against its column and return it in a form pa.array accepts."""
    try:
        return ATOMS[column.qtype](value)
    except TypeError as e:
        raise TypeError(f"column {column.name} ({column.qtype}): {e}") from None


def _is_row(data: list | tuple) -> bool:
    """True when data is one row (a list of atoms) rather than a list of columns: decided by
    the first item (every row starts with an atom); the atoms are checked one by one later."""
    first = data[0] if len(data) else None
    return not (isinstance(first, list | tuple | np.ndarray) or hasattr(first, "to_numpy"))


class TableStore:
    """One table's rows for today: append rows or column chunks; read it back as one Arrow table."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.schema = arrow_schema(table)
        self._batches: list[pa.RecordBatch] = []
        self._sealed = 0  # batches before this index are big and never merged again
        self._rows: list[list[Any]] = [[] for _ in table.columns]
        self._atoms = [ATOMS[c.qtype] for c in table.columns]
        self._count = 0
        self.version = 0  # changes whenever the rows do: readers can skip re-reading

    def __len__(self) -> int:
        return self._count

    def append(self, data: Any) -> int:
        """Append one row, a list of columns, a dict of columns or a DataFrame; the rows added."""
        if not isinstance(data, list | tuple):
            data = self._as_list(data)
        self.version += 1
        width = len(self.table.columns)
        if len(data) != width:
            raise ValueError(
                f"{self.table.name}: expected {width} columns ({' '.join(self.table.names)}), got {len(data)}"
            )
        if _is_row(data):
            try:
                atoms = [f(v) for f, v in zip(self._atoms, data, strict=True)]
            except TypeError:  # find the column to name in the error
                atoms = [_atom(c, v) for c, v in zip(self.table.columns, data, strict=True)]
            for buf, v in zip(self._rows, atoms, strict=True):
                buf.append(v)
            self._count += 1
            if len(self._rows[0]) >= ROW_BUFFER:
                self._flush_rows()
            return 1
        lengths = {1 if isinstance(v, bytes | bytearray) else len(v) for v in data}
        if len(lengths) != 1:
            raise ValueError(f"{self.table.name}: columns have different lengths {sorted(lengths)}")
        n = lengths.pop()
        if n <= SMALL_CHUNK:  # a few rows (a zero-latency tickerplant's update): buffer them as rows
            data = [[v] if isinstance(v, bytes | bytearray) else v for v in data]
            try:
                cols = [[f(x) for x in v] for f, v in zip(self._atoms, data, strict=True)]
            except TypeError:  # find the column to name in the error
                cols = [[_atom(c, x) for x in v] for c, v in zip(self.table.columns, data, strict=True)]
            for buf, col in zip(self._rows, cols, strict=True):
                buf.extend(col)
            self._count += n
            if len(self._rows[0]) >= ROW_BUFFER:
                self._flush_rows()
            return n
        arrays = [column_array(c, v) for c, v in zip(self.table.columns, data, strict=True)]
        if n:
            self._flush_rows()
            self._add(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        return n

    def _as_list(self, data: Any) -> list:
        """A DataFrame, a dict of columns or an object array as a list in schema order."""
        if hasattr(data, "columns") and hasattr(data, "__getitem__"):
            data = {name: data[name] for name in data.columns}  # pandas DataFrame
        if isinstance(data, Mapping):
            missing = [n for n in self.table.names if n not in data]
            if missing:
                raise ValueError(f"{self.table.name}: missing columns {missing}")
            return [data[n] for n in self.table.names]
        if isinstance(data, np.ndarray) and data.dtype == object:
            return list(data)
        raise TypeError(f"{self.table.name}: expected a row or a list of columns, got {type(data).__name__}")

    def _flush_rows(self) -> None:
        """Turn the buffered single rows into one batch."""
        if not self._rows[0]:
            return
        arrays = [pa.array(buf, ARROW_TYPES[c.qtype], from_pandas=True)
                  for c, buf in zip(self.table.columns, self._rows, strict=True)]
        self._rows = [[] for _ in self.table.columns]
        self._add(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def _add(self, batch: pa.RecordBatch) -> None:
        self._batches.append(batch)
        self._count = sum(len(b) for b in self._batches) + len(self._rows[0])
        if len(self._batches) - self._sealed > SMALL_BATCHES:
            small = pa.Table.from_batches(self._batches[self._sealed:], self.schema).combine_chunks()
            self._batches[self._sealed:] = small.to_batches() or []
            while self._sealed < len(self._batches) and len(self._batches[self._sealed]) >= SEALED_ROWS:
                self._sealed += 1

    def arrow(self) -> pa.Table:
        """All of today's rows as an Arrow table (no copy of the stored batches)."""
        self._flush_rows()
        return pa.Table.from_batches(self._batches, self.schema)

    def clear(self) -> None:
        """Forget every row (after end of day has written them)."""
        self._batches = []
        self._sealed = 0
        self._rows = [[] for _ in self.table.columns]
        self._count = 0
        self.version += 1


class Store:
    """Today's tables by name: the RDB's memory."""

    def __init__(self, tables: Iterable[Table]) -> None:
        self.tables: dict[str, TableStore] = {t.name: TableStore(t) for t in tables}

    def upd(self, name: str, data: Any) -> int:
        """kdb+tick's `upd`: append data to a table; the rows added."""
        try:
            store = self.tables[name]
        except KeyError:
            raise KeyError(f"unknown table {name!r}; this RDB has {', '.join(self.tables)}") from None
        return store.append(data)

    def arrow(self, name: str) -> pa.Table:
        """One table as Arrow."""
        return self.tables[name].arrow()

    def frame(self, name: str):
        """One table as a pandas DataFrame (symbols and strings as Python str)."""
        return self.arrow(name).to_pandas()

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {name: len(t) for name, t in self.tables.items()}

    def clear(self) -> None:
        """Empty every table."""
        for t in self.tables.values():
            t.clear()
