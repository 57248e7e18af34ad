"""The gateway honours the fat-finger model's lifecycle status (pretrade.models.status): a
candidate is scored and its call recorded but never rejects; approved (after a restart, or
re-read at run time with .gw.model_status[]) it binds; retired, it is not loaded. No FIX session:
the real model (a copy of the shipped one in a temporary models folder) behind the real Gate."""

from __future__ import annotations

import logging
import math
import shutil
import time

import pandas as pd
import pytest

from conftest import ROOT, free_port
from pretrade.gateway.service import GatewayService
from pretrade.gateway.shadow import shadow_report
from pretrade.models.status import StatusBook
from pretrade.risk.checks import Order
from pretrade.risk.limits import Limit

pytestmark = pytest.mark.fix


class Recorder:
    """Stands in for the publisher: keeps the rows the gateway would send to the tickerplant."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict]] = []
        self.published: dict[str, int] = {}

    def put(self, table: str, row: dict) -> None:
        self.rows.append((table, row))

    def close(self) -> None:
        pass

    def of(self, table: str) -> list[dict]:
        return [r for t, r in self.rows if t == table]


@pytest.fixture
def models(tmp_path, monkeypatch):
    """A models folder holding a copy of the shipped fat-finger model, freshly a candidate."""
    monkeypatch.setenv("PRETRADE_FIX_PASSWORD", "x")
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("fatfinger.onnx", "fatfinger.json"):
        shutil.copy(ROOT / "models" / name, folder / name)
    StatusBook(folder).register("fatfinger", "trainer", "trained for the test")
    return folder


def gateway(folder, control_port: int | None = None) -> GatewayService:
    """A gateway (no FIX sessions started) on the model in `folder`, its rows recorded."""
    svc = GatewayService(folder.parent / "gw", free_port(), tp=None, model_path=str(folder / "fatfinger.onnx"),
                         rte=None, impact=False, control_port=control_port)
    svc.publisher.close()
    svc.publisher = svc.gateway.publisher = Recorder()
    svc.table.bids["ACME"], svc.table.asks["ACME"] = 99.99, 100.01
    svc.table.apply_limits([Limit(time.time_ns(), "ACME", "", 1, "NORMAL", "ACTIVE", "", 100_000, 2e7, 500.0,
                                  1500.0, 500_000, 1000, 0.1, "", "vae-3")])
    return svc


def fat_finger(svc: GatewayService, account: str = "FF1"):
    """A trader's habitual 100-lots, then an extra-zero order inside every limit: the outlier's
    order and verdict; its decision rows are recorded as the gateway records them."""
    for i in range(12):
        v = svc.gate.check(Order("ACME", "sell", 100, round(100.05 + 0.01 * i, 2), "", account), "CLIENT1")
        assert v.decision.ok, v.decision.text
    o = Order("ACME", "sell", 10_000, 100.03, "", account)
    v = svc.gate.check(o, "CLIENT1")
    svc.gateway._decision(o, f"{account}-big", v.decision, v)
    return o, v


def test_a_candidate_is_scored_and_recorded_but_never_rejects(models, caplog):
    with caplog.at_level(logging.WARNING, logger="pretrade.gateway.service"):
        svc = gateway(models)
    assert any("is candidate" in r.message and "NOT BINDING" in r.message for r in caplog.records)
    status = svc.status()
    assert status["model_status"] == "candidate" and status["model_binds"] is False
    assert status["model"] == svc.gate.model.version

    _, v = fat_finger(svc)
    assert v.decision.ok, v.decision.text                      # accepted: the candidate does not bind
    call = v.model_call                                        # ... but its own call is kept
    assert call is not None and not call.ok and call.code == "FAT_FINGER"
    assert call.value > call.limit == svc.gate.cfg.fat_finger_threshold
    assert "candidate: not binding" in call.text
    assert v.inputs is not None and svc.decision_inputs("FF1-big")  # the model's inputs, for marks

    rows = svc.publisher.of("decision")
    assert [r["outcome"] for r in rows] == ["pass/dynamic", "shadow-reject/model"]
    assert rows[1]["rule"] == "FAT_FINGER" and rows[1]["value"] == pytest.approx(call.value)
    report = shadow_report(pd.DataFrame(rows))
    assert list(report["clordid"]) == ["FF1-big"] and list(report["shadow"]) == ["model"]
    assert (report["verdict_static"][0], report["verdict_dynamic"][0]) == ("pass", "reject")


def test_approved_and_restarted_it_binds(models):
    StatusBook(models).change("fatfinger", "approved", "bob", "shadow report reviewed")
    svc = gateway(models)
    assert svc.status()["model_status"] == "approved" and svc.gate.model_binds
    _, v = fat_finger(svc)
    assert not v.decision.ok and v.decision.code == "FAT_FINGER", v.decision.text
    assert "not binding" not in v.decision.text and v.model_call is None
    assert [r["outcome"] for r in svc.publisher.of("decision")] == ["reject/dynamic"]


def test_reread_at_run_time_over_the_control_port_is_audited(models):
    from pretrade.ipc.client import QClient

    svc = gateway(models, control_port=free_port())
    svc.control = svc._control_server().start()
    try:
        with QClient("127.0.0.1", svc.control_port, "alice", "", timeout=10.0) as q:
            assert q.query(b".gw.model_status[]").startswith("unchanged")
            assert fat_finger(svc, "FF1")[1].decision.ok
            StatusBook(models).change("fatfinger", "approved", "bob", "shadow report reviewed")
            assert q.query(b".gw.model_status[]").startswith("candidate -> approved")
            assert q.query(".gw.status")["model_status"] == "approved"
    finally:
        svc.control.stop()
    _, v = fat_finger(svc, "FF2")
    assert not v.decision.ok and v.decision.code == "FAT_FINGER", v.decision.text
    [alert] = svc.publisher.of("riskAlert")
    assert alert["kind"] == "gateway_model" and alert["who"] == "bob"
    assert "candidate -> approved" in alert["text"] and "applied by alice" in alert["text"]


def test_a_retired_model_is_not_loaded(models, caplog):
    StatusBook(models).change("fatfinger", "retired", "carol", "replaced by a better model")
    with caplog.at_level(logging.WARNING, logger="pretrade.gateway.service"):
        svc = gateway(models)
    assert svc.gate.model is None
    assert any("is retired" in r.message and "not used" in r.message for r in caplog.records)
    assert svc.status()["model_status"] == "retired" and svc.status()["model"] == ""
    _, v = fat_finger(svc)
    assert v.decision.ok and v.model_call is None and v.inputs is None
    assert svc.reload_model_status("alice").startswith("no fat-finger model loaded (it is retired)")


def test_retired_at_run_time_unloads_it(models):
    svc = gateway(models)
    StatusBook(models).change("fatfinger", "retired", "carol", "replaced by a better model")
    assert svc.reload_model_status("alice").startswith("candidate -> retired")
    assert svc.gate.model is None and svc.status()["model_status"] == "retired"
    _, v = fat_finger(svc)
    assert v.decision.ok and v.model_call is None
    assert all(not r["outcome"].startswith("shadow-") for r in svc.publisher.of("decision"))
    assert math.isnan(svc.publisher.of("decision")[0]["value"])


def test_in_shadow_mode_the_candidate_has_its_own_shadow_row(models):
    """Shadow mode (static limits bind, dynamic recorded) and a candidate model: neither the
    binding nor the dynamic shadow decision is the model's; its call is a row of its own."""
    svc = gateway(models)
    svc.modes.set("sym", "ACME", "shadow", "alice", "trial")
    _, v = fat_finger(svc)
    assert v.decision.ok and v.shadow is not None and v.shadow.ok
    assert v.model_call is not None and v.model_call.code == "FAT_FINGER"
    rows = svc.publisher.of("decision")
    assert [r["outcome"] for r in rows] == ["pass/static", "shadow-pass/dynamic", "shadow-reject/model"]
    report = shadow_report(pd.DataFrame(rows))
    assert list(report["shadow"]) == ["model"] and list(report["rule_dynamic"]) == ["FAT_FINGER"]
