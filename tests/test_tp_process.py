"""The tickerplant as a real process on a real port: publish with aiokdb (an independent kdb+ IPC
implementation), subscribe, filter by sym, batch mode, the r.q expression, rejections, kill -9 and
restart, a corrupt journal tail, end of day and cutting off a subscriber that stops reading."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from aiokdb import MessageType, b9, cv, d9, kf, kj, kk, ks
from aiokdb.extras import ktnf, ktni, ktns

from conftest import free_port
from pretrade.ipc import codec
from pretrade.ipc.client import QClient
from pretrade.schema import TABLES
from pretrade.tick import journal as jn

ROOT = Path(__file__).resolve().parents[1]


class TP:
    """A `pretrade tp` subprocess; stopped (or killed) by the fixture."""

    def __init__(self, journal: Path, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.journal = journal
        self.log = journal.parent / f"tp-{self.port}.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT / "py"))
        with open(self.log, "wb") as err:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pretrade.cli", "tp", "--port", str(self.port),
                 "--journal", str(journal), *args],
                stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"tickerplant did not start:\n{self.log.read_text()}")

    def q(self) -> QClient:
        return QClient("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_tp(tmp_path):
    started: list[TP] = []

    def start(*args: str, port: int | None = None) -> TP:
        tp = TP(tmp_path / "tplog", *args, port=port)
        started.append(tp)
        return tp

    yield start
    for tp in started:
        tp.stop()


class Aio:
    """A kdb+ IPC connection built on aiokdb's encoder/decoder over a plain socket."""

    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.sendall(b"aiokdb:\x03\x00")
        assert self.s.recv(1)

    def sync(self, obj):
        self.s.sendall(b9(obj, msgtype=MessageType.SYNC))
        return self.read()

    def send(self, obj) -> None:
        self.s.sendall(b9(obj, msgtype=MessageType.ASYNC))

    def read(self):
        head = self._exact(8)
        return d9(head + self._exact(struct.unpack("<I", head[4:])[0] - 8))

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.s.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out


def trade_row(sym: str, price: float, size: int):
    return kk(ks(".u.upd"), ks("trade"), kk(ks(sym), kf(price), kj(size), ks("buy")))


def trade_cols(syms: list[str], sizes: list[int]):
    n = len(syms)
    return kk(ks(".u.upd"), ks("trade"), kk(
        ktns(*syms), ktnf(9, *[1.0] * n), ktni(7, *sizes), ktns(*["sell"] * n)))


def aio_columns(table) -> dict:
    """Columns of an aiokdb table object (name -> list of values)."""
    d = table._kvalue
    return dict(zip(d.kkey().kS(), [c for c in d.kvalue().kK()], strict=True))


def receive_rows(q: QClient, rows: int, timeout: float = 10.0) -> list:
    """Published messages until `rows` rows have arrived."""
    got, n, deadline = [], 0, time.time() + timeout
    while n < rows:
        msg = q.receive(max(0.1, deadline - time.time()))
        got.append(msg)
        n += len(msg[2])
    return got


def test_publish_subscribe_and_sym_filter(start_tp):
    tp = start_tp()
    everything = Aio(tp.port)
    answer = everything.sync(kk(ks(".u.sub"), ks("trade"), ks("")))
    assert answer.kK()[0].aS() == "trade"
    assert list(aio_columns(answer.kK()[1])) == ["time", "sym", "price", "size", "side"]
    only_aapl = tp.q()
    only_aapl.query(".u.sub", "trade", np.array(["AAPL"], dtype=object))

    pub = Aio(tp.port)
    pub.sync(trade_row("AAPL", 1.5, 10))
    pub.sync(trade_row("MSFT", 2.5, 20))
    pub.send(trade_cols(["AAPL", "MSFT", "AAPL"], [1, 2, 3]))
    pub.sync(kk(ks(".u.upd"), ks("quote"), kk(ks("AAPL"), kf(1.0), kf(1.1), kj(5), kj(6))))

    msgs = [everything.read() for _ in range(3)]
    assert [m.kK()[0].aS() for m in msgs] == ["upd"] * 3
    cols = [aio_columns(m.kK()[2]) for m in msgs]
    assert [list(c["sym"].kS()) for c in cols] == [["AAPL"], ["MSFT"], ["AAPL", "MSFT", "AAPL"]]
    assert list(cols[2]["size"].kJ()) == [1, 2, 3] and list(cols[0]["price"].kF()) == [1.5]

    first, second = only_aapl.receive(5), only_aapl.receive(5)
    assert first[2]["size"].tolist() == [10]
    assert second[2]["sym"].tolist() == ["AAPL", "AAPL"] and second[2]["size"].tolist() == [1, 3]
    assert (second[2]["time"] > np.datetime64("2026-01-01")).all()  # stamped by the TP
    with pytest.raises(TimeoutError):
        only_aapl.receive(0.3)  # the quote is not for it, nor the MSFT row
    assert tp.q().query(".u.i") == 4


