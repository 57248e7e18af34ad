"""The VAE anomaly model: training, calibration and tiers, ONNX serving, and the registry's refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from pretrade.features import FEATURES  # noqa: E402
from pretrade.models.anomaly import (  # noqa: E402
    KIND,
    TIERS,
    AnomalyScorer,
    Calibration,
    result_from_errors,
    tier_codes,
)
from pretrade.models.card import ModelRefused, card_path, write_card  # noqa: E402
from pretrade.models.vae import VaeConfig, errors, export_onnx, train_vae  # noqa: E402

D = len(FEATURES)
CFG = VaeConfig(epochs=4, batch=256)


def normal_rows(n: int, seed: int) -> np.ndarray:
    """Correlated 'normal' feature rows: two latent factors plus noise, unit-ish scale."""
    rng = np.random.default_rng(seed)
    load = np.random.default_rng(99).normal(size=(2, D))
    return (rng.normal(size=(n, 2)) @ load * 0.7 + rng.normal(size=(n, D)) * 0.4).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    model = train_vae(normal_rows(12_000, 1), CFG, seed=3, progress=False)
    cal = Calibration.fit(errors(model, normal_rows(20_000, 2)).mean(axis=1), q_critical=0.99999)
    return model, cal


@pytest.fixture(scope="module")
def artifact(trained, tmp_path_factory):
    model, cal = trained
    path = tmp_path_factory.mktemp("models") / "vae.onnx"
    export_onnx(model, D, str(path))
    write_card(path, {"kind": KIND, "version": "test", "features": list(FEATURES),
                      "calibration": cal.as_dict()})
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
    assert tier_codes(cal.score(np.array([cal.median, cal.elevated * 1.001, cal.high * 1.001,
                                          cal.critical * 1.001]))).tolist() == [0, 1, 2, 3]
    assert np.mean(tier_codes(cal.score(e)) >= 1) == pytest.approx(0.01, abs=0.001)
    with pytest.raises(ValueError, match="at least 100"):
        Calibration.fit(e[:10])


def test_onnx_and_torch_agree_batched_over_instruments(trained, artifact):
    model, _ = trained
    scorer = AnomalyScorer(artifact)
    x = normal_rows(1_000, 9) * 2
    np.testing.assert_allclose(scorer.errors(x), errors(model, x), rtol=1e-4, atol=1e-5)
    res = scorer.score(x)
    assert res.score.shape == (1_000,) and set(res.tier_names()) <= set(TIERS)


def test_a_subset_model_takes_the_engines_full_feature_rows(trained, tmp_path):
    feats = [f for f in FEATURES if f != "vpin"]
    model = train_vae(normal_rows(2_000, 1)[:, [FEATURES.index(f) for f in feats]],
                      VaeConfig(epochs=1), seed=0, progress=False)
    path = tmp_path / "sub.onnx"
    export_onnx(model, len(feats), str(path))
    write_card(path, {"kind": KIND, "version": "t", "features": feats,
                      "calibration": trained[1].as_dict()})
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
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    write_card(garbage, card)
    with pytest.raises(ModelRefused, match="failed to load"):
        AnomalyScorer(garbage)
