"""The RDB: today's data in memory, fed by the tickerplant; at end of day, a Parquet partition.

As kdb+tick's r.q: it subscribes with the expression `(.u.sub[`;`];`.u `i`L)`, which returns the
schemas and the journal's message count and path; it replays that many messages from the journal
(so a restart loses nothing), then applies the live `upd` messages. On `.u.end[date]` it writes
each table to DIR/date=YYYY-MM-DD/<table>.parquet, empties its memory and tells the HDB to reload.
It answers `s)` SQL over its tables, plus the functions listed in `functions()`.

Threads: the subscription runs in its own thread (a blocking client); the IPC server answers
queries. `Rdb.lock` guards the store: a query takes a snapshot of the tables (no copy: Arrow
batches are immutable) and runs without holding it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pretrade.schema import TABLES
from pretrade.tick.hdb import RELOAD, partition_dir, write_partition
from pretrade.tick.sql import QTable, SqlEngine
from pretrade.tick.store import Store

log = logging.getLogger(__name__)

SUBSCRIBE = "(.u.sub[`;`];`.u `i`L)"  # exactly what kdb+tick's r.q sends


@dataclass
class Subscription:
    """What the tickerplant told us when we subscribed."""

    tables: list[str]
    count: int  # .u.i: messages in the journal when we subscribed
    journal: Path | None  # .u.L


@dataclass
class Stats:
    """Counters an operator can read with `.rdb.status[]`."""

    replayed_messages: int = 0
    replayed_rows: int = 0
    live_messages: int = 0
    live_rows: int = 0
    rejected: int = 0
    eods: int = 0
    subscribed_at: str = ""
    journal: str = ""
    pending_days: list[str] = field(default_factory=list)


def parse_subscription(response: Any) -> Subscription:
    """The reply to SUBSCRIBE: ((table; empty schema)...; (i; L))."""
    try:
        subs, (count, journal) = response
        tables = [s[0] for s in subs] if isinstance(subs, list | tuple) else []
    except (TypeError, ValueError) as e:
        raise ValueError(f"unexpected reply to {SUBSCRIBE}: {response!r:.300} ({e})") from None
    path = str(journal).lstrip(":") if journal else ""
    return Subscription([str(t) for t in tables], int(count), Path(path) if path else None)


def data_date(tables: dict[str, pa.Table]) -> dt.date:
    """The (UTC) date of the latest row in these tables; today if they are empty."""
    latest = None
    for t in tables.values():
        if t.num_rows:
            m = pa.compute.max(t.column("time")).as_py()
            latest = m if latest is None or m > latest else latest
    return latest.date() if latest is not None else dt.datetime.now(dt.UTC).date()


class Rdb:
    """Today's tables, the subscription protocol and end of day, without any networking."""

    def __init__(self, hdb_dir: Path, notify_hdb=None) -> None:
        self.hdb_dir = Path(hdb_dir)
        self.store = Store(TABLES.values())
        self.lock = threading.Lock()
        self.stats = Stats()
        self.subscription: Subscription | None = None
        self.pending: dict[dt.date, dict[str, pa.Table]] = {}  # days whose write failed
        self.notify_hdb = notify_hdb or (lambda: None)
        self.engine = SqlEngine()
        self._engine_lock = threading.Lock()
        self._registered: dict[str, int] = {}  # table -> store version registered with DuckDB

    # --- subscription and replay --------------------------------------------------------------

    def subscribed(self, response: Any, iter_records=None) -> Subscription:
        """Start of a (re)subscription: check the tables, empty memory and replay the journal."""
        sub = parse_subscription(response)
        unknown = [t for t in sub.tables if t not in self.store.tables]
        if unknown:
            log.warning("tickerplant publishes tables this RDB has no schema for (ignored): %s", unknown)
        previous = self.subscription
        if previous and previous.journal != sub.journal and any(self.store.counts().values()):
            # The tickerplant rolled its journal while we were away: today's rows are yesterday's.
            self.end_of_day(None)
        with self.lock:
            self.store.clear()
        self.subscription = sub
        self.stats.subscribed_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.stats.journal = str(sub.journal or "")
        log.info("subscribed: tables %s, journal %s with %d messages", " ".join(sub.tables),
                 sub.journal, sub.count)
        self.replay(sub, iter_records)
        return sub

    def replay(self, sub: Subscription, iter_records=None) -> None:
        """Apply the first sub.count journal messages (as `-11!(n;L)` does in r.q)."""
        if not sub.count or sub.journal is None:
            return
        if iter_records is None:
            from pretrade.tick.journal import iter_records
        start = time.perf_counter()
        messages = rows = 0
        with self.lock:
            for func, table, data in iter_records(sub.journal, sub.count):
                messages += 1
                if func != "upd" or table not in self.store.tables:
                    continue
                try:
                    rows += self.store.upd(table, data)
                except (TypeError, ValueError) as e:
                    self.stats.rejected += 1
                    log.error("journal message %d (%s) not applied: %s", messages, table, e)
        self.stats.replayed_messages += messages
        self.stats.replayed_rows += rows
        if messages < sub.count:
            log.warning("journal %s: replayed %d of the %d messages the tickerplant reported",
                        sub.journal, messages, sub.count)
        log.info("replayed %d messages, %d rows from %s in %.2f s", messages, rows, sub.journal,
                 time.perf_counter() - start)

    def message(self, msg: Any) -> None:
        """One message from the tickerplant: (`upd; table; data) or (`.u.end; date)."""
        if not isinstance(msg, list | tuple) or not msg:
            log.warning("ignored a message that is not a function call: %r", msg)
            return
        func = msg[0]
        if func == "upd" and len(msg) == 3:
            self.upd(msg[1], msg[2])
        elif func == ".u.end" and len(msg) == 2:
            self.end_of_day(_as_date(msg[1]))
            # The journal has rolled: rows from now on belong to the next file, so a later
            # subscription naming that file must not write them out as a finished day.
            self.subscription = None
        else:
            log.warning("ignored a message for an unknown function: %r", msg[:1])

    def upd(self, table: str, data: Any) -> int:
        """Append live rows (kdb+tick's `upd`); a bad message is logged and skipped."""
        if table not in self.store.tables:
            return 0
        try:
            with self.lock:
                n = self.store.upd(table, data)
        except (TypeError, ValueError) as e:
            self.stats.rejected += 1
            log.error("update to %s not applied: %s", table, e)
            return 0
        self.stats.live_messages += 1
        self.stats.live_rows += n
        return n

    # --- end of day ---------------------------------------------------------------------------

    def end_of_day(self, date: dt.date | None) -> Path | None:
        """Write every table as the day's Parquet partition, then empty memory and tell the HDB.
        Call it from the thread that applies updates. If the write fails the day is kept in
        memory (not queryable) and retried at the next end of day: nothing is dropped."""
        with self.lock:  # updates come from the feed thread that calls this: none arrive meanwhile
            tables = {name: t.arrow() for name, t in self.store.tables.items()}
        date = date or data_date(tables)
        self.pending[date] = _merge(self.pending.get(date), tables)
        written = None
        for day in sorted(self.pending):
            counts = {n: t.num_rows for n, t in self.pending[day].items()}
            try:
                path = write_partition(self.hdb_dir, day, self.pending[day])
            except (OSError, ValueError, pa.ArrowException) as e:
                log.error("end of day %s: could not write %s (%s); kept in memory, will retry at the "
                          "next end of day", day, partition_dir(self.hdb_dir, day), e)
                continue
            del self.pending[day]
            written = path
            log.info("end of day %s: wrote %s (%s)", day, path,
                     ", ".join(f"{n} {c}" for n, c in counts.items() if c) or "no rows")
        with self.lock:
            self.store.clear()
        self.stats.eods += 1
        self.stats.pending_days = [d.isoformat() for d in sorted(self.pending)]
        self.notify_hdb()
        return written

    # --- queries ------------------------------------------------------------------------------

    def _with_snapshot(self, fn: Callable[[SqlEngine], QTable]) -> QTable:
        """Register a snapshot of today's tables with DuckDB, then run fn on the engine."""
        with self._engine_lock:  # one DuckDB connection: one query at a time
            with self.lock:  # only tables that changed since the last query are registered again
                changed = {name: (t.version, t.arrow()) for name, t in self.store.tables.items()
                           if self._registered.get(name) != t.version}
            for name, (version, table) in changed.items():
                self.engine.register(name, table)
                self._registered[name] = version
            return fn(self.engine)

    def query(self, text: str) -> QTable:
        """Run SQL over a snapshot of today's tables."""
        return self._with_snapshot(lambda e: e.query(text))

    def aj(self, left: str | bytes, right: str | bytes, on: str = "sym", time: str = "time") -> QTable:
        """The as-of join of two of today's tables (names, or SQL strings)."""
        return self._with_snapshot(lambda e: e.aj(left, right, on, time))

    def counts(self) -> dict[str, int]:
        """Rows per table in memory."""
        with self.lock:
            return self.store.counts()

    def status(self) -> dict[str, Any]:
        """What an operator wants to know: subscription, counters, rows per table."""
        s = self.stats
        return {
            "journal": s.journal, "subscribedAt": s.subscribed_at,
            "replayedMessages": s.replayed_messages, "replayedRows": s.replayed_rows,
            "liveMessages": s.live_messages, "liveRows": s.live_rows, "rejected": s.rejected,
            "endOfDays": s.eods, "pendingDays": s.pending_days, "rows": self.counts(),
        }


