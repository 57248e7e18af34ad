"""The static fat-finger limits every desk starts with: a max order size and a price collar.

Per instrument, a maximum order quantity; for all instruments, a collar in bps around the
touch. Both are tuned on the training folds only: the tightest limits that block at most a target
share of the training days' valid orders. They are the baseline the model must beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pretrade.models.order_features import FEATURES

_PX = FEATURES.index("px_vs_touch_bps")
_MID = FEATURES.index("px_vs_mid_log")


@dataclass(frozen=True)
class StaticLimits:
    """Max order quantity per instrument and a price collar (bps from the touch, and from the mid)."""

    max_qty: dict[str, float]
    collar_bps: float

    def flags(self, qty: np.ndarray, sym: np.ndarray, X: np.ndarray) -> np.ndarray:
        """True for orders the static limits block."""
        cap = np.array([self.max_qty.get(s, np.inf) for s in sym])
        dev = np.maximum(np.abs(X[:, _PX]), np.expm1(X[:, _MID]) * 1e4)
        return (np.asarray(qty) > cap) | (dev > self.collar_bps)

    def score(self, qty: np.ndarray, sym: np.ndarray, X: np.ndarray) -> np.ndarray:
        """A continuous breach score (max over the limits of value / limit), for PR curves."""
        cap = np.array([self.max_qty.get(s, np.inf) for s in sym])
        dev = np.maximum(np.abs(X[:, _PX]), np.expm1(X[:, _MID]) * 1e4)
        return np.maximum(np.asarray(qty) / cap, dev / self.collar_bps)


def tune_static_limits(qty: np.ndarray, sym: np.ndarray, X: np.ndarray, y: np.ndarray,
                       target_fpr: float = 0.0005) -> StaticLimits:
    """The tightest limits blocking at most ~target_fpr of the valid training orders (half each)."""
    valid = ~np.asarray(y, dtype=bool)
    q = 1 - target_fpr / 2
    max_qty = {}
    for s in np.unique(sym[valid]):
        v = np.asarray(qty)[valid & (sym == s)]
        max_qty[str(s)] = float(np.quantile(v, q, method="higher"))
    dev = np.maximum(np.abs(X[valid, _PX]), np.expm1(X[valid, _MID]) * 1e4)
    return StaticLimits(max_qty, float(np.quantile(dev, q, method="higher")))
