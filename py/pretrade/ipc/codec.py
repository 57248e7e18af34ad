"""q objects <-> bytes: the payload of a kdb+ IPC message (no 8-byte header), little-endian.

Hand-written rather than PyKX because the tickerplant's hot path is small messages, where PyKX's
conversion to Python objects costs far more than the decode itself (docs/benchmarks.md, "IPC
codec"). The mapping follows PyKX's conventions:

  Python                              q
  bool / int / float                  boolean (-1) / long (-7) / float (-9)
  str / bytes                         symbol atom (-11) / char vector (10)
  None                                generic null (::)
  numpy.datetime64, pandas.Timestamp  timestamp (-12; datetime64[D] -> date, [M] -> month)
  datetime.date / numpy.timedelta64   date (-14) / timespan (-16)
  uuid.UUID                           guid (-2)
  numpy arrays                        vectors by dtype; object arrays of str -> symbol vector
  list / tuple / dict                 general list (0) / dictionary (99, str keys -> symbols)
  pandas.DataFrame                    table (98); with a named index: keyed table
  QError                              error (-128)

Decoding gives atoms as Python or numpy scalars, vectors as numpy arrays (symbols: object arrays of
str; char vectors: bytes), tables as DataFrames, functions as opaque `QFunction` values. A Python
value alone cannot say symbol vs string or long vs int, so `encode_row`, `encode_columns` and
`encode_table` take q type characters (those of pretrade.schema, e.g. "psffj", "C" = strings).
"""

from __future__ import annotations

import datetime as _dt
import struct
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "QDecodeError",
    "QEncodeError",
    "QError",
    "QFunction",
    "QDictionary",
    "QRaw",
    "encode",
    "decode",
    "loads",
    "object_size",
    "encode_atom",
    "encode_row",
    "encode_vector",
    "encode_columns",
    "encode_table",
    "encode_symbols",
    "QTYPE_CHARS",
]


