"""The tickerplant: kdb+tick's tick.q in Python. Stamps, journals, then publishes by table and sym.

Conventions follow kdb+tick (tick.q, u.q) so q publishers and subscribers work unchanged:
  .u.upd[t;x]   one row (atoms) or columns, with or without time; time added when absent
  .u.sub[t;s]   ` for every table / every sym; answers (t; empty table) (a list of them for `)
  .u.i .u.j     messages in the journal / journaled including those not yet published (batch)
  .u.L .u.d     journal file (`:DIR/symYYYY.MM.DD) and the tickerplant's date
  .u.end[d]     sent to every subscriber at end of day; then the journal rolls to the next date
  "(.u.sub[`;`];`.u `i`L)"   the expression r.q sends: (subscriptions; (.u.i; .u.L))
Every accepted update is journaled (`upd; t; x) before it is published or acknowledged; an update
that does not fit the schema is refused: a sync sender gets a q error, an async one (which kdb+
cannot answer) is logged with its peer and counted in `.tp.status[]`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrade.ipc import codec, wire
from pretrade.ipc.dispatch import Dispatcher
from pretrade.ipc.server import Connection
from pretrade.tick import tpwire
from pretrade.tick.journal import Journal, JournalError

log = logging.getLogger(__name__)

_LIST2 = b"\x00\x00\x02\x00\x00\x00"
REJECT_LOG_EVERY_S = 5.0


def q_date(d: dt.date) -> str:
    """A date as q writes it: 2026.11.21."""
    return d.strftime("%Y.%m.%d")


def utc_today() -> dt.date:
    """Today's date in UTC (the data clock is the wall clock)."""
    return dt.datetime.now(dt.UTC).date()


