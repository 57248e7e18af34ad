"""pretrade.client: what a quant types in a notebook, and the `pretrade query` command.

    from pretrade.client import connect
    rdb = connect("localhost:5011")
    rdb.sql("select sym, count(*) as n from trade group by sym")     # DataFrame
    rdb.query("s)select * from quote where sym='ESZ6'")              # the same, kdb+ style
    rdb.aj("trade", "quote")                                        # trades with prevailing quotes
    tp = connect("localhost:5010")
    tp.publish("trade", [{"sym": "ESZ6", "price": 4500.25, "size": 3, "side": "buy"}])
    with tp.subscribe("trade", ["ESZ6"]) as sub:
        for table, rows in sub: ...

`query` sends exactly what it is given, as q's `h"..."` does: a string that starts with `s)` is SQL,
any other string is a q expression (which the Python processes answer only for their registered
functions, else q's 'nyi). `sql` adds the `s)` prefix for you. Credentials default to the
PRETRADE_USER and PRETRADE_PASSWORD environment variables.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_SQL_START = re.compile(r"^\s*(select|with|from|describe|show|summarize|pivot|explain)\b", re.I)
UpdateCallback = Callable[[str, Any], None]


def _credentials(user: str | None, password: str | None) -> tuple[str, str]:
    user = os.environ.get("PRETRADE_USER", "") if user is None else user
    password = os.environ.get("PRETRADE_PASSWORD", "") if password is None else password
    return user, password


def _open(addr: str, user: str | None, password: str | None, timeout: float):
    from pretrade.ipc.client import QClient, parse_addr

    host, port = parse_addr(addr)
    user, password = _credentials(user, password)
    return QClient(host, port, user=user, password=password, timeout=timeout)


def connect(addr: str = "localhost:5011", user: str | None = None, password: str | None = None,
            timeout: float = 30.0) -> Client:
    """Connect to a pretrade process (or any kdb+ process) at HOST:PORT."""
    return Client(addr, user, password, timeout)


def columns_for(table: str, rows: Any) -> tuple[list[str], list[np.ndarray]]:
    """Rows to publish (a DataFrame, a list of dicts, a list of row lists, or one row) as the
    table's columns in schema order, with exact numpy dtypes; `time` may be left out (the
    tickerplant stamps it)."""
    import pandas as pd

    from pretrade.schema import table as schema_table

    spec = schema_table(table)
    names = spec.names
    if isinstance(rows, pd.DataFrame):
        df = rows
    elif isinstance(rows, dict):
        df = pd.DataFrame(rows)
    else:
        rows = list(rows)
        if rows and not isinstance(rows[0], dict | list | tuple):
            rows = [rows]  # one row
        if rows and isinstance(rows[0], dict):
            df = pd.DataFrame(rows)
        else:
            width = len(rows[0]) if rows else len(names) - 1
            use = names if width == len(names) else names[1:]
            if width != len(use):
                raise ValueError(f"{table}: rows have {width} values; expected {len(names)} "
                                 f"({' '.join(names)}) or {len(names) - 1} without time")
            df = pd.DataFrame(rows, columns=use)
    use = names if "time" in df.columns else names[1:]
    missing = [n for n in use if n not in df.columns]
    extra = [c for c in df.columns if c not in names]
    if missing or extra:
        raise ValueError(f"{table}: missing columns {missing}, unknown columns {extra}; "
                         f"the table has {' '.join(names)}")
    out = []
    for name in use:
        col = spec.column(name)
        values = df[name]
        if col.qtype in "sC":
            arr = np.array(["" if v is None else str(v) for v in values], dtype=object)
            if col.qtype == "C":
                arr = [v.encode("utf-8") for v in arr]  # a general list of char vectors
        elif col.qtype == "p":
            arr = pd.to_datetime(values).to_numpy(dtype="datetime64[ns]")
        else:
            raw = values.to_numpy()
            if col.qtype in "ij" and raw.dtype.kind == "f" and not np.all(raw == np.round(raw)):
                raise ValueError(f"{table}.{name}: integers expected, got {raw[raw != np.round(raw)][:3]}")
            if (col.qtype == "b") != (raw.dtype.kind == "b") or raw.dtype.kind not in "biuf":
                raise ValueError(f"{table}.{name}: expected q type {col.qtype}, got {raw.dtype} values")
            arr = raw.astype(col.dtype)
        out.append(arr)
    return use, out


class Subscription:
    """Updates from a tickerplant subscription, on a connection of its own: iterate over
    (table, DataFrame) pairs, or give `on_update` and they are passed to it from a thread."""

    def __init__(self, conn, tables: list[str], on_update: UpdateCallback | None) -> None:
        self._conn = conn
        self.tables = tables
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._on_update = on_update
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pretrade-subscription", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from pretrade.schema import TABLES

        try:
            while not self._stop.is_set():
                try:
                    msg = self._conn.receive(timeout=0.2)
                except TimeoutError:
                    continue
                if not (isinstance(msg, list | tuple) and len(msg) == 3 and msg[0] == "upd"):
                    log.info("subscription: %r", msg[:2] if isinstance(msg, list | tuple) else msg)
                    continue
                table, data = msg[1], msg[2]
                if not hasattr(data, "columns"):  # a list of columns: name them from the schema
                    import pandas as pd

                    names = TABLES[table].names if table in TABLES else [f"c{i}" for i in range(len(data))]
                    data = pd.DataFrame(dict(zip(names, data, strict=False)))
                if self._on_update is not None:
                    try:
                        self._on_update(table, data)
                    except Exception:  # noqa: BLE001 - the caller's bug must not end the feed
                        log.exception("on_update(%s, ...) failed; the subscription carries on", table)
                else:
                    self._queue.put((table, data))
        except Exception as e:  # noqa: BLE001 - reported to the reader, not lost in a thread
            if not self._stop.is_set():
                self.error = e
                log.error("subscription ended: %s", e)
        finally:
            self._queue.put(None)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        while True:
            item = self._queue.get()
            if item is None:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def get(self, timeout: float | None = None) -> tuple[str, Any] | None:
        """The next (table, DataFrame), or None after `timeout` seconds (or when closed)."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            self._queue.put(None)
        return item

    def close(self) -> None:
        """Stop receiving and close the connection."""
        self._stop.set()
        self._thread.join(timeout=2)
        self._conn.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Client:
    """A connection to one process: queries, SQL, as-of joins, publishing and subscriptions."""

    def __init__(self, addr: str, user: str | None = None, password: str | None = None,
                 timeout: float = 30.0) -> None:
        self.addr = addr
        self._user, self._password, self._timeout = user, password, timeout
        self._conn = _open(addr, user, password, timeout)

    def query(self, text: str, *args: Any) -> Any:
        """Send `text` as is (`s)...` for SQL, or a q expression); with args, call the function
        named `text` with them. Tables come back as DataFrames; a q error raises QError."""
        from pretrade.ipc.codec import QError

        try:
            return self._conn.query(text, *args) if args else self._conn.query(text)
        except QError as e:
            if not args and _SQL_START.match(text) and (e.message == "nyi" or "no such function" in e.message):
                raise QError(f"nyi (SQL needs the s) prefix: query('s){text.strip()}') or sql(...))") from None
            raise

    def sql(self, text: str) -> Any:
        """Run SQL (the `s)` prefix is added when missing); a DataFrame."""
        text = text.strip()
        return self.query(text if text.startswith("s)") else "s)" + text)

    def aj(self, left: str, right: str, on: str = "sym", time: str = "time") -> Any:
        """q's as-of join on the server: each row of `left` with the prevailing row of `right`.
        Each side is a table name or an SQL query (e.g. "select * from trade where sym='A'")."""
        def side(x: str) -> Any:
            return x.encode() if " " in x.strip() else x  # SQL travels as a string, names as symbols
        return self.query(".pretrade.aj", side(left), side(right), on, time)

    def publish(self, table: str, rows: Any) -> Any:
        """Publish rows to a tickerplant with a sync `.u.upd[table; columns]`, so a rejected
        update raises QError here."""
        _, columns = columns_for(table, rows)
        return self._conn.query(".u.upd", table, columns)

    def subscribe(self, tables: str | list[str] = "", syms: str | list[str] = "",
                  on_update: UpdateCallback | None = None) -> Subscription:
        """Subscribe to a tickerplant (`.u.sub`): "" means every table or sym. Returns a
        Subscription to iterate, or that calls on_update(table, frame) from a thread."""
        conn = _open(self.addr, self._user, self._password, self._timeout)
        names = [tables] if isinstance(tables, str) else list(tables)
        sym_arg: Any = syms if isinstance(syms, str) else np.array(list(syms), dtype=object)
        try:
            for name in names:
                conn.query(".u.sub", name, sym_arg)
        except Exception:
            conn.close()
            raise
        return Subscription(conn, names, on_update)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _text(value: Any) -> Any:
    """q strings (char vectors, bytes) shown as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def format_result(result: Any) -> str:
    """A query's answer as an operator reads it: tables as aligned text."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        if result.empty:
            return f"(no rows; columns: {' '.join(map(str, result.columns))})"
        shown = result.apply(lambda col: col.map(_text) if col.dtype == object else col)
        with pd.option_context("display.max_rows", 1000, "display.width", 200):
            return shown.to_string(index=False)
    if isinstance(result, dict):
        width = max((len(str(k)) for k in result), default=0)
        return "\n".join(f"{str(k):{width}} | {v}" for k, v in result.items())
    if isinstance(result, np.ndarray):
        return " ".join(map(str, result.tolist()))
    return "::" if result is None else str(result)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("addr", help="HOST:PORT of the process (e.g. localhost:5011 for the RDB)")
    p.add_argument("text", help="s)SQL (e.g. \"s)select sym, count(*) from trade group by sym\") "
                                "or a registered expression such as tables[]")
    p.add_argument("--user", default=None, help="user name (default $PRETRADE_USER)")
    p.add_argument("--password-env", default="PRETRADE_PASSWORD", metavar="VAR",
                   help="environment variable holding the password (default PRETRADE_PASSWORD)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")


def run(args: argparse.Namespace) -> int:
    from pretrade.ipc.codec import QError

    try:
        with connect(args.addr, args.user, os.environ.get(args.password_env, ""), args.timeout) as c:
            result = c.query(args.text)
    except QError as e:
        print(f"'{e.message}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError, TimeoutError) as e:
        print(f"cannot query {args.addr}: {e}", file=sys.stderr)
        return 1
    print(format_result(result))
    return 0
