"""The REST API against real processes (tickerplant, RDB, HDB, risk engine started as
`pretrade ...` subprocesses, a short simulated feed), with an in-process gateway control port
answering `.gw.mode` through the gateway's own Modes: roles, audit, errors, OpenAPI, SSE, metrics."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port
from conftest import start_pretrade as start
from conftest import stop_process as stop

ROOT = Path(__file__).resolve().parents[1]
TRADER = {"Authorization": "Bearer demo-trader-token"}
OFFICER = {"Authorization": "Bearer demo-risk-token"}
SYMS = ["ESZ6", "NQZ6"]






def old_decision_partition(hdb: Path) -> None:
    """Yesterday's HDB partition with one decision row (clordid OLD-1)."""
    import pandas as pd
    import pyarrow as pa

    from pretrade.tick.hdb import write_partition

    day = dt.date.today() - dt.timedelta(days=1)
    df = pd.DataFrame({"time": [pd.Timestamp(day) + pd.Timedelta(hours=14)], "sym": ["ESZ6"], "orderid": ["o1"],
                       "clordid": ["OLD-1"], "account": ["acct"], "strategy": ["algo"], "side": ["sell"],
                       "qty": [200], "price": [4500.0], "rule": ["max_qty"], "limit": [50.0], "value": [200.0],
                       "outcome": ["reject/dynamic"], "latencyNs": [12000], "text": ["qty 200 > max 50"]})
    df["time"] = df["time"].astype("datetime64[ns]")
    write_partition(hdb, day, {"decision": pa.Table.from_pandas(df, preserve_index=False)})


