"""`pretrade hedge`, the process: its configuration is checked at the boundary, and against a real
tickerplant, gateway and exchange it turns quotes and the engine's rv_1m into the agent's hedge
orders, sent as FIX client HEDGE1 with strategy "hedge", checked by the gateway like any order;
its hedge units move on the fill, and a rejection is logged with the gateway's text, units kept.

The stack is test_gateway_e2e's (tickerplant process, in-process exchange and gateway, the test
playing the risk engine); the hedge process is the real `pretrade hedge` subprocess."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port, start_pretrade, stop_process
from pretrade.hedging.process import ConfigError, annualised_vol, parse_config

CONFIG = {"hedge": {"cost": 0.001, "every": 30},
          "positions": [{"sym": "ACME", "contracts": 20, "strike": 100.0, "maturity": 0.25, "multiplier": 100}]}


def _with(**changes) -> dict:
    pos = {**CONFIG["positions"][0], **changes}
    return {"hedge": dict(CONFIG["hedge"]), "positions": [{k: v for k, v in pos.items() if v is not None}]}


# ---- configuration (fast, no processes) -------------------------------------------------------
def test_the_shipped_config_is_valid_and_trades_a_simulated_instrument():
    from pretrade.config import topology
    from pretrade.hedging.process import load_config
    from pretrade.market.instruments import UNIVERSE

    cfg = load_config(ROOT / "config" / "hedge.toml")
    assert cfg.model.exists() and cfg.every > 0 and cfg.cost >= 0
    assert topology()["market"]["scenario"] == "normal"
    for p in cfg.positions:
        assert p.sym in UNIVERSE and p.lot == UNIVERSE[p.sym].lot and p.contracts != 0


def test_defaults_filled_in():
    cfg = parse_config(CONFIG)
    (p,) = cfg.positions
    assert (p.name, p.kind, p.lot, p.vol, p.hedge_units, p.expiry_ns) == ("ACME-call-100", "call", 100, None, 0.0, None)
    assert cfg.model.name == "hedging_bs.onnx" and cfg.model.is_absolute()


def test_expiry_as_a_date_or_text():
    import datetime as dt

    p = parse_config(_with(maturity=None, expiry=dt.date(2027, 3, 19))).positions[0]
    q = parse_config(_with(maturity=None, expiry="2027-03-19T00:00:00Z")).positions[0]
    assert p.expiry_ns == q.expiry_ns == int(dt.datetime(2027, 3, 19, tzinfo=dt.UTC).timestamp()) * 10**9


@pytest.mark.parametrize("changes, message", [
    ({"contracts": 0}, "contracts must not be 0"),
    ({"strike": -1}, "strike must be > 0"),
    ({"maturity": None}, "missing maturity or expiry"),
    ({"kind": "straddle"}, "kind must be call or put"),
    ({"sym": "XYZ"}, "lot is required for XYZ"),
    ({"lot": 0}, "lot must be a positive integer"),
    ({"vol": "high"}, "vol must be a number"),
    ({"strik": 100}, "unknown field(s) strik"),
    ({"expiry": "next friday"}, "not an ISO date"),
])
def test_bad_position_lines_are_refused_with_the_field(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        parse_config(_with(**changes), "hedge.toml")
    assert str(e.value).startswith("hedge.toml: positions[0]")


def test_bad_file_level_settings_are_refused():
    with pytest.raises(ConfigError, match="non-empty list"):
        parse_config({"hedge": {}})
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_config({**CONFIG, "hedge": {"cots": 0.001}})
    with pytest.raises(ConfigError, match="cost must be >= 0"):
        parse_config({**CONFIG, "hedge": {"cost": -0.1}})
    with pytest.raises(ConfigError, match="vol_bounds must be"):
        parse_config({**CONFIG, "hedge": {"vol_bounds": [0.5, 0.1]}})
    with pytest.raises(ConfigError, match="used twice"):
        parse_config({"positions": CONFIG["positions"] * 2})


def test_rv_1m_annualised_over_trading_minutes():
    assert annualised_vol(1e-3) == pytest.approx(1e-3 * (252 * 390) ** 0.5)


# ---- the hedger's decisions and answers (the real agent, no processes) ------------------------
S = 10**9


def _hedger(every: float = 30, **changes):
    from pretrade.hedging.agent import HedgingAgent
    from pretrade.hedging.process import Hedger

    cfg = parse_config({"hedge": {"every": every}, "positions": _with(**changes)["positions"]})
    return Hedger(HedgingAgent(ROOT / "models" / "hedging_bs.onnx"), cfg, prefix="T")


def _report(clordid: str, exec_type: str, status: str, **extra) -> dict:
    from pretrade.gateway import messages as m

    return {m.CL_ORD_ID: clordid, m.EXEC_TYPE: exec_type, m.ORD_STATUS: status,
            **{getattr(m, k.upper()): str(v) for k, v in extra.items()}}


def test_no_decision_before_a_quote_and_a_full_minute_of_rv():
    h = _hedger()
    h.on_quotes([{"time": 0, "sym": "ACME", "bid": 99.99, "ask": 100.01}])
    assert h.decide() == []
    h.on_features([{"time": 1 * S, "sym": "ACME", "ready": False, "rv_1m": 8e-4}])
    assert h.decide() == []  # rv_1m's window is not full yet
    h.on_features([{"time": 61 * S, "sym": "ACME", "ready": False, "rv_1m": 8e-4}])
    ((book, clordid, order),) = h.decide()
    assert clordid == "T-ACME-call-100-1" and order["side"] == "buy" and order["qty"] % 100 == 0
    assert h.vol["ACME"] == pytest.approx(annualised_vol(8e-4))


def test_a_quiet_minute_vol_is_clamped_into_the_bounds(caplog):
    h = _hedger()
    h.on_quotes([{"time": 0, "sym": "ACME", "bid": 99.99, "ask": 100.01}])
    h.on_features([{"time": 0, "sym": "ACME", "ready": True, "rv_1m": 1e-5}])  # ~0.3% a year
    with caplog.at_level("INFO", logger="pretrade.hedging.process"):
        h.decide()
    assert "vol 0.050 (rv_1m gives 0.003, clamped to [0.05, 1])" in caplog.text


def test_units_move_on_fills_only_and_a_rejection_frees_the_position():
    h = _hedger(every=30, vol=0.25)
    h.on_quotes([{"time": 0, "sym": "ACME", "bid": 99.99, "ask": 100.01}])
    ((_, c1, order),) = h.decide()
    h.on_quotes([{"time": 40 * S, "sym": "ACME", "bid": 99.99, "ask": 100.01}])
    assert h.decide() == []  # its order is in flight: no second order on top
    h.on_report(_report(c1, "0", "0"))
    assert h.status()["ACME-call-100"] == {"units": 0.0, "inflight": c1}
    h.on_report(_report(c1, "F", "1", last_qty=300, last_px=100.01))
    h.on_report(_report(c1, "F", "2", last_qty=order["qty"] - 300, last_px=100.02))
    assert h.status()["ACME-call-100"] == {"units": float(order["qty"]), "inflight": None}
    # the spot jumps: the agent buys more; the gateway rejects it; the units stay
    h.on_quotes([{"time": 80 * S, "sym": "ACME", "bid": 109.99, "ask": 110.01}])
    ((_, c2, more),) = h.decide()
    assert more["side"] == "buy"
    h.on_report(_report(c2, "8", "8", text="MAX_ORDER_QTY: 900 > 100"))
    assert h.status()["ACME-call-100"] == {"units": float(order["qty"]), "inflight": None}
    assert h.decide() == []  # not resent blindly: the next interval decides again
    h.on_quotes([{"time": 111 * S, "sym": "ACME", "bid": 109.99, "ask": 110.01}])
    ((_, c3, again),) = h.decide()
    assert c3 != c2 and again["side"] == "buy"


def test_nothing_sent_while_the_gateway_session_is_down():
    h = _hedger(vol=0.25)
    h.on_quotes([{"time": 0, "sym": "ACME", "bid": 99.99, "ask": 100.01}])
    assert h.decide(logged_on=False) == []
    assert h.status()["ACME-call-100"]["inflight"] is None


def test_no_decision_until_todays_earlier_fills_are_read_back():
    from pretrade.hedging.agent import HedgingAgent
    from pretrade.hedging.process import Hedger, units_from_fills

    cfg = parse_config(_with(name="ACME-C100", vol=0.25, hedge_units=200))
    h = Hedger(HedgingAgent(ROOT / "models" / "hedging_bs.onnx"), cfg, prefix="H2", units_known=False)
    h.on_quotes([{"time": 0, "sym": "ACME", "bid": 99.99, "ask": 100.01}])
    assert h.decide() == [] and h.books["ACME-C100"].last_decision is None
    rows = [{"clordid": b"H1-ACME-C100-1", "side": "buy", "qty": 1000},
            {"clordid": "H1-ACME-C100-2", "side": b"sell", "qty": 100},
            {"clordid": "H2-ACME-C100-1", "side": "buy", "qty": 500},   # this run's own: counted live
            {"clordid": "H1-OTHER-1", "side": "buy", "qty": 100},       # not a configured position
            {"clordid": "c17", "side": "buy", "qty": 100}]              # not this process's order
    assert units_from_fills(rows, {"ACME-C100"}, "H2") == {"ACME-C100": 900.0}
    h.add_fills(units_from_fills(rows, {"ACME-C100"}, "H2"))
    assert h.status()["ACME-C100"]["units"] == 1100.0
    h.decide()
    assert h.books["ACME-C100"].last_decision == 0  # decided now (to hold or to trade)


def test_an_expired_option_is_no_longer_hedged():
    h = _hedger(vol=0.25, maturity=None, expiry="2026-01-02T00:00:00Z")
    import datetime as dt

    after = int(dt.datetime(2026, 1, 3, tzinfo=dt.UTC).timestamp()) * S
    h.on_quotes([{"time": after, "sym": "ACME", "bid": 99.99, "ask": 100.01}])
    assert h.decide() == []


# ---- the process against a real stack ---------------------------------------------------------
def wait_log(log: Path, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match:
    """The first match of `pattern` in the process log past offset `after`, waiting up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.search(pattern, text[after:])
        if found:
            return found
        assert time.monotonic() < deadline, f"{pattern!r} not in the hedge log:\n{text[-4000:]}"
        time.sleep(0.1)