class QError(Exception):
    """A q error (type -128): raised by clients on an error response, sent by servers as one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QError) and other.message == self.message

    def __hash__(self) -> int:
        return hash(("QError", self.message))


class QDecodeError(ValueError):
    """The bytes are not a well-formed q object (malformed, truncated or unsupported type)."""


class QEncodeError(TypeError):
    """The Python value has no q representation (or not the one the q type asked for)."""


@dataclass(frozen=True)
class QFunction:
    """A q function (types 100..112) received over IPC: kept as its serialized bytes, not run."""

    qtype: int
    raw: bytes

    def __repr__(self) -> str:
        return f"QFunction(type={self.qtype}, {len(self.raw)} bytes)"


@dataclass(frozen=True)
class QRaw:
    """An already-encoded q object, embedded as it is by encode (e.g. a table from encode_table
    inside a list: encode(["upd", "trade", QRaw(encode_table(...))]))."""

    data: bytes


@dataclass
class QDictionary:
    """A q dictionary whose keys Python cannot hash (e.g. lists): keys and values side by side."""

    keys: Any
    values: Any


# --- constants -------------------------------------------------------------------------------

NULL_J = np.iinfo(np.int64).min
NULL_I = np.iinfo(np.int32).min
EPOCH_NS = 946_684_800 * 1_000_000_000  # 2000.01.01 in ns since 1970
EPOCH_DAYS = 10_957
EPOCH_MONTHS = 360
_NAT_NS = np.datetime64("NaT", "ns")
_NS = np.dtype("datetime64[ns]")

# q type character -> q vector type number ("C" is a list of char vectors: type 0)
QTYPE_CHARS: dict[str, int] = {
    "b": 1,
    "g": 2,
    "x": 4,
    "h": 5,
    "i": 6,
    "j": 7,
    "e": 8,
    "f": 9,
    "c": 10,
    "s": 11,
    "p": 12,
    "m": 13,
    "d": 14,
    "z": 15,
    "n": 16,
    "u": 17,
    "v": 18,
    "t": 19,
    "C": 0,
}

# vector type -> element size in bytes (symbols: variable)
_SIZES = {
    1: 1,
    2: 16,
    4: 1,
    5: 2,
    6: 4,
    7: 8,
    8: 4,
    9: 8,
    10: 1,
    12: 8,
    13: 4,
    14: 4,
    15: 8,
    16: 8,
    17: 4,
    18: 4,
    19: 4,
}
# vector type -> numpy dtype of the raw little-endian values
_RAW_DTYPES = {
    1: np.dtype("bool"),
    4: np.dtype("uint8"),
    5: np.dtype("<i2"),
    6: np.dtype("<i4"),
    7: np.dtype("<i8"),
    8: np.dtype("<f4"),
    9: np.dtype("<f8"),
    12: np.dtype("<i8"),
    13: np.dtype("<i4"),
    14: np.dtype("<i4"),
    15: np.dtype("<f8"),
    16: np.dtype("<i8"),
    17: np.dtype("<i4"),
    18: np.dtype("<i4"),
    19: np.dtype("<i4"),
}
_UNIT = {17: "m", 18: "s", 19: "ms"}

_B = struct.Struct("<b")
_I = struct.Struct("<i")
_Q = struct.Struct("<q")
_D = struct.Struct("<d")
_ATOM_STRUCTS = {
    -1: struct.Struct("<?"),
    -4: struct.Struct("<B"),
    -5: struct.Struct("<h"),
    -6: _I,
    -7: _Q,
    -8: struct.Struct("<f"),
    -9: _D,
    -12: _Q,
    -13: _I,
    -14: _I,
    -15: _D,
    -16: _Q,
    -17: _I,
    -18: _I,
    -19: _I,
}
_VEC_HEADER = struct.Struct("<bbi")  # type, attribute, length
_ATOM_J = struct.Struct("<bq")
_ATOM_F = struct.Struct("<bd")


# --- decoding --------------------------------------------------------------------------------


def _as_buffer(buf: Any) -> Any:
    """A buffer with .find and slicing to bytes (bytes, bytearray, mmap pass; memoryview copies)."""
    if isinstance(buf, memoryview):
        return buf.tobytes()
    return buf


def loads(buf: Any) -> Any:
    """Decode one whole payload; trailing bytes are an error (a message holds exactly one object)."""
    buf = _as_buffer(buf)
    obj, end = decode(buf, 0)
    if end != len(buf):
        raise QDecodeError(f"{len(buf) - end} trailing bytes after the object")
    return obj


def decode(buf: Any, offset: int = 0) -> tuple[Any, int]:
    """Decode the q object at `offset`; returns it and the offset just past it."""
    buf = _as_buffer(buf)
    try:
        return _decode(buf, offset)
    except QDecodeError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError) as e:
        raise QDecodeError(f"malformed or truncated q object at offset {offset}: {e}") from None


def _decode(buf: Any, pos: int) -> tuple[Any, int]:
    t = buf[pos]
    if t > 127:
        t -= 256
    pos += 1
    if t == 0:
        n = _I.unpack_from(buf, pos + 1)[0]
        pos += 5
        _check_count(n, pos, buf)
        out = []
        append = out.append
        for _ in range(n):  # inline the commonest atoms: symbol, long, float, timestamp
            t = buf[pos]
            if t == 0xF5:
                end = buf.find(b"\x00", pos + 1)
                if end < 0:
                    raise QDecodeError(f"unterminated symbol at offset {pos + 1}")
                append(buf[pos + 1 : end].decode("utf-8", "surrogateescape"))
                pos = end + 1
            elif t == 0xF9:
                append(_Q.unpack_from(buf, pos + 1)[0])
                pos += 9
            elif t == 0xF7:
                append(_D.unpack_from(buf, pos + 1)[0])
                pos += 9
            elif t == 0xF4:
                v = _Q.unpack_from(buf, pos + 1)[0]
                append(_NAT_NS if v == NULL_J else np.datetime64(v + EPOCH_NS, "ns"))
                pos += 9
            else:
                item, pos = _decode(buf, pos)
                append(item)
        return out, pos
    if t < 0:
        return _decode_atom(buf, pos, t)
    if t <= 19:
        return _decode_vector(buf, pos, t)
    if t == 98:
        pos += 1  # attribute
        if buf[pos] != 99:
            raise QDecodeError(f"table at offset {pos - 2} does not hold a dictionary")
        names, pos = _decode(buf, pos + 1)
        cols, pos = _decode(buf, pos)
        return _make_frame(names, cols), pos
    if t in (99, 127):
        keys, pos = _decode(buf, pos)
        values, pos = _decode(buf, pos)
        return _make_dict(keys, values), pos
    if t == 101 and buf[pos] == 0:
        return None, pos + 1
    if 100 <= t <= 111:
        end = _skip(buf, pos - 1)
        return QFunction(t, bytes(buf[pos - 1 : end])), end
    raise QDecodeError(f"unsupported q type {t} at offset {pos - 1}")


def _check_count(n: int, pos: int, buf: Any) -> None:
    if n < 0 or n > len(buf) - pos:
        raise QDecodeError(f"bad length {n} at offset {pos - 4} (buffer has {len(buf)} bytes)")


def _decode_atom(buf: Any, pos: int, t: int) -> tuple[Any, int]:
    if t == -11:
        end = buf.find(b"\x00", pos)
        if end < 0:
            raise QDecodeError(f"unterminated symbol at offset {pos}")
        return buf[pos:end].decode("utf-8", "surrogateescape"), end + 1
    if t == -10:
        if pos + 1 > len(buf):
            raise QDecodeError("truncated char atom")
        return bytes(buf[pos : pos + 1]), pos + 1
    if t == -128:
        end = buf.find(b"\x00", pos)
        if end < 0:
            raise QDecodeError(f"unterminated error message at offset {pos}")
        return QError(bytes(buf[pos:end]).decode("utf-8", "replace")), end + 1
    if t == -2:
        if pos + 16 > len(buf):
            raise QDecodeError("truncated guid atom")
        return uuid.UUID(bytes=bytes(buf[pos : pos + 16])), pos + 16
    s = _ATOM_STRUCTS.get(t)
    if s is None:
        raise QDecodeError(f"unsupported q atom type {t} at offset {pos - 1}")
    v = s.unpack_from(buf, pos)[0]
    pos += s.size
    if t in (-7, -9, -1, -6, -5, -4, -8):
        return v, pos
    return _temporal_atom(t, v), pos


def _temporal_atom(t: int, v: Any) -> Any:
    if t == -12:
        return _NAT_NS if v == NULL_J else np.datetime64(v + EPOCH_NS, "ns")
    if t == -16:
        return np.timedelta64(v, "ns")  # int64 min is NaT in numpy too
    if t == -14:
        if v == NULL_I:
            return np.datetime64("NaT", "D")
        try:
            return _dt.date(2000, 1, 1) + _dt.timedelta(days=v)
        except OverflowError:  # beyond Python's years 1..9999 (e.g. q's infinity 0Wd)
            return np.datetime64(v + EPOCH_DAYS, "D")
    if t == -13:
        return np.datetime64("NaT", "M") if v == NULL_I else np.datetime64(v + EPOCH_MONTHS, "M")
    if t == -15:
        if not abs(v) < 1e11:  # null (NaN), infinities and nonsense: NaT
            return np.datetime64("NaT", "ms")
        return np.datetime64(round(v * 86_400_000) + EPOCH_DAYS * 86_400_000, "ms")
    unit = _UNIT[-t]
    return np.timedelta64("NaT", unit) if v == NULL_I else np.timedelta64(v, unit)


def _decode_vector(buf: Any, pos: int, t: int) -> tuple[Any, int]:
    n = _I.unpack_from(buf, pos + 1)[0]
    pos += 5
    _check_count(n, pos, buf)
    if t == 11:
        return _decode_symbols(buf, pos, n)
    size = _SIZES.get(t)
    if size is None:
        raise QDecodeError(f"unsupported q vector type {t} at offset {pos - 6}")
    end = pos + n * size
    if end > len(buf):
        raise QDecodeError(f"truncated vector of type {t}: needs {end} bytes, have {len(buf)}")
    if t == 10:
        return bytes(buf[pos:end]), end
    if t == 2:
        raw = bytes(buf[pos:end])
        out = np.empty(n, dtype=object)
        for i in range(n):
            out[i] = uuid.UUID(bytes=raw[16 * i : 16 * i + 16])
        return out, end
    raw = np.frombuffer(buf, dtype=_RAW_DTYPES[t], count=n, offset=pos)
    return _vector_from_raw(t, raw), end


def _vector_from_raw(t: int, raw: np.ndarray) -> np.ndarray:
    """Convert raw q values to numpy (always a new, writable array)."""
    if t == 12:
        out = raw + EPOCH_NS
        out[raw == NULL_J] = NULL_J
        return out.view("datetime64[ns]")
    if t == 16:
        return raw.view("timedelta64[ns]").copy()
    if t in (13, 14):
        out = raw.astype("<i8") + (EPOCH_DAYS if t == 14 else EPOCH_MONTHS)
        out[raw == NULL_I] = NULL_J
        return out.view("datetime64[D]" if t == 14 else "datetime64[M]")
    if t in (17, 18, 19):
        out = raw.astype("<i8")
        out[raw == NULL_I] = NULL_J
        return out.view(f"timedelta64[{_UNIT[t]}]")
    if t == 15:
        bad = ~(np.abs(raw) < 1e11)  # null (NaN), infinities and nonsense become NaT
        out = np.round(np.where(bad, 0.0, raw) * 86_400_000).astype("<i8") + EPOCH_DAYS * 86_400_000
        out[bad] = NULL_J
        return out.view("datetime64[ms]")
    return raw.astype(raw.dtype.newbyteorder("="), copy=True)


def _nth_nul(buf: Any, pos: int, n: int) -> int:
    """Offset of the n-th NUL byte at or after pos (n >= 1), found with numpy in growing windows."""
    if n <= 16:
        for _ in range(n):
            end = buf.find(b"\x00", pos)
            if end < 0:
                raise QDecodeError("unterminated symbol in symbol vector")
            pos = end + 1
        return end
    window = max(64, 8 * n)
    total = len(buf) - pos
    while True:
        count = min(window, total)
        arr = np.frombuffer(buf, dtype=np.uint8, count=count, offset=pos)
        idx = np.flatnonzero(arr == 0)
        if len(idx) >= n:
            return pos + int(idx[n - 1])
        if count == total:
            raise QDecodeError(f"symbol vector of {n} items is truncated")
        window *= 4


def _decode_symbols(buf: Any, pos: int, n: int) -> tuple[np.ndarray, int]:
    out = np.empty(n, dtype=object)
    if n == 0:
        return out, pos
    end = _nth_nul(buf, pos, n)
    parts = bytes(buf[pos:end]).decode("utf-8", "surrogateescape").split("\x00")
    out[:] = parts
    return out, end + 1


def _items(v: Any) -> list:
    """The elements of a decoded q list as a Python list (numeric vectors as Python numbers)."""
    if isinstance(v, np.ndarray):
        return v.tolist() if v.dtype.kind in "biuf" else list(v)
    if isinstance(v, bytes):
        return [v[i : i + 1] for i in range(len(v))]
    if isinstance(v, list):
        return v
    return [v]


def _make_dict(keys: Any, values: Any) -> Any:
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(keys, pd.DataFrame) and isinstance(values, pd.DataFrame):
        return pd.concat([keys.reset_index(drop=True), values.reset_index(drop=True)], axis=1)
    ks, vs = _items(keys), _items(values)
    if len(ks) != len(vs):
        raise QDecodeError(f"dictionary with {len(ks)} keys and {len(vs)} values")
    try:
        return dict(zip(ks, vs, strict=True))
    except TypeError:
        return QDictionary(keys, values)


def _make_frame(names: Any, cols: Any) -> Any:
    import pandas as pd

    if not isinstance(names, np.ndarray) or names.dtype != object:
        raise QDecodeError("table column names are not a symbol vector")
    if not isinstance(cols, list) or len(cols) != len(names):
        raise QDecodeError("table columns are not a general list matching the names")
    data = {}
    length = None
    for name, col in zip(names, cols, strict=True):
        if isinstance(col, bytes):  # a char column
            col = np.frombuffer(col, dtype="S1").copy()
        elif isinstance(col, list):
            col = _object_array(col)
        elif not isinstance(col, np.ndarray):
            raise QDecodeError(f"table column {name} is not a list")
        if length is None:
            length = len(col)
        elif len(col) != length:
            raise QDecodeError(f"table column {name} has {len(col)} rows, expected {length}")
        data[name] = col
    return pd.DataFrame(data, copy=False)


def _object_array(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        out[i] = x
    return out


# --- structural walk (no Python objects built) -----------------------------------------------


def object_size(buf: Any, offset: int = 0) -> int:
    """The size in bytes of the q object at `offset`, by a structural walk; QDecodeError if bad."""
    buf = _as_buffer(buf)
    try:
        end = _skip(buf, offset)
    except QDecodeError:
        raise
    except (struct.error, IndexError, ValueError) as e:
        raise QDecodeError(f"malformed or truncated q object at offset {offset}: {e}") from None
    if end > len(buf):
        raise QDecodeError(f"truncated q object at offset {offset}: needs {end - offset} bytes")
    return end - offset


# unsigned type byte -> whole size of a fixed-size atom (type byte included); 0 otherwise
_FIXED_ATOM = [0] * 256
for _t, _size in _SIZES.items():
    _FIXED_ATOM[256 - _t] = 1 + _size


def _skip(buf: Any, pos: int) -> int:
    """Offset just past the object at pos."""
    t = buf[pos]
    if t > 127:
        t -= 256
    pos += 1
    if t < 0:
        if t in (-11, -128):
            end = buf.find(b"\x00", pos)
            if end < 0:
                raise QDecodeError(f"unterminated symbol at offset {pos}")
            return end + 1
        if t == -2:
            return pos + 16
        size = _SIZES.get(-t)
        if size is None:
            raise QDecodeError(f"unsupported q atom type {t} at offset {pos - 1}")
        return pos + size
    if t == 0:
        n = _I.unpack_from(buf, pos + 1)[0]
        pos += 5
        _check_count(n, pos, buf)
        fixed = _FIXED_ATOM
        for _ in range(n):  # inline fixed-size atoms and symbols
            t = buf[pos]
            size = fixed[t]
            if size:
                pos += size
            elif t == 0xF5:
                end = buf.find(b"\x00", pos + 1)
                if end < 0:
                    raise QDecodeError(f"unterminated symbol at offset {pos + 1}")
                pos = end + 1
            else:
                pos = _skip(buf, pos)
        return pos
    if t <= 19:
        n = _I.unpack_from(buf, pos + 1)[0]
        pos += 5
        _check_count(n, pos, buf)
        if t == 11:
            return pos if n == 0 else _nth_nul(buf, pos, n) + 1
        size = _SIZES.get(t)
        if size is None:
            raise QDecodeError(f"unsupported q vector type {t} at offset {pos - 6}")
        return pos + n * size
    if t == 98:
        return _skip(buf, pos + 1)
    if t in (99, 127):
        return _skip(buf, _skip(buf, pos))
    if t == 100:  # lambda: context name, then the source as a char vector
        end = buf.find(b"\x00", pos)
        if end < 0:
            raise QDecodeError(f"unterminated lambda context at offset {pos}")
        return _skip(buf, end + 1)
    if 101 <= t <= 103:
        return pos + 1
    if t in (104, 105):
        n = _I.unpack_from(buf, pos)[0]
        pos += 4
        _check_count(n, pos, buf)
        for _ in range(n):
            pos = _skip(buf, pos)
        return pos
    if 106 <= t <= 111:
        return _skip(buf, pos)
    raise QDecodeError(f"unsupported q type {t} at offset {pos - 1}")


# --- encoding --------------------------------------------------------------------------------


def encode(obj: Any) -> bytes:
    """Encode a Python value as a q object (see the module docstring for the mapping)."""
    out: list[bytes] = []
    _encode(obj, out)
    return b"".join(out)


def _encode(obj: Any, out: list[bytes]) -> None:
    f = _EXACT.get(type(obj))
    if f is not None:
        f(obj, out)
        return
    _encode_other(obj, out)


def _enc_bool(v: Any, out: list[bytes]) -> None:
    out.append(b"\xff\x01" if v else b"\xff\x00")


def _enc_int(v: int, out: list[bytes]) -> None:
    try:
        out.append(_ATOM_J.pack(-7, v))
    except struct.error:
        raise QEncodeError(f"integer {v} does not fit a q long") from None


def _enc_float(v: float, out: list[bytes]) -> None:
    out.append(_ATOM_F.pack(-9, v))


def _sym_bytes(s: Any) -> bytes:
    b = s if isinstance(s, bytes) else str(s).encode("utf-8", "surrogateescape")
    if b"\x00" in b:
        raise QEncodeError(f"symbol {s!r} contains a NUL byte")
    return b


def _enc_str(v: str, out: list[bytes]) -> None:
    if "\x00" in v:
        raise QEncodeError(f"symbol {v!r} contains a NUL byte")
    out.append(b"\xf5" + v.encode("utf-8", "surrogateescape") + b"\x00")


def _enc_datetime64(v: np.datetime64, out: list[bytes]) -> None:
    if v.dtype == _NS:
        raw = int(v.view(np.int64))
        out.append(b"\xf4" + _Q.pack(NULL_J if raw == NULL_J else raw - EPOCH_NS))
    else:
        out.append(_temporal_atom_bytes(v))


def _enc_bytes(v: bytes, out: list[bytes]) -> None:
    out.append(_VEC_HEADER.pack(10, 0, len(v)))
    out.append(bytes(v))


def _enc_none(v: None, out: list[bytes]) -> None:
    out.append(b"\x65\x00")


def _enc_list(v: list | tuple, out: list[bytes]) -> None:
    out.append(_VEC_HEADER.pack(0, 0, len(v)))
    for x in v:
        _encode(x, out)


def _enc_dict(v: dict, out: list[bytes]) -> None:
    out.append(b"\x63")
    keys = list(v)
    if all(isinstance(k, str) for k in keys):
        out.append(encode_symbols(keys))
    else:
        _enc_list(keys, out)
    _enc_list(list(v.values()), out)


def _enc_ndarray(v: np.ndarray, out: list[bytes]) -> None:
    out.append(encode_vector(v))


def _encode_other(obj: Any, out: list[bytes]) -> None:
    if isinstance(obj, np.bool_ | bool):
        return _enc_bool(obj, out)
    if isinstance(obj, np.datetime64):  # before np.integer: timedelta64 is a signedinteger
        return _enc_datetime64(obj, out)
    if isinstance(obj, np.timedelta64):
        return out.append(b"\xf0" + _Q.pack(_timespan_ns(obj)))
    if isinstance(obj, np.integer):
        t = {np.dtype("uint8"): -4, np.dtype("int16"): -5, np.dtype("int32"): -6}.get(obj.dtype, -7)
        return out.append(_B.pack(t) + _ATOM_STRUCTS[t].pack(int(obj)))
    if isinstance(obj, np.floating):
        if obj.dtype == np.float32:
            return out.append(b"\xf8" + _ATOM_STRUCTS[-8].pack(float(obj)))
        return _enc_float(float(obj), out)
    if isinstance(obj, str):
        return _enc_str(obj, out)
    if isinstance(obj, bytes | bytearray | memoryview):
        return _enc_bytes(bytes(obj), out)
    if isinstance(obj, QError):
        return out.append(
            b"\x80" + str(obj.message).encode("utf-8", "replace").replace(b"\x00", b" ") + b"\x00"
        )
    if isinstance(obj, QRaw):
        return out.append(obj.data)
    if isinstance(obj, QFunction):
        return out.append(obj.raw)
    pd = sys.modules.get("pandas")
    if pd is not None:
        if obj is pd.NaT:
            return out.append(b"\xf4" + _Q.pack(NULL_J))
        if isinstance(obj, pd.Timestamp):
            return out.append(b"\xf4" + _Q.pack(_timestamp_ns(obj)))
        if isinstance(obj, pd.Timedelta):
            return out.append(b"\xf0" + _Q.pack(obj.value))
        if isinstance(obj, pd.DataFrame):
            return _enc_frame(obj, out)
        if isinstance(obj, pd.Series | pd.Index):
            return out.append(_series_vector(obj))
    if isinstance(obj, _dt.datetime):
        return out.append(b"\xf4" + _Q.pack(_timestamp_ns(obj)))
    if isinstance(obj, _dt.date):
        return out.append(b"\xf2" + _I.pack(obj.toordinal() - _dt.date(2000, 1, 1).toordinal()))
    if isinstance(obj, _dt.timedelta):
        return out.append(b"\xf0" + _Q.pack(_timedelta_ns(obj)))
    if isinstance(obj, uuid.UUID):
        return out.append(b"\xfe" + obj.bytes)
    if isinstance(obj, QDictionary):
        out.append(b"\x63")
        _encode(obj.keys, out)
        return _encode(obj.values, out)
    if isinstance(obj, list | tuple):
        return _enc_list(obj, out)
    if isinstance(obj, dict):
        return _enc_dict(obj, out)
    if isinstance(obj, int):
        return _enc_int(int(obj), out)
    if isinstance(obj, float):
        return _enc_float(float(obj), out)
    raise QEncodeError(f"cannot encode a {type(obj).__name__} as a q object")


_EXACT = {
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    str: _enc_str,
    bytes: _enc_bytes,
    type(None): _enc_none,
    list: _enc_list,
    tuple: _enc_list,
    dict: _enc_dict,
    np.ndarray: _enc_ndarray,
    np.datetime64: _enc_datetime64,
    np.float64: _enc_float,
}


def _timestamp_ns(v: Any) -> int:
    """q timestamp value (ns since 2000.01.01) of a datetime-like; naive means UTC."""
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(v, pd.Timestamp):
        if v is pd.NaT:
            return NULL_J
        if v.tzinfo is not None:
            v = v.tz_convert("UTC").tz_localize(None)
        return int(v.as_unit("ns").value) - EPOCH_NS
    if isinstance(v, _dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(_dt.UTC).replace(tzinfo=None)
        d = v - _dt.datetime(2000, 1, 1)
        return (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1_000
    if isinstance(v, np.datetime64):
        if np.isnat(v):
            return NULL_J
        return int(v.astype("datetime64[ns]").astype(np.int64)) - EPOCH_NS
    raise QEncodeError(f"cannot encode a {type(v).__name__} as a q timestamp")


def _timedelta_ns(v: _dt.timedelta) -> int:
    return (v.days * 86_400 + v.seconds) * 1_000_000_000 + v.microseconds * 1_000


def _timespan_ns(v: Any) -> int:
    if isinstance(v, np.timedelta64):
        return NULL_J if np.isnat(v) else int(v.astype("timedelta64[ns]").astype(np.int64))
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(v, pd.Timedelta):
        return int(v.value)
    if isinstance(v, _dt.timedelta):
        return _timedelta_ns(v)
    if v is None or (pd is not None and v is pd.NaT):
        return NULL_J
    raise QEncodeError(f"cannot encode a {type(v).__name__} as a q timespan")


def _temporal_atom_bytes(v: np.datetime64) -> bytes:
    unit = np.datetime_data(v.dtype)[0]
    if unit == "D":
        raw = NULL_I if np.isnat(v) else int(v.astype(np.int64)) - EPOCH_DAYS
        return b"\xf2" + _I.pack(raw)
    if unit == "M":
        raw = NULL_I if np.isnat(v) else int(v.astype(np.int64)) - EPOCH_MONTHS
        return b"\xf3" + _I.pack(raw)
    return b"\xf4" + _Q.pack(_timestamp_ns(v))


def encode_symbols(values: Any) -> bytes:
    """A symbol vector (type 11) from an iterable of str (bytes are taken as they are)."""
    values = values.tolist() if isinstance(values, np.ndarray) else list(values)
    n = len(values)
    try:
        text = "\x00".join(values)
    except TypeError:  # not all str: bytes (or something to refuse) among them
        body = b"".join(_sym_bytes(s) + b"\x00" for s in values)
    else:
        if text.count("\x00") != n - 1 and n:
            raise QEncodeError("a symbol contains a NUL byte")
        body = text.encode("utf-8", "surrogateescape") + b"\x00" if n else b""
    return _VEC_HEADER.pack(11, 0, n) + body


def _raw_vector(t: int, arr: np.ndarray) -> bytes:
    data = np.ascontiguousarray(arr, dtype=_RAW_DTYPES[t]).tobytes()
    return _VEC_HEADER.pack(t, 0, len(arr)) + data


def _ns_to_q(ns: np.ndarray) -> np.ndarray:
    out = ns - EPOCH_NS
    out[ns == NULL_J] = NULL_J
    return out


def encode_vector(arr: Any) -> bytes:
    """A q vector from a numpy array, chosen by its dtype (see the module docstring)."""
    arr = np.asarray(arr)
    if arr.ndim == 0:
        return encode(arr[()])
    if arr.ndim > 1:
        return encode(list(arr))
    k = arr.dtype.kind
    if k == "b":
        return _raw_vector(1, arr)
    if k in "iu":
        t = {
            np.dtype("uint8"): 4,
            np.dtype("int8"): 5,
            np.dtype("int16"): 5,
            np.dtype("uint16"): 6,
            np.dtype("int32"): 6,
        }.get(arr.dtype.newbyteorder("="), 7)
        if arr.dtype == np.uint64 and len(arr) and arr.max() > np.iinfo(np.int64).max:
            raise QEncodeError("uint64 values do not fit a q long")
        return _raw_vector(t, arr)
    if k == "f":
        return _raw_vector(8 if arr.dtype.itemsize <= 4 else 9, arr)
    if k == "M":
        unit = np.datetime_data(arr.dtype)[0]
        if unit in ("D", "M"):
            raw = arr.view("<i8") if arr.dtype.itemsize == 8 else arr.astype("<i8")
            q = raw - (EPOCH_DAYS if unit == "D" else EPOCH_MONTHS)
            q[raw == NULL_J] = NULL_I
            return _raw_vector(14 if unit == "D" else 13, q)
        ns = arr.astype("datetime64[ns]").view("<i8")
        return _raw_vector(12, _ns_to_q(ns))
    if k == "m":
        return _raw_vector(16, arr.astype("timedelta64[ns]").view("<i8"))
    if k == "S":
        if arr.dtype.itemsize == 1:
            return _VEC_HEADER.pack(10, 0, len(arr)) + arr.tobytes()
        return encode([bytes(x) for x in arr])
    if k == "U":
        return encode_symbols(arr.tolist())
    if k == "O":
        items = arr.tolist()
        if items and isinstance(items[0], str):
            try:
                return encode_symbols(items)
            except (TypeError, QEncodeError):
                pass
        return encode(items)
    raise QEncodeError(f"cannot encode a numpy array of dtype {arr.dtype}")


def _series_vector(s: Any) -> bytes:
    """A q vector from a pandas Series or Index, mapping pandas' own dtypes."""
    import pandas as pd

    dt = s.dtype
    if isinstance(dt, pd.DatetimeTZDtype):
        s = (
            s.dt.tz_convert("UTC").dt.tz_localize(None)
            if isinstance(s, pd.Series)
            else s.tz_convert("UTC").tz_localize(None)
        )
        return encode_vector(s.to_numpy())
    if isinstance(dt, pd.CategoricalDtype | pd.StringDtype) or (
        dt.kind == "O" and _all_str_or_na(s)
    ):
        return encode_symbols("" if _isna(x) else x for x in s.to_numpy(dtype=object))
    if isinstance(dt, pd.api.extensions.ExtensionDtype) and not isinstance(dt, pd.CategoricalDtype):
        kind = dt.kind
        if kind in "iu":
            return encode_vector(s.to_numpy(dtype="int64", na_value=NULL_J))
        if kind == "f":
            return encode_vector(s.to_numpy(dtype="float64", na_value=np.nan))
        if kind == "b":
            return encode_vector(s.to_numpy(dtype="bool", na_value=False))
    return encode_vector(s.to_numpy())


