"""Benchmark of the real-time risk engine: one cycle for 100, 1,000 and 5,000 instruments.

    .venv/bin/python scripts/bench_rte.py                  # 100, 1000, 5000 instruments
    .venv/bin/python scripts/bench_rte.py --sizes 1000 --cycles 300

Each instrument gets a quote (and every fifth a trade) every 100 ms of event time, fed as the
tickerplant delivers it (one update per table per step, a dict of columns). Every instrument is
ready (short warm-up) so every one is scored: the worst case. The cycle is the engine's own
`RiskEngine.cycle` (features, scoring, policy, every output table's rows) plus the encoding of
those rows as the .u.upd messages the engine sends, timed inside the real ingest path. Its parts
are re-timed one by one on the warmed engine: features (FeatureEngine.snapshot), scoring (the
VAE through onnxruntime, models/vae.onnx), policy (tiers, limits, alerts) and publish (features,
limits and alerts encoded). Tick-to-limit: from the arrival of the update that completes a grid
step (lateness 0) to the encoded rows, i.e. the whole ingest -> cycle -> encode path, p50 and
p99. The cycle's CPU time (time.thread_time; onnxruntime runs on the calling thread) is printed
too: on a shared machine it shows the work done apart from waiting for a core. After the warm-up
Before the warm-up the heap is frozen as the engine process does after its restore
(`--no-freeze`: not); the garbage collector's pauses are printed per generation, for the timed
cycles and for the warm-up (a burst: every instrument turns ready and alerts at once). Also the
pre-trade checks (no model) and the limit lookup, per call.

To compare two versions of the engine in one sitting, run this script alternately with each
tree first on the path (PYTHONPATH=/path/to/other/py), several times, and compare medians.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np

os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")

from pretrade.features.spec import FeatureConfig  # noqa: E402
from pretrade.ipc.client import payload_of  # noqa: E402
from pretrade.risk import engine as E  # noqa: E402
from pretrade.risk.checks import Context, Order, check_order  # noqa: E402
from pretrade.risk.limits import LimitBook, load_config  # noqa: E402
from pretrade.risk.policy import Scores  # noqa: E402

STEP = 100_000_000
T0 = np.datetime64("2026-11-20T14:30:00", "ns").view(np.int64)


def ticks(n: int, k: int, rng: np.random.Generator, mids: np.ndarray) -> dict[str, dict]:
    """Step k's updates for n instruments: a quote each, a trade for every fifth."""
    mids *= np.exp(rng.normal(0, 2e-4, n))
    t = T0 + k * STEP + rng.integers(1, STEP - 1, n)
    order = np.argsort(t)
    t, syms, m = t[order], np.array([f"S{i:05d}" for i in range(n)], dtype=object)[order], mids[order]
    half = 0.005 * m
    quote = {"time": t.view("datetime64[ns]"), "sym": syms, "bid": m - half, "ask": m + half,
             "bsize": rng.integers(100, 1000, n), "asize": rng.integers(100, 1000, n)}
    pick = slice(0, n, 5)
    trade = {"time": t[pick].view("datetime64[ns]"), "sym": syms[pick], "price": m[pick],
             "size": rng.integers(1, 100, len(t[pick])),
             "side": np.where(rng.random(len(t[pick])) < 0.5, "buy", "sell").astype(object)}
    return {"quote": quote, "trade": trade}


def pct(x: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(x), q))


class GcPauses:
    """The garbage collector's pauses, by generation, while recording."""

    def __init__(self) -> None:
        self.by_gen: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._t0 = 0.0
        self.on = False

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self.on:
            self.by_gen[info["generation"]].append(time.perf_counter() - self._t0)

    def text(self) -> str:
        return ", ".join(f"gen{g} {len(v)} (max {max(v, default=0) * 1e3:.1f} ms)" for g, v in self.by_gen.items())


