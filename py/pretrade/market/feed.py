"""`pretrade feed`: publish simulated or recorded market data to the tickerplant via .u.upd.

    pretrade feed sim --scenario flash-crash --seed 7 --speed 10 --tp localhost:5010
    pretrade feed replay data/l3_events.csv --speed max

At `--speed max` rows go out as fast as the tickerplant takes them, in 1 s slices of market time
(every table per slice, so event-time consumers see the tables interleaved); at `--speed X` they
go out in 100 ms slices of wall time, X times faster than they happened (1 is real time). Progress lines show market time reached and rows sent.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import pandas as pd

log = logging.getLogger(__name__)

PUBLISH_ORDER = ("quote", "trade", "book", "l3", "news", "order")
MAX_ROWS = 50_000  # rows per .u.upd message at most
MAX_SPEED_SLICE_S = 1.0  # at --speed max, market time published per slice (tables interleaved)


def parse_speed(value: str) -> float | None:
    """'max' -> None (as fast as possible); a positive number -> that multiple of real time."""
    if str(value).lower() == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed {value!r}: use a positive number or 'max'") from None
    if speed <= 0:
        raise argparse.ArgumentTypeError(f"speed {value!r} must be positive")
    return speed


class Publisher:
    """Sends table rows to a tickerplant with .u.upd; counts what was sent and what was refused."""

    def __init__(self, addr: str | None) -> None:
        self.addr = addr
        self.client = None
        if addr:
            from pretrade.client import connect

            self.client = connect(addr)
        self.sent: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def publish(self, name: str, df: pd.DataFrame) -> None:
        """Publish `df` (schema columns) in messages of at most MAX_ROWS rows."""
        if not len(df):
            return
        for lo in range(0, len(df), MAX_ROWS):
            part = df.iloc[lo:lo + MAX_ROWS]
            if self.client is not None:
                from pretrade.ipc.codec import QError

                try:
                    self.client.publish(name, part)
                except QError as e:  # the TP refused this batch: say so, keep going
                    self.refused[name] += len(part)
                    log.error("tickerplant refused %d %s rows: %s", len(part), name, e.message)
                    continue
            self.sent[name] += len(part)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def restamp(blocks: Iterable[dict[str, pd.DataFrame]]) -> Iterator[dict[str, pd.DataFrame]]:
    """Shift every time so that the first row is stamped now (UTC), keeping the spacing."""
    offset = None
    for block in blocks:
        if offset is None:
            firsts = [df["time"].iloc[0] for df in block.values() if len(df)]
            if not firsts:
                continue
            offset = pd.Timestamp.now(tz="UTC").tz_localize(None) - min(firsts)
        yield {name: df.assign(time=df["time"] + offset) for name, df in block.items()}


def pump(blocks: Iterable[dict[str, pd.DataFrame]], pub: Publisher, speed: float | None,
         progress_seconds: float = 5.0, slice_seconds: float = 0.1) -> dict:
    """Publish blocks of tables in time order, paced by `speed` (None: as fast as possible)."""
    wall0 = time.monotonic()
    t0: pd.Timestamp | None = None
    market = None
    last_log = wall0

    def progress(reached: pd.Timestamp) -> None:
        nonlocal last_log
        now = time.monotonic()
        if now - last_log >= progress_seconds:
            last_log = now
            log.info("market time %s; sent %s rows (%s) in %.1f s", reached, f"{sum(pub.sent.values()):,}",
                     ", ".join(f"{k} {v:,}" for k, v in sorted(pub.sent.items())), now - wall0)

    for block in blocks:
        present = {n: df for n, df in block.items() if len(df)}
        if not present:
            continue
        first = min(df["time"].iloc[0] for df in present.values())
        last = max(df["time"].iloc[-1] for df in present.values())
        if t0 is None:
            t0 = first
        # Slices of market time, every table per slice, so consumers that run on event time
        # (the risk engine) see tables interleaved within one slice even at --speed max.
        step = pd.Timedelta(seconds=slice_seconds * speed if speed else MAX_SPEED_SLICE_S)
        lo = first
        while lo <= last:
            hi = lo + step
            if speed is not None:
                delay = wall0 + (lo - t0).total_seconds() / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            for name in PUBLISH_ORDER:
                if name in present:
                    df = present[name]
                    a, b = df["time"].searchsorted([lo, hi], side="left")
                    if b > a:
                        pub.publish(name, df.iloc[a:b])
            progress(lo)
            lo = hi
        market = last
        progress(market)
    wall = time.monotonic() - wall0
    total = sum(pub.sent.values())
    log.info("done: sent %s rows (%s) in %.1f s (%s rows/s); market time %s to %s", f"{total:,}",
             ", ".join(f"{k} {v:,}" for k, v in sorted(pub.sent.items())), wall,
             f"{total / wall:,.0f}" if wall > 0 else "-", t0, market)
    if pub.refused:
        log.error("refused by the tickerplant: %s", dict(pub.refused))
    return {"sent": dict(pub.sent), "refused": dict(pub.refused), "seconds": wall}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--speed", type=parse_speed, default=parse_speed("max"),
                        help="'max' (default: as fast as the tickerplant takes it), or X times real time (1 = real time)")
    common.add_argument("--tp", default="localhost:5010", help="tickerplant HOST:PORT (default localhost:5010)")
    common.add_argument("--dry-run", action="store_true", help="produce and pace the data but publish nothing")
    common.add_argument("--restamp", action="store_true",
                        help="shift times so the first row is stamped now (for a live stack's real-time engine)")
    common.add_argument("--book-interval-ms", type=float, default=100.0,
                        help="book snapshots: on change, at most one per this many ms (default 100)")
    sim = sub.add_parser("sim", parents=[common], help="publish a simulated scenario",
                         description="Simulate a named scenario (`pretrade scenario --list`) and publish it.")
    sim.add_argument("--scenario", default="normal", help="scenario name (default normal)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    sim.add_argument("--syms", nargs="+", help="instruments (default: all ten)")
    sim.add_argument("--duration", default="6.5h", help="market time to simulate: seconds or 90s, 30m, 6.5h")
    sim.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                     help="a scenario parameter (repeatable), e.g. -p at=600 -p severity=0.03")
    rep = sub.add_parser("replay", parents=[common], help="replay recorded L3 or L2 data (CSV or Parquet)",
                         description="Replay recorded data; formats in docs/data-formats.md. Problems "
                                     "in the data are counted and reported; the replay goes on.")
    rep.add_argument("files", nargs="+", metavar="FILE",
                     help="an L3 events file, or L2 book/trade/quote files, or a folder of them")


def run(args: argparse.Namespace) -> int:
    from pretrade.market.replay import Replay
    from pretrade.market.scenarios import parse_params
    from pretrade.market.simulator import Simulation

    report = None
    try:
        if args.source == "sim":
            sim = Simulation(args.scenario, args.seed, args.syms, args.duration,
                             book_interval_ms=args.book_interval_ms,
                             **parse_params(args.param, args.scenario))
            log.info("simulating %s seed %d: %s, %d s of market time", args.scenario, args.seed,
                     " ".join(sim.syms), sim.n_sec)
            blocks: Iterable[dict[str, pd.DataFrame]] = sim.blocks()
        else:
            rep = Replay(args.files, args.book_interval_ms)
            report = rep.report
            blocks = rep.blocks()
        pub = Publisher(None if args.dry_run else args.tp)
    except (ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    except OSError as e:
        log.error("cannot reach the tickerplant at %s: %s", args.tp, e)
        return 1
    try:
        if args.restamp:
            blocks = restamp(blocks)
        result = pump(blocks, pub, args.speed)
    except (ConnectionError, OSError) as e:
        log.error("lost the tickerplant at %s: %s (sent %s rows before)", args.tp, e, dict(pub.sent))
        return 1
    finally:
        pub.close()
    if report is not None:
        first, *problems = report.summary().splitlines()
        log.info("%s", first)
        for line in problems:
            (log.info if "no problems" in line else log.warning)("%s", line.strip())
    return 0 if not result["refused"] else 1

