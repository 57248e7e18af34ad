"""The RDB's in-memory tables: appends of rows, columns and frames; types; lazy concatenation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pretrade.schema import TABLES, table
from pretrade.tick import store as store_mod
from pretrade.tick.store import Store, TableStore, arrow_schema

T0 = np.datetime64("2026-11-21T10:00:00.000000001", "ns")


def test_rows_and_columns_keep_their_order_and_types():
    s = Store(TABLES.values())
    assert s.upd("trade", [T0, "AAPL", 10.5, 100, "buy"]) == 1
    cols = [np.array([T0 + 1, T0 + 2]), np.array(["MSFT", "AAPL"], dtype=object),
            np.array([1.0, 2.0]), np.array([5, 6]), np.array(["sell", "buy"], dtype=object)]
    assert s.upd("trade", cols) == 2
    assert s.upd("trade", [T0 + 3, "IBM", 3.0, 7, "sell"]) == 1
    t = s.arrow("trade")
    assert t.schema.equals(arrow_schema(table("trade")))
    assert t.column("sym").to_pylist() == ["AAPL", "MSFT", "AAPL", "IBM"]
    assert t.column("size").to_pylist() == [100, 5, 6, 7]
    df = s.frame("trade")
    assert df["time"].dtype == "datetime64[ns]"
    assert df["time"].iloc[0] == pd.Timestamp(T0)  # nanoseconds survive
    assert s.counts()["trade"] == 4 and s.counts()["quote"] == 0


def test_dataframe_dict_and_string_columns():
    s = Store(TABLES.values())
    s.upd("news", [T0, "AAPL", b"char vector headline", 0.5])  # strings arrive as bytes
    s.upd("news", {"time": [T0 + 1], "sym": ["MSFT"], "headline": ["text"], "sentiment": [-0.2]})
    frame = pd.DataFrame({"time": [T0 + 2], "sym": ["IBM"], "headline": [b"x"], "sentiment": [0.0]})
    s.upd("news", frame)
    assert s.arrow("news").column("headline").to_pylist() == ["char vector headline", "text", "x"]


def test_nan_is_null_and_null_symbol_is_empty():
    s = Store(TABLES.values())
    s.upd("trade", [np.array([T0, T0]), np.array(["A", None], dtype=object), np.array([np.nan, 1.0]),
                    np.array([1, 2]), np.array(["buy", "sell"], dtype=object)])
    t = s.arrow("trade")
    assert t.column("price").null_count == 1  # q's 0n: ignored by SQL aggregates, as in q
    assert t.column("sym").to_pylist() == ["A", ""]


@pytest.mark.parametrize("bad, message", [
    ([T0, "A", 1.0, 1], "expected 5 columns"),
    ([T0, "A", "not a price", 1, "buy"], "price"),
    ([T0, "A", 1.0, 1.5, "buy"], "size"),
    ([[T0], ["A"], [1.0], [1, 2], ["buy"]], "different lengths"),
    ([np.array([1, 2]), ["A", "B"], [1.0, 2.0], [1, 2], ["b", "s"]], "column time"),
    ([np.arange(20), ["A"] * 20, np.ones(20), np.ones(20, int), ["b"] * 20], "expected timestamps"),
    ([np.full(20, T0), ["A"] * 20, ["x"] * 20, np.ones(20, int), ["b"] * 20], "column price"),
    ("junk", "expected a row"),
])
def test_bad_data_is_refused_and_nothing_is_lost(bad, message):
    s = Store(TABLES.values())
    s.upd("trade", [T0, "AAPL", 10.5, 100, "buy"])
    with pytest.raises((TypeError, ValueError), match=message):
        s.upd("trade", bad)
    assert s.counts()["trade"] == 1
    assert s.arrow("trade").column("sym").to_pylist() == ["AAPL"]


def test_unknown_table():
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        Store(TABLES.values()).upd("nope", [])


def test_many_small_appends_are_merged_lazily(monkeypatch):
    monkeypatch.setattr(store_mod, "ROW_BUFFER", 10)
    monkeypatch.setattr(store_mod, "SMALL_BATCHES", 4)
    monkeypatch.setattr(store_mod, "SEALED_ROWS", 50)
    ts = TableStore(table("quote"))
    n = 0
    for i in range(300):
        if i % 3:
            ts.append([T0 + i, "S", 1.0, 2.0, i, i])
            n += 1
        else:
            k = 1 + i % 7
            ts.append([np.full(k, T0 + i), ["S"] * k, np.ones(k), np.ones(k) * 2,
                       np.full(k, i), np.full(k, i)])
            n += k
        assert len(ts) == n
    t = ts.arrow()
    assert t.num_rows == n
    # order is preserved across rows, chunks and merges
    bsize = t.column("bsize").to_numpy()
    assert (np.diff(bsize) >= 0).all()
    assert len(ts._batches) <= n // 50 + 5
    ts.clear()
    assert len(ts) == 0 and ts.arrow().num_rows == 0


def test_empty_table_has_the_schema():
    t = Store(TABLES.values()).arrow("order")
    assert t.num_rows == 0
    assert t.schema.field("reason").type == pa.string()
    assert t.schema.field("time").type == pa.timestamp("ns")
