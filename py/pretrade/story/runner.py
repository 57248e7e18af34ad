"""One run of the flash-crash story through the real processes, and the pair of runs.

A run starts a tickerplant, the risk engine, the gateway and the exchange-as-market (each a
`pretrade` subprocess on free ports, logs in the run's folder), logs the firm on to the gateway
over FIX as CLIENT1, and plays the firm's strategies (pretrade.story.algos) against the market
the exchange publishes: the market clock is the time of the last quote seen. The first minutes of
market time (the features' warm-up) go by as fast as the processes take them; from `lead` seconds
before the crash onset the market runs at `speed` x real time. What the firm saw (fills,
rejections), what the engine published (features, scores, limits) and the market (quotes) are
collected from FIX and from a subscription to the tickerplant.

The engine runs without its drift monitor (`--no-drift`): its window is ten minutes of market
time, longer than the whole story, and the crash itself would read as drift and take the model
off mid-story. The static run puts the gateway in shadow mode: static limits (config/limits.toml) bind every
order, and the engine's dynamic decision is only recorded beside it. The dynamic run enforces the
engine's limits. Everything else, seed included, is the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pretrade.story.algos import Cancel, Ledger, MarketMaker, NewOrder, Seller
from pretrade.up import free_port

log = logging.getLogger(__name__)

STORY_ONSET = pd.Timestamp("2026-11-20 14:30:15")  # the story's "spread widens" moment
SUBSCRIBED = ("quote", "features", "riskScore", "limits", "riskAlert", "decision")
# The story's static limit for its index future (MISSION.md: 500 contracts an order), added to
# config/limits.toml for the run's engine and gateway only.
STORY_LIMITS = """
[instrument.ESZ6]   # the flash-crash story's index future
max_qty = 500
max_notional = 5000000.0
"""


@dataclass(frozen=True)
class StoryConfig:
    """The story's market and pace. `onset` seconds of market time come before the crash (the
    features need five minutes of baseline); the crash falls `severity` over `fall` seconds and
    gives back `recovery` of it over `recovery_time`; the run ends `after` seconds past onset."""

    seed: int = 7
    sym: str = "ESZ6"
    onset: int = 360
    lead: int = 20
    after: int = 100
    speed: float = 4.0
    severity: float = 0.02
    fall: float = 30.0
    recovery: float = 0.5
    recovery_time: float = 30.0

    @property
    def start(self) -> pd.Timestamp:
        """Market time of the simulation's first second, so that the onset is STORY_ONSET."""
        return STORY_ONSET - pd.Timedelta(seconds=self.onset)

    @property
    def end(self) -> pd.Timestamp:
        return STORY_ONSET + pd.Timedelta(seconds=self.after)

    def exchange_args(self) -> list[str]:
        """`pretrade exchange` arguments that make this market."""
        params = {"at": float(self.onset), "sym": self.sym, "severity": self.severity, "speed": self.fall,
                  "recovery": self.recovery, "recovery_time": self.recovery_time}
        out = ["--scenario", "flash-crash", "--seed", str(self.seed), "--syms", self.sym,
               "--duration", str(self.onset + self.after), "--start", str(self.start),
               "--speed", str(self.speed), "--warmup", str(self.onset - self.lead)]
        for k, v in params.items():
            out += ["-p", f"{k}={v}"]
        return out


@dataclass
class RunResult:
    """What one run produced: the firm's book, the rejections, and the tables collected."""

    mode: str
    ledger: Ledger
    mark: float
    sent: dict[str, dict]
    acked: int
    rejected: list[dict]
    positions: list[tuple[pd.Timestamp, int]]
    filled: dict[str, int] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    wall_seconds: float = 0.0