def bench_size(n: int, cycles: int, warm: int, scorer, freeze: bool = True) -> dict:
    rng = np.random.default_rng(n)
    mids = np.full(n, 100.0)
    eng = E.RiskEngine(load_config(), scorer, "" if scorer else "no model", lateness_ns=0,
                       feature_config=FeatureConfig(warmup_steps=5))
    parts: dict[str, list[float]] = {"features": [], "scoring": [], "policy": [], "publish": []}
    t2l: list[float] = []
    cycle: list[float] = []
    cpu: list[float] = []
    inner = eng.cycle

    def timed_cycle(g: int) -> list:
        c0, u0 = time.perf_counter(), time.thread_time()
        outs = inner(g)
        for o in outs:
            payload_of((".u.upd", o.table, o.columns))
        cycle.append(time.perf_counter() - c0)
        cpu.append(time.thread_time() - u0)
        return outs

    eng.cycle = timed_cycle  # the engine's own cycle, plus encoding its rows, in the real path
    if freeze:
        E.freeze_heap()  # as the process does once restored, before live data
    pauses, burst = GcPauses(), GcPauses()  # timed cycles; the warm-up (every instrument alerts)
    gc.callbacks.extend([pauses, burst])
    burst.on = True
    pending = None
    for k in range(warm + cycles):
        upd = ticks(n, k, rng, mids)
        # the update that completes step k-1 arrives: time the whole path (tick-to-limit)
        t0 = time.perf_counter()
        outs = eng.ingest("quote", upd["quote"])
        for o in outs:
            payload_of((".u.upd", o.table, o.columns))
        dt = time.perf_counter() - t0
        eng.ingest("trade", upd["trade"])
        if k >= warm and outs:
            t2l.append(dt)
        if k == warm - 1:
            cycle.clear()
            cpu.clear()
            pauses.on, burst.on = True, False
        pending = k
    pauses.on = False
    gc.callbacks[:] = [c for c in gc.callbacks if c not in (pauses, burst)]
    eng.cycle = inner
    # the parts, on the warmed engine: one cycle each, timed piece by piece
    g = eng.next_grid
    for k in range(cycles):
        upd = ticks(n, pending + 1 + k, rng, mids)
        eng.features.update("quote", upd["quote"])
        eng.features.update("trade", upd["trade"])
        c0 = time.perf_counter()
        snap = eng.features.snapshot(g)
        c1 = time.perf_counter()
        ready = np.flatnonzero(snap.ready)
        score = np.full(len(snap.syms), np.nan)
        top = [""] * len(snap.syms)
        if scorer is not None and len(ready):
            res = scorer.score(snap.z[ready])
            score[ready] = res.score
            for j, names in zip(ready, E.top_features(res, 3), strict=True):
                top[j] = names
        c2 = time.perf_counter()
        rows, alerts = eng.policy.cycle(g, Scores(snap.syms, score, np.full(len(snap.syms), g), top,
                                                  getattr(scorer, "version", "")))
        c3 = time.perf_counter()
        outs = [E.Output("features", [E._times(len(snap.syms), g), E._sym_col(snap.syms), snap.ready,
                                      *[snap.raw[:, j] for j in range(snap.raw.shape[1])]])]
        if rows:
            outs.append(E.limits_output(rows))
        if alerts:
            outs.append(E.alerts_output(alerts))
        for o in outs:
            payload_of((".u.upd", o.table, o.columns))
        c4 = time.perf_counter()
        for name, a, b in (("features", c0, c1), ("scoring", c1, c2), ("policy", c2, c3),
                           ("publish", c3, c4)):
            parts[name].append(b - a)
        g += STEP
    return {"n": n, "ready": int(snap.ready.sum()), "parts": parts, "t2l": t2l, "cycle": cycle, "cpu": cpu,
            "gc": pauses.text(), "gc_burst": burst.text()}


def bench_checks() -> None:
    from pretrade.risk.limits import Limit

    book = LimitBook()
    for i in range(5000):
        book.apply(Limit(0, f"S{i:05d}", "", i + 1, "NORMAL", "ACTIVE", "", 1000, 1e7, 100.0, 200.0,
                         5000, 100, model="vae"))
    cfg = load_config().checks
    order, ctx = Order("S00042", "buy", 10, 100.0, strategy="mm"), Context(100.0)
    look, chk = [], []
    clock = time.perf_counter_ns
    for _ in range(200_000):
        t0 = clock()
        lim = book.get("S00042", "mm")
        t1 = clock()
        check_order(order, lim, ctx, cfg)
        t2 = clock()
        look.append(t1 - t0)
        chk.append(t2 - t1)
    empty = []
    for _ in range(200_000):
        t0 = clock()
        empty.append(clock() - t0)
    print(f"limit lookup (5,000 instruments): p50 {pct(look, 50):.0f} ns, p99 {pct(look, 99):.0f} ns "
          f"(timer overhead p50 {pct(empty, 50):.0f} ns included)")
    print(f"all checks but the model, passing order: p50 {pct(chk, 50) / 1e3:.2f} us, p99 {pct(chk, 99) / 1e3:.2f} us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--cycles", type=int, default=100, help="timed cycles per size (default 100)")
    ap.add_argument("--warm", type=int, default=30, help="cycles before timing (default 30)")
    ap.add_argument("--models", default="models")
    ap.add_argument("--no-freeze", action="store_true",
                    help="do not freeze the heap after the warm-up (the engine process does)")
    args = ap.parse_args()
    scorer, err = E.load_scorer(args.models)
    print(f"model: {getattr(scorer, 'version', None) or err}")
    bench_checks()
    base = None
    for n in args.sizes:
        r = bench_size(n, args.cycles, args.warm, scorer, freeze=not args.no_freeze)
        p = r["parts"]
        line = ", ".join(f"{k} {pct(v, 50) * 1e3:.2f}" for k, v in p.items())
        cyc50, cyc99 = pct(r["cycle"], 50) * 1e3, pct(r["cycle"], 99) * 1e3
        per = cyc50 / n * 1e3
        if base is None:
            base = per
        print(f"{n:>5} instruments ({r['ready']} scored): cycle p50 {cyc50:.2f} ms, p99 {cyc99:.2f} ms "
              f"(CPU time of the thread p50 {pct(r['cpu'], 50) * 1e3:.2f} ms, p99 {pct(r['cpu'], 99) * 1e3:.2f} ms) "
              f"[parts re-timed: {line} ms p50]; {per:.2f} us per instrument ({per / base:.2f}x the smallest size's); "
              f"tick-to-limit p50 {pct(r['t2l'], 50) * 1e3:.2f} ms, p99 {pct(r['t2l'], 99) * 1e3:.2f} ms; "
              f"GC pauses {'(heap frozen)' if not args.no_freeze else '(heap not frozen)'}: timed cycles "
              f"{r['gc']}; warm-up, every instrument turning ready and alerting: {r['gc_burst']}")


if __name__ == "__main__":
    main()
