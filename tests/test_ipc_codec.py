"""The q codec, cross-checked byte for byte against PyKX (unlicensed mode) in both directions."""

from __future__ import annotations

import contextlib
import datetime as dt
import struct
import uuid

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pretrade.ipc import codec
from pretrade.ipc.codec import (
    QDecodeError,
    QEncodeError,
    QError,
    QFunction,
    decode,
    encode,
    encode_columns,
    encode_row,
    encode_table,
    loads,
    object_size,
)

kx = pytest.importorskip("pykx")


def kser(x) -> bytes:
    """PyKX's serialization of a q object, without the 8-byte IPC header."""
    return bytes(kx.serialize(x))[8:]


NULL_J = np.iinfo(np.int64).min
TS = np.datetime64("2021-03-04T05:06:07.123456789", "ns")


# --- encode == PyKX, value by value ----------------------------------------------------------

ENCODE_CASES = [
    (1, kx.LongAtom(1)),
    (-(2**63), kx.LongAtom(NULL_J)),
    (1.5, kx.FloatAtom(1.5)),
    (float("nan"), kx.FloatAtom(float("nan"))),
    (True, kx.BooleanAtom(True)),
    ("abc", kx.SymbolAtom("abc")),
    ("", kx.SymbolAtom("")),
    ("zürich", kx.SymbolAtom("zürich")),
    (b"hello", kx.CharVector("hello")),
    (None, kx.toq(None)),
    (np.int16(3), kx.ShortAtom(3)),
    (np.int32(4), kx.IntAtom(4)),
    (np.uint8(7), kx.ByteAtom(7)),
    (np.float32(1.5), kx.RealAtom(1.5)),
    (TS, kx.toq(TS)),
    (pd.Timestamp("2021-03-04 05:06:07.123456789"), kx.toq(TS)),
    (dt.date(2021, 3, 4), kx.toq(dt.date(2021, 3, 4))),
    (np.timedelta64(5, "ns"), kx.toq(np.timedelta64(5, "ns"))),
    (uuid.UUID(int=12345), kx.toq(uuid.UUID(int=12345))),
    (np.array([True, False]), kx.toq(np.array([True, False]))),
    (np.array([1, 255], dtype=np.uint8), kx.toq(np.array([1, 255], dtype=np.uint8))),
    (np.array([1, -2], dtype=np.int16), kx.toq(np.array([1, -2], dtype=np.int16))),
    (np.array([1, -2], dtype=np.int32), kx.toq(np.array([1, -2], dtype=np.int32))),
    (np.array([1, NULL_J]), kx.toq(np.array([1, NULL_J]))),
    (np.array([1.5, np.nan], dtype=np.float32), kx.toq(np.array([1.5, np.nan], dtype=np.float32))),
    (np.array([1.5, np.nan]), kx.toq(np.array([1.5, np.nan]))),
    (
        np.array([TS, TS], dtype="datetime64[ns]"),
        kx.toq(np.array([TS, TS], dtype="datetime64[ns]")),
    ),
    (
        np.array(["2021-03-04", "1999-12-31"], dtype="datetime64[D]"),
        kx.toq(np.array(["2021-03-04", "1999-12-31"], dtype="datetime64[D]")),
    ),
    (
        np.array([5, -7], dtype="timedelta64[ns]"),
        kx.toq(np.array([5, -7], dtype="timedelta64[ns]")),
    ),
    (np.array(["a", "bb", ""], dtype=object), kx.toq(np.array(["a", "bb", ""], dtype=object))),
    (np.array([], dtype=np.int64), kx.toq(np.array([], dtype=np.int64))),
    (
        [1, "a", b"xy", [2.5, None]],
        kx.List(
            [
                kx.LongAtom(1),
                kx.SymbolAtom("a"),
                kx.CharVector("xy"),
                kx.List([kx.FloatAtom(2.5), kx.toq(None)]),
            ]
        ),
    ),
    ([], kx.List([])),
    ({"a": 1, "b": "x"}, kx.toq({"a": 1, "b": "x"})),
    (
        pd.DataFrame(
            {
                "a": np.array([1, 2]),
                "s": ["x", "y"],
                "f": [1.5, 2.5],
                "t": np.array([TS, TS], dtype="datetime64[ns]"),
            }
        ),
        kx.toq(
            pd.DataFrame(
                {
                    "a": np.array([1, 2]),
                    "s": ["x", "y"],
                    "f": [1.5, 2.5],
                    "t": np.array([TS, TS], dtype="datetime64[ns]"),
                }
            )
        ),
    ),
]


