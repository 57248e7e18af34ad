"""The q twins (tickerplant/*.q) speak the same protocol as the embedded engine.

These run only where a licensed q is on the PATH (marker `kdb`; conftest skips them with the
reason otherwise). They start real q processes and talk to them with the project's own client.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port

pytestmark = pytest.mark.kdb

ROOT = Path(__file__).resolve().parents[1]
TICK = ROOT / "tickerplant"


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []

    def start(argv: list[str], port: int, cwd: Path | None = None) -> subprocess.Popen:
        p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(p)
        _wait_port(port, p)
        return p

    yield start
    for p in reversed(started):
        p.kill()
        p.wait()


def _q_tp(procs, tmp_path: Path) -> int:
    port = free_port()
    procs(["q", str(TICK / "tick.q"), "sym", str(tmp_path / "journal"), "-p", str(port)], port)
    return port


def test_tick_q_publishes_tables_to_a_sym_filtered_subscriber(procs, tmp_path):
    from pretrade.ipc.client import QClient

    port = _q_tp(procs, tmp_path)
    with QClient("127.0.0.1", port) as sub, QClient("127.0.0.1", port) as pub:
        name, schema = sub.query(".u.sub", "trade", "AAPL")
        assert name == "trade" and list(schema.columns) == ["time", "sym", "price", "size", "side"]
        pub.query(".u.upd", "trade", ["MSFT", 300.0, 5, "sell"])
        pub.query(".u.upd", "trade", ["AAPL", 190.5, 100, "buy"])
        func, table, data = sub.receive(timeout=5)
        assert (func, table) == ("upd", "trade")
        assert list(data["sym"]) == ["AAPL"] and list(data["size"]) == [100]


def test_r_q_replays_the_tick_q_journal(procs, tmp_path):
    from pretrade.ipc.client import QClient

    tp = _q_tp(procs, tmp_path)
    with QClient("127.0.0.1", tp) as pub:
        for i in range(3):
            pub.query(".u.upd", "trade", ["AAPL", 100.0 + i, 10, "buy"])
    rdb = free_port()
    procs(["q", str(TICK / "r.q"), f":{tp}", f":{free_port()}", "-p", str(rdb)], rdb, cwd=tmp_path)
    with QClient("127.0.0.1", rdb) as q:
        assert q.query("count trade") == 3


def test_unmodified_r_q_subscribes_to_the_embedded_tickerplant(procs, tmp_path):
    """The embedded TP answers r.q's subscription expression and its journal replays with -11!."""
    from pretrade.ipc.client import QClient

    tp = free_port()
    procs([sys.executable, "-m", "pretrade.cli", "tp", "--port", str(tp),
           "--journal", str(tmp_path / "journal")], tp)
    with QClient("127.0.0.1", tp) as pub:
        for i in range(5):
            pub.query(".u.upd", "quote", ["AAPL", 100.0 + i, 100.1 + i, 10, 20])
    rdb = free_port()
    procs(["q", str(TICK / "r.q"), f":{tp}", f":{free_port()}", "-p", str(rdb)], rdb, cwd=tmp_path)
    with QClient("127.0.0.1", rdb) as q, QClient("127.0.0.1", tp) as pub:
        assert q.query("count quote") == 5
        pub.query(".u.upd", "quote", ["MSFT", 300.0, 300.1, 1, 2])
        time.sleep(0.5)
        assert q.query("count quote") == 6
