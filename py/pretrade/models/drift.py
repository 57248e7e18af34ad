"""Input drift: PSI and KS of live feature windows against a model's training reference.

The reference is written into the model card at training (`reference_from_data`): per feature,
bin edges at quantiles of the training rows and the training share of each bin, so drift needs
no training data at run time. Live, `DriftMonitor` keeps only histogram counts: every cycle adds
its rows to the current chunk; every `check_every` cycles the chunk joins a ring of chunks (the
rolling window) and PSI and KS are computed per feature from the window's counts.

KS here is computed on the bin edges (the largest gap between the two cumulative shares at an
edge): a lower bound of the exact two-sample statistic, exact at the edges, with no raw samples.

    python -m pretrade.models.drift models/vae.onnx   # add the reference to a committed card
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EPS = 1e-4  # share floor in PSI, so an empty bin gives a large but finite term
LEVELS = ("ok", "warn", "hard")


@dataclass(frozen=True)
class Reference:
    """Per-feature bins of the training data: inner edges (padded with +inf to a common width)
    and the training share of each bin (rows sum to 1)."""

    features: list[str]
    edges: np.ndarray   # (d, B-1) ascending inner edges; +inf pads unused ones
    probs: np.ndarray   # (d, B) training share per bin
    rows: int

    def to_dict(self) -> dict[str, Any]:
        """The card's `reference` field (JSON: padded edges are dropped, never written as inf)."""
        per = {}
        for j, f in enumerate(self.features):
            e = self.edges[j][np.isfinite(self.edges[j])]
            per[f] = {"edges": [float(x) for x in e],
                      "probs": [float(x) for x in self.probs[j][: len(e) + 1]]}
        return {"method": "quantile bins of the training rows (normalised model inputs)",
                "rows": self.rows, "features": per}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reference:
        """The Reference of a card's `reference` field; ValueError if it is malformed."""
        try:
            feats = list(d["features"])
            edges = [np.asarray(d["features"][f]["edges"], dtype=np.float64) for f in feats]
            probs = [np.asarray(d["features"][f]["probs"], dtype=np.float64) for f in feats]
            rows = int(d["rows"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"model card reference is malformed: {e!r}") from None
        if not feats:
            raise ValueError("model card reference lists no features")
        for f, e, p in zip(feats, edges, probs, strict=True):
            if len(p) != len(e) + 1 or np.any(np.diff(e) <= 0) or abs(p.sum() - 1) > 1e-6:
                raise ValueError(f"model card reference of {f} has bad edges or shares")
        width = max(len(e) for e in edges) + 1
        E = np.full((len(feats), width - 1), np.inf)
        P = np.zeros((len(feats), width))
        for j, (e, p) in enumerate(zip(edges, probs, strict=True)):
            E[j, : len(e)] = e
            P[j, : len(p)] = p
        return cls(feats, E, P, rows)


def bin_counts(edges: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Counts (d, B) of rows X (n, d) in each feature's bins: bin k holds edges[k-1] < x <= edges[k].
    NaN counts as 0, as the model sees it."""
    X = np.nan_to_num(np.asarray(X, dtype=np.float64), nan=0.0)
    d, width = edges.shape[0], edges.shape[1] + 1
    idx = (X[:, :, None] > edges[None, :, :]).sum(axis=2)  # (n, d) bin of each value
    flat = idx + np.arange(d) * width
    return np.bincount(flat.ravel(), minlength=d * width).reshape(d, width)


def reference_from_data(X: np.ndarray, features: list[str], bins: int = 20) -> Reference:
    """The training reference of rows X (n, d): edges at the 1/bins quantiles (ties merged, so a
    feature with point masses gets fewer bins) and the rows' share in each bin."""
    X = np.nan_to_num(np.asarray(X, dtype=np.float64), nan=0.0)
    if X.ndim != 2 or X.shape[1] != len(features) or len(X) < 10 * bins:
        raise ValueError(f"reference needs (n >= {10 * bins}, {len(features)}) rows, got {X.shape}")
    qs = np.quantile(X, np.linspace(0, 1, bins + 1)[1:-1], axis=0, method="lower").T  # data values
    E = np.full((len(features), bins - 1), np.inf)
    for j in range(len(features)):
        u = np.unique(qs[j])
        u = u[u < X[:, j].max()]  # an edge at the maximum would leave an empty top bin
        E[j, : len(u)] = u
    counts = bin_counts(E, X)
    return Reference(list(features), E, counts / len(X), len(X))


def psi(ref_probs: np.ndarray, live_counts: np.ndarray) -> np.ndarray:
    """Population stability index per feature: sum (live - ref) * ln(live / ref) over bins."""
    p = np.maximum(np.asarray(ref_probs, dtype=np.float64), EPS)
    c = np.asarray(live_counts, dtype=np.float64)
    q = np.maximum(c / np.maximum(c.sum(axis=-1, keepdims=True), 1), EPS)
    used = (np.asarray(ref_probs) > 0) | (c > 0)
    return np.where(used, (q - p) * np.log(q / p), 0.0).sum(axis=-1)


def ks(ref_probs: np.ndarray, live_counts: np.ndarray) -> np.ndarray:
    """Kolmogorov-Smirnov statistic per feature at the bin edges: max |F_ref - F_live|."""
    c = np.asarray(live_counts, dtype=np.float64)
    q = c / np.maximum(c.sum(axis=-1, keepdims=True), 1)
    return np.abs(np.cumsum(ref_probs, axis=-1) - np.cumsum(q, axis=-1)).max(axis=-1)


@dataclass(frozen=True)
class DriftConfig:
    """Window, cadence and thresholds (a feature is past a level if its PSI or its KS is).

    Set from measured days (scripts/bench_drift.py, docs/models.md): the model's inputs are
    autocorrelated and some have point masses, so on a held-out normal day a 30-minute window's
    PSI reaches 2.4 (vpin) and its KS 0.41; the customary PSI levels (0.1 / 0.25) would fire all
    day. KS, bounded and insensitive to empty bins, carries the verdict; PSI only past levels no
    normal window reached. A verdict waits for half a window of data."""

    window_s: float = 1800.0     # rolling window of event time
    check_s: float = 5.0         # a check (and a chunk of the window) every this many seconds
    min_fill: float = 0.5        # no verdict before this share of the window has passed
    min_rows: int = 1_000        # ... nor on fewer rows (instrument-cycles) in the window
    psi_warn: float = 3.0
    psi_hard: float = 6.0
    ks_warn: float = 0.45
    ks_hard: float = 0.55

    def checks(self, step_ns: int) -> tuple[int, int]:
        """(cycles per check, chunks in the window) for an engine stepping step_ns."""
        every = max(1, round(self.check_s * 1e9 / step_ns))
        return every, max(1, round(self.window_s / self.check_s))


@dataclass(frozen=True)
class DriftReport:
    """One check: PSI and KS per feature over the window, each feature's level, the worst level."""

    features: list[str]
    psi: np.ndarray
    ks: np.ndarray
    level: np.ndarray   # per feature: 0 ok, 1 warn, 2 hard
    rows: int

    @property
    def worst(self) -> str:
        return LEVELS[int(self.level.max())] if len(self.level) and self.rows else "ok"

    def drifting(self, at_least: int = 1) -> list[str]:
        """Features at `at_least` (1 warn, 2 hard) or worse, worst first, with their figures."""
        idx = [j for j in np.argsort(-self.psi) if self.level[j] >= at_least]
        return [f"{self.features[j]} PSI {self.psi[j]:.2f} KS {self.ks[j]:.2f}" for j in idx]

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "worst": self.worst,
                "features": {f: {"psi": float(self.psi[j]), "ks": float(self.ks[j]),
                                 "level": LEVELS[int(self.level[j])]}
                             for j, f in enumerate(self.features)}}


@dataclass
class DriftMonitor:
    """Rolling histogram counts of live model inputs against a Reference; no raw samples kept."""

    ref: Reference
    config: DriftConfig = field(default_factory=DriftConfig)
    step_ns: int = 100_000_000

    def __post_init__(self) -> None:
        self.check_every, chunks = self.config.checks(self.step_ns)
        shape = self.ref.probs.shape
        self.ring = np.zeros((chunks, *shape), dtype=np.int64)
        self.total = np.zeros(shape, dtype=np.int64)
        self.chunk = np.zeros(shape, dtype=np.int64)
        self.slot = 0
        self.filled = 0  # chunks rolled in since the window was last emptied
        self.cycles = 0
        self.last: DriftReport | None = None

    def add(self, X: np.ndarray) -> DriftReport | None:
        """One cycle's rows (n, d) of the reference's features; a report when a check is due."""
        if len(X):
            self.chunk += bin_counts(self.ref.edges, X)
        self.cycles += 1
        return self.check() if self.cycles % self.check_every == 0 else None

    def check(self) -> DriftReport:
        """Roll the current chunk into the window and judge the window."""
        self.total += self.chunk - self.ring[self.slot]
        self.ring[self.slot] = self.chunk
        self.slot = (self.slot + 1) % len(self.ring)
        self.filled = min(self.filled + 1, len(self.ring))
        self.chunk = np.zeros_like(self.chunk)
        rows = int(self.total[0].sum())
        c = self.config
        p, k = psi(self.ref.probs, self.total), ks(self.ref.probs, self.total)
        level = np.zeros(len(p), dtype=np.int8)
        if rows >= c.min_rows and self.filled >= c.min_fill * len(self.ring):
            level[(p > c.psi_warn) | (k > c.ks_warn)] = 1
            level[(p > c.psi_hard) | (k > c.ks_hard)] = 2
        self.last = DriftReport(self.ref.features, p, k, level, rows)
        return self.last

    def reset(self) -> None:
        """Empty the window (after a person re-approves the model, a fresh window must fill)."""
        self.ring[:] = 0
        self.total[:] = 0
        self.chunk[:] = 0
        self.filled = 0


def add_reference(artifact: str | Path, X: np.ndarray, bins: int = 20) -> dict[str, Any]:
    """Write the reference of training rows X into an artifact's card (artifact unchanged)."""
    import json

    from pretrade.models.card import card_path

    path = card_path(artifact)
    card = json.loads(path.read_text())
    card["reference"] = reference_from_data(X, list(card["features"]), bins).to_dict()
    path.write_text(json.dumps(card, indent=2, sort_keys=False, default=str) + "\n")
    return card


def _backfill(artifact: Path) -> int:
    """Recompute the VAE's training rows from its card (same seeds, the trainer's own code),
    check them against the card's data hash, and write the reference."""
    import hashlib
    import json

    from pretrade.models.card import card_path
    from pretrade.models.train_vae import _matrix, simulated_features

    card = json.loads(card_path(artifact).read_text())
    td = card["training_data"]
    parts = [_matrix(simulated_features(td["scenario"], s, td["seconds"], every=td["every_steps"])[0],
                     card["features"]) for s in td["seeds"]]
    X = np.vstack(parts)
    digest = hashlib.sha256(X.tobytes()).hexdigest()
    if digest != td["sha256"]:
        log.error("recomputed training rows differ from the card's (%s != %s): not written",
                  digest[:12], td["sha256"][:12])
        return 1
    add_reference(artifact, X)
    log.info("reference of %d training rows (hash %s, as the card's) written to %s",
             len(X), digest[:12], card_path(artifact))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m pretrade.models.drift",
                                 description="add the training reference to a VAE card, from the "
                                             "same simulated days the card names")
    ap.add_argument("artifact", type=Path, help="the model, e.g. models/vae.onnx")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raise SystemExit(_backfill(ap.parse_args().artifact))
