"""Model lifecycle through the API (POST /models/{name}/status, GET /models): risk officers only,
a reason required, refused transitions answered 409, every attempt audited, the change recorded
once in the models folder's status log and applied where the model is served: the anomaly model
at a real risk engine (its governance calls over IPC, in this process), the fat-finger model at a
real `pretrade gateway` process, which starts binding it. Every models folder is a temporary
copy of the shipped models; the repository's models/ is never written."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port
from conftest import start_pretrade as start
from conftest import stop_process as stop

TRADER = {"Authorization": "Bearer demo-trader-token"}
OFFICER = {"Authorization": "Bearer demo-risk-token"}


def wait_for(cond, timeout: float = 20.0, every: float = 0.05):
    """Poll `cond` until it is truthy (returned) or the deadline passes (its last value)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(every)


@pytest.fixture
def models(tmp_path) -> Path:
    """A copy of the shipped anomaly and fat-finger models; the fat-finger one freshly a candidate."""
    from pretrade.models.status import StatusBook

    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("fatfinger.onnx", "fatfinger.json", "vae.onnx", "vae.json"):
        shutil.copy(ROOT / "models" / name, folder / name)
    StatusBook(folder).register("fatfinger", "trainer", "trained for the test")
    return folder


def settings(tmp_path: Path, models: Path, rte: str = "", gw: str = ""):
    """API settings: nothing listens at an address not given (the backend is down)."""
    from pretrade.ops.api import Settings

    return Settings(tp=f"localhost:{free_port()}", rte=rte or f"localhost:{free_port()}",
                    gw=gw or f"localhost:{free_port()}", audit=tmp_path / "audit.jsonl", models=models,
                    subscribe=False, timeout=10.0)


@pytest.fixture
def client(tmp_path, models):
    """The API with every backend down."""
    from fastapi.testclient import TestClient

    from pretrade.ops.api import create_app

    with TestClient(create_app(settings(tmp_path, models))) as c:
        yield c


def log_lines(models: Path, model: str) -> list[dict]:
    return [d for d in map(json.loads, (models / "status.jsonl").read_text().splitlines()) if d["model"] == model]


# ---- roles, validation, audit, refusals (backends down) ---------------------------------------------

def test_only_a_risk_officer_changes_a_status_and_a_refusal_is_audited(client, models):
    body = {"status": "approved", "why": "reviewed"}
    assert client.post("/models/fatfinger/status", json=body).status_code == 401
    r = client.post("/models/fatfinger/status", json=body, headers=TRADER)
    assert r.status_code == 403 and "risk_officer" in r.json()["detail"]
    denied = client.get("/audit", params={"outcome": "denied"}, headers=TRADER).json()
    assert denied[0]["who"] == "trader1" and denied[0]["action"] == "/models/fatfinger/status"
    assert len(log_lines(models, "fatfinger")) == 1                     # still only its registration


@pytest.mark.parametrize("body, words", [
    ({"status": "approved"}, "why"),
    ({"status": "approved", "why": "   "}, "needs a reason"),
    ({"status": "candidate", "why": "x"}, "approved"),                  # a person never makes a candidate
    ({"status": "approved", "why": "x", "who": "someone-else"}, "who"),  # who is the token's user
])
def test_bad_requests_get_a_clear_422(client, models, body, words):
    r = client.post("/models/fatfinger/status", json=body, headers=OFFICER)
    assert r.status_code == 422 and words in json.dumps(r.json()["detail"]), r.text
    assert len(log_lines(models, "fatfinger")) == 1


def test_an_unknown_model_is_404(client):
    r = client.post("/models/nope/status", json={"status": "approved", "why": "x"}, headers=OFFICER)
    assert r.status_code == 404 and "fatfinger" in r.json()["detail"] and "vae" in r.json()["detail"]


