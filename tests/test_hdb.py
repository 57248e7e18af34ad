"""The HDB's partition layout and SQL over it, without IPC (the end-to-end test covers IPC)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow.parquet as pq
import pytest

from pretrade.schema import TABLES
from pretrade.tick.hdb import Hdb, partitions, write_partition
from pretrade.tick.sql import SqlError
from pretrade.tick.store import Store

DAY = dt.date(2026, 11, 20)
T0 = np.datetime64("2026-11-20T10:00:00", "ns")


def _day(rows: list[tuple[str, float]]) -> dict:
    s = Store(TABLES.values())
    for i, (sym, price) in enumerate(rows):
        s.upd("trade", [T0 + i, sym, price, i, "buy"])
    return {name: s.arrow(name) for name in s.tables}


def test_empty_or_missing_directory_is_fine(tmp_path):
    hdb = Hdb(tmp_path / "missing")
    assert partitions(tmp_path / "missing") == []
    r = hdb.query("s)select count(*) as n from trade")
    assert r.columns[0][0] == 0
    assert hdb.query("select * from quote").names[:3] == ["date", "time", "sym"]


def test_partition_is_written_whole_and_queryable(tmp_path):
    hdb = Hdb(tmp_path)
    path = write_partition(tmp_path, DAY, _day([("B", 1.0), ("A", 2.0), ("B", 3.0)]))
    assert path == tmp_path / "date=2026-11-20"
    assert sorted(p.name for p in path.iterdir()) == sorted(f"{t}.parquet" for t in TABLES)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind
    assert pq.read_table(path / "quote.parquet").num_rows == 0  # empty tables keep the schema
    # grouped by sym, arrival order kept within a sym
    assert pq.read_table(path / "trade.parquet").column("price").to_pylist() == [2.0, 1.0, 3.0]
    r = hdb.query("select date, sym, sum(price) as px from trade group by all order by sym")
    assert r.qtypes == "dsf"
    assert r.frame()["sym"].tolist() == ["A", "B"]
    assert str(r.columns[0][0]) == "2026-11-20"


def test_new_partitions_and_a_second_end_of_day_are_seen(tmp_path):
    hdb = Hdb(tmp_path)
    write_partition(tmp_path, DAY, _day([("A", 1.0)]))
    assert hdb.query("select count(*) from trade").columns[0][0] == 1
    write_partition(tmp_path, DAY + dt.timedelta(days=1), _day([("A", 1.0), ("C", 2.0)]))
    # Same day again (a restart replayed the whole journal): the partition is replaced, so the
    # replayed row A is stored once, not twice.
    write_partition(tmp_path, DAY, _day([("A", 1.0), ("Z", 9.0)]))
    r = hdb.query("select date, count(*) as n from trade group by date order by date")
    assert r.columns[1].tolist() == [2, 2]
    day = hdb.query("select sym from trade where date = '2026-11-20' order by sym")
    assert day.columns[0].tolist() == ["A", "Z"]
    assert partitions(tmp_path) == ["2026-11-20", "2026-11-21"]


def test_table_known_only_on_disk_and_sql_errors(tmp_path):
    extra = _day([("A", 1.0)])
    extra["extra"] = extra["trade"]
    write_partition(tmp_path, DAY, extra)
    hdb = Hdb(tmp_path)
    assert "extra" in hdb.tables
    assert hdb.query("select count(*) from extra").columns[0][0] == 1
    with pytest.raises(SqlError, match="nosuch"):
        hdb.query("select * from nosuch")


def test_clients_cannot_write_into_the_history(tmp_path):
    write_partition(tmp_path, DAY, _day([("A", 1.0)]))
    hdb = Hdb(tmp_path)
    target = tmp_path / "date=2026-11-20" / "trade.parquet"
    with pytest.raises(SqlError, match="only queries"):
        hdb.query(f"copy (select 1 as x) to '{target}' (format parquet)")
    with pytest.raises(SqlError):
        hdb.query("select * from read_csv('/etc/hostname')")
    assert hdb.query("select count(*) from trade").columns[0][0] == 1