def decision_for(events, clordid: str, timeout: float = 15.0) -> dict:
    from test_hedge_e2e import decision_in

    return decision_in(events, clordid, timeout)


@pytest.fixture(scope="module")
def hedge_stack(tmp_path_factory):
    pytest.importorskip("quickfix", reason="QuickFIX is not installed: pip install -e '.[fix]'")
    from pretrade.client import connect
    from pretrade.gateway.exchange import Venue, start_exchange
    from pretrade.gateway.service import GatewayService
    from test_gateway_e2e import Engine, start_tp, wait_for

    tmp = tmp_path_factory.mktemp("hedge")
    tp_port, ex_port, gw_port = free_port(), free_port(), free_port()
    clients = tmp / "clients.toml"
    clients.write_text('[client.HEDGE1]\npassword_env = "HEDGE_TEST_PW"\naccount = "HEDGE1"\n')
    os.environ["HEDGE_TEST_PW"] = "hedge-secret"
    config = tmp / "hedge.toml"
    config.write_text('positions = [{ name = "ACME-C100", sym = "ACME", contracts = 20, strike = 100.0, '
                      'maturity = 0.25, multiplier = 100 }]\n[hedge]\ncost = 0.001\nevery = 1\nanswer_timeout = 20\n')
    stops: list = []
    with contextlib.ExitStack() as undo:
        undo.callback(lambda: [f() for f in reversed(stops)])
        tp = start_tp(tmp, tp_port)
        stops.append(lambda: stop_process(tp))
        venue = Venue.primed(seed=1, syms=["ACME"])
        exchange = start_exchange(tmp / "ex", ex_port, venue=venue)
        stops.append(exchange.stop)
        svc = GatewayService(tmp / "gw", gw_port, f"localhost:{tp_port}", ("127.0.0.1", ex_port), ttl_s=2.0,
                             clients_path=str(clients), model_path=None).start()
        stops.append(svc.stop)
        engine = Engine(f"localhost:{tp_port}")
        stops.append(engine.kill)
        events = connect(f"localhost:{tp_port}").subscribe(["decision"])
        stops.append(events.close)
        assert svc.gateway.exchange_up.wait(15), "gateway did not log on to the exchange"
        engine.limits("ACME")
        engine.start_heartbeat()
        wait_for(lambda: (lim := svc.table.book.get("ACME")) is not None and lim.tier == "NORMAL", timeout=10)
        log = tmp / "hedge.log"
        hedge = start_pretrade(["hedge", "--config", str(config), "--tp", f"localhost:{tp_port}",
                                "--gateway", f"127.0.0.1:{gw_port}", "--clients", str(clients),
                                "--rdb", "", "--workdir", str(tmp / "fix-hedge")], log)
        stops.append(lambda: stop_process(hedge))  # stopped first: the client logs out, then the gateway stops
        wait_log(log, r"subscribed to localhost:\d+ for quote and features of ACME")
        wait_log(log, r"FIX session to the gateway logged on")
        yield type("HedgeStack", (), dict(svc=svc, engine=engine, venue=venue, events=events, log=log,
                                          hedge=hedge, tmp=tmp))