def _midnight_ns(d: dt.date) -> int:
    """Unix ns of the midnight (UTC) that ends date d."""
    nxt = dt.datetime.combine(d + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(nxt.timestamp()) * 1_000_000_000


@dataclass
class _Rejections:
    """Counts rejected updates and logs them at most once every few seconds (rate-limited)."""

    total: int = 0
    since_log: int = 0
    last_log: float = 0.0
    last_error: str = ""

    def add(self, peer: str, error: str) -> None:
        self.total += 1
        self.since_log += 1
        self.last_error = f"{peer}: {error}"
        now = time.monotonic()
        if now - self.last_log >= REJECT_LOG_EVERY_S:
            log.warning("rejected %d update(s) (total %d); latest from %s: %s",
                        self.since_log, self.total, peer, error)
            self.since_log = 0
            self.last_log = now


@dataclass
class Subscription:
    """One subscriber's wish for one table: every sym (None) or a set of syms (as bytes)."""

    syms: frozenset[bytes] | None


@dataclass
class Tickerplant:
    """The tickerplant's state and behaviour, independent of the network: give it checked updates
    (`accept`) and subscriptions (`sub`); it journals, and publishes through each subscriber
    connection's `send_frame`."""

    journal_dir: Path
    batch_ms: int = 0
    schema_name: str = "sym"
    specs: dict[bytes, tpwire.TableSpec] = field(default_factory=tpwire.table_specs)
    w: dict[str, dict[Any, Subscription]] = field(init=False)  # .u.w: table -> conn -> wish
    journal: Journal = field(init=False)
    d: dt.date = field(init=False)                                # .u.d
    i: int = field(init=False)                                    # .u.i
    j: int = field(init=False)                                    # .u.j
    pending: dict[str, list[tpwire.Update]] = field(init=False)  # batch mode buffer
    rejections: _Rejections = field(default_factory=_Rejections)

    def __post_init__(self) -> None:
        self.journal_dir = Path(self.journal_dir).resolve()
        self.t = [s.name for s in self.specs.values()]                # .u.t
        self.by_name = {s.name: s for s in self.specs.values()}
        self.w = {t: {} for t in self.t}
        self.pending = {t: [] for t in self.t}
        self.d = utc_today()
        self._eod_ns = _midnight_ns(self.d)
        self.journal = Journal(self.log_path(self.d))
        self.i = self.j = self.journal.count
        rec = self.journal.recovered
        if rec is not None and not rec.ok:
            log.warning("journal %s had a bad tail; %d valid messages kept", rec.path, rec.count)

    # --- state kdb+tick exposes -----------------------------------------------------------

    def log_path(self, d: dt.date) -> Path:
        """The journal for date d: DIR/symYYYY.MM.DD, as tick.q names it."""
        return self.journal_dir / f"{self.schema_name}{q_date(d)}"

    @property
    def L(self) -> str:  # noqa: N802 (kdb+tick's name)
        """.u.L: the journal as a q file symbol, `:/abs/path/sym2026.11.21."""
        return ":" + str(self.journal.path)

    @property
    def mode(self) -> str:
        return f"batch {self.batch_ms} ms" if self.batch_ms else "zero-latency"

    def status(self) -> dict:
        """What `.tp.status[]` answers: tables, subscribers per table, journal, rejections, mode."""
        return {
            "tables": list(self.t),
            "subscribers": {t: len(self.w[t]) for t in self.t},
            "journal": str(self.journal.path),
            "count": self.i,
            "j": self.j,
            "date": self.d,
            "rejected": self.rejections.total,
            "lastRejection": self.rejections.last_error,
            "mode": self.mode,
        }

    # --- updates ----------------------------------------------------------------------------

    def check_day(self) -> None:
        """End the day when the wall clock has passed the tickerplant's date (tick.q's .u.ts)."""
        while time.time_ns() >= self._eod_ns:
            self.endofday()

    def accept(self, updates: list[tpwire.Update]) -> None:
        """Journal `updates` with one write, then publish them (or buffer them, in batch mode).

        Raises JournalError if the write fails: then nothing of them was journaled or published."""
        if not updates:
            return
        self.check_day()
        self.journal.append(b"".join(u.record for u in updates), len(updates))
        if self.batch_ms:
            self.j = self.journal.count
            for u in updates:
                self.pending[u.spec.name].append(u)
        else:
            self.i = self.j = self.journal.count
            out: dict[Any, list[bytes]] = {}
            for u in updates:
                self.publish(u.spec, u.rows, u.parts, u if u.rows == 1 else None, out)
            _send(out)

    def publish(self, spec: tpwire.TableSpec, rows: int, parts: list[bytes],
                single: tpwire.Update | None = None,
                out: dict[Any, list[bytes]] | None = None) -> None:
        """Send (`upd; table; rows) to the table's subscribers; one frame for all who take every
        sym, a filtered table for those who asked for some syms (u.q's pub and sel).

        With `out`, frames are collected per connection for the caller to send with one write
        each (every update is still its own message, as in kdb+tick's zero-latency mode)."""
        subs = self.w[spec.name]
        if not subs:
            return
        if out is None:
            out = {}
            self.publish(spec, rows, parts, single, out)
            _send(out)
            return
        shared = None  # the frame for every subscriber that takes every sym: built once
        for conn, sub in subs.items():
            if sub.syms is None or (single is not None and single.parts[1][:-1] in sub.syms):
                if shared is None:
                    shared = tpwire.publish_frame(spec, rows, parts)
                frame = shared
            elif single is not None:
                continue  # a one-row update for a sym this subscriber did not ask for
            else:
                table = tpwire.filter_rows(spec, rows, parts, sub.syms)
                if table is None:
                    continue
                frame = tpwire.table_frame(spec, table)
            frames = out.get(conn)
            if frames is None:
                out[conn] = [frame]
            else:
                frames.append(frame)

    def flush(self) -> None:
        """Batch mode: publish what is buffered, one table message per table (tick.q's .z.ts)."""
        for ups in self.pending.values():
            if ups:
                rows, parts = tpwire.merge(ups)
                self.publish(ups[0].spec, rows, parts)
                ups.clear()
        self.i = self.j

    def endofday(self) -> dt.date:
        """Publish what is pending, send (`.u.end; d) to every subscriber, advance the date and
        roll the journal to the next date's file. Returns the date that ended."""
        self.flush()
        ended = self.d
        msg = wire.frame(codec.encode([".u.end", ended]), wire.ASYNC)
        conns = {c for subs in self.w.values() for c in subs}
        for c in conns:
            c.send_frame(msg)
        self.d = ended + dt.timedelta(days=1)
        self._eod_ns = _midnight_ns(self.d)
        old = self.journal.path
        self.journal.roll(self.log_path(self.d))
        self.i = self.j = self.journal.count
        log.info("end of day %s: .u.end sent to %d subscriber(s); journal %s rolled to %s (%d messages)",
                 q_date(ended), len(conns), old.name, self.journal.path, self.i)
        return ended

    # --- subscriptions ----------------------------------------------------------------------

    def sub(self, conn: Any, table: str, syms: Any) -> bytes:
        """.u.sub[table; syms]: register and answer (table; empty table), or a list of those
        for ` (every table). Raises codec.QError for an unknown table."""
        wish = _sym_wish(syms)
        if table != "" and table not in self.by_name:
            raise codec.QError(f"{table}: no such table; tables: {' '.join(self.t)}")
        log.info("subscriber %s takes %s, %s", getattr(conn, "name", conn),
                 table or "every table", "every sym" if wish is None else
                 "syms " + " ".join(sorted(s.decode() for s in wish)))
        if table == "":
            return b"\x00\x00" + len(self.t).to_bytes(4, "little") + b"".join(
                self._add(conn, t, wish) for t in self.t)
        return self._add(conn, table, wish)

    def _add(self, conn: Any, table: str, wish: frozenset[bytes] | None) -> bytes:
        """Register conn for table (replacing an earlier wish, as u.q's sub does) and answer
        (table; empty table with `g# on sym)."""
        self.w[table][conn] = Subscription(wish)
        return _LIST2 + codec.encode(table) + self.by_name[table].empty_table

    def u_w(self) -> dict:
        """.u.w as u.q keeps it: table -> list of (handle; syms), syms ` for every sym."""
        import numpy as np

        return {t: [[getattr(c, "handle", 0),
                     "" if s.syms is None else np.array(sorted(x.decode() for x in s.syms), dtype=object)]
                    for c, s in subs.items()] for t, subs in self.w.items()}

    def drop(self, conn: Any) -> None:
        """Forget a subscriber (u.q's .z.pc / del)."""
        for subs in self.w.values():
            subs.pop(conn, None)

    def subscribers(self) -> int:
        """How many distinct connections subscribe to anything."""
        return len({c for subs in self.w.values() for c in subs})


def _send(out: dict[Any, list[bytes]]) -> None:
    """One write per connection of the frames collected for it."""
    for conn, frames in out.items():
        conn.send_frame(frames[0] if len(frames) == 1 else b"".join(frames))


def _sym_wish(syms: Any) -> frozenset[bytes] | None:
    """None for ` (every sym), else the set of syms as bytes."""
    if syms is None or (isinstance(syms, str) and syms == ""):
        return None
    if isinstance(syms, str):
        return frozenset([syms.encode()])
    items = list(syms)
    if not items or all(s == "" for s in items):
        return None
    return frozenset(str(s).encode() for s in items)


class TickerplantHandler(Dispatcher):
    """The tickerplant on the wire: `.u.upd` on a byte-level hot path, the rest by Dispatcher."""

    def __init__(self, tp: Tickerplant, fsync_ms: int = 0) -> None:
        self.tp = tp
        self.fsync_ms = fsync_ms
        self._tasks: list[asyncio.Task] = []
        super().__init__(
            functions={
                ".u.upd": _upd_arity,  # a well-formed .u.upd never gets here (the hot path)
                ".u.sub": lambda conn, t, s: tp.sub(conn, t, s),
                ".u.endofday": lambda conn, *a: tp.endofday(),
                ".tp.status": lambda conn, *a: tp.status(),
            },
            expressions={
                ".u.i": lambda conn: tp.i,
                ".u.j": lambda conn: tp.j,
                ".u.L": lambda conn: tp.L,
                ".u.d": lambda conn: tp.d,
                ".u.t": lambda conn: _symbols(tp.t),
                "tables[]": lambda conn: _symbols(tp.t),
                "tables`.": lambda conn: _symbols(tp.t),
                ".u.w": lambda conn: tp.u_w(),
                "(.u.sub[`;`];`.u `i`L)": lambda conn: (
                    _LIST2 + tp.sub(conn, "", "") + _LIST2 + codec.encode(tp.i) + codec.encode(tp.L)),
                "`.u `i`L": lambda conn: _LIST2 + codec.encode(tp.i) + codec.encode(tp.L),
            },
        )

    # --- messages ----------------------------------------------------------------------------

    def on_message(self, conn: Connection, msgtype: int, payload: memoryview) -> Any:
        """A single message (every sync message comes here): updates are acknowledged only once
        journaled; a refused update answers a q error."""
        p = bytes(payload)
        if p.startswith(tpwire.UPD_CALL):
            try:
                u = tpwire.parse_upd(p, self.tp.specs)
            except tpwire.UpdateError as e:
                self.tp.rejections.add(conn.name, str(e))
                if msgtype == wire.SYNC:
                    raise codec.QError(str(e)) from None
                return None
            try:
                self.tp.accept([u])
            except JournalError as e:
                log.error("%s; update from %s refused", e, conn.name)
                raise codec.QError(f"tickerplant journal write failed: {e}") from None
            return None
        return self.dispatch(conn, codec.loads(p))

    def on_messages(self, conn: Connection, batch: list[tuple[int, memoryview]]) -> None:
        """A run of async messages from one read: consecutive updates are journaled with one
        write, then published; anything else is handled in its turn."""
        run: list[tpwire.Update] = []
        for _, payload in batch:
            p = bytes(payload)
            if p.startswith(tpwire.UPD_CALL):
                try:
                    run.append(tpwire.parse_upd(p, self.tp.specs))
                except tpwire.UpdateError as e:
                    self.tp.rejections.add(conn.name, str(e))
                continue
            self._accept_async(conn, run)
            run = []
            try:
                self.dispatch(conn, codec.loads(p))
            except codec.QError as e:
                log.warning("async message from %s failed: %s", conn.name, e.message)
        self._accept_async(conn, run)

    def _accept_async(self, conn: Connection, run: list[tpwire.Update]) -> None:
        if not run:
            return
        try:
            self.tp.accept(run)
        except JournalError as e:
            log.error("%s; %d async update(s) from %s LOST (not journaled, not published)",
                      e, len(run), conn.name)

    def on_disconnect(self, conn: Connection) -> None:
        if self.tp.subscribers() and any(conn in s for s in self.tp.w.values()):
            log.info("subscriber %s gone", conn.name)
        self.tp.drop(conn)

    # --- timers ------------------------------------------------------------------------------

    async def on_start(self, server: Any) -> None:
        """Start the timers: batch publish, end-of-day check (every second, as tick.q), fsync."""
        loop = asyncio.get_running_loop()
        if self.tp.batch_ms:
            self._tasks.append(loop.create_task(self._every(self.tp.batch_ms / 1000, self.tp.flush)))
        self._tasks.append(loop.create_task(self._every(1.0, self.tp.check_day)))
        if self.fsync_ms:
            self._tasks.append(loop.create_task(self._every(self.fsync_ms / 1000, self.tp.journal.sync)))

    async def _every(self, seconds: float, fn) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                fn()
            except Exception:
                log.exception("timer %s failed", getattr(fn, "__name__", fn))

    async def on_shutdown(self) -> None:
        """Publish what is pending and close the journal."""
        for t in self._tasks:
            t.cancel()
        self.tp.flush()
        self.tp.journal.close()
        log.info("journal %s closed at %d messages", self.tp.journal.path, self.tp.journal.count)


def _upd_arity(conn: Any, *args: Any) -> None:
    raise codec.QError(f".u.upd takes 2 arguments (table; data), got {len(args)}")


def _symbols(names: list[str]) -> Any:
    import numpy as np

    return np.array(names, dtype=object)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `pretrade tp`."""
    parser.add_argument("--port", type=int, default=5010, help="port to listen on (default 5010)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--journal", required=True, metavar="DIR",
                        help="journal folder; today's journal is DIR/symYYYY.MM.DD (kdb+ log format)")
    parser.add_argument("--batch-ms", type=int, default=0, metavar="N",
                        help="batch mode: publish every N ms (default 0: zero latency, publish each update)")
    parser.add_argument("--users", metavar="FILE",
                        help="users file (config/users.toml format) required to log in; default: open")
    parser.add_argument("--max-buffer", type=int, default=64 << 20, metavar="BYTES",
                        help="cut off a subscriber whose unsent output passes this (default 64 MiB)")
    parser.add_argument("--fsync-ms", type=int, default=0, metavar="N",
                        help="fsync the journal every N ms (default 0: never; a process crash loses "
                             "nothing either way, fsync guards against power loss)")


def run(args: argparse.Namespace) -> int:
    """Start the tickerplant and serve until SIGINT/SIGTERM."""
    from pretrade.ipc.server import serve_forever

    users = None
    if args.users:
        from pretrade.ipc.auth import Users

        users = Users.load(args.users)
    tp = Tickerplant(Path(args.journal), batch_ms=args.batch_ms)
    rec = tp.journal.recovered
    log.info("tickerplant on %s:%d, %s; journal %s (%s); tables %s",
             args.host, args.port, tp.mode, tp.journal.path,
             f"recovered {tp.i} messages" if rec is not None else "new", " ".join(tp.t))
    serve_forever(TickerplantHandler(tp, args.fsync_ms), args.host, args.port, users, args.max_buffer)
    return 0