@pytest.mark.parametrize("value,kobj", ENCODE_CASES, ids=[repr(c[0])[:40] for c in ENCODE_CASES])
def test_encode_matches_pykx(value, kobj):
    assert encode(value) == kser(kobj)


def test_encode_error_and_generic_null():
    assert encode(QError("type")) == b"\x80type\x00"
    assert encode(None) == b"\x65\x00"
    assert loads(b"\x80type\x00") == QError("type")


# --- decode(PyKX bytes) == value, every atom and vector type ----------------------------------


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and (
                np.array_equal(a, b, equal_nan=a.dtype.kind in "fmM")
                if a.dtype.kind != "O"
                else list(a) == list(b)
            )
        )
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    if isinstance(a, np.datetime64 | np.timedelta64) and np.isnat(a):
        return isinstance(b, type(a)) and np.isnat(b) and a.dtype == b.dtype
    return type(a) is type(b) and a == b


DECODE_CASES = [
    (kx.BooleanAtom(True), True),
    (kx.toq(uuid.UUID(int=7)), uuid.UUID(int=7)),
    (kx.ByteAtom(200), 200),
    (kx.ShortAtom(-3), -3),
    (kx.IntAtom(4), 4),
    (kx.LongAtom(NULL_J), NULL_J),
    (kx.RealAtom(1.5), 1.5),
    (kx.FloatAtom(float("nan")), float("nan")),
    (kx.CharAtom(b"a"), b"a"),
    (kx.SymbolAtom("zürich"), "zürich"),
    (kx.toq(TS), TS),
    (
        b"\xf4" + struct.pack("<q", NULL_J),
        np.datetime64("NaT", "ns"),
    ),  # PyKX overflows on NaT atoms
    (kx.toq(np.datetime64("2021-03", "M"), ktype=kx.MonthAtom), np.datetime64("2021-03", "M")),
    (kx.toq(dt.date(2021, 3, 4)), dt.date(2021, 3, 4)),
    (kx.toq(np.timedelta64(5, "ns")), np.timedelta64(5, "ns")),
    (kx.toq(np.timedelta64(61, "m"), ktype=kx.MinuteAtom), np.timedelta64(61, "m")),
    (kx.toq(np.timedelta64(61, "s"), ktype=kx.SecondAtom), np.timedelta64(61, "s")),
    (kx.toq(np.timedelta64(61001, "ms"), ktype=kx.TimeAtom), np.timedelta64(61001, "ms")),
    (kx.toq(np.array([True, False])), np.array([True, False])),
    (
        kx.toq(np.array([uuid.UUID(int=1)], dtype=object), ktype=kx.GUIDVector),
        np.array([uuid.UUID(int=1)], dtype=object),
    ),
    (kx.toq(np.array([1, 255], dtype=np.uint8)), np.array([1, 255], dtype=np.uint8)),
    (kx.toq(np.array([1, -2], dtype=np.int16)), np.array([1, -2], dtype=np.int16)),
    (kx.toq(np.array([1, -2], dtype=np.int32)), np.array([1, -2], dtype=np.int32)),
    (kx.toq(np.array([1, NULL_J])), np.array([1, NULL_J])),
    (kx.toq(np.array([1.5], dtype=np.float32)), np.array([1.5], dtype=np.float32)),
    (kx.toq(np.array([1.5, np.nan])), np.array([1.5, np.nan])),
    (kx.CharVector("hello"), b"hello"),
    (kx.toq(np.array(["a", "", "ccc"], dtype=object)), np.array(["a", "", "ccc"], dtype=object)),
    (
        kx.toq(np.array([TS, TS], dtype="datetime64[ns]")),
        np.array([TS, TS], dtype="datetime64[ns]"),
    ),
    (
        kx.toq(np.array(["2021-03"], dtype="datetime64[M]")),
        np.array(["2021-03"], dtype="datetime64[M]"),
    ),
    (
        kx.toq(np.array(["2021-03-04", "1999-12-31"], dtype="datetime64[D]")),
        np.array(["2021-03-04", "1999-12-31"], dtype="datetime64[D]"),
    ),
    (
        kx.toq(np.array([5, -7], dtype="timedelta64[ns]")),
        np.array([5, -7], dtype="timedelta64[ns]"),
    ),
    (
        kx.toq(np.array([1, 2], dtype="timedelta64[m]"), ktype=kx.MinuteVector),
        np.array([1, 2], dtype="timedelta64[m]"),
    ),
    (
        kx.toq(np.array([1, 2], dtype="timedelta64[s]"), ktype=kx.SecondVector),
        np.array([1, 2], dtype="timedelta64[s]"),
    ),
    (
        kx.toq(np.array([1, 2], dtype="timedelta64[ms]"), ktype=kx.TimeVector),
        np.array([1, 2], dtype="timedelta64[ms]"),
    ),
    (kx.List([kx.LongAtom(1), kx.SymbolAtom("a"), kx.CharVector("xy")]), [1, "a", b"xy"]),
    (kx.toq({"a": 1, "b": "x"}), {"a": 1, "b": "x"}),
]


