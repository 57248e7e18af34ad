"""Replay of recorded market data: L3 order events or L2 snapshots plus trades (CSV or Parquet).

Formats are documented in docs/data-formats.md. L3 events (time, sym, event, order_id, side,
price, size) rebuild each instrument's book with the simulator's OrderBook, which yields quotes,
trades and 10-level book snapshots; L2 files are already in the schema's columns (book, trade,
quote) and quotes are derived from level 1 when no quote file is given.

Real feeds are messy. Every problem is counted in a ReplayReport and the replay goes on: rows
that cannot be read, duplicate events, out-of-order timestamps (the data is replayed in time
order), events on unknown orders, adds that reuse a live id, trades larger than the order, and
books left crossed or locked.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from pretrade.market.book import BUY, SELL, OrderBook
from pretrade.market.tape import Tape
from pretrade.schema import empty_frame, table

log = logging.getLogger(__name__)

L3_COLUMNS = ["time", "sym", "event", "order_id", "side", "price", "size"]
L3_EVENTS = ("add", "modify", "delete", "trade")
_SIDES = {"buy": BUY, "b": BUY, "bid": BUY, "1": BUY, "sell": SELL, "s": SELL, "ask": SELL,
          "offer": SELL, "-1": SELL, "2": SELL}
PROBLEMS = {
    "bad_row": "rows that could not be read (missing or invalid values); skipped",
    "duplicate": "exact duplicate events; dropped",
    "out_of_order": "rows whose time is earlier than the row before (same sym); replayed in time order",
    "unknown_order": "modify, delete or trade of an order not in the book; skipped",
    "duplicate_order_id": "add of an id already resting; skipped",
    "overfill": "trades larger than the resting order; the order's size was filled",
    "crossed": "events that left the book crossed (best bid above best ask)",
    "locked": "events that left the book locked (best bid equal to best ask)",
}


class ReplayReport:
    """Counts of rows read, rows emitted per table and problems found."""

    def __init__(self) -> None:
        self.rows_in = 0
        self.problems: Counter[str] = Counter()
        self.rows_out: Counter[str] = Counter()

    def summary(self) -> str:
        """A few lines an operator reads at the end of a replay."""
        lines = [f"read {self.rows_in:,} rows; published "
                 + ", ".join(f"{n:,} {t}" for t, n in sorted(self.rows_out.items()))]
        for k, n in self.problems.items():
            if n:
                lines.append(f"  {k}: {n:,} ({PROBLEMS.get(k, '')})")
        if not any(self.problems.values()):
            lines.append("  no problems found")
        return "\n".join(lines)


def read_file(path: str | Path) -> pd.DataFrame:
    """A CSV (optionally .gz) or Parquet file as a DataFrame; a clear error for anything else."""
    p = Path(path)
    name = p.name.lower()
    if not p.exists():
        raise FileNotFoundError(f"replay file not found: {p}")
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(p)
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return pd.read_csv(p, dtype={"sym": str, "event": str, "side": str}, keep_default_na=True)
    raise ValueError(f"{p}: unknown format; use .csv, .csv.gz or .parquet")


def detect(df: pd.DataFrame) -> str:
    """Which kind of file this is from its columns: 'l3', 'book', 'trade' or 'quote'."""
    cols = {str(c).lower() for c in df.columns}
    if {"event", "order_id"} <= cols:
        return "l3"
    if "bid1" in cols or "ask1" in cols:
        return "book"
    if {"bid", "ask"} <= cols:
        return "quote"
    if {"price", "size"} <= cols:
        return "trade"
    raise ValueError(f"cannot tell the format from the columns {sorted(cols)}: expected L3 "
                     f"({', '.join(L3_COLUMNS)}) or the schema's book, trade or quote columns")


def _times(values: pd.Series) -> np.ndarray:
    """Times as int64 ns since the epoch (NaT -> min int64); numbers are taken as ns."""
    if pd.api.types.is_numeric_dtype(values):
        return pd.to_numeric(values, errors="coerce").fillna(np.iinfo(np.int64).min).astype(np.int64).to_numpy()
    t = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    return t.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64)


def _decimals(prices: np.ndarray) -> int:
    """Fewest decimal places (0..8) that represent every price exactly."""
    p = prices[np.isfinite(prices)]
    for d in range(9):
        scaled = p * 10 ** d
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6 * np.maximum(1, np.abs(scaled)) ** 0.5):
            return d
    return 8


def _clean(df: pd.DataFrame, required: list[str], report: ReplayReport) -> pd.DataFrame:
    """Drop unreadable rows and exact duplicates, count out-of-order rows, sort by time."""
    df = df.rename(columns={c: str(c).lower() for c in df.columns})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; the file has {list(df.columns)}")
    report.rows_in += len(df)
    df = df.copy()
    df["time"] = _times(df["time"])
    bad = (df["time"] == np.iinfo(np.int64).min) | df["sym"].isna() | (df["sym"].astype(str).str.strip() == "")
    if bad.any():
        report.problems["bad_row"] += int(bad.sum())
        df = df[~bad]
    df["sym"] = df["sym"].astype(str).str.strip()
    dup = df.duplicated(keep="first")
    if dup.any():
        report.problems["duplicate"] += int(dup.sum())
        df = df[~dup]
    back = df.groupby("sym", sort=False)["time"].diff() < 0
    report.problems["out_of_order"] += int(back.sum())
    return df.sort_values("time", kind="stable", ignore_index=True)


# ---- L3 -----------------------------------------------------------------------------------------
class _SymBook:
    """One instrument's reconstructed book and its tape (quotes and snapshots)."""

    def __init__(self, sym: str, scale: int, interval_ns: int) -> None:
        self.sym, self.scale = sym, scale
        self.book = OrderBook(1.0 / scale, 1)
        self.tape = Tape(self.book, interval_ns)


