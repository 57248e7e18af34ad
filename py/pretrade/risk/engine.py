"""The real-time risk engine (`pretrade rte`): ticks in, features, scores and limits out.

`RiskEngine` is the engine without I/O: `ingest(table, data)` takes the tickerplant's updates and
returns what to publish. Its clock is the data's: a cycle falls on each grid time g (100 ms steps
of event time) once an update arrives whose earliest tick is later than g + lateness, so a replay
at any speed gives the same cycles and the same output. `lateness` must cover how far a feed
interleaves tables out of time order (the simulator feed publishes every table slice by slice,
1 s of market time at most per slice, so the default 1 s covers it at any speed).

A cycle: feature snapshot of every instrument -> batched anomaly scores (onnxruntime) of the
ready ones -> policy (pretrade.risk.policy) -> rows for `features`, `riskScore`, `limits`,
`riskAlert` and `heartbeat`. A model that fails to load or score puts every instrument on
static limits with a Critical alert naming the cause.

The process subscribes to the tickerplant as kdb+tick's r.q does, rebuilds its state from the
journal on start (features from the ticks, seq, tiers and halts from its own `limits` rows,
human actions from its `riskAlert` rows), then publishes each cycle's rows with `.u.upd`.
Kill switch, reset and model (de)activation are IPC calls (see `functions`), audited.

Governance (pretrade.models.status, pretrade.models.drift): the engine binds only an approved
model. A candidate or shadow model is scored and its call published in `riskScore` (tier from
the score alone), while every instrument runs on static limits and the heartbeat says `shadow`.
Every cycle the model's inputs feed a rolling drift window (PSI and KS against the card's
training reference); past the warn threshold a `drift` alert names the features; past the hard
one automation takes the model off (approved -> shadow, static limits, a critical `drift`
alert) and only a person's `.rte.approve[model;who;note]` puts it back.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pretrade.features.spec import FEATURES as FEATURE_NAMES
from pretrade.risk.limits import ALL, LIMIT_FIELDS, TIERS, RiskConfig, column_name, load_config
from pretrade.risk.policy import (
    ACTIONS,
    CLOCKS,
    Action,
    Limit,
    Override,
    Policy,
    Scores,
    parse_override,
    tier_of,
)
from pretrade.schema import table as schema_table

log = logging.getLogger(__name__)

INPUTS = ("trade", "quote", "book", "l3", "news")
OUTPUTS = ("features", "riskScore", "limits", "riskAlert", "heartbeat")
PROCESS = "rte"  # the heartbeat's sym


class Scorer(Protocol):
    """What the engine needs of an anomaly model (pretrade.models.anomaly.AnomalyScorer is one):
    `version`, and `score(z)` -> an object with `score`, `error` (n,) and `top_features(k)`."""

    version: str

    def score(self, z: np.ndarray) -> Any: ...


def load_scorer(models_dir: str | Path | None) -> tuple[Scorer | None, str]:
    """(the VAE scorer from DIR/vae.onnx, "") or (None, why it could not be loaded)."""
    if models_dir is None:
        return None, "no --models folder given"
    path = Path(models_dir) / "vae.onnx"
    try:
        from pretrade.models.anomaly import AnomalyScorer

        return AnomalyScorer(path), ""
    except Exception as e:  # noqa: BLE001 - any failure to load means static limits, with the cause
        return None, f"model {path} failed to load: {e}"


AUTOMATION = "automation"
# on hard drift: "alert" names the features (critical alert), "takeoff" also takes the model off
DRIFT_ACTIONS = ("alert", "takeoff")
MODEL = "vae"  # the served model's name: its card is MODELS/vae.json


def load_governance(models_dir: str | Path | None, scorer: Scorer | None, step_ns: int = 100_000_000,
                    drift_config: Any = None) -> tuple[str, Any, Any]:
    """(status, StatusBook or None, DriftMonitor or None) of the served model: its lifecycle status
    from the models folder, and a drift monitor from its card's training reference (None, with a
    warning, when the card has none or drift is switched off with drift_config=False)."""
    if scorer is None or models_dir is None:
        return "approved", None, None
    from pretrade.models.status import StatusBook, StatusError

    book = StatusBook(models_dir)
    try:
        status = book.status(MODEL, scorer.version)
    except StatusError as e:
        log.error("model status unknown (%s): treated as shadow", e)
        book, status = None, "shadow"
    if drift_config is False:
        return status, book, None
    from pretrade.models.drift import DriftConfig, DriftMonitor, Reference

    ref = getattr(scorer, "card", {}).get("reference")
    if ref is None:
        log.warning("model %s has no training reference in its card: drift monitoring off", scorer.version)
        return status, book, None
    try:
        monitor = DriftMonitor(Reference.from_dict(ref), drift_config or DriftConfig(), step_ns)
    except ValueError as e:
        log.error("%s: drift monitoring off", e)
        return status, book, None
    return status, book, monitor


@dataclass
class Output:
    """Rows for one table: its columns in schema order (time as datetime64[ns])."""

    table: str
    columns: list[Any]

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0


_TIER_NAMES = np.array(TIERS, dtype=object)
_RV_1M = FEATURE_NAMES.index("rv_1m")  # its normalised value is published as `features.z_rv_1m`


def _sym_col(values: Iterable[str]) -> np.ndarray:
    return np.array(list(values), dtype=object)


def _text_col(values: Iterable[str]) -> list[bytes]:
    return [v.encode("utf-8") for v in values]


def _times(n: int, t: int) -> np.ndarray:
    return np.full(n, t, dtype=np.int64).view("datetime64[ns]")


def limits_output(rows: list[Limit]) -> Output:
    """`limits` rows as columns."""
    cols = list(zip(*(r.row() for r in rows), strict=True))
    qt = schema_table("limits").qtypes
    out = []
    for values, q in zip(cols, qt, strict=True):
        if q == "p":
            out.append(np.array(values, dtype=np.int64).view("datetime64[ns]"))
        elif q == "s":
            out.append(_sym_col(values))
        elif q == "C":
            out.append(_text_col(values))
        else:
            out.append(np.array(values, dtype=schema_table("limits").columns[len(out)].dtype))
    return Output("limits", out)


def alerts_output(alerts: list[dict]) -> Output:
    """`riskAlert` rows (dicts from the policy) as columns."""
    spec = schema_table("riskAlert")
    cols = []
    for c in spec.columns:
        v = [a[c.name] for a in alerts]
        if c.qtype == "p":
            cols.append(np.array(v, dtype=np.int64).view("datetime64[ns]"))
        elif c.qtype == "s":
            cols.append(_sym_col(v))
        elif c.qtype == "C":
            cols.append(_text_col(v))
        else:
            cols.append(np.array(v, dtype=c.dtype))
    return Output("riskAlert", cols)


def top_features(res: Any, k: int) -> list[str]:
    """The k features contributing most to each row's score, comma separated (vectorised when
    the result carries `contributions` and `features`, as AnomalyResult does)."""
    contrib = getattr(res, "contributions", None)
    if contrib is None:
        return [",".join(names) for names in res.top_features(k)]
    k = min(k, contrib.shape[1])
    idx = np.argpartition(-contrib, k - 1, axis=1)[:, :k]                  # the k largest, unordered
    order = np.argsort(-np.take_along_axis(contrib, idx, axis=1), axis=1)  # ... largest first
    ranked = np.take_along_axis(idx, order, axis=1)
    # few distinct rankings among many rows: join the names once per distinct ranking
    code = ranked @ (contrib.shape[1] ** np.arange(k))
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    names = np.asarray(res.features, dtype=object)
    joined = np.array([",".join(names[ranked[i]]) for i in first.tolist()], dtype=object)
    return joined[inverse].tolist()


def as_columns(table: str, data: Any) -> dict[str, Any]:
    """An update's data (dict of columns, DataFrame, list of column vectors or one row of atoms,
    as the tickerplant and its journal carry it) as a dict of columns by schema name."""
    if isinstance(data, dict):
        return data
    if hasattr(data, "columns") and hasattr(data, "to_dict"):
        return {c: data[c].to_numpy() for c in data.columns}
    names = schema_table(table).names
    if not isinstance(data, list | tuple) or len(data) != len(names):
        raise ValueError(f"{table}: update is not {len(names)} columns ({' '.join(names)})")
    if all(np.ndim(c) == 0 and not isinstance(c, list | bytes) for c in data):  # one row
        return {n: np.array([v], dtype=object if isinstance(v, str) else None) for n, v in zip(names, data, strict=True)}
    return dict(zip(names, data, strict=True))


def _ns(t: Any) -> np.ndarray:
    a = np.asarray(t)
    if a.dtype.kind == "M":
        return a.astype("datetime64[ns]").view(np.int64)
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    return np.asarray(a, dtype="datetime64[ns]").view(np.int64)


class RiskEngine:
    """Features, scores, policy and output rows, driven by event time. Not thread-safe: the
    process serialises calls with a lock."""

    def __init__(self, config: RiskConfig, scorer: Scorer | None = None, model_error: str = "",
                 step_ns: int = 100_000_000, lateness_ns: int = 0, features_every: int = 1,
                 feature_config: Any = None, max_catchup: int = 3000, top_k: int = 3,
                 model_status: str = "approved", status_book: Any = None, drift: Any = None,
                 labels_path: str | Path | None = None, drift_action: str = "alert",
                 override_clock: str = "wall", wall_clock: Any = time.time_ns) -> None:
        from pretrade.features.engine import FeatureEngine
        from pretrade.features.spec import FEATURES, FeatureConfig

        fc = feature_config or FeatureConfig(step_ns=step_ns)
        if fc.step_ns != step_ns:
            raise ValueError("the feature config's step_ns must equal the engine's step")
        self.features = FeatureEngine(fc)
        self.policy = Policy(config)
        self.scorer = scorer
        self.model_error = "" if scorer is not None else (model_error or "no model")
        self.step_ns = step_ns
        self.stale_ns = int(config.policy.stale_s * 1e9)
        self.lateness_ns = lateness_ns
        self.features_every = max(1, features_every)
        self.max_catchup = max(1, max_catchup)
        self.top_k = top_k
        self.next_grid: int | None = None
        self.now = 0           # the last cycle's grid time (ns)
        self.cycles = 0
        self.hb_seq = 0
        # event time of each instrument's latest tick (ns), by position in _tick_index
        self._tick_index: dict[str, int] = {}
        self._tick_time = np.zeros(0, dtype=np.int64)
        self._seen_pos: tuple[tuple[int, int], np.ndarray] = ((0, 0), np.zeros(0, dtype=np.int64))
        # governance: lifecycle status of the served model, its log, and the input drift monitor
        self.status_book = status_book
        self.model_status = model_status
        self.drift = drift
        self.drift_level = 0
        if drift_action not in DRIFT_ACTIONS:
            raise ValueError(f"drift action {drift_action!r}: one of {', '.join(DRIFT_ACTIONS)}")
        self.drift_action = drift_action
        if override_clock not in CLOCKS:
            raise ValueError(f"override clock {override_clock!r}: one of {', '.join(CLOCKS)}")
        self.override_clock = override_clock
        self.wall_clock = wall_clock  # () -> ns; what a person's override minutes run on
        self.labels_path = labels_path
        # model inputs of the last alerts raised, so a person's mark of one can train: (sym, ns) -> call
        # (call, model, feature names, their values): tuples and arrays, which the garbage
        # collector need not walk, as alert bursts store thousands of them
        self.alert_calls: dict[tuple[str, int], tuple[str, str, tuple[str, ...], np.ndarray]] = {}
        self.drift_cols = (np.array([FEATURES.index(f) for f in drift.ref.features])
                           if drift is not None else None)
        if scorer is not None and model_status == "retired":
            self.scorer, self.model_error = None, f"model {scorer.version} is retired"
        self._hold_if_not_approved()

    # ---- input ---------------------------------------------------------------------------------

    def ingest(self, table: str, data: Any) -> list[Output]:
        """One tickerplant update: run the cycles it completes, then queue its ticks."""
        if table not in INPUTS:
            return []
        cols = as_columns(table, data)
        t = _ns(cols["time"])
        if len(t) == 0:
            return []
        out = self.advance(int(t.min()) - self.lateness_ns)
        self.features.update(table, cols)
        self._note_ticks(table, cols, t)
        if self.next_grid is None:
            self.next_grid = (int(t.min()) // self.step_ns + 1) * self.step_ns
        return out

    def _note_ticks(self, table: str, cols: dict[str, Any], t: np.ndarray) -> None:
        """Remember each instrument's latest tick: a score from older data is stale."""
        if table == "news":
            return
        import pandas as pd

        codes, uniq = pd.factorize(np.asarray(cols["sym"], dtype=object))
        last = np.full(len(uniq), np.iinfo(np.int64).min)
        np.maximum.at(last, codes, t)
        index = self._tick_index
        pos = np.empty(len(uniq), dtype=np.int64)
        for k, sym in enumerate(uniq.tolist()):
            key = sym.decode() if isinstance(sym, bytes) else sym
            i = index.get(key)
            if i is None:
                i = index[key] = len(index)
            pos[k] = i
        if len(index) > len(self._tick_time):
            self._tick_time = np.concatenate([self._tick_time, np.full(len(index) - len(self._tick_time), -1)])
        np.maximum.at(self._tick_time, pos, last)

    def last_ticks(self, syms: list[str], default: int) -> np.ndarray:
        """Event time of each instrument's latest tick (`default` for one that never ticked);
        `syms` only grows at its end (the feature engine's list), so positions are cached."""
        key = (len(syms), len(self._tick_index))
        if self._seen_pos[0] != key:
            self._seen_pos = key, np.array([self._tick_index.get(s, -1) for s in syms], dtype=np.int64)
        pos = self._seen_pos[1]
        return np.where(pos >= 0, self._tick_time[pos], default)

    def advance(self, upto: int) -> list[Output]:
        """Run every cycle whose grid time is before `upto` (event time, ns)."""
        if self.next_grid is None or upto <= self.next_grid:
            return []
        last = self.next_grid + (upto - 1 - self.next_grid) // self.step_ns * self.step_ns
        first = max(self.next_grid, last - (self.max_catchup - 1) * self.step_ns)
        out: list[Output] = []
        for g in range(first, last + 1, self.step_ns):
            out += self.cycle(g)
        self.next_grid = last + self.step_ns
        return out

    # ---- one cycle -----------------------------------------------------------------------------

    def cycle(self, g: int) -> list[Output]:
        """Features, scores, policy and output rows at grid time g."""
        self.now = g
        self.cycles += 1
        out: list[Output] = []
        snap = self.features.snapshot(g)
        n = len(snap.syms)
        score = np.full(n, np.nan)
        error = np.full(n, np.nan)
        top = [""] * n
        alerts: list[dict] = []
        limits: list[Limit] = []
        if self.scorer is None and self.policy.controls.model_active:
            limits, alerts = self.policy.fail_model(g, self.model_error)
        ready = np.flatnonzero(snap.ready)
        model = ""
        if self.scorer is not None and (self.policy.controls.model_active or self.shadow) and len(ready):
            try:
                res = self.scorer.score(snap.z[ready])
                score[ready] = res.score
                error[ready] = res.error
                for k, names in zip(ready, top_features(res, self.top_k), strict=True):
                    top[k] = names
                model = self.scorer.version
            except Exception as e:  # noqa: BLE001 - a failing model must fall back, not stop the engine
                log.exception("scoring failed; static limits in force")
                rows, al = self.policy.fail_model(g, f"model {self.scorer.version} failed to score: {e}")
                limits += rows
                alerts += al
        if self.drift is not None and self.scorer is not None:
            report = self.drift.add(snap.z[ready][:, self.drift_cols])
            if report is not None:
                rows, al = self._on_drift(g, report)
                limits += rows
                alerts += al
        # a score is as old as the instrument's latest tick: a quiet instrument's tier holds
        seen = self.last_ticks(snap.syms, g)
        rows, al = self.policy.cycle(g, Scores(snap.syms, score, seen, top, model),
                                     self.wall_clock() if self.policy.overrides else None)
        limits += rows
        alerts += al
        if al and model:
            self._remember_calls(g, snap, al, model)
        if n and self.cycles % self.features_every == 0:
            out.append(Output("features", [_times(n, g), _sym_col(snap.syms), snap.ready.astype(bool),
                                           *[snap.raw[:, j].astype(np.float64) for j in range(snap.raw.shape[1])],
                                           snap.z[:, _RV_1M].astype(np.float64)]))
        if len(ready):
            if self.policy.controls.model_active:
                tiers = self.policy.tiers(snap.syms)[ready]
            else:  # shadow (or off): the model's own call, not what binds
                tiers = np.maximum(tier_of(score[ready], self.policy.config.policy), 0)
            out.append(Output("riskScore", [_times(len(ready), g), _sym_col(snap.syms)[ready],
                                            score[ready], error[ready], _TIER_NAMES[tiers],
                                            _text_col([top[k] for k in ready.tolist()]),
                                            np.full(len(ready), model, dtype=object),
                                            g - seen[ready] > self.stale_ns]))
        if limits:
            out.append(limits_output(limits))
        if alerts:
            out.append(alerts_output(alerts))
        out.append(self.heartbeat(g, "ok" if self.policy.controls.model_active
                                  else "shadow" if self.shadow and self.scorer is not None else "static"))
        return out

    # ---- governance ----------------------------------------------------------------------------

    @property
    def shadow(self) -> bool:
        """The served model is scored but does not bind (candidate or shadow)."""
        return self.model_status in ("candidate", "shadow")

    def _hold_if_not_approved(self) -> None:
        """A loaded model that is not approved never binds: static limits, scored in shadow."""
        if self.scorer is not None and self.model_status != "approved":
            from dataclasses import replace

            self.policy.controls = replace(
                self.policy.controls, model_active=False,
                model_fault=f"model {self.scorer.version} is {self.model_status}: scored in shadow, "
                            "not binding, until a person approves it (.rte.approve)")

    def _set_status(self, new: str, who: str, why: str) -> dict:
        """Change the served model's status; returns the `status` alert that records it in the
        journal (a restart restores it from there) and, if the engine was given a status book
        (--write-status), appends it to the models folder's log too (a log that cannot be written
        is reported; the change still takes effect)."""
        from pretrade.models.status import check_transition

        old = self.model_status
        check_transition(old, new, who, why)
        if self.status_book is not None:
            try:
                self.status_book.change(MODEL, new, who, why, version=self.scorer.version)
            except OSError as e:
                log.error("status log %s not written: %s", self.status_book.path, e)
        self.model_status = new
        return self.policy._alert(self.now, ALL, "critical" if new != "approved" else "warning",
                                  "status", "", who,
                                  f"model {self.scorer.version} status {old} -> {new} by {who}: {why}")

    def _on_drift(self, g: int, report: Any) -> tuple[list[Limit], list[dict]]:
        """Alerts on a change of the drift level; past the hard threshold, take an approved model
        off (static limits, shadow scoring) until a person re-approves it."""
        level = {"ok": 0, "warn": 1, "hard": 2}[report.worst]
        version = self.scorer.version
        rows: list[Limit] = []
        alerts: list[dict] = []
        if level == 2 and self.model_status == "approved" and self.drift_action == "takeoff":
            why = "input drift past the hard threshold: " + "; ".join(report.drifting(2))
            warn_only = [f for f in report.drifting(1) if f not in report.drifting(2)]
            if warn_only:
                why += "; past the warn threshold: " + "; ".join(warn_only)
            status = self._set_status("shadow", AUTOMATION, why)
            rows, alerts = self.policy.act(Action(g, AUTOMATION, "deactivate", note=why))
            alerts.append(status)
            alerts.append(self.policy._alert(
                g, ALL, "critical", "drift", TIERS[-1], AUTOMATION,
                f"model {version} taken off, static limits in force: {why} (over {report.rows} rows); "
                "scored in shadow until a person re-approves it with .rte.approve[model;who;note]"))
        elif level > self.drift_level:
            hard = level == 2 and self.model_status == "approved"
            alerts.append(self.policy._alert(
                g, ALL, "critical" if hard else "warning", "drift", "", AUTOMATION,
                f"input drift ({report.worst}) of model {version}: " + "; ".join(report.drifting(1))
                + f" (over {report.rows} rows)"
                + ("; the model stays on (drift action is alert; --drift-action takeoff takes it off)"
                   if hard else "")))
        elif level == 0 and self.drift_level > 0:
            alerts.append(self.policy._alert(g, ALL, "info", "drift", "", AUTOMATION,
                                             f"input drift of model {version} back within thresholds"))
        self.drift_level = level
        return rows, alerts

    def approve(self, model: str, who: str, note: str = "") -> list[Output]:
        """A person approves the served model (name or version): status approved, logged with who
        and why, a fresh drift window, and the model binds again. Automation cannot call this."""
        if self.scorer is None:
            raise ValueError(f"no model to approve: {self.model_error}")
        if model not in (MODEL, self.scorer.version):
            raise ValueError(f"the engine serves {MODEL} {self.scorer.version}, not {model!r}")
        if not who or who == AUTOMATION:
            raise ValueError("only a named person approves a model")
        why = note or "approved at the risk engine"
        status = []
        if self.model_status != "approved":
            status = [alerts_output([self._set_status("approved", who, why)])]
        if self.drift is not None:
            self.drift.reset()
            self.drift_level = 0
        if not self.policy.controls.model_active:
            return status + self.act("activate", who=who, note=f"approve {self.scorer.version}: {why}")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return [alerts_output([self.policy._alert(self.now, ALL, "info", "approve", "", who,
                                                  f"approve {self.scorer.version} by {who}: {why} "
                                                  f"(at {stamp}); already binding")])]

    def to_shadow(self, model: str, who: str, note: str = "") -> list[Output]:
        """A person puts the approved served model in shadow: scored, not binding (static limits)."""
        if self.scorer is None:
            raise ValueError(f"no model loaded: {self.model_error}")
        if model not in (MODEL, self.scorer.version):
            raise ValueError(f"the engine serves {MODEL} {self.scorer.version}, not {model!r}")
        if not who:
            raise ValueError("an action needs the name of who takes it")
        why = note or "put in shadow at the risk engine"
        status = alerts_output([self._set_status("shadow", who, why)])
        return [status] + self.act("deactivate", who=who, note=f"shadow {self.scorer.version}: {why}")

    def _restore_status(self, text: str) -> None:
        """Take the served model's status from a journalled `status` alert about its version."""
        import re

        m = re.match(r"model (\S+) status (\w+) -> (\w+) by ", text)
        if m and self.scorer is not None and m.group(1) == self.scorer.version:
            self.model_status = m.group(3)

    MAX_CALLS = 10_000

    def _remember_calls(self, g: int, snap: Any, alerts: list[dict], model: str) -> None:
        """Keep the model inputs behind each tier alert (bounded), for people's marks."""
        from pretrade.features.spec import FEATURES

        names = tuple(getattr(self.scorer, "features", ()))
        cols = [FEATURES.index(n) for n in names]
        pos = {s: k for k, s in enumerate(snap.syms)}
        for a in alerts:
            k = pos.get(a["sym"])
            if k is None or a["kind"] not in ("tier", "breaker"):
                continue
            self.alert_calls[(a["sym"], g)] = (a["tier"], model, names,
                                               snap.z[k, cols].astype(np.float64))
        while len(self.alert_calls) > self.MAX_CALLS:
            self.alert_calls.pop(next(iter(self.alert_calls)))

    def mark(self, sym: str, when: Any, verdict: str, who: str, note: str = "") -> list[Output]:
        """A person marks the alert raised for `sym` at `when` (its riskAlert time) right or wrong:
        stored in the labels file with the model's inputs when the engine still has them, and
        audited. ValueError when no labels file is configured or the mark is malformed."""
        from pretrade.models.labels import Mark, add_mark

        if self.labels_path is None:
            raise ValueError("this engine has no labels file (start it with --labels FILE)")
        t = int(_ns([when])[0]) if not isinstance(when, int | np.integer) else int(when)
        call, model, names, z = self.alert_calls.get((sym, t), ("", "", (), np.zeros(0)))
        stamp = np.datetime_as_string(np.datetime64(t, "ns"), unit="ns")
        stored = add_mark(Mark(who=who, target="alert", ref=stamp, sym=sym, verdict=verdict,
                               call=call, model=model, note=note,
                               features=dict(zip(names, z.tolist(), strict=True))), self.labels_path)
        text = (f"mark by {who}: alert on {sym} at {stamp} ({stored.call or 'call not in memory'}) "
                f"was {verdict}" + (f": {note}" if note else "")
                + ("" if stored.features else "; its inputs are no longer held, so it will not train"))
        return [alerts_output([self.policy._alert(self.now, sym, "info", "mark", stored.call, who, text)])]

    def drift_status(self) -> dict[str, Any]:
        """The drift monitor's last check (per feature PSI, KS, level), window and thresholds."""
        if self.drift is None:
            return {"enabled": False}
        from dataclasses import asdict

        last = self.drift.last
        return {"enabled": True, "config": asdict(self.drift.config),
                **(last.as_dict() if last is not None else {"rows": 0, "worst": "ok", "features": {}})}

    def heartbeat(self, t: int, status: str) -> Output:
        """One `heartbeat` row: the engine is alive at t (its seq is the limits' seq)."""
        self.hb_seq += 1
        return Output("heartbeat", [_times(1, t), _sym_col([PROCESS]), np.array([self.policy.seq]),
                                    np.array([self.cycles]), np.array([len(self.features.syms)]),
                                    _sym_col([status])])

    # ---- people --------------------------------------------------------------------------------

    def act(self, kind: str, sym: str = ALL, strategy: str = ALL, who: str = "", note: str = "") -> list[Output]:
        """A person's action (kill, reset, reduce, deactivate, activate), applied now and audited."""
        if kind not in ACTIONS:
            raise ValueError(f"unknown action {kind!r}; known: {', '.join(ACTIONS)}")
        if not who:
            raise ValueError("an action needs the name of who takes it")
        if kind == "activate" and self.scorer is None:
            raise ValueError(f"no model to activate: {self.model_error}")
        if kind == "activate" and self.model_status != "approved":
            raise ValueError(f"model {self.scorer.version} is {self.model_status}: only a person's "
                             ".rte.approve[model;who;note] puts it back to work")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows, alerts = self.policy.act(Action(self.now, who, kind, sym, strategy,
                                              f"{note} (at {stamp})".strip()))
        out = [limits_output(rows)] if rows else []
        return out + [alerts_output(alerts)]

    def override(self, sym: str, strategy: str, name: str, value: float, seconds: float, who: str,
                 note: str = "") -> list[Output]:
        """A person overrides one limit (a `limits` column name, e.g. maxQty) within its static
        ceiling for `seconds` on the engine's override clock (wall by default, event time for
        replays: `override_clock`); applied now and audited, restored by a restart."""
        if not who:
            raise ValueError("an override needs the name of who makes it")
        column = {column_name(f): f for f in LIMIT_FIELDS}
        if name not in column:
            raise ValueError(f"limit {name!r} cannot be overridden; one of {', '.join(column)}")
        wall = self.wall_clock() if self.override_clock == "wall" else None
        rows, alerts = self.policy.override(self.now, sym, strategy, column[name], float(value),
                                            float(seconds), who, note, wall)
        return ([limits_output(rows)] if rows else []) + [alerts_output(alerts)]

    def expire_overrides(self) -> list[Output]:
        """Republish the rows of overrides whose time is up, between cycles: a quiet market runs
        no cycles, but a person's minutes still pass on the wall clock."""
        rows = self.policy.expire_overrides(self.now, self.wall_clock())
        return [limits_output(rows)] if rows else []

    def reconcile(self) -> list[Output]:
        """After `restore`, the rows that make the published limits match the journal's audit
        trail: none in the usual case (see Policy.reconcile)."""
        rows = self.policy.reconcile(self.now, self.wall_clock())
        if rows:
            log.warning("restart: %d limit rows republished to match the restored state", len(rows))
        return [limits_output(rows)] if rows else []

    def overrides_in_force(self) -> list[str]:
        """The overrides held, for people: "ESZ6/* max_qty=500 until 2026-...Z (wall clock)"."""
        return [f"{sym}/{strategy or '*'} {name}={o.value:g} until "
                f"{np.datetime_as_string(np.datetime64(o.until, 'ns'), unit='s')}Z ({o.clock} clock)"
                for (sym, strategy), held in sorted(self.policy.overrides.items())
                for name, o in sorted(held.items())]

    # ---- restart -------------------------------------------------------------------------------

    def restore(self, records: Iterable[tuple[str, str, Any]]) -> int:
        """Rebuild from journal records (func, table, data): feed the ticks to the features (no
        cycles are run, nothing is published), take seq, tiers and halts from the `limits` rows,
        and people's actions, overrides and model status changes from the `riskAlert` rows.
        Returns the records used."""
        limits: list[Limit] = []
        actions: list[Action] = []
        overrides: list[tuple[str, str, str, Override]] = []
        last_cycle = None
        n = 0
        for func, table, data in records:
            if func != "upd":
                continue
            n += 1
            if table in INPUTS:
                cols = as_columns(table, data)
                if len(cols["time"]):
                    self.features.update(table, cols)
                    self._note_ticks(table, cols, _ns(cols["time"]))
            elif table == "limits":
                cols = as_columns(table, data)
                for i in range(len(cols["time"])):
                    limits.append(Limit.from_row({k: v[i] for k, v in cols.items()}))
            elif table == "riskAlert":
                cols = as_columns(table, data)
                for i in range(len(cols["time"])):
                    who, kind = _s(cols["who"][i]), _s(cols["kind"][i])
                    if kind == "status":
                        self._restore_status(_s(cols["text"][i]))
                    if kind in ACTIONS and who != "automation":
                        actions.append(Action(int(_ns(cols["time"][i:i + 1])[0]), who, kind,
                                              _s(cols["sym"][i]), _s(cols["strategy"][i])))
                    if kind == "override":
                        got = parse_override(_s(cols["text"][i]), int(_ns(cols["time"][i:i + 1])[0]))
                        if got is None:
                            log.error("override alert not understood, not restored: %s", _s(cols["text"][i]))
                        else:
                            overrides.append((_s(cols["sym"][i]), _s(cols["strategy"][i]), *got))
            elif table == "heartbeat":
                cols = as_columns(table, data)
                for i in range(len(cols["time"])):
                    if _s(cols["sym"][i]) == PROCESS and _s(cols["status"][i]) != "idle":
                        last_cycle = int(_ns(cols["time"][i:i + 1])[0])
                        self.cycles = max(self.cycles, int(cols["cycles"][i]))
        self.policy.restore(limits, actions, overrides)
        self._hold_if_not_approved()  # a replayed `activate` does not bind a model taken off since
        if last_cycle is not None:
            self.next_grid = last_cycle + self.step_ns
            self.now = last_cycle
        log.info("restored from the journal: %d records, %d limit rows (seq %d), %d actions, "
                 "%d overrides, %d instruments", n, len(limits), self.policy.seq, len(actions),
                 len(overrides), len(self.features.syms))
        return n


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def audit_first(outs: list[Output]) -> list[Output]:
    """A person's action as published: its audit rows first, then the limits. A crash between
    the two leaves an audited action, which a restart applies (restore, then reconcile), never a
    limit change without its audit row."""
    return sorted(outs, key=lambda o: o.table != "riskAlert")


