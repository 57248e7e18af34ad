"""Named market scenarios: each turns parameters into a Plan for the simulator, with ground truth.

`pretrade scenario --list` lists them; `pretrade scenario NAME --seed N --out DIR` runs one and
writes every table and the labels as Parquet. `pretrade scenario flash-crash` without --out plays
the story end to end through the real processes (pretrade.story; --json FILE, --report DIR). Times such as `at` are seconds from the start of
the run, or a fraction of the run when below 1.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pretrade.market.instruments import Instrument
from pretrade.market.orderflow import OrderFlow
from pretrade.market.simulator import BUY, NS, SELL, Metaorder, Plan, neutral_plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    """A named scenario: what it shows, its parameters with defaults, and its plan builder."""

    name: str
    doc: str
    params: dict
    build: Callable[..., Plan]


@dataclass(frozen=True)
class Context:
    """What a scenario builder knows about the run."""

    insts: list[Instrument]
    n_sec: int
    start_ns: int
    start_tod: float
    rng: np.random.Generator

    def sec(self, at: float) -> int:
        """A time parameter (seconds, or a fraction of the run when below 1) as a second index."""
        s = at * self.n_sec if 0 <= at < 1 else at
        if not 0 <= s < self.n_sec:
            raise ValueError(f"time {at} is outside the run (0..{self.n_sec} s)")
        return int(s)

    def index(self, sym: str) -> int:
        """The position of `sym` in the run (its first instrument when sym is empty)."""
        names = [i.sym for i in self.insts]
        if not sym:
            return 0
        if sym not in names:
            raise ValueError(f"sym {sym!r} is not in this run ({', '.join(names)})")
        return names.index(sym)


def _smooth(x: np.ndarray) -> np.ndarray:
    """A 0 -> 1 smoothstep of x clipped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def random_metaorders(ctx: Context, per_hour: float) -> list[Metaorder]:
    """Execution algos working parent orders of log-uniform size at a steady pace (one clip / 3 s)."""
    out = []
    for ins in ctx.insts:
        n = ctx.rng.poisson(per_hour * ctx.n_sec / 3600)
        unit = ins.mm_size * ins.lot
        clip = max(ins.lot, unit // ins.lot * ins.lot)
        for _ in range(n):
            qty = int(clip * math.exp(ctx.rng.uniform(math.log(4), math.log(150))))
            qty = max(clip, qty // ins.lot * ins.lot)
            start = float(ctx.rng.uniform(0, max(1.0, ctx.n_sec - 300)))
            side = BUY if ctx.rng.random() < 0.5 else SELL
            out.append(Metaorder(ins.sym, start, side, qty, clip, 3.0))
    return out


# ---- the scenarios --------------------------------------------------------------------------------
def normal(ctx: Context, metaorders_per_hour: float) -> Plan:
    plan = neutral_plan(len(ctx.insts), ctx.n_sec)
    plan.metaorders = random_metaorders(ctx, metaorders_per_hour)
    return plan


def vol_regime_shift(ctx: Context, at: float, factor: float, metaorders_per_hour: float) -> Plan:
    plan = normal(ctx, metaorders_per_hour)
    s = ctx.sec(at)
    plan.vol_mult[:, s:] = factor
    plan.stress[:, s:] = min(0.3, 0.1 * (factor - 1))
    plan.stress_labels = [{"sym": i.sym, "kind": "vol-regime", "start": s, "peak": s, "end": ctx.n_sec - 1}
                          for i in ctx.insts]
    return plan


def liquidity_drought(ctx: Context, at: float, length: float, depth: float,
                      metaorders_per_hour: float) -> Plan:
    plan = normal(ctx, metaorders_per_hour)
    s, n = ctx.sec(at), int(length)
    ramp = np.arange(ctx.n_sec) - s
    shape = _smooth(ramp / 30.0) * (1 - _smooth((ramp - n) / 30.0))
    plan.stress += depth * shape
    plan.vol_mult *= 1 + 0.5 * depth * shape
    plan.stress_labels = [{"sym": i.sym, "kind": "liquidity-drought", "start": s, "peak": s + 30,
                           "end": min(ctx.n_sec - 1, s + n + 30)} for i in ctx.insts]
    return plan


_HEADLINES = {
    "neutral": ["{s} to present at industry conference", "{s} confirms dividend date",
                "Analyst reiterates rating on {s}", "{s} files quarterly report on schedule"],
    "negative": "{s} shares halted in pre-market after regulator opens probe; guidance withdrawn",
}


def news_shock(ctx: Context, at: float, sym: str, sentiment: float, impact: float,
               background_per_hour: float) -> Plan:
    if not -1 <= sentiment <= 1:
        raise ValueError(f"sentiment {sentiment} must be in [-1, 1]")
    plan = normal(ctx, 1.0)
    s, i = ctx.sec(at), ctx.index(sym)
    ramp = np.arange(ctx.n_sec) - s
    plan.shift[i] += impact * sentiment * _smooth(ramp / 20.0)
    spike = np.where(ramp >= 0, np.exp(-np.maximum(ramp, 0) / 120.0), 0.0)
    plan.stress[i] = np.maximum(plan.stress[i], 0.9 * abs(sentiment) * spike)
    plan.vol_mult[i] *= 1 + 2.0 * abs(sentiment) * spike
    rng = ctx.rng
    for _ in range(rng.poisson(background_per_hour * ctx.n_sec / 3600)):
        k = int(rng.integers(len(ctx.insts)))
        text = _HEADLINES["neutral"][int(rng.integers(4))].format(s=ctx.insts[k].sym)
        plan.news.append((ctx.start_ns + int(rng.uniform(0, ctx.n_sec) * NS), ctx.insts[k].sym,
                          text, round(float(rng.uniform(-0.2, 0.3)), 3)))
    name = ctx.insts[i].sym
    plan.news.append((ctx.start_ns + s * NS, name, _HEADLINES["negative"].format(s=name), sentiment))
    plan.news.sort()
    plan.stress_labels = [{"sym": name, "kind": "news-shock", "start": s, "peak": s + 20,
                           "end": min(ctx.n_sec - 1, s + 360)}]
    return plan


def flash_crash(ctx: Context, at: float, sym: str, severity: float, speed: float, recovery: float,
                recovery_time: float, clip: int, interval: float) -> Plan:
    if not 0 < severity < 0.5 or speed <= 0 or not 0 <= recovery <= 1:
        raise ValueError("flash-crash needs 0 < severity < 0.5, speed > 0 and 0 <= recovery <= 1")
    plan = normal(ctx, 1.0)
    s, i = ctx.sec(at), ctx.index(sym)
    ins = ctx.insts[i]
    ramp = np.arange(ctx.n_sec) - s
    fall = _smooth(ramp / speed)
    back = _smooth((ramp - speed) / recovery_time)
    plan.shift[i] += math.log(1 - severity) * (fall - recovery * back)
    stress = _smooth(ramp / 8.0) * (1 - back)
    plan.stress[i] = np.maximum(plan.stress[i], stress)
    plan.vol_mult[i] *= 1 + 1.5 * stress
    for k, other in enumerate(ctx.insts):  # contagion through the common factor, much weaker
        if k != i:
            plan.shift[k] += 0.15 * other.beta * math.log(1 - severity) * (fall - recovery * back)
            plan.stress[k] = np.maximum(plan.stress[k], 0.25 * stress)
    size = clip * ins.lot
    children = int(speed / interval) + 1
    plan.metaorders.append(Metaorder(ins.sym, float(s), SELL, size * children, size, interval,
                                     style="iceberg", kind="iceberg"))
    plan.stress_labels = [{"sym": ins.sym, "kind": "flash-crash", "start": s, "peak": s + speed,
                           "end": min(ctx.n_sec - 1, s + speed + recovery_time)}]
    return plan


def fat_finger(ctx: Context, orders_per_hour: float, error_rate: float, firm_seed: int) -> Plan:
    plan = normal(ctx, 1.0)
    plan.orderflow = OrderFlow(ctx.rng, ctx.insts, ctx.n_sec, ctx.start_ns, ctx.start_tod,
                               orders_per_hour, error_rate, firm_seed)
    return plan


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("normal", "an orderly market with execution algos working metaorders (impact labels)",
             {"metaorders_per_hour": 2.0}, normal),
    Scenario("vol-regime-shift", "volatility jumps by `factor` at `at` and stays there",
             {"at": 0.5, "factor": 2.5, "metaorders_per_hour": 2.0}, vol_regime_shift),
    Scenario("liquidity-drought", "market makers shrink and widen quotes for `length` seconds from `at`",
             {"at": 0.4, "length": 600.0, "depth": 0.7, "metaorders_per_hour": 2.0}, liquidity_drought),
    Scenario("news-shock", "a negative headline on `sym` at `at` (news table); price reprices by impact*sentiment",
             {"at": 0.5, "sym": "", "sentiment": -0.8, "impact": 0.02, "background_per_hour": 6.0}, news_shock),
    Scenario("flash-crash", "an iceberg seller overwhelms `sym` at `at`: spread 1->3 ticks, ~2% fall in `speed` s, partial recovery",
             {"at": 0.5, "sym": "", "severity": 0.02, "speed": 45.0, "recovery": 0.5,
              "recovery_time": 300.0, "clip": 100, "interval": 1.0}, flash_crash),
    Scenario("fat-finger", "the firm's own order flow (order table) with labelled erroneous orders; "
             "`firm_seed` fixes the desk (traders and habits) across days, the run's seed drives the day",
             {"orders_per_hour": 600.0, "error_rate": 0.03, "firm_seed": 7}, fat_finger),
]}