@pytest.mark.fix
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_agent_hedge_sent_filled_and_counted(hedge_stack):
    st = hedge_stack
    book = next(s.book for s in st.venue.sim.sims if s.ins.sym == "ACME")
    b, a, _, _ = book.top()
    tick = st.venue.insts["ACME"].tick
    st.engine.features("ACME", volume_1m=50_000.0, rv_1m=8e-4)  # ~25% a year
    st.engine.quote("ACME", b * tick, a * tick)
    sent = wait_log(st.log, r"ACME-C100: sending (\S+) buy (\d+) ACME \(strategy hedge\)")
    clordid, qty = sent.group(1), int(sent.group(2))
    assert qty % 100 == 0 and 0 < qty <= 2000  # a short call's delta: between 0 and 1 per unit
    decided = wait_log(st.log, r"ACME-C100 \(short 20 call K=100 x100\): spot [\d.]+ vol ([\d.]+) tau ([\d.]+)y: "
                               r"0 -> [\d.]+ units: buy (\d+) ACME")
    assert float(decided.group(1)) == pytest.approx(annualised_vol(8e-4), abs=1e-3)
    assert 0.24 < float(decided.group(2)) <= 0.25 and int(decided.group(3)) == qty
    d = decision_for(st.events, clordid)
    assert (d["account"], d["strategy"], d["side"], d["qty"]) == ("HEDGE1", "hedge", "buy", qty)
    assert d["outcome"].startswith("pass/"), d["text"]
    # the venue's book fills the market order: the process's units move by what was filled
    fills = wait_log(st.log, rf"ACME-C100: fill {re.escape(clordid)} buy (\d+) @ \S+: hedge units 0 -> (\d+)")
    assert int(fills.group(1)) == int(fills.group(2)) > 0
    wait_log(st.log, rf"fill {re.escape(clordid)} buy \d+ @ \S+: hedge units \d+ -> {qty}\b")  # all of it


