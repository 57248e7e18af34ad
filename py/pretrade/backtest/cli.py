"""`pretrade backtest`: walk-forward evaluation of the fat-finger model vs static limits, as a report.

    pretrade backtest --out reports/backtest     # 13 history days + 6 held-out days of 1 h: ~2-5 min
    pretrade backtest --out docs/reports/backtest --card   # and write the figures into models/fatfinger.json

Writes fatfinger.md (figures, per-kind recall, misses) and PNG plots into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="reports/backtest", help="folder for the report and plots (default reports/backtest)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[21, 22, 23, 24, 25, 26],
                        help="simulation seeds of the days, in calendar order (keep them apart from training seeds)")
    parser.add_argument("--history-seeds", type=int, nargs="*", default=list(range(11, 21)),
                        help="seeds of history days before the held-out ones (default 11-20: the shipped model's "
                             "training days; every fold trains on them, none tests on them; the flag alone: "
                             "no history)")
    parser.add_argument("--cal-seeds", type=int, nargs="*", default=[31, 32, 33],
                        help="seeds of history days with the calibration days' error rate, after --history-seeds "
                             "(default 31-33: the shipped model's calibration days)")
    parser.add_argument("--duration", type=int, default=3600, help="seconds of trading per simulated day (default 3600)")
    parser.add_argument("--folds", type=int, default=6, help="walk-forward test windows over the held-out days (default 6)")
    parser.add_argument("--embargo", type=float, default=600.0, help="seconds between training and test data (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="model training seed (default 0)")
    parser.add_argument("--model", default="models/fatfinger.onnx",
                        help="also score this shipped model on every held-out day (skipped if the file is absent)")
    parser.add_argument("--card", action="store_true",
                        help="write the headline figures into the --model's card (its `walk_forward`), as "
                             "the shipped card carries them")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from pretrade.backtest.fatfinger import run_walk_forward, score_served
    from pretrade.backtest.report import write_report
    from pretrade.models.card import ModelRefused
    from pretrade.models.fatfinger import CAL_PARAMS, SIM_PARAMS, TRAIN_PARAMS, simulate_days
    from pretrade.models.order_features import TraderHistory

    start = pd.Timestamp("2026-11-20 14:30:00")
    hist_seeds = [*args.history_seeds, *args.cal_seeds]
    desk = TraderHistory()  # one desk trades every day: its history carries on into the held-out days
    history = None
    if hist_seeds:
        params = [TRAIN_PARAMS] * len(args.history_seeds) + [CAL_PARAMS] * len(args.cal_seeds)
        history = simulate_days(hist_seeds, args.duration, str(start - len(hist_seeds) * pd.Timedelta(days=1)),
                                params, desk)
    data = simulate_days(args.seeds, args.duration, str(start), history=desk)
    # with a history, every held-out day is tested on; without one, the first third only trains
    res = run_walk_forward(data, args.folds, args.embargo, args.seed, min_train=0.0 if history else 0.34,
                           history=history, fit_only_days=tuple(args.history_seeds))
    if args.model and Path(args.model).is_file():
        try:
            res.served = score_served(res, args.model)
        except ModelRefused as e:
            log.error("shipped model not scored: %s", e)
    meta = {"command": "pretrade backtest " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "pretrade backtest",
            "seeds": args.seeds, "duration": args.duration, "embargo_s": args.embargo, "sim_params": SIM_PARAMS,
            "history_seeds": args.history_seeds, "cal_seeds": args.cal_seeds,
            "history_params": {"train": TRAIN_PARAMS, "cal": CAL_PARAMS}}
    path = write_report(res, args.out, meta)
    summary = {k: res.report(w)[k] for w in ("model",) for k in ("recall_gross", "recall_subtle", "fpr")}
    log.info("model: %s", json.dumps(summary))
    if args.card:
        if res.served is None:
            log.error("--card: the model %s was not scored; its card is left alone", args.model)
            return 2
        attach_to_card(args.model, res, path, meta)
    print(f"report written to {path}")
    return 0


HEADLINE = ("gross", "recall_gross", "subtle", "recall_subtle", "valid", "valid_flagged", "fpr",
            "false_alarms_per_day", "precision", "pr_auc")


def attach_to_card(model: str, res, report, meta: dict) -> dict:
    """Copy the walk-forward's headline figures (retrained per fold, static limits, and the shipped
    model on every test window) into the model's card as `walk_forward`."""
    import numpy as np

    from pretrade.backtest.metrics import classification_report
    from pretrade.models.card import read_card, write_card
    from pretrade.models.fatfinger import KIND

    card = read_card(model, KIND)
    d = res.data.take(res.test_idx)
    intent = classification_report(d.y.astype(bool), res.p_model, res.flag_model, d.kind, d.gross_intent, d.time)

    def head(r: dict) -> dict:
        return {k: (None if isinstance(r[k], float) and np.isnan(r[k]) else r[k]) for k in HEADLINE}

    card["walk_forward"] = {
        "report": str(report), "command": meta["command"], "test_seeds": meta["seeds"],
        "history_seeds": [*meta["history_seeds"], *meta["cal_seeds"]], "folds": len(res.folds),
        "embargo_s": meta["embargo_s"],
        "gross": "10x the trader's typical size in the instrument or more, or price > 5% from the mid",
        "model": head(res.report("model")), "static_matched": head(res.report("static_matched")),
        "served": {"version": res.served["version"], **head(res.served)},
        "recall_gross_by_intent": intent["recall_gross"],
        "recall_by_kind": {k: v["recall"] for k, v in res.report("model")["recall_by_kind"].items()},
    }
    write_card(model, {k: v for k, v in card.items() if k not in ("artifact", "sha256")})
    log.info("walk-forward figures written to the card of %s", model)
    return card
