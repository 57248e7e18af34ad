"""Feature selection: stress labels on feature rows, and the MI / RFE report on simulated runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pretrade.features import FEATURES
from pretrade.features.selection import label_rows, markdown, select, simulated_dataset


def test_rows_inside_their_instruments_stress_window_are_positive():
    t = pd.to_datetime(["2026-11-20 14:30:00", "2026-11-20 14:31:00", "2026-11-20 14:32:00"] * 2)
    frame = pd.DataFrame({"time": t, "sym": ["A"] * 3 + ["B"] * 3})
    stress = pd.DataFrame(
        {
            "sym": ["A"],
            "start": [pd.Timestamp("2026-11-20 14:30:30")],
            "end": [pd.Timestamp("2026-11-20 14:31:00")],
        }
    )
    assert label_rows(frame, stress).tolist() == [0, 1, 0, 0, 0, 0]


# With three runs, one cross-validation fold holds only the normal run: no positives to score.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:No positive class found")
def test_selection_scores_every_feature_and_reports_them():
    data = simulated_dataset(
        ("normal", "flash-crash", "liquidity-drought"),
        seeds=(1,),
        duration=900,
        syms=["ESZ6", "ACME", "GLOW"],
        every=5,
    )
    assert data.X.shape[1] == len(FEATURES)
    assert 0 < data.y.sum() < len(data.y)
    table = select(data, max_rows=5_000)
    assert sorted(table["feature"]) == sorted(FEATURES)
    assert table["kept"].any()
    assert (table.loc[table["kept"], "rfe_rank"] == 1).all()
    assert (table["mutual_information"] >= 0).all()
    text = markdown(table, data.runs, "test")
    for f in FEATURES:
        assert f"| {f} |" in text
    assert np.isfinite(table.attrs["cv_average_precision"])
