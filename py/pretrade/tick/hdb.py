"""The HDB: history as date partitions of Parquet, `DIR/date=YYYY-MM-DD/<table>.parquet`,
queried with SQL over kdb+ IPC (`s)select ...`).

Each table is a DuckDB view over its files in every partition (hive partitioning, so `date` is a
column, first as in a kdb+ HDB, and a `where date=...` reads only that partition). The views
are rebuilt when the set of partitions or files changes (checked before each query) and on
`.hdb.reload[]`, which the RDB sends after it writes a partition. This module also owns the
partition layout, and `write_partition` is how the RDB writes one at end of day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pretrade.schema import TABLES
from pretrade.tick.sql import QTable, SqlEngine
from pretrade.tick.store import arrow_schema

log = logging.getLogger(__name__)

PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
RELOAD = ".hdb.reload"


def partition_dir(root: Path, date: dt.date) -> Path:
    """Where one day's tables live."""
    return Path(root) / f"date={date.isoformat()}"


def partitions(root: Path) -> list[str]:
    """The partition dates present under root, oldest first (as YYYY-MM-DD)."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(m.group(1) for n in names if (m := PARTITION.match(n)) and (Path(root) / n).is_dir())


def _write_file(table: pa.Table, path: Path) -> None:
    """Write Parquet to a temporary name, fsync, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sorted_by_sym(table: pa.Table) -> pa.Table:
    """Rows grouped by sym, arrival order kept within a sym (as kdb+'s .Q.dpft does)."""
    if "sym" not in table.column_names or table.num_rows < 2:
        return table
    return table.take(pa.compute.sort_indices(table, [("sym", "ascending")]))


def write_partition(root: Path, date: dt.date, tables: Mapping[str, pa.Table]) -> Path:
    """Write each table as DIR/date=YYYY-MM-DD/<table>.parquet (empty tables too, with their
    schema), built under a hidden name and renamed into place whole.

    A partition is the whole of its date's journal, which the RDB always replays in full, so a
    second end of day for the same date (after a restart on the same day) REPLACES the partition
    rather than appending to it: appending would store the replayed rows twice."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = partition_dir(root, date)
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, table in tables.items():
        _write_file(_sorted_by_sym(table), tmp / f"{name}.parquet")
    if final.exists():
        old = root / f".{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    dirfd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return final


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quote_ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class Hdb:
    """SQL over the partitioned Parquet history under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.engine = SqlEngine(readable=[str(self.root.resolve())])
        self._fingerprint: tuple | None = None
        self.tables: list[str] = []
        self.refresh()

    def fingerprint(self) -> tuple:
        """Changes whenever a partition or a file in one is added, removed or replaced (renames
        change the directory's mtime, and files here are only ever renamed into place)."""
        try:
            top = os.stat(self.root).st_mtime_ns
        except FileNotFoundError:
            return ()
        return (top, *((d, os.stat(partition_dir(self.root, dt.date.fromisoformat(d))).st_mtime_ns)
                       for d in partitions(self.root)))

    def refresh(self, force: bool = False) -> bool:
        """Rebuild the views if the directory changed (or if forced); True when rebuilt."""
        fp = self.fingerprint()
        if fp == self._fingerprint and not force:
            return False
        days = partitions(self.root)
        on_disk: set[str] = set()
        for d in days:
            on_disk.update(p.stem for p in (self.root / f"date={d}").glob("*.parquet"))
        names = sorted(on_disk | set(TABLES))
        for name in names:
            if name in on_disk:
                glob = str(self.root.resolve() / "date=*" / f"{name}.parquet")
                self.engine.unregister(name)  # a registered empty table would shadow the view
                self.engine.execute(
                    f"CREATE OR REPLACE VIEW {_quote_ident(name)} AS SELECT date, * EXCLUDE (date) "
                    f"FROM read_parquet({_quote_literal(glob)}, hive_partitioning=true, "
                    "union_by_name=true, hive_types={'date': DATE})")
            else:  # no partition holds it yet: an empty table with the schema, so queries work
                empty = arrow_schema(TABLES[name]).empty_table()
                dates = pa.array([], pa.date32())
                self.engine.execute(f"DROP VIEW IF EXISTS {_quote_ident(name)}")
                self.engine.register(name, empty.add_column(0, "date", dates))
        self.tables = names
        self._fingerprint = fp
        log.info("hdb %s: %d partitions%s, tables %s", self.root, len(days),
                 f" ({days[0]} .. {days[-1]})" if days else "", " ".join(sorted(on_disk)) or "none yet")
        return True

    def query(self, text: str) -> QTable:
        """Run SQL over the history (refreshing the views first if the directory changed)."""
        self.refresh()
        return self.engine.query(text)

    def close(self) -> None:
        self.engine.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=5012, help="IPC port to listen on (default 5012)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--dir", type=Path, default=Path("var/hdb"), metavar="DIR",
                   help="the history root holding date=YYYY-MM-DD/<table>.parquet (default var/hdb)")
    p.add_argument("--users", type=Path, metavar="FILE", help="users file (config/users.toml) to require passwords")
    p.epilog = ("Answers over kdb+ IPC: s)SQL over every day (date is a column: "
                "\"s)select date, count(*) from trade group by date\"), tables[], .hdb.partitions[], "
                ".hdb.reload[] (the RDB sends it after end of day), .pretrade.aj[`trade;`quote]. "
                "Anything else: 'nyi.")


def handler(hdb: Hdb):
    """The IPC handler: `s)` SQL, tables[], .hdb.partitions[], .hdb.reload[], .pretrade.aj[...]."""
    import numpy as np

    from pretrade.ipc.dispatch import Dispatcher
    from pretrade.tick.sql import aj_args, answer

    def reload(conn, *_):
        hdb.refresh(force=True)
        return len(partitions(hdb.root))

    def aj(*args):
        hdb.refresh()
        return hdb.engine.aj(*args)

    def tables(conn, *_):
        hdb.refresh()
        return np.array(hdb.tables, dtype=object)

    return Dispatcher(
        functions={
            "tables": tables,
            ".hdb.partitions": lambda conn, *_: np.array(
                [dt.date.fromisoformat(d) for d in partitions(hdb.root)], dtype="datetime64[D]"),
            RELOAD: reload,
            ".pretrade.aj": lambda conn, *a: answer(aj, *aj_args(*a)),
        },
        sql=lambda conn, text: answer(hdb.query, text),
    )


def run(args: argparse.Namespace) -> int:
    """`pretrade hdb`: serve SQL over the partitioned history until stopped."""
    from pretrade.ipc.auth import Users
    from pretrade.ipc.server import serve_forever

    users = Users.load(args.users) if args.users else None
    log.info("hdb starting: port %d, history %s", args.port, args.dir.resolve())
    hdb = Hdb(args.dir)
    serve_forever(handler(hdb), args.host, args.port, users)
    hdb.close()
    return 0