def replay_l3(df: pd.DataFrame, report: ReplayReport, book_interval_ms: float = 100.0) -> dict[str, pd.DataFrame]:
    """Rebuild books from L3 events: l3, quote, trade and book frames in the schema's columns."""
    df = _clean(df, L3_COLUMNS, report)
    ev = df["event"].astype(str).str.strip().str.lower()
    side = df["side"].astype(str).str.strip().str.lower().map(_SIDES)
    price = pd.to_numeric(df["price"], errors="coerce")
    size = pd.to_numeric(df["size"], errors="coerce")
    oid = pd.to_numeric(df["order_id"], errors="coerce")
    bad = (~ev.isin(L3_EVENTS) | oid.isna() | size.isna() | (size < 0)
           | (ev.isin(["add", "trade"]) & (size <= 0))
           | ((ev == "add") & (price.isna() | side.isna())))
    if bad.any():
        report.problems["bad_row"] += int(bad.sum())
    keep = ~bad
    df, ev, side, price, size, oid = (x[keep] for x in (df, ev, side, price, size, oid))
    books: dict[str, _SymBook] = {}
    for sym, g in df.groupby("sym", sort=False):
        books[sym] = _SymBook(sym, 10 ** _decimals(price[g.index].to_numpy(dtype=float)),
                              int(book_interval_ms * 1e6))
    rows = zip(df["time"].tolist(), df["sym"].tolist(), ev.tolist(), oid.astype(np.int64).tolist(),
               side.fillna(0).astype(int).tolist(), price.tolist(), size.astype(np.int64).tolist(),
               strict=True)
    for t, sym, e, o, sd, px, sz in rows:
        sb = books[sym]
        b = sb.book
        sb.tape.before(t)
        if e == "add":
            if o in b.orders:
                report.problems["duplicate_order_id"] += 1
                continue
            b.add(t, o, sd, int(round(px * sb.scale)), sz)
        elif o not in b.orders:
            report.problems["unknown_order"] += 1
            continue
        elif e == "delete":
            b.cancel(t, o)
        elif e == "modify":
            b.modify(t, o, sz)
        else:  # trade: the resting order `o` was hit
            rest = b.orders[o][2]
            if sz > rest:
                report.problems["overfill"] += 1
            b.execute(t, o, min(sz, rest))
        if sb.tape.after(t):
            _check_top(sb, report)
    for sb in books.values():
        sb.tape.flush()
    return _l3_frames(books)


