"""Byte-level update checking and building (the tickerplant's hot path), against the codec."""

from __future__ import annotations

import numpy as np
import pytest

from pretrade.ipc import codec
from pretrade.tick import tpwire

SPECS = tpwire.table_specs()
T0 = np.datetime64("2026-11-21T10:00:00.123456789", "ns")
STAMP = int(T0.astype(np.int64)) - tpwire.Q_EPOCH_NS


def upd(table: str, data_bytes: bytes) -> bytes:
    return b"\x00\x00\x03\x00\x00\x00\xf5.u.upd\x00\xf5" + table.encode() + b"\x00" + data_bytes


def test_one_row_without_time_is_stamped_and_journaled_as_sent():
    row = codec.encode_row(["AAPL", 101.5, 200, "buy"], "sfjs")
    u = tpwire.parse_upd(upd("trade", row), SPECS, stamp=STAMP)
    assert u.rows == 1 and u.syms() == [b"AAPL"]
    fn, t, data = codec.loads(u.record)
    assert (fn, t) == ("upd", "trade")
    assert data == [T0, "AAPL", 101.5, 200, "buy"]
    df = codec.loads(tpwire.table_bytes(u.spec, u.rows, u.parts))
    assert list(df.columns) == ["time", "sym", "price", "size", "side"]
    assert df.iloc[0].tolist() == [T0, "AAPL", 101.5, 200, "buy"]


def test_columns_with_time_pass_through_unchanged():
    t = np.array([T0, T0], dtype="datetime64[ns]")
    data = codec.encode_columns([t, ["A", "B"], [1.0, 2.0], [1, 2], ["buy", "sell"]], "psfjs")
    u = tpwire.parse_upd(upd("trade", data), SPECS)
    assert u.rows == 2 and u.data == data and u.syms() == [b"A", b"B"]
    df = codec.loads(tpwire.table_bytes(u.spec, u.rows, u.parts))
    assert df["sym"].tolist() == ["A", "B"] and df["size"].tolist() == [1, 2]


def test_string_columns_row_and_columns():
    row = codec.encode_row(["ES", "headline one", 0.5], "sCf")
    u = tpwire.parse_upd(upd("news", row), SPECS, stamp=STAMP)
    cols = codec.encode_columns([["ES", "NQ"], ["a", "bb"], [0.1, -0.2]], "sCf")
    v = tpwire.parse_upd(upd("news", cols), SPECS, stamp=STAMP)
    rows, parts = tpwire.merge([u, v])
    df = codec.loads(tpwire.table_bytes(u.spec, rows, parts))
    assert df["headline"].tolist() == [b"headline one", b"a", b"bb"]
    assert df["time"].tolist() == [T0] * 3


def test_batch_merge_concatenates_rows():
    a = tpwire.parse_upd(upd("quote", codec.encode_row(["A", 1.0, 2.0, 3, 4], "sffjj")), SPECS)
    b = tpwire.parse_upd(upd("quote", codec.encode_columns(
        [["B", "C"], [5.0, 6.0], [7.0, 8.0], [9, 10], [11, 12]], "sffjj")), SPECS)
    rows, parts = tpwire.merge([a, b])
    df = codec.loads(tpwire.table_bytes(a.spec, rows, parts))
    assert rows == 3 and df["sym"].tolist() == ["A", "B", "C"] and df["asize"].tolist() == [4, 11, 12]


def test_filter_rows_by_sym():
    u = tpwire.parse_upd(upd("trade", codec.encode_columns(
        [["A", "B", "A"], [1.0, 2.0, 3.0], [1, 2, 3], ["buy"] * 3], "sfjs")), SPECS)
    assert tpwire.filter_rows(u.spec, u.rows, u.parts, {b"Z"}) is None
    df = codec.loads(tpwire.filter_rows(u.spec, u.rows, u.parts, {b"A"}))
    assert df["price"].tolist() == [1.0, 3.0]
    assert codec.loads(tpwire.filter_rows(u.spec, u.rows, u.parts, {b"A", b"B"}))["sym"].tolist() == ["A", "B", "A"]


def test_empty_table_has_schema_types_and_grouped_sym():
    raw = SPECS[b"trade"].empty_table
    df = codec.loads(raw)
    assert list(df.columns) == ["time", "sym", "price", "size", "side"] and len(df) == 0
    assert str(df["price"].dtype) == "float64" and str(df["time"].dtype) == "datetime64[ns]"


@pytest.mark.parametrize("table,data,match", [
    ("nope", codec.encode_row(["A", 1.0, 1, "buy"], "sfjs"), "unknown table `nope"),
    ("trade", codec.encode_row(["A", 1.0, 1], "sfj"), "expected 5 columns"),
    ("trade", codec.encode_row(["A", 1.0, 1.5, "buy"], "sffs"), "column size .* must be a long atom, got float atom"),
    ("trade", codec.encode_row(["A", "x", 1, "buy"], "ssjs"), "column price .* float atom, got symbol atom"),
    ("trade", codec.encode([np.array(["A", "B"], dtype=object), np.array([1.0]),
                                 np.array([1, 2]), np.array(["b", "s"], dtype=object)]), "same length"),
    ("trade", codec.encode_columns([["A"], [1], [1], ["b"]], "sjjs"), "must be a float vector, got long vector"),
    ("trade", codec.encode("just a symbol"), "list of atoms"),
    ("trade", codec.encode_row(["A", 1.0, 1, "buy"], "sfjs")[:-3], "truncated|unterminated"),
])
def test_non_conforming_updates_are_rejected_with_a_clear_error(table, data, match):
    with pytest.raises(tpwire.UpdateError, match=match):
        tpwire.parse_upd(upd(table, data), SPECS)


def test_call_name():
    assert tpwire.call_name(codec.encode([".u.sub", "trade", ""])) == b".u.sub"
    assert tpwire.call_name(codec.encode(b".u.i")) is None


def test_publish_frame_is_an_async_upd_message():
    from pretrade.ipc import wire

    u = tpwire.parse_upd(upd("trade", codec.encode_row(["A", 1.0, 5, "buy"], "sfjs")), SPECS)
    frame = tpwire.publish_frame(u.spec, u.rows, u.parts)
    msgtype, compressed, length = wire.parse_header(frame)
    assert (msgtype, compressed, length) == (wire.ASYNC, False, len(frame))
    fn, t, df = codec.loads(frame[8:])
    assert (fn, t, df["size"].tolist()) == ("upd", "trade", [5])
    table = tpwire.table_bytes(u.spec, u.rows, u.parts)
    assert tpwire.table_frame(u.spec, table) == frame
