"""pretrade.client: rows to columns, result formatting, and publish/subscribe against a real TP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import free_port
from pretrade.client import columns_for, connect, format_result
from pretrade.ipc.codec import QError
from test_rdb_e2e import Proc, wait_for


def test_columns_for_takes_dicts_rows_and_frames():
    names, cols = columns_for("trade", [{"sym": "A", "price": 1.5, "size": 3, "side": "buy"}])
    assert names == ["sym", "price", "size", "side"]  # no time: the tickerplant stamps it
    assert cols[0].dtype == object and cols[1].dtype == np.float64 and cols[2].dtype == np.int64
    t = np.datetime64("2026-11-21T10:00:00.000000001", "ns")
    names, cols = columns_for("trade", [[t, "A", 1.0, 2, "sell"]])
    assert names[0] == "time" and cols[0].dtype == "datetime64[ns]" and cols[0][0] == t
    names, cols = columns_for("trade", ["A", 1.0, 2, "sell"])  # one row
    assert cols[2].tolist() == [2]
    names, cols = columns_for("news", pd.DataFrame({"sym": ["A"], "headline": ["text"], "sentiment": [0.5]}))
    assert cols[1] == [b"text"]  # q strings travel as char vectors


@pytest.mark.parametrize("rows, message", [
    ([{"sym": "A", "price": 1.0}], "missing columns"),
    ([{"sym": "A", "price": 1.0, "size": 1, "side": "buy", "venue": "X"}], "unknown columns"),
    ([["A", 1.0]], "rows have 2 values"),
    ([["A", 1.0, 1.5, "buy"]], "integers expected"),
    ([["A", "x", 1, "buy"]], "expected q type f"),
])
def test_columns_for_refuses_bad_rows(rows, message):
    with pytest.raises(ValueError, match=message):
        columns_for("trade", rows)
    with pytest.raises(KeyError, match="unknown table"):
        columns_for("nosuch", rows)


def test_format_result():
    assert "ESZ6" in format_result(pd.DataFrame({"sym": ["ESZ6"], "n": [3]}))
    shown = format_result(pd.DataFrame({"headline": np.array([b"Fed holds"], dtype=object)}))
    assert "Fed holds" in shown and "b'" not in shown
    assert format_result(pd.DataFrame({"sym": []})).startswith("(no rows")
    assert format_result({"trade": 3, "quote": 10}).splitlines() == ["trade | 3", "quote | 10"]
    assert format_result(None) == "::"


def test_publish_and_subscribe_through_a_tickerplant(tmp_path):
    port = free_port()
    tp = Proc(tmp_path / "tp.log", "tp", "--port", str(port), "--journal", str(tmp_path / "journal"))
    try:
        tp.wait_port(port)
        seen: list[tuple[str, pd.DataFrame]] = []
        with connect(f"127.0.0.1:{port}") as c:
            everything = c.subscribe(on_update=lambda t, df: seen.append((t, df)))
            only_a = c.subscribe("trade", ["A"])
            c.publish("trade", [["A", 1.0, 1, "buy"], ["B", 2.0, 2, "sell"]])
            c.publish("quote", [["A", 0.9, 1.1, 5, 6]])
            c.publish("trade", [["B", 3.0, 3, "buy"]])
            table, df = only_a.get(timeout=10)
            assert table == "trade" and df["sym"].tolist() == ["A"] and df["size"].tolist() == [1]
            assert df["time"].dtype == "datetime64[ns]"
            assert only_a.get(timeout=0.5) is None  # B's trades and the quote were filtered out
            assert wait_for(lambda: len(seen) == 3, 10)
            assert [t for t, _ in seen] == ["trade", "quote", "trade"]
            assert sum(len(df) for _, df in seen) == 4
            with pytest.raises(QError):  # the tickerplant's refusal surfaces at the publisher
                c.query(".u.upd", "trade", [np.array([1.0])])
            everything.close()
            only_a.close()
    finally:
        tp.stop()