class Stack:
    """tp + rdb + hdb + rte in a temporary folder, fed a short simulated market."""

    def __init__(self, tmp: Path, feed_args: list[str], rte_args: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.ports = {k: free_port() for k in ("tp", "rdb", "hdb", "rte")}
        self.procs: list[subprocess.Popen] = []
        old_decision_partition(tmp / "hdb")
        tp = f"localhost:{self.ports['tp']}"
        try:
            self.procs.append(start(["tp", "--port", str(self.ports["tp"]), "--journal", str(tmp / "journal")],
                                    tmp / "tp.log", self.ports["tp"]))
            self.procs.append(start(["hdb", "--port", str(self.ports["hdb"]), "--dir", str(tmp / "hdb")],
                                    tmp / "hdb.log", self.ports["hdb"]))
            self.procs.append(start(["rdb", "--port", str(self.ports["rdb"]), "--tp", tp, "--hdb", str(tmp / "hdb"),
                                     "--hdb-addr", f"localhost:{self.ports['hdb']}"], tmp / "rdb.log", self.ports["rdb"]))
            self.procs.append(start(["rte", "--port", str(self.ports["rte"]), "--tp", tp, "--models",
                                     str(ROOT / "models"), *rte_args], tmp / "rte.log", self.ports["rte"]))
            self.feed_args = feed_args
        except Exception:
            self.close()
            raise

    def feed(self, wait: bool = True) -> subprocess.Popen:
        p = start(["feed", "sim", *self.feed_args, "--speed", "max", "--tp", f"localhost:{self.ports['tp']}"],
                  self.tmp / "feed.log")
        if wait:
            assert p.wait(180) == 0, (self.tmp / "feed.log").read_text()[-3000:]
        return p

    def settings(self, **kw):
        from pretrade.ops.api import Settings

        p = self.ports
        return Settings(tp=f"localhost:{p['tp']}", rdb=f"localhost:{p['rdb']}", hdb=f"localhost:{p['hdb']}",
                        rte=f"localhost:{p['rte']}", gw=kw.pop("gw", f"localhost:{free_port()}"),
                        audit=self.tmp / "audit.jsonl", **kw)

    def close(self) -> None:
        for p in reversed(self.procs):
            stop(p)


class FakeGatewayControl:
    """The gateway's control port functions (.gw.mode, .gw.status) over the gateway's own Modes."""

    def __init__(self) -> None:
        from pretrade.gateway.shadow import Modes
        from pretrade.ipc.codec import QError
        from pretrade.ipc.dispatch import Dispatcher
        from pretrade.ipc.server import BackgroundServer

        self.modes = Modes()

        def s(v):
            return v.decode() if isinstance(v, bytes) else str(v)

        def mode(conn, kind, key, value, who, reason=b"", share=None):
            try:
                c = self.modes.set(s(kind), s(key), s(value), s(who), s(reason), None if share is None else float(share))
            except ValueError as e:
                raise QError(str(e)) from None
            return f"{c.kind} {c.key} -> {c.mode}"

        def status(conn):
            return {"modes": str(self.modes.by_sym)}

        self.server = BackgroundServer(Dispatcher({".gw.mode": mode, ".gw.status": status},
                                                  expressions={".gw.status": status})).start()
        self.addr = f"localhost:{self.server.port}"

    def close(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("api"), ["--scenario", "normal", "--seed", "2", "--syms", *SYMS,
                                               "--duration", "60"])
    yield s
    s.close()


@pytest.fixture(scope="module")
def gw():
    g = FakeGatewayControl()
    yield g
    g.close()


@pytest.fixture(scope="module")
def client(stack, gw):
    from fastapi.testclient import TestClient

    from pretrade.ops.api import create_app

    app = create_app(stack.settings(gw=gw.addr))
    with TestClient(app) as c:
        deadline = time.time() + 20
        while not app.state.live.connected and time.time() < deadline:
            time.sleep(0.1)
        stack.feed()
        deadline = time.time() + 60
        while time.time() < deadline and len(c.get("/limits", headers=TRADER).json()) < len(SYMS):
            time.sleep(0.3)
        yield c


def wait_for(fn, timeout: float = 15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    return fn()


# ---- reads ----------------------------------------------------------------------------------------

def test_reads_need_a_token_and_traders_read(client):
    assert client.get("/limits").status_code == 401
    assert client.get("/limits", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = client.get("/limits", headers=TRADER)
    assert r.status_code == 200
    rows = r.json()
    assert {x["sym"] for x in rows} == set(SYMS)
    assert all(x["maxQty"] <= 20000 and x["state"] in ("ACTIVE", "REDUCING", "HALTED") for x in rows)
    esz6 = client.get("/limits", params={"sym": "ESZ6", "strategy": ""}, headers=TRADER).json()
    assert len(esz6) == 1 and esz6[0]["strategy"] == "" and esz6[0]["reason"]
    assert client.get("/whoami", headers=TRADER).json() == {"name": "trader1", "role": "trader", "can_act": False}


def test_status_scores_series_and_snapshot(client):
    st = client.get("/status", headers=TRADER).json()
    assert st["rte"]["instruments"] == len(SYMS) and st["rte"]["modelActive"] is True
    assert st["feed"]["connected"] is True and st["gateway"]["modes"] is not None
    snap = client.get("/snapshot", headers=TRADER).json()
    assert {r["sym"] for r in snap["limits"]} == set(SYMS)
    assert client.get("/series/ESZ6", headers=TRADER).json()  # maxQty points from the limits rows
    feats = client.get("/scores/ESZ6", headers=TRADER).json()["features"]
    assert feats["sym"] == "ESZ6" and "spread_bps" in feats       # the RDB's latest feature row
    assert client.get("/scores/NOPE", headers=TRADER).status_code == 404
    assert client.get("/scores/bad'sym", headers=TRADER).status_code == 422


def test_models_and_cards(client):
    models = {m["name"]: m for m in client.get("/models", headers=TRADER).json()}
    assert {"vae", "fatfinger"} <= set(models)
    assert models["vae"]["binds"] is True and "active at the risk engine" in models["vae"]["serving"]
    card = client.get("/models/vae", headers=TRADER).json()
    assert card["version"] == models["vae"]["version"] and card["features"]
    assert client.get("/models/nope", headers=TRADER).status_code == 404


def test_decisions_from_rdb_then_hdb_and_history(client, stack):
    from pretrade.client import connect

    with connect(f"localhost:{stack.ports['tp']}") as tp:
        tp.publish("decision", [{"sym": "NQZ6", "orderid": "o9", "clordid": "NEW-1", "account": "a", "strategy": "algo",
                                 "side": "buy", "qty": 10, "price": 100.0, "rule": "max_qty", "limit": 50.0,
                                 "value": 10.0, "outcome": "pass/dynamic", "latencyNs": 9000, "text": "",
                                 "slippageBps": 3.5, "algo": "VWAP"}])
    today = wait_for(lambda: (r := client.get("/decisions/NEW-1", headers=TRADER)).status_code == 200 and r.json())
    assert isinstance(today, list) and today[0]["clordid"] == "NEW-1" and today[0]["outcome"] == "pass/dynamic"
    assert today[0]["slippageBps"] == 3.5 and today[0]["algo"] == "VWAP"  # the impact model's advice
    old = client.get("/decisions/OLD-1", headers=TRADER).json()
    assert old[0]["rule"] == "max_qty" and old[0]["outcome"] == "reject/dynamic"
    assert client.get("/decisions/NONE-1", headers=TRADER).status_code == 404
    hist = client.get("/history/decision", params={"sym": "ESZ6"}, headers=TRADER).json()
    assert [h["clordid"] for h in hist] == ["OLD-1"] and hist[0]["time"].endswith("14:00:00.000000000")
    assert client.get("/history/nope", headers=TRADER).status_code == 404
    assert client.get("/history/decision", params={"date_from": "yesterday"}, headers=TRADER).status_code == 422
    reg = client.app.state.metrics.registry
    assert wait_for(lambda: reg.get_sample_value("pretrade_decisions_total",
                                                 {"rule": "max_qty", "outcome": "pass/dynamic"})) == 1.0
    assert 'pretrade_decisions_total{outcome="pass/dynamic",rule="max_qty"} 1.0' in client.get("/metrics").text


# ---- actions, roles, audit --------------------------------------------------------------------------

def test_trader_may_not_act_and_the_denial_is_audited(client):
    r = client.post("/actions/kill", json={"sym": "ESZ6"}, headers=TRADER)
    assert r.status_code == 403 and "risk_officer" in r.json()["detail"]
    assert client.post("/actions/kill", json={"sym": "ESZ6"}).status_code == 401
    denied = client.get("/audit", params={"who": "trader1", "outcome": "denied"}, headers=TRADER).json()
    assert denied and denied[0]["action"] == "/actions/kill"


def test_kill_and_reset_reach_the_engine_and_are_audited(client):
    r = client.post("/actions/kill", json={"sym": "NQZ6", "note": "api test"}, headers=OFFICER)
    assert r.status_code == 200, r.text
    entry = r.json()
    assert entry["who"] == "risk1" and entry["outcome"] == "ok" and entry["action"] == "kill"
    assert "NQZ6/*" in client.get("/status", headers=TRADER).json()["rte"]["kills"]
    halted = wait_for(lambda: [x for x in client.get("/limits", params={"sym": "NQZ6"}, headers=TRADER).json()
                               if x["state"] == "HALTED"])
    assert halted and halted[0]["halt"] == "kill"
    alert = wait_for(lambda: client.get("/alerts", params={"sym": "NQZ6"}, headers=TRADER).json())
    assert alert[0]["kind"] == "kill" and alert[0]["who"] == "risk1"      # via the tickerplant, live
    assert client.post("/actions/reset", json={"sym": "NQZ6"}, headers=OFFICER).status_code == 200
    assert client.get("/status", headers=TRADER).json()["rte"]["kills"] == []
    log = client.get("/audit", params={"who": "risk1"}, headers=TRADER).json()
    assert [e["action"] for e in log[:2]] == ["reset", "kill"]
    assert log[1]["target"] == {"sym": "NQZ6", "strategy": "", "note": "api test"}
    assert 'pretrade_api_actions_total{action="kill",outcome="ok"}' in client.get("/metrics").text


def test_override_within_static_bounds(client):
    ok = client.post("/limits/override", json={"sym": "ESZ6", "field": "maxQty", "value": 77, "seconds": 600},
                     headers=OFFICER)
    assert ok.status_code == 200, ok.text
    row = client.get("/limits", params={"sym": "ESZ6", "strategy": ""}, headers=TRADER).json()[0]
    assert row["maxQty"] == 77 and "override max_qty=77" in row["reason"]
    over = client.post("/limits/override", json={"sym": "ESZ6", "field": "maxQty", "value": 10**9, "seconds": 60},
                       headers=OFFICER)
    assert over.status_code == 409 and "static bounds" in over.json()["detail"]
    bad = client.post("/limits/override", json={"sym": "ESZ6", "field": "nope", "value": 1, "seconds": 60},
                      headers=OFFICER)
    assert bad.status_code == 422
    errors = client.get("/audit", params={"action": "override", "outcome": "error"}, headers=TRADER).json()
    assert errors and "static bounds" in errors[0]["detail"]


def test_model_off_and_on(client):
    assert client.post("/model/deactivate", json={"note": "drill"}, headers=OFFICER).status_code == 200
    st = client.get("/status", headers=TRADER).json()["rte"]
    assert st["modelActive"] is False and "drill" in st["modelFault"]
    assert client.post("/model/activate", json={}, headers=OFFICER).status_code == 200
    assert client.get("/status", headers=TRADER).json()["rte"]["modelActive"] is True


def test_gateway_mode(client, gw):
    r = client.post("/gateway/mode", json={"kind": "sym", "key": "ESZ6", "mode": "shadow", "reason": "trial"},
                    headers=OFFICER)
    assert r.status_code == 200, r.text
    assert gw.modes.by_sym == {"ESZ6": "shadow"} and gw.modes.audit[-1].who == "risk1"
    bad = client.post("/gateway/mode", json={"kind": "sym", "key": "ESZ6", "mode": "yolo"}, headers=OFFICER)
    assert bad.status_code == 422


def test_a_backend_that_is_down_gives_503_naming_it(stack, tmp_path):
    from fastapi.testclient import TestClient

    from pretrade.ops.api import create_app

    dead = f"localhost:{free_port()}"
    app = create_app(stack.settings(subscribe=False))
    app.state.settings.rte = dead
    with TestClient(app) as c:
        r = c.get("/limits", headers=TRADER)
        assert r.status_code == 503 and "risk engine" in r.json()["detail"] and dead in r.json()["detail"]
        k = c.post("/actions/kill", json={"sym": "ESZ6"}, headers=OFFICER)
        assert k.status_code == 503
        assert c.get("/audit", params={"outcome": "error"}, headers=TRADER).json()[0]["action"] == "kill"
        assert c.get("/health").json()["ok"] is True                     # the API itself keeps running


# ---- OpenAPI, stream, metrics -------------------------------------------------------------------------

def test_openapi_is_accurate(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in ("/limits", "/status", "/scores", "/alerts", "/alerts/stream", "/models", "/models/{name}",
              "/decisions/{clordid}", "/history/{table}", "/audit", "/actions/kill", "/actions/reset",
              "/limits/override", "/model/activate", "/model/deactivate", "/gateway/mode", "/metrics"):
        assert p in paths, p
    samples = {"{name}": "vae", "{clordid}": "OLD-1", "{table}": "decision", "{sym}": "ESZ6"}
    for path, ops in paths.items():
        url = path
        for k, v in samples.items():
            url = url.replace(k, v)
        for method, op in ops.items():
            public = path in ("/health", "/metrics")
            if not public:                       # every documented non-public operation wants a token
                assert getattr(client, method)(url, **({"json": {}} if method == "post" else {})).status_code == 401, url
            if method == "get" and path != "/alerts/stream":
                r = client.get(url, headers=TRADER)
                assert str(r.status_code) in op["responses"], (url, r.status_code)
    kill_body = spec["components"]["schemas"]["Scope"]["properties"]
    assert set(kill_body) == {"sym", "strategy", "note"}
    over = spec["components"]["schemas"]["Override"]
    assert set(over["required"]) == {"sym", "field", "value", "seconds"}
    assert client.post("/actions/kill", json={"sym": 5}, headers=OFFICER).status_code == 422


def test_event_stream_delivers_alerts_live(stack, gw):
    import httpx
    import uvicorn

    from pretrade.ops.api import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(stack.settings(gw=gw.addr)), port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 15
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        got: list[str] = []
        with httpx.stream("GET", f"{base}/alerts/stream", params={"token": "demo-trader-token"}, timeout=20) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            time.sleep(0.5)
            httpx.post(f"{base}/actions/reduce", json={"sym": "ESZ6", "note": "stream"}, headers=OFFICER)
            event = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "riskAlert":
                    rows = json.loads(line[6:])
                    got += [a["kind"] for a in rows]
                    if "reduce" in got:
                        break
        assert "reduce" in got
        httpx.post(f"{base}/actions/reset", json={"sym": "ESZ6"}, headers=OFFICER)
        assert httpx.get(f"{base}/alerts/stream").status_code == 401
    finally:
        server.should_exit = True
        t.join(10)


def test_new_token_cli(tmp_path):
    from pretrade.ops.auth import Tokens

    users = tmp_path / "users.toml"
    out = subprocess.run([sys.executable, "-m", "pretrade.cli", "api", "--new-token", "carol", "--role", "risk_officer",
                          "--users", str(users)], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT / "py")))
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    assert token not in users.read_text()                               # only the hash is stored
    assert Tokens.load(users).user_for(token).role == "risk_officer"
    again = subprocess.run([sys.executable, "-m", "pretrade.cli", "api", "--new-token", "carol", "--users", str(users)],
                           capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT / "py")))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_a_late_api_reads_back_the_current_state(stack, client):
    from fastapi.testclient import TestClient

    from pretrade.ops.api import create_app

    app = create_app(stack.settings())
    with TestClient(app) as late:
        snap = wait_for(lambda: (s := late.get("/snapshot", headers=TRADER).json())["feed"]["seeded"] and s)
        assert {r["sym"] for r in snap["limits"] if r["strategy"] == ""} == set(SYMS)   # from the engine
        assert any(a["kind"] == "kill" and a["who"] == "risk1" for a in snap["alerts"])  # from the RDB
        assert "limits" not in snap["feed"]["age_s"]          # read back, not a live update
