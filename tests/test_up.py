"""`pretrade up`: a dead process is reported and restarted; Ctrl-C writes end of day, losing nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _topology(path: Path) -> Path:
    ports = {name: free_port() for name in ("tp", "rdb", "hdb", "rte", "gw", "ex", "ctl", "api")}
    path.write_text(f"""
[paths]
data = "var"
[tp]
host = "127.0.0.1"
port = {ports['tp']}
batch_ms = 0
[rdb]
port = {ports['rdb']}
[hdb]
port = {ports['hdb']}
[rte]
port = {ports['rte']}
[gateway]
fix_port = {ports['gw']}
control_port = {ports['ctl']}
[exchange]
fix_port = {ports['ex']}
[api]
port = {ports['api']}
""")
    return path


def _wait_for(pattern: str, log: Path, timeout: float = 90.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, log.read_text(errors="replace")) if log.exists() else None
        if m:
            return m
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not seen in {log}:\n{log.read_text()[-3000:]}")


def test_restart_of_a_dead_process_and_clean_stop_with_end_of_day(tmp_path):
    import tomllib

    from pretrade.client import connect

    topo_file = _topology(tmp_path / "topology.toml")
    topo = tomllib.loads(topo_file.read_text())
    data, log = tmp_path / "var", tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "pretrade.cli", "up", "--config", str(topo_file),
                               "--data", str(data), "--no-feed", "--skip", "gateway", "exchange", "api"],
                              stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                              env=dict(os.environ, PYKX_UNLICENSED="true"))
    try:
        _wait_for(r"pretrade is up", log)
        password = (data / "ipc-password").read_text().strip()
        tp = f"127.0.0.1:{topo['tp']['port']}"
        rdb = f"127.0.0.1:{topo['rdb']['port']}"
        with connect(tp, "pretrade", password) as c:
            for i in range(20):
                c.publish("trade", ["AAPL", 100.0 + i, 10, "buy"])

        rdb_pid = int(_wait_for(r"started rdb \(pid (\d+)\)", log).group(1))
        os.kill(rdb_pid, signal.SIGKILL)
        _wait_for(r"rdb exited with code -9; restarting", log)
        _wait_for(rf"started rdb \(pid (?!{rdb_pid})\d+\)", log)
        deadline = time.monotonic() + 60
        while True:  # the restarted RDB replays the journal: every row is back
            try:
                with connect(rdb, "pretrade", password) as c:
                    if c.sql("select count(*) as n from trade").iloc[0, 0] == 20:
                        break
            except (OSError, ConnectionError):
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)

        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(90) == 0, log.read_text()[-3000:]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    text = log.read_text()
    assert "end of day" in text and "written to" in text, text[-3000:]
    parts = sorted((data / "hdb").glob("date=*/trade.parquet"))
    assert len(parts) == 1
    assert pq.read_table(parts[0]).num_rows == 20  # nothing lost, nothing doubled by the replay
