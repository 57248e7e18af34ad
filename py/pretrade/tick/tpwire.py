"""Byte-level reading and building of the tickerplant's hot-path messages.

The tickerplant journals and forwards bytes: it checks an `.u.upd[table; data]` payload against
the schema by reading type bytes and counts (no Python objects are built for the values), adds the
time column when the publisher sent none, and builds the `(`upd; table; data)` journal record and
the table that subscribers receive (as kdb+tick's tick.q publishes tables) from slices of the
received bytes. Everything else (decoding, encoding general objects) is pretrade.ipc.codec.
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

from pretrade import schema
from pretrade.ipc import codec

Q_EPOCH_NS = 946_684_800 * 1_000_000_000  # 2000.01.01, kdb+'s epoch, in ns since 1970
UPD_CALL = b"\x00\x00\x03\x00\x00\x00\xf5.u.upd\x00"  # (`.u.upd; ...) : a 3-item call
_VEC = struct.Struct("<bbi")
_FRAME = struct.Struct("<BBBBI")  # the 8-byte IPC header of an async message (pretrade.ipc.wire)
_Q = struct.Struct("<q")
_I = struct.Struct("<i")
_SYM_ATOM = 0xF5
_GROUPED = 4  # the `g# attribute byte
_SYMBOL, _STRING = -1, -2  # widths that mean "up to a NUL" and "a char vector"

_TYPE_NAMES = {1: "boolean", 2: "guid", 4: "byte", 5: "short", 6: "int", 7: "long", 8: "real",
               9: "float", 10: "char", 11: "symbol", 12: "timestamp", 13: "month", 14: "date",
               15: "datetime", 16: "timespan", 17: "minute", 18: "second", 19: "time",
               0: "general list", 98: "table", 99: "dictionary"}


class UpdateError(ValueError):
    """An update that does not fit the table's schema; the message says what and where."""


def type_name(t: int) -> str:
    """A q type number as q names it, e.g. -9 'float atom', 7 'long vector'."""
    if t < 0:
        return f"{_TYPE_NAMES.get(-t, str(t))} atom"
    if 0 < t < 20:
        return f"{_TYPE_NAMES.get(t, str(t))} vector"
    return _TYPE_NAMES.get(t, f"type {t}")


def now_q() -> int:
    """The current time as a q timestamp value (ns since 2000.01.01, UTC)."""
    return time.time_ns() - Q_EPOCH_NS


@dataclass(frozen=True)
class TableSpec:
    """What the hot path needs of one table, precomputed: types, widths and byte prefixes."""

    name: str
    names: tuple[str, ...]
    qtypes: str
    vtypes: tuple[int, ...]   # q vector type per column (0 for a string column)
    widths: tuple[int, ...]   # bytes per value; 0 for symbol and string columns
    record_prefix: bytes      # (`upd; `name; ...  the start of a journal record and a publish
    table_prefix: bytes       # 98 0 99, the column names, and the general-list header of columns
    atoms: tuple[tuple[int, int], ...]  # per column in a one-row update: (type byte, width)
    one_heads: tuple[bytes, ...]        # per column: the vector header of a one-row column

    @property
    def empty_table(self) -> bytes:
        """The table with no rows and `g# on sym: what .u.sub answers (u.q's add)."""
        cols = []
        for i, (vt, qt) in enumerate(zip(self.vtypes, self.qtypes, strict=True)):
            cols.append(_VEC.pack(vt, _GROUPED if i == 1 else 0, 0) if qt != "C" else _VEC.pack(0, 0, 0))
        return self.table_prefix + b"".join(cols)


def table_spec(t: schema.Table) -> TableSpec:
    """The TableSpec of a schema table."""
    vtypes = tuple(codec.QTYPE_CHARS[c.qtype] for c in t.columns)
    widths = tuple(0 if c.qtype in "sC" else c.dtype.itemsize for c in t.columns)
    name = t.name.encode()
    return TableSpec(
        name=t.name, names=tuple(t.names), qtypes=t.qtypes, vtypes=vtypes, widths=widths,
        record_prefix=b"\x00\x00\x03\x00\x00\x00\xf5upd\x00\xf5" + name + b"\x00",
        table_prefix=b"\x62\x00\x63" + codec.encode_symbols(t.names) + _VEC.pack(0, 0, len(t.columns)),
        atoms=tuple((10, _STRING) if c.qtype == "C" else (256 - vt, _SYMBOL if c.qtype == "s" else w)
                    for c, vt, w in zip(t.columns, vtypes, widths, strict=True)),
        one_heads=tuple(_VEC.pack(vt, 0, 1) for vt in vtypes),
    )


def table_specs() -> dict[bytes, TableSpec]:
    """Every schema table's spec, keyed by its name as bytes (as it appears on the wire)."""
    return {name.encode(): table_spec(t) for name, t in schema.TABLES.items()}