@pytest.mark.fix
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_rejected_hedge_is_logged_with_the_gateway_text_and_units_kept(hedge_stack):
    st = hedge_stack
    st.engine.features("ACME", volume_1m=50_000.0, rv_1m=8e-4)  # so that this test also runs alone
    mark = len(st.log.read_text(errors="replace"))
    st.engine.limits("ACME", tier="HIGH_ALERT", max_qty=100)
    from test_gateway_e2e import wait_for

    wait_for(lambda: (lim := st.svc.table.book.get("ACME")) is not None and lim.tier == "HIGH_ALERT", timeout=10)
    # the spot jumps 10% (a quote the venue's book does not follow): delta near 1, the agent buys more
    t = time.time_ns() + 2_000_000_000  # past the 1 s interval of market time
    with st.engine.lock:
        st.engine.conn.publish("quote", [{"time": t, "sym": "ACME", "bid": 109.99, "ask": 110.01,
                                          "bsize": 10, "asize": 10}])
    sent = wait_log(st.log, r"ACME-C100: sending (\S+) buy (\d+) ACME", after=mark)
    clordid, qty = sent.group(1), int(sent.group(2))
    assert qty > 100
    rej = wait_log(st.log, rf"ACME-C100: {re.escape(clordid)} rejected by the gateway: (.+) \(not resent", after=mark)
    d = decision_for(st.events, clordid)
    text = d["text"].decode() if isinstance(d["text"], bytes) else d["text"]
    assert d["outcome"].startswith("reject/") and rej.group(1) == text and text.startswith(d["rule"])
    assert not re.search(rf"fill {re.escape(clordid)}", st.log.read_text(errors="replace")[mark:])  # units kept
