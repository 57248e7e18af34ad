"""Features over history (a simulated day, or a day from the HDB): the streaming engine, driven in time order.

There is no second implementation here: the ticks go into a FeatureEngine and it is stepped over
the 100 ms grid, exactly as the live engine is, only many steps per call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from pretrade.features.engine import TABLES, FeatureEngine, _frame, _times
from pretrade.features.spec import FEATURES, N_FEATURES, FeatureConfig

log = logging.getLogger(__name__)
# news_sentiment is defined (0 without news) from an instrument's first tick on: it marks rows to keep.
_STARTED_MARK = FEATURES.index("news_sentiment")


def grid_for(tables: Mapping[str, Any], step_ns: int) -> np.ndarray:
    """The grid (int64 ns) covering the ticks: multiples of step_ns from the first tick to the last."""
    lo, hi = None, None
    for name in TABLES:
        rows = tables.get(name)
        if rows is None or len(rows) == 0:
            continue
        t = _times(rows)
        lo = int(t.min()) if lo is None else min(lo, int(t.min()))
        hi = int(t.max()) if hi is None else max(hi, int(t.max()))
    if lo is None:
        return np.empty(0, dtype=np.int64)
    first = -(-lo // step_ns) * step_ns
    last = -(-hi // step_ns) * step_ns
    return np.arange(first, last + 1, step_ns, dtype=np.int64)


def compute_features(
    tables: Mapping[str, Any],
    config: FeatureConfig | None = None,
    grid: np.ndarray | None = None,
    block_steps: int = 6_000,
):
    """Features of every instrument at every grid step, as a long DataFrame.

    tables maps table names (trade, quote, book, l3, news; others are ignored) to DataFrames in
    the schema's columns. Columns: time, sym, ready, the raw features, then z_<feature> (the
    normalised ones). Rows before an instrument's first tick are left out.
    """
    import pandas as pd

    config = config or FeatureConfig()
    grid = grid_for(tables, config.step_ns) if grid is None else np.asarray(grid, dtype=np.int64)
    engine = FeatureEngine(config)
    for name in TABLES:
        rows = tables.get(name)
        if rows is not None and len(rows):
            engine.update(name, rows)
    frames = []
    for start in range(0, len(grid), block_steps):
        block = grid[start : start + block_steps]
        raw, z, ready = engine.run(block)
        n = raw.shape[1]
        keep = ~np.isnan(raw[:, :, _STARTED_MARK])
        tt, ii = np.nonzero(keep)
        frames.append(
            _frame(
                block[tt].astype("datetime64[ns]"),
                np.asarray(engine.syms[:n], dtype=object)[ii],
                raw[tt, ii],
                z[tt, ii],
                ready[tt, ii],
            )
        )
    if engine.rejected_ticks:
        log.info(
            "%d unusable ticks skipped (crossed or empty quotes, trades without price or size, ...)",
            engine.rejected_ticks,
        )
    if not frames:
        return _frame(
            np.array([], dtype="datetime64[ns]"),
            np.array([], dtype=object),
            np.empty((0, N_FEATURES)),
            np.empty((0, N_FEATURES)),
            np.array([], dtype=bool),
        )
    return pd.concat(frames, ignore_index=True)
