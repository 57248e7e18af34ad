"""What the API knows live: a tickerplant subscription to limits, riskScore, riskAlert,
heartbeat and decision, kept as current state, short histories for the charts, and a fan-out to
the browsers' event streams. One thread receives; readers take copies under a lock.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TABLES = ("limits", "riskScore", "riskAlert", "heartbeat", "decision")


def plain(v: Any) -> Any:
    """A q/numpy value as JSON-ready Python: text for symbols and strings, ISO 8601 (ns) for
    timestamps, None for NaN and nulls."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.datetime64):
        return None if np.isnat(v) else np.datetime_as_string(v.astype("datetime64[ns]"), unit="ns")
    if hasattr(v, "isoformat") and hasattr(v, "value"):  # pandas Timestamp
        return None if v is None or v != v else v.to_datetime64().astype("datetime64[ns]").astype(str)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def rows_of(table: str, data: Any) -> list[dict[str, Any]]:
    """An update's data (a DataFrame or a list of columns in schema order) as JSON-ready rows."""
    from pretrade.schema import TABLES as SCHEMA

    if hasattr(data, "columns") and hasattr(data, "to_dict"):
        cols = {c: data[c].to_numpy() for c in data.columns}
    else:
        names = SCHEMA[table].names if table in SCHEMA else [f"c{i}" for i in range(len(data))]
        if data and all(np.ndim(c) == 0 and not isinstance(c, list | bytes) for c in data):
            data = [[c] for c in data]  # one row of atoms, as a q client may publish it
        cols = dict(zip(names, data, strict=False))
    if not cols:
        return []
    n = len(next(iter(cols.values())))
    out = []
    for name, values in cols.items():
        if isinstance(values, np.ndarray) and values.dtype.kind == "M":
            text = np.datetime_as_string(values.astype("datetime64[ns]"), unit="ns")
            cols[name] = [None if t == "NaT" else t for t in text.tolist()]
    for i in range(n):
        out.append({k: plain(v[i]) for k, v in cols.items()})
    return out


class LiveState:
    """Current limits, scores, alerts and decisions as seen on the tickerplant, plus listeners."""

    def __init__(self, history: int = 3000, alerts: int = 500, decisions: int = 5000) -> None:
        self.lock = threading.Lock()
        self.limits: dict[tuple[str, str], dict] = {}
        self.scores: dict[str, dict] = {}
        self.series: dict[str, collections.deque] = {}
        self.history = history
        self.alerts: collections.deque = collections.deque(maxlen=alerts)
        self.decisions: collections.deque = collections.deque(maxlen=decisions)
        self.heartbeat: dict | None = None
        self.updated: dict[str, float] = {}       # table -> wall time of its last update
        self.connected = False
        self.seeded = False  # the start-up read-back (limits, scores, alerts) has finished
        self.error = ""
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []

    # ---- in ------------------------------------------------------------------------------------

    def apply(self, table: str, rows: list[dict[str, Any]], fresh: bool = True) -> None:
        """Fold one update into the state and pass it to every listener; `fresh=False` for rows
        read back at start (they do not count as a live update)."""
        now = time.time()
        with self.lock:
            if fresh:
                self.updated[table] = now
            for r in rows:
                if table == "limits":
                    key = (r["sym"], r["strategy"])
                    old = self.limits.get(key)
                    if old is None or r["seq"] >= old["seq"]:
                        self.limits[key] = r
                    if not r["strategy"]:
                        self._point(r["sym"], r["time"], maxQty=r["maxQty"], tier=r["tier"], state=r["state"])
                elif table == "riskScore":
                    self.scores[r["sym"]] = r
                    self._point(r["sym"], r["time"], score=r["score"], tier=r["tier"])
                elif table == "riskAlert":
                    self.alerts.append(r)
                elif table == "decision":
                    self.decisions.append(r)
                elif table == "heartbeat" and r.get("sym") == "rte":
                    self.heartbeat = {**r, "received": now}
            listeners = list(self._listeners)
        event = {"table": table, "rows": rows}
        for loop, q in listeners:
            try:
                loop.call_soon_threadsafe(_offer, q, event)
            except RuntimeError:  # that listener's loop has closed
                self.unlisten(q)

    def _point(self, sym: str, t: str, **values: Any) -> None:
        s = self.series.get(sym)
        if s is None:
            s = self.series[sym] = collections.deque(maxlen=self.history)
        last = dict(s[-1]) if s else {"score": None, "maxQty": None, "tier": "NORMAL", "state": "ACTIVE"}
        last.update(values, time=t)
        s.append(last)

    # ---- out -----------------------------------------------------------------------------------

    def listen(self) -> asyncio.Queue:
        """A queue of events ({"table", "rows"}) for the calling event loop."""
        q: asyncio.Queue = asyncio.Queue(maxsize=1000)
        with self.lock:
            self._listeners.append((asyncio.get_running_loop(), q))
        return q

    def unlisten(self, q: asyncio.Queue) -> None:
        with self.lock:
            self._listeners = [(lp, x) for lp, x in self._listeners if x is not q]

    def snapshot(self) -> dict[str, Any]:
        """Everything the dashboard draws on first load."""
        with self.lock:
            return {"limits": list(self.limits.values()), "scores": list(self.scores.values()),
                    "alerts": list(self.alerts)[-100:], "heartbeat": self.heartbeat,
                    "feed": self.feed_status()}

    def feed_status(self) -> dict[str, Any]:
        """Is the subscription up, and how old is each table's last update (seconds)."""
        now = time.time()
        return {"connected": self.connected, "seeded": self.seeded, "error": self.error,
                "age_s": {t: round(now - w, 3) for t, w in self.updated.items()}}


