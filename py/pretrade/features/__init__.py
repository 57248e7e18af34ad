"""Microstructure features per instrument on a 100 ms event-time grid: one implementation, batch and live.

FeatureEngine is the streaming form (update ticks, snapshot every 100 ms); compute_features drives
the same engine over history. FEATURES lists the features in the order of every output.
"""

from pretrade.features.batch import compute_features, grid_for
from pretrade.features.engine import FeatureEngine, FeatureSnapshot
from pretrade.features.spec import FEATURE_DOCS, FEATURES, FeatureConfig

__all__ = [
    "FEATURES",
    "FEATURE_DOCS",
    "FeatureConfig",
    "FeatureEngine",
    "FeatureSnapshot",
    "compute_features",
    "grid_for",
]