def _merge(old: dict[str, pa.Table] | None, new: dict[str, pa.Table]) -> dict[str, pa.Table]:
    if not old:
        return new
    return {n: pa.concat_tables([old[n], t]) if n in old else t for n, t in new.items()}


def _as_date(value: Any) -> dt.date:
    """A q date as it arrives (datetime.date, numpy datetime64 or 'YYYY-MM-DD')."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, np.datetime64):
        return dt.date.fromisoformat(str(value.astype("datetime64[D]")))
    return dt.date.fromisoformat(str(value).replace(".", "-"))


_CALL3 = b"\x00\x00\x03\x00\x00\x00\xf5"  # a 3-item general list starting with a symbol


def decode_message(payload: bytes) -> Any:
    """A message from the tickerplant, decoded. For `(`upd; table; data)` with a table, the
    table becomes a dict of column arrays rather than a DataFrame: for one-row updates that is
    several times cheaper, which is what keeps an RDB up with a zero-latency tickerplant."""
    from pretrade.ipc.codec import decode, loads

    if payload[:7] == _CALL3:
        func, pos = decode(payload, 6)
        if func == "upd":
            table, pos = decode(payload, pos)
            if payload[pos] == 98 and payload[pos + 2] == 99:  # table: flip of a dictionary
                names, pos = decode(payload, pos + 3)
                cols, end = decode(payload, pos)
                if end == len(payload) and isinstance(cols, list) and len(cols) == len(names):
                    return ["upd", table, dict(zip(names, cols, strict=True))]
    return loads(payload)


class Feed(threading.Thread):
    """The subscription to the tickerplant: subscribe, replay, apply live messages; on a lost
    connection, retry with backoff and subscribe again (which replays from scratch).

    A reader thread moves each message off the socket into `inbox` as soon as it arrives, so a
    long replay (or a burst) never makes this RDB look like a stuck subscriber to the
    tickerplant, which would cut it off; `backlog()` says how far applying lags behind."""

    def __init__(self, rdb: Rdb, tp_addr: str, user: str = "", password: str = "") -> None:
        super().__init__(name="rdb-feed", daemon=True)
        self.rdb = rdb
        self.addr = tp_addr
        self.user, self.password = user, password
        self.stop = threading.Event()
        self.connected = threading.Event()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()

    def backlog(self) -> int:
        """Messages received and not yet applied."""
        return self.inbox.qsize()

    def run(self) -> None:
        from pretrade.ipc.client import QClient, parse_addr
        from pretrade.ipc.codec import QError

        host, port = parse_addr(self.addr)
        delay = 0.5
        while not self.stop.is_set():
            try:
                conn = QClient(host, port, self.user, self.password, timeout=30)
            except OSError as e:
                log.warning("tickerplant %s not reachable (%s); retrying in %.1f s", self.addr, e, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            reader = None
            try:
                response = conn.query(SUBSCRIBE)
                self.inbox = queue.SimpleQueue()
                reader = threading.Thread(target=self._read, args=(conn, self.inbox), name="rdb-reader",
                                          daemon=True)
                reader.start()
                self.rdb.subscribed(response)
                self.connected.set()
                delay = 0.5
                self._apply(self.inbox)
            except (OSError, ConnectionError) as e:
                if not self.stop.is_set():
                    log.warning("lost the tickerplant %s (%s); reconnecting", self.addr, e)
            except (QError, ValueError) as e:
                log.error("subscription to %s failed: %s; retrying in %.1f s", self.addr, e, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 10.0)
            finally:
                self.connected.clear()
                conn.close()
                if reader is not None:
                    reader.join(timeout=2)

    def _read(self, conn, inbox: queue.SimpleQueue) -> None:
        """Socket -> inbox, until the connection ends (the error is queued for the applier)."""
        try:
            while not self.stop.is_set():
                try:
                    inbox.put(conn.receive_raw(timeout=0.5)[1])
                except TimeoutError:
                    continue
        except Exception as e:  # noqa: BLE001 - any end of the stream must reach the applier
            inbox.put(e if isinstance(e, OSError) else ConnectionError(f"bad message stream: {e}"))

    def _apply(self, inbox: queue.SimpleQueue) -> None:
        """Decode and apply queued messages in order; returns when stopped, raises when the
        connection ended."""
        from pretrade.ipc.codec import QDecodeError

        while not self.stop.is_set():
            try:
                item = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            try:
                msg = decode_message(item)
            except QDecodeError as e:  # one bad message: the stream is still in step
                log.error("undecodable message from the tickerplant skipped: %s", e)
                continue
            self.rdb.message(msg)


def notify_hdb(addr: str, user: str = "", password: str = "") -> None:
    """Tell the HDB to reload (async `.hdb.reload[]`); if it is down it reloads by itself when
    next queried, so a failure is only logged."""
    if not addr:
        return
    from pretrade.ipc.client import QClient, parse_addr

    host, port = parse_addr(addr)
    try:
        with QClient(host, port, user, password, timeout=5) as c:
            c.send_async(f"{RELOAD}[]")
        log.info("told the HDB at %s to reload", addr)
    except OSError as e:
        log.warning("could not tell the HDB at %s to reload (%s); it reloads when next queried", addr, e)


def handler(rdb: Rdb, feed: Feed | None = None):
    """The IPC handler: `s)` SQL, tables[], .rdb.counts[], .rdb.status[], .pretrade.aj[...]."""
    from pretrade.ipc.dispatch import Dispatcher
    from pretrade.tick.sql import aj_args, answer

    def status(conn, *_):
        return {"tp": feed.addr if feed else "", "connected": bool(feed and feed.connected.is_set()),
                "backlog": feed.backlog() if feed else 0, **rdb.status()}

    class RdbHandler(Dispatcher):
        def on_start(self, server) -> None:
            if feed is not None:
                feed.start()

        def on_shutdown(self) -> None:
            if feed is not None:
                feed.stop.set()

    return RdbHandler(
        functions={
            "tables": lambda conn, *_: np.array(list(rdb.store.tables), dtype=object),
            ".rdb.counts": lambda conn, *_: rdb.counts(),
            ".rdb.status": status,
            ".pretrade.aj": lambda conn, *a: answer(rdb.aj, *aj_args(*a)),
        },
        sql=lambda conn, text: answer(rdb.query, text),
    )


def run(args: argparse.Namespace) -> int:
    """`pretrade rdb`: subscribe to the tickerplant and serve queries until stopped."""
    from pretrade.ipc.auth import Users
    from pretrade.ipc.server import serve_forever

    users = Users.load(args.users) if args.users else None
    password = os.environ.get(args.password_env, "")
    rdb = Rdb(args.hdb, notify_hdb=lambda: notify_hdb(args.hdb_addr, args.user, password))
    feed = Feed(rdb, args.tp, args.user, password)
    log.info("rdb starting: port %d, tickerplant %s, history %s, HDB %s", args.port, args.tp,
             args.hdb.resolve(), args.hdb_addr or "(none)")
    serve_forever(handler(rdb, feed), args.host, args.port, users)
    feed.stop.set()
    feed.join(timeout=5)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=5011, help="IPC port to listen on (default 5011)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--tp", default="localhost:5010", metavar="HOST:PORT", help="tickerplant HOST:PORT to subscribe to (default localhost:5010)")
    p.add_argument("--hdb", type=Path, default=Path("var/hdb"), metavar="DIR",
                   help="history root: end of day writes DIR/date=YYYY-MM-DD/<table>.parquet (default var/hdb)")
    p.add_argument("--hdb-addr", default="localhost:5012", metavar="HOST:PORT",
                   help="HDB HOST:PORT told to reload after end of day (default localhost:5012; '' for none)")
    p.add_argument("--users", type=Path, metavar="FILE",
                   help="users file (config/users.toml) to require passwords of clients")
    p.epilog = ("Answers over kdb+ IPC: s)SQL over today's tables (e.g. pretrade query localhost:5011 "
                "\"s)select sym, count(*) from trade group by sym\"), tables[], .rdb.counts[], "
                ".rdb.status[], .pretrade.aj[`trade;`quote]. Anything else: 'nyi.")
    p.add_argument("--user", default=os.environ.get("PRETRADE_USER", ""),
                   help="user name for the tickerplant and HDB (default $PRETRADE_USER)")
    p.add_argument("--password-env", default="PRETRADE_PASSWORD", metavar="VAR",
                   help="environment variable holding that user's password (default PRETRADE_PASSWORD)")