def test_rq_expression_and_journal_replay(start_tp):
    tp = start_tp()
    pub = tp.q()
    for i in range(3):
        pub.query(".u.upd", "trade", ["ES", 100.0 + i, i, "buy"])
    subs, (count, logfile) = pub.query("(.u.sub[`;`];`.u `i`L)")
    assert [t for t, _ in subs] == list(TABLES)
    assert list(subs[0][1].columns) == ["time", "sym", "price", "size", "side"]
    assert count == 3 and logfile.startswith(":/")
    assert logfile.endswith(f"sym{dt.datetime.now(dt.UTC).date():%Y.%m.%d}")
    replayed = list(jn.iter_records(logfile[1:], count))
    assert [(f, t, d[3]) for f, t, d in replayed] == [("upd", "trade", i) for i in range(3)]
    status = pub.query(".tp.status[]")
    assert status["count"] == 3 and status["subscribers"]["trade"] == 1 and status["mode"] == "zero-latency"
    assert pub.query("tables[]").tolist() == [t for t, _ in subs]


def test_batch_mode_publishes_on_the_timer(start_tp):
    tp = start_tp("--batch-ms", "300")
    sub = tp.q()
    sub.query(".u.sub", "trade", "")
    pub = Aio(tp.port)
    for i in range(20):
        pub.send(trade_row("ES", 1.0, i))
    assert pub.sync(cv(".u.j")).aJ() == 20  # journaled at arrival
    q = tp.q()
    msgs = receive_rows(sub, 20)
    assert len(msgs) <= 2  # published as one table per timer tick, not one message per update
    assert sum(len(m[2]) for m in msgs) == 20
    assert np.concatenate([m[2]["size"].to_numpy() for m in msgs]).tolist() == list(range(20))
    assert q.query(".u.i") == 20  # .u.i catches up with .u.j once published
    assert q.query(".tp.status[]")["mode"] == "batch 300 ms"


def test_updates_that_do_not_fit_are_refused_and_not_journaled(start_tp):
    tp = start_tp()
    q = tp.q()
    with pytest.raises(codec.QError, match="size .* must be a long atom, got float atom"):
        q.query(".u.upd", "trade", ["ES", 1.0, 1.5, "buy"])
    with pytest.raises(codec.QError, match="unknown table `nosuch"):
        q.query(".u.upd", "nosuch", ["ES", 1.0, 1, "buy"])
    pub = Aio(tp.port)
    pub.send(kk(ks(".u.upd"), ks("trade"), kk(ks("ES"), kf(1.0))))  # async: too few columns
    assert pub.sync(cv(".u.i")).aJ() == 0
    q.query(".u.upd", "trade", ["ES", 1.0, 1, "buy"])
    status = q.query(".tp.status[]")
    assert status["rejected"] == 3 and "expected 5 columns" in status["lastRejection"]
    assert q.query(".u.i") == 1
    assert jn.validate(status["journal"]).count == 1
    assert "rejected" in tp.log.read_text()


def test_kill9_mid_stream_loses_no_acknowledged_update(start_tp):
    tp = start_tp()
    acked: list[int] = []
    stop = threading.Event()

    def publish() -> None:
        try:
            q = tp.q()
            for i in range(1_000_000):
                if stop.is_set():
                    return
                q.query(".u.upd", "trade", ["ES", 1.0, i, "buy"])  # returning = acknowledged
                acked.append(i)
        except (OSError, codec.QError, ConnectionError):
            return

    t = threading.Thread(target=publish)
    t.start()
    while len(acked) < 300:
        time.sleep(0.01)
    tp.proc.send_signal(signal.SIGKILL)
    tp.proc.wait()
    stop.set()
    t.join(10)
    assert len(acked) >= 300

    again = start_tp(port=tp.port)
    q = again.q()
    subs, (count, logfile) = q.query("(.u.sub[`;`];`.u `i`L)")
    assert count >= len(acked)
    sizes = [d[3] for _, _, d in jn.iter_records(logfile[1:], count)]
    assert set(acked) <= set(sizes)
    assert sizes == list(range(len(sizes)))  # in order, no gaps, no duplicates
    q.query(".u.upd", "trade", ["ES", 1.0, -1, "buy"])
    assert q.query(".u.i") == count + 1


