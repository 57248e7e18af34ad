"""People's marks through the API: a risk officer marks an alert (through the risk engine, which
stores the model's inputs with it) or an order's decision (looked up in the RDB / HDB) right or
wrong; traders may list marks but not make them; every mark is audited, read back by
pretrade.models.labels, and shown in the shadow report. Real tickerplant, RDB, HDB and risk engine
(tests/test_api.py's Stack) on a short flash-crash feed, so the engine raises tier alerts."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from conftest import start_pretrade as start
from test_api import OFFICER, SYMS, TRADER, FakeGatewayControl, Stack, wait_for

FLASH = ["--scenario", "flash-crash", "--seed", "3", "--syms", *SYMS, "--duration", "420",
         "-p", "at=330", "-p", "sym=ESZ6"]


# ---- pure parts -------------------------------------------------------------------------------------

def _row(cl, outcome, rule="PASS", sym="ESZ6"):
    return {"time": "2026-11-21T14:00:00.000000000", "sym": sym, "clordid": cl, "account": "A", "side": "buy",
            "qty": 10, "price": 100.0, "outcome": outcome, "rule": rule, "text": rule}


def test_decision_call_reads_the_binding_rows():
    from pretrade.ops.api import decision_call

    assert decision_call([_row("1", "pass/static"), _row("1", "shadow-reject/dynamic", "MAX_ORDER_QTY")]) == \
        ("ESZ6", "accepted", "static")
    assert decision_call([_row("2", "reject/dynamic", "FAT_FINGER", "NQZ6")]) == \
        ("NQZ6", "rejected:FAT_FINGER", "dynamic")


def test_shadow_report_shows_the_latest_mark_beside_each_order(tmp_path):
    from pretrade.gateway.shadow import shadow_report
    from pretrade.models.labels import Mark, add_mark, read_marks

    path = tmp_path / "marks.jsonl"
    d = pd.DataFrame([_row("1", "pass/static"), _row("1", "shadow-reject/dynamic", "MAX_ORDER_QTY"),
                      _row("2", "pass/static"), _row("2", "shadow-pass/dynamic"),
                      _row("3", "reject/static", "MAX_ORDER_QTY"), _row("3", "shadow-pass/dynamic")])
    add_mark(Mark(who="risk1", target="decision", ref="1", sym="ESZ6", verdict="right", call="accepted"), path)
    add_mark(Mark(who="risk2", target="decision", ref="1", sym="ESZ6", verdict="wrong", call="accepted",
                  note="a fat finger: dynamic was right"), path)
    add_mark(Mark(who="risk1", target="alert", ref="3", sym="ESZ6", verdict="right"), path)  # an alert, not order 3
    r = shadow_report(d, read_marks(path)).set_index("clordid")
    assert list(r.index) == ["1", "3"]
    assert (r.loc["1", "mark"], r.loc["1", "mark_by"], r.loc["1", "mark_note"]) == \
        ("wrong", "risk2", "a fat finger: dynamic was right")
    assert r.loc["3", "mark"] == "" and r.loc["3", "mark_by"] == ""
    assert "mark" not in shadow_report(d).columns


# ---- against the real processes ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def marks_path(tmp_path_factory):
    return tmp_path_factory.mktemp("marks") / "marks.jsonl"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, marks_path):
    s = Stack(tmp_path_factory.mktemp("api_marks"), FLASH, rte_args=("--labels-file", str(marks_path)))
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(stack, marks_path):
    from fastapi.testclient import TestClient

    from pretrade.ops.api import create_app

    gw = FakeGatewayControl()
    app = create_app(stack.settings(gw=gw.addr, labels=marks_path))
    try:
        with TestClient(app) as c:
            deadline = time.time() + 20
            while not app.state.live.connected and time.time() < deadline:
                time.sleep(0.1)
            stack.feed()
            yield c
    finally:
        gw.close()


def full_decision(row: dict) -> dict:
    """A decision row with every other schema column at its empty value (the schema grows)."""
    from pretrade.schema import TABLES

    empty = {c.name: 0.0 if c.qtype in "ef" else 0 if c.qtype in "hij" else ""
             for c in TABLES["decision"].columns if c.name != "time"}
    return {**empty, **row}


def tier_alert(client) -> dict:
    got = wait_for(lambda: [a for a in client.get("/alerts", params={"sym": "ESZ6"}, headers=TRADER).json()
                            if a["kind"] == "tier"], timeout=30)
    assert got, "the flash crash raised no tier alert on ESZ6"
    return got[0]


def test_a_trader_may_list_marks_but_not_make_one(client):
    a = tier_alert(client)
    body = {"target": "alert", "sym": "ESZ6", "time": a["time"], "verdict": "wrong"}
    assert client.post("/marks", json=body).status_code == 401
    r = client.post("/marks", json=body, headers=TRADER)
    assert r.status_code == 403 and "risk_officer" in r.json()["detail"]
    denied = client.get("/audit", params={"action": "/marks", "outcome": "denied"}, headers=TRADER).json()
    assert denied and denied[0]["who"] == "trader1"
    assert client.get("/marks", headers=TRADER).status_code == 200


def test_an_alert_marked_wrong_is_stored_with_the_models_inputs_and_audited(client, marks_path):
    from pretrade.models.labels import read_marks, vae_normal_rows

    a = tier_alert(client)
    r = client.post("/marks", json={"target": "alert", "sym": "ESZ6", "time": a["time"], "verdict": "wrong",
                                    "note": "liquidity came back"}, headers=OFFICER)
    assert r.status_code == 200, r.text
    entry = r.json()
    assert entry["action"] == "mark" and entry["who"] == "risk1" and entry["outcome"] == "ok"
    stored = [m for m in read_marks(marks_path) if m.target == "alert" and m.ref == a["time"]]
    assert len(stored) == 1
    m = stored[0]
    assert (m.who, m.sym, m.verdict, m.note, m.call) == ("risk1", "ESZ6", "wrong", "liquidity came back", a["tier"])
    card = client.get("/models/vae", headers=TRADER).json()
    assert set(m.features) == set(card["features"])              # the engine kept the inputs behind the call
    assert vae_normal_rows([m], card["features"]).shape == (1, len(card["features"]))   # so it trains
    listed = client.get("/marks", params={"target": "alert"}, headers=TRADER).json()
    assert listed[0]["ref"] == a["time"] and listed[0]["verdict"] == "wrong" and listed[0]["features"]
    # the engine announces the mark on the alert feed
    assert wait_for(lambda: [x for x in client.get("/alerts", params={"sym": "ESZ6"}, headers=TRADER).json()
                             if x["kind"] == "mark" and "wrong" in x["text"]])
    audit = client.get("/audit", params={"action": "mark", "outcome": "ok"}, headers=TRADER).json()
    assert audit[0]["target"]["time"] == a["time"] and audit[0]["target"]["note"] == "liquidity came back"


def test_bad_marks_get_a_clear_error(client):
    def post(**body):
        return client.post("/marks", json=body, headers=OFFICER)

    assert post(target="alert", verdict="right", time="2026-11-21T14:00:00").status_code == 422   # no sym
    r = post(target="alert", sym="ESZ6", verdict="right", time="yesterday")
    assert r.status_code == 422 and "ISO 8601" in r.json()["detail"]
    assert post(target="alert", sym="ESZ6", verdict="maybe", time="2026-11-21T14:00:00").status_code == 422
    assert post(target="decision", verdict="right").status_code == 422                          # no clordid
    assert post(target="decision", verdict="right", clordid="NOPE-1").status_code == 404
    assert post(target="decision", verdict="right", clordid="bad id!").status_code == 422


def test_decisions_marked_from_the_rdb_and_hdb_show_in_the_shadow_report(client, stack, marks_path, tmp_path):
    from pretrade.client import connect
    from pretrade.models.labels import read_marks

    base = {"sym": "NQZ6", "orderid": "o7", "clordid": "SH-1", "account": "a", "strategy": "algo", "side": "sell",
            "qty": 200, "price": 100.0, "rule": "PASS", "limit": 0.0, "value": 200.0, "latencyNs": 9000, "text": ""}
    with connect(f"localhost:{stack.ports['tp']}") as tp:
        tp.publish("decision", [full_decision({**base, "outcome": "pass/static"}),
                                full_decision({**base, "rule": "MAX_ORDER_QTY", "limit": 50.0, "text": "qty 200 > max 50",
                                               "outcome": "shadow-reject/dynamic"})])
    assert wait_for(lambda: client.get("/decisions/SH-1", headers=TRADER).status_code == 200)
    r = client.post("/marks", json={"target": "decision", "clordid": "SH-1", "verdict": "wrong",
                                    "note": "static let a 200-lot through"}, headers=OFFICER)
    assert r.status_code == 200, r.text
    assert "SH-1" in r.json()["detail"] and r.json()["who"] == "risk1"
    assert "without the model's inputs" in r.json()["detail"]  # this gateway stand-in keeps none
    assert client.post("/marks", json={"target": "decision", "clordid": "SH-1", "sym": "ESZ6", "verdict": "wrong"},
                       headers=OFFICER).status_code == 422                          # the order is in NQZ6
    assert client.post("/marks", json={"target": "decision", "clordid": "OLD-1", "verdict": "right"},
                       headers=OFFICER).status_code == 200                          # yesterday's, from the HDB
    dec = {m.ref: m for m in read_marks(marks_path) if m.target == "decision"}
    assert (dec["SH-1"].sym, dec["SH-1"].call, dec["SH-1"].model) == ("NQZ6", "accepted", "static limits")
    assert (dec["OLD-1"].sym, dec["OLD-1"].call, dec["OLD-1"].verdict) == ("ESZ6", "rejected:max_qty", "right")
    listed = client.get("/marks", params={"target": "decision", "ref": "SH-1"}, headers=TRADER).json()
    assert [m["verdict"] for m in listed] == ["wrong"]

    out = tmp_path / "shadow.csv"
    rep = start(["gateway-report", "shadow", "--rdb", f"localhost:{stack.ports['rdb']}", "--labels", str(marks_path),
                 "--csv", str(out)], tmp_path / "report.log")
    assert rep.wait(60) == 0, (tmp_path / "report.log").read_text()[-2000:]
    row = pd.read_csv(out, keep_default_na=False).set_index("clordid").loc["SH-1"]
    assert (row["verdict_static"], row["verdict_dynamic"]) == ("pass", "reject")
    assert (row["mark"], row["mark_by"], row["mark_note"]) == ("wrong", "risk1", "static let a 200-lot through")


def test_openapi_describes_marks(client):
    spec = client.get("/openapi.json").json()
    ops = spec["paths"]["/marks"]
    assert set(ops) == {"get", "post"}
    body = spec["components"]["schemas"]["MarkIn"]
    assert set(body["required"]) == {"target", "verdict"}
    assert set(body["properties"]) == {"target", "verdict", "sym", "time", "clordid", "note"}
    ok = ops["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/AuditEntry")
    listed = ops["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["type"] == "array" and listed["items"]["$ref"].endswith("/MarkOut")
    assert {p["name"] for p in ops["get"]["parameters"]} == {"target", "sym", "ref", "limit"}


def test_a_decision_marked_through_the_api_carries_the_gateways_model_inputs(stack, marks_path, tmp_path,
                                                                            monkeypatch):
    """A real gateway (fat-finger model, control port) on the stack's tickerplant decides real
    orders over FIX; a risk officer marks two of its decisions through the API, which stores each
    mark with the model's inputs the gateway kept, so `fatfinger_rows` makes training rows of them."""
    pytest.importorskip("quickfix", reason="QuickFIX is not installed: pip install -e '.[fix]'")
    from fastapi.testclient import TestClient

    from conftest import free_port
    from pretrade.client import connect
    from pretrade.gateway import messages as m
    from pretrade.gateway.exchange import Venue, start_exchange
    from pretrade.gateway.fixclient import FixInitiator
    from pretrade.gateway.service import GatewayService
    from pretrade.models.labels import fatfinger_rows, read_marks
    from pretrade.models.order_features import FEATURES
    from pretrade.ops.api import create_app
    from pretrade.risk.limits import Limit
    from pretrade.schema import TABLES

    monkeypatch.setenv("PRETRADE_FIX_PASSWORD", "marks-secret")
    ex_port, gw_port, ctl_port = free_port(), free_port(), free_port()
    venue = Venue.primed(seed=1, syms=["ACME"])
    book, tick = next(s.book for s in venue.sim.sims if s.ins.sym == "ACME"), venue.insts["ACME"].tick
    stops = []
    try:
        exchange = start_exchange(tmp_path / "ex", ex_port, venue=venue)
        stops.append(exchange.stop)
        svc = GatewayService(tmp_path / "gw", gw_port, f"localhost:{stack.ports['tp']}", ("127.0.0.1", ex_port),
                             ttl_s=1e9, control_port=ctl_port).start()
        stops.insert(0, svc.stop)  # the acceptor stops before its client
        client = FixInitiator(tmp_path / "c", gw_port, "CLIENT1", "PRETRADE", password="marks-secret")
        stops.append(client.stop)
        assert client.wait_logon(15) and svc.gateway.exchange_up.wait(15) and svc.subscribed.wait(15)
        assert svc.gate.model is not None, "the fat-finger model in models/ is refused: see the log"
        # the test plays the risk engine for ACME, an instrument the stack's engine does not know
        lim = Limit(time.time_ns(), "ACME", "", 10**12, "NORMAL", "ACTIVE", "", 100_000, 1e9, 500.0, 1500.0,
                    10**6, 1000, 0.0, "", "vae-3")
        with connect(f"localhost:{stack.ports['tp']}") as tp:
            tp.publish("quote", [{"sym": "ACME", "bid": book.best_bid() * tick, "ask": book.best_ask() * tick,
                                  "bsize": 10, "asize": 10}])
            tp.publish("limits", [dict(zip(TABLES["limits"].names, lim.row(), strict=True))])
        wait_for(lambda: svc.table.book.get("ACME") is not None and svc.table.ref_price("ACME") > 0)

        def order(cl: str, qty: int, ticks: int) -> dict:
            client.send(m.NEW_ORDER, {m.CL_ORD_ID: cl, m.SYMBOL: "ACME", m.SIDE: "2", m.ORDER_QTY: qty,
                                      m.ORD_TYPE: "2", m.PRICE: round((book.best_ask() + ticks) * tick, 6),
                                      m.ACCOUNT: "MK1", m.TRANSACT_TIME: m.utc_now()})
            return client.until(lambda r: r.get(m.CL_ORD_ID) == cl, timeout=10)

        for i in range(12):  # a trader's habit ...
            assert order(f"mk-{i}", 100, 3 + i)[m.ORD_STATUS] == "0"
        r = order("mk-ff", 10000, 2)  # ... and an extra zero
        assert r[m.ORD_STATUS] == "8" and r[m.TEXT].startswith("FAT_FINGER"), r.get(m.TEXT)

        app = create_app(stack.settings(gw=f"127.0.0.1:{ctl_port}", labels=marks_path))
        with TestClient(app) as api:
            for cl in ("mk-11", "mk-ff"):
                assert wait_for(lambda cl=cl: api.get(f"/decisions/{cl}", headers=TRADER).status_code == 200)
            for cl in ("mk-11", "mk-ff"):
                got = api.post("/marks", json={"target": "decision", "clordid": cl, "verdict": "right"},
                               headers=OFFICER)
                assert got.status_code == 200, got.text
                assert "with the fat-finger model's inputs" in got.json()["detail"]
    finally:
        for stop in stops:
            stop()
    marks = {mk.ref: mk for mk in read_marks(marks_path) if mk.ref in ("mk-11", "mk-ff")}
    assert marks["mk-ff"].call == "rejected:FAT_FINGER" and marks["mk-11"].call == "accepted"
    assert set(marks["mk-ff"].features) == set(FEATURES) == set(marks["mk-11"].features)
    assert marks["mk-ff"].features["qty_vs_trader"] > marks["mk-11"].features["qty_vs_trader"] + 3  # 100x habit
    X, y = fatfinger_rows([marks["mk-11"], marks["mk-ff"]], list(FEATURES))
    assert X.shape == (2, len(FEATURES)) and y.tolist() == [0, 1]  # a valid order, and an error caught
