"""The gateway's parts without FIX: the limits table (newer seq wins, fail closed, TTL fallback
and recovery), the gate (modes: enforce, shadow, A/B), the reports, the session config."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pretrade.gateway.gate import Gate, risk_state
from pretrade.gateway.limits_table import FALLBACK_TIER, LimitsTable
from pretrade.gateway.sessions import load_clients, render
from pretrade.gateway.shadow import ab_report, arm_of, shadow_report
from pretrade.risk.checks import Order
from pretrade.risk.limits import Limit, load_config
from pretrade.schema import TABLES

pytestmark = pytest.mark.fix


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def lim(sym="ESZ6", seq=1, tier="NORMAL", state="ACTIVE", max_qty=100, strategy=""):
    return Limit(0, sym, strategy, seq, tier, state, "", max_qty, 1e9, 500.0, 1500.0, 10_000, 1000,
                 0.1, "", "vae-3")


@pytest.fixture
def setup():
    clock, alerts = Clock(), []
    table = LimitsTable(load_config(), ttl_s=2.0, fallback_scale=0.5, clock=clock,
                        on_alert=lambda *a: alerts.append(a))
    table.bids["ESZ6"], table.asks["ESZ6"] = 4999.75, 5000.25
    return table, clock, alerts


def test_fail_closed_before_the_first_limits(setup):
    table, clock, _ = setup
    clock.t += 1000  # long past any TTL: still no limits means no order
    assert table.lookup("ESZ6") == (None, "none")
    gate = Gate(table, load_config().checks)
    v = gate.check(Order("ESZ6", "buy", 1, 5000.0), "s1")
    assert not v.decision.ok and v.decision.code == "NO_LIMITS"


def test_newer_seq_wins_and_subscription_frames_apply(setup):
    table, _, _ = setup
    names = TABLES["limits"].names
    frame = pd.DataFrame([dict(zip(names, lim(seq=5, max_qty=50).row(), strict=True)),
                          dict(zip(names, lim(seq=3, max_qty=999).row(), strict=True))])
    frame["time"] = pd.to_datetime(frame["time"])
    table.on_update("limits", frame)
    assert table.lookup("ESZ6")[0].max_qty == 50
    assert table.apply_limits([lim(seq=4, max_qty=7)]) == 0
    assert table.lookup("ESZ6")[0].max_qty == 50
    table.on_update("quote", pd.DataFrame({"sym": ["ACME"], "bid": [99.99], "ask": [100.01]}))
    assert table.ref_price("ACME") == pytest.approx(100.0)
    assert math.isnan(table.ref_price("NOPE"))


def test_stale_fallback_alerts_and_recovers_only_on_fresh_limits(setup):
    table, clock, alerts = setup
    table.apply_limits([lim(seq=1, max_qty=100)])
    clock.t += 1.9
    assert table.lookup("ESZ6")[1] == "dynamic"
    clock.t += 0.2
    fb, source = table.lookup("ESZ6")
    assert source == "fallback" and fb.tier == FALLBACK_TIER and fb.max_qty == 10000 // 2
    assert alerts[-1][1] == "limits_stale"
    table.on_update("heartbeat", pd.DataFrame({"sym": ["rte"]}))  # alive again, but no limits
    assert table.lookup("ESZ6")[1] == "fallback"
    table.apply_limits([lim(seq=1)])  # not newer: not fresh limits
    assert table.fallback
    table.apply_limits([lim(seq=2, max_qty=80)])
    assert table.lookup("ESZ6")[0].max_qty == 80 and alerts[-1][1] == "limits_fresh"
    assert len([a for a in alerts if a[1] == "limits_stale"]) == 1


def test_gate_enforce_shadow_and_ab(setup):
    table, _, _ = setup
    table.apply_limits([lim(seq=1, tier="HIGH_ALERT", max_qty=50)])
    gate = Gate(table, load_config().checks)
    big = Order("ESZ6", "buy", 200, 4999.75, "algo", "ACC1")
    v = gate.check(big, "s1")
    assert v.decision.text == "MAX_ORDER_QTY: 200 > 50 (tier HIGH_ALERT, model vae-3)"
    assert v.limits == "dynamic" and v.state == "RiskAlert_HighAnomaly" and v.latency_ns > 0
    assert gate.check(Order("ESZ6", "sell", 1, 5000.0, kind="cancel"), "s1").decision.ok
    gate.modes.set("sym", "ESZ6", "shadow", who="risk-officer", reason="trial")
    v = gate.check(big, "s1")
    assert v.decision.ok and v.limits == "static" and v.shadow is not None and not v.shadow.ok
    gate.modes.set("sym", "ESZ6", "ab", who="risk-officer", share=1.0)
    assert not gate.check(Order("ESZ6", "buy", 201, 4999.75, "algo", "ACC1"), "s1").decision.ok
    gate.modes.set("strategy", "algo", "ab", who="risk-officer", share=0.0)  # strategy wins
    assert gate.check(Order("ESZ6", "buy", 202, 4999.75, "algo", "ACC1"), "s1").limits == "static"
    assert [c.who for c in gate.modes.audit] == ["risk-officer"] * 3
    with pytest.raises(ValueError):
        gate.modes.set("sym", "ESZ6", "yolo", who="x")
    with pytest.raises(ValueError):
        gate.modes.set("sym", "ESZ6", "shadow", who="")


def test_risk_state_labels():
    assert risk_state(lim()) is None
    assert risk_state(lim(tier="HIGH_ALERT")) == "RiskAlert_HighAnomaly"
    assert risk_state(lim(state="REDUCING")) == "RiskAlert_Reducing"
    assert risk_state(lim(tier="CRITICAL", state="HALTED")) == "RiskAlert_Halted"


def test_arm_is_deterministic_and_shares_flow():
    keys = [(f"A{i}", "algo") for i in range(2000)]
    arms = [arm_of(a, s, 0.3) for a, s in keys]
    assert arms == [arm_of(a, s, 0.3) for a, s in keys]
    assert 0.25 < arms.count("dynamic") / len(arms) < 0.35
    assert arm_of("A1", "algo", 0.0) == "static" and arm_of("A1", "algo", 1.0) == "dynamic"


def _decision(cl, outcome, rule="PASS", qty=10, price=100.0):
    return {"sym": "ESZ6", "clordid": cl, "account": "A", "side": "buy", "qty": qty, "price": price,
            "outcome": outcome, "rule": rule, "text": rule}


def test_shadow_and_ab_reports():
    d = pd.DataFrame([_decision("1", "pass/static"), _decision("1", "shadow-reject/dynamic", "MAX_ORDER_QTY"),
                      _decision("2", "pass/static"), _decision("2", "shadow-pass/dynamic")])
    r = shadow_report(d)
    assert list(r["clordid"]) == ["1"] and r["rule_dynamic"][0] == "MAX_ORDER_QTY"
    d = pd.DataFrame([_decision("a", "reject/dynamic", "FAT_FINGER"), _decision("b", "pass/dynamic"),
                      _decision("c", "reject/static", "MAX_ORDER_QTY"), _decision("d", "pass/static")])
    r = ab_report(d, errors={"a", "d"}).set_index("arm")
    assert r.loc["dynamic", "caught_errors"] == 1 and r.loc["dynamic", "blocked_valid"] == 0
    assert r.loc["static", "blocked_valid"] == 1 and r.loc["static", "missed_errors"] == 1
    assert r.loc["static", "exposure"] == 1000.0


def test_sessions_config(tmp_path):
    text = render("gateway_clients", ["CLIENT1"], sender="PRETRADE", host="127.0.0.1", port=1,
                  store=tmp_path, log=tmp_path, dictionary="FIX44.xml")
    assert "SenderCompID=PRETRADE" in text and text.rstrip().endswith("TargetCompID=CLIENT1")
    f = tmp_path / "c.toml"
    f.write_text('[client.CLIENT1]\npassword_env = "PW"\n[client.C2]\npassword_env = "UNSET_PW"\n')
    clients = load_clients(f, env={"PW": "s3cret"})
    assert clients["CLIENT1"].accepts("s3cret") and not clients["CLIENT1"].accepts("nope")
    assert not clients["C2"].accepts("")
    f.write_text("")
    with pytest.raises(ValueError, match="no client"):
        load_clients(f, env={})


def test_limits_snapshot_from_the_risk_engine(tmp_path, monkeypatch):
    """On (re)subscription the gateway asks the engine's `.rte.limits` over kdb+ IPC."""
    from conftest import free_port
    from pretrade.gateway.service import GatewayService
    from pretrade.ipc.dispatch import Dispatcher
    from pretrade.ipc.server import BackgroundServer
    from pretrade.risk.engine import limits_output

    rows = [lim("ESZ6", seq=7, tier="ELEVATED", max_qty=40), lim("ACME", seq=8)]
    handler = Dispatcher({".rte.limits": lambda conn, sym="": limits_output(rows).columns})
    monkeypatch.setenv("PRETRADE_FIX_PASSWORD", "x")
    with BackgroundServer(handler, "127.0.0.1", free_port()) as srv:
        svc = GatewayService(tmp_path, free_port(), tp=None, model_path=None, rte=f"127.0.0.1:{srv.port}")
        svc.load_snapshot()
    got, source = svc.table.lookup("ESZ6")
    assert source == "dynamic" and got.seq == 7 and got.max_qty == 40 and got.tier == "ELEVATED"
    assert svc.table.book.last_seq == 8
    svc.publisher.close()


