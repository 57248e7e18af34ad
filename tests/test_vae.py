"""The VAE anomaly model: training, calibration and tiers, ONNX serving, and the registry's refusals."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from pretrade.features import FEATURES, FeatureConfig  # noqa: E402
from pretrade.models.anomaly import (  # noqa: E402
    KIND,
    TIERS,
    AnomalyScorer,
    Calibration,
    result_from_errors,
    tier_codes,
    total_error,
)
from pretrade.models.card import ModelRefused, card_path, write_card  # noqa: E402
from pretrade.models.vae import VaeConfig, errors, export_onnx, train_vae  # noqa: E402

D = len(FEATURES)
CFG = VaeConfig(epochs=3, batch=256)
torch.set_num_threads(1)  # tiny models: threads only contend on the shared machine


def normal_rows(n: int, seed: int) -> np.ndarray:
    """Correlated 'normal' feature rows: two latent factors plus noise, unit-ish scale."""
    rng = np.random.default_rng(seed)
    load = np.random.default_rng(99).normal(size=(2, D))
    return (rng.normal(size=(n, 2)) @ load * 0.7 + rng.normal(size=(n, D)) * 0.4).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    model = train_vae(normal_rows(8_000, 1), CFG, seed=3, progress=False)
    cal = Calibration.fit(errors(model, normal_rows(20_000, 2)).mean(axis=1))
    return model, cal


@pytest.fixture(scope="module")
def artifact(trained, tmp_path_factory):
    model, cal = trained
    path = tmp_path_factory.mktemp("models") / "vae.onnx"
    export_onnx(model, D, str(path))
    write_card(
        path,
        {"kind": KIND, "version": "test", "features": list(FEATURES), "calibration": cal.as_dict()},
    )
    return path


def test_anomalies_score_high_and_name_the_feature_that_broke(trained):
    model, cal = trained
    x = normal_rows(500, 7)
    bad = x.copy()
    k = FEATURES.index("spread_bps")
    bad[:, k] += 6.0
    normal = result_from_errors(errors(model, x), cal, list(FEATURES))
    broken = result_from_errors(errors(model, bad), cal, list(FEATURES))
    assert np.mean(normal.tier == 0) > 0.95
    assert np.mean(broken.tier >= 2) > 0.95
    assert np.mean([top[0] == "spread_bps" for top in broken.top_features(1)]) > 0.95
    np.testing.assert_allclose(broken.contributions.sum(axis=1), 1.0, rtol=1e-9)


def test_training_is_reproducible_for_a_seed():
    x = normal_rows(2_000, 5)
    cfg = VaeConfig(epochs=1, batch=256)
    a, b = train_vae(x, cfg, seed=11, progress=False), train_vae(x, cfg, seed=11, progress=False)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    c = train_vae(x, cfg, seed=12, progress=False)
    assert not torch.equal(a.mu.weight, c.mu.weight)


def test_calibrated_score_is_monotonic_with_tiers_at_the_calibrated_quantiles():
    e = np.random.default_rng(0).lognormal(size=100_000)
    cal = Calibration.fit(e)
    grid = np.geomspace(1e-3, 1e4, 500)
    s = cal.score(grid)
    assert np.all(np.diff(s) > 0) and s.min() >= 0 and s.max() < 1
    assert tier_codes(
        cal.score(
            np.array([cal.median, cal.elevated * 1.001, cal.high * 1.001, cal.critical * 1.001])
        )
    ).tolist() == [0, 1, 2, 3]
    assert np.mean(tier_codes(cal.score(e)) >= 1) == pytest.approx(0.001, abs=0.0002)
    assert np.mean(tier_codes(cal.score(e)) >= 2) == pytest.approx(0.00001, abs=0.00001)
    assert not np.any(tier_codes(cal.score(e)) == 3)  # Critical: beyond every normal error
    assert cal.critical == pytest.approx(1.5 * e.max())
    with pytest.raises(ValueError, match="at least 100"):
        Calibration.fit(e[:10])


def test_trimmed_total_leaves_out_the_largest_feature_errors():
    sq = np.array([[1.0, 9.0, 2.0, 4.0], [0.0, 0.0, 0.0, 8.0]])
    np.testing.assert_allclose(total_error(sq), [4.0, 2.0])
    np.testing.assert_allclose(total_error(sq, 1), [7 / 3, 0.0])
    np.testing.assert_allclose(total_error(sq, 2), [1.5, 0.0])
    with pytest.raises(ValueError, match="cannot leave out 4 of 4"):
        total_error(sq, 4)


def test_with_trim_one_feature_alone_cannot_raise_high_alert_but_several_do(trained):
    """The shipped scoring: a lone feature at its clip (a normal market's commonest false alarm)
    stays below High Alert; the same shift on three features at once (a crash) is above it."""
    model, _ = trained
    x = normal_rows(20_000, 2)
    cal = Calibration.fit(
        total_error(errors(model, x), 1), q_high=1.0, high_margin=1.2, trim=1
    )
    assert cal.high == pytest.approx(1.2 * total_error(errors(model, x), 1).max())
    assert not np.any(tier_codes(result_from_errors(errors(model, x), cal, list(FEATURES)).score) >= 2)
    probe = normal_rows(500, 7)
    lone, several = probe.copy(), probe.copy()
    lone[:, FEATURES.index("volume_1m")] = -8.0
    for f, z in (("rv_1m", 8.0), ("ret_1m", -8.0), ("book_pressure", -8.0)):
        several[:, FEATURES.index(f)] = z
    assert np.mean(result_from_errors(errors(model, lone), cal, list(FEATURES)).tier >= 2) < 0.05
    broken = result_from_errors(errors(model, several), cal, list(FEATURES))
    assert np.mean(broken.tier >= 2) > 0.95
    assert set(broken.top_features(3)[0]) == {"rv_1m", "ret_1m", "book_pressure"}


def test_onnx_and_torch_agree_batched_over_instruments(trained, artifact):
    model, _ = trained
    scorer = AnomalyScorer(artifact)
    x = normal_rows(1_000, 9) * 2
    np.testing.assert_allclose(scorer.errors(x), errors(model, x), rtol=1e-4, atol=1e-5)
    res = scorer.score(x)
    assert res.score.shape == (1_000,) and set(res.tier_names()) <= set(TIERS)


def test_a_subset_model_takes_the_engines_full_feature_rows(trained, tmp_path):
    feats = [f for f in FEATURES if f != "vpin"]
    model = train_vae(
        normal_rows(2_000, 1)[:, [FEATURES.index(f) for f in feats]],
        VaeConfig(epochs=1),
        seed=0,
        progress=False,
    )
    path = tmp_path / "sub.onnx"
    export_onnx(model, len(feats), str(path))
    write_card(
        path, {"kind": KIND, "version": "t", "features": feats, "calibration": trained[1].as_dict()}
    )
    scorer = AnomalyScorer(path)
    full = normal_rows(10, 3)
    np.testing.assert_allclose(scorer.errors(full), scorer.errors(full[:, scorer.columns]))
    with pytest.raises(ValueError, match="features per row"):
        scorer.errors(full[:, :5])


def test_the_registry_refuses_a_model_that_does_not_match_its_card(artifact, tmp_path):
    bad = tmp_path / "vae.onnx"
    bad.write_bytes(artifact.read_bytes() + b"\0")
    card_path(bad).write_text(card_path(artifact).read_text())
    with pytest.raises(ModelRefused, match="does not match its card"):
        AnomalyScorer(bad)
    card_path(bad).unlink()
    with pytest.raises(ModelRefused, match="has no card"):
        AnomalyScorer(bad)
    with pytest.raises(ModelRefused, match="does not exist"):
        AnomalyScorer(tmp_path / "missing.onnx")
    good = tmp_path / "other.onnx"
    good.write_bytes(artifact.read_bytes())
    card = json.loads(card_path(artifact).read_text())
    write_card(good, {**card, "features": list(FEATURES[:5])})
    with pytest.raises(ModelRefused, match="takes 14 features"):
        AnomalyScorer(good)
    write_card(good, {**card, "kind": "fatfinger"})
    with pytest.raises(ModelRefused, match="not 'vae-anomaly'"):
        AnomalyScorer(good)
    write_card(good, {**card, "features": [*FEATURES[:-1], "astrology"]})
    with pytest.raises(ModelRefused, match="does not compute"):
        AnomalyScorer(good)
    write_card(good, {**card, "calibration": {**card["calibration"], "trim": len(FEATURES)}})
    with pytest.raises(ModelRefused, match="leaves 14 of 14 feature errors out"):
        AnomalyScorer(good)
    old = {k: v for k, v in card["calibration"].items() if k not in ("trim", "high_margin")}
    write_card(good, {**card, "calibration": old})  # a card from before trimming: plain mean
    assert AnomalyScorer(good).calibration.trim == 0
    write_card(good, {**card, "feature_config": {**asdict(FeatureConfig()), "warmup_steps": 1}})
    with pytest.raises(ModelRefused, match="other parameters \\(warmup_steps\\)"):
        AnomalyScorer(good)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    write_card(garbage, card)
    with pytest.raises(ModelRefused, match="failed to load"):
        AnomalyScorer(garbage)


# ---- the committed model on simulated markets ----------------------------------------------------

COMMITTED = "models/vae.onnx"
PRICE_COLS = {
    "trade": ["price"],
    "quote": ["bid", "ask"],
    "l3": ["price"],
    "book": [f"{s}{k}" for s in ("bid", "ask") for k in range(1, 11)],
}


def _tiers(scorer, frames, sym):
    from pretrade.features import compute_features

    df = compute_features(frames)
    df = df[df["ready"] & (df["sym"] == sym)]
    return df["time"].to_numpy(), scorer.score(df[["z_" + f for f in FEATURES]].to_numpy()).tier


def test_committed_model_loads_and_matches_its_card():
    scorer = AnomalyScorer(COMMITTED)
    assert scorer.card["kind"] == KIND and scorer.features == scorer.card["features"]
    assert scorer.card["training_data"]["sha256"]


def test_the_same_crash_at_100x_price_gives_the_same_tiers():
    import dataclasses

    from pretrade.market import instruments
    from pretrade.market.simulator import simulate

    scorer = AnomalyScorer(COMMITTED)
    res = simulate(
        "flash-crash", seed=21, duration=1200, syms=["ESZ6", "ACME"], at=800.0, sym="ESZ6"
    )
    scaled = {}
    for name, df in res.frames.items():
        df = df.copy()
        for c in PRICE_COLS.get(name, []):
            df[c] = df[c] * 100.0
        scaled[name] = df
    t, tiers = _tiers(scorer, res.frames, "ESZ6")
    _, tiers100 = _tiers(scorer, scaled, "ESZ6")
    assert np.array_equal(tiers, tiers100)
    bottom = res.labels["stress"]["bottom_time"].iloc[0]
    assert tiers[t <= np.datetime64(bottom)].max() >= 2  # High Alert before the bottom

    # The same normal market, 100x the price, with a different relative tick: alike, not in alarm.
    es = instruments.UNIVERSE["ESZ6"]
    clone = dataclasses.replace(es, sym="ESX100", price=es.price * 100, tick=10.0)
    instruments.UNIVERSE[clone.sym] = clone
    try:
        for sym in ("ESZ6", "ESX100"):
            norm = simulate("normal", seed=22, duration=1200, syms=[sym, "ACME"])
            _, tiers = _tiers(scorer, norm.frames, sym)
            assert np.mean(tiers == 0) > 0.95, sym
            assert np.mean(tiers >= 2) < 0.005, sym
    finally:
        del instruments.UNIVERSE[clone.sym]


def test_calibration_days_set_high_alert_beyond_every_normal_total_and_name_the_version(
    trained, monkeypatch
):
    import pandas as pd

    from pretrade.models import train_vae

    model, _ = trained
    days = {s: normal_rows(3_000, s) for s in (31, 32)}

    def fake_day(scenario, seed, duration, every=1, **_):
        assert scenario == "normal"
        return pd.DataFrame(days[seed], columns=["z_" + f for f in FEATURES]), None

    monkeypatch.setattr(train_vae, "simulated_features", fake_day)
    fn = lambda z: errors(model, z)  # noqa: E731
    cal, rows = train_vae.calibrate(fn, list(FEATURES), (31, 32), 600)
    totals = total_error(np.vstack([fn(x) for x in days.values()]), train_vae.TRIM)
    assert rows == 6_000 and cal.trim == train_vae.TRIM
    assert cal.high == pytest.approx(train_vae.HIGH_MARGIN * totals.max())
    other, _ = train_vae.calibrate(fn, list(FEATURES), (31,), 600)
    v = train_vae.model_version("ab" * 32, cal)
    assert v.startswith(train_vae.SCORING + "+abababab.")
    assert v != train_vae.model_version("ab" * 32, other)  # new thresholds, new version
    noise = Calibration(**{k: v * (1 + 1e-9) if isinstance(v, float) else v
                           for k, v in cal.as_dict().items()})
    assert train_vae.model_version("ab" * 32, noise) == v  # torch vs onnxruntime last bits


def test_walk_forward_figures_join_the_card_of_the_version_they_evaluated(artifact, tmp_path):
    from pretrade.models.train_vae import attach_walk_forward

    path = tmp_path / "vae.onnx"
    path.write_bytes(artifact.read_bytes())
    card = json.loads(card_path(artifact).read_text())
    write_card(path, {**card, "walk_forward": None})
    report = tmp_path / "anomaly.json"
    summary = {"vae": {"false_alarms": 0, "per_day": 0.0, "median_lead_s": 70.0},
               "vpin": {"median_lead_s": float("nan")}}
    report.write_text(json.dumps({"meta": {"version": "other"}, "summary": summary}))
    with pytest.raises(ValueError, match="evaluated 'other'"):
        attach_walk_forward(path, report)
    report.write_text(json.dumps({"meta": {"version": card["version"], "command": "c"},
                                  "summary": summary, "targets": {"at_most_one_per_day": True}}))
    attach_walk_forward(path, report)
    wf = AnomalyScorer(path).card["walk_forward"]  # still matches its artifact
    assert wf["targets"]["at_most_one_per_day"] and wf["detectors"]["vae"]["per_day"] == 0.0
    assert wf["detectors"]["vpin"]["median_lead_s"] is None  # strict JSON: no NaN


def test_the_backtest_knows_the_days_a_card_was_fitted_on():
    from pretrade.backtest.anomaly_cli import model_seeds

    card = json.loads(card_path(COMMITTED).read_text())
    seeds = model_seeds(card)
    assert seeds["train"] == [101, 102] and seeds["calibration"] == [103, 106, 107]
    assert seeds["validation"] == [104, 105]
    old = {"training_data": {"seeds": [1]}, "calibration_data": {"seed": 2}}  # previous cards
    assert model_seeds(old)["all"] == [1, 2]
