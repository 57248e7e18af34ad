"""Walk-forward evaluation of the fat-finger model against static limits, on held-out days.

Simulated days (seeds never used to train the shipped model) are laid end to end, one calendar
day apart, after a history of earlier days (the training and calibration days the shipped
model is trained on, which every fold may train on and none is tested on); one desk trades
them all and its history carries from day to day. Each fold retrains the model on everything
before its test window (minus an embargo), calibrates and sets its block threshold on
out-of-fold margins of that training data (pretrade.models.fatfinger.fit_calibrated), tunes
the static limits on the same training data, and scores the test window. The out-of-fold
predictions of all folds give the report's figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pretrade.backtest.baseline import StaticLimits, tune_static_limits
from pretrade.backtest.folds import walk_forward
from pretrade.backtest.metrics import classification_report
from pretrade.models.fatfinger import (
    OrderSet,
    calibrate,
    fit_calibrated,
    margins,
)

log = logging.getLogger(__name__)


@dataclass
class WalkForwardResult:
    """Out-of-fold scores and decisions of the model and of the static limits, with per-fold detail."""

    data: OrderSet
    test_idx: np.ndarray
    p_model: np.ndarray
    flag_model: np.ndarray
    s_static: np.ndarray
    flag_static: np.ndarray
    folds: list[dict[str, Any]] = field(default_factory=list)
    served: dict[str, Any] | None = None

    def report(self, which: str) -> dict[str, Any]:
        """Metrics over all test rows for 'model', 'static' (as tuned), 'static_matched' (the
        static limits scaled to block as many valid orders as the model: a like-for-like recall)
        or 'layered' (the model and the scaled static limits together: either one blocks)."""
        d = self.data.take(self.test_idx)
        if which == "model":
            p, f = self.p_model, self.flag_model
        elif which == "static":
            p, f = self.s_static, self.flag_static
        else:
            n_fp = int((self.flag_model & (d.y == 0)).sum())
            valid = np.sort(self.s_static[d.y == 0])[::-1]
            cut = np.nextafter(valid[n_fp], np.inf) if n_fp < len(valid) else -np.inf
            p, f = self.s_static, self.s_static >= cut
            if which == "layered":
                p, f = np.maximum(self.p_model, np.minimum(1.0, self.s_static / cut * 0.5)), f | self.flag_model
        return classification_report(d.y.astype(bool), p, f, d.kind, d.gross, d.time)


def run_walk_forward(data: OrderSet, n_folds: int = 3, embargo_s: float = 600.0, seed: int = 0,
                     min_train: float = 0.34, history: OrderSet | None = None,
                     fit_only_days: tuple[int, ...] = ()) -> WalkForwardResult:
    """Retrain-and-test over chronological folds; model vs static limits on every test window.

    The first `min_train` of `data` only trains. `history` (optional, all earlier than `data`) is
    prepended: every fold trains on it, none tests on it (the guard refuses a history that is not
    earlier). The result's `data` is then history + data. `fit_only_days`: days (seeds) simulated
    with a richer error rate than the test days; they train but do not calibrate."""
    if history is not None and len(history):
        n_hist = len(history)
        data = OrderSet.concat([history, data])
        min_train = (n_hist + 0.5 + min_train * (len(data) - n_hist)) / len(data)  # +0.5: no float slip into history
    test_all, p_all, f_all, s_all, fs_all, folds = [], [], [], [], [], []
    for fold in walk_forward(data.time, n_folds, int(embargo_s * 1e9), min_train):
        tr = data.take(fold.train)
        fitted = fit_calibrated(tr, seed, platt_rows=~np.isin(tr.day, fit_only_days))
        platt, thr = fitted.platt, fitted.margin_threshold
        m_test = margins(fitted.clf, data.X[fold.test])
        p = calibrate(m_test, platt)
        limits: StaticLimits = tune_static_limits(data.qty[fold.train], data.sym[fold.train],
                                                  data.X[fold.train], data.y[fold.train])
        te = data.take(fold.test)
        s = limits.score(te.qty, te.sym, te.X)
        fs = limits.flags(te.qty, te.sym, te.X)
        m = classification_report(te.y.astype(bool), p, m_test >= thr, te.kind, te.gross, te.time)
        b = classification_report(te.y.astype(bool), s, fs, te.kind, te.gross, te.time)
        folds.append({"fold": fold.k, "train_orders": len(fold.train), "test_orders": len(fold.test),
                      "train_end": str(pd.Timestamp(int(data.time[fold.train].max()))),
                      "test_start": str(pd.Timestamp(int(te.time.min()))),
                      "threshold": float(calibrate(np.array([thr]), platt)[0]), "margin_threshold": thr,
                      "collar_bps": limits.collar_bps, "model": m, "static": b})
        log.info("fold %d: train %d, test %d; model recall gross %.3f subtle %.3f fpr %.5f; "
                 "static recall gross %.3f subtle %.3f fpr %.5f", fold.k, len(fold.train), len(fold.test),
                 m["recall_gross"], m["recall_subtle"], m["fpr"], b["recall_gross"], b["recall_subtle"], b["fpr"])
        test_all.append(fold.test)
        p_all.append(p)
        f_all.append(m_test >= thr)
        s_all.append(s)
        fs_all.append(fs)
    if not folds:
        raise ValueError("no folds: too few orders for the walk-forward")
    return WalkForwardResult(data, np.concatenate(test_all), np.concatenate(p_all), np.concatenate(f_all),
                             np.concatenate(s_all), np.concatenate(fs_all), folds)


def score_served(result: WalkForwardResult, model_path: str | Path) -> dict[str, Any]:
    """Metrics of the shipped ONNX model (trained on other seeds) on every test window."""
    from pretrade.models.fatfinger import FatFingerModel

    model = FatFingerModel(model_path)
    d = result.data.take(result.test_idx)
    p, flags = model.score(d.X)
    rep = classification_report(d.y.astype(bool), p, flags, d.kind, d.gross, d.time)
    return {"version": model.version, "threshold": model.threshold, "p": p, **rep}