def _isna(x: Any) -> bool:
    return (
        x is None or (isinstance(x, float) and x != x) or type(x).__name__ in ("NAType", "NaTType")
    )


def _all_str_or_na(s: Any) -> bool:
    vals = s.to_numpy(dtype=object)
    return (
        len(vals) > 0
        and all(isinstance(x, str) or _isna(x) for x in vals)
        and any(isinstance(x, str) for x in vals)
    )


def _enc_frame(df: Any, out: list[bytes]) -> None:
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise QEncodeError("a table needs unique column names")
    if any(n is not None for n in df.index.names):
        keys = df.index.to_frame(index=False)
        out.append(b"\x63")
        _enc_frame(keys, out)
        _enc_frame(df.reset_index(drop=True), out)
        return
    out.append(b"\x62\x00\x63" + encode_symbols(names) + _VEC_HEADER.pack(0, 0, len(names)))
    for c in range(len(names)):
        out.append(_series_vector(df.iloc[:, c]))


# --- schema-directed encoding ----------------------------------------------------------------


def encode_atom(value: Any, qtype: str) -> bytes:
    """One value as the q atom of type character `qtype` ("C": a char vector from str/bytes)."""
    try:
        if qtype == "s":
            return b"\xf5" + _sym_bytes(value) + b"\x00"
        if qtype == "C":
            if isinstance(value, str):
                value = value.encode("utf-8")
            return _VEC_HEADER.pack(10, 0, len(value)) + bytes(value)
        if qtype == "f":
            return _ATOM_F.pack(-9, float(value))
        if qtype == "j":
            return _ATOM_J.pack(-7, _as_int(value))
        if qtype == "p":
            return b"\xf4" + _Q.pack(_timestamp_ns(value))
        if qtype == "n":
            return b"\xf0" + _Q.pack(_timespan_ns(value))
        if qtype == "d":
            if isinstance(value, _dt.datetime):
                value = value.date()
            if isinstance(value, _dt.date):
                return b"\xf2" + _I.pack(value.toordinal() - _dt.date(2000, 1, 1).toordinal())
            return _temporal_atom_bytes(np.datetime64(value, "D"))
        if qtype == "c":
            b = value.encode() if isinstance(value, str) else bytes(value)
            if len(b) != 1:
                raise QEncodeError(f"a char atom needs one byte, got {value!r}")
            return b"\xf6" + b
        if qtype == "g":
            return b"\xfe" + uuid.UUID(str(value)).bytes
        t = QTYPE_CHARS.get(qtype)
        if t is None or t == 0:
            raise QEncodeError(f"unknown q type character {qtype!r}")
        arr = np.asarray([value])
        return _B.pack(-t) + encode_vector(_to_qtype(arr, qtype))[6:]
    except (struct.error, ValueError, TypeError, OverflowError) as e:
        if isinstance(e, QEncodeError):
            raise
        raise QEncodeError(f"cannot encode {value!r} as q type {qtype!r}: {e}") from None