def _acting(conn: Any, who: str, note: str) -> tuple[str, str]:
    """(who, note) of an IPC call: with a users file the login is who acted; a differing `who`
    argument goes into the note."""
    if conn.user and who and who != conn.user:
        note = f"{note} (for {who})".strip()
    return conn.user or who, note


# ---- hosted in q (q/rte.q, through PyKX) -----------------------------------------------------------

def q_engine(models: str = "models", lateness_s: float = 1.0, limits: str = "",
             override_clock: str = "wall") -> RiskEngine:
    """The engine q/rte.q hosts: same config, model and clock as `pretrade rte`."""
    scorer, err = load_scorer(models)
    if scorer is None:
        log.critical("%s: every instrument on static limits", err)
    status, _, drift = load_governance(models, scorer)  # status changes: journal only
    return RiskEngine(load_config(limits or None), scorer, err, lateness_ns=int(lateness_s * 1e9),
                      model_status=status, drift=drift, override_clock=_s(override_clock) or "wall")


def q_ingest(engine: RiskEngine, table: Any, data: Any) -> list[list[Any]]:
    """ingest() for q: (table; columns) pairs that q publishes with .u.upd."""
    return [[o.table, o.columns] for o in engine.ingest(_s(table), data) if len(o)]


def q_restore(engine: RiskEngine, records: Any) -> int:
    """restore() for q: records are the (table; data) pairs q's -11! replay handed to upd."""
    return engine.restore(("upd", _s(t), x) for t, x in records)