@dataclass(slots=True)
class Update:
    """One accepted update: the table, its rows, each column's value bytes, and the journal data."""

    spec: TableSpec
    rows: int
    parts: list[bytes]  # per column: values without the vector header (strings: the char vectors)
    data: bytes         # the data object as journaled: what was sent, with the time column

    @property
    def record(self) -> bytes:
        """The journal record (`upd; `table; data)."""
        return self.spec.record_prefix + self.data

    def syms(self) -> list[bytes]:
        """The sym of each row, as bytes."""
        return self.parts[1].split(b"\x00")[:-1]


def call_name(payload: bytes) -> bytes | None:
    """The function name of a call `(`name; args...)`, or None if the payload is not one."""
    if len(payload) < 8 or payload[0] != 0 or payload[6] != _SYM_ATOM:
        return None
    end = payload.find(b"\x00", 7)
    return None if end < 0 else payload[7:end]


def parse_upd(payload: bytes, specs: dict[bytes, TableSpec], stamp: int | None = None) -> Update:
    """Check a `(`.u.upd; `table; data)` payload against the schema and return the Update.

    data is one row (a general list of atoms) or a list of column vectors, with or without the
    leading time column; when time is absent it is added as `stamp` (default: now). Raises
    UpdateError naming what does not fit."""
    if len(payload) < 17 or payload[:6] != b"\x00\x00\x03\x00\x00\x00" or payload[14] != _SYM_ATOM:
        raise UpdateError(".u.upd takes 2 arguments: a table name (symbol) and data")
    end = payload.find(b"\x00", 15)
    if end < 0:
        raise UpdateError("malformed table name")
    spec = specs.get(payload[15:end])
    if spec is None:
        raise UpdateError(f"unknown table `{payload[15:end].decode(errors='replace')}; "
                          f"known: {', '.join(s.name for s in specs.values())}")
    off = end + 1
    if off + 6 > len(payload) or payload[off] != 0:
        got = payload[off] if off < len(payload) else None
        got = got - 256 if got is not None and got > 127 else got
        raise UpdateError(f"{spec.name}: data must be a list of atoms (one row) or a list of "
                          f"columns, got {type_name(got) if got is not None else 'nothing'}")
    n = _I.unpack_from(payload, off + 2)[0]
    ncols = len(spec.qtypes)
    if n == ncols:
        first = 0
    elif n == ncols - 1:
        first = 1
    else:
        raise UpdateError(f"{spec.name}: expected {ncols} columns ({' '.join(spec.names)}) or "
                          f"{ncols - 1} without time, got {n}")
    pos = off + 6
    if pos >= len(payload):
        raise UpdateError(f"{spec.name}: data is truncated")
    if payload[pos] >= 128:
        parts, pos = _parse_row(payload, pos, spec, first)
        rows = 1
    else:
        parts, pos, rows = _parse_columns(payload, pos, spec, first)
    if pos != len(payload):
        raise UpdateError(f"{spec.name}: {len(payload) - pos} unexpected bytes after the data")
    if first:
        ts = _Q.pack(now_q() if stamp is None else stamp)
        if rows == 1 and payload[off + 6] >= 128:
            head, tcol = b"\xf4" + ts, ts
        else:
            tcol = ts * rows
            head = _VEC.pack(12, 0, rows) + tcol
        parts.insert(0, tcol)
        data = _VEC.pack(0, 0, ncols) + head + payload[off + 6 :]
    else:
        data = payload[off:]
    return Update(spec, rows, parts, data)


def _bad(spec: TableSpec, i: int, expected: str, got: int) -> UpdateError:
    got = got - 256 if got > 127 else got
    return UpdateError(f"{spec.name}: column {spec.names[i]} ({i + 1}) must be {expected}, "
                       f"got {type_name(got)}")


def _parse_row(buf: bytes, pos: int, spec: TableSpec, first: int) -> tuple[list[bytes], int]:
    """Values of a one-row update (a list of atoms; a string column holds a char vector)."""
    parts = []
    i = first
    try:
        for atom, w in spec.atoms[first:]:
            t = buf[pos]
            if w > 0 and t == atom:
                parts.append(buf[pos + 1 : pos + 1 + w])
                pos += 1 + w
            elif w == _SYMBOL and t == atom:
                end = buf.index(0, pos + 1)
                parts.append(buf[pos + 1 : end + 1])
                pos = end + 1
            elif w == _STRING and t == 10:
                size = 6 + _I.unpack_from(buf, pos + 2)[0]
                parts.append(buf[pos : pos + size])
                pos += size
            elif w == _STRING and t == 0xF6:  # a char atom: a one-character string
                parts.append(_VEC.pack(10, 0, 1) + buf[pos + 1 : pos + 2])
                pos += 2
            else:
                raise _bad(spec, i, "a string (char vector)" if w == _STRING
                           else f"a {type_name(-spec.vtypes[i])}", t)
            i += 1
    except UpdateError:
        raise
    except (IndexError, ValueError, struct.error):
        raise UpdateError(f"{spec.name}: data is truncated at column {spec.names[i]}") from None
    if pos > len(buf):
        raise UpdateError(f"{spec.name}: data is truncated")
    return parts, pos