def _check_top(sb: _SymBook, report: ReplayReport) -> None:
    """Count an event that left the book crossed or locked."""
    bid, ask = sb.tape.top[0], sb.tape.top[1]
    if bid is not None and ask is not None and bid >= ask:
        report.problems["locked" if bid == ask else "crossed"] += 1


def _l3_frames(books: dict[str, _SymBook]) -> dict[str, pd.DataFrame]:
    from pretrade.market.simulator import _book_columns, _px, merge_columns

    parts: dict[str, list[dict]] = {"quote": [], "trade": [], "l3": [], "book": []}
    for sb in books.values():
        b, sc = sb.book, sb.scale
        tick, dec = 1.0 / sc, int(round(math.log10(sc)))
        cols: dict[str, dict] = {}
        if sb.tape.quotes:
            qa = np.array([(r[0], -1 if r[1] is None else r[1], -1 if r[2] is None else r[2], r[3], r[4])
                           for r in sb.tape.quotes], dtype=np.int64)
            cols["quote"] = {"time": qa[:, 0], "bid": _px(qa[:, 1], tick, dec), "ask": _px(qa[:, 2], tick, dec),
                             "bsize": qa[:, 3], "asize": qa[:, 4]}
        if b.trades:
            ta = np.array(b.trades, dtype=np.int64)
            cols["trade"] = {"time": ta[:, 0], "price": _px(ta[:, 1], tick, dec), "size": ta[:, 2],
                             "side": np.where(ta[:, 3] > 0, "buy", "sell").astype(object)}
        if b.l3:
            la = np.array([(r[0], r[2], r[3], r[4], r[5]) for r in b.l3], dtype=np.int64)
            cols["l3"] = {"time": la[:, 0], "event": np.array([r[1] for r in b.l3], dtype=object),
                          "orderid": la[:, 1], "side": np.where(la[:, 2] > 0, "buy", "sell").astype(object),
                          "price": _px(la[:, 3], tick, dec), "size": la[:, 4]}
        if sb.tape.snaps:
            cols["book"] = _book_columns(sb.tape.snaps, tick, dec)
        for name, c in cols.items():
            c["sym"] = np.full(len(c["time"]), sb.sym, dtype=object)
            parts[name].append(c)
    return {name: merge_columns(p, name) for name, p in parts.items()}


