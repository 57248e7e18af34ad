"""Layer-2 walk-forward evaluation: the VAE anomaly tiers against VPIN and static thresholds.

Simulated days sit on a calendar: calibration days (normal markets) first, then held-out test
days (normal days, flash crashes of varied severity / speed / timing / instrument, and the other
stress scenarios), none of them a seed the VAE was trained or calibrated on. On the calibration
days only (the look-ahead guard refuses anything else) each baseline gets its per-instrument
reference (the median of its signal) and its threshold: the lowest one giving no more false alarm
episodes than the VAE's High Alert tier gives on the same days, so every detector is compared at
the same false-alarm rate. The test days then measure detection before each crash's price bottom,
lead times, false High Alerts per normal day and recall per scenario kind.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pretrade.backtest.folds import check_no_lookahead
from pretrade.backtest.metrics import detection_lead_time, pr_auc, roc_auc
from pretrade.models.anomaly import TIER_SCORES
from pretrade.models.train_vae import alert_episodes

log = logging.getLogger(__name__)

TRADING_DAY_S = 23_400  # one 6.5 h session: false alarms are counted per such day
EPISODE_GAP_NS = 60_000_000_000  # alerting rows less than a minute apart are one alarm
HIGH_ALERT = TIER_SCORES[1]  # VAE score strictly above this is High Alert or worse
# detector -> (what it is, the raw signal(s) it reads)
DETECTORS: dict[str, str] = {
    "vae": "VAE anomaly score, High Alert tier (the shipped model card's threshold)",
    "vae-budget": "VAE anomaly score, its threshold re-set on the calibration days to the lowest with at most "
                  "one false alarm per market day (a walk-forward recalibration, not the shipped tiers)",
    "vpin": "VPIN over its instrument's calibration median",
    "spread": "bid-ask spread (bps) over its instrument's calibration median",
    "rv": "1-minute realized volatility over its instrument's calibration median",
    "spread|rv": "spread or realized volatility: max of the two ratios, each over its own threshold",
}
_RAW = {"vpin": "vpin", "spread": "spread_bps", "rv": "rv_1m"}


@dataclass(frozen=True)
class Day:
    """One simulated run: its role, scenario, seed, length (s), calendar start and parameters."""

    role: str  # "calibration" or "test"
    scenario: str
    seed: int
    duration: int
    start: str
    params: tuple[tuple[str, Any], ...] = ()

    def name(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.scenario} seed {self.seed}" + (f" ({p})" if p else "")

    def key(self, syms: Iterable[str]) -> str:
        """Cache key: everything that determines the simulated data (not the role)."""
        text = repr((self.scenario, self.seed, self.duration, self.start, self.params, tuple(syms)))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class DayData:
    """A day's ready feature rows reduced to what the detectors read, plus ground truth."""

    day: Day
    time: np.ndarray  # int64 ns, grouped by sym, time-ordered within a sym
    sym: np.ndarray  # str
    signals: dict[str, np.ndarray]  # "vae" score and the raw baseline signals
    stress: pd.DataFrame  # sym, kind, start, peak, end, bottom_time, bottom_price
    prices: pd.DataFrame  # time, sym, mid of the stressed instruments (for plots)
    groups: list[np.ndarray] = field(default_factory=list)  # row indexes per sym

    def __post_init__(self) -> None:
        if not self.groups:
            order = np.argsort(self.sym, kind="stable")
            bounds = np.flatnonzero(self.sym[order][1:] != self.sym[order][:-1]) + 1
            self.groups = [g for g in np.split(order, bounds) if len(g)]

    def spans(self) -> tuple[float, float]:
        """(market days, instrument days) of ready data, in 6.5 h trading days."""
        secs = [(self.time[g[-1]] - self.time[g[0]]) / 1e9 + 0.1 for g in self.groups]
        return float(np.mean(secs)) / TRADING_DAY_S, float(np.sum(secs)) / TRADING_DAY_S