def _offer(q: asyncio.Queue, event: dict) -> None:
    if q.full():  # a slow browser loses the oldest events, never blocks the feed
        q.get_nowait()
    q.put_nowait(event)


class Feed:
    """The subscription thread: (re)connects to the tickerplant and applies its updates."""

    def __init__(self, state: LiveState, tp: str, user: str, password: str, on_rows=None,
                 seed=None) -> None:
        self.state, self.tp, self.user, self.password = state, tp, user, password
        self.on_rows = on_rows
        self.seed = seed  # called after each (re)subscription: reads back what was missed
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="api-feed", daemon=True)

    def start(self) -> Feed:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=3)

    def _run(self) -> None:
        from pretrade.ipc.client import QClient, parse_addr

        host, port = parse_addr(self.tp)
        delay = 0.5
        while not self.stop.is_set():
            try:
                conn = QClient(host, port, self.user, self.password, timeout=10)
                for t in TABLES:
                    conn.query(".u.sub", t, "")
            except (OSError, ConnectionError) as e:
                self.state.connected, self.state.error = False, f"tickerplant {self.tp} unreachable: {e}"
                self.stop.wait(delay)
                delay = min(2 * delay, 5.0)
                continue
            log.info("subscribed to %s for %s", self.tp, ", ".join(TABLES))
            self.state.connected, self.state.error, delay = True, "", 0.5
            if self.seed is not None:
                try:
                    self.seed(self.state)
                except Exception as e:  # noqa: BLE001 - a missing backend leaves the state to the live feed
                    log.warning("could not read back the current state: %s", e)
            self.state.seeded = True
            try:
                while not self.stop.is_set():
                    try:
                        msg = conn.receive(timeout=0.5)
                    except TimeoutError:
                        continue
                    if not (isinstance(msg, list | tuple) and len(msg) == 3 and msg[0] == "upd"):
                        continue
                    table = plain(msg[1])
                    try:
                        rows = rows_of(table, msg[2])
                        self.state.apply(table, rows)
                        if self.on_rows is not None:
                            self.on_rows(table, rows)
                    except (ValueError, TypeError, KeyError, AttributeError) as e:
                        log.exception("update to %s not used: %s", table, e)
            except (OSError, ConnectionError) as e:
                if not self.stop.is_set():
                    log.warning("lost the tickerplant %s (%s); reconnecting", self.tp, e)
                    self.state.connected, self.state.error = False, f"lost the tickerplant {self.tp}: {e}"
            finally:
                conn.close()
        self.state.connected = False
