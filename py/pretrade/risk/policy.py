"""The calibration policy: anomaly scores become tiers, tiers become limits, under human controls.

Rules (each has a test in tests/test_risk_policy.py):
- A score maps to a tier (Normal, Elevated, High Alert, Critical) by `PolicyConfig.tier_scores`.
- Tightening is immediate. Loosening is gradual: only after the score has stayed below
  `hysteresis` x the current tier's lower bound for `dwell_s`, and one tier at a time.
- A missing, NaN or stale score holds the current tier: it never loosens a limit.
- Tiers scale the static ceilings (max qty and notional, position, rate, aggressive band down;
  the passive band up, capped by its own ceiling); nothing ever exceeds a ceiling.
- Entering Critical trips the circuit breaker: the instrument is HALTED until a person resets it.
  Kill switches (instrument, strategy or firm-wide) halt the same way. Automation never lifts a
  halt; after a reset an instrument still in Critical is REDUCING until its tier drops.
- With the model deactivated (or failed) every instrument is on its static limits; halts stay.
- Every change of a limit row is a new `Limit` with the next `seq` and a reason.
- A person's override sets one limit within its static ceiling for a time on its clock: the wall
  clock in a live engine ("for the next 10 minutes"), event time on replayed data. Its audit text
  carries the value and expiry, so a restart restores it from the journal (`parse_override`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from pretrade.risk.limits import (
    ALL,
    LIMIT_FIELDS,
    TIERS,
    Limit,
    LimitValues,
    PolicyConfig,
    RiskConfig,
    StaticLimits,
)

log = logging.getLogger(__name__)

NO_TIME = np.iinfo(np.int64).min  # "not calm" / "never"
CRITICAL = 3


def tier_of(score: np.ndarray, cfg: PolicyConfig) -> np.ndarray:
    """Tier code (0..3) of each score; NaN scores give -1."""
    s = np.asarray(score, dtype=np.float64)
    t = np.searchsorted(np.asarray(cfg.tier_scores), s, side="right").astype(np.int8)
    t[~np.isfinite(s)] = -1
    return t


def step_tiers(tier: np.ndarray, calm_since: np.ndarray, score: np.ndarray, score_time: np.ndarray,
               now: int, cfg: PolicyConfig) -> tuple[np.ndarray, np.ndarray]:
    """One policy step for a batch of instruments: (new tier, new calm_since); inputs unchanged.

    `score_time` is when each score was computed (ns); a score older than `stale_s` at `now`, or
    NaN, holds the tier and resets the calm clock.
    """
    tier = np.asarray(tier, dtype=np.int8)
    stale = (now - np.asarray(score_time, dtype=np.int64)) > int(cfg.stale_s * 1e9)
    raw = tier_of(score, cfg)
    valid = (raw >= 0) & ~stale
    new_tier = tier.copy()
    new_calm = np.asarray(calm_since, dtype=np.int64).copy()

    up = valid & (raw > tier)
    new_tier[up] = raw[up]
    new_calm[up] = NO_TIME

    bounds = np.concatenate([[0.0], np.asarray(cfg.tier_scores)])  # lower bound of each tier
    calm = valid & (tier > 0) & (np.asarray(score) < cfg.hysteresis * bounds[np.maximum(tier, 0)])
    new_calm[~calm & ~up] = NO_TIME
    starting = calm & (new_calm == NO_TIME)
    new_calm[starting] = now
    down = calm & (now - new_calm >= int(cfg.dwell_s * 1e9))
    new_tier[down] = tier[down] - 1
    new_calm[down] = NO_TIME  # the next step down needs its own dwell
    return new_tier, new_calm


def scale(lim: StaticLimits, tier: int, cfg: PolicyConfig) -> LimitValues:
    """The static ceilings scaled for `tier`, before the trading state is applied; never above a
    ceiling (tier < 0: the ceilings)."""
    if tier < 0:
        return LimitValues(lim.max_qty, lim.max_notional, lim.band_bps, lim.band_bps,
                           lim.max_position, lim.max_rate)
    return LimitValues(
        max_qty=min(lim.max_qty, int(math.floor(lim.max_qty * cfg.qty_scale[tier]))),
        max_notional=min(lim.max_notional, lim.max_notional * cfg.qty_scale[tier]),
        band_bps=min(lim.band_bps, lim.band_bps * cfg.band_scale[tier]),
        passive_band_bps=min(lim.passive_band_bps, lim.band_bps * cfg.passive_band_scale[tier]),
        max_position=min(lim.max_position, int(math.floor(lim.max_position * cfg.position_scale[tier]))),
        max_rate=min(lim.max_rate, int(math.floor(lim.max_rate * cfg.rate_scale[tier]))),
    )


CLOCKS = ("wall", "event")
MAX_OVERRIDE_S = 7 * 86400.0  # an override longer than a week is a static limit change


@dataclass(frozen=True, slots=True)
class Override:
    """A person's temporary value for one limit, in force until `until` (ns) on its clock: "wall"
    (a risk officer's minutes, live) or "event" (the data's clock: as much market time at any
    replay speed)."""

    value: float
    until: int
    clock: str = "event"

    def expired(self, now: int, wall: int | None) -> bool:
        """Whether its time is up at event time `now` and wall time `wall` (None: unknown, held)."""
        t = now if self.clock == "event" else wall
        return t is not None and self.until <= t


def _stamp(ns: int) -> str:
    return f"{np.datetime_as_string(np.datetime64(ns, 'ns'), unit='ns')}Z"


def override_text(who: str, sym: str, strategy: str, name: str, o: Override, seconds: float) -> str:
    """The audit text of an override (its riskAlert row); `parse_override` reads it back."""
    return (f"override by {who} on {sym}/{strategy or '*'}: {name} = {o.value:.15g} for {seconds:g} s, "
            f"until {_stamp(o.until)} ({o.clock} clock)")


_OVERRIDE = re.compile(r": (\w+) = (\S+) for (\S+) s(?:, until (\S+)Z \((wall|event) clock\))?")


def parse_override(text: str, at: int) -> tuple[str, Override] | None:
    """(limit name, Override) from an override alert's text, None if it is not one. Text from
    before the expiry was written in it counts its seconds in event time from `at`, its time."""
    m = _OVERRIDE.search(text)
    if m is None:
        return None
    name, value, seconds, stamp, clock = m.groups()
    if stamp is None:
        return name, Override(float(value), at + int(float(seconds) * 1e9), "event")
    return name, Override(float(value), int(np.datetime64(stamp, "ns").astype(np.int64)), clock)


@dataclass(frozen=True)
class Action:
    """An audited human action: who did what to which scope, when (ns)."""

    time: int
    who: str
    kind: str       # kill, reset, reduce, deactivate, activate
    sym: str = ALL
    strategy: str = ALL
    note: str = ""


@dataclass(frozen=True)
class Controls:
    """The latched halts and manual settings; only `apply_action` (a person) loosens them."""

    kills: frozenset[tuple[str, str]] = frozenset()      # (sym or ALL, strategy or ALL)
    breakers: frozenset[str] = frozenset()                # instruments whose breaker tripped
    reducing: frozenset[tuple[str, str]] = frozenset()    # manual REDUCING scopes
    model_active: bool = True
    model_fault: str = ""                                 # why the model is out, if it failed

    def killed(self, sym: str, strategy: str) -> bool:
        k = self.kills
        return bool(k) and ((sym, strategy) in k or (sym, ALL) in k or (ALL, strategy) in k
                            or (ALL, ALL) in k)

    def reduced(self, sym: str, strategy: str) -> bool:
        r = self.reducing
        return bool(r) and ((sym, strategy) in r or (sym, ALL) in r or (ALL, strategy) in r
                            or (ALL, ALL) in r)


ACTIONS = ("kill", "reset", "reduce", "deactivate", "activate")


def apply_action(c: Controls, a: Action) -> Controls:
    """Controls after a person's action. `reset` lifts the kill switch of exactly that scope, any
    manual REDUCING of it, and (for an instrument scope) its circuit breaker."""
    if a.kind == "kill":
        return replace(c, kills=c.kills | {(a.sym, a.strategy)})
    if a.kind == "reduce":
        return replace(c, reducing=c.reducing | {(a.sym, a.strategy)})
    if a.kind == "reset":
        breakers = c.breakers
        if a.strategy == ALL:
            breakers = frozenset() if a.sym == ALL else breakers - {a.sym}
        return replace(c, kills=c.kills - {(a.sym, a.strategy)},
                       reducing=c.reducing - {(a.sym, a.strategy)}, breakers=breakers)
    if a.kind == "deactivate":
        return replace(c, model_active=False, model_fault=a.note or f"deactivated by {a.who}")
    if a.kind == "activate":
        return replace(c, model_active=True, model_fault="")
    raise ValueError(f"unknown action {a.kind!r}; known: {', '.join(ACTIONS)}")


def trading_state(sym: str, strategy: str, tier: int, c: Controls, cfg: PolicyConfig) -> tuple[str, str]:
    """(state, halt latch) of one instrument and strategy."""
    if c.killed(sym, strategy):
        return "HALTED", "kill"
    if sym in c.breakers:
        return "HALTED", "breaker"
    state = cfg.states[tier] if tier >= 0 else "ACTIVE"
    if state == "HALTED":  # a Critical tier without a latch: a person reset the breaker
        state = "REDUCING"
    if state == "ACTIVE" and c.reduced(sym, strategy):
        state = "REDUCING"
    return state, ""


@dataclass
class Scores:
    """One cycle's model output for a batch of instruments (aligned with `syms`)."""

    syms: list[str]
    score: np.ndarray          # NaN where there is none (not ready, model failed)
    score_time: np.ndarray     # ns; when each score was computed
    top: list[str]             # top contributing features, comma separated
    model: str = ""