def test_approved_with_the_gateway_down_is_recorded_and_applies_at_its_next_start(client, models):
    r = client.post("/models/fatfinger/status", json={"status": "approved", "why": "shadow report reviewed"},
                    headers=OFFICER)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["who"], out["action"], out["outcome"]) == ("risk1", "model_status", "ok")
    assert (out["old"], out["new"], out["recorded_by"], out["applied"]) == ("candidate", "approved", "api", False)
    assert out["binds"] is None and "gateway" in out["detail"] and "next start" in out["detail"]
    last = log_lines(models, "fatfinger")[-1]
    assert (last["from"], last["to"], last["who"], last["why"]) == ("candidate", "approved", "risk1",
                                                                     "shadow report reviewed")
    assert len(log_lines(models, "fatfinger")) == 2
    card = json.loads((models / "fatfinger.json").read_text())
    assert card["status"] == "approved" and card["status_changed"]["who"] == "risk1"  # mirrored in the card
    audit = client.get("/audit", params={"action": "model_status"}, headers=TRADER).json()
    assert audit[0]["target"] == {"model": "fatfinger", "status": "approved", "why": "shadow report reviewed"}
    listed = {m["name"]: m for m in client.get("/models", headers=TRADER).json()}
    ff = listed["fatfinger"]
    assert ff["status"] == "approved" and ff["changed"]["who"] == "risk1" and ff["served_by"] == "gw"
    assert ff["binds"] is None and "unavailable" in ff["serving"]


def test_a_transition_the_lifecycle_forbids_is_409_and_not_recorded(client, models):
    assert client.post("/models/fatfinger/status", json={"status": "retired", "why": "replaced"},
                       headers=OFFICER).status_code == 200
    r = client.post("/models/fatfinger/status", json={"status": "approved", "why": "changed my mind"},
                    headers=OFFICER)
    assert r.status_code == 409 and "retired model cannot become approved" in r.json()["detail"]
    assert [d["to"] for d in log_lines(models, "fatfinger")] == ["candidate", "retired"]
    err = client.get("/audit", params={"action": "model_status", "outcome": "error"}, headers=TRADER).json()
    assert err[0]["who"] == "risk1" and "cannot become approved" in err[0]["detail"]


def test_a_status_log_that_cannot_be_read_is_503_and_audited(client, models):
    (models / "status.jsonl").unlink()
    (models / "status.jsonl").mkdir()                                   # unreadable as a file, even for root
    r = client.post("/models/fatfinger/status", json={"status": "approved", "why": "x"}, headers=OFFICER)
    assert r.status_code == 503 and "status log" in r.json()["detail"], r.text
    err = client.get("/audit", params={"action": "model_status", "outcome": "error"}, headers=TRADER).json()
    assert err and "status log" in err[0]["detail"]
    assert client.get("/models", headers=TRADER).status_code == 503


def test_models_lists_status_from_the_log_not_the_card(client, models):
    from pretrade.models.status import StatusBook

    StatusBook(models).change("vae", "shadow", "carol", "second opinion")
    card = json.loads((models / "vae.json").read_text())
    (models / "vae.json").write_text(json.dumps({**card, "status": "approved"}))  # a stale card
    listed = {m["name"]: m for m in client.get("/models", headers=TRADER).json()}
    assert listed["vae"]["status"] == "shadow" and listed["vae"]["changed"]["who"] == "carol"
    assert listed["vae"]["served_by"] == "rte" and listed["fatfinger"]["status"] == "candidate"


# ---- the anomaly model at a real risk engine (its IPC governance calls) -----------------------------

@pytest.fixture
def engine(models):
    """A risk engine on the copied models, its IPC functions served on a free port; started with
    --write-status or not (param)."""
    from pretrade.ipc.dispatch import Dispatcher
    from pretrade.ipc.server import BackgroundServer
    from pretrade.risk.engine import RiskEngine, Service, load_governance, load_scorer
    from pretrade.risk.limits import load_config

    def make(write_status: bool):
        scorer, err = load_scorer(models)
        assert scorer is not None, err
        status, book, _ = load_governance(models, scorer, drift_config=False)
        eng = RiskEngine(load_config(None), scorer, err, model_status=status,
                         status_book=book if write_status else None)
        svc = Service(eng, f"localhost:{free_port()}")   # no tickerplant: publishing fails, logged
        srv = BackgroundServer(Dispatcher(svc.functions())).start()        # as `pretrade rte` serves them
        servers.append(srv)
        return eng, f"localhost:{srv.port}"

    servers: list = []
    yield make
    for s in servers:
        s.stop()


