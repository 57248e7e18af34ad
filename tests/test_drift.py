"""Input drift: PSI and KS on known distributions, the rolling window, and the engine taking a
drifting model off until a person re-approves it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pretrade.features.spec import FeatureConfig
from pretrade.models.drift import (
    DriftConfig,
    DriftMonitor,
    Reference,
    bin_counts,
    ks,
    psi,
    reference_from_data,
)
from pretrade.models.status import StatusBook
from pretrade.risk.engine import RiskEngine, load_governance
from pretrade.risk.limits import load_config

FEATS = ["a", "b"]


def normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@pytest.fixture(scope="module")
def ref() -> Reference:
    rng = np.random.default_rng(1)
    return reference_from_data(rng.normal(0, 1, (200_000, 2)), FEATS, bins=20)


def test_reference_bins_hold_equal_shares_and_round_trip_through_json(ref):
    assert ref.edges.shape == (2, 19) and np.allclose(ref.probs, 1 / 20, atol=1e-3)
    back = Reference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert np.array_equal(back.edges, ref.edges) and np.allclose(back.probs, ref.probs)


def test_psi_and_ks_of_the_same_distribution_are_near_zero(ref):
    live = np.random.default_rng(2).normal(0, 1, (50_000, 2))
    c = bin_counts(ref.edges, live)
    assert c.sum() == 100_000
    assert np.all(psi(ref.probs, c) < 0.002) and np.all(ks(ref.probs, c) < 0.01)


@pytest.mark.parametrize("mu", [0.25, 0.5, 1.0])
def test_psi_and_ks_of_a_shifted_normal_match_theory(ref, mu):
    """N(mu,1) against N(0,1): PSI (symmetrised KL) tends to mu^2 from below as bins get finer;
    KS is 2*Phi(mu/2) - 1 (the CDFs' gap at mu/2)."""
    live = np.random.default_rng(3).normal(mu, 1, (100_000, 2))
    c = bin_counts(ref.edges, live)
    p, k = psi(ref.probs, c), ks(ref.probs, c)
    assert np.all(p > 0.85 * mu**2) and np.all(p < 1.05 * mu**2)
    exact = 2 * normal_cdf(mu / 2) - 1
    assert np.all(np.abs(k - exact) < 0.02)
    from scipy.stats import ks_2samp

    ref_sample = np.random.default_rng(4).normal(0, 1, 100_000)
    assert k[0] <= ks_2samp(ref_sample, live[:, 0]).statistic + 0.01  # a lower bound, at the edges


def test_point_masses_and_nan_are_binned_as_the_model_sees_them():
    X = np.zeros((5_000, 1))
    X[:500, 0] = np.linspace(0.1, 3, 500)  # mostly exactly zero, like news_sentiment
    r = reference_from_data(X, ["news"], bins=10)
    assert np.isfinite(r.edges).sum() == 1 and r.probs[0, 0] == pytest.approx(0.9)
    c = bin_counts(r.edges, np.array([[np.nan]] * 90 + [[1.0]] * 10))
    assert psi(r.probs, c)[0] < 1e-9


def test_the_window_rolls_and_a_verdict_needs_enough_rows(ref):
    cfg = DriftConfig(window_s=3.0, check_s=1.0, min_rows=1_000, psi_warn=0.1, psi_hard=1.0,
                      ks_warn=0.1, ks_hard=0.5, min_fill=0.5)
    m = DriftMonitor(ref, cfg, step_ns=100_000_000)  # a check every 10 cycles, 3 chunks
    rng = np.random.default_rng(5)
    reports = [m.add(rng.normal(0, 1, (50, 2))) for _ in range(30)]
    assert reports[9] is not None and reports[8] is None and reports[-1].rows == 1_500
    assert reports[-1].worst == "ok"
    def shifted(n):
        return np.column_stack([rng.normal(0.8, 1, n), rng.normal(0, 1, n)])

    r = [m.add(shifted(200)) for _ in range(10)][-1]   # the window: 2000 shifted rows, 1000 not
    assert r.rows == 3_000 and r.level[0] == 1 and r.level[1] == 0
    assert r.drifting(1)[0].startswith("a PSI") and r.worst == "warn"
    m.reset()
    assert [m.add(shifted(10)) for _ in range(10)][-1].worst == "ok"  # 100 rows: no verdict yet
    m.reset()
    assert [m.add(shifted(200)) for _ in range(10)][-1].worst == "ok"  # a third of the window
    assert [m.add(shifted(200)) for _ in range(10)][-1].worst != "ok"  # two thirds: judged


# ---- in the engine ---------------------------------------------------------------------------------

CFG = load_config()
FAST = FeatureConfig(warmup_steps=100, norm_halflife_steps=600)
SYMS = ["AAA", "BBB", "CCC", "DDD"]


class Scorer:
    """A stand-in model: the score rises with the size of its inputs."""

    version = "vae-test-1"

    def score(self, z):
        err = np.mean(np.asarray(z) ** 2, axis=1)

        class R:
            score = 1 - np.exp(-err / 30)
            error = err

            @staticmethod
            def top_features(k):
                return [["rv_1m"]] * len(err)

        return R()


def quotes(t0: int, seconds: int) -> dict:
    t = np.arange(t0, t0 + seconds * 10**9, 100_000_000, dtype=np.int64)
    n = len(t) * len(SYMS)
    return {"time": np.repeat(t, len(SYMS)).view("datetime64[ns]"),
            "sym": np.array(SYMS * len(t), dtype=object), "bid": np.full(n, 99.0),
            "ask": np.full(n, 101.0), "bsize": np.full(n, 500), "asize": np.full(n, 500)}


class Driven:
    """Runs an engine on steady quotes whose normalised features are drawn N(shift, 1): the test
    sets the shift of each feature (the features are the input; the drift monitor is under test)."""

    def __init__(self, engine: RiskEngine) -> None:
        from pretrade.features.spec import FEATURES

        self.e, self.t, self.shift = engine, 1_700_000_000 * 10**9, np.zeros(len(FEATURES))
        self.names = list(FEATURES)
        self.rng = np.random.default_rng(7)
        real = engine.features.snapshot

        def snapshot(g):
            s = real(g)
            s.z[:] = self.rng.normal(self.shift, 1, s.z.shape)
            return s

        engine.features.snapshot = snapshot

    def set(self, **shift: float) -> None:
        self.shift[:] = 0
        for k, v in shift.items():
            self.shift[self.names.index(k)] = v

    def run(self, seconds: int) -> list:
        out = []
        for _ in range(seconds):
            out += self.e.ingest("quote", quotes(self.t, 1))
            self.t += 10**9
        return out


def rows(outs, name):
    import pandas as pd

    from pretrade.schema import table

    spec = table(name)
    parts = [pd.DataFrame(dict(zip(spec.names, o.columns, strict=True))) for o in outs if o.table == name]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=spec.names)


