"""The gateway process wired together: QuickFIX sessions, limits subscription, watchdog,
publisher, and an IPC control port for run-time mode changes (`pretrade gateway`)."""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from pretrade.config import ROOT
from pretrade.gateway.sessions import EXCHANGE_ID, EXCHANGE_PORT, GATEWAY_ID, GATEWAY_PORT
from pretrade.ipc.auth import Users

log = logging.getLogger(__name__)

SUBSCRIBED = ["limits", "heartbeat", "quote", "trade", "book", "features"]  # book, features: impact advice
CONTROL_PORT = 5014


class GatewayService:
    """A running gateway: start() brings up every part, stop() takes them down."""

    def __init__(self, workdir: Path, fix_port: int = GATEWAY_PORT, tp: str | None = "localhost:5010",
                 exchange: tuple[str, int] = ("127.0.0.1", EXCHANGE_PORT), host: str = "127.0.0.1",
                 ttl_s: float = 3.0, fallback_scale: float = 0.5, clients_path: str | None = None,
                 limits_path: str | None = None, model_path: str | None = "models/fatfinger.onnx",
                 mode: str = "enforce", ab_share: float = 0.5, control_port: int | None = None,
                 rte: str | None = None, users: Users | None = None, impact: bool = True,
                 rdb: str | None = None, hdb: str | None = None, warm_days: int = 3) -> None:
        from pretrade.config import CONFIG_DIR, load_toml
        from pretrade.gateway.advice import impact_config, load_advisor
        from pretrade.gateway.fixapp import Gateway
        from pretrade.gateway.gate import Gate
        from pretrade.gateway.limits_table import LimitsTable
        from pretrade.gateway.process import TpPublisher
        from pretrade.gateway.sessions import load_clients
        from pretrade.gateway.shadow import Modes
        from pretrade.risk.limits import load_config

        self.workdir, self.fix_port, self.host, self.tp = Path(workdir), fix_port, host, tp
        self.exchange_addr, self.control_port, self.rte = exchange, control_port, rte
        self.users = users
        self.rdb, self.hdb, self.warm_days = rdb, hdb, warm_days
        self.config = load_config(limits_path)
        self.clients = load_clients(clients_path)
        self.publisher = TpPublisher(tp)
        self.table = LimitsTable(self.config, ttl_s, fallback_scale, on_alert=self._alert)
        self.modes = Modes(mode, ab_share, on_change=self._audit)
        self.model_path = model_path
        model, self.model_state = self._load_model(model_path)
        icfg = impact_config(load_toml(Path(limits_path) if limits_path else CONFIG_DIR / "limits.toml").get("impact"))
        advisor = load_advisor(icfg, ROOT) if impact else None  # advisory: None when the model is refused
        self.gate = Gate(self.table, self.config.checks, self.modes, model, advisor,
                         self.model_state.status if self.model_state else "approved")
        if rdb:  # fail closed until today's positions are rebuilt from the RDB's fills
            self.gate.positions_known = False
        self.positions_ready = threading.Event()
        self.gateway = Gateway(self.gate, self.clients, self.publisher)
        self._stop = threading.Event()
        self._sub = None
        self.subscribed = threading.Event()
        self._threads: list[threading.Thread] = []
        self.acceptor = self.initiator = self.control = None

    @staticmethod
    def _load_model(model_path: str | None):
        """(FatFingerModel or None, its ModelStatus or None): a retired model is not loaded; a
        candidate or shadow one is loaded, scored, and never binds (a warning says so)."""
        if not model_path:
            return None, None
        from pretrade.gateway.governance import status_at_start
        from pretrade.models.fatfinger import FatFingerModel

        state = status_at_start(model_path)
        if state.status == "retired":
            log.warning("%s (%s)", state.describe(), model_path)
            return None, state
        model = FatFingerModel(model_path)  # ModelRefused stops the start: never run without a configured check
        (log.info if state.binds else log.warning)("%s (loaded from %s)", state.describe(), model_path)
        return model, state

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> GatewayService:
        """Subscribe, start the watchdog, the FIX sessions and the control port."""
        from pretrade.gateway.sessions import FixEngine, settings

        if self.gate.model is not None and (self.rdb or self.hdb):
            self.warm_history()  # before the first order: the model knows the traders' habits
        if not self.rdb:
            log.warning("no --rdb: positions start flat (today's fills are not read back); the position "
                        "and concentration checks count only fills from now on")
            self.positions_ready.set()
        threads = [("subscription", self._subscribe), ("watchdog", self._watchdog)]
        if self.rdb:
            threads.append(("positions", self._rebuild_positions))
        for name, target in threads:
            t = threading.Thread(target=target, name=f"gateway-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        s = settings("gateway_clients", self.workdir / "clients", list(self.clients), sender=GATEWAY_ID,
                     host=self.host, port=self.fix_port)
        self.acceptor = FixEngine("acceptor", self.gateway.client_app, s)
        ex_host, ex_port = self.exchange_addr
        s2 = settings("gateway_exchange", self.workdir / "exchange", [], sender=GATEWAY_ID, target=EXCHANGE_ID,
                      host=ex_host, port=ex_port)
        self.initiator = FixEngine("initiator", self.gateway.exchange_app, s2)
        self.initiator.start()
        self.acceptor.start()
        if self.control_port is not None:
            self.control = self._control_server().start()
        log.info("gateway %s: clients on %s:%d (%s), exchange %s at %s:%d, limits from %s (TTL %g s)",
                 GATEWAY_ID, self.host, self.fix_port, ", ".join(self.clients), EXCHANGE_ID, ex_host, ex_port,
                 self.tp or "(no tickerplant)", self.table.ttl_s)
        return self

    def stop(self) -> None:
        """Stop the FIX sessions, the subscription, the control port; flush the publisher."""
        self._stop.set()
        for part in (self.acceptor, self.initiator):
            if part is not None:
                part.stop()
        if self._sub is not None:
            self._sub.close()
        if self.control is not None:
            self.control.stop()
        for t in self._threads:
            t.join(timeout=3)
        self.publisher.close()

    # ---- threads ------------------------------------------------------------------------------
    def _subscribe(self) -> None:
        """Keep a subscription to the tickerplant, reconnecting every second while it is down
        (meanwhile the limits go stale and the fallback binds)."""
        from pretrade.client import connect

        if self.tp is None:
            return
        warned = False
        while not self._stop.is_set():
            try:
                with connect(self.tp, timeout=5.0) as c:
                    self._sub = c.subscribe(SUBSCRIBED)
                log.info("subscribed to %s on %s", ", ".join(SUBSCRIBED), self.tp)
                self.load_snapshot()
                self.subscribed.set()
                warned = False
                for table, frame in self._sub:
                    try:
                        self.table.on_update(table, frame)
                    except Exception:  # noqa: BLE001 - one bad update must not end the feed
                        log.exception("bad %s update from the tickerplant: skipped", table)
            except Exception as e:  # noqa: BLE001 - reconnect; the limits fail closed meanwhile
                if not warned:
                    log.error("tickerplant %s: %s; reconnecting every second", self.tp, e)
                    warned = True
            self.subscribed.clear()
            self._stop.wait(1.0)

    def load_snapshot(self) -> None:
        """The engine's current limits (`.rte.limits`), so a (re)started gateway need not wait
        for the next change; newer seq still wins over what the subscription delivers."""
        if not self.rte:
            return
        import pandas as pd

        from pretrade.ipc.client import QClient, parse_addr
        from pretrade.schema import TABLES

        try:
            with QClient(*parse_addr(self.rte), os.environ.get("PRETRADE_USER", ""),
                         os.environ.get("PRETRADE_PASSWORD", ""), timeout=5.0) as q:
                cols = q.query(".rte.limits", "")
        except Exception as e:  # noqa: BLE001 - fail closed: wait for published limits instead
            log.warning("no limits snapshot from the risk engine at %s (%s): waiting for published limits", self.rte, e)
            return
        if len(cols):
            frame = pd.DataFrame(dict(zip(TABLES["limits"].names, cols, strict=True)))
            self.table.on_update("limits", frame)
            log.info("limits snapshot from %s: %d rows (seq up to %d)", self.rte, len(frame), self.table.book.last_seq)

    def warm_history(self) -> None:
        """Replace the model's (empty) trader history with one replayed from recent orders."""
        from pretrade.gateway.warmup import warm

        history, info = warm(self.rdb, self.hdb, self.warm_days)
        if history is not None:
            with self.gate.lock:
                self.gate.history = history
        log.info("trader history %s: %d new orders of %d accounts over %d days (HDB last %d days + RDB today) "
                 "in %.2f s", "warmed" if history is not None else "cold", info["orders"], info["accounts"],
                 info["dates"], self.warm_days, info["seconds"])

    def _rebuild_positions(self, retry_s: float = 2.0) -> None:
        """Today's positions from the RDB's fills; while the RDB cannot answer, no order passes
        (NO_POSITIONS), an error alert says so once, and the rebuild is retried every `retry_s`."""
        from pretrade.gateway.warmup import fills

        failed_since = None
        while not self._stop.is_set():
            try:
                rows = fills(self.rdb)
            except Exception as e:  # noqa: BLE001 - fail closed and retry
                if failed_since is None:
                    failed_since = time.monotonic()
                    text = (f"positions unknown: the RDB at {self.rdb} does not answer ({e}); no order passes "
                            f"until today's fills are read back (retrying every {retry_s:g} s)")
                    log.error(text)
                    self._alert("error", "positions_unknown", text)
                self._stop.wait(retry_s)
                continue
            pos = self.gate.load_positions(rows)
            open_ = {k: v for k, v in pos.items() if v}
            log.info("positions rebuilt from %d fills in the RDB at %s: %d open (%s)", len(rows), self.rdb,
                     len(open_), ", ".join(f"{k} {v:+d}" for k, v in sorted(open_.items())[:10]) or "all flat")
            if failed_since is not None:
                self._alert("info", "positions_known", f"positions rebuilt from the RDB after "
                            f"{time.monotonic() - failed_since:.0f} s: orders pass again")
            self.positions_ready.set()
            return

    def _watchdog(self) -> None:
        """Check freshness every 100 ms, so the switch to the fallback (and its alert) happens
        on time even when no order arrives."""
        while not self._stop.wait(0.1):
            self.table.stale()

    # ---- alerts, audit, control ---------------------------------------------------------------
    def _alert(self, severity: str, kind: str, text: str) -> None:
        self.publisher.put("riskAlert", {"sym": "", "strategy": "", "seq": self.table.book.last_seq,
                                         "severity": severity, "kind": kind, "tier": "", "who": "gateway",
                                         "text": text})

    def _audit(self, change) -> None:
        text = f"gateway mode of {change.kind} {change.key}: {change.mode}"
        if change.mode == "ab":
            text += f" (dynamic share {change.share:g})"
        if change.reason:
            text += f": {change.reason}"
        self.publisher.put("riskAlert", {"sym": change.key if change.kind == "sym" else "",
                                         "strategy": change.key if change.kind == "strategy" else "",
                                         "seq": 0, "severity": "info", "kind": "gateway_mode", "tier": "",
                                         "who": change.who, "text": text})

    def status(self) -> dict[str, Any]:
        """What an operator asks first: sessions, limits freshness, modes, counts."""
        t = self.table
        return {"exchange_up": self.gateway.exchange_up.is_set(), "subscribed": self.subscribed.is_set(),
                "limits_rows": len(t.book),
                "limits_seq": t.book.last_seq, "limits_ever": t.ever, "fallback": t.fallback,
                "fresh_age_s": time.monotonic() - t.last_fresh if t.ever else None,
                "modes": {**{f"sym:{k}": v for k, v in self.modes.by_sym.items()},
                          **{f"strategy:{k}": v for k, v in self.modes.by_strategy.items()}},
                "positions_known": self.gate.positions_known,
                "model": self.gate.model.version if self.gate.model is not None else "",
                "model_status": (self.gate.model_status if self.gate.model is not None
                                 else self.model_state.status if self.model_state else "none"),
                "model_binds": self.gate.model_binds,
                "positions": {k: v for k, v in dict(self.gate.positions).items() if v},  # a copy: fills move it
                "published": dict(self.publisher.published)}

    def reload_model_status(self, asked_by: str = "") -> str:
        """Re-read the fat-finger model's status from the status log and apply it from the next
        order on (approved binds; candidate or shadow is scored only; retired unloads it). A change
        is audited like a mode change: logged, and published as a `riskAlert` of kind
        `gateway_model` naming who changed the status and who applied it here."""
        from pretrade.gateway.governance import read_status
        from pretrade.ipc.codec import QError
        from pretrade.models.status import StatusError

        model = self.gate.model
        if model is None or not self.model_path:
            why = f"it is {self.model_state.status}" if self.model_state else "started with --model none"
            return f"no fat-finger model loaded ({why}); a new model needs a restart"
        try:
            state = read_status(self.model_path, model.version)
        except StatusError as e:  # the card went away: keep what applies now, say why
            raise QError(f"fat-finger model status not re-read, {self.gate.model_status} kept: {e}") from None
        old = self.gate.model_status
        if state.status == old:
            return f"unchanged: {state.describe()}"
        self.gate.set_model_status(state.status)
        self.model_state = state
        who = state.change.who if state.change is not None else "model card"
        text = (f"gateway fat-finger model {model.version}: {old} -> {state.status}, applied by "
                f"{asked_by or 'anonymous'}: {state.describe()}")
        log.warning(text)
        self.publisher.put("riskAlert", {"sym": "", "strategy": "", "seq": 0,
                                         "severity": "info" if state.binds else "warning",
                                         "kind": "gateway_model", "tier": "", "who": who, "text": text})
        return f"{old} -> {state.status}: {state.describe()}"

    def decision_inputs(self, clordid: str) -> dict[str, float]:
        """The fat-finger model's inputs behind the decision on `clordid`, by feature name (a
        person's mark of that decision trains with them); QError when the gateway has none."""
        from pretrade.ipc.codec import QError

        row = self.gateway.inputs.get(clordid)
        if row is None:
            raise QError(f"no fat-finger inputs for {clordid}: not scored by the model, or older than the "
                         f"last {self.gateway.inputs.size} scored decisions")
        from pretrade.models.order_features import FEATURES

        return {name: float(x) for name, x in zip(FEATURES, row, strict=True)}

    def _control_server(self):
        from pretrade.ipc.codec import QError
        from pretrade.ipc.dispatch import Dispatcher
        from pretrade.ipc.server import BackgroundServer

        def mode(conn, kind, key, value, who, reason=b"", share=None):
            try:
                c = self.modes.set(_s(kind), _s(key), _s(value), _s(who), _s(reason),
                                   None if share is None else float(share))
            except ValueError as e:
                raise QError(str(e)) from None
            return f"{c.kind} {c.key} -> {c.mode}"  # a symbol (bytes would go out as raw payload)

        def status(conn):
            return {k: (str(v) if isinstance(v, dict) else v) for k, v in self.status().items()}

        def inputs(conn, clordid):
            return self.decision_inputs(_s(clordid))

        def model_status(conn, *_):  # .gw.model_status[] (q sends one null argument)
            return self.reload_model_status(conn.user)

        return BackgroundServer(Dispatcher({".gw.mode": mode, ".gw.status": status, ".gw.inputs": inputs,
                                            ".gw.model_status": model_status},
                                           expressions={".gw.status": status, ".gw.model_status": model_status}),
                                self.host, self.control_port, users=self.users)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fix-port", type=int, default=GATEWAY_PORT,
                   help=f"FIX acceptor port for clients (default {GATEWAY_PORT}; SenderCompID {GATEWAY_ID})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--tp", default="localhost:5010",
                   help="tickerplant HOST:PORT: limits, heartbeat, quotes in; decisions and orders out (default localhost:5010)")
    p.add_argument("--rte", default="localhost:5013",
                   help="risk engine HOST:PORT asked for its current limits (.rte.limits) on each (re)subscription, "
                        "so a restarted gateway need not wait for the next change; '' to skip (default localhost:5013)")
    p.add_argument("--rdb", default="localhost:5011",
                   help="RDB HOST:PORT: today's fills rebuild the positions on start (no order passes until they "
                        "are read back; retried while the RDB is down) and today's orders warm the traders' "
                        "history; '' starts flat (default localhost:5011)")
    p.add_argument("--hdb", default="localhost:5012",
                   help="HDB HOST:PORT: recent days of orders warm the fat-finger model's trader history; '' skips "
                        "(default localhost:5012)")
    p.add_argument("--warm-days", type=int, default=3,
                   help="days of the HDB's orders replayed into the trader history on start (default 3; 0: today only)")
    p.add_argument("--exchange", default=f"127.0.0.1:{EXCHANGE_PORT}",
                   help=f"exchange FIX HOST:PORT (TargetCompID {EXCHANGE_ID}; default 127.0.0.1:{EXCHANGE_PORT})")
    p.add_argument("--ttl", type=float, default=3.0,
                   help="seconds without an engine heartbeat or limits before conservative static limits bind (default 3)")
    p.add_argument("--fallback-scale", type=float, default=0.5,
                   help="the fallback's share of the static ceilings in config/limits.toml (default 0.5)")
    p.add_argument("--clients", default=None, help="allowed clients file (default config/fix_clients.toml)")
    p.add_argument("--limits", default=None, help="static limits and check parameters (default config/limits.toml)")
    p.add_argument("--model", default=str(ROOT / "models" / "fatfinger.onnx"),
                   help="fat-finger ONNX model with its card (default models/fatfinger.onnx of the project); "
                        "'none' turns the check off. Its status in the folder's status.jsonl decides: approved "
                        "binds; candidate or shadow is scored and recorded (shadow-*/model decision rows) but "
                        "never rejects; retired is not loaded. Re-read at run time with .gw.model_status[]")
    p.add_argument("--no-impact", action="store_true",
                   help="do not serve the impact model ([impact] in the limits file: model, budget_bps, algo); "
                        "by default accepted orders' decision rows carry slippageBps and algo")
    p.add_argument("--mode", default="enforce", choices=["enforce", "shadow", "ab"],
                   help="default enforcement mode: enforce (dynamic limits bind), shadow (static bind, "
                        "dynamic recorded), ab (a share of flow on dynamic); change per sym or strategy at "
                        "run time with .gw.mode on the control port")
    p.add_argument("--ab-share", type=float, default=0.5, help="A/B: share of (account, strategy) keys on dynamic limits")
    p.add_argument("--users", metavar="FILE",
                   help="IPC users file the control port checks logins against (default: none, any login)")
    p.add_argument("--port", type=int, default=CONTROL_PORT,
                   help=f"kdb+ IPC control port (.gw.status, .gw.mode[`sym|`strategy;`KEY;`mode;`who], "
                        f".gw.inputs[`CLORDID]: a decision's fat-finger inputs, .gw.model_status[]: re-read the "
                        f"fat-finger model's status; default {CONTROL_PORT}; 0 disables)")
    p.add_argument("--workdir", default="var/fix/gateway", help="QuickFIX settings, stores and logs (default var/fix/gateway)")


def run(args: argparse.Namespace) -> int:
    from pretrade.gateway.process import wait_for_signal
    from pretrade.ipc.client import parse_addr
    from pretrade.models.card import ModelRefused

    try:
        svc = GatewayService(Path(args.workdir), args.fix_port, args.tp or None, parse_addr(args.exchange),
                             args.host, args.ttl, args.fallback_scale, args.clients, args.limits,
                             None if args.model.lower() == "none" else args.model, args.mode, args.ab_share,
                             args.port or None, args.rte or None,
                             Users.load(args.users) if args.users else None, not args.no_impact,
                             args.rdb or None, args.hdb or None, args.warm_days).start()
    except (ModelRefused, ValueError, OSError) as e:  # config, model or port: say which, do not start
        log.error("gateway not started: %s", e)
        return 1
    import gc

    gc.collect()
    gc.freeze()  # startup objects (model, config, pandas) leave the GC's scans: fewer pauses per order
    try:
        wait_for_signal()
    finally:
        svc.stop()
    return 0