@pytest.mark.parametrize(
    "kobj,expected", DECODE_CASES, ids=[type(c[0]).__name__ for c in DECODE_CASES]
)
def test_decode_pykx_bytes(kobj, expected):
    raw = kobj if isinstance(kobj, bytes) else kser(kobj)
    value, end = decode(raw)
    assert end == len(raw) == object_size(raw)
    if isinstance(expected, list | dict):
        assert value == expected
    else:
        assert _same(expected, value), (expected, value)


def test_temporal_nulls_are_q_nulls():
    # PyKX (unlicensed) turns NaT into 1970 values, so nulls are checked against q's bytes:
    # 0Np / 0Nd / 0Nm / 0Nn are the type's minimum integer
    for dtype, t, fmt in [
        ("datetime64[ns]", 12, "<q"),
        ("datetime64[D]", 14, "<i"),
        ("datetime64[M]", 13, "<i"),
        ("timedelta64[ns]", 16, "<q"),
        ("timedelta64[s]", 16, "<q"),
    ]:
        arr = np.array(["NaT"], dtype=dtype)
        null = np.iinfo(np.int64 if fmt == "<q" else np.int32).min
        raw = encode(arr)
        assert raw == struct.pack("<bbi", t, 0, 1) + struct.pack(fmt, null), dtype
        assert np.isnat(loads(raw)[0])
    assert encode(np.datetime64("NaT", "ns")) == b"\xf4" + struct.pack("<q", NULL_J)
    assert encode(pd.NaT) == b"\xf4" + struct.pack("<q", NULL_J)
    for t in (17, 18, 19):
        assert np.isnat(loads(struct.pack("<bbii", t, 0, 1, np.iinfo(np.int32).min))[0])


def test_datetime_type_15_decodes_to_ms():
    # PyKX cannot build a datetime (z) unlicensed: 2000.01.02T12:00:00.000 is 1.5 days; then null
    raw = struct.pack("<bd", -15, 1.5)
    assert decode(raw)[0] == np.datetime64("2000-01-02T12:00:00.000", "ms")
    vec = struct.pack("<bbidd", 15, 0, 2, 1.5, float("nan"))
    out = loads(vec)
    assert out.dtype == np.dtype("datetime64[ms]") and np.isnat(out[1])


def test_decoded_vectors_are_writable():
    arr = loads(encode(np.array([1, 2, 3])))
    arr[0] = 9
    assert arr[0] == 9


