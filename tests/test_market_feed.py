"""Feed handler: pacing, and a simulated scenario through the real tickerplant into the RDB."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import free_port
from pretrade.market.feed import Publisher, parse_speed, pump
from pretrade.market.simulator import Simulation, simulate

ENV = {**os.environ, "PYKX_UNLICENSED": "true", "PYKX_SUPPRESS_WARNINGS": "true"}
EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def test_speed_parsing() -> None:
    assert parse_speed("max") is None and parse_speed("10") == 10.0
    with pytest.raises(Exception, match="positive"):
        parse_speed("0")


def test_paced_publishing_follows_market_time() -> None:
    sim = Simulation("normal", 1, syms=["GLOW"], duration=20)
    pub = Publisher(None)
    t0 = time.monotonic()
    result = pump(sim.blocks(), pub, speed=20.0)  # 20 s of market time at 20x: about a second
    wall = time.monotonic() - t0
    assert 0.8 < wall < 5.0
    assert result["sent"]["trade"] == len(simulate("normal", 1, syms=["GLOW"], duration=20)["trade"])


def _start(log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pretrade.cli", *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))  # noqa: SIM115


def _wait_port(p: subprocess.Popen, port: int, log: Path, timeout: float = 30.0) -> None:
    from pretrade.ipc.client import QClient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"process exited with {p.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError):
            QClient("127.0.0.1", port, timeout=2).close()
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}:\n{log.read_text()}")


@pytest.fixture
def stack(tmp_path: Path):
    """A real tickerplant and RDB on free ports, stopped at the end."""
    tp_port, rdb_port = free_port(), free_port()
    procs = []
    try:
        tp = _start(tmp_path / "tp.log", "tp", "--port", str(tp_port), "--journal", str(tmp_path / "journal"))
        procs.append(tp)
        _wait_port(tp, tp_port, tmp_path / "tp.log")
        rdb = _start(tmp_path / "rdb.log", "rdb", "--port", str(rdb_port), "--tp", f"127.0.0.1:{tp_port}",
                     "--hdb", str(tmp_path / "hdb"))
        procs.append(rdb)
        _wait_port(rdb, rdb_port, tmp_path / "rdb.log")
        yield tp_port, rdb_port
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def _rdb_table(rdb, name: str) -> pd.DataFrame:
    return rdb.sql(f'select * from "{name}" order by time, sym')


def _same_rows(got: pd.DataFrame, want: pd.DataFrame, keys: list[str]) -> None:
    got = got[want.columns].sort_values(keys, kind="stable", ignore_index=True)
    want = want.sort_values(keys, kind="stable", ignore_index=True)
    got["time"] = pd.to_datetime(got["time"]).dt.tz_localize(None).astype("datetime64[ns]")
    for c in want.columns:
        if not (pd.api.types.is_numeric_dtype(want[c]) or pd.api.types.is_datetime64_any_dtype(want[c])):
            got[c] = [v.decode() if isinstance(v, bytes) else str(v) for v in got[c]]  # q strings: bytes
            want[c] = [str(v) for v in want[c]]
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_scenario_lands_in_the_rdb_row_for_row(stack) -> None:
    from pretrade.client import connect

    tp_port, rdb_port = stack
    args = ["--scenario", "flash-crash", "--seed", "3", "--syms", "ESZ6", "GLOW", "--duration", "90",
            "-p", "at=30", "-p", "speed=20", "-p", "recovery_time=30"]
    out = subprocess.run([sys.executable, "-m", "pretrade.cli", "feed", "sim", *args,
                          "--tp", f"127.0.0.1:{tp_port}", "--speed", "max"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "done: sent" in out.stderr
    want = simulate("flash-crash", 3, syms=["ESZ6", "GLOW"], duration=90, at=30, speed=20.0,
                    recovery_time=30.0)
    with connect(f"127.0.0.1:{rdb_port}") as rdb:
        def counts():
            return {n: int(rdb.sql(f"select count(*) as n from {n}")["n"].iloc[0])
                    for n in ("trade", "quote", "book", "l3")}
        deadline = time.monotonic() + 30
        expected = {n: len(want[n]) for n in ("trade", "quote", "book", "l3")}
        while counts() != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert counts() == expected
        _same_rows(_rdb_table(rdb, "trade"), want["trade"], ["time", "sym", "price", "size"])
        _same_rows(_rdb_table(rdb, "quote"), want["quote"], ["time", "sym", "bid", "ask", "bsize", "asize"])
        _same_rows(_rdb_table(rdb, "l3"), want["l3"], ["time", "sym", "orderid", "event", "size"])
        _same_rows(_rdb_table(rdb, "book"), want["book"], ["time", "sym"])
        # news (a string column) and the firm's orders travel the same way
        extra = simulate("news-shock", 2, syms=["GLOW"], duration=60, at=20, background_per_hour=120.0)
        flow = simulate("fat-finger", 2, syms=["GLOW"], duration=120, orders_per_hour=3000.0)
        pub = Publisher(f"127.0.0.1:{tp_port}")
        pub.publish("news", extra["news"])
        pub.publish("order", flow["order"])
        pub.close()
        assert len(extra["news"]) > 1 and len(flow["order"]) > 10
        deadline = time.monotonic() + 20
        while len(_rdb_table(rdb, "order")) < len(flow["order"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        news = _rdb_table(rdb, "news")
        _same_rows(news, extra["news"], ["time", "sym"])
        _same_rows(_rdb_table(rdb, "order"), flow["order"], ["time", "orderid"])


def test_replay_of_a_dirty_file_through_the_tickerplant(stack) -> None:
    from pretrade.client import connect

    tp_port, rdb_port = stack
    out = subprocess.run([sys.executable, "-m", "pretrade.cli", "feed", "replay", str(EXAMPLES / "l3_dirty.csv"),
                          "--tp", f"127.0.0.1:{tp_port}"], env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "unknown_order: 1" in out.stderr and "crossed: 1" in out.stderr
    with connect(f"127.0.0.1:{rdb_port}") as rdb:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            trades = rdb.sql("select * from trade")
            if len(trades):
                break
            time.sleep(0.2)
        assert trades["price"].tolist() == [4500.25] and trades["size"].tolist() == [8]


def test_feed_reports_an_unreachable_tickerplant() -> None:
    out = subprocess.run([sys.executable, "-m", "pretrade.cli", "feed", "sim", "--duration", "5",
                          "--syms", "GLOW", "--tp", f"127.0.0.1:{free_port()}"],
                         env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "cannot reach the tickerplant" in out.stderr