# ---- data ----------------------------------------------------------------------------------------
def simulate_day(day: Day, scorer, syms: list[str], cache: Path | None = None) -> DayData:
    """Simulate a day, compute its features, score them with the VAE; cached per (scenario, seed, params)."""
    key = day.key([*syms, scorer.version])
    files = [cache / f"{key}_{part}.parquet" for part in ("rows", "stress", "prices")] if cache else []
    if files and all(f.exists() for f in files):
        rows, stress, prices = (pd.read_parquet(f) for f in files)
    else:
        from pretrade.features.batch import compute_features
        from pretrade.market.simulator import simulate

        res = simulate(day.scenario, seed=day.seed, syms=syms, duration=day.duration,
                       start=day.start, **dict(day.params))
        df = compute_features(res.frames)
        df = df[df["ready"]].sort_values(["sym", "time"], kind="stable").reset_index(drop=True)
        vae = scorer.score(df[["z_" + f for f in scorer.features]].to_numpy(np.float32)).score
        rows = pd.DataFrame({"time": df["time"].to_numpy().view(np.int64), "sym": df["sym"].astype(str),
                             "vae": vae, **{c: df[c].to_numpy(np.float64) for c in _RAW.values()}})
        stress = res.labels["stress"]
        q = res.frames["quote"]
        q = q[q["sym"].isin(set(stress["sym"]))]
        prices = pd.DataFrame({"time": q["time"].to_numpy().astype("datetime64[ns]").view(np.int64),
                               "sym": q["sym"].astype(str), "mid": ((q["bid"] + q["ask"]) / 2).to_numpy()})
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            for part, f in zip((rows, stress, prices), files, strict=True):
                part.to_parquet(f, index=False)
    if rows.empty:
        raise ValueError(f"{day.name()}: no ready feature rows (is the day longer than the warm-up?)")
    signals = {c: np.nan_to_num(rows[c].to_numpy(np.float64), nan=0.0) for c in ("vae", *_RAW.values())}
    return DayData(day, rows["time"].to_numpy(np.int64), rows["sym"].to_numpy(str), signals,
                   stress, prices)


# ---- thresholds, set on calibration days only ----------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """Per-instrument references and per-detector thresholds, all from the calibration days."""

    reference: dict[str, dict[str, float]]  # baseline -> sym -> median raw signal
    threshold: dict[str, float]  # detector -> alert when its score is strictly above this
    target_episodes: int  # the VAE's false High Alert episodes on the calibration days
    calibration_days: float  # market days of calibration data
    calibration_end_ns: int


def detector_scores(d: DayData, th: Thresholds) -> dict[str, np.ndarray]:
    """Every detector's score per row of a day: alert when the score is above its threshold."""
    out = {"vae": d.signals["vae"], "vae-budget": d.signals["vae"]}
    for det, raw in _RAW.items():
        ref = th.reference[det]
        missing = sorted(set(np.unique(d.sym)) - set(ref))
        if missing:
            raise ValueError(f"{d.day.name()}: instruments {missing} have no calibration reference")
        den = np.empty(len(d.sym))
        for g in d.groups:
            den[g] = ref[d.sym[g[0]]]
        out[det] = d.signals[raw] / den
    if "spread" in th.threshold and "rv" in th.threshold:
        out["spread|rv"] = np.maximum(out["spread"] / th.threshold["spread"], out["rv"] / th.threshold["rv"])
    return out


def count_episodes(days: list[DayData], scores: list[np.ndarray], threshold: float) -> int:
    """False alarm episodes (per instrument, merged within a minute) where score > threshold."""
    n = 0
    for d, s in zip(days, scores, strict=True):
        alert = s > threshold
        if not alert.any():
            continue
        for g in d.groups:
            n += alert_episodes(d.time[g], alert[g], EPISODE_GAP_NS)
    return n


def match_threshold(days: list[DayData], scores: list[np.ndarray], max_episodes: int) -> float:
    """The lowest threshold (bisection over the observed values) with at most max_episodes alarms."""
    values = np.unique(np.concatenate(scores))
    lo, hi = 0, len(values) - 1  # count at values[hi] (the maximum) is 0
    while lo < hi:
        mid = (lo + hi) // 2
        if count_episodes(days, scores, values[mid]) <= max_episodes:
            hi = mid
        else:
            lo = mid + 1
    return float(values[hi])


