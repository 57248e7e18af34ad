"""The anomaly score (Layer 2): VAE reconstruction error, calibrated to quantiles of normal markets.

Calibration maps an instrument's total reconstruction error (the mean of its per-feature squared
errors, leaving out the card's `trim` largest: with trim 1 no single feature can raise an alert
alone) to a score in [0, 1] through anchors fitted on held-out normal data: the median normal
error scores 0.01, its `elevated` quantile 0.05, `high` 0.3, `critical` 0.9 (log-linear between
anchors, approaching 1 beyond). Tiers follow from the score. Serving runs the exported ONNX graph
with onnxruntime, batched over instruments, after checking it against its model card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pretrade.features.spec import FEATURES, FeatureConfig
from pretrade.models.card import ModelRefused, onnx_session, read_card

KIND = "vae-anomaly"
TIERS = ("Normal", "Elevated", "High Alert", "Critical")
TIER_SCORES = (0.05, 0.3, 0.9)  # Elevated, High Alert, Critical: scores strictly above these
_ANCHOR_SCORES = (0.01, *TIER_SCORES)


@dataclass(frozen=True)
class Calibration:
    """Total-error thresholds from normal behaviour, and the quantile levels they came from."""

    median: float
    elevated: float
    high: float
    critical: float
    q_elevated: float
    q_high: float
    q_critical: float
    critical_margin: float = 1.0
    high_margin: float = 1.0  # `high` is the q_high quantile times this
    trim: int = 0  # the largest per-feature errors left out of the total (see total_error)

    @classmethod
    def fit(
        cls,
        total_errors: np.ndarray,
        q_elevated: float = 0.999,
        q_high: float = 0.99999,
        q_critical: float = 1.0,
        critical_margin: float = 1.5,
        high_margin: float = 1.0,
        trim: int = 0,
    ) -> Calibration:
        """Thresholds at quantiles of held-out normal total errors (strictly increasing); the
        errors must be totals over the same `trim` (total_error(sq, trim)).

        The defaults put 0.1% of normal 100 ms rows at Elevated or above, 0.001% at High Alert
        (about one episode per instrument per 6.5 h day) and Critical at 1.5 times the largest
        normal error seen, so the circuit breaker needs an error clearly beyond normal. The
        shipped model uses q_high=1.0 with a margin instead: High Alert only beyond every normal
        error seen on hours of calibration days (train_vae).
        """
        e = np.asarray(total_errors, dtype=np.float64)
        if len(e) < 100:
            raise ValueError(f"calibration needs at least 100 normal rows, got {len(e)}")
        if high_margin <= 0 or critical_margin <= 0 or trim < 0:
            raise ValueError("margins must be positive and trim not negative")
        qs = np.quantile(e, [0.5, q_elevated, q_high, q_critical])
        qs[2] *= high_margin
        qs[3] *= critical_margin
        for k in range(1, 4):  # keep anchors strictly increasing even on degenerate data
            qs[k] = max(qs[k], qs[k - 1] * (1 + 1e-6) + 1e-12)
        return cls(*map(float, qs), q_elevated, q_high, q_critical, critical_margin,
                   float(high_margin), int(trim))

    def anchors(self) -> np.ndarray:
        return np.array([self.median, self.elevated, self.high, self.critical])

    def score(self, total_error: np.ndarray) -> np.ndarray:
        """Anomaly score in [0, 1], increasing with the error."""
        e = np.maximum(np.asarray(total_error, dtype=np.float64), 1e-300)
        a = self.anchors()
        s = np.interp(np.log(e), np.log(a), _ANCHOR_SCORES)
        low = e < a[0]
        s[low] = _ANCHOR_SCORES[0] * e[low] / a[0]
        high = e > a[-1]
        s[high] = 1.0 - (1.0 - _ANCHOR_SCORES[-1]) * a[-1] / e[high]
        return s

    def as_dict(self) -> dict:
        return asdict(self)


def total_error(sq: np.ndarray, trim: int = 0) -> np.ndarray:
    """Total error per row: the mean of its per-feature squared errors (n, d) without the `trim`
    largest, so a lone feature at its clip (a volume lull, a VPIN swing: the commonest normal
    false alarm) cannot reach High Alert alone, while a crash, out of line on several, does."""
    sq = np.asarray(sq, dtype=np.float64)
    if trim <= 0:
        return sq.mean(axis=1)
    if trim >= sq.shape[1]:
        raise ValueError(f"cannot leave out {trim} of {sq.shape[1]} feature errors")
    return np.partition(sq, sq.shape[1] - trim - 1, axis=1)[:, : sq.shape[1] - trim].mean(axis=1)


def tier_codes(score: np.ndarray) -> np.ndarray:
    """0 Normal, 1 Elevated, 2 High Alert, 3 Critical: a tier starts strictly above its score."""
    return np.searchsorted(np.array(TIER_SCORES), np.asarray(score), side="left").astype(np.int8)


@dataclass
class AnomalyResult:
    """Scores of a batch of instruments: total error, score, tier code, and each feature's share
    of the error (rows sum to 1), so an alert can name the features flashing red."""

    error: np.ndarray  # (n,)
    score: np.ndarray  # (n,)
    tier: np.ndarray  # (n,) codes into TIERS
    contributions: np.ndarray  # (n, d)
    features: list[str]

    def tier_names(self) -> list[str]:
        return [TIERS[t] for t in self.tier]

    def top_features(self, k: int = 3) -> list[list[str]]:
        """The k features contributing most to each row's error."""
        idx = np.argsort(-self.contributions, axis=1)[:, :k]
        return [[self.features[j] for j in row] for row in idx]


