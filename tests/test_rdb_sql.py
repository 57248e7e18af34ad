"""SQL over the in-memory tables with q types, and the as-of join against a hand-computed answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pretrade.schema import TABLES
from pretrade.tick.sql import Q_NULLS, SqlEngine, SqlError, aj, strip_prefix
from pretrade.tick.store import Store

T0 = np.datetime64("2026-11-21T10:00:00", "ns")


@pytest.fixture
def engine():
    s = Store(TABLES.values())
    s.upd("trade", [np.array([T0, T0 + 1, T0 + 2]), np.array(["A", "B", "A"], dtype=object),
                    np.array([1.0, np.nan, 3.0]), np.array([10, 20, 30]),
                    np.array(["buy", "sell", "buy"], dtype=object)])
    s.upd("news", [T0, "A", b"headline one", 0.5])
    e = SqlEngine()
    for name in s.tables:
        e.register(name, s.arrow(name))
    yield e
    e.close()


def test_result_types_follow_q(engine):
    r = engine.query("s)select sym, count(*) as n, sum(size) as total, avg(price) as px, "
                     "max(time) as t, min(time)::date as d from trade group by sym order by sym")
    assert r.names == ["sym", "n", "total", "px", "t", "d"]
    assert r.qtypes == "sjjfpd"  # sum of longs (HUGEINT in DuckDB) comes back as a long
    df = r.frame()
    assert df["sym"].tolist() == ["A", "B"]
    assert df["total"].tolist() == [40, 20]
    assert df["px"].iloc[0] == 2.0 and np.isnan(df["px"].iloc[1])  # NaN is q's null: ignored
    assert df["t"].iloc[0] == pd.Timestamp(T0 + 2)


def test_strings_stay_strings_and_symbols_symbols(engine):
    r = engine.query("select sym, headline, 'lit' as other from news")
    assert r.qtypes == "sCs"
    assert r.columns[1].tolist() == ["headline one"]


def test_nulls_become_q_nulls(engine):
    r = engine.query("select cast(null as bigint) as j, cast(null as int) as i, cast(null as varchar) as s,"
                     " cast(null as timestamp_ns) as p, 1.5::decimal(5,2) as dec, true as b")
    assert r.qtypes == "jisp" + "fb"
    assert r.columns[0][0] == Q_NULLS["j"] and r.columns[1][0] == Q_NULLS["i"]
    assert r.columns[2][0] == "" and np.isnat(r.columns[3][0]) and r.columns[4][0] == 1.5


def test_duplicate_names_are_made_unique(engine):
    r = engine.query("select 1 as x, 2 as x")
    assert r.names == ["x", "x1"]


def test_errors_carry_duckdbs_message(engine):
    with pytest.raises(SqlError, match="nope"):
        engine.query("select nope from trade")
    with pytest.raises(SqlError, match="no q type"):
        engine.query("select [1, 2] as l")
    assert engine.query("select count(*) as n from trade").columns[0][0] == 3  # still works


def test_strip_prefix():
    assert strip_prefix("s)select 1") == "select 1"
    assert strip_prefix("  select 1 ") == "select 1"


def _ts(*seconds):
    return np.array([T0 + np.timedelta64(s, "s") for s in seconds])


def test_aj_matches_a_hand_computed_answer():
    trades = pd.DataFrame({
        "time": _ts(5, 1, 3, 3, 10, 2),
        "sym": ["A", "A", "B", "A", "C", "B"],
        "price": [10.0, 11.0, 20.0, 12.0, 30.0, 21.0],
    })
    quotes = pd.DataFrame({
        "time": _ts(0, 3, 3, 2, 4, 4),
        "sym": ["A", "A", "A", "B", "B", "A"],
        "bid": [9.0, 9.5, 9.7, 19.0, 19.5, 9.9],
        "bsize": [1, 2, 3, 4, 5, 6],
    })
    out = aj(trades, quotes)
    # Left order kept. A@5 -> last A quote at or before 5: the one at 4 (9.9).
    # A@1 -> A@0 (9.0). B@3 -> B@2 (19.0). A@3 -> two A quotes at 3: the last in row order (9.7).
    # C@10 -> no C quotes: nulls. B@2 -> B@2 exactly (19.0).
    assert out.columns.tolist() == ["time", "sym", "price", "bid", "bsize"]
    assert out["price"].tolist() == trades["price"].tolist()
    assert out["bid"].tolist()[:4] == [9.9, 9.0, 19.0, 9.7]
    assert np.isnan(out["bid"].iloc[4]) and out["bid"].iloc[5] == 19.0
    assert out["bsize"].tolist() == [6, 1, 4, 3, Q_NULLS["j"], 4]


def test_aj_with_no_prior_quote_and_string_columns():
    trades = pd.DataFrame({"time": _ts(1, 5), "sym": ["A", "A"], "size": [1, 2]})
    quotes = pd.DataFrame({"time": _ts(2), "sym": ["A"], "venue": ["X"], "size": [99]})
    out = aj(trades, quotes)
    assert out["venue"].tolist() == ["", "X"]
    assert out["size"].tolist() == [1, 99]  # a common column takes the right's value on a match


def test_aj_on_several_keys_and_bad_columns():
    left = pd.DataFrame({"time": _ts(5, 5), "sym": ["A", "A"], "side": ["buy", "sell"]})
    right = pd.DataFrame({"time": _ts(1, 2), "sym": ["A", "A"], "side": ["sell", "buy"], "v": [1.0, 2.0]})
    assert aj(left, right, on=["sym", "side"])["v"].tolist() == [2.0, 1.0]
    with pytest.raises(KeyError, match="right table has no column"):
        aj(left, right.drop(columns="time"))


def test_aj_with_empty_right():
    left = pd.DataFrame({"time": _ts(1), "sym": ["A"]})
    out = aj(left, pd.DataFrame({"time": np.array([], "datetime64[ns]"), "sym": [], "bid": []}))
    assert np.isnan(out["bid"].iloc[0])


def test_aj_over_sql_tables(engine):
    q = pd.DataFrame({"time": np.array([T0, T0 + 2]), "sym": ["A", "A"], "bid": [0.5, 2.5]})
    engine.register("q", q)
    r = engine.aj("trade", b"select * from q where bid > 0")
    assert r.names == ["time", "sym", "price", "size", "side", "bid"]
    assert r.qtypes == "psfjsf"
    df = r.frame()
    assert df["bid"].iloc[0] == 0.5 and np.isnan(df["bid"].iloc[1]) and df["bid"].iloc[2] == 2.5
    with pytest.raises(SqlError, match="no column"):
        engine.aj("trade", b"select bid from q")


def test_aj_mixed_time_units_and_float_times():
    left = pd.DataFrame({"time": np.array(["2026-11-21T10:00:02"], "datetime64[us]"), "sym": ["A"]})
    right = pd.DataFrame({"time": np.array([T0 + np.timedelta64(1, "s"), T0 + np.timedelta64(3, "s")]),
                          "sym": ["A", "A"], "bid": [1.0, 2.0]})
    assert aj(left, right)["bid"].tolist() == [1.0]
    lf = pd.DataFrame({"time": [1.5, 0.5], "sym": ["A", "A"]})
    rf = pd.DataFrame({"time": [1.0, 1.0, 2.0], "sym": ["A", "A", "A"], "v": [1, 2, 3]})
    assert aj(lf, rf)["v"].tolist() == [2, Q_NULLS["j"]]


@pytest.mark.parametrize("sql", [
    "copy trade to '/tmp/pretrade-should-not-exist.csv'",
    "create table x as select 1",
    "select * from read_csv('/etc/passwd')",
    "attach '/tmp/pretrade-x.db'",
    "set enable_external_access = true",
    "select 1; drop view trade",
])
def test_clients_may_only_read(engine, sql):
    with pytest.raises(SqlError):
        engine.query(sql)
    assert engine.query("select count(*) from trade").columns[0][0] == 3


def test_read_only_queries_of_every_kind(engine):
    assert engine.query("describe trade").names[0] == "column_name"
    assert len(engine.query("show tables")) >= 2
    assert len(engine.query("explain select 1")) == 1
    assert engine.query("pivot (select sym, size from trade) on sym using sum(size)").qtypes == "jj"
    assert engine.query("from trade select count(*) as n").columns[0][0] == 3


def test_the_documented_asof_sql_recipe_runs(engine):
    q = pd.DataFrame({"time": np.array([T0, T0 + 2]), "sym": ["A", "A"], "bid": [0.5, 2.5], "ask": [0.6, 2.6]})
    engine.register("quote", q)
    r = engine.query("s)select t.*, q.bid, q.ask from trade t asof left join quote q "
                     "on t.sym = q.sym and t.time >= q.time order by t.time")
    assert r.frame()["bid"].tolist()[0] == 0.5 and r.frame()["bid"].tolist()[2] == 2.5
