"""Governance survives a kill -9 of the risk engine, through real processes (tickerplant, feed
handler, `pretrade rte`, an independent subscriber): kill switches, resets, manual REDUCING,
overrides and the model's status come back from the journal; an override ends on the wall clock
with no market data flowing; the `limits` seq runs on without a gap or a repeat."""

from __future__ import annotations

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
SIM = ["--scenario", "normal", "--seed", "3", "--syms", "ESZ6", "NQZ6", "--duration", "120"]


def wait_for(what: str, check, timeout: float = 90.0):
    """Poll `check` until it returns something true; TimeoutError naming `what` otherwise."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise TimeoutError(f"{what}: last saw {last!r}")


class Seen:
    """What an independent subscriber received, by table."""

    def __init__(self, sub) -> None:
        self.sub = sub
        self.parts: dict[str, list[pd.DataFrame]] = {}

    def drain(self) -> Seen:
        while (item := self.sub.get(timeout=0.1)) is not None:
            self.parts.setdefault(item[0], []).append(item[1])
        return self

    def frame(self, name: str) -> pd.DataFrame:
        parts = self.drain().parts.get(name, [])
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def text(col: pd.Series) -> pd.Series:
    return col.map(lambda v: v.decode() if isinstance(v, bytes) else str(v))


def test_governance_survives_kill_9_and_the_seq_runs_on(tmp_path):
    tp_port, rte_port = free_port(), free_port()
    procs = [start(["tp", "--port", str(tp_port), "--journal", str(tmp_path / "journal")],
                   tmp_path / "tp.log", tp_port)]

    def start_rte():
        p = start(["rte", "--port", str(rte_port), "--tp", f"localhost:{tp_port}",
                   "--models", str(ROOT / "models")], tmp_path / "rte.log", rte_port)
        procs.append(p)
        return p

    def q(expr: str):
        with connect(f"localhost:{rte_port}") as c:
            return c.query(expr)

    try:
        rte = start_rte()
        with connect(f"localhost:{tp_port}") as c, c.subscribe(["limits", "riskAlert"]) as sub:
            seen = Seen(sub)
            feed = start(["feed", "sim", *SIM, "--speed", "max", "--tp", f"localhost:{tp_port}"],
                         tmp_path / "feed.log")
            assert feed.wait(180) == 0, (tmp_path / "feed.log").read_text()[-3000:]
            wait_for("limits for both instruments",
                     lambda: {"ESZ6", "NQZ6"} <= set(text(seen.frame("limits").get("sym", pd.Series(dtype=object)))))

            q('.rte.kill[`NQZ6;`;`alice;"fat finger desk"]')
            q('.rte.kill[`;`algo;`alice;"algo runaway"]')
            q('.rte.reset[`;`algo;`bob]')
            q('.rte.reduce[`ESZ6;`mm;`carol]')
            q('.rte.override[`ESZ6;`;`maxQty;1234f;600f;`dave;"desk call"]')
            q('.rte.override[`ESZ6;`mm;`maxPosition;777f;3f;`dave;"short one"]')
            q('.rte.shadow[`vae;`erin;"shadow week"]')
            acted = {("kill", "alice"), ("reset", "bob"), ("reduce", "carol"), ("override", "dave"),
                     ("deactivate", "erin"), ("status", "erin")}

            def audited():
                a = seen.frame("riskAlert")
                return len(a) and acted <= set(zip(text(a["kind"]), text(a["who"]), strict=True))

            wait_for("the audit rows of every action", audited)
            before = wait_for("the engine's seq, as the subscriber saw it", lambda: (
                (st := q(".rte.status[]"))["seq"] == int(seen.frame("limits")["seq"].max()) and st))
            assert before["kills"] == ["NQZ6/*"] and before["reducing"] == ["ESZ6/mm"]
            assert before["modelStatus"] == "shadow" and not before["modelActive"]
            long_override = [o for o in before["overrides"] if "max_qty" in o]
            assert len(long_override) == 1 and "(wall clock)" in long_override[0]

            rte.kill()                                   # kill -9: no chance to tidy up
            rte.wait(30)
            rte = start_rte()
            after = wait_for("the restarted engine's restored state", lambda: (
                (st := q(".rte.status[]"))["seq"] >= before["seq"] and st["modelStatus"] == "shadow" and st))
            assert after["kills"] == ["NQZ6/*"] and after["reducing"] == ["ESZ6/mm"]
            assert not after["modelActive"] and after["breakers"] == before["breakers"]
            assert long_override[0] in after["overrides"]     # the same expiry on the wall clock

            def ended():                                 # the feed is done: only the wall clock moves
                lim = seen.frame("limits")
                return (text(lim["reason"]).str.contains("override expired") & (lim["sym"] == "ESZ6")
                        & (lim["strategy"] == "mm")).sum()

            assert wait_for("the 3 s override's end", ended) == 1
            q('.rte.kill[`ESZ6;`;`alice;"after the restart"]')
            wait_for("the kill after the restart", lambda: (
                text(seen.frame("limits")["halt"]).eq("kill") & (seen.frame("limits")["sym"] == "ESZ6")).any())

            lim = seen.frame("limits").sort_values("seq")
            assert list(lim["seq"]) == list(range(1, len(lim) + 1))   # from 1, no gap, no repeat
            last = lim.groupby(["sym", "strategy"]).last()
            assert last.loc[("ESZ6", ""), "maxQty"] == 1234           # the long override still holds
            assert last.loc[("ESZ6", "mm"), "maxPosition"] != 777     # the short one ended
            assert q(".rte.status[]")["kills"] == ["ESZ6/*", "NQZ6/*"]
    finally:
        for p in reversed(procs):
            stop(p)