@pytest.mark.parametrize("write_status", [False, True], ids=["engine-reads-the-log", "engine-writes-the-log"])
def test_the_anomaly_model_approved_and_shadowed_at_the_engine_is_logged_once(tmp_path, models, engine,
                                                                              write_status):
    from fastapi.testclient import TestClient

    from pretrade.models.status import StatusBook
    from pretrade.ops.api import create_app

    StatusBook(models).register("vae", "trainer", "retrained")            # a candidate: not binding
    eng, addr = engine(write_status)
    assert eng.model_status == "candidate" and not eng.policy.controls.model_active
    with TestClient(create_app(settings(tmp_path, models, rte=addr))) as c:
        before = {m["name"]: m for m in c.get("/models", headers=TRADER).json()}["vae"]
        assert before["status"] == "candidate" and before["binds"] is False
        r = c.post("/models/vae/status", json={"status": "approved", "why": "replay validated"}, headers=OFFICER)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["applied"] and out["binds"] is True
        assert out["recorded_by"] == ("risk engine" if write_status else "api")
        assert eng.model_status == "approved" and eng.policy.controls.model_active
        changes = [(d["from"], d["to"], d["who"]) for d in log_lines(models, "vae")]
        assert changes == [("", "candidate", "trainer"), ("candidate", "approved", "risk1")]   # once

        r = c.post("/models/vae/status", json={"status": "shadow", "why": "watch it a week"}, headers=OFFICER)
        assert r.status_code == 200 and r.json()["binds"] is False, r.text
        assert eng.model_status == "shadow" and not eng.policy.controls.model_active
        assert [d["to"] for d in log_lines(models, "vae")][-2:] == ["approved", "shadow"]
        assert len(log_lines(models, "vae")) == 3
        listed = {m["name"]: m for m in c.get("/models", headers=TRADER).json()}["vae"]
        assert listed["status"] == "shadow" and listed["binds"] is False and "deactivated" in listed["serving"]


def test_retiring_the_served_anomaly_model_takes_it_off_at_the_engine(tmp_path, models, engine):
    from fastapi.testclient import TestClient

    from pretrade.ops.api import create_app

    eng, addr = engine(False)
    assert eng.model_status == "approved" and eng.policy.controls.model_active   # the shipped card: approved
    with TestClient(create_app(settings(tmp_path, models, rte=addr))) as c:
        r = c.post("/models/vae/status", json={"status": "retired", "why": "replaced by vae-2"}, headers=OFFICER)
        assert r.status_code == 200, r.text
        out = r.json()
        assert (out["old"], out["applied"], out["binds"], out["recorded_by"]) == ("approved", True, False, "api")
        assert "not loaded at its next start" in out["detail"]
        assert not eng.policy.controls.model_active                                 # static limits now
        assert [d["to"] for d in log_lines(models, "vae")] == ["retired"]
        r = c.post("/models/vae/status", json={"status": "approved", "why": "undo"}, headers=OFFICER)
        assert r.status_code == 409 and not eng.policy.controls.model_active       # final: nothing applied


# ---- the fat-finger model at a real gateway process ------------------------------------------------