class Stack:
    """The run's processes: started in order, each waited for, all stopped by `close()`."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.procs: list = []

    def start(self, name: str, args: list[str], port: int | None, timeout: float = 60.0) -> None:
        from pretrade.up import Process, _start, _wait_port

        p = Process(name, [sys.executable, "-m", "pretrade.cli", *args], port)
        _start(p, self.folder, self.env)
        self.procs.append(p)
        _wait_port(p, timeout)

    def close(self) -> None:
        from pretrade.up import _stop

        for p in reversed(self.procs):
            _stop(p, timeout=10.0)
        self.procs = []


def _fix_new(o: NewOrder, sym: str) -> dict[int, Any]:
    from pretrade.gateway import messages as m

    return {m.CL_ORD_ID: o.clordid, m.SYMBOL: sym, m.SIDE: m.FIX_SIDE[o.side], m.ORDER_QTY: o.qty,
            m.ORD_TYPE: "1" if o.price is None else "2", m.PRICE: o.price, m.STRATEGY: o.strategy,
            m.ACCOUNT: o.account or None, m.TRANSACT_TIME: m.utc_now()}


def run_once(cfg: StoryConfig, mode: str, folder: Path, timeout: float = 240.0) -> RunResult:
    """Play the story once with the gateway in `mode` ('enforce': dynamic limits bind;
    'shadow': static limits bind); processes are stopped before it returns."""
    from pretrade.client import connect
    from pretrade.gateway import messages as m
    from pretrade.gateway.fixclient import FixInitiator
    from pretrade.gateway.sessions import GATEWAY_ID
    from pretrade.market.instruments import UNIVERSE

    folder.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[3]
    password = os.environ.get("PRETRADE_FIX_PASSWORD") or secrets.token_hex(8)
    env = dict(os.environ, PYTHONPATH=str(root / "py"), PYKX_UNLICENSED="true", PYKX_SUPPRESS_WARNINGS="true",
               PRETRADE_FIX_PASSWORD=password)
    tp, rte, gw, ctl, ex = (free_port() for _ in range(5))
    tp_addr = f"127.0.0.1:{tp}"
    limits = folder / "limits.toml"
    limits.write_text((root / "config" / "limits.toml").read_text() + STORY_LIMITS)
    stack = Stack(folder, env)
    wall0 = time.monotonic()
    client = sub = conn = None
    try:
        stack.start("tp", ["tp", "--port", str(tp), "--journal", str(folder / "journal")], tp)
        stack.start("rte", ["rte", "--port", str(rte), "--tp", tp_addr, "--models", str(root / "models"),
                             "--limits", str(limits), "--no-drift"], rte)
        stack.start("gateway", ["gateway", "--fix-port", str(gw), "--tp", tp_addr, "--rte", f"127.0.0.1:{rte}",
                                "--exchange", f"127.0.0.1:{ex}", "--port", str(ctl), "--mode", mode, "--limits", str(limits),
                                "--rdb", "", "--hdb", "",  # no RDB/HDB in a story run: the firm starts flat
                                "--workdir", str(folder / "fix" / "gateway")], gw)
        conn = connect(tp_addr)
        sub = conn.subscribe(list(SUBSCRIBED))
        client = FixInitiator(folder / "fix" / "client", gw, "CLIENT1", GATEWAY_ID, password)
        if not client.wait_logon(20):
            raise RuntimeError(f"CLIENT1 could not log on to the gateway; see {folder}/gateway.log")
        stack.start("exchange", ["exchange", "--fix-port", str(ex), "--tp", tp_addr,
                                 "--workdir", str(folder / "fix" / "exchange"), *cfg.exchange_args()], ex)
        res = _play(cfg, mode, sub, client, UNIVERSE[cfg.sym].tick, wall0 + timeout, m)
    finally:
        if client is not None:
            client.stop()
        if sub is not None:
            sub.close()
        if conn is not None:
            conn.close()
        stack.close()
    res.wall_seconds = time.monotonic() - wall0
    return res


def _play(cfg: StoryConfig, mode: str, sub, client, tick: float, deadline: float, m) -> RunResult:
    """The firm's loop: read the market and the answers, let the strategies act, until the
    market's end (or `deadline`, monotonic)."""
    seller, mm, ledger = Seller(), MarketMaker(tick=tick), Ledger()
    parts: dict[str, list[pd.DataFrame]] = {t: [] for t in SUBSCRIBED}
    clock, bid, ask = pd.Timestamp(0), float("nan"), float("nan")
    sent: dict[str, dict] = {}
    rejected: list[dict] = []
    positions: list[tuple[pd.Timestamp, int]] = []
    acked = 0
    filled: dict[str, int] = {}
    last_update = time.monotonic()

    def on_report(f: dict[int, str]) -> None:
        nonlocal acked
        cl = f.get(m.CL_ORD_ID, "")
        o = sent.get(cl)
        if o is None or f.get(m.MSG_TYPE) != m.EXEC_REPORT:
            return
        et = f.get(m.EXEC_TYPE)
        if et == "0":
            acked += 1
        elif et == "F":
            qty = int(float(f[m.LAST_QTY]))
            filled[cl] = filled.get(cl, 0) + qty
            ledger.fill(o["strategy"], o["side"], qty, float(f[m.LAST_PX]), (bid + ask) / 2)
            positions.append((clock, sum(ledger.position.values())))
        elif et == "8":
            text = f.get(m.TEXT, "")
            rejected.append({"time": clock, "clordid": cl, "side": o["side"], "qty": o["qty"],
                             "rule": text.split(":", 1)[0] if ":" in text else "VENUE", "text": text,
                             "strategy": o["strategy"], "sent": o["time"]})
        if et == "8":
            mm.rejected(cl, (clock - STORY_ONSET).total_seconds())
        elif et == "4" or f.get(m.ORD_STATUS) == "2":
            mm.done(cl)

    while time.monotonic() < deadline:
        while (item := sub.get(timeout=0.01)) is not None:
            name, df = item
            parts[name].append(df)
            last_update = time.monotonic()
            if name == "quote":
                q = df[df["sym"] == cfg.sym]
                if len(q):
                    clock, bid, ask = q["time"].iloc[-1], float(q["bid"].iloc[-1]), float(q["ask"].iloc[-1])
        while True:
            try:
                on_report(client.received.get_nowait())
            except queue.Empty:
                break
        if clock >= cfg.end - pd.Timedelta(seconds=1) or (clock > cfg.start and time.monotonic() - last_update > 15):
            break
        t = (clock - STORY_ONSET).total_seconds()
        pos_mm = ledger.position.get(mm.strategy, 0)
        for o in [*seller.step(t, (bid + ask) / 2), *mm.step(t, bid, ask, pos_mm)] if clock > cfg.start else []:
            if isinstance(o, NewOrder):
                sent[o.clordid] = {"strategy": o.strategy, "side": o.side, "qty": o.qty, "price": o.price,
                                   "time": clock}
                client.send(m.NEW_ORDER, _fix_new(o, cfg.sym))
            elif isinstance(o, Cancel):
                orig = sent[o.orig]
                client.send(m.CANCEL, {m.CL_ORD_ID: o.clordid, m.ORIG_CL_ORD_ID: o.orig, m.SYMBOL: cfg.sym,
                                       m.SIDE: m.FIX_SIDE[orig["side"]], m.ORDER_QTY: orig["qty"],
                                       m.TRANSACT_TIME: m.utc_now()})
        time.sleep(0.02)
    else:
        raise TimeoutError(f"the {mode} run did not reach the end of the story's market ({cfg.end}); "
                           f"market clock {clock}")
    end = time.monotonic() + 1.5  # late answers
    while time.monotonic() < end:
        with contextlib.suppress(queue.Empty):
            on_report(client.received.get(timeout=0.1))
        while (item := sub.get(timeout=0)) is not None:
            parts[item[0]].append(item[1])
    tables = {n: pd.concat(p, ignore_index=True) if p else pd.DataFrame() for n, p in parts.items()}
    mark = (bid + ask) / 2
    return RunResult(mode, ledger, mark, sent, acked, rejected, positions, filled, tables)


def run_story(cfg: StoryConfig, folder: Path) -> dict[str, RunResult]:
    """Both runs from the same seed: 'static' (gateway in shadow mode) then 'dynamic'."""
    out = {}
    for name, mode in (("static", "shadow"), ("dynamic", "enforce")):
        log.info("flash-crash story: %s run (gateway --mode %s), logs in %s", name, mode, folder / name)
        out[name] = run_once(cfg, mode, folder / name)
    return out