def _as_int(v: Any) -> int:
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
        if isinstance(v, float | np.floating) and float(v).is_integer():
            return int(v)
        raise QEncodeError(f"expected an integer, got {v!r}")
    return int(v)


def encode_row(values: Any, qtypes: str) -> bytes:
    """A general list of atoms with exact q types: one row of `.u.upd[table; row]`."""
    values = list(values)
    if len(values) != len(qtypes):
        raise QEncodeError(f"row has {len(values)} values for {len(qtypes)} types {qtypes!r}")
    return _VEC_HEADER.pack(0, 0, len(values)) + b"".join(
        encode_atom(v, t) for v, t in zip(values, qtypes, strict=True)
    )


_QTYPE_DTYPES = {  # q type character -> numpy dtype of its vector
    "b": "bool",
    "x": "uint8",
    "h": "int16",
    "i": "int32",
    "j": "int64",
    "e": "float32",
    "f": "float64",
    "p": "datetime64[ns]",
    "m": "datetime64[M]",
    "d": "datetime64[D]",
    "n": "timedelta64[ns]",
}


def _to_qtype(col: Any, qtype: str) -> np.ndarray:
    """A numpy array holding `col` with the numpy dtype of q type character `qtype`."""
    arr = col.to_numpy() if hasattr(col, "to_numpy") else np.asarray(col)
    if arr.size == 0:
        return np.array([], dtype=_QTYPE_DTYPES.get(qtype, "float64"))
    if qtype == "p":
        if arr.dtype.kind != "M":
            if arr.dtype.kind == "O" or arr.dtype.kind == "U":
                arr = np.array(
                    [
                        np.datetime64("NaT") if _isna(x) else np.datetime64(_as_naive(x), "ns")
                        for x in arr
                    ],
                    dtype="datetime64[ns]",
                )
            else:
                raise QEncodeError(f"timestamp column needs datetime values, got dtype {arr.dtype}")
        return arr
    if qtype == "d":
        return arr.astype("datetime64[D]") if arr.dtype.kind in "MOU" else _fail(arr, qtype)
    if qtype == "m":
        return arr.astype("datetime64[M]") if arr.dtype.kind in "MOU" else _fail(arr, qtype)
    if qtype == "n":
        return arr.astype("timedelta64[ns]") if arr.dtype.kind in "mO" else _fail(arr, qtype)
    dtype = _QTYPE_DTYPES.get(qtype)  # p, d, m and n were handled above
    if dtype is None:
        raise QEncodeError(f"q type {qtype!r} has no numpy dtype")
    if arr.dtype.kind in "biuf":
        if np.dtype(dtype).kind in "iu" and arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr) & (arr == np.round(arr))):
                raise QEncodeError(
                    f"column of type {qtype!r} needs integers, got fractional or NaN values"
                )
        elif np.dtype(dtype).kind == "b" and arr.dtype.kind != "b":
            raise QEncodeError(f"boolean column needs bool values, got dtype {arr.dtype}")
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "O":
        try:
            return arr.astype(dtype)
        except (TypeError, ValueError) as e:
            raise QEncodeError(f"column of type {qtype!r}: {e}") from None
    return _fail(arr, qtype)


