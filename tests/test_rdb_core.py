"""The RDB's logic without networking: subscription reply, journal replay, live updates, end of day."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow.parquet as pq
import pytest

from pretrade.ipc import codec
from pretrade.tick import rdb as rdb_mod
from pretrade.tick.journal import Journal
from pretrade.tick.rdb import Rdb, parse_subscription

T0 = np.datetime64("2026-11-21T10:00:00", "ns")
DAY = dt.date(2026, 11, 21)


def _row(i: int, sym: str = "AAPL") -> list:
    return [T0 + i, sym, 100.0 + i, i, "buy"]


def _record(row) -> bytes:
    """(`upd; `trade; row) as the tickerplant journals it (exact q types)."""
    return b"\x00\x00\x03\x00\x00\x00" + codec.encode_atom("upd", "s") + codec.encode_atom("trade", "s") + \
        codec.encode_row(row, "psfjs")


def _reply(journal, count: int) -> list:
    return [[["trade", None], ["quote", None]], [count, f":{journal}"]]


def test_parse_subscription():
    sub = parse_subscription([[["trade", None]], [3, ":/tmp/x/tp2026.11.21"]])
    assert sub.tables == ["trade"] and sub.count == 3 and str(sub.journal) == "/tmp/x/tp2026.11.21"
    with pytest.raises(ValueError, match="unexpected reply"):
        parse_subscription("nonsense")


def test_replay_then_live_then_end_of_day(tmp_path):
    path = tmp_path / "tp.log"
    with Journal(path) as j:
        for i in range(5):
            j.append(_record(_row(i)))
    notified = []
    r = Rdb(tmp_path / "hdb", notify_hdb=lambda: notified.append(1))
    r.subscribed(_reply(path, 4))  # the TP had 4 messages when we subscribed: the 5th is live
    assert r.counts()["trade"] == 4
    r.message(["upd", "trade", _row(4)])
    cols = [np.array([T0 + 5, T0 + 6]), np.array(["MSFT", "AAPL"], dtype=object),
            np.array([1.0, 2.0]), np.array([1, 2]), np.array(["sell", "buy"], dtype=object)]
    r.message(["upd", "trade", cols])
    assert r.counts()["trade"] == 7
    got = r.query("s)select sym, count(*) as n from trade group by sym order by sym")
    assert got.frame()["n"].tolist() == [6, 1]
    assert r.status()["replayedMessages"] == 4 and r.status()["liveRows"] == 3

    r.message([".u.end", DAY])
    part = tmp_path / "hdb" / "date=2026-11-21"
    assert pq.read_table(part / "trade.parquet").num_rows == 7
    assert pq.read_table(part / "quote.parquet").num_rows == 0
    assert r.counts()["trade"] == 0 and notified == [1]
    assert r.query("select count(*) from trade").columns[0][0] == 0


def test_bad_live_update_is_skipped_and_the_rdb_carries_on(tmp_path):
    r = Rdb(tmp_path)
    r.message(["upd", "trade", [T0, "A", "oops", 1, "buy"]])
    r.message(["upd", "nosuchtable", [1]])
    r.message("garbage")
    r.message(["upd", "trade", _row(1)])
    assert r.counts()["trade"] == 1 and r.status()["rejected"] == 1


def test_resubscribe_replays_from_scratch_without_duplicates(tmp_path):
    path = tmp_path / "tp.log"
    with Journal(path) as j:
        for i in range(3):
            j.append(_record(_row(i)))
    r = Rdb(tmp_path / "hdb")
    r.subscribed(_reply(path, 3))
    r.subscribed(_reply(path, 3))  # the TP restarted: same journal
    assert r.counts()["trade"] == 3


def test_journal_rolled_while_away_writes_the_old_day(tmp_path):
    old, new = tmp_path / "tp2026.11.21", tmp_path / "tp2026.11.22"
    with Journal(old) as j:
        j.append(_record(_row(0)))
    Journal(new).close()
    r = Rdb(tmp_path / "hdb")
    r.subscribed(_reply(old, 1))
    r.subscribed(_reply(new, 0))
    assert pq.read_table(tmp_path / "hdb" / "date=2026-11-21" / "trade.parquet").num_rows == 1
    assert r.counts()["trade"] == 0


def test_failed_write_keeps_the_day_and_retries(tmp_path, monkeypatch):
    r = Rdb(tmp_path / "hdb")
    r.message(["upd", "trade", _row(0)])
    real = rdb_mod.write_partition

    def failing(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(rdb_mod, "write_partition", failing)
    assert r.end_of_day(DAY) is None
    assert r.status()["pendingDays"] == ["2026-11-21"]
    monkeypatch.setattr(rdb_mod, "write_partition", real)
    r.message(["upd", "trade", _row(1)])
    r.end_of_day(DAY + dt.timedelta(days=1))
    assert pq.read_table(tmp_path / "hdb" / "date=2026-11-21" / "trade.parquet").num_rows == 1
    assert pq.read_table(tmp_path / "hdb" / "date=2026-11-22" / "trade.parquet").num_rows == 1
    assert r.status()["pendingDays"] == []


def test_after_a_seen_end_of_day_a_new_journal_is_not_a_missed_day(tmp_path):
    old, new = tmp_path / "tp2026.11.21", tmp_path / "tp2026.11.22"
    with Journal(old) as j:
        j.append(_record(_row(0)))
    with Journal(new) as j:
        j.append(_record(_row(1)))
    r = Rdb(tmp_path / "hdb")
    r.subscribed(_reply(old, 1))
    r.message([".u.end", DAY])
    r.message(["upd", "trade", _row(1)])  # the new day's first row, journaled in `new`
    r.subscribed(_reply(new, 1))  # the TP restarted
    assert pq.read_table(tmp_path / "hdb" / "date=2026-11-21" / "trade.parquet").num_rows == 1
    assert not (tmp_path / "hdb" / "date=2026-11-22").exists()
    assert r.counts()["trade"] == 1


def test_decode_message_keeps_tables_as_columns_and_falls_back():
    names = ["time", "sym", "price", "size", "side"]
    cols = [np.array([T0, T0 + 1]), np.array(["A", "B"], dtype=object), np.array([1.0, 2.0]),
            np.array([1, 2]), np.array(["buy", "sell"], dtype=object)]
    head = b"\x00\x00\x03\x00\x00\x00" + codec.encode_atom("upd", "s") + codec.encode_atom("trade", "s")
    msg = rdb_mod.decode_message(head + codec.encode_table(cols, "psfjs", names))
    assert msg[:2] == ["upd", "trade"] and list(msg[2]) == names
    assert msg[2]["size"].tolist() == [1, 2]
    row = rdb_mod.decode_message(head + codec.encode_row(_row(0), "psfjs"))
    assert row[2][1] == "AAPL"
    assert rdb_mod.decode_message(codec.encode([".u.end", DAY])) == [".u.end", DAY]
    r = Rdb("/nonexistent")
    r.message(msg)
    assert r.counts()["trade"] == 2


class _FakeConn:
    """What Feed._read needs of a QClient: receive_raw, then the connection ends."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = list(payloads)

    def receive_raw(self, timeout: float) -> tuple[int, bytes]:
        if self.payloads:
            return 0, self.payloads.pop(0)
        raise ConnectionError("closed by the tickerplant")


