"""The risk engine through real processes: tickerplant, feed handler, `pretrade rte`, and an
independent subscriber. A flash crash raises tiers and cuts max order size before the price
bottom; a restarted engine resumes seq without a gap; two replay speeds give the same limits."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import free_port
from conftest import start_pretrade as start
from conftest import stop_process as stop
from pretrade.client import connect

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SYMS = ["ESZ6", "NQZ6"]
SIM = ["--scenario", "flash-crash", "--seed", "3", "--syms", *SYMS, "--duration", "900",
       "-p", "at=600", "-p", "sym=ESZ6"]
STATIC_MAX_QTY = 10000  # config/limits.toml [default] max_qty


class Stack:
    """tp + rte (+ feed runs) in tmp, stopped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tp_port, self.rte_port = free_port(), free_port()
        self.procs: list[subprocess.Popen] = []
        self.procs.append(start(["tp", "--port", str(self.tp_port), "--journal", str(tmp / "journal")],
                                tmp / "tp.log", self.tp_port))
        self.rte = self.start_rte()

    def start_rte(self) -> subprocess.Popen:
        p = start(["rte", "--port", str(self.rte_port), "--tp", f"localhost:{self.tp_port}",
                   "--models", str(ROOT / "models")], self.tmp / "rte.log", self.rte_port)
        self.procs.append(p)
        return p

    def feed(self, speed: str) -> None:
        p = start(["feed", "sim", *SIM, "--speed", speed, "--tp", f"localhost:{self.tp_port}"],
                  self.tmp / "feed.log")
        assert p.wait(180) == 0, (self.tmp / "feed.log").read_text()[-3000:]

    def rte_query(self, text: str):
        with connect(f"localhost:{self.rte_port}") as c:
            return c.query(text)

    def wait_cycled(self, event_time: pd.Timestamp, timeout: float = 120) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.rte_query(".rte.status[]")
            if pd.Timestamp(st["eventTime"]) >= event_time:
                return st
            time.sleep(0.5)
        raise TimeoutError(f"engine did not reach {event_time}: {st}\n{(self.tmp / 'rte.log').read_text()[-3000:]}")

    def wait_restored(self, seq: int, timeout: float = 90) -> dict:
        """The restarted engine's status once it has rebuilt its seq from the journal."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.rte_query(".rte.status[]")
            if st["seq"] >= seq:
                return st
            time.sleep(0.2)
        raise TimeoutError(f"engine did not restore seq {seq}: {st}\n{(self.tmp / 'rte.log').read_text()[-3000:]}")

    def close(self) -> None:
        for p in reversed(self.procs):
            stop(p)


@pytest.fixture
def stack(tmp_path):
    made: list[Stack] = []

    def make(sub: str = "a") -> Stack:
        d = tmp_path / sub
        d.mkdir()
        s = Stack(d)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def collect(sub, tables: dict[str, list], until: float, quiet: float = 3.0) -> None:
    """Drain the subscription into `tables` until `quiet` seconds pass without an update."""
    last = time.time()
    while time.time() < until and time.time() - last < quiet:
        item = sub.get(timeout=0.5)
        if item is not None:
            tables.setdefault(item[0], []).append(item[1])
            last = time.time()


def bottom_time() -> pd.Timestamp:
    from pretrade.market.simulator import simulate

    res = simulate("flash-crash", 3, SYMS, 900, at=600.0, sym="ESZ6")
    return pd.Timestamp(res.labels["stress"]["bottom_time"].iloc[0])


def test_flash_crash_raises_tiers_before_the_bottom_and_restart_keeps_seq(stack):
    s = stack()
    with connect(f"localhost:{s.tp_port}") as c, c.subscribe(["riskAlert", "limits"]) as sub:
        s.feed("max")
        s.wait_cycled(pd.Timestamp("2026-11-20 14:42:50"))
        got: dict[str, list] = {}
        collect(sub, got, time.time() + 30)
        lim, alerts = frame(got.get("limits", [])), frame(got.get("riskAlert", []))
        crash = lim[(lim["sym"] == "ESZ6") & (lim["strategy"] == "")].sort_values("seq")
        before = crash[crash["time"] < bottom_time()]
        order = {"NORMAL": 0, "ELEVATED": 1, "HIGH_ALERT": 2, "CRITICAL": 3}
        tiers = before["tier"].map(order).tolist()
        assert max(tiers) >= 2, before[["time", "tier", "maxQty"]]
        assert before["maxQty"].min() < STATIC_MAX_QTY / 2
        assert any(b > a for a, b in zip(tiers, tiers[1:], strict=False))   # a rise, as published
        assert len(alerts) and (alerts["sym"] == "ESZ6").any()              # the independent subscriber saw them
        assert (lim["seq"].sort_values().diff().dropna() == 1).all()
        last_seq = int(lim["seq"].max())

        stop(s.rte)                                   # restart: state comes back from the journal
        s.rte = s.start_rte()
        st = s.wait_restored(last_seq)
        assert st["seq"] == last_seq, st
        assert "ESZ6" in list(st["breakers"]) or crash["halt"].iloc[-1] != "breaker"
        s.rte_query('.rte.kill[`NQZ6;`;`tester;"restart check"]')
        more: dict[str, list] = {}
        deadline = time.time() + 60
        while time.time() < deadline and not (len(frame(more.get("limits", [])))
                                              and len(frame(more.get("riskAlert", [])))):
            collect(sub, more, time.time() + 1, quiet=0.5)
        new = frame(more.get("limits", []))
        assert len(new) and int(new["seq"].min()) == last_seq + 1
        assert set(new["state"]) == {"HALTED"}
        audit = frame(more.get("riskAlert", []))
        assert (audit["who"] == "tester").any() and (audit["kind"] == "kill").any()


def test_replay_at_two_speeds_gives_identical_limits(stack):
    runs = []
    for name, speed in (("fast", "max"), ("paced", "200")):
        s = stack(name)
        with connect(f"localhost:{s.tp_port}") as c, c.subscribe(["limits"]) as sub:
            s.feed(speed)
            s.wait_cycled(pd.Timestamp("2026-11-20 14:42:50"))
            got: dict[str, list] = {}
            collect(sub, got, time.time() + 30)
        s.close()
        runs.append(frame(got["limits"]).sort_values("seq").reset_index(drop=True))
    end = min(r["time"].max() for r in runs)
    a, b = (r[r["time"] <= end].reset_index(drop=True) for r in runs)
    assert len(a) > 4
    pd.testing.assert_frame_equal(a, b)
