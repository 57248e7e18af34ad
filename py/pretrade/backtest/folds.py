"""Chronological walk-forward folds with an embargo, and the guard that refuses look-ahead.

Fold k trains on everything before its test window (expanding window: retrain each fold), leaves
an embargo gap, then tests on the window. `check_no_lookahead` is called on every fold: if any
training row is not strictly earlier than every test row minus the embargo it raises, so a
shuffled or mis-sorted history cannot silently leak the future into training.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


class LookAheadError(ValueError):
    """A training row is not older than every test row by at least the embargo."""


@dataclass(frozen=True)
class Fold:
    """Row indexes of one fold's training and test sets."""

    k: int
    train: np.ndarray
    test: np.ndarray


def check_no_lookahead(train_times: np.ndarray, test_times: np.ndarray, embargo_ns: int) -> None:
    """Raise LookAheadError unless max(train time) < min(test time) - embargo."""
    if len(train_times) == 0 or len(test_times) == 0:
        return
    latest, earliest = int(np.max(train_times)), int(np.min(test_times))
    if not latest < earliest - embargo_ns:
        raise LookAheadError(f"look-ahead: a training row at {latest} ns is not older than the first "
                             f"test row at {earliest} ns minus the embargo ({embargo_ns} ns)")


def walk_forward(times: np.ndarray, n_folds: int, embargo_ns: int, min_train: float = 0.3) -> Iterator[Fold]:
    """Expanding-window folds over rows with int64 ns `times` (in the order given, not re-sorted).

    The span after the first `min_train` of the rows is cut into `n_folds` equal test windows by
    time; fold k trains on the rows before window k minus the embargo. The rows must already be
    in time order: the guard raises LookAheadError on a history that is not.
    """
    t = np.asarray(times, dtype=np.int64)
    if n_folds < 1 or not 0 < min_train < 1:
        raise ValueError("n_folds must be >= 1 and min_train in (0, 1)")
    if np.any(np.diff(t) < 0):
        k = int(np.argmax(np.diff(t) < 0))
        raise LookAheadError(f"rows are not in time order (row {k + 1} is earlier than row {k}): "
                             "folds over them would train on the future")
    n = len(t)
    first_test = int(n * min_train)
    bounds = np.linspace(first_test, n, n_folds + 1).astype(int)
    for k in range(n_folds):
        test = np.arange(bounds[k], bounds[k + 1])
        if len(test) == 0:
            continue
        t_test0 = t[bounds[k]]
        train = np.arange(0, bounds[k])
        train = train[t[train] < t_test0 - embargo_ns]
        check_no_lookahead(t[train], t[test], embargo_ns)
        yield Fold(k, train, test)