def result_from_errors(sq: np.ndarray, cal: Calibration, features: list[str]) -> AnomalyResult:
    """Score, tiers and contributions from squared errors per feature (n, d)."""
    sq = np.asarray(sq, dtype=np.float64)
    total = total_error(sq, cal.trim)
    score = cal.score(total)
    contrib = sq / np.maximum(sq.sum(axis=1, keepdims=True), 1e-300)
    return AnomalyResult(total, score, tier_codes(score), contrib, list(features))


class AnomalyScorer:
    """The served VAE: onnxruntime over a batch of instruments, refused if it does not match its card."""

    def __init__(
        self, path: str | Path, threads: int = 1, feature_config: FeatureConfig | None = None
    ) -> None:
        self.path = Path(path)
        card = read_card(self.path, KIND, required=("features", "calibration"))
        self.card = card
        expected = asdict(feature_config or FeatureConfig())
        trained = card.get("feature_config")
        if trained is not None and trained != expected:
            diff = sorted(
                k for k in set(trained) | set(expected) if trained.get(k) != expected.get(k)
            )
            raise ModelRefused(
                f"model {self.path} was trained on features computed with other "
                f"parameters ({', '.join(diff)}) than this engine's"
            )
        self.features: list[str] = list(card["features"])
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ModelRefused(
                f"model {self.path} expects features this engine does not compute: {unknown}"
            )
        self.columns = np.array([FEATURES.index(f) for f in self.features])
        try:
            self.calibration = Calibration(**card["calibration"])
        except TypeError as e:
            raise ModelRefused(f"model card of {self.path} has a bad calibration: {e}") from None
        if not 0 <= self.calibration.trim < len(self.features):
            raise ModelRefused(
                f"model card of {self.path} leaves {self.calibration.trim} of "
                f"{len(self.features)} feature errors out of its total"
            )
        self.session = onnx_session(self.path, threads)
        inp = self.session.get_inputs()[0]
        if inp.shape[-1] != len(self.features):
            raise ModelRefused(
                f"model {self.path} takes {inp.shape[-1]} features but its card lists "
                f"{len(self.features)}"
            )
        self.input_name = inp.name
        self.version = str(card["version"])

    def errors(self, z: np.ndarray) -> np.ndarray:
        """Squared errors per model feature (n, d); z is (n, d) or the engine's (n, all features)."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2:
            raise ValueError(f"expected a 2-D batch of feature rows, got shape {z.shape}")
        if z.shape[1] == len(FEATURES) and len(self.features) != len(FEATURES):
            z = z[:, self.columns]
        elif z.shape[1] != len(self.features):
            raise ValueError(
                f"expected {len(self.features)} or {len(FEATURES)} features per row, got {z.shape[1]}"
            )
        z = np.nan_to_num(np.ascontiguousarray(z), nan=0.0)
        return self.session.run(None, {self.input_name: z})[0]

    def score(self, z: np.ndarray) -> AnomalyResult:
        """Scores, tiers and contributions for a batch of instruments' normalised features."""
        return result_from_errors(self.errors(z), self.calibration, self.features)