def test_table_round_trip_with_pykx():
    df = pd.DataFrame(
        {
            "time": np.array([TS, TS], dtype="datetime64[ns]"),
            "sym": ["a", "b"],
            "price": [1.5, 2.5],
            "size": np.array([10, 20], dtype=np.int64),
        }
    )
    raw = kser(kx.toq(df))
    got = loads(raw)
    assert list(got.columns) == ["time", "sym", "price", "size"]
    assert got["time"].dtype == np.dtype("datetime64[ns]")
    assert got["sym"].tolist() == ["a", "b"]
    assert got["size"].tolist() == [10, 20]
    back = kx.deserialize(b"\x01\x00\x00\x00" + struct.pack("<I", len(raw) + 8) + encode(got)).pd()
    assert back["sym"].tolist() == ["a", "b"] and back["price"].tolist() == [1.5, 2.5]


def test_keyed_table_puts_key_columns_first():
    df = pd.DataFrame({"v": [1.5, 2.5], "k": ["a", "b"]}).set_index("k")
    raw = kser(kx.toq(df))
    assert raw[0] == 99
    got = loads(raw)
    assert list(got.columns) == ["k", "v"] and got["k"].tolist() == ["a", "b"]
    assert encode(df) == raw


def test_functions_are_opaque_values():
    # {x+1}: a lambda is type 100, its context name, then its source as a char vector
    lam = b"\x64\x00" + struct.pack("<bbi", 10, 0, 5) + b"{x+1}"
    proj = b"\x68" + struct.pack("<i", 2) + lam + encode(1)  # {x+1}[1] as a projection
    for raw in (lam, proj, b"\x66\x01", b"\x6a" + lam):  # lambda, projection, binary prim, each
        value = loads(raw)
        assert isinstance(value, QFunction) and value.raw == raw
        assert object_size(raw) == len(raw)
        assert encode(value) == raw


MESSAGES = [
    encode(["upd", "trade", [TS, "AAPL", 101.5, 100, "buy"]]),
    encode(
        [
            "upd",
            "trade",
            [
                np.array([TS] * 3),
                np.array(["a", "b", "c"], dtype=object),
                np.array([1.0, 2.0, 3.0]),
            ],
        ]
    ),
    encode({"a": np.arange(3), "b": b"xyz"}),
    encode(pd.DataFrame({"s": ["x", "y"], "f": [1.0, 2.0]})),
    encode(np.array([f"s{i}" for i in range(40)], dtype=object)),
]


@pytest.mark.parametrize("raw", MESSAGES)
def test_truncated_input_is_a_clear_error(raw):
    assert object_size(raw) == len(raw)
    for cut in range(len(raw)):
        with pytest.raises(QDecodeError):
            object_size(raw[:cut])
        with pytest.raises(QDecodeError):
            loads(raw[:cut])


def test_garbage_is_a_clear_error():
    for raw in (b"\x50\x00", b"\x00\x00\xff\xff\xff\xff", b"\x07\x00\x00\x00\x00\x10", b"\x70"):
        with pytest.raises(QDecodeError):
            loads(raw)
        with pytest.raises(QDecodeError):
            object_size(raw)
    with pytest.raises(QDecodeError, match="trailing"):
        loads(encode(1) + b"\x00")


def test_object_size_walks_consecutive_records():
    raw = b"".join(MESSAGES)
    pos, sizes = 0, []
    while pos < len(raw):
        n = object_size(raw, pos)
        sizes.append(n)
        pos += n
    assert sizes == [len(m) for m in MESSAGES]
    assert decode(memoryview(raw), len(MESSAGES[0]))[1] == len(MESSAGES[0]) + len(MESSAGES[1])


# --- schema-directed encoding ------------------------------------------------------------------


def test_encode_row_and_columns_match_pykx():
    row = encode_row([TS, "AAPL", 101.5, 100, "buy"], "psfjs")
    assert row == kser(
        kx.List(
            [
                kx.toq(TS),
                kx.SymbolAtom("AAPL"),
                kx.FloatAtom(101.5),
                kx.LongAtom(100),
                kx.SymbolAtom("buy"),
            ]
        )
    )
    cols = encode_columns([[TS, TS], ["a", "b"], [1, 2], ["x", b"yz"]], "psfC")
    expected = kx.List(
        [
            kx.toq(np.array([TS, TS], dtype="datetime64[ns]")),
            kx.toq(np.array(["a", "b"], dtype=object)),
            kx.toq(np.array([1.0, 2.0])),
            kx.List([kx.CharVector("x"), kx.CharVector("yz")]),
        ]
    )
    assert cols == kser(expected)