def _as_naive(x: Any) -> Any:
    if isinstance(x, _dt.datetime) and x.tzinfo is not None:
        return x.astimezone(_dt.UTC).replace(tzinfo=None)
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(x, pd.Timestamp) and x.tzinfo is not None:
        return x.tz_convert("UTC").tz_localize(None)
    return x


def _fail(arr: np.ndarray, qtype: str) -> np.ndarray:
    raise QEncodeError(f"column of dtype {arr.dtype} cannot be q type {qtype!r}")


def encode_column(col: Any, qtype: str) -> bytes:
    """One column as the q vector of type character `qtype` ("C": general list of char vectors)."""
    if qtype == "s":
        if hasattr(col, "to_numpy"):
            col = col.to_numpy(dtype=object)
        return encode_symbols("" if _isna(x) else x for x in col)
    if qtype == "C":
        items = col.tolist() if hasattr(col, "tolist") else list(col)
        parts = [_VEC_HEADER.pack(0, 0, len(items))]
        for x in items:
            b = x.encode("utf-8") if isinstance(x, str) else b"" if x is None else bytes(x)
            parts.append(_VEC_HEADER.pack(10, 0, len(b)))
            parts.append(b)
        return b"".join(parts)
    if qtype == "c":
        if isinstance(col, str):
            col = col.encode("utf-8")
        if isinstance(col, bytes | bytearray):
            return _VEC_HEADER.pack(10, 0, len(col)) + bytes(col)
        return encode_vector(np.asarray(col, dtype="S1"))
    if qtype == "g":
        items = list(col)
        return _VEC_HEADER.pack(2, 0, len(items)) + b"".join(uuid.UUID(str(x)).bytes for x in items)
    if qtype not in QTYPE_CHARS:
        raise QEncodeError(f"unknown q type character {qtype!r}")
    return encode_vector(_to_qtype(col, qtype))