def _parse_columns(buf: bytes, pos: int, spec: TableSpec, first: int) -> tuple[list[bytes], int, int]:
    """Values of a many-row update (a list of column vectors, all of the same length)."""
    parts = []
    rows = -1
    for i in range(first, len(spec.qtypes)):
        if pos + 6 > len(buf):
            raise UpdateError(f"{spec.name}: data is truncated at column {spec.names[i]}")
        t = buf[pos]
        vt = spec.vtypes[i]
        if t != vt:
            raise _bad(spec, i, "a list of strings" if spec.qtypes[i] == "C" else f"a {type_name(vt)}", t)
        count = _I.unpack_from(buf, pos + 2)[0]
        if rows < 0:
            rows = count
        elif count != rows:
            raise UpdateError(f"{spec.name}: column {spec.names[i]} has {count} values, "
                              f"{spec.names[first]} has {rows}: columns must be the same length")
        start = pos + 6
        if spec.qtypes[i] == "C":
            end = start
            for _ in range(count):
                if end + 6 > len(buf) or buf[end] != 10:
                    raise _bad(spec, i, "a list of strings (char vectors)", buf[end] if end < len(buf) else 0)
                end += 6 + _I.unpack_from(buf, end + 2)[0]
        elif vt == 11:
            end = _symbols_end(buf, start, count)
            if end < 0:
                raise UpdateError(f"{spec.name}: column {spec.names[i]} is truncated")
        else:
            end = start + count * spec.widths[i]
        if end > len(buf):
            raise UpdateError(f"{spec.name}: column {spec.names[i]} is truncated")
        parts.append(buf[start:end])
        pos = end
    return parts, pos, rows


@lru_cache(maxsize=512)
def _symbols_re(n: int) -> re.Pattern:
    return re.compile(rb"(?:[^\x00]*\x00){%d}" % n)


def _symbols_end(buf: bytes, pos: int, n: int) -> int:
    """End of n NUL-terminated symbols starting at pos (-1 if truncated), by a cached regex:
    faster here than a find() loop or numpy for the short vectors of an update."""
    if n == 0:
        return pos
    m = _symbols_re(n).match(buf, pos)
    return -1 if m is None else m.end()


def table_bytes(spec: TableSpec, rows: int, columns: list[bytes]) -> bytes:
    """A table (98) of `rows` rows from each column's value bytes (as in Update.parts)."""
    heads = spec.one_heads if rows == 1 else [_VEC.pack(vt, 0, rows) for vt in spec.vtypes]
    return spec.table_prefix + b"".join(chain.from_iterable(zip(heads, columns, strict=True)))


def merge(updates: list[Update]) -> tuple[int, list[bytes]]:
    """Rows and column value bytes of several updates of one table, concatenated (batch mode)."""
    if len(updates) == 1:
        return updates[0].rows, updates[0].parts
    ncols = len(updates[0].parts)
    return (sum(u.rows for u in updates),
            [b"".join(u.parts[c] for u in updates) for c in range(ncols)])


def publish_frame(spec: TableSpec, rows: int, columns: list[bytes]) -> bytes:
    """The whole async message subscribers get, (`upd; `table; table), built with one join."""
    heads = spec.one_heads if rows == 1 else [_VEC.pack(vt, 0, rows) for vt in spec.vtypes]
    body = list(chain.from_iterable(zip(heads, columns, strict=True)))
    size = 8 + len(spec.record_prefix) + len(spec.table_prefix) + sum(map(len, body))
    return b"".join([_FRAME.pack(1, 0, 0, 0, size), spec.record_prefix, spec.table_prefix, *body])


def table_frame(spec: TableSpec, table: bytes) -> bytes:
    """The async message (`upd; `table; table) for an already-built table."""
    size = 8 + len(spec.record_prefix) + len(table)
    return b"".join([_FRAME.pack(1, 0, 0, 0, size), spec.record_prefix, table])


def filter_rows(spec: TableSpec, rows: int, columns: list[bytes], keep) -> bytes | None:
    """The table of the rows whose sym is in `keep` (a set of bytes), or None if there are none.

    Decodes the table (this runs only for subscribers that filter by sym)."""
    syms = columns[1].split(b"\x00")[:-1]
    mask = [s in keep for s in syms]
    if not any(mask):
        return None
    table = table_bytes(spec, rows, columns)
    if all(mask):
        return table
    df, _ = codec.decode(table)
    return codec.encode_table(df[mask].reset_index(drop=True), spec.qtypes, list(spec.names))