# ---- L2 -----------------------------------------------------------------------------------------
def replay_l2(files: dict[str, list[pd.DataFrame]], report: ReplayReport) -> dict[str, pd.DataFrame]:
    """Clean book, trade and quote files in the schema's columns; quotes from book level 1 if absent."""
    out: dict[str, pd.DataFrame] = {}
    for name, dfs in files.items():
        spec = table(name)
        df = _clean(pd.concat(dfs, ignore_index=True), ["time", "sym"], report)
        data = {"time": pd.to_datetime(df["time"].to_numpy(), unit="ns"), "sym": df["sym"].to_numpy(dtype=object)}
        bad = np.zeros(len(df), bool)
        for c in spec.columns[2:]:
            if c.name not in df.columns:
                if name == "book":  # fewer levels than ten: the rest are empty
                    data[c.name] = np.full(len(df), np.nan) if c.qtype == "f" else np.zeros(len(df), np.int64)
                    continue
                raise ValueError(f"{name} file is missing column {c.name}; expected {' '.join(spec.names)}")
            if c.qtype == "s":
                v = df[c.name].astype(str).str.strip().str.lower()
                if c.name == "side":
                    v = v.map(lambda s: {BUY: "buy", SELL: "sell"}.get(_SIDES.get(s, 0), ""))
                    bad |= (v == "").to_numpy()
                data[c.name] = v.to_numpy(dtype=object)
            else:
                v = pd.to_numeric(df[c.name], errors="coerce")
                if c.qtype == "j":
                    bad |= v.isna().to_numpy() & (name != "book")
                    v = v.fillna(0).round()
                elif name == "trade":
                    bad |= v.isna().to_numpy()
                data[c.name] = v.to_numpy(dtype=c.dtype)
        frame = pd.DataFrame(data)
        if bad.any():
            report.problems["bad_row"] += int(bad.sum())
            frame = frame[~bad].reset_index(drop=True)
        if name in ("book", "quote"):
            b, a = (frame["bid1"], frame["ask1"]) if name == "book" else (frame["bid"], frame["ask"])
            report.problems["crossed"] += int((b > a).sum())
            report.problems["locked"] += int((b == a).sum())
        out[name] = frame
    if "book" in out and "quote" not in out:
        bk = out["book"]
        q = pd.DataFrame({"time": bk["time"], "sym": bk["sym"], "bid": bk["bid1"], "ask": bk["ask1"],
                          "bsize": bk["bsize1"], "asize": bk["asize1"]})
        top = q[["bid", "ask", "bsize", "asize"]].fillna(-1.0).assign(sym=q["sym"])
        prev = top.groupby("sym", sort=False).shift()
        changed = (top.drop(columns="sym") != prev).any(axis=1)
        out["quote"] = q[changed.to_numpy()].reset_index(drop=True)
    return out


# ---- entry point --------------------------------------------------------------------------------
class Replay:
    """Recorded files (one L3 file, or L2 book/trade/quote files, or a folder of them) as blocks."""

    def __init__(self, paths: list[str | Path], book_interval_ms: float = 100.0) -> None:
        self.report = ReplayReport()
        files: list[Path] = []
        for p in map(Path, paths):
            files.extend(sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p])
        if not files:
            raise ValueError("no replay files given")
        kinds: dict[str, list[pd.DataFrame]] = {}
        for f in files:
            df = read_file(f)
            kind = detect(df)
            log.info("replay %s: %s format, %d rows", f, "L3" if kind == "l3" else f"L2 {kind}", len(df))
            kinds.setdefault(kind, []).append(df)
        if "l3" in kinds and len(kinds) > 1:
            raise ValueError("give either L3 event files or L2 book/trade/quote files, not both")
        t0 = time.perf_counter()
        if "l3" in kinds:
            self.frames = replay_l3(pd.concat(kinds["l3"], ignore_index=True), self.report, book_interval_ms)
        else:
            self.frames = replay_l2(kinds, self.report)
        log.info("replay: %s rows checked and rebuilt in %.1f s", f"{self.report.rows_in:,}",
                 time.perf_counter() - t0)
        for name in ("quote", "trade", "book", "l3"):
            self.frames.setdefault(name, empty_frame(name))

    def blocks(self, block_seconds: float = 60.0) -> Iterator[dict[str, pd.DataFrame]]:
        """The replayed tables in windows of market time, like Simulation.blocks()."""
        times = [df["time"] for df in self.frames.values() if len(df)]
        if not times:
            return
        t0 = min(t.iloc[0] for t in times)
        t1 = max(t.iloc[-1] for t in times)
        step = pd.Timedelta(seconds=block_seconds)
        lo = t0
        while lo <= t1:
            hi = lo + step
            block = {}
            for name, df in self.frames.items():
                a, b = df["time"].searchsorted([lo, hi], side="left")
                block[name] = df.iloc[a:b]
                self.report.rows_out[name] += b - a
            yield block
            lo = hi
