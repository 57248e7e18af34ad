"""Benchmark of the FIX gateway: in-process check latency (with and without the fat-finger
model), limit lookup time, and FIX round trips over loopback beside a bare QuickFIX acceptor
measured in the same run.

    .venv/bin/python scripts/bench_gateway.py [--checks 20000] [--model-checks 5000] [--trips 2000]

Round trips (NewOrderSingle sent -> ExecutionReport received, one order in flight at a time):
  bare       client -> a QuickFIX acceptor that answers each order at once, no checks
  gateway    client -> gateway, every check run (the order passes all rules up to the restricted
             list, so it is answered by the gateway itself: same hop count as `bare`), without
             and with the fat-finger model
  full path  client -> gateway (checks) -> exchange (matching) -> gateway -> client (two hops)
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "py"))
os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")

from pretrade.gateway import messages as m  # noqa: E402
from pretrade.gateway.gate import Gate  # noqa: E402
from pretrade.gateway.limits_table import LimitsTable  # noqa: E402
from pretrade.risk.checks import Order  # noqa: E402
from pretrade.risk.limits import Limit, load_config  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(ns: list[int] | np.ndarray) -> str:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return f"p50 {np.percentile(a, 50):8.2f} us   p99 {np.percentile(a, 99):8.2f} us   mean {a.mean():8.2f} us   n={len(a)}"


def limit(sym: str, seq: int, max_rate: int = 100_000) -> Limit:
    return Limit(time.time_ns(), sym, "", seq, "ELEVATED", "ACTIVE", "", 10_000, 2e6, 500.0, 1500.0,
                 1_000_000, max_rate, 0.2, "", "vae-bench")


def fed_table(syms: dict[str, float], ttl_s: float = 1e9) -> LimitsTable:
    cfg = load_config()
    table = LimitsTable(cfg, ttl_s=ttl_s)
    table.apply_limits([limit(s, i + 1) for i, s in enumerate(syms)])
    for s, mid in syms.items():
        table.bids[s], table.asks[s] = mid * 0.9999, mid * 1.0001
    return table


def bench_checks(n: int, model_path: str | None) -> list[int]:
    """Latency of Gate.check for orders that pass every rule (synthetic clock: 100 orders/s)."""
    model = None
    if model_path:
        from pretrade.models.fatfinger import FatFingerModel

        model = FatFingerModel(model_path)
    cfg = load_config()
    table = fed_table({"ACME": 100.0})
    gate = Gate(table, cfg.checks, model=model)
    gc.collect()
    gc.freeze()  # as `pretrade gateway` does after start
    rng = np.random.default_rng(0)
    qty = (rng.integers(1, 5, n) * 100).tolist()
    px = np.round(100.0 - rng.integers(1, 20, n) * 0.01, 2).tolist()
    out, t0, rejected = [], 1_700_000_000_000_000_000, 0
    for i in range(n):
        v = gate.check(Order("ACME", "buy" if i % 2 else "sell", qty[i], px[i], "algo", f"A{i % 1000}"),
                       "bench", t0 + i * 10_000_000)
        out.append(v.latency_ns)
        rejected += not v.decision.ok
    print(f"  ({rejected} of {n} rejected; the rest passed every rule)")
    return out[n // 10:]  # drop warm-up


def bench_advice(n: int) -> tuple[list[int], list[int]]:
    """Wall time per accepted order of Gate.check then Gate.advise, without and with the impact
    advisor (features + ONNX + algo), same orders, same run. The gateway advises after it has
    forwarded the order, so this is CPU on the session thread, not latency to the venue."""
    from pretrade.gateway.advice import ImpactConfig, load_advisor

    advisor = load_advisor(ImpactConfig(), ROOT)
    if advisor is None:
        raise SystemExit("the impact model is refused: see the log")
    cfg, out = load_config(), []
    for adv in (None, advisor):
        table = fed_table({"ACME": 100.0})
        row = {"sym": "ACME"}
        for i in range(1, 11):
            row.update({f"bid{i}": 99.99 - 0.01 * i, f"ask{i}": 100.01 + 0.01 * i, f"bsize{i}": 2000, f"asize{i}": 2000})
        table.books["ACME"], table.rv_volume["ACME"] = row, (0.0004, 50_000.0)
        gate, t0, ns = Gate(table, cfg.checks, advisor=adv), 1_700_000_000_000_000_000, []
        for i in range(n):
            o = Order("ACME", "buy" if i % 2 else "sell", 100 * (1 + i % 4), 99.9, "algo", f"A{i % 1000}")
            t = time.perf_counter_ns()
            gate.advise(o, gate.check(o, "bench", t0 + i * 10_000_000))
            ns.append(time.perf_counter_ns() - t)
        out.append(ns[n // 10:])
    return out[0], out[1]


def bench_lookup(n: int) -> float:
    table = fed_table({f"S{i}": 100.0 for i in range(500)})
    keys = [f"S{i}" for i in range(500)]
    lookup = table.lookup
    t = time.perf_counter_ns()
    for i in range(n):
        lookup(keys[i % 500], "algo")
    return (time.perf_counter_ns() - t) / n


class Timer:
    """Receive times of ExecutionReports by ClOrdID, stamped in the QuickFIX callback."""

    def __init__(self) -> None:
        self.got: dict[str, int] = {}
        self.answers: dict[str, str] = {}  # ClOrdID -> "accepted" or the rejecting rule
        self.cv = threading.Condition()

    def on(self, msg) -> None:
        t = time.perf_counter_ns()
        cl = msg.getField(m.CL_ORD_ID) if msg.isSetField(m.CL_ORD_ID) else ""
        rejected = msg.isSetField(m.ORD_STATUS) and msg.getField(m.ORD_STATUS) == "8"
        answer = msg.getField(m.TEXT).split(":")[0] if rejected and msg.isSetField(m.TEXT) else (
            "rejected" if rejected else "accepted")
        with self.cv:
            if cl not in self.got:
                self.got[cl], self.answers[cl] = t, answer
            self.cv.notify()

    def wait(self, cl: str, timeout: float = 5.0) -> int:
        with self.cv:
            if not self.cv.wait_for(lambda: cl in self.got, timeout):
                raise TimeoutError(f"no ExecutionReport for {cl}")
            return self.got[cl]


def initiator(workdir: Path, port: int, sender: str, target: str, password: str | None):
    from pretrade.gateway.sessions import FixEngine, application, settings

    timer = Timer()
    logged = threading.Event()
    sid_box = []

    def to_admin(msg, sid):
        if password and m.msg_type(msg) == m.LOGON:
            msg.setField(m.PASSWORD, password)

    app = application(on_create=sid_box.append, on_logon=lambda sid: logged.set(), to_admin=to_admin,
                      from_app=lambda msg, sid: timer.on(msg))
    s = settings("initiator", workdir, [], sender=sender, target=target, host="127.0.0.1", port=port)
    ini = FixEngine("initiator", app, s).start()
    if not logged.wait(15):
        raise RuntimeError(f"{sender} -> {target} did not log on")
    return ini, app, timer, sid_box[0]


def bare_acceptor(workdir: Path, port: int):
    """A QuickFIX acceptor that answers every NewOrderSingle with an ExecutionReport New."""
    import quickfix as fix

    from pretrade.gateway.sessions import FixEngine, application, settings

    sent = itertools.count(1)

    def answer(msg, sid):
        f, n = m.parse_fields(msg), next(sent)
        fix.Session.sendToTarget(m.build(m.EXEC_REPORT, {
            m.ORDER_ID: f"B{n}", m.CL_ORD_ID: f[m.CL_ORD_ID], m.EXEC_ID: f"BX{n}", m.EXEC_TYPE: "0",
            m.ORD_STATUS: "0", m.SYMBOL: f[m.SYMBOL], m.SIDE: f[m.SIDE], m.ORDER_QTY: f[m.ORDER_QTY],
            m.LEAVES_QTY: f[m.ORDER_QTY], m.CUM_QTY: 0, m.AVG_PX: 0, m.TRANSACT_TIME: m.utc_now()}), sid)

    app = application(from_app=answer)
    s = settings("exchange", workdir, ["CLIENT1"], sender="BARE", host="127.0.0.1", port=port)
    acc = FixEngine("acceptor", app, s).start()
    return acc, app


def round_trips(n: int, sid, timer: Timer, sym: str, price: float, tag: str, first: int = 0) -> list[int]:
    """n orders one after another, alternating sides, each (qty, price) distinct within a run
    so none is a duplicate; their round-trip times."""
    import quickfix as fix

    out = []
    price = round(price, 2)  # on the cent grid, so distinct offsets give distinct prices
    for i in range(first, first + n):
        cl = f"{tag}{i}"
        off = ((i // 2) // 40 % 100 + 5) * 0.01
        msg = m.build(m.NEW_ORDER, {m.CL_ORD_ID: cl, m.SYMBOL: sym, m.SIDE: "1" if i % 2 else "2",
                                    m.ORDER_QTY: 100 * (1 + (i // 2) % 40), m.ORD_TYPE: "2",
                                    m.PRICE: round(price - off if i % 2 else price + off, 2),
                                    m.TRANSACT_TIME: m.utc_now()})
        t = time.perf_counter_ns()
        fix.Session.sendToTarget(msg, sid)
        out.append(timer.wait(cl) - t)
    return out[n // 10:]  # drop warm-up


def bench_fix(trips: int, model_path: str | None) -> dict:
    from pretrade.gateway.exchange import Venue, start_exchange
    from pretrade.gateway.service import GatewayService

    tmp = Path(tempfile.mkdtemp(prefix="bench_gateway_"))
    os.environ["PRETRADE_FIX_PASSWORD"] = "bench"
    bare_port, ex_port, gw_port = free_port(), free_port(), free_port()
    bare, _ = bare_acceptor(tmp / "bare", bare_port)
    venue = Venue.primed(seed=1, syms=["ACME"])
    ex = start_exchange(tmp / "ex", ex_port, venue=venue)
    svc = GatewayService(tmp / "gw", gw_port, tp=None, exchange=("127.0.0.1", ex_port), ttl_s=1e9,
                         model_path=model_path).start()
    # a round trip takes ~0.2 ms, so the session rate limit (500/s in config/limits.toml) would
    # answer most orders: raise it here so every rule runs on every order
    svc.gate.cfg = replace(svc.gate.cfg, max_session_rate=10**9)
    mid = venue.mid("ACME")
    svc.table.apply_limits([limit("ACME", 1), limit("RESTRICTED1", 2)])
    for s in ("ACME", "RESTRICTED1"):
        svc.table.bids[s], svc.table.asks[s] = round(mid - 0.01, 2), round(mid + 0.01, 2)
    bp, bs, ap, az = next(x.book for x in venue.sim.sims if x.ins.sym == "ACME").snapshot(10)  # impact advice on the full path
    svc.table.books["ACME"] = {**{f"bid{i + 1}": p * venue.insts["ACME"].tick for i, p in enumerate(bp)},
                               **{f"ask{i + 1}": p * venue.insts["ACME"].tick for i, p in enumerate(ap)},
                               **{f"bsize{i + 1}": q for i, q in enumerate(bs)}, **{f"asize{i + 1}": q for i, q in enumerate(az)}}
    svc.table.rv_volume["ACME"] = (0.0004, 50_000.0)
    svc.gateway.exchange_up.wait(15)
    gc.collect()
    gc.freeze()
    ini_b, _, tb, sid_b = initiator(tmp / "cb", bare_port, "CLIENT1", "BARE", None)
    ini_g, _, tg, sid_g = initiator(tmp / "cg", gw_port, "CLIENT1", "PRETRADE", "bench")
    res: dict[str, list[int]] = {"bare": [], "gateway": [], "gateway_model": [], "full": []}
    model = svc.gate.model
    try:
        # interleave the runs so background load hits them alike
        for k in range(4):
            res["bare"] += round_trips(trips // 4, sid_b, tb, "ACME", mid, f"b{k}-", k * (trips // 4))
            svc.gate.model = None
            res["gateway"] += round_trips(trips // 4, sid_g, tg, "RESTRICTED1", mid, f"g{k}-", k * (trips // 4))
            svc.gate.model = model
            res["gateway_model"] += round_trips(trips // 4, sid_g, tg, "RESTRICTED1", mid, f"h{k}-", k * (trips // 4))
            res["full"] += round_trips(trips // 8, sid_g, tg, "ACME", mid, f"f{k}-", k * (trips // 8))
        for k, prefix in (("gateway", "g"), ("gateway_model", "h"), ("full", "f")):
            counts: dict[str, int] = {}
            for cl, a in tg.answers.items():
                if cl.startswith(prefix):
                    counts[a] = counts.get(a, 0) + 1
            res[k + "_answers"] = counts
    finally:
        ini_b.stop()
        ini_g.stop()
        svc.stop()
        ex.stop()
        bare.stop()
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checks", type=int, default=20000)
    p.add_argument("--model-checks", type=int, default=5000)
    p.add_argument("--trips", type=int, default=2000)
    p.add_argument("--model", default=str(ROOT / "models" / "fatfinger.onnx"))
    args = p.parse_args()
    print(f"bench_gateway  python {sys.version.split()[0]}  cpus {os.cpu_count()}  load {os.getloadavg()[0]:.1f}")
    print("check latency, in process, all checks, no model:")
    print("  " + pct(bench_checks(args.checks, None)))
    from pretrade.models.card import ModelRefused
    from pretrade.models.fatfinger import FatFingerModel

    model: str | None = args.model
    try:
        FatFingerModel(args.model)
    except ModelRefused as e:
        print(f"the fat-finger model is refused, so no figures with it: {e}")
        model = None
    if model:
        print("check latency, in process, all checks, with the fat-finger model (onnxruntime):")
        print("  " + pct(bench_checks(args.model_checks, model)))
    plain, advised = bench_advice(args.model_checks)
    print("Gate.check + Gate.advise wall time per accepted order, no fat-finger model, without / with impact advice:")
    print(f"  without {pct(plain)}\n  with    {pct(advised)}\n  added: p50 "
          f"{(np.percentile(advised, 50) - np.percentile(plain, 50)) / 1000:.2f} us")
    print(f"limit lookup (LimitsTable.lookup, 500 instruments): {bench_lookup(1_000_000):.0f} ns per lookup")
    res = bench_fix(args.trips, model)
    print("FIX round trip NewOrderSingle -> ExecutionReport, loopback, one in flight:")
    for k, label in (("bare", "bare acceptor (no checks)"),
                     ("gateway", "gateway, all checks but the model"),
                     ("gateway_model", "gateway, all checks with the model" if model else "gateway, again (no model)"),
                     ("full", "full path via the exchange" + (", with the model" if model else ""))):
        print(f"  {label:40s} {pct(res[k])}  {res.get(k + '_answers', '')}")
    b, g = np.percentile(res["bare"], 50), np.percentile(res["gateway"], 50)
    b99, g99 = np.percentile(res["bare"], 99), np.percentile(res["gateway"], 99)
    print(f"  gateway (no model) / bare: p50 {g / b:.2f}x   p99 {g99 / b99:.2f}x")
    if model:
        g, g99 = np.percentile(res["gateway_model"], 50), np.percentile(res["gateway_model"], 99)
        print(f"  gateway (model) / bare:    p50 {g / b:.2f}x   p99 {g99 / b99:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
