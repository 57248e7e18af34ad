"""The `pretrade` command: one subcommand per process or tool.

Each subcommand lives in its own module, which provides `add_arguments(parser)` and
`run(args) -> int`. Only the chosen subcommand's module is imported, so `pretrade --help`
stays fast and a heavy dependency of one command never slows another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line purpose). The order is the order `pretrade --help` shows.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("pretrade.up", "start the whole stack (tp, rdb, hdb, feed, ...) and supervise it"),
    "tp": ("pretrade.tick.tickerplant", "tickerplant: stamp, journal and publish updates (kdb+tick's tick.q)"),
    "rdb": ("pretrade.tick.rdb", "real-time database: today's data in memory, end-of-day to the HDB"),
    "hdb": ("pretrade.tick.hdb", "historical database: date-partitioned Parquet, queried with SQL"),
    "eod": ("pretrade.tick.eod", "trigger end of day on a running tickerplant"),
    "query": ("pretrade.client", "send one query (q expression or s)SQL) to a process and print the answer"),
    "journal": ("pretrade.tick.journal", "inspect or validate a tickerplant journal file"),
    "feed": ("pretrade.market.feed", "publish market data to the tickerplant: simulated or replayed"),
    "scenario": ("pretrade.market.scenarios", "list or run named market scenarios"),
    "users": ("pretrade.ipc.auth", "manage the IPC users file (hashed passwords)"),
    "backtest": ("pretrade.backtest.cli", "walk-forward backtest of the fat-finger model vs static limits; Markdown report with plots"),
    "backtest-anomaly": ("pretrade.backtest.anomaly_cli", "walk-forward backtest of the VAE anomaly score vs VPIN and static thresholds; report with plots"),
    "schema": ("pretrade.schema_cmd", "print the tables, or write the q schema (tickerplant/sym.q)"),
    "rte": ("pretrade.risk.engine", "real-time risk engine: features, scores and dynamic limits published to the tickerplant"),
    "train": ("pretrade.models.train", "train the models (VAE, fat-finger, ...) from a seed into models/ with a card each"),
    "model-status": ("pretrade.models.status", "show or change a model's lifecycle status (candidate, shadow, approved, retired), logged with who and why"),
    "gateway": ("pretrade.gateway.service", "FIX gateway: checks every client order against the live limits, forwards to the exchange"),
    "hedge": ("pretrade.hedging.process", "hedging agent's schedule as hedge orders: option positions hedged through the gateway (FIX client HEDGE1)"),
    "exchange": ("pretrade.gateway.exchange", "simulated FIX venue over the simulator's matching engine"),
    "gateway-report": ("pretrade.gateway.report", "shadow-mode and A/B reports from the gateway's decision rows"),
    "api": ("pretrade.ops.api", "REST API, live dashboard and Prometheus metrics (risk officers act, traders read)"),
}


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in argv, skipping the top-level options and their values."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level")
    pre.add_argument("command", nargs="?")
    ns, _ = pre.parse_known_args(argv)
    return ns.command


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The argument parser; only the subcommand named in argv gets its full arguments."""
    parser = argparse.ArgumentParser(
        prog="pretrade",
        description="Pre-trade risk limits as living variables. Run `pretrade COMMAND --help` for a command's options.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _command_in(argv)
    for name, (module, purpose) in COMMANDS.items():
        p = sub.add_parser(name, help=purpose, description=purpose)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pretrade` command."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from pretrade.logs import setup_logging

    setup_logging(args.command, args.log_level)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
