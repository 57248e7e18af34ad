"""Benchmark of the FIX gateway: in-process check latency (with and without the fat-finger
model), impact advice, limit lookup time, and FIX round trips over loopback beside a bare
QuickFIX acceptor measured in the same run.

    .venv/bin/python scripts/bench_gateway.py [--checks 20000] [--model-checks 5000] [--trips 2000]
                                              [--gap-us 1000] [--model models/fatfinger.onnx]

The flow is a desk's: 50 accounts, each with its own habitual size (orders vary around it,
lognormal, sd 0.3 in log, lots of 100), one direction and passive prices ~3 ticks behind the
touch, in a market trading 100,000 a minute. The fat-finger model's trader history is first
warmed with the same desk's earlier orders at the same pace (order_features.warm_history, as
`pretrade gateway` does from the HDB and RDB), so what the model flags is what it would flag
live; the script prints what it flagged.

Round trips (NewOrderSingle sent -> ExecutionReport received, one order in flight at a time,
at most one every `--gap-us`, the pace of the desk's history). The client runs in its own
process, as a real client does (in the gateway's process it would take the GIL from the session
thread at every QuickFIX or onnxruntime call); the bare acceptor and the gateway share the
server process and are measured in turn, interleaved four times:
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
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "py"))
os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")

from pretrade.gateway import messages as m  # noqa: E402
from pretrade.gateway.gate import Gate  # noqa: E402
from pretrade.gateway.limits_table import LimitsTable  # noqa: E402
from pretrade.risk.checks import Order  # noqa: E402
from pretrade.risk.limits import Limit, load_config  # noqa: E402
from pretrade.up import free_port  # noqa: E402


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
        table.add_trade(s, 0, MINUTE_VOLUME)  # the market's last minute (kept: no later trade expires it)
    return table


ACCOUNTS = 50
MINUTE_VOLUME = 100_000  # the market's volume over the last minute, an input of the model


def desk_flow(n: int, quotes: dict[str, tuple[float, float]], t0_ns: int, gap_ns: int, seed: int,
              tick: float = 0.01) -> pd.DataFrame:
    """n new orders of a desk of ACCOUNTS traders, one every gap_ns from t0_ns, in the schema's
    `order` columns plus the prevailing bid/ask: each trader has a habitual size (orders vary
    around it, lognormal sd 0.3, in lots of 100), one direction (as the simulator's desk: one
    direction per trader and day), and passive prices ~3 ticks behind the touch (1 + exponential)."""
    rng = np.random.default_rng(seed)
    habit = np.random.default_rng(1)  # the traders' habits do not depend on the day
    base = habit.integers(1, 40, ACCOUNTS) * 100
    direction = habit.random(ACCOUNTS) < 0.5  # as the simulator's desk: one direction per trader a day
    syms = list(quotes)
    acct = rng.integers(0, ACCOUNTS, n)
    sym = [syms[k] for k in rng.integers(0, len(syms), n)]
    buy = direction[acct]
    qty = np.maximum(1, np.round(base[acct] * rng.lognormal(0.0, 0.3, n) / 100)).astype(np.int64) * 100  # lots
    bid = np.array([quotes[s][0] for s in sym])
    ask = np.array([quotes[s][1] for s in sym])
    behind = (1 + np.minimum(rng.exponential(3.0, n), 30).astype(np.int64)) * tick  # passive, mean ~3 ticks
    price = np.round(np.where(buy, bid - behind, ask + behind), 6)
    return pd.DataFrame({"time": (t0_ns + np.arange(n, dtype=np.int64) * gap_ns).astype("datetime64[ns]"),
                         "sym": sym, "account": [f"T{k:02d}" for k in acct],
                         "side": np.where(buy, "buy", "sell"), "qty": qty, "price": price, "ordtype": "limit",
                         "bid": bid, "ask": ask})


def warmed(gate: Gate, quotes: dict[str, tuple[float, float]], end_ns: int, gap_ns: int, n: int = 20_000) -> None:
    """Give the gate's model the desk's earlier orders (the same habits, the same pace), ending
    at end_ns, as `pretrade gateway` does from the HDB and RDB at start."""
    from pretrade.models.order_features import warm_history

    if gate.model is not None:
        gate.history = warm_history(desk_flow(n, quotes, end_ns - n * gap_ns, gap_ns, seed=99))


def bench_checks(n: int, model_path: str | None, status: str = "approved") -> list[int]:
    """Latency of Gate.check on the desk's flow (synthetic clock: one order every 10 ms), history
    warmed; orders that pass every rule and those the model flags alike. `status`: the model's
    lifecycle status (a candidate is scored and its call kept beside the decision, never binding)."""
    model = None
    if model_path:
        from pretrade.models.fatfinger import FatFingerModel

        model = FatFingerModel(model_path)
    cfg = load_config()
    table = fed_table({"ACME": 100.0})
    gate = Gate(table, cfg.checks, model=model, model_status=status)
    t0, gap = 1_700_000_000_000_000_000, 10_000_000
    quotes = {"ACME": (table.bids["ACME"], table.asks["ACME"])}
    warmed(gate, quotes, t0, gap)
    flow = desk_flow(n, quotes, t0, gap, seed=0)
    orders = [Order(s, sd, int(q), float(p), "algo", a) for s, sd, q, p, a in
              zip(flow["sym"], flow["side"], flow["qty"], flow["price"], flow["account"], strict=True)]
    gc.collect()
    gc.freeze()  # as `pretrade gateway` does after start
    out, rejected, would = [], {}, 0
    for i, o in enumerate(orders):
        v = gate.check(o, "bench", t0 + i * gap)
        out.append(v.latency_ns)
        if not v.decision.ok:
            rejected[v.decision.code] = rejected.get(v.decision.code, 0) + 1
        would += v.model_call is not None and not v.model_call.ok
    print(f"  (of {n}: rejected {rejected or 'none'}; the rest passed every rule"
          + (f"; the {status} model would have rejected {would})" if model is not None and status != "approved" else ")"))
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


def round_trips(flow: pd.DataFrame, sid, timer: Timer, sym: str, tag: str, gap_ns: int) -> list[int]:
    """The desk's orders (re-addressed to `sym`) one after another, one every gap_ns at most;
    their round-trip times."""
    import quickfix as fix

    out = []
    nxt = time.perf_counter_ns()
    for i, (side, qty, price, acct) in enumerate(zip(flow["side"], flow["qty"], flow["price"], flow["account"],
                                                     strict=True)):
        cl = f"{tag}{i}"
        msg = m.build(m.NEW_ORDER, {m.CL_ORD_ID: cl, m.SYMBOL: sym, m.SIDE: m.FIX_SIDE[side], m.ORDER_QTY: int(qty),
                                    m.ORD_TYPE: "2", m.PRICE: float(price), m.ACCOUNT: acct,
                                    m.TRANSACT_TIME: m.utc_now()})
        while time.perf_counter_ns() < nxt:  # pace: the desk's rate, as in its history
            time.sleep(0)
        t = time.perf_counter_ns()
        fix.Session.sendToTarget(msg, sid)
        out.append(timer.wait(cl) - t)
        nxt = t + gap_ns
    return out[len(out) // 10:]  # drop warm-up


def bench_fix(trips: int, model_path: str | None, gap_us: float) -> dict:
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
    for s in ("ACME", "RESTRICTED1"):
        svc.table.add_trade(s, 0, MINUTE_VOLUME)
    svc.gateway.exchange_up.wait(15)
    gap = int(gap_us * 1000)
    quotes = {s: (svc.table.bids[s], svc.table.asks[s]) for s in ("ACME", "RESTRICTED1")}
    warmed(svc.gate, quotes, time.time_ns(), gap or 250_000)  # unpaced: ~4,000 orders a second
    ps: list[float] = []
    score = svc.gate._scorer

    def scorer(ctx, dyn, now_ns, memo):  # the model's probability per order, for the summary
        inner = score(ctx, dyn, now_ns, memo)
        if inner is None:
            return None

        def keep(o):
            p = inner(o)
            ps.append(p)
            return p
        return keep

    svc.gate._scorer = scorer
    gc.collect()
    gc.freeze()
    # The client runs in its own process, as a real one does: in this one it would take the GIL
    # from the gateway's session thread whenever that releases it (every QuickFIX call,
    # onnxruntime), a cost no deployed gateway pays.
    conf = {"bare": bare_port, "gw": gw_port, "quotes": quotes, "trips": trips, "gap": gap, "dir": str(tmp)}
    client = subprocess.Popen([sys.executable, __file__, "--client-of", json.dumps(conf)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, bufsize=1)
    res: dict = {"bare": [], "gateway": [], "gateway_model": [], "full": []}
    model = svc.gate.model
    try:
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("the benchmark client did not log on")

        def run(path: str, k: int) -> None:
            client.stdin.write(json.dumps({"path": path, "k": k}) + "\n")
            got = json.loads(client.stdout.readline())
            res[path] += got["ns"]
            for a, n in got["answers"].items():
                res.setdefault(path + "_answers", {})[a] = res.get(path + "_answers", {}).get(a, 0) + n

        for k in range(4):  # interleaved, so background load hits every path alike
            run("bare", k)
            svc.gate.model = None
            run("gateway", k)
            svc.gate.model = model
            run("gateway_model", k)
            run("full", k)
        res.pop("bare_answers", None)
        res["model_flags"] = sum(1 for p in ps if p > svc.gate.cfg.fat_finger_threshold)
        res["model_scored"] = len(ps)
    finally:
        if client.poll() is None:
            client.stdin.write("quit\n")
            client.stdin.flush()
            client.wait(30)
        svc.stop()
        ex.stop()
        bare.stop()
    return res


def client_process(conf: dict) -> int:
    """The benchmark's FIX client (its own process): logs on to the bare acceptor and the gateway,
    then runs the round trips it is told on stdin ({"path", "k"}), answering one JSON line each."""
    tmp = Path(conf["dir"])
    quotes = {s: tuple(q) for s, q in conf["quotes"].items()}
    trips, gap = conf["trips"], conf["gap"]
    ini_b, _, tb, sid_b = initiator(tmp / "cb", conf["bare"], "CLIENT1", "BARE", None)
    ini_g, _, tg, sid_g = initiator(tmp / "cg", conf["gw"], "CLIENT1", "PRETRADE", "bench")
    paths = {"bare": (sid_b, tb, "ACME", trips // 4), "gateway": (sid_g, tg, "RESTRICTED1", trips // 4),
             "gateway_model": (sid_g, tg, "RESTRICTED1", trips // 4), "full": (sid_g, tg, "ACME", trips // 8)}
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "quit":
                break
            cmd = json.loads(line)
            sid, timer, sym, n = paths[cmd["path"]]
            seed = 10 * cmd["k"] + list(paths).index(cmd["path"])
            flow = desk_flow(n, {sym: quotes[sym]}, 0, gap, seed=seed)
            tag = f"{cmd['path'][0]}{cmd['path'][-1]}{cmd['k']}-"
            ns = round_trips(flow, sid, timer, sym, tag, gap)
            answers: dict[str, int] = {}
            for cl, a in timer.answers.items():
                if cl.startswith(tag):
                    answers[a] = answers.get(a, 0) + 1
            print(json.dumps({"ns": ns, "answers": answers}), flush=True)
    finally:
        ini_b.stop()
        ini_g.stop()
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--client-of":
        return client_process(json.loads(sys.argv[2]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checks", type=int, default=20000)
    p.add_argument("--model-checks", type=int, default=5000)
    p.add_argument("--trips", type=int, default=2000)
    p.add_argument("--model", default=str(ROOT / "models" / "fatfinger.onnx"))
    p.add_argument("--gap-us", type=float, default=1000.0,
                   help="FIX round trips: send an order at most every GAP microseconds (the desk's pace; default 1000)")
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
        print("check latency, in process, all checks, the same model as a candidate (scored, recorded, not binding):")
        print("  " + pct(bench_checks(args.model_checks, model, "candidate")))
    plain, advised = bench_advice(args.model_checks)
    print("Gate.check + Gate.advise wall time per accepted order, no fat-finger model, without / with impact advice:")
    print(f"  without {pct(plain)}\n  with    {pct(advised)}\n  added: p50 "
          f"{(np.percentile(advised, 50) - np.percentile(plain, 50)) / 1000:.2f} us")
    print(f"limit lookup (LimitsTable.lookup, 500 instruments): {bench_lookup(1_000_000):.0f} ns per lookup")
    res = bench_fix(args.trips, model, args.gap_us)
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
        print(f"  the model flagged {res['model_flags']} of the {res['model_scored']} orders it scored over FIX "
              "(the desk's habits, history warmed)")
    if model:
        g, g99 = np.percentile(res["gateway_model"], 50), np.percentile(res["gateway_model"], 99)
        print(f"  gateway (model) / bare:    p50 {g / b:.2f}x   p99 {g99 / b99:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