@pytest.mark.fix
def test_approving_a_candidate_through_the_api_makes_the_gateway_bind_it(tmp_path, models, monkeypatch):
    pytest.importorskip("quickfix", reason="QuickFIX is not installed: pip install -e '.[fix]'")
    from fastapi.testclient import TestClient

    from pretrade.ipc.client import QClient
    from pretrade.ops.api import create_app

    monkeypatch.setenv("PRETRADE_FIX_PASSWORD", "x")
    ctl = free_port()
    gw = start(["gateway", "--fix-port", str(free_port()), "--port", str(ctl), "--tp", "", "--rte", "",
                "--rdb", "", "--hdb", "", "--exchange", f"127.0.0.1:{free_port()}", "--no-impact",
                "--model", str(models / "fatfinger.onnx"), "--workdir", str(tmp_path / "gw")],
               tmp_path / "gw.log", ctl)
    try:
        with QClient("127.0.0.1", ctl, timeout=10.0) as q:
            before = q.query(".gw.status")
            assert (before["model_status"], before["model_binds"]) == ("candidate", False)
            with TestClient(create_app(settings(tmp_path, models, gw=f"localhost:{ctl}"))) as c:
                ff = {m["name"]: m for m in c.get("/models", headers=TRADER).json()}["fatfinger"]
                assert (ff["status"], ff["binds"]) == ("candidate", False) and "not binding" in ff["serving"]
                r = c.post("/models/fatfinger/status", json={"status": "approved", "why": "shadow report reviewed"},
                           headers=OFFICER)
                assert r.status_code == 200, r.text
                out = r.json()
                assert (out["applied"], out["binds"], out["recorded_by"]) == (True, True, "api")
                assert "applied at the gateway: candidate -> approved" in out["detail"]
                after = q.query(".gw.status")                     # the gateway's own word
                assert (after["model_status"], after["model_binds"]) == ("approved", True)
                ff = {m["name"]: m for m in c.get("/models", headers=TRADER).json()}["fatfinger"]
                assert (ff["status"], ff["binds"]) == ("approved", True)
                assert [d["to"] for d in log_lines(models, "fatfinger")] == ["candidate", "approved"]
    finally:
        stop(gw)
    log = (tmp_path / "gw.log").read_text()
    assert "candidate -> approved" in log and "risk1" in log             # the gateway logged who set it


# ---- the dashboard's models panel in headless Chromium ---------------------------------------------

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.mark.slow
@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
                    reason="headless browser test needs Debian's chromium and chromium-driver: "
                           "apt-get update && apt-get install -y chromium chromium-driver")
def test_the_dashboard_models_panel_approves_with_a_reason(tmp_path, models):
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    down = [f"localhost:{free_port()}" for _ in range(5)]
    api = start(["api", "--port", str(port), "--tp", down[0], "--rdb", down[1], "--hdb", down[2], "--rte", down[3],
                 "--gw", down[4], "--models", str(models), "--audit", str(tmp_path / "audit.jsonl")],
                tmp_path / "api.log", port)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1600,1250", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(flag)
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "token").send_keys("demo-risk-token")
        driver.find_element(By.ID, "btn-login").click()
        wait = WebDriverWait(driver, 30)
        row = '#models tr[data-model="fatfinger"]'

        def status_of(d):
            return d.execute_script("const r = document.querySelector(arguments[0]); return r && r.dataset.status;", row)

        wait.until(lambda d: status_of(d) == "candidate")
        assert "vae" in driver.find_element(By.ID, "models").text
        assert driver.find_elements(By.CSS_SELECTOR, f"{row} button.model-shadow")     # candidate -> shadow too

        def click(d):
            d.find_element(By.CSS_SELECTOR, f"{row} button.model-approved").click()   # redrawn every 10 s: retry
            return True

        WebDriverWait(driver, 10, ignored_exceptions=(StaleElementReferenceException,)).until(click)
        prompt = WebDriverWait(driver, 5).until(ec.alert_is_present())   # the page asks why first
        prompt.send_keys("shadow report reviewed in the browser")
        prompt.accept()
        wait.until(ec.text_to_be_present_in_element((By.ID, "models-result"), "done: fatfinger"))
        wait.until(lambda d: status_of(d) == "approved")
        assert driver.find_elements(By.CSS_SELECTOR, f"{row} button.model-approved") == []   # nothing to approve
    finally:
        if driver is not None:
            driver.quit()
        stop(api)
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)
    last = log_lines(models, "fatfinger")[-1]
    assert (last["to"], last["who"], last["why"]) == ("approved", "risk1", "shadow report reviewed in the browser")