def fit_thresholds(cal: list[DayData], test: list[DayData], embargo_ns: int = 0,
                   budget_per_day: float = 1.0) -> Thresholds:
    """References and equal-false-alarm thresholds from normal calibration days that all end
    (plus the embargo) before the first test row; raises LookAheadError otherwise."""
    if not cal:
        raise ValueError("no calibration days")
    bad = [d.day.name() for d in cal if d.day.scenario != "normal"]
    if bad:
        raise ValueError(f"calibration days must be normal markets, not {bad}")
    cal_t = np.concatenate([d.time for d in cal])
    if test:
        check_no_lookahead(cal_t, np.concatenate([d.time for d in test]), embargo_ns)
    reference: dict[str, dict[str, float]] = {}
    for det, raw in _RAW.items():
        v = pd.DataFrame({"sym": np.concatenate([d.sym for d in cal]),
                          "x": np.concatenate([d.signals[raw] for d in cal])})
        med = v.groupby("sym")["x"].median()
        reference[det] = {str(s): max(float(m), 1e-12) for s, m in med.items()}
    target = count_episodes(cal, [d.signals["vae"] for d in cal], HIGH_ALERT)
    threshold = {"vae": HIGH_ALERT}
    partial = Thresholds(reference, threshold, target, 0.0, 0)
    for det in ("vpin", "spread", "rv"):
        threshold[det] = match_threshold(cal, [detector_scores(d, partial)[det] for d in cal], target)
    threshold["spread|rv"] = match_threshold(cal, [detector_scores(d, partial)["spread|rv"] for d in cal],
                                             target)
    days = sum(d.spans()[0] for d in cal)
    threshold["vae-budget"] = max(HIGH_ALERT, match_threshold(cal, [d.signals["vae"] for d in cal],
                                                              int(budget_per_day * days)))
    log.info("calibration: %d VAE false High Alert episodes on %.2f market days; thresholds %s",
             target, days, {k: round(v, 4) for k, v in threshold.items()})
    return Thresholds(reference, threshold, target, days, int(cal_t.max()))


# ---- outcomes on the test days -------------------------------------------------------------------
def _ns(t) -> int:
    return int(pd.Timestamp(t).value)


def event_outcomes(d: DayData, scores: dict[str, np.ndarray], threshold: dict[str, float]) -> list[dict]:
    """Per stress episode of a day and per detector: alert before the bottom, lead time, alert in window."""
    out = []
    for r in d.stress.itertuples():
        rows = np.flatnonzero(d.sym == r.sym)
        t = d.time[rows]
        start, end = _ns(r.start), _ns(r.end)
        bottom = _ns(r.bottom_time) if pd.notna(r.bottom_time) else end
        ev = {"day": d.day.name(), "kind": r.kind, "sym": r.sym, "start": start, "bottom": bottom, "end": end,
              "params": dict(d.day.params), "detectors": {}}
        for det, s in scores.items():
            thr = np.nextafter(threshold[det], np.inf)  # detection_lead_time tests >=: make it strictly above
            lead = detection_lead_time(t, s[rows], thr, start, bottom)
            win = (t >= start) & (t <= end) & (s[rows] > threshold[det])
            ev["detectors"][det] = {"before_bottom": not math.isnan(lead), "lead_s": lead,
                                    "in_window": bool(win.any()),
                                    "max_score": float(s[rows][(t >= start) & (t <= bottom)].max(initial=0.0))}
        out.append(ev)
    return out


