"""What the features are: their names, meanings, normalisation, and the engine's parameters.

One table here defines every feature once; the kernel computes them in this order and the
normaliser reads its transform and floor from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# name, transform before normalising ("log" = log(x + eps), "id" = as is), eps, floor of the
# baseline's standard deviation (in transformed units), and what the raw value means.
# fmt: off
_SPEC: list[tuple[str, str, float, float, str]] = [
    ("rv_1m", "log", 1e-4, 0.1,
     "1-minute realized volatility: sqrt of the sum of squared 100 ms mid log returns"),
    ("micro_vol", "log", 1e-4, 0.1,
     "micro-burst volatility: the same over the last second, scaled to 1-minute units"),
    ("spread_bps", "log", 0.01, 0.05,
     "bid-ask spread in basis points of the mid"),
    ("imbalance_top", "id", 0.0, 0.05,
     "(bid size - ask size) / (bid size + ask size), top of book"),
    ("imbalance_depth", "id", 0.0, 0.05,
     "(bid size - ask size) / (bid size + ask size) summed over the top N (5) book levels"),
    ("book_pressure", "id", 0.0, 0.05,
     "log of depth-weighted bid over ask size, weights 1/level over all levels"),
    ("trade_to_order", "log", 0.001, 0.1,
     "trades per order message (L3 add/modify/delete) over the last 10 s; without an L3 "
     "feed, trades per quote/book update"),
    ("liquidity_decay", "log", 0.1, 0.1,
     "seconds the book took (or has taken so far) to refill to 90% of its depth after the "
     "latest large trade"),
    ("volume_1m", "log", 1.0, 0.1,
     "traded volume over the last minute"),
    ("depth_top", "log", 1.0, 0.05,
     "bid size + ask size at the top of book"),
    ("ret_1m", "id", 0.0, 0.0001,
     "mid log return over the last minute"),
    ("cross_corr", "id", 0.0, 0.05,
     "EWMA correlation (half-life 2 min) of the instrument's 1 s mid returns, sampled every "
     "step, with the mean 1 s return of the other instruments"),
    ("news_sentiment", "id", 0.0, 0.05,
     "news sentiment, summed and decayed (half-life 60 s)"),
    ("vpin", "id", 0.0, 0.02,
     "VPIN: absolute buy minus sell aggressor volume over total volume, last 50 volume "
     "buckets (a published baseline)"),
]
# fmt: on

FEATURES: tuple[str, ...] = tuple(s[0] for s in _SPEC)
FEATURE_DOCS: dict[str, str] = {s[0]: s[4] for s in _SPEC}
N_FEATURES = len(FEATURES)
# Per feature: 1 if log-transformed before normalising, its eps, its std floor.
LOG_TRANSFORM = np.array([1.0 if s[1] == "log" else 0.0 for s in _SPEC])
LOG_EPS = np.array([s[2] for s in _SPEC])
STD_FLOOR = np.array([s[3] for s in _SPEC])


@dataclass(frozen=True)
class FeatureConfig:
    """Parameters of the feature engine; the defaults are the production ones.

    Steps are grid steps (step_ns each, 100 ms by default). Outputs of an instrument are flagged
    not ready until `warmup_steps` after its first valid quote (5 minutes by default): its
    1-minute windows are full by then and its normalisation baseline has seen 5 minutes.
    """

    step_ns: int = 100_000_000
    window_steps: int = 600  # 1 minute: realized vol, volume, return, correlation
    burst_steps: int = 10  # 1 second: micro-burst volatility
    activity_steps: int = 100  # 10 seconds: trade-to-order ratio
    corr_return_steps: int = 10  # cross-correlation uses returns over this many steps (1 s)
    corr_halflife_steps: int = 1_200  # ... averaged with this half-life (2 minutes)
    depth_levels: int = 5  # N of the top-N book imbalance
    large_trade_mult: float = 4.0  # a large trade is this many times the usual trade size
    trade_size_alpha: float = 0.02  # EWMA weight per trade of the usual trade size
    min_trades: int = 20  # trades seen before "large" means anything
    recovery_frac: float = 0.9  # depth counts as recovered at this fraction of pre-trade
    recovery_cap_s: float = 60.0  # a recovery still pending after this many seconds is capped
    news_halflife_s: float = 60.0
    vpin_buckets: int = 50
    vpin_bucket_steps: int = 600  # a bucket holds the expected volume of this many steps
    norm_halflife_steps: int = 18_000  # 30 minutes: the per-instrument baseline's half-life
    warmup_steps: int = 3_000  # 5 minutes
    z_clip: float = 8.0

    def __post_init__(self) -> None:
        if self.step_ns <= 0:
            raise ValueError("step_ns must be positive")
        for name in ("burst_steps", "activity_steps", "corr_return_steps"):
            if not 0 < getattr(self, name) <= self.window_steps:
                raise ValueError(f"{name} must be in 1..window_steps")
        if not self.depth_levels >= 1:
            raise ValueError("depth_levels must be at least 1")
        if (
            min(self.vpin_buckets, self.norm_halflife_steps, self.corr_halflife_steps) < 1
            or self.warmup_steps < 0
        ):
            raise ValueError("vpin_buckets and the half-lives must be >= 1, warmup_steps >= 0")

    def as_array(self) -> np.ndarray:
        """The parameters as a float array in field order, the form the compiled kernel takes."""
        return np.array([float(v) for v in asdict(self).values()], dtype=np.float64)


# Index of each FeatureConfig field in as_array(): the kernel reads parameters by these.
CFG_INDEX: dict[str, int] = {name: i for i, name in enumerate(FeatureConfig.__dataclass_fields__)}
