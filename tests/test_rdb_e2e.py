"""End to end with real processes on free ports: tickerplant -> RDB -> end of day -> HDB.

Publish through pretrade.client, query the RDB with s) SQL, kill -9 and restart the RDB (it
replays the journal), end the day (a Parquet partition the HDB answers for), the 'nyi answer,
the `pretrade query` command and a refused wrong password.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import free_port
from pretrade.client import connect
from pretrade.ipc.client import QAuthError, QClient
from pretrade.ipc.codec import QError
from pretrade.schema import TABLES

ENV = {**os.environ, "PYKX_UNLICENSED": "true", "PYKX_SUPPRESS_WARNINGS": "true"}


class Proc:
    """One `pretrade` subprocess whose log goes to a file; stopped (and killed if need be) at exit."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        self.args = args
        self.p = subprocess.Popen([sys.executable, "-m", "pretrade.cli", *args], env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115

    def wait_port(self, port: int, timeout: float = 30.0, **login: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited with {self.p.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(OSError):
                QClient("127.0.0.1", port, timeout=2, **login).close()
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.args[0]} did not listen on {port}:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def wait_for(fn, timeout: float = 20.0):
    """Poll fn until it returns something truthy; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def check_with_aiokdb(port: int) -> None:
    """An independent kdb+ IPC client (aiokdb, from PyPI) gets exact q types from s) SQL."""
    import asyncio

    aiokdb = pytest.importorskip("aiokdb")
    from aiokdb import TypeEnum, cv
    from aiokdb.client import open_qipc_connection

    async def scenario():
        r, w = await open_qipc_connection(port=port)
        res = await w.sync_req(cv("s)select trade.sym, size, trade.time, headline from trade, news "
                                  "where trade.sym = news.sym order by size"))
        assert res.t == TypeEnum.XT
        assert [c.t for c in res.kK()] == [11, 7, 12, 0]  # symbol, long, timestamp, strings
        assert list(res["sym"].kS()) == ["ESZ6", "ESZ6"] and list(res["size"].kJ()) == [2, 3]
        assert res["headline"].kK()[0].t == 10  # each string is a char vector
        with pytest.raises(aiokdb.KException, match="nyi"):
            await w.sync_req(cv("1+1"))
        w.close()

    asyncio.run(scenario())


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


@pytest.mark.slow
def test_capture_replay_end_of_day_and_history(tmp_path, procs):
    tp_port, rdb_port, hdb_port = free_port(), free_port(), free_port()
    hdb_dir = tmp_path / "hdb"

    def start_rdb() -> Proc:
        p = Proc(tmp_path / "rdb.log", "rdb", "--port", str(rdb_port), "--tp", f"127.0.0.1:{tp_port}",
                 "--hdb", str(hdb_dir), "--hdb-addr", f"127.0.0.1:{hdb_port}")
        procs.append(p)
        p.wait_port(rdb_port)
        return p

    tp = Proc(tmp_path / "tp.log", "tp", "--port", str(tp_port), "--journal", str(tmp_path / "journal"))
    hdb = Proc(tmp_path / "hdb.log", "hdb", "--port", str(hdb_port), "--dir", str(hdb_dir))
    procs += [tp, hdb]
    tp.wait_port(tp_port)
    hdb.wait_port(hdb_port)
    rdb = start_rdb()

    with connect(f"127.0.0.1:{tp_port}") as pub, connect(f"127.0.0.1:{rdb_port}") as q:
        pub.publish("trade", [{"sym": "ESZ6", "price": 4500.25, "size": 3, "side": "buy"},
                              {"sym": "NQZ6", "price": 16000.0, "size": 1, "side": "sell"}])
        pub.publish("quote", pd.DataFrame({"sym": ["ESZ6"], "bid": [4500.0], "ask": [4500.5],
                                           "bsize": [10], "asize": [12]}))
        pub.publish("trade", [["ESZ6", 4500.5, 2, "buy"]])
        pub.publish("news", [["ESZ6", "Fed holds rates", 0.1]])
        want = {"trade": 3, "quote": 1, "news": 1}
        counts = wait_for(lambda: (c := q.query(".rdb.counts[]")) and all(c[t] == n for t, n in want.items()) and c)
        assert counts and counts["book"] == 0

        got = q.query("s)select sym, count(*) as n, sum(size) as v from trade group by sym order by sym")
        assert got["sym"].tolist() == ["ESZ6", "NQZ6"]
        assert got["n"].tolist() == [2, 1] and got["v"].tolist() == [5, 1]
        assert got["v"].dtype == np.int64
        news = q.sql("select headline from news")
        assert news["headline"].tolist() == [b"Fed holds rates"]  # a q string, not a symbol
        joined = q.aj("trade", "quote")
        assert joined["bid"].tolist()[:2] == [pytest.approx(np.nan, nan_ok=True)] * 2
        assert joined["bid"].tolist()[2] == 4500.0  # the last trade came after the quote
        with pytest.raises(QError, match="nyi"):
            q.query("1+1")
        with pytest.raises(QError, match="Catalog Error"):
            q.query("s)select * from nosuch")
        check_with_aiokdb(rdb_port)

    # kill -9 the RDB; publish while it is down; a new RDB replays the journal and has every row
    rdb.stop(signal.SIGKILL)
    with connect(f"127.0.0.1:{tp_port}") as pub:
        pub.publish("trade", [["CLZ6", 70.1, 5, "sell"]])
    start_rdb()
    with connect(f"127.0.0.1:{rdb_port}") as q:
        status = wait_for(lambda: (st := q.query(".rdb.status[]"))["connected"] and st)
        assert status["replayedMessages"] == 5 and status["replayedRows"] == 6
        assert q.query(".rdb.counts[]")["trade"] == 4

        # end of day: the TP sends .u.end; the RDB writes the partition, empties, tells the HDB
        from pretrade.tick.eod import end_of_day

        day = end_of_day("127.0.0.1", tp_port)
        part = hdb_dir / f"date={day.isoformat()}"
        assert wait_for(lambda: (part / "trade.parquet").exists() and q.query(".rdb.counts[]")["trade"] == 0)
        assert sorted(p.name for p in part.iterdir()) == sorted(f"{t}.parquet" for t in TABLES)
        assert q.query("s)select count(*) as n from trade")["n"].tolist() == [0]

    with connect(f"127.0.0.1:{hdb_port}") as h:
        got = h.sql(f"select date, sym, size from trade where date = '{day.isoformat()}' order by sym, size")
        assert got["sym"].tolist() == ["CLZ6", "ESZ6", "ESZ6", "NQZ6"]
        assert got["size"].tolist() == [5, 2, 3, 1]
        assert str(got["date"].iloc[0])[:10] == day.isoformat()
        assert h.query(".hdb.partitions[]").tolist() == [np.datetime64(day.isoformat())]
        assert h.aj("trade", "quote")["ask"].notna().sum() == 1
        with pytest.raises(QError, match="nyi"):
            h.query("select from trade where sym=`ESZ6")  # q-sql, not SQL
        with pytest.raises(QError):
            h.query("til 10")

    # the operator's command: a table on success, the q error and exit 1 on failure
    cmd = [sys.executable, "-m", "pretrade.cli", "query", f"127.0.0.1:{hdb_port}"]
    ok = subprocess.run([*cmd, "s)select sym, count(*) as n from trade group by sym order by sym"],
                        env=ENV, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "ESZ6" in ok.stdout and "NQZ6" in ok.stdout, ok.stderr
    bad = subprocess.run([*cmd, "s)select nope from trade"], env=ENV, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("'") and "nope" in bad.stderr


def test_wrong_password_is_refused(tmp_path, procs):
    from pretrade.ipc.auth import hash_password

    users = tmp_path / "users.toml"
    users.write_text(f'[users]\nquant = "{hash_password("s3cret")}"\n')
    port = free_port()
    # No tickerplant is running: the RDB serves anyway and keeps retrying it.
    rdb = Proc(tmp_path / "rdb.log", "rdb", "--port", str(port), "--tp", f"127.0.0.1:{free_port()}",
               "--hdb", str(tmp_path / "hdb"), "--users", str(users))
    procs.append(rdb)
    rdb.wait_port(port, user="quant", password="s3cret")
    with pytest.raises(QAuthError):
        connect(f"127.0.0.1:{port}", user="quant", password="wrong")
    with connect(f"127.0.0.1:{port}", user="quant", password="s3cret") as q:
        assert q.query(".rdb.status[]")["connected"] is False
        assert q.sql("select count(*) as n from trade")["n"].tolist() == [0]
    assert "not reachable" in (tmp_path / "rdb.log").read_text()


@pytest.mark.slow
def test_rdb_reconnects_to_a_restarted_tickerplant(tmp_path, procs):
    tp_port, rdb_port = free_port(), free_port()
    tp_args = ("tp", "--port", str(tp_port), "--journal", str(tmp_path / "journal"))
    tp = Proc(tmp_path / "tp.log", *tp_args)
    procs.append(tp)
    tp.wait_port(tp_port)
    rdb = Proc(tmp_path / "rdb.log", "rdb", "--port", str(rdb_port), "--tp", f"127.0.0.1:{tp_port}",
               "--hdb", str(tmp_path / "hdb"), "--hdb-addr", "")
    procs.append(rdb)
    rdb.wait_port(rdb_port)
    with connect(f"127.0.0.1:{rdb_port}") as q:
        assert wait_for(lambda: q.query(".rdb.status[]")["connected"])
        with connect(f"127.0.0.1:{tp_port}") as pub:
            pub.publish("trade", [["A", 1.0, 1, "buy"], ["B", 2.0, 2, "sell"]])
        assert wait_for(lambda: q.query(".rdb.counts[]")["trade"] == 2)
        tp.stop(signal.SIGKILL)
        assert wait_for(lambda: not q.query(".rdb.status[]")["connected"])
        assert q.query(".rdb.counts[]")["trade"] == 2  # still answering from memory
        tp2 = Proc(tmp_path / "tp.log", *tp_args)
        procs.append(tp2)
        tp2.wait_port(tp_port)
        with connect(f"127.0.0.1:{tp_port}") as pub:
            pub.publish("trade", [["C", 3.0, 3, "buy"]])
        # resubscribed: replayed the 2 journaled rows (not doubled) and got the live one
        assert wait_for(lambda: q.query(".rdb.counts[]")["trade"] == 3, 30)
        got = q.sql("select sym from trade order by sym")
        assert got["sym"].tolist() == ["A", "B", "C"]
    log = (tmp_path / "rdb.log").read_text()
    assert "lost the tickerplant" in log and log.count("subscribed: tables") == 2
