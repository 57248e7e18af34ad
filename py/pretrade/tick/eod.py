"""`pretrade eod`: end the day on a running tickerplant now, without waiting for midnight.

It calls `.u.endofday[]` over IPC, as a kdb+tick feed can: the tickerplant publishes what it has
buffered, sends `.u.end[date]` to every subscriber (the RDB then writes its HDB partition), and
rolls its journal to the next date's file. The tickerplant keeps its own date (.u.d) and advances
it by one day each time, as tick.q's endofday does, so a second call on the same wall-clock day
ends the next date too (see docs/architecture.md, "Tickerplant and journal").
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os

log = logging.getLogger(__name__)


def end_of_day(host: str, port: int, user: str = "", password: str = "") -> dt.date:
    """Trigger end of day on the tickerplant at host:port; returns the date that ended."""
    from pretrade.ipc.client import QClient

    with QClient(host, port, user, password) as q:
        return q.query(".u.endofday[]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `pretrade eod`."""
    parser.add_argument("--tp", default="localhost:5010", metavar="HOST:PORT",
                        help="the tickerplant (default localhost:5010)")
    parser.add_argument("--user", default=os.environ.get("PRETRADE_USER", ""),
                        help="user name, when the tickerplant has a users file (default $PRETRADE_USER)")
    parser.add_argument("--password-env", default="PRETRADE_PASSWORD", metavar="VAR",
                        help="environment variable holding the password (default PRETRADE_PASSWORD)")


def run(args: argparse.Namespace) -> int:
    """End the day on the tickerplant and say which date ended."""
    from pretrade.ipc.client import parse_addr

    host, port = parse_addr(args.tp)
    ended = end_of_day(host, port, args.user, os.environ.get(args.password_env, ""))
    print(f"end of day {ended:%Y.%m.%d} on {host}:{port}: .u.end sent, journal rolled")
    log.info("end of day %s triggered on %s:%d", ended, host, port)
    return 0