def test_messages_are_built_from_fix_text():
    """messages.build makes a QuickFIX message in one parse: header, body in order, numbers as
    FIX writes them, None left out; a value holding SOH is refused."""
    pytest.importorskip("quickfix")
    from pretrade.gateway import messages as m

    msg = m.build(m.EXEC_REPORT, {m.CL_ORD_ID: "c1", m.ORDER_QTY: 100.0, m.PRICE: 99.25, m.ACCOUNT: None,
                                  m.TEXT: "MAX_ORDER_QTY: 200 > 50 (a=b)", m.RISK_STATE: "RiskAlert_Halted"})
    assert m.msg_type(msg) == m.EXEC_REPORT
    f = m.parse_fields(msg)
    assert (f[8], f[m.CL_ORD_ID], f[m.ORDER_QTY], f[m.PRICE], f[m.TEXT], f[m.RISK_STATE]) == \
        ("FIX.4.4", "c1", "100", "99.25", "MAX_ORDER_QTY: 200 > 50 (a=b)", "RiskAlert_Halted")
    assert m.ACCOUNT not in f and int(f[9]) == len(msg.toString().split("\x0135=", 1)[1].rsplit("\x0110=", 1)[0]) + 4
    with pytest.raises(ValueError, match="SOH"):
        m.build(m.EXEC_REPORT, {m.TEXT: "a\x01b"})


def test_minute_volume_is_a_running_sum_over_the_last_minute():
    table = LimitsTable(load_config())
    s = 1_000_000_000
    for k in range(120):  # one trade a second, size k
        table.add_trade("ESZ6", k * s, k)
    assert table.volume_1m("ESZ6") == sum(range(60, 120))  # trades within 60 s of the latest only
    table.add_trade("ESZ6", 500 * s, 7)  # after a quiet spell: only the new trade
    assert table.volume_1m("ESZ6") == 7 and table.volume_1m("NQZ6") == 0.0


def test_models_see_the_engines_minute_volume_else_the_gateways_tape():
    table = LimitsTable(load_config())
    table.add_trade("ESZ6", 10**9, 40)
    assert table.minute_volume("ESZ6") == 40.0                       # no features row yet: the tape
    table.on_update("features", pd.DataFrame({"sym": ["ESZ6"], "rv_1m": [4e-4], "volume_1m": [5000.0]}))
    assert table.minute_volume("ESZ6") == 5000.0                     # the engine's, as in training
    table.on_update("features", pd.DataFrame({"sym": ["ESZ6"], "rv_1m": [4e-4], "volume_1m": [0.0]}))
    assert table.minute_volume("ESZ6") == 40.0