@dataclass
class Evaluation:
    """Everything the report shows: thresholds, test outcomes, false alarms, curves."""

    thresholds: Thresholds
    events: list[dict]
    false_alarms: dict[str, dict[str, float]]  # detector -> episodes, per_day, per_instrument_day
    normal_days: float
    normal_instrument_days: float
    pr: dict[str, dict[str, float]]  # detector -> pr_auc, roc_auc of crash-window rows
    curves: dict[str, list[tuple[float, float]]]  # detector -> (false alarms / day, crash recall)
    days: list[DayData]

    def crashes(self) -> list[dict]:
        return [e for e in self.events if e["kind"] == "flash-crash"]

    def summary(self) -> dict[str, Any]:
        """Headline figures per detector (JSON-friendly)."""
        out: dict[str, Any] = {}
        cr = self.crashes()
        for det in self.thresholds.threshold:
            leads = [e["detectors"][det]["lead_s"] for e in cr]
            hit = [x for x in leads if not math.isnan(x)]
            out[det] = {
                "threshold": self.thresholds.threshold[det],
                "crashes": len(cr), "crashes_detected_before_bottom": len(hit),
                "median_lead_s": float(np.median(hit)) if hit else math.nan,
                "mean_lead_s_misses_as_zero": float(np.mean([x if not math.isnan(x) else 0.0 for x in leads]))
                if leads else math.nan,
                **self.false_alarms[det], **self.pr.get(det, {}),
            }
        return out

    def recall_by_kind(self) -> dict[str, dict[str, dict[str, float]]]:
        """kind -> detector -> {episodes, before_bottom, in_window} recall."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for kind in sorted({e["kind"] for e in self.events}):
            evs = [e for e in self.events if e["kind"] == kind]
            out[kind] = {det: {"episodes": len(evs),
                               "before_bottom": sum(e["detectors"][det]["before_bottom"] for e in evs) / len(evs),
                               "in_window": sum(e["detectors"][det]["in_window"] for e in evs) / len(evs)}
                         for det in self.thresholds.threshold}
        return out


def _crash_rows(d: DayData) -> np.ndarray:
    """Rows inside a flash crash's [start, bottom] on its instrument (the positives of the PR curves)."""
    pos = np.zeros(len(d.time), dtype=bool)
    for r in d.stress.itertuples():
        if r.kind == "flash-crash":
            bottom = _ns(r.bottom_time) if pd.notna(r.bottom_time) else _ns(r.end)
            pos |= (d.sym == r.sym) & (d.time >= _ns(r.start)) & (d.time <= bottom)
    return pos


def evaluate(cal: list[DayData], test: list[DayData], embargo_ns: int = 0, curve_points: int = 30) -> Evaluation:
    """Fit thresholds on `cal`, then score every detector on `test` (see the module docstring)."""
    th = fit_thresholds(cal, test, embargo_ns)
    normal = [d for d in test if d.day.scenario == "normal"]
    stressed = [d for d in test if d.day.scenario != "normal"]
    scores = {id(d): detector_scores(d, th) for d in test}
    n_days = sum(d.spans()[0] for d in normal)
    n_inst = sum(d.spans()[1] for d in normal)
    fa = {}
    for det, thr in th.threshold.items():
        eps = count_episodes(normal, [scores[id(d)][det] for d in normal], thr)
        fa[det] = {"false_alarms": eps, "per_day": eps / n_days if n_days else math.nan,
                   "per_instrument_day": eps / n_inst if n_inst else math.nan}
    events = [e for d in stressed for e in event_outcomes(d, scores[id(d)], th.threshold)]
    pr, curves = {}, {}
    crash_days = [d for d in stressed if (d.stress["kind"] == "flash-crash").any()]
    for det in th.threshold:
        # positives: crash-window rows; negatives: normal test days (other crash-day rows are neither)
        pos = [scores[id(d)][det][_crash_rows(d)] for d in crash_days]
        neg = [scores[id(d)][det] for d in normal]
        y = np.concatenate([np.ones(sum(map(len, pos)), bool), np.zeros(sum(map(len, neg)), bool)])
        s = np.concatenate([*pos, *neg]) if len(y) else np.zeros(0)
        pr[det] = {"pr_auc": pr_auc(y, s), "roc_auc": roc_auc(y, s)}
        curves[det] = _recall_curve(normal, crash_days, scores, det, th.threshold[det], n_days, curve_points)
    return Evaluation(th, events, fa, n_days, n_inst, pr, curves, [*cal, *test])


