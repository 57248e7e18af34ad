"""`pretrade gateway-report`: the shadow-mode and A/B reports from the `decision` rows the gateway
published, read from the RDB (today) with SQL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["shadow", "ab"],
                   help="shadow: orders where the binding decision and a shadow one differ, and why (shadow "
                        "dynamic: static limits bound in shadow mode; shadow model: a candidate or shadow "
                        "fat-finger model's own call, which does not bind); "
                        "ab: blocked-valid orders, caught errors and exposure per arm")
    p.add_argument("--rdb", default="localhost:5011", help="RDB HOST:PORT holding today's decision rows")
    p.add_argument("--sym", default="", help="only this instrument")
    p.add_argument("--errors", default=None,
                   help="ab: file of ClOrdIDs known to be erroneous, one per line (e.g. labelled fat-finger orders)")
    p.add_argument("--labels", default="data/labels/marks.jsonl",
                   help="shadow: people's marks file (pretrade.models.labels); each order's latest mark is shown "
                        "beside it (default data/labels/marks.jsonl; none if the file does not exist)")
    p.add_argument("--csv", default=None, help="also write the report to this CSV file")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from pretrade.client import connect
    from pretrade.gateway.shadow import ab_report, shadow_report

    if args.sym and not args.sym.replace("_", "").isalnum():
        print(f"bad --sym {args.sym!r}: letters, digits and _ only", file=sys.stderr)
        return 2
    where = f" where sym = '{args.sym}'" if args.sym else ""
    with connect(args.rdb) as rdb:
        d = rdb.sql(f"select * from decision{where}")
    if not isinstance(d, pd.DataFrame) or d.empty:
        print("no decision rows")
        return 0
    if args.kind == "shadow":
        from pretrade.models.labels import read_marks

        marks = read_marks(args.labels)
        out = shadow_report(d, marks)
        print(f"{len(out)} orders where the binding and a shadow decision disagreed "
              f"({int((out['shadow'] == 'model').sum())} by the fat-finger model's own call); "
              f"{int((out['mark'] != '').sum())} marked by people ({args.labels})")
    else:
        errors = set(Path(args.errors).read_text().split()) if args.errors else set()
        out = ab_report(d, errors)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 80):
        print(out.to_string(index=False))
    if args.csv:
        out.to_csv(args.csv, index=False)
    return 0