def test_encode_table_empty_keeps_types():
    from pretrade.schema import TABLES

    t = TABLES["order"]
    raw = encode_table({n: [] for n in t.names}, t.qtypes, t.names)
    df = loads(raw)
    assert list(df.columns) == t.names and len(df) == 0
    # walk the column list: each vector's type byte is the schema's
    cols_at = 3 + object_size(raw, 3)
    pos = cols_at + 6
    for c in t.columns:
        assert raw[pos] == codec.QTYPE_CHARS[c.qtype], c.name
        pos += object_size(raw, pos)
    assert pos == len(raw)


def test_encode_table_from_frame_matches_pykx():
    df = pd.DataFrame(
        {"time": np.array([TS], dtype="datetime64[ns]"), "sym": ["a"], "price": [1.0], "size": [5]}
    )
    assert encode_table(df, "psfj", ["time", "sym", "price", "size"]) == kser(kx.toq(df))


def test_schema_encoding_refuses_wrong_types():
    with pytest.raises(QEncodeError):
        encode_row([TS, "a", 1.0], "psfj")
    with pytest.raises(QEncodeError):
        encode_row([TS, "a", 1.5, 2.5], "psfj")
    with pytest.raises(QEncodeError):
        encode_columns([[1.5, 2.5]], "j")
    with pytest.raises(QEncodeError):
        encode_columns([[1, 2], [1]], "jj")
    with pytest.raises(QEncodeError):
        encode_columns([[1, 2]], "p")
    with pytest.raises(QEncodeError):
        encode(object())
    with pytest.raises(QEncodeError):
        encode("a\x00b")
    with pytest.raises(QEncodeError):
        encode(2**64)


# --- property tests --------------------------------------------------------------------------

atoms = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.text().filter(lambda s: "\x00" not in s)
    | st.binary()
    | st.none()
)
values = st.recursive(
    atoms,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=5).filter(lambda s: "\x00" not in s), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip_python_values(v):
    raw = encode(v)
    assert object_size(raw) == len(raw)
    assert loads(raw) == v


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=50),
    st.sampled_from(
        [
            "int64",
            "float64",
            "int32",
            "int16",
            "uint8",
            "bool",
            "datetime64[ns]",
            "timedelta64[ns]",
            "datetime64[D]",
        ]
    ),
)
def test_round_trip_vectors(ints, dtype):
    arr = np.array(ints, dtype=np.int64)
    if dtype == "datetime64[D]":
        arr = (arr % 100_000).astype(dtype)
    elif dtype == "bool":
        arr = arr.astype(bool)
    elif dtype.startswith(("datetime", "timedelta")):
        arr = arr.view(dtype)
    else:
        arr = arr.astype(dtype)
    got = loads(encode(arr))
    assert got.dtype == arr.dtype and np.array_equal(
        got, arr, equal_nan=dtype[0] != "b" and dtype[0] in "dt"
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text().filter(lambda s: "\x00" not in s), max_size=60))
def test_round_trip_symbols_against_pykx(syms):
    arr = np.array(syms, dtype=object) if syms else np.array([], dtype=object)
    raw = encode(arr)
    assert raw == kser(kx.SymbolVector(syms)) if syms else True
    assert list(loads(raw)) == syms and object_size(raw) == len(raw)


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=64)
    | st.sampled_from(MESSAGES).flatmap(
        lambda m: st.tuples(st.just(m), st.integers(0, len(m) - 1), st.integers(0, 255)).map(
            lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]
        )
    )
)
def test_random_and_corrupted_bytes_only_raise_decode_errors(raw):
    for f in (loads, object_size):
        with contextlib.suppress(QDecodeError):
            f(raw)


def test_object_size_on_an_mmapped_file(tmp_path):
    import mmap

    path = tmp_path / "log"
    path.write_bytes(b"".join(MESSAGES))
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        pos, n = 0, 0
        while pos < len(mm):
            obj, end = decode(mm, pos)
            assert end - pos == object_size(mm, pos)
            pos, n = end, n + 1
        del obj
    assert n == len(MESSAGES)
