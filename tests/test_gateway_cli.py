"""`pretrade exchange` and `pretrade gateway` as processes: they start from the command line, a
client logs on with the password from PRETRADE_FIX_PASSWORD, an order flows through to the
exchange, a mode change on the control port is applied and audited on the tickerplant, and
`pretrade gateway-report shadow` reads the decisions back from the RDB."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest

from conftest import free_port
from conftest import start_pretrade as start
from conftest import stop_process as stop
from test_gateway_e2e import PASSWORD, Engine, start_tp, wait_for

pytest.importorskip("quickfix", reason="QuickFIX is not installed: pip install -e '.[fix]'")

from pretrade.client import connect  # noqa: E402
from pretrade.gateway import messages as m  # noqa: E402
from pretrade.gateway.fixclient import FixInitiator  # noqa: E402
from pretrade.ipc.client import QClient  # noqa: E402

pytestmark = [pytest.mark.fix, pytest.mark.slow, pytest.mark.timeout(120)]


def test_processes_from_the_command_line(tmp_path):
    tp_port, ex_port, gw_port, ctl_port, rdb_port = (free_port() for _ in range(5))
    os.environ["PRETRADE_FIX_PASSWORD"] = PASSWORD
    procs = [start_tp(tmp_path, tp_port)]
    try:
        procs.append(start(["rdb", "--port", str(rdb_port), "--tp", f"localhost:{tp_port}",
                            "--hdb", str(tmp_path / "hdb")], tmp_path / "rdb.log", rdb_port))
        procs.append(start(["exchange", "--fix-port", str(ex_port), "--syms", "ESZ6,ACME", "--seed", "1",
                            "--workdir", str(tmp_path / "ex")], tmp_path / "ex.log", ex_port))
        def gateway(fix_port: int, control: int, name: str):
            return start(["gateway", "--fix-port", str(fix_port), "--tp", f"localhost:{tp_port}",
                          "--exchange", f"127.0.0.1:{ex_port}", "--port", str(control), "--model", "none",
                          "--rdb", f"localhost:{rdb_port}", "--hdb", "",
                          "--workdir", str(tmp_path / name)], tmp_path / f"{name}.log", control)

        procs.append(gateway(gw_port, ctl_port, "gw"))
        engine = Engine(f"localhost:{tp_port}")
        alerts = connect(f"localhost:{tp_port}").subscribe("riskAlert")
        c = FixInitiator(tmp_path / "c", gw_port, "CLIENT1", "PRETRADE", password=PASSWORD)
        with QClient("127.0.0.1", ctl_port) as ctl:
            assert c.wait_logon(20)
            wait_for(lambda: (s := ctl.query(".gw.status"))["subscribed"] and s["exchange_up"]
                     and s["positions_known"], timeout=20)  # today's fills read back from the RDB
            engine.start_heartbeat()
            engine.quote("ACME", 99.99, 100.01)
            engine.limits("ACME", tier="HIGH_ALERT", max_qty=200)
            wait_for(lambda: ctl.query(".gw.status")["limits_rows"] == 1)
            c.send(m.NEW_ORDER, {m.CL_ORD_ID: "k1", m.SYMBOL: "ACME", m.SIDE: "1", m.ORDER_QTY: 300,
                                 m.ORD_TYPE: "2", m.PRICE: 99.9, m.TRANSACT_TIME: m.utc_now()})
            r = c.until(lambda x: x.get(m.CL_ORD_ID) == "k1")
            assert r[m.TEXT] == "MAX_ORDER_QTY: 300 > 200 (tier HIGH_ALERT, model vae-3)"
            assert ctl.query(".gw.mode", "sym", "ACME", "shadow", "risk-officer", b"trial") == "sym ACME -> shadow"
            c.send(m.NEW_ORDER, {m.CL_ORD_ID: "k2", m.SYMBOL: "ACME", m.SIDE: "1", m.ORDER_QTY: 300,
                                 m.ORD_TYPE: "2", m.PRICE: 99.8, m.TRANSACT_TIME: m.utc_now()})
            r = c.until(lambda x: x.get(m.CL_ORD_ID) == "k2")
            assert r[m.ORD_STATUS] == "0", r.get(m.TEXT)  # static limits bind in shadow mode
            c.send(m.NEW_ORDER, {m.CL_ORD_ID: "k3", m.SYMBOL: "ACME", m.SIDE: "1", m.ORDER_QTY: 100,
                                 m.ORD_TYPE: "2", m.PRICE: 100.10, m.TRANSACT_TIME: m.utc_now()})  # crosses the ask
            r = c.until(lambda x: x.get(m.CL_ORD_ID) == "k3" and x.get(m.EXEC_TYPE) == "F", timeout=10)
            wait_for(lambda: ctl.query(".gw.status")["positions"] == "{'ACME': 100}")
        end = time.monotonic() + 10
        audit = None
        while audit is None and time.monotonic() < end:
            got = alerts.get(timeout=0.5)
            if got and (rows := got[1][got[1]["kind"] == "gateway_mode"]).shape[0]:
                audit = rows.iloc[0]
        assert audit is not None and audit["who"] == "risk-officer" and audit["sym"] == "ACME"
        out = tmp_path / "shadow.csv"
        with connect(f"localhost:{rdb_port}") as rdb:
            wait_for(lambda: len(rdb.sql("select * from decision where clordid = 'k2'")) == 2)
        rep = start(["gateway-report", "shadow", "--rdb", f"localhost:{rdb_port}", "--csv", str(out)],
                    tmp_path / "report.log")
        assert rep.wait(60) == 0, (tmp_path / "report.log").read_text()[-2000:]
        report = pd.read_csv(out)
        row = report[report["clordid"] == "k2"].iloc[0]
        assert row["verdict_static"] == "pass" and row["verdict_dynamic"] == "reject"
        assert row["rule_dynamic"] == "MAX_ORDER_QTY"
        # a restarted gateway reads today's fills back from the RDB: it does not start flat
        with connect(f"localhost:{rdb_port}") as rdb:
            wait_for(lambda: len(rdb.sql("select * from execution where event = 'fill'")) == 1, timeout=10)
        c.stop()
        stop(procs.pop())
        gw2_port, ctl2_port = free_port(), free_port()
        procs.append(gateway(gw2_port, ctl2_port, "gw2"))
        with QClient("127.0.0.1", ctl2_port) as ctl:
            wait_for(lambda: ctl.query(".gw.status")["positions_known"], timeout=20)
            assert ctl.query(".gw.status")["positions"] == "{'ACME': 100}"
        assert "positions rebuilt from 1 fills" in (tmp_path / "gw2.log").read_text()
        alerts.close()
        engine.kill()
    finally:
        for p in reversed(procs):
            stop(p)
