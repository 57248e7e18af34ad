"""`pretrade schema`: show the tables, or write the q schema generated from them."""

from __future__ import annotations

import argparse
from pathlib import Path

from pretrade.schema import TABLES, q_schema

DEFAULT_Q_PATH = Path(__file__).resolve().parents[2] / "tickerplant" / "sym.q"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--q", action="store_true", help="write the q schema file (default tickerplant/sym.q)")
    p.add_argument("--out", type=Path, default=DEFAULT_Q_PATH, help="where --q writes (- for stdout)")


def run(args: argparse.Namespace) -> int:
    if args.q:
        text = q_schema()
        if str(args.out) == "-":
            print(text, end="")
        else:
            args.out.write_text(text)
            print(f"wrote {args.out}")
        return 0
    for t in TABLES.values():
        print(f"{t.name:10s} {t.doc}")
        print(f"{'':10s} {' '.join(f'{c.name}:{c.qtype}' for c in t.columns)}")
    return 0
