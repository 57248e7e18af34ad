"""Layer-2 backtest: lead times, equal-false-alarm matching, the look-ahead guard, the report."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest

from pretrade.backtest.anomaly import (
    Day,
    DayData,
    count_episodes,
    evaluate,
    event_outcomes,
    fit_thresholds,
    match_threshold,
)
from pretrade.backtest.folds import LookAheadError

S = 1_000_000_000
T0 = pd.Timestamp("2026-12-01 14:30:00").value


def _day(date_offset: int, vae: np.ndarray, scenario: str = "normal", stress=None, other=None,
         syms=("AAA", "BBB")) -> DayData:
    """A hand-built day: both instruments on a 1 s grid, the same signal values unless given."""
    n = len(vae)
    t = T0 + date_offset * 86_400 * S + np.arange(n) * S
    time = np.concatenate([t] * len(syms))
    sym = np.repeat(np.array(syms), n)
    base = np.ones(n * len(syms))
    sig = {"vae": np.tile(vae, len(syms)), "vpin": base.copy(), "spread_bps": base.copy(), "rv_1m": base.copy()}
    for k, v in (other or {}).items():
        sig[k] = v
    st = pd.DataFrame(stress or [], columns=["sym", "kind", "start", "peak", "end", "bottom_time", "bottom_price"])
    return DayData(Day("test", scenario, date_offset, n, str(pd.Timestamp(t[0]))), time, sym, sig, st,
                   pd.DataFrame({"time": t, "sym": syms[0], "mid": 100.0}))


def test_lead_time_on_a_hand_built_series():
    vae = np.zeros(600)
    vae[100] = 0.95  # before the crash start: not a detection
    vae[250:260] = 0.35  # first High Alert inside [start=200, bottom=300]
    vae[400] = 0.99  # after the bottom
    ts = lambda s: pd.Timestamp(T0 + s * S)  # noqa: E731
    st = [{"sym": "AAA", "kind": "flash-crash", "start": ts(200), "peak": ts(240), "end": ts(500),
           "bottom_time": ts(300), "bottom_price": 90.0}]
    d = _day(0, vae, "flash-crash", st)
    scores = {"vae": d.signals["vae"], "flat": np.where(d.time < T0 + 350 * S, 0.0, 9.0)}
    (ev,) = event_outcomes(d, scores, {"vae": 0.3, "flat": 1.0})
    assert ev["detectors"]["vae"]["before_bottom"]
    assert ev["detectors"]["vae"]["lead_s"] == pytest.approx(50.0)
    assert ev["detectors"]["vae"]["max_score"] == pytest.approx(0.35)
    assert not ev["detectors"]["flat"]["before_bottom"] and math.isnan(ev["detectors"]["flat"]["lead_s"])
    assert ev["detectors"]["flat"]["in_window"]  # alerted after the bottom, inside the stress window
    # strictly above: a score equal to the threshold is not an alert
    (ev,) = event_outcomes(d, scores, {"vae": 0.35, "flat": 9.0})
    assert not ev["detectors"]["vae"]["before_bottom"] and not ev["detectors"]["flat"]["in_window"]


def _spiky(spikes: list[tuple[int, float]], n: int = 3600, base: float = 0.0) -> np.ndarray:
    x = np.full(n, base)
    for at, v in spikes:
        x[at] = v
    return x


def test_equal_false_alarm_matching():
    vae = [_spiky([(100, 0.5)]), _spiky([(2000, 0.4)])]  # 2 instruments: 4 VAE episodes in all
    spread = [np.tile(_spiky([(10, 5.0), (500, 3.0), (900, 2.0), (1500, 4.0)], base=1.0), 2),
              np.tile(_spiky([(300, 6.0), (320, 6.5)], base=1.0), 2)]  # the 300/320 pair is one episode
    cal = [_day(k, v, other={"spread_bps": s}) for k, (v, s) in enumerate(zip(vae, spread, strict=True))]
    th = fit_thresholds(cal, [])
    assert th.target_episodes == 4
    assert th.reference["spread"] == {"AAA": 1.0, "BBB": 1.0}  # the calibration medians
    scores = [d.signals["spread_bps"] for d in cal]
    # the matched threshold: no more episodes than the VAE, and the next value down gives more
    thr = match_threshold(cal, [d.signals["spread_bps"] for d in cal], 4)
    assert count_episodes(cal, [d.signals["spread_bps"] for d in cal], thr) <= 4
    assert count_episodes(cal, [d.signals["spread_bps"] for d in cal], np.nextafter(thr, -np.inf)) > 4
    assert thr == pytest.approx(4.0)  # alerts above 4: the 5.0 spike and the 6/6.5 pair, on 2 instruments
    assert count_episodes(cal, scores, th.threshold["spread"]) == 4
    for det in ("vpin", "rv", "spread|rv"):  # flat signals never alarm: they match at their maximum
        assert th.threshold[det] >= 0


def test_thresholds_never_see_test_days():
    cal = [_day(k, np.zeros(600)) for k in range(2)]
    test = [_day(5, np.zeros(600)), _day(6, np.zeros(600))]
    fit_thresholds(cal, test)  # calibration strictly before the test days: fine
    with pytest.raises(LookAheadError):
        fit_thresholds([*cal, test[0]], test)  # a test day fed into calibration
    with pytest.raises(LookAheadError):
        fit_thresholds([_day(7, np.zeros(600))], test)  # a calibration day after the test days
    with pytest.raises(LookAheadError):
        fit_thresholds([_day(4, np.zeros(600))], test, embargo_ns=2 * 86_400 * S)  # inside the embargo
    with pytest.raises(LookAheadError):
        evaluate([*cal, test[1]], test)
    with pytest.raises(ValueError, match="normal"):
        fit_thresholds([_day(0, np.zeros(600), "flash-crash")], [])


def test_false_alarms_counted_on_normal_test_days_only():
    cal = [_day(0, np.zeros(3600))]
    normal = _day(2, _spiky([(100, 0.9), (130, 0.9), (1000, 0.5)]))  # 2 episodes per instrument
    ts = lambda s: pd.Timestamp(T0 + 3 * 86_400 * S + s * S)  # noqa: E731
    crash = _day(3, _spiky([(50, 0.9), (1250, 0.8)]), "flash-crash",
                 [{"sym": "BBB", "kind": "flash-crash", "start": ts(1200), "peak": ts(1230), "end": ts(1500),
                   "bottom_time": ts(1300), "bottom_price": 1.0}])
    ev = evaluate(cal, [normal, crash])
    fa = ev.false_alarms["vae"]
    assert fa["false_alarms"] == 4
    assert ev.normal_days == pytest.approx(3600 / 23_400, rel=1e-3)
    assert fa["per_day"] == pytest.approx(4 / ev.normal_days)
    assert fa["per_instrument_day"] == pytest.approx(fa["per_day"] / 2)
    (c,) = ev.crashes()
    assert c["detectors"]["vae"]["lead_s"] == pytest.approx(50.0)
    assert ev.summary()["vae"]["crashes_detected_before_bottom"] == 1


def test_report_from_simulated_days(tmp_path):
    """End to end on real simulated markets (2 instruments, short days): cache, evaluation, report."""
    from pretrade.backtest.anomaly import load_days, standard_days
    from pretrade.backtest.anomaly_report import write_report
    from pretrade.models.anomaly import AnomalyScorer

    scorer = AnomalyScorer("models/vae.onnx")
    syms = ["ESZ6", "GLOW"]
    cal, test = standard_days([601], [611], 600, 700, [{"sym": "GLOW", "severity": 0.04, "speed": 30.0, "at": 450.0}],
                              [("news-shock", {"at": 450.0, "sym": "ESZ6"})])
    cache = tmp_path / "cache"
    days = load_days(cal + test, scorer, syms, cache)
    assert len(list(cache.glob("*_rows.parquet"))) == 4
    again = load_days(cal + test, scorer, syms, cache)  # from the cache: the same data
    assert np.array_equal(days[2].signals["vae"], again[2].signals["vae"])
    ev = evaluate(days[:1], days[1:])
    assert [e["kind"] for e in ev.events] == ["flash-crash", "news-shock"]
    assert ev.thresholds.calibration_end_ns < days[1].time.min()
    path = write_report(ev, tmp_path / "rep", {"syms": syms})
    for f in ("anomaly.md", "anomaly.json", "anomaly_lead_times.png", "anomaly_recall_pr.png",
              "anomaly_crash_1.png"):
        assert (path.parent / f).stat().st_size > 0, f
    data = json.loads((path.parent / "anomaly.json").read_text())
    assert set(data["summary"]) == {"vae", "vae-budget", "vpin", "spread", "rv", "spread|rv"}
    assert data["summary"]["vae"]["crashes"] == 1


@pytest.mark.slow
def test_cli_writes_the_report(tmp_path):
    """The command end to end on the standard design, cut to 2 instruments (~30 s)."""
    from pretrade.backtest import anomaly_cli

    ap = argparse.ArgumentParser()
    anomaly_cli.add_arguments(ap)
    args = ap.parse_args(["--out", str(tmp_path / "rep"), "--syms", "ESZ6", "GLOW", "--cal-seeds", "601",
                          "--normal-seeds", "611", "--normal-duration", "900", "--stress-duration", "1500",
                          "--cache", str(tmp_path / "cache")])
    assert anomaly_cli.run(args) == 0
    rep = tmp_path / "rep"
    for f in ("anomaly.md", "anomaly.json", "anomaly_lead_times.png", "anomaly_recall_pr.png",
              "anomaly_crash_1.png"):
        assert (rep / f).stat().st_size > 0, f
    data = json.loads((rep / "anomaly.json").read_text())
    assert data["summary"]["vae"]["crashes"] == 2  # the ESZ6 and GLOW crashes of the standard design
    assert set(data["summary"]) == {"vae", "vae-budget", "vpin", "spread", "rv", "spread|rv"}
    text = (rep / "anomaly.md").read_text()
    assert "## Targets" in text and "![anomaly_crash_1.png](anomaly_crash_1.png)" in text
    assert len(list((tmp_path / "cache").glob("*_rows.parquet"))) == 6  # 2 normal + 2 crashes + 2 stress


def test_cli_refuses_a_missing_model(tmp_path):
    from pretrade.backtest import anomaly_cli

    ap = argparse.ArgumentParser()
    anomaly_cli.add_arguments(ap)
    assert anomaly_cli.run(ap.parse_args(["--model", str(tmp_path / "none.onnx"), "--no-cache"])) == 2