def q_act(engine: RiskEngine, kind: Any, sym: Any, strategy: Any, who: Any, note: Any = "") -> list[list[Any]]:
    """act() for q: the rows to publish, audit first."""
    return [[o.table, o.columns] for o in audit_first(engine.act(_s(kind), _s(sym), _s(strategy), _s(who), _s(note)))]


def q_override(engine: RiskEngine, sym: Any, strategy: Any, name: Any, value: Any, seconds: Any,
               who: Any, note: Any = "") -> list[list[Any]]:
    """override() for q: the rows to publish, audit first."""
    return [[o.table, o.columns] for o in audit_first(engine.override(
        _s(sym), _s(strategy), _s(name), float(value), float(seconds), _s(who), _s(note)))]


def q_reconcile(engine: RiskEngine) -> list[list[Any]]:
    """reconcile() for q, after q_restore: the rows to publish (usually none)."""
    return [[o.table, o.columns] for o in engine.reconcile()]


def q_expire(engine: RiskEngine) -> list[list[Any]]:
    """expire_overrides() for q's timer: the rows to publish (usually none)."""
    return [[o.table, o.columns] for o in engine.expire_overrides()]


def freeze_heap() -> None:
    """Collect once, then move every object alive (modules, model, restored state) out of the
    garbage collector's reach, so its periodic full collections walk only what cycles allocate
    since (scripts/bench_rte.py: in a burst of alerts at 1,000 instruments the longest pause was
    78-114 ms without it, no full collection with it). Called once by the process, restored."""
    import gc

    gc.collect()
    gc.freeze()
    log.info("heap frozen after start-up: %d objects kept out of garbage collection", gc.get_freeze_count())