def build_plan(name: str, insts: list[Instrument], n_sec: int, start_ns: int, start_tod: float,
               rng: np.random.Generator, params: dict) -> tuple[Plan, dict]:
    """The plan of scenario `name` with `params` over its defaults; also the parameters used."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    sc = SCENARIOS[name]
    unknown = set(params) - set(sc.params)
    if unknown:
        raise ValueError(f"scenario {name} has no parameter(s) {sorted(unknown)}; it takes {sorted(sc.params)}")
    used = {**sc.params, **params}
    ctx = Context(insts, n_sec, start_ns, start_tod, rng)
    return sc.build(ctx, **used), used


# ---- the command ----------------------------------------------------------------------------------
def parse_params(items: list[str], name: str) -> dict:
    """KEY=VALUE strings as scenario parameters, typed like the scenario's defaults."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    defaults, out = SCENARIOS[name].params, {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"bad parameter {item!r}: use KEY=VALUE with KEY in {sorted(defaults)}")
        out[key] = type(defaults[key])(value)
    return out


def describe() -> str:
    """One line per scenario: name, what it does, parameters with defaults."""
    lines = []
    for sc in SCENARIOS.values():
        params = " ".join(f"{k}={v!r}" for k, v in sc.params.items())
        lines.append(f"{sc.name:18} {sc.doc}\n{'':18} params: {params}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="scenario to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the scenarios with their parameters")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    parser.add_argument("--syms", nargs="+", help="instruments (default: all ten of the universe)")
    parser.add_argument("--duration", default="30m", help="run length: seconds or 90s, 30m, 6.5h (default 30m)")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                        help="a scenario parameter, e.g. -p severity=0.03 (repeatable)")
    parser.add_argument("--out", help="folder to write TABLE.parquet and labels_*.parquet into")
    parser.add_argument("--json", metavar="FILE",
                        help="flash-crash without --out: run the story end to end (static, then dynamic limits) "
                             "and write its facts here (docs/operations.md)")
    parser.add_argument("--report", metavar="DIR", help="flash-crash without --out: write the story's HTML report here")


def run(args: argparse.Namespace) -> int:
    if args.list or not args.name:
        print(describe())
        return 0
    if args.name == "flash-crash" and not args.out:  # the story through the real processes
        from pretrade.story.cli import run_flash_crash

        return run_flash_crash(args)
    from pathlib import Path

    from pretrade.market.simulator import simulate

    try:
        params = parse_params(args.param, args.name)
        res = simulate(args.name, args.seed, args.syms, args.duration, **params)
    except ValueError as e:
        log.error("%s", e)
        return 2
    for name, df in res.frames.items():
        print(f"{name:10} {len(df):>10,} rows")
    for name, df in res.labels.items():
        print(f"labels {name:10} {len(df):>6,} rows")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, df in res.frames.items():
            df.to_parquet(out / f"{name}.parquet", index=False)
        for name, df in res.labels.items():
            df.to_parquet(out / f"labels_{name}.parquet", index=False)
        print(f"written to {out}")
    return 0