def test_corrupt_journal_tail_is_moved_aside_on_start(start_tp, tmp_path):
    logdir = tmp_path / "tplog"
    path = logdir / f"sym{dt.datetime.now(dt.UTC).date():%Y.%m.%d}"
    good = [codec.encode(["upd", "trade", [np.datetime64("2026-11-21T10:00", "ns"), "ES", 1.0, i, "buy"]])
            for i in range(2)]
    logdir.mkdir()
    path.write_bytes(jn.HEADER + good[0] + good[1] + good[1][:11])  # a torn third record
    tp = start_tp()
    q = tp.q()
    assert q.query(".u.i") == 2
    aside = list(logdir.glob(path.name + ".badtail.*"))
    assert len(aside) == 1 and aside[0].read_bytes() == good[1][:11]
    q.query(".u.upd", "trade", ["ES", 1.0, 2, "buy"])
    assert [d[3] for _, _, d in jn.iter_records(path)] == [0, 1, 2]
    assert "bad tail" in tp.log.read_text()


def test_end_of_day_rolls_the_journal_and_sends_u_end(start_tp):
    tp = start_tp()
    sub = tp.q()
    sub.query(".u.sub", "", "")
    q = tp.q()
    q.query(".u.upd", "trade", ["ES", 1.0, 1, "buy"])
    assert sub.receive(5)[0] == "upd"
    old = q.query(".u.L")
    today = dt.datetime.now(dt.UTC).date()
    out = subprocess.run([sys.executable, "-m", "pretrade.cli", "eod", "--tp", f"127.0.0.1:{tp.port}"],
                         capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONPATH=str(ROOT / "py")))
    assert out.returncode == 0, out.stderr
    assert f"end of day {today:%Y.%m.%d}" in out.stdout
    assert sub.receive(5) == [".u.end", today]
    new = q.query(".u.L")
    assert new.endswith(f"sym{today + dt.timedelta(days=1):%Y.%m.%d}") and q.query(".u.i") == 0
    q.query(".u.upd", "trade", ["ES", 1.0, 2, "buy"])
    assert jn.validate(old[1:]).count == 1 and jn.validate(new[1:]).count == 1
    assert q.query(".u.d") == today + dt.timedelta(days=1)


def test_a_subscriber_that_stops_reading_is_cut_off_and_others_are_not_slowed(start_tp):
    tp = start_tp("--max-buffer", "1000000")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", tp.port))
    slow.sendall(b"slow:\x03\x00")
    assert slow.recv(1)
    slow.sendall(b9(kk(ks(".u.sub"), ks("trade"), ks("")), msgtype=MessageType.SYNC))
    fast = tp.q()
    fast.query(".u.sub", "trade", "")
    n, rows = 1000, 500  # ~13 MB: far more than the kernel buffers and the bound hold
    received: list[bytes] = []

    def read() -> None:
        while len(received) < n:
            received.append(fast.receive_raw(10)[1])

    reader = threading.Thread(target=read)
    reader.start()
    pub = Aio(tp.port)
    for i in range(n):
        pub.send(trade_cols(["ES"] * rows, [i] * rows))
        # a subscriber that reads stays within the bound: the publisher never runs more than
        # ~40 messages (~0.5 MB) ahead of it, while the one that stopped reading falls ever behind
        deadline = time.time() + 10
        while len(received) < i - 40 and time.time() < deadline:
            time.sleep(0.001)
    assert pub.sync(cv(".u.i")).aJ() == n
    reader.join(30)
    assert len(received) == n
    assert codec.loads(received[-1])[2]["size"].tolist() == [n - 1] * rows
    assert tp.q().query(".tp.status[]")["subscribers"]["trade"] == 1  # the slow one was cut off
    assert "slow@" in tp.log.read_text() and "cut off" in tp.log.read_text()
    slow.close()


def test_users_file_refuses_a_wrong_password(start_tp, tmp_path):
    from pretrade.ipc.auth import hash_password, set_user
    from pretrade.ipc.client import QAuthError

    users = tmp_path / "users.toml"
    set_user(users, "feed", hash_password("s3cret"))
    tp = start_tp("--users", str(users))
    with pytest.raises(QAuthError):
        QClient("127.0.0.1", tp.port, "feed", "wrong")
    with QClient("127.0.0.1", tp.port, "feed", "s3cret") as q:
        q.query(".u.upd", "trade", ["ES", 1.0, 1, "buy"])
        assert q.query(".u.i") == 1
