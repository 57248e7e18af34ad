"""Static limits (config/limits.toml) and the dynamic limit record the engine publishes.

The static limits are the ceilings a person set; the policy (pretrade.risk.policy) scales them
by tier and never above them. `Limit` is one row of the `limits` table: what the gateway checks
orders against, with the reason it has its values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pretrade.config import CONFIG_DIR, load_toml

TIERS = ("NORMAL", "ELEVATED", "HIGH_ALERT", "CRITICAL")
STATES = ("ACTIVE", "REDUCING", "HALTED")
ALL = ""  # the strategy (or instrument) key meaning "every one"


@dataclass(frozen=True, slots=True)
class LimitValues:
    """The six limit values, declared once: the static ceilings (StaticLimits), the policy's
    tier-scaled values and each published `limits` row (Limit) are all LimitValues."""

    max_qty: int
    max_notional: float
    band_bps: float
    passive_band_bps: float
    max_position: int
    max_rate: int


LIMIT_FIELDS = tuple(f.name for f in fields(LimitValues))


def column_name(name: str) -> str:
    """The `limits` table's column of a limit field: max_qty -> maxQty."""
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


@dataclass(frozen=True, slots=True)
class StaticLimits(LimitValues):
    """Ceilings for one instrument and strategy (validated: finite, >= 0, passive band >= band)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"static limit {f.name} must be a finite number >= 0, got {v!r}")
        if self.passive_band_bps < self.band_bps:
            raise ValueError("passive_band_bps (the widened band's ceiling) must be >= band_bps")

    def tighter(self, overrides: dict[str, Any]) -> StaticLimits:
        """These limits with `overrides` applied where they are tighter (smaller)."""
        return replace(self, **{k: min(getattr(self, k), v) for k, v in overrides.items()})


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """Static parameters of the pre-trade checks that do not depend on the instrument."""

    fat_finger_threshold: float = 0.5
    max_session_rate: int = 500
    duplicate_window_ms: int = 1000
    capital: float = 1e8
    max_concentration: float = 0.05
    restricted: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """How tiers scale the static limits, and how fast limits may loosen again."""

    tier_scores: tuple[float, float, float] = (0.05, 0.3, 0.9)
    qty_scale: tuple[float, ...] = (1.0, 0.5, 0.1, 0.0)
    position_scale: tuple[float, ...] = (1.0, 0.75, 0.5, 0.0)
    rate_scale: tuple[float, ...] = (1.0, 0.75, 0.5, 0.0)
    band_scale: tuple[float, ...] = (1.0, 1.0, 0.75, 0.5)
    passive_band_scale: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0)
    states: tuple[str, ...] = ("ACTIVE", "ACTIVE", "ACTIVE", "HALTED")
    hysteresis: float = 0.8
    dwell_s: float = 30.0
    stale_s: float = 2.0

    def __post_init__(self) -> None:
        if list(self.tier_scores) != sorted(self.tier_scores) or len(self.tier_scores) != 3:
            raise ValueError("policy.tier_scores: three increasing scores (Elevated, High Alert, Critical)")
        for name in ("qty_scale", "position_scale", "rate_scale", "band_scale"):
            v = getattr(self, name)
            if len(v) != 4 or any(not 0 <= x <= 1 for x in v) or list(v) != sorted(v, reverse=True):
                raise ValueError(f"policy.{name}: four factors in [0, 1], not increasing with the tier")
        if len(self.passive_band_scale) != 4 or min(self.passive_band_scale) < 0:
            raise ValueError("policy.passive_band_scale: four factors >= 0")
        if len(self.states) != 4 or any(s not in STATES for s in self.states):
            raise ValueError(f"policy.states: four of {STATES}")
        if self.states[3] != "HALTED":
            raise ValueError("policy.states: Critical must halt (the circuit breaker)")
        if not 0 < self.hysteresis <= 1 or self.dwell_s < 0 or self.stale_s <= 0:
            raise ValueError("policy: hysteresis in (0, 1], dwell_s >= 0, stale_s > 0")


@dataclass(frozen=True)
class RiskConfig:
    """Everything in config/limits.toml."""

    default: StaticLimits
    instruments: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategies: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: CheckConfig = CheckConfig()
    policy: PolicyConfig = PolicyConfig()

    def static(self, sym: str, strategy: str = ALL) -> StaticLimits:
        """The ceilings for `sym` traded by `strategy` (ALL: the instrument's own). An instrument
        section sets that instrument's values; a strategy section can only tighten them."""
        lim = replace(self.default, **self.instruments[sym]) if sym in self.instruments else self.default
        if strategy in self.strategies:
            lim = lim.tighter(self.strategies[strategy])
        return lim

    def strategy_keys(self) -> list[str]:
        """The strategies the engine publishes limits for: ALL, then each configured one."""
        return [ALL, *self.strategies]


def _overrides(section: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    out = {}
    for name, values in section.items():
        unknown = set(values) - set(LIMIT_FIELDS)
        if unknown:
            raise ValueError(f"limits config [{where}.{name}]: unknown fields {sorted(unknown)}; "
                             f"known: {sorted(LIMIT_FIELDS)}")
        out[name] = dict(values)
    return out


def parse_config(data: dict[str, Any]) -> RiskConfig:
    """A RiskConfig from the parsed TOML, with errors naming the section at fault."""
    if "default" not in data:
        raise ValueError("limits config: missing [default] section")
    try:
        default = StaticLimits(**data["default"])
    except TypeError as e:
        raise ValueError(f"limits config [default]: {e}") from None
    instruments = _overrides(data.get("instrument", {}), "instrument")
    strategies = _overrides(data.get("strategy", {}), "strategy")
    for o in instruments.values():  # validate each instrument now, not at its first order
        replace(default, **o)
    c = dict(data.get("checks", {}))
    c["restricted"] = frozenset(c.get("restricted", ()))
    p = {k: tuple(v) if isinstance(v, list) else v for k, v in data.get("policy", {}).items()}
    try:
        checks, policy = CheckConfig(**c), PolicyConfig(**p)
    except TypeError as e:
        raise ValueError(f"limits config [checks] or [policy]: {e}") from None
    return RiskConfig(default, instruments, strategies, checks, policy)


def load_config(path: str | Path | None = None) -> RiskConfig:
    """config/limits.toml (or `path`) as a RiskConfig."""
    p = Path(path) if path else CONFIG_DIR / "limits.toml"
    try:
        return parse_config(load_toml(p))
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None


@dataclass(frozen=True)
class _LimitKey:
    """The leading columns of a `limits` row: the first fields of Limit."""

    time: int              # ns since the epoch (event time of the cycle that set it)
    sym: str
    strategy: str
    seq: int
    tier: str
    state: str
    halt: str              # why HALTED is latched: "" (not latched), "breaker", "kill"


@dataclass(frozen=True, slots=True)
class Limit(LimitValues, _LimitKey):
    """The dynamic limits of one instrument and strategy: one row of the `limits` table.

    Fields in column order: _LimitKey's (time .. halt), LimitValues' (max_qty .. max_rate), then
    the explanation below (dataclass fields run from the last base to the class itself)."""

    score: float = math.nan
    top: str = ""          # top contributing features, comma separated
    model: str = ""
    prev_tier: str = ""
    prev_max_qty: int = -1
    reason: str = ""

    def values(self) -> tuple:
        """What a change is judged on: everything but time, seq and the explanation."""
        return (self.tier, self.state, self.halt, self.max_qty, self.max_notional, self.band_bps,
                self.passive_band_bps, self.max_position, self.max_rate)

    def row(self) -> list[Any]:
        """The row in the `limits` table's column order (time as ns)."""
        return [self.time, self.sym, self.strategy, self.seq, self.tier, self.state, self.halt,
                self.max_qty, self.max_notional, self.band_bps, self.passive_band_bps,
                self.max_position, self.max_rate, self.score, self.top, self.model, self.prev_tier,
                self.prev_max_qty, self.reason]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Limit:
        """A Limit from a `limits` row given as a mapping of column name to value."""
        def s(v: Any) -> str:
            return v.decode() if isinstance(v, bytes) else str(v if v is not None else "")

        t = row["time"]
        t = int(t.value if hasattr(t, "value") else (t.astype("datetime64[ns]").astype("int64")
                                                     if hasattr(t, "astype") else t))
        return cls(t, s(row["sym"]), s(row["strategy"]), int(row["seq"]), s(row["tier"]),
                   s(row["state"]), s(row["halt"]), int(row["maxQty"]), float(row["maxNotional"]),
                   float(row["bandBps"]), float(row["passiveBandBps"]), int(row["maxPosition"]),
                   int(row["maxRate"]), float(row["score"]), s(row["top"]), s(row["model"]),
                   s(row["prevTier"]), int(row["prevMaxQty"]), s(row["reason"]))


def static_limit(sym: str, strategy: str, lim: StaticLimits, time: int = 0, seq: int = 0,
                 reason: str = "static limits") -> Limit:
    """The Limit a static ceiling gives when no model is in play (state ACTIVE, tier NORMAL)."""
    return Limit(time, sym, strategy, seq, "NORMAL", "ACTIVE", "", lim.max_qty, lim.max_notional,
                 lim.band_bps, lim.band_bps, lim.max_position, lim.max_rate, reason=reason)


class LimitBook:
    """The in-process limits table a checker reads: newest seq per (sym, strategy) wins.

    `get(sym, strategy)` falls back to the instrument's ALL-strategies row; None when the
    instrument has no limits yet (the caller must then refuse: it never fails open).
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], Limit] = {}
        self.last_seq = 0
        self.updated_ns = 0  # event time of the newest row applied

    def apply(self, lim: Limit) -> bool:
        """Take `lim` if it is newer than what the table holds for its key; True if taken."""
        key = (lim.sym, lim.strategy)
        cur = self._rows.get(key)
        if cur is not None and cur.seq >= lim.seq:
            return False
        self._rows[key] = lim
        if lim.seq > self.last_seq:
            self.last_seq = lim.seq
        if lim.time > self.updated_ns:
            self.updated_ns = lim.time
        return True

    def get(self, sym: str, strategy: str = ALL) -> Limit | None:
        """The limits for `sym` and `strategy`, else the instrument's own, else None."""
        rows = self._rows
        lim = rows.get((sym, strategy))
        return lim if lim is not None else rows.get((sym, ALL))

    def __len__(self) -> int:
        return len(self._rows)