def _recall_curve(normal: list[DayData], crash_days: list[DayData], scores: dict, det: str, thr: float,
                  n_days: float, points: int) -> list[tuple[float, float]]:
    """(false alarms per normal test day, share of crashes alerted before the bottom) over thresholds."""
    s_norm = np.concatenate([scores[id(d)][det] for d in normal]) if normal else np.zeros(1)
    qs = np.quantile(s_norm, 1 - np.logspace(-1, -6, points))
    cands = np.unique(np.concatenate([qs, [thr, s_norm.max()]]))
    out = []
    for c in cands:
        fa = count_episodes(normal, [scores[id(d)][det] for d in normal], c) / n_days if n_days else math.nan
        evs = [e for d in crash_days for e in event_outcomes(d, {det: scores[id(d)][det]}, {det: c})
               if e["kind"] == "flash-crash"]
        rec = sum(e["detectors"][det]["before_bottom"] for e in evs) / len(evs) if evs else math.nan
        out.append((fa, rec))
    return out


# ---- the standard held-out design ----------------------------------------------------------------
# Never the VAE's training (101, 102), calibration (103, 106, 107) or validation (104, 105) seeds
# (anomaly_cli refuses a model card that names any seed the backtest uses).
CRASHES: list[dict[str, Any]] = [
    {"sym": "ESZ6", "severity": 0.02, "speed": 45.0, "at": 1200.0},
    {"sym": "NQZ6", "severity": 0.01, "speed": 30.0, "at": 1000.0},
    {"sym": "BTCUSD", "severity": 0.04, "speed": 90.0, "at": 1300.0},
    {"sym": "ACME", "severity": 0.03, "speed": 20.0, "at": 900.0},
    {"sym": "GLOW", "severity": 0.05, "speed": 120.0, "at": 1100.0},
    {"sym": "DYNE", "severity": 0.015, "speed": 60.0, "at": 1400.0},
    {"sym": "CRUX", "severity": 0.025, "speed": 15.0, "at": 1250.0},
    {"sym": "FLUX", "severity": 0.03, "speed": 75.0, "at": 950.0},
    {"sym": "EMBR", "severity": 0.02, "speed": 40.0, "at": 1150.0, "recovery": 0.2},
    {"sym": "BOLT", "severity": 0.01, "speed": 10.0, "at": 1350.0, "recovery": 0.8},
]
OTHER_STRESS: list[tuple[str, dict[str, Any]]] = [
    ("vol-regime-shift", {"at": 1200.0, "factor": 3.0}),
    ("liquidity-drought", {"at": 1000.0, "length": 400.0, "depth": 0.7}),
    ("news-shock", {"at": 1100.0, "sym": "ACME", "sentiment": -0.8, "impact": 0.02}),
    ("news-shock", {"at": 1300.0, "sym": "BTCUSD", "sentiment": -0.6, "impact": 0.03}),
]


def standard_days(cal_seeds: list[int], normal_seeds: list[int], normal_duration: int = 3600,
                  stress_duration: int = 1800, crashes: list[dict] | None = None,
                  other: list[tuple[str, dict]] | None = None, stress_seed: int = 400,
                  first_date: str = "2026-12-01") -> tuple[list[Day], list[Day]]:
    """Calibration days then test days, one calendar day each from first_date (09:30 New York)."""
    crashes = CRASHES if crashes is None else crashes
    other = OTHER_STRESS if other is None else other
    date = pd.Timestamp(f"{first_date} 14:30:00")

    def next_start() -> str:
        nonlocal date
        s = str(date)
        date += pd.Timedelta(days=1)
        return s

    cal = [Day("calibration", "normal", s, normal_duration, next_start()) for s in cal_seeds]
    next_start()  # an empty calendar day between calibration and test: the embargo
    test = [Day("test", "normal", s, normal_duration, next_start()) for s in normal_seeds]
    for k, p in enumerate(crashes):
        test.append(Day("test", "flash-crash", stress_seed + k, stress_duration, next_start(),
                        tuple(sorted(p.items()))))
    for k, (name, p) in enumerate(other):
        test.append(Day("test", name, stress_seed + 100 + k, stress_duration, next_start(),
                        tuple(sorted(p.items()))))
    return cal, test


def load_days(days: list[Day], scorer, syms: list[str], cache: Path | None,
              progress: Callable[[str], None] | None = None) -> list[DayData]:
    """Simulate (or read from the cache) and score every day, in order."""
    out = []
    for k, day in enumerate(days):
        if progress:
            progress(f"[{k + 1}/{len(days)}] {day.role}: {day.name()}")
        out.append(simulate_day(day, scorer, syms, cache))
    return out