def test_feed_queues_messages_skips_garbage_and_reports_the_end(tmp_path):
    import queue

    head = b"\x00\x00\x03\x00\x00\x00" + codec.encode_atom("upd", "s") + codec.encode_atom("trade", "s")
    payloads = [head + codec.encode_row(_row(i), "psfjs") for i in range(3)]
    payloads.insert(1, b"\x00\x00\x05")  # undecodable: skipped with a log line
    r = Rdb(tmp_path)
    feed = rdb_mod.Feed(r, "127.0.0.1:1")
    inbox = queue.SimpleQueue()
    feed._read(_FakeConn(payloads), inbox)
    assert inbox.qsize() == 5  # four messages and the end of the connection
    with pytest.raises(ConnectionError, match="closed"):
        feed._apply(inbox)
    assert r.counts()["trade"] == 3


def test_queries_see_every_change_since_the_last_query(tmp_path):
    r = Rdb(tmp_path)
    count = "select count(*) from trade"
    assert r.query(count).columns[0][0] == 0
    r.message(["upd", "trade", _row(0)])
    assert r.query(count).columns[0][0] == 1
    assert r.query(count).columns[0][0] == 1  # unchanged: not registered again, same answer
    r.message(["upd", "trade", _row(1)])
    r.end_of_day(DAY)
    assert r.query(count).columns[0][0] == 0