@dataclass
class Policy:
    """The policy's state for every instrument, driven one cycle at a time.

    `cycle` and `act` return the limit rows that changed (with their seq) and the alerts; all
    state lives here, so a restart rebuilds it with `restore` from the last published rows.
    """

    config: RiskConfig
    seq: int = 0
    controls: Controls = field(default_factory=Controls)
    syms: list[str] = field(default_factory=list)
    tier: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    calm_since: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    last: dict[tuple[str, str], Limit] = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict)
    # people's temporary overrides: (sym, strategy) -> {limit field: Override}
    overrides: dict[tuple[str, str], dict[str, Override]] = field(default_factory=dict)

    def _ensure(self, syms: list[str]) -> tuple[np.ndarray, list[int]]:
        """Index of each sym in the state arrays, registering new ones; and the positions (in
        `syms`) of those that were new."""
        if syms == self.syms:  # the usual case: the same instruments in the same order
            return np.arange(len(syms)), []
        idx = np.empty(len(syms), dtype=np.int64)
        new = []
        for k, s in enumerate(syms):
            i = self._index.get(s)
            if i is None:
                i = self._index[s] = len(self.syms)
                self.syms.append(s)
                new.append(k)
            idx[k] = i
        if new:
            self.tier = np.concatenate([self.tier, np.zeros(len(new), np.int8)])
            self.calm_since = np.concatenate([self.calm_since, np.full(len(new), NO_TIME)])
        return idx, new

    def tiers(self, syms: list[str]) -> np.ndarray:
        """The current tier code of each of `syms` (registering new ones at Normal)."""
        return self.tier[self._ensure(syms)[0]]

    def cycle(self, now: int, scores: Scores, wall: int | None = None) -> tuple[list[Limit], list[dict]]:
        """Apply one cycle of scores at event time `now` (ns): changed limit rows and alerts.
        `wall` (ns) is the wall clock for overrides that run on it (None: they are held)."""
        cfg = self.config.policy
        expired = self._drop_expired(now, wall) if self.overrides else set()
        idx, fresh = self._ensure(scores.syms)
        old = self.tier[idx]
        if self.controls.model_active:
            new, calm = step_tiers(old, self.calm_since[idx], scores.score, scores.score_time, now, cfg)
        else:
            new, calm = np.zeros_like(old), np.full(len(idx), NO_TIME)
        self.tier[idx], self.calm_since[idx] = new, calm
        alerts: list[dict] = []
        tripped = np.flatnonzero((new == CRITICAL) & (old < CRITICAL))
        if len(tripped):
            syms = {scores.syms[k] for k in tripped}
            self.controls = replace(self.controls, breakers=self.controls.breakers | syms)
            for k in tripped:
                alerts.append(self._alert(now, scores.syms[k], "critical", "breaker", TIERS[CRITICAL],
                                          "automation", f"circuit breaker tripped: score "
                                          f"{scores.score[k]:.3f} ({scores.model}), top {scores.top[k]}; "
                                          "HALTED until a risk officer resets it"))
        changed = np.flatnonzero(new != old)
        for k in changed:
            if new[k] != CRITICAL:
                sev = "warning" if new[k] > old[k] else "info"
                alerts.append(self._alert(now, scores.syms[k], sev, "tier", TIERS[new[k]], "automation",
                                          f"tier {TIERS[old[k]]} -> {TIERS[new[k]]}: score "
                                          f"{scores.score[k]:.3f} ({scores.model}), top {scores.top[k]}"))
        rows = []
        for k in sorted(set(changed.tolist()) | set(fresh)):  # tier changed, or never published
            rows += self._limits_for(now, scores.syms[k], int(new[k]), float(scores.score[k]),
                                     scores.top[k], scores.model, "cycle")
        for sym in sorted(expired - {r.sym for r in rows}):
            rows += self._republish(now, sym, "override expired")
        return rows, alerts

    OVERRIDABLE = LIMIT_FIELDS

    def override(self, now: int, sym: str, strategy: str, name: str, value: float, seconds: float,
                 who: str, note: str = "", wall: int | None = None) -> tuple[list[Limit], list[dict]]:
        """A person sets one limit of (sym, strategy) to `value` for `seconds`, never above its
        static ceiling (ValueError if it would be); the changed rows and an audit alert. The time
        runs on the wall clock from `wall` (ns) when given, else on event time from `now`."""
        if name not in self.OVERRIDABLE:
            raise ValueError(f"limit {name!r} cannot be overridden; one of {', '.join(self.OVERRIDABLE)}")
        if sym not in self._index:
            raise ValueError(f"unknown instrument {sym!r}: the engine has seen {', '.join(self.syms) or 'none'}")
        if strategy not in self.config.strategy_keys():
            raise ValueError(f"unknown strategy {strategy!r}; configured: {', '.join(self.config.strategy_keys()[1:])}")
        ceiling = getattr(self.config.static(sym, strategy), name)
        if not 0 <= value <= ceiling or not 0 < seconds <= MAX_OVERRIDE_S:
            raise ValueError(f"{name} {value:g} for {seconds:g} s is outside the static bounds "
                             f"[0, {ceiling:g}] of {sym}/{strategy or '*'} (or the time is not in "
                             f"(0, {MAX_OVERRIDE_S:g}] s)")
        o = Override(float(value), (now if wall is None else wall) + int(seconds * 1e9),
                     "event" if wall is None else "wall")
        self.overrides.setdefault((sym, strategy), {})[name] = o
        rows = self._republish(now, sym, f"override {name}={value:g} for {seconds:g}s by {who}")
        text = override_text(who, sym, strategy, name, o, seconds)
        log.warning("%s %s", text, note)
        return rows, [self._alert(now, sym, "warning", "override", "", who,
                                  f"{text}: {note}" if note else text, strategy)]

    def _drop_expired(self, now: int, wall: int | None) -> set[str]:
        """Drop the overrides whose time is up; the instruments they were on."""
        syms = set()
        for key in list(self.overrides):
            cur = self.overrides[key]
            held = {k: o for k, o in cur.items() if not o.expired(now, wall)}
            if len(held) == len(cur):
                continue
            log.warning("override of %s/%s ended: %s", key[0], key[1] or "*",
                        ", ".join(f"{k}={o.value:g} ({o.clock} clock)" for k, o in cur.items() if k not in held))
            if held:
                self.overrides[key] = held
            else:
                del self.overrides[key]
            syms.add(key[0])
        return syms

    def expire_overrides(self, now: int, wall: int | None) -> list[Limit]:
        """Between cycles (a quiet market still has a wall clock): drop the overrides whose time
        is up and republish their instruments' rows at event time `now`."""
        rows: list[Limit] = []
        for sym in sorted(self._drop_expired(now, wall)) if self.overrides else ():
            rows += self._republish(now, sym, "override expired")
        return rows

    def reconcile(self, now: int, wall: int | None) -> list[Limit]:
        """After `restore`: end overrides whose time ran out while down, then republish any
        instrument whose rows differ from what the restored state gives (an audited action whose
        rows a crash cut off). In the usual case nothing differs and nothing is published."""
        rows = self.expire_overrides(now, wall)
        for sym in list(self.syms):
            rows += self._republish(now, sym, "restart: limits follow the audit trail")
        return rows

    def _republish(self, now: int, sym: str, why: str) -> list[Limit]:
        i = self._index[sym]
        prev = self.last.get((sym, ALL))
        return self._limits_for(now, sym, int(self.tier[i]), prev.score if prev else math.nan,
                                prev.top if prev else "", prev.model if prev else "", why)

    def _limits_for(self, now: int, sym: str, tier: int, score: float, top: str, model: str,
                    why: str) -> list[Limit]:
        cfg = self.config.policy
        active = self.controls.model_active
        rows = []
        for strategy in self.config.strategy_keys():
            static = self.config.static(sym, strategy)
            v = scale(static, tier if active else -1, cfg)
            held = self.overrides.get((sym, strategy))
            if held:  # within the static ceiling, whatever the tier says
                v = replace(v, **{k: type(getattr(v, k))(min(o.value, getattr(static, k)))
                                  for k, o in held.items()})
            state, halt = trading_state(sym, strategy, tier if active else 0, self.controls, cfg)
            prev = self.last.get((sym, strategy))
            tier_name = TIERS[tier] if active else "NORMAL"
            cand = Limit(now, sym, strategy, 0, tier_name, state, halt, v.max_qty, v.max_notional,
                         v.band_bps, v.passive_band_bps, v.max_position, v.max_rate, score, top,
                         model if active else "", prev.tier if prev else "",
                         prev.max_qty if prev else -1, "")
            if prev is not None and prev.values() == cand.values():
                continue
            self.seq += 1
            reason = self._reason(prev, cand, why)
            lim = replace(cand, seq=self.seq, reason=reason)
            self.last[(sym, strategy)] = lim
            rows.append(lim)
        return rows

    def _reason(self, prev: Limit | None, new: Limit, why: str) -> str:
        parts = [why]
        if not self.controls.model_active:
            parts.append(f"static limits: model off ({self.controls.model_fault})")
        elif prev is None or prev.tier != new.tier:
            parts.append(f"tier {prev.tier if prev else '-'} -> {new.tier}, score {new.score:.3f}"
                         f" ({new.model or 'no model'}), top {new.top or '-'}")
        if prev is not None:
            for name, a, b in (("maxQty", prev.max_qty, new.max_qty), ("state", prev.state, new.state),
                               ("maxPosition", prev.max_position, new.max_position),
                               ("bandBps", prev.band_bps, new.band_bps)):
                if a != b:
                    parts.append(f"{name} {a} -> {b}")
        if new.halt:
            parts.append(f"halted: {new.halt}")
        return "; ".join(parts)

    def _alert(self, now: int, sym: str, severity: str, kind: str, tier: str, who: str, text: str,
               strategy: str = ALL) -> dict:
        return {"time": now, "sym": sym, "strategy": strategy, "seq": self.seq, "severity": severity,
                "kind": kind, "tier": tier, "who": who, "text": text}

    def act(self, action: Action) -> tuple[list[Limit], list[dict]]:
        """Apply a person's action now; the limit rows it changes and one audit alert."""
        self.controls = apply_action(self.controls, action)
        log.warning("%s by %s on %s/%s %s", action.kind, action.who, action.sym or "*",
                    action.strategy or "*", action.note)
        rows = []
        for i, s in enumerate(self.syms):
            if action.sym in (ALL, s):
                prev = self.last.get((s, ALL))
                rows += self._limits_for(action.time, s, int(self.tier[i]),
                                         prev.score if prev else math.nan, prev.top if prev else "",
                                         prev.model if prev else "", f"{action.kind} by {action.who}")
        sev = "critical" if action.kind in ("kill", "deactivate") else "warning"
        text = f"{action.kind} by {action.who} on {action.sym or '*'}/{action.strategy or '*'}"
        if action.note:
            text += f": {action.note}"
        return rows, [self._alert(action.time, action.sym, sev, action.kind, "", action.who, text,
                                  action.strategy)]

    def fail_model(self, now: int, cause: str) -> tuple[list[Limit], list[dict]]:
        """The model failed to load or score: static limits for all, and a Critical alert."""
        if not self.controls.model_active and self.controls.model_fault == cause:
            return [], []
        rows, _ = self.act(Action(now, "automation", "deactivate", note=cause))
        return rows, [self._alert(now, ALL, "critical", "model", TIERS[CRITICAL], "automation",
                                  f"model failed, static limits in force: {cause}")]

    def restore(self, rows: list[Limit], actions: list[Action] = (),
                overrides: Iterable[tuple[str, str, str, Override]] = ()) -> None:
        """Rebuild from what was published, in journal order: the limit rows (seq, last values,
        tiers, tripped breakers), the audited actions (kill switches, resets, model on/off) and
        the overrides, as (sym, strategy, limit field, Override). Overrides whose time is up are
        kept until the next cycle or `expire_overrides`, which republishes their rows."""
        for a in actions:
            self.controls = apply_action(self.controls, a)
        for lim in rows:
            self.seq = max(self.seq, lim.seq)
            self.last[(lim.sym, lim.strategy)] = lim
        breakers = set()
        for (sym, strategy), lim in self.last.items():
            i = self._ensure([sym])[0][0]
            if strategy == ALL and lim.tier in TIERS:
                self.tier[i] = TIERS.index(lim.tier)
            if lim.halt == "breaker":
                breakers.add(sym)
        self.controls = replace(self.controls, breakers=frozenset(breakers))
        for sym, strategy, name, o in overrides:
            self._ensure([sym])
            self.overrides.setdefault((sym, strategy), {})[name] = o