def models_dir(tmp_path, status: str | None = None):
    """A models folder whose vae card carries a reference of N(0,1) inputs (and a status)."""
    from pretrade.models.train_vae import MODEL_FEATURES

    X = np.random.default_rng(8).normal(0, 1, (40_000, len(MODEL_FEATURES)))
    card = {"kind": "vae-anomaly", "version": Scorer.version, "features": list(MODEL_FEATURES),
            "reference": reference_from_data(X, list(MODEL_FEATURES)).to_dict()}
    if status:
        card["status"] = status
    (tmp_path / "vae.json").write_text(json.dumps(card))
    return tmp_path, card


def governed(tmp_path, status=None) -> tuple[RiskEngine, Driven]:
    folder, card = models_dir(tmp_path, status)
    scorer = Scorer()
    scorer.card = card
    cfg = DriftConfig(window_s=10, check_s=1, min_rows=200, psi_warn=0.25, psi_hard=1.0,
                      ks_warn=0.2, ks_hard=0.4)
    st, book, drift = load_governance(folder, scorer, drift_config=cfg)
    e = RiskEngine(CFG, scorer, feature_config=FAST, model_status=st, status_book=book, drift=drift,
                   drift_action="takeoff")
    return e, Driven(e)


def static_everywhere(e: RiskEngine) -> bool:
    return all(r.max_qty == CFG.static(r.sym, r.strategy).max_qty for r in e.policy.last.values()
               if r.state == "ACTIVE")


