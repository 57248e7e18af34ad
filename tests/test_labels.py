"""People's marks: stored append-only with who and when, read back, turned into labels, marked at
the engine with the alert's inputs, and read by the next training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pretrade.models.labels import (
    Mark,
    add_mark,
    fatfinger_rows,
    latest,
    read_marks,
    summary,
    vae_normal_rows,
)

F = ["rv_1m", "spread_bps"]


def alert(verdict, ref="2026-11-20T14:50:12.700000000", sym="ESZ6", who="alice", **kw):
    return Mark(who=who, target="alert", ref=ref, sym=sym, verdict=verdict, call="High Alert",
                model="vae-1", **kw)


def decision(verdict, call, clordid, x):
    return Mark(who="bob", target="decision", ref=clordid, sym="ACME", verdict=verdict, call=call,
                features=dict(zip(F, x, strict=True)))


def test_marks_are_appended_with_who_and_when_and_read_back(tmp_path):
    path = tmp_path / "labels" / "marks.jsonl"
    a = add_mark(alert("wrong", note="liquidity was fine", features={"rv_1m": 3.0, "spread_bps": 1.0}), path)
    b = add_mark(alert("right", ref="2026-11-20T14:51:00.000000000"), path)
    assert a.time.endswith("+00:00") and a.who == "alice"
    back = read_marks(path)
    assert back == [a, b]
    assert len(path.read_text().splitlines()) == 2
    with open(path, "a") as f:
        f.write('{"who": "torn')                        # a crash mid-write
    c = add_mark(alert("right", ref="x"), path)
    assert read_marks(path) == [a, b, c]                # the torn line skipped, nothing lost
    assert read_marks(tmp_path / "none.jsonl") == []


@pytest.mark.parametrize("bad,match", [
    (dict(who=""), "who"), (dict(target="order"), "target"), (dict(verdict="maybe"), "verdict"),
    (dict(ref=""), "alert time or decision"), (dict(features={"rv_1m": float("nan")}), "finite")])
def test_bad_marks_are_refused_at_the_boundary(tmp_path, bad, match):
    m = Mark(**{**alert("wrong").__dict__, **bad})
    with pytest.raises(ValueError, match=match):
        add_mark(m, tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()


def test_later_mark_of_the_same_call_wins():
    marks = [alert("right"), alert("wrong", who="carol")]
    assert [m.who for m in latest(marks)] == ["carol"]


def test_false_alarms_with_inputs_become_normal_rows_for_the_vae():
    marks = [alert("wrong", features={"rv_1m": 3.0, "spread_bps": 1.0}),
             alert("wrong", ref="t2", features={"rv_1m": 1.0}),               # incomplete: unused
             alert("right", ref="t3", features={"rv_1m": 9.0, "spread_bps": 9.0})]
    X = vae_normal_rows(marks, F)
    assert X.shape == (1, 2) and X.dtype == np.float32 and X.tolist() == [[3.0, 1.0]]
    assert summary(marks) == {"alert_wrong": 2, "alert_right": 1, "with_inputs": 3}


def test_marked_decisions_become_fatfinger_labels():
    marks = [decision("right", "rejected:fatfinger", "c1", [1, 1]),   # a real error, caught
             decision("wrong", "rejected:fatfinger", "c2", [2, 2]),   # valid order blocked
             decision("wrong", "accepted", "c3", [3, 3]),             # an error let through
             decision("right", "accepted", "c4", [4, 4])]             # valid, passed
    X, y = fatfinger_rows(marks, F)
    assert X[:, 0].tolist() == [1, 2, 3, 4] and y.tolist() == [1, 0, 1, 0]


def test_vae_training_calibrates_on_marked_false_alarms(tmp_path, monkeypatch):
    """train_vae.train reads the marks file and adds its false alarms to the calibration rows."""
    import pandas as pd

    from pretrade.models import anomaly, train_vae

    rng = np.random.default_rng(0)
    feats = list(train_vae.MODEL_FEATURES)

    def fake_days(scenario, seed, duration, every=1, **_):
        return pd.DataFrame(rng.normal(0, 1, (600, len(feats))), columns=["z_" + f for f in feats]), None

    seen = {}

    class Stop(Exception):
        pass

    def fit(errors, *a, **k):
        seen["errors"] = errors
        raise Stop

    monkeypatch.setattr(train_vae, "simulated_features", fake_days)
    monkeypatch.setattr(anomaly.Calibration, "fit", staticmethod(fit))
    path = tmp_path / "marks.jsonl"
    add_mark(alert("wrong", features={f: 6.0 for f in feats}), path)
    add_mark(alert("right", ref="t2", features={f: 7.0 for f in feats}), path)
    with pytest.raises(Stop):
        train_vae.train(tmp_path / "out", train_seeds=(1,), epochs=1, labels=path)
    e = seen["errors"]
    assert len(e) == 600 * len(train_vae.CAL_SEEDS) + 1 and e[-1] > np.percentile(e[:-1], 99)   # the false alarm's large error


def test_fatfinger_training_fits_on_marked_decisions(tmp_path, monkeypatch):
    from pretrade.models import fatfinger
    from pretrade.models.order_features import FEATURES as OF

    def fake_day(seed, duration, **_):
        n = 50
        z = np.zeros(n)
        return fatfinger.OrderSet(np.full((n, len(OF)), seed, np.float32), np.zeros(n, np.int64),
                                  np.array([""] * n, dtype=object), z.astype(bool), z.astype(np.int64),
                                  np.array(["ACME"] * n, dtype=object), z.astype(np.int64), z + seed,
                                  z + np.nan, z.astype(bool))

    seen = {}

    class Stop(Exception):
        pass

    def fit(X, y, seed, **k):
        seen["X"], seen["y"] = X, y
        raise Stop

    monkeypatch.setattr(fatfinger, "simulated_orders", fake_day)
    monkeypatch.setattr(fatfinger, "fit_classifier", fit)
    path = tmp_path / "marks.jsonl"
    x = {f: 0.5 for f in OF}
    add_mark(Mark(who="bob", target="decision", ref="c9", sym="ACME", verdict="wrong",
                  call="accepted", features=x), path)
    add_mark(Mark(who="bob", target="decision", ref="c10", sym="ACME", verdict="right",
                  call="accepted"), path)                 # no features: kept, cannot train
    with pytest.raises(Stop):
        fatfinger.train_fatfinger(out_dir=tmp_path, train_seeds=(11, 12), cal_seeds=(31,),
                                  val_seed=35, labels=path)
    assert len(seen["y"]) == 101 and seen["y"][-1] == 1 and np.all(seen["X"][-1] == 0.5)


def test_the_engine_marks_an_alert_with_its_inputs(tmp_path):
    """A tier alert raised by the engine, marked wrong through the engine, lands in the labels
    file with the model's inputs at that moment, and an audit row is published."""
    from pretrade.risk.engine import RiskEngine
    from test_drift import CFG, FAST, Driven, Scorer, rows

    scorer = Scorer()
    scorer.features = F
    path = tmp_path / "marks.jsonl"
    e = RiskEngine(CFG, scorer, feature_config=FAST, labels_path=path)
    d = Driven(e)
    d.set(rv_1m=5.0, spread_bps=5.0)
    al = rows(d.run(20), "riskAlert")
    tier = al[al["kind"] == "tier"].iloc[0]
    out = e.mark(tier["sym"], tier["time"].to_datetime64(), "wrong", "alice", "spread widening was a feed glitch")
    m = read_marks(path)[0]
    assert m.verdict == "wrong" and m.call == tier["tier"] and m.model == Scorer.version
    assert set(m.features) == set(F) and m.who == "alice"
    audit = rows(out, "riskAlert")
    assert audit["kind"].tolist() == ["mark"] and audit["who"].tolist() == ["alice"]
    e.mark("AAA", np.datetime64("2026-01-01T00:00:00", "ns"), "right", "alice")
    assert read_marks(path)[1].features == {}          # unknown alert: kept, without inputs
    with pytest.raises(ValueError, match="verdict"):
        e.mark("AAA", 0, "perhaps", "alice")
    assert json.loads(path.read_text().splitlines()[0])["note"].startswith("spread")