# ---- the process ---------------------------------------------------------------------------------

class Service:
    """The process around a RiskEngine: subscription thread, publisher, idle heartbeat, IPC."""

    def __init__(self, engine: RiskEngine, tp: str, user: str = "", password: str = "") -> None:
        self.engine = engine
        self.tp = tp
        self.user, self.password = user, password
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.last_publish = time.monotonic()
        self.published: dict[str, int] = {}
        self._pub = None

    def _publisher(self):
        from pretrade.ipc.client import QClient, parse_addr

        if self._pub is None:
            host, port = parse_addr(self.tp)
            self._pub = QClient(host, port, self.user, self.password, timeout=30)
        return self._pub

    def publish(self, outs: list[Output]) -> None:
        """Send rows to the tickerplant (async .u.upd); a lost connection is reopened next time."""
        if not outs:
            return
        try:
            pub = self._publisher()
            for o in outs:
                if len(o):
                    pub.send_async(".u.upd", o.table, o.columns)
                    self.published[o.table] = self.published.get(o.table, 0) + len(o)
            self.last_publish = time.monotonic()
        except OSError as e:
            log.error("publishing to the tickerplant %s failed: %s", self.tp, e)
            if self._pub is not None:
                self._pub.close()
            self._pub = None

    def subscribe_forever(self) -> None:
        """Subscribe, restore from the journal, then ingest live updates; reconnect on loss."""
        from pretrade.ipc.client import QClient, parse_addr
        from pretrade.tick.journal import iter_records
        from pretrade.tick.rdb import SUBSCRIBE, decode_message, parse_subscription

        host, port = parse_addr(self.tp)
        delay = 0.5
        first = True
        while not self.stop.is_set():
            try:
                conn = QClient(host, port, self.user, self.password, timeout=30)
            except OSError as e:
                log.warning("tickerplant %s not reachable (%s); retrying in %.1f s", self.tp, e, delay)
                self.stop.wait(delay)
                delay = min(2 * delay, 10.0)
                continue
            try:
                sub = parse_subscription(conn.query(SUBSCRIBE))
                if first and sub.journal is not None and sub.count:
                    with self.lock:
                        self.engine.restore(iter_records(sub.journal, sub.count))
                        self.publish(self.engine.reconcile())
                if first:
                    freeze_heap()
                first = False
                self.ready.set()
                log.info("subscribed to %s (journal %s, %d messages)", self.tp, sub.journal, sub.count)
                while not self.stop.is_set():
                    try:
                        _, payload = conn.receive_raw(timeout=0.5)
                    except TimeoutError:
                        continue
                    msg = decode_message(payload)
                    if isinstance(msg, list) and len(msg) == 3 and msg[0] == "upd":
                        with self.lock:
                            try:
                                outs = self.engine.ingest(msg[1], msg[2])
                            except (ValueError, TypeError, KeyError) as e:
                                log.error("update to %s not used: %s", msg[1], e)
                                continue
                            self.publish(outs)
            except (OSError, ConnectionError) as e:
                if not self.stop.is_set():
                    log.warning("lost the tickerplant %s (%s); reconnecting", self.tp, e)
            finally:
                conn.close()

    def idle_heartbeat(self, every_s: float = 1.0) -> None:
        """With no market data (so no cycles), still say the engine is alive, and end overrides
        whose time is up, on the wall clock."""
        while not self.stop.wait(every_s / 2):
            if self.ready.is_set():  # restored: an override lost in the downtime ends now
                with self.lock:
                    self.publish(self.engine.expire_overrides())
            if time.monotonic() - self.last_publish >= every_s:
                with self.lock:
                    self.publish([self.engine.heartbeat(time.time_ns(), "idle")])

    def functions(self) -> dict[str, Any]:
        """The IPC functions: .rte.kill[sym;strategy;who;note], .rte.reset[sym;strategy;who],
        .rte.reduce[sym;strategy;who], .rte.deactivate[who;note], .rte.activate[who],
        .rte.status[], .rte.limits[sym], .rte.override[sym;strategy;limit;value;seconds;who;note]
        (limit: a `limits` column such as maxQty, within its static ceiling, for seconds on the
        override clock: wall by default). ` is "every" for sym and strategy. With a users file the
        login name is recorded as who (a differing `who` argument goes into the note).
        Governance: .rte.approve[model;who;note] (a person re-approves the model: it binds again),
        .rte.shadow[model;who;note] (scored, not binding), .rte.drift[] (the last drift check, JSON),
        .rte.mark[sym;time;verdict;who;note] (a person marks the alert at `time` right or wrong)."""
        def action(kind: str):
            def call(conn, *args):
                from pretrade.ipc.codec import QError

                a = [_s(x) if isinstance(x, str | bytes) else "" for x in args]
                if kind in ("deactivate", "activate"):
                    who, note = (a + ["", ""])[:2]
                    sym = strategy = ALL
                else:
                    sym, strategy, who, note = (a + ["", "", "", ""])[:4]
                who, note = _acting(conn, who, note)
                try:
                    with self.lock:
                        self.publish(audit_first(self.engine.act(kind, sym, strategy, who, note)))
                except ValueError as e:
                    raise QError(str(e)) from None
                return f"{kind} {sym or '*'}/{strategy or '*'} by {who}"
            return call

        def status(conn, *_):
            e = self.engine
            with self.lock:
                return {"cycles": e.cycles, "seq": e.policy.seq, "instruments": len(e.features.syms),
                        "modelActive": e.policy.controls.model_active, "model": getattr(e.scorer, "version", ""),
                        "modelStatus": e.model_status if e.scorer is not None else "",
                        "drift": e.drift_status().get("worst", "off") if e.drift is not None else "off",
                        "modelFault": e.policy.controls.model_fault or e.model_error,
                        "breakers": sorted(e.policy.controls.breakers),
                        "kills": [f"{s or '*'}/{t or '*'}" for s, t in sorted(e.policy.controls.kills)],
                        "reducing": [f"{s or '*'}/{t or '*'}" for s, t in sorted(e.policy.controls.reducing)],
                        "overrides": e.overrides_in_force(),
                        "eventTime": np.datetime64(e.now, "ns"), "published": dict(self.published)}

        def limits(conn, sym=ALL, *_):
            sym = _s(sym) if sym else ALL
            with self.lock:
                rows = [r for r in self.engine.policy.last.values() if sym in (ALL, r.sym)]
            return limits_output(sorted(rows, key=lambda r: r.seq)).columns if rows else []

        def override(conn, sym, strategy, name, value, seconds, who=b"", note=b""):
            from pretrade.ipc.codec import QError

            who, note = _acting(conn, _s(who), _s(note))
            try:
                with self.lock:
                    self.publish(audit_first(self.engine.override(_s(sym), _s(strategy), _s(name),
                                                                  float(value), float(seconds), who, note)))
            except (ValueError, TypeError) as e:
                raise QError(str(e)) from None
            return f"override {_s(sym)}/{_s(strategy) or '*'} {_s(name)}={float(value):g} by {who}"

        def governance(method: str):
            def call(conn, model=b"", who=b"", note=b""):
                from pretrade.ipc.codec import QError

                model = _s(model)
                who, note = _acting(conn, _s(who), _s(note))
                try:
                    with self.lock:
                        self.publish(audit_first(getattr(self.engine, method)(model, who, note)))
                except ValueError as e:
                    raise QError(str(e)) from None
                return f"{method} {model} by {who}: status {self.engine.model_status}"
            return call

        def drift(conn, *_):
            import json

            with self.lock:
                return json.dumps(self.engine.drift_status())

        fs = {f".rte.{k}": action(k) for k in ACTIONS}
        fs[".rte.approve"] = governance("approve")
        fs[".rte.shadow"] = governance("to_shadow")
        fs[".rte.drift"] = drift

        def mark(conn, sym=b"", when=None, verdict=b"", who=b"", note=b""):
            from pretrade.ipc.codec import QError

            who, note = _acting(conn, _s(who), _s(note))
            try:
                with self.lock:
                    self.publish(self.engine.mark(_s(sym), _s(when) if isinstance(when, bytes) else when,
                                                  _s(verdict), who, note))
            except (ValueError, TypeError) as e:
                raise QError(str(e)) from None
            return f"mark {_s(sym)} {_s(verdict)} by {who}"

        fs[".rte.mark"] = mark
        fs[".rte.override"] = override
        fs[".rte.status"] = status
        fs[".rte.limits"] = limits
        return fs