def test_drift_warns_then_takes_the_model_off_until_a_person_approves(tmp_path):
    e, d = governed(tmp_path)
    assert e.model_status == "approved" and e.drift is not None
    out = d.run(30)                                   # 10 s warm-up, then 20 s in distribution
    assert rows(out, "riskAlert").query("kind == 'drift'").empty and e.policy.controls.model_active
    assert e.drift.last.rows >= 200 and e.drift.last.worst == "ok"

    d.set(rv_1m=0.6)                                  # PSI ~0.36, KS ~0.24: warn, not hard
    al = rows(d.run(12), "riskAlert")
    warn = al[al["kind"] == "drift"]
    assert list(warn["severity"]) == ["warning"] and b"rv_1m PSI" in warn["text"].iloc[0]
    assert e.policy.controls.model_active and e.model_status == "approved"

    d.set(rv_1m=0.6, spread_bps=-4.0)                 # spread far off: hard
    out = d.run(8)
    al = rows(out, "riskAlert")
    crit = al[(al["kind"] == "drift") & (al["severity"] == "critical")]
    assert len(crit) == 1
    text = crit["text"].iloc[0].decode()
    assert "taken off" in text and "hard threshold: spread_bps PSI" in text
    assert "warn threshold: rv_1m PSI" in text and "vpin" not in text
    assert not e.policy.controls.model_active and e.model_status == "shadow" and static_everywhere(e)
    assert set(rows(out, "limits")["model"]) == {""}
    assert rows(out, "heartbeat")["status"].iloc[-1] == "shadow"
    assert len(rows(out, "riskScore")) > 0            # still scored, in shadow
    log = StatusBook(tmp_path).history("vae")
    assert [(c.old, c.new, c.who) for c in log] == [("approved", "shadow", "automation")]
    assert "rv_1m" in log[0].why

    d.set()                                           # the inputs come back: still off
    d.run(15)
    assert not e.policy.controls.model_active and static_everywhere(e)
    with pytest.raises(ValueError, match="approve"):
        e.act("activate", who="bob")
    with pytest.raises(ValueError, match="person"):
        e.approve("vae", "automation")
    with pytest.raises(ValueError, match="serves"):
        e.approve("impact", "alice")

    out = e.approve("vae", "alice", "inputs checked after the feed fix")
    assert e.policy.controls.model_active and e.model_status == "approved"
    al = rows(out, "riskAlert")
    assert list(al["who"]) == ["alice", "alice"] and list(al["kind"]) == ["status", "activate"]
    assert b"shadow -> approved by alice" in al["text"].iloc[0]
    assert b"approve vae-test-1" in al["text"].iloc[1]
    assert [(c.new, c.who) for c in StatusBook(tmp_path).history("vae")][-1] == ("approved", "alice")
    assert json.loads((tmp_path / "vae.json").read_text())["status"] == "approved"
    d.run(15)
    assert e.policy.controls.model_active and e.drift.last.worst == "ok"


