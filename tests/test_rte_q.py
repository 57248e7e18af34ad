"""q/rte.q hosts the same Python engine through PyKX (needs a licensed q with PyKX: marker kdb)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import free_port
from pretrade.client import connect

pytestmark = [pytest.mark.kdb, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def test_q_hosted_engine_publishes_limits(tmp_path):
    from conftest import start_pretrade as start
    from conftest import stop_process as stop

    tp_port, q_port = free_port(), free_port()
    tp = start(["tp", "--port", str(tp_port), "--journal", str(tmp_path / "j")], tmp_path / "tp.log", tp_port)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "py"), PYKX_UNLICENSED="false")
    q = subprocess.Popen(["q", str(ROOT / "q" / "rte.q"), "-tp", f"localhost:{tp_port}", "-models",
                          str(ROOT / "models"), "-lateness", "60", "-p", str(q_port)], cwd=ROOT, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with connect(f"localhost:{tp_port}") as c, c.subscribe(["limits"]) as sub:
            deadline = time.time() + 60                 # the q engine has subscribed (to every table)
            while c.query(".tp.status[]")["subscribers"]["quote"] < 1:
                assert time.time() < deadline and q.poll() is None, "q/rte.q did not subscribe"
                time.sleep(0.2)
            feed = start(["feed", "sim", "--scenario", "normal", "--syms", "ESZ6", "--duration", "180",
                          "--speed", "max", "--tp", f"localhost:{tp_port}"], tmp_path / "feed.log")
            assert feed.wait(120) == 0
            got = []
            deadline = time.time() + 30
            while time.time() < deadline and not got:
                item = sub.get(timeout=1)
                if item:
                    got.append(item[1])
            lim = pd.concat(got)
            assert set(lim["sym"]) == {"ESZ6"} and (lim["seq"] >= 1).all()
    finally:
        q.kill()
        stop(tp)