def run(args: argparse.Namespace) -> int:
    """`pretrade rte`: subscribe to the tickerplant, publish limits, serve governance calls."""
    from pretrade.ipc.dispatch import Dispatcher
    from pretrade.ipc.server import serve_forever

    try:
        config = load_config(args.limits)
    except (ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    scorer, err = load_scorer(args.models)
    if scorer is None:
        log.critical("%s: every instrument on static limits", err)
    else:
        log.info("model %s loaded from %s", scorer.version, args.models)
    step_ns = int(args.step_ms * 1e6)
    drift_cfg: Any = False
    if not args.no_drift:
        from pretrade.models.drift import DriftConfig

        drift_cfg = DriftConfig(window_s=args.drift_window, check_s=args.drift_check)
    status, book, drift = load_governance(args.models, scorer, step_ns, drift_cfg)
    if not args.write_status:
        book = None  # status changes live in the journal only; the models folder is left alone
    if scorer is not None:
        log.info("model %s status %s; drift monitoring %s", scorer.version, status,
                 "on" if drift is not None else "off")
    engine = RiskEngine(config, scorer, err, step_ns=step_ns,
                        lateness_ns=int(args.lateness * 1e9), features_every=args.features_every,
                        model_status=status, status_book=book, drift=drift, labels_path=args.labels_file,
                        drift_action=args.drift_action, override_clock=args.override_clock)
    svc = Service(engine, args.tp, os.environ.get("PRETRADE_USER", ""),
                  os.environ.get("PRETRADE_PASSWORD", ""))
    threading.Thread(target=svc.subscribe_forever, name="rte-feed", daemon=True).start()
    threading.Thread(target=svc.idle_heartbeat, name="rte-heartbeat", daemon=True).start()

    class RteHandler(Dispatcher):
        def on_shutdown(self) -> None:
            svc.stop.set()

    users = None
    if args.users:
        from pretrade.ipc.auth import Users

        users = Users.load(args.users)
    log.info("risk engine listening on port %d, tickerplant %s", args.port, args.tp)
    serve_forever(RteHandler(svc.functions()), host=args.host, port=args.port, users=users)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=5013, help="IPC port for governance calls and status (default 5013)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--tp", default="localhost:5010", metavar="HOST:PORT",
                   help="tickerplant to subscribe to and publish to (default localhost:5010)")
    p.add_argument("--models", metavar="DIR", default="models",
                   help="folder with vae.onnx and its card vae.json (default models); if the model "
                        "fails to load, every instrument runs on static limits and a Critical alert says why")
    p.add_argument("--limits", metavar="FILE", help="static limits and policy (default config/limits.toml)")
    p.add_argument("--step-ms", type=float, default=100.0, help="cycle grid in event-time ms (default 100)")
    p.add_argument("--lateness", type=float, default=1.0, metavar="SECONDS",
                   help="run a grid cycle only once ticks this much later arrive (default 1); must "
                        "cover the feed's out-of-order span (the simulator feed's is under 1 s)")
    p.add_argument("--features-every", type=int, default=1, metavar="N",
                   help="publish the features table every N cycles (default 1: every cycle)")
    p.add_argument("--users", metavar="FILE", help="users file for IPC logins (default: no authentication)")
    p.add_argument("--drift-window", type=float, default=600.0, metavar="SECONDS",
                   help="rolling window of event time over which input drift (PSI, KS against the "
                        "model card's training reference) is judged (default 600)")
    p.add_argument("--drift-check", type=float, default=5.0, metavar="SECONDS",
                   help="judge drift every this many seconds of event time (default 5)")
    p.add_argument("--labels-file", type=Path, default=Path("data/labels/marks.jsonl"), metavar="FILE",
                   help="where .rte.mark appends people's marks of alerts (default data/labels/marks.jsonl; "
                        "`pretrade train` reads them as labels)")
    p.add_argument("--write-status", action="store_true",
                   help="also append the engine's status changes (drift take-off, .rte.approve, "
                        ".rte.shadow) to the models folder's status log and cards; without it they are "
                        "kept in the journal (a restart restores them) and the models folder is only read")
    p.add_argument("--drift-action", choices=DRIFT_ACTIONS, default="alert",
                   help="on input drift past the hard threshold: alert (default: a critical alert naming "
                        "the features; the model stays on) or takeoff (also take the model off: static "
                        "limits, scored in shadow, until a person's .rte.approve). The default is alert "
                        "because the thresholds were measured on 10-instrument markets; a 2-instrument "
                        "market measures past them (docs/models.md, Drift and governance)")
    p.add_argument("--override-clock", choices=CLOCKS, default="wall",
                   help="what a person's .rte.override seconds count: wall (default: the wall clock, "
                        "\"for the next 10 minutes\", also across a restart) or event (the data's clock; "
                        "for an engine on replayed data, so an override lasts that much market time at "
                        "any replay speed)")
    p.add_argument("--no-drift", action="store_true",
                   help="switch drift monitoring off (the model is then never taken off for drift)")