def encode_columns(columns: Any, qtypes: str) -> bytes:
    """A general list of column vectors with exact q types: `.u.upd[table; columns]`."""
    columns = list(columns)
    if len(columns) != len(qtypes):
        raise QEncodeError(f"{len(columns)} columns for {len(qtypes)} types {qtypes!r}")
    lengths = {len(c) for c in columns if not isinstance(c, str)}
    if len(lengths) > 1:
        raise QEncodeError(f"columns have different lengths: {sorted(lengths)}")
    return _VEC_HEADER.pack(0, 0, len(columns)) + b"".join(
        encode_column(c, t) for c, t in zip(columns, qtypes, strict=True)
    )


def encode_table(df_or_columns: Any, qtypes: str, names: list[str]) -> bytes:
    """A table (98) with exact column types; a DataFrame, a dict of columns or a list of columns."""
    names = list(names)
    if len(names) != len(qtypes):
        raise QEncodeError(f"{len(names)} column names for {len(qtypes)} types {qtypes!r}")
    if isinstance(df_or_columns, dict) or hasattr(df_or_columns, "columns"):
        missing = [n for n in names if n not in df_or_columns]
        if missing:
            raise QEncodeError(f"missing columns: {', '.join(missing)}")
        columns = [df_or_columns[n] for n in names]
    else:
        columns = list(df_or_columns)
    return b"\x62\x00\x63" + encode_symbols(names) + encode_columns(columns, qtypes)
