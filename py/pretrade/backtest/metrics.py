"""Metrics that matter to risk: valid orders blocked, errors missed, per error kind, lead times.

Functions take arrays and return plain dicts/floats so the reports, the model cards and the
tests share them. `detection_lead_time` is generic: any score series against any event time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DAY_NS = 86_400 * 1_000_000_000


def _rate(num: int, den: int) -> float:
    return num / den if den else math.nan


def pr_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision); NaN without positives."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, dtype=bool)
    return float(average_precision_score(y, score)) if y.any() and not y.all() else math.nan


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve; NaN unless both classes are present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=bool)
    return float(roc_auc_score(y, score)) if y.any() and not y.all() else math.nan


def classification_report(y: np.ndarray, score: np.ndarray, flagged: np.ndarray, kind: np.ndarray,
                          gross: np.ndarray, times: np.ndarray, trading_days: float | None = None) -> dict[str, Any]:
    """Blocked-valid and missed-error rates, precision/recall, PR-AUC, and recall per kind and class.

    y: True for erroneous orders; score: higher means more likely an error; flagged: the decision;
    kind: error kind ("" for valid); gross: True for gross errors; times: int64 ns (for per-day
    rates; `trading_days` overrides the count of distinct days present).
    """
    y, flagged = np.asarray(y, dtype=bool), np.asarray(flagged, dtype=bool)
    kind, gross = np.asarray(kind).astype(str), np.asarray(gross, dtype=bool)
    valid = ~y
    tp, fp = int((flagged & y).sum()), int((flagged & valid).sum())
    fn = int((~flagged & y).sum())
    days = trading_days or max(1, len(np.unique(np.asarray(times, dtype=np.int64) // DAY_NS)))
    subtle = y & ~gross
    out: dict[str, Any] = {
        "orders": int(len(y)), "errors": int(y.sum()), "valid": int(valid.sum()),
        "valid_flagged": fp, "fpr": _rate(fp, int(valid.sum())), "false_alarms_per_day": fp / days,
        "errors_missed": fn, "fnr": _rate(fn, int(y.sum())),
        "precision": _rate(tp, tp + fp), "recall": _rate(tp, int(y.sum())),
        "pr_auc": pr_auc(y, score), "roc_auc": roc_auc(y, score),
        "gross": int(gross.sum()), "recall_gross": _rate(int((flagged & gross).sum()), int(gross.sum())),
        "subtle": int(subtle.sum()), "recall_subtle": _rate(int((flagged & subtle).sum()), int(subtle.sum())),
        "recall_by_kind": {},
    }
    for k in sorted(set(kind[y])):
        sel = kind == k
        out["recall_by_kind"][k] = {"errors": int(sel.sum()), "caught": int((flagged & sel).sum()),
                                    "recall": _rate(int((flagged & sel).sum()), int(sel.sum()))}
    return out


def detection_lead_time(times: np.ndarray, score: np.ndarray, threshold: float,
                        start: int, bottom: int) -> float:
    """Seconds before `bottom` that `score` first reached `threshold` within [start, bottom].

    times are int64 ns (sorted), start and bottom int64 ns (the event's start and its price
    bottom). NaN when the score did not reach the threshold before the bottom (a miss).
    """
    t = np.asarray(times, dtype=np.int64)
    sel = (t >= start) & (t <= bottom) & (np.asarray(score) >= threshold)
    if not sel.any():
        return math.nan
    return (bottom - int(t[sel][0])) / 1e9