def test_a_candidate_model_is_scored_in_shadow_and_does_not_bind(tmp_path):
    e, d = governed(tmp_path, status="candidate")
    d.set(rv_1m=6.0, spread_bps=6.0, micro_vol=6.0)   # large inputs: the model would call High
    e.drift = None                                     # (this test is about shadow mode alone)
    out = d.run(20)
    sc = rows(out, "riskScore")
    assert len(sc) and (sc["model"] == Scorer.version).all() and (sc["tier"] != "Normal").any()
    assert static_everywhere(e) and set(rows(out, "limits")["tier"]) == {"NORMAL"}
    assert set(rows(out, "heartbeat")["status"]) == {"shadow"}
    with pytest.raises(ValueError, match="candidate"):
        e.act("activate", who="bob")
    e.approve("vae-test-1", "alice", "shadow report reviewed")
    out = d.run(3)
    assert e.policy.controls.model_active
    assert (rows(out, "limits")["model"] == Scorer.version).all()


def test_with_the_alert_action_hard_drift_alerts_and_the_model_stays_on(tmp_path):
    e, d = governed(tmp_path)
    e.drift_action = "alert"
    d.run(20)
    d.set(spread_bps=4.0)
    al = rows(d.run(8), "riskAlert").query("kind == 'drift'")
    assert "critical" in al["severity"].tolist() and b"stays on" in al["text"].iloc[-1]
    assert e.policy.controls.model_active and e.model_status == "approved"


def test_a_restart_keeps_a_model_taken_off(tmp_path):
    e, d = governed(tmp_path)
    d.run(20)
    d.set(rv_1m=4.0)
    d.run(5)
    assert e.model_status == "shadow"
    e2, _ = governed_again(tmp_path)
    assert e2.model_status == "shadow" and not e2.policy.controls.model_active
    from pretrade.risk.policy import Action

    e2.restore([])                                    # replayed actions never bind it again
    e2.policy.act(Action(0, "bob", "activate"))
    e2.restore([])
    assert not e2.policy.controls.model_active


def test_without_a_status_book_the_journal_keeps_the_model_off_across_a_restart(tmp_path):
    folder, card = models_dir(tmp_path)
    scorer = Scorer()
    scorer.card = card
    cfg = DriftConfig(window_s=10, check_s=1, min_rows=200, ks_hard=0.4)
    status, _, drift = load_governance(folder, scorer, drift_config=cfg)
    e = RiskEngine(CFG, scorer, feature_config=FAST, model_status=status, drift=drift,
                   drift_action="takeoff")
    d = Driven(e)
    out = d.run(20)
    d.set(rv_1m=4.0)
    out += d.run(6)
    assert e.model_status == "shadow" and not (tmp_path / "status.jsonl").exists()
    st = rows(out, "riskAlert").query("kind == 'status'")
    assert st["who"].tolist() == ["automation"] and b"approved -> shadow" in st["text"].iloc[0]
    journal = [("upd", o.table, o.columns) for o in out]
    e2 = RiskEngine(CFG, scorer, feature_config=FAST, model_status="approved", drift=drift)
    e2.restore(journal)
    assert e2.model_status == "shadow" and not e2.policy.controls.model_active
    out2 = e2.approve("vae", "alice", "reviewed")
    e3 = RiskEngine(CFG, scorer, feature_config=FAST, model_status="approved")
    e3.restore(journal + [("upd", o.table, o.columns) for o in out2])
    assert e3.model_status == "approved" and e3.policy.controls.model_active


def governed_again(tmp_path) -> tuple[RiskEngine, None]:
    scorer = Scorer()
    scorer.card = json.loads((tmp_path / "vae.json").read_text())
    st, book, drift = load_governance(tmp_path, scorer)
    return RiskEngine(CFG, scorer, feature_config=FAST, model_status=st, status_book=book, drift=drift), None


def test_committed_vae_card_carries_its_training_reference():
    from pathlib import Path

    card = json.loads((Path(__file__).parents[1] / "models" / "vae.json").read_text())
    r = Reference.from_dict(card["reference"])
    assert r.features == card["features"] and r.rows == card["training_data"]["rows"]
