"""`pretrade backtest-anomaly`: the Layer-2 walk-forward backtest (VAE tiers vs VPIN vs static thresholds).

    pretrade backtest-anomaly --out docs/reports/anomaly    # 28 simulated days: ~4-5 min cold, seconds cached

Simulates calibration days, then held-out normal, flash-crash and other stress days (seeds the VAE
never saw), sets every baseline's threshold at the VAE's false-alarm rate on the calibration days,
and writes anomaly.md, anomaly.json and PNG plots into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def model_seeds(card: dict) -> dict[str, list[int]]:
    """The simulated days a VAE card says it was trained, calibrated and validated on."""
    cal = card.get("calibration_data", {})
    val = card.get("validation", {})
    out = {"train": list(card.get("training_data", {}).get("seeds", [])),
           "calibration": list(cal.get("seeds", [cal["seed"]] if "seed" in cal else [])),
           "validation": [v["seed"] for v in val.values() if isinstance(v, dict) and "seed" in v]}
    out["all"] = sorted({s for v in out.values() for s in v})
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="docs/reports/anomaly",
                        help="folder for anomaly.md, anomaly.json and the plots (default docs/reports/anomaly)")
    parser.add_argument("--model", default="models/vae.onnx", help="the VAE to evaluate (default models/vae.onnx)")
    parser.add_argument("--cal-seeds", type=int, nargs="+", default=list(range(201, 207)),
                        help="normal calibration days the baseline thresholds are set on (default 201-206)")
    parser.add_argument("--normal-seeds", type=int, nargs="+", default=list(range(301, 309)),
                        help="held-out normal test days, for false alarms per day (default 301-308)")
    parser.add_argument("--normal-duration", type=int, default=3600,
                        help="seconds per simulated normal day (default 3600; the first 300 s are warm-up)")
    parser.add_argument("--stress-duration", type=int, default=1800,
                        help="seconds per simulated stress day (default 1800; crashes start at 900-1400 s)")
    parser.add_argument("--stress-seed", type=int, default=400,
                        help="first seed of the stress days (flash crashes from it, other stress from +100)")
    parser.add_argument("--syms", nargs="+", help="instruments (default all ten; must include every crash's)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "pretrade-anomaly-cache"),
                        help="folder caching each simulated day's scored features, keyed by scenario, seed, parameters, "
                             "instruments and model version (default in the temp folder; use --no-cache after "
                             "changing the simulator or the features)")
    parser.add_argument("--no-cache", action="store_true", help="simulate every day afresh, write no cache")


def run(args: argparse.Namespace) -> int:
    from pretrade.backtest.anomaly import CRASHES, OTHER_STRESS, evaluate, load_days, standard_days
    from pretrade.backtest.anomaly_report import write_report
    from pretrade.market.instruments import UNIVERSE
    from pretrade.models.anomaly import AnomalyScorer
    from pretrade.models.card import ModelRefused

    syms = args.syms or list(UNIVERSE)
    crashes = [c for c in CRASHES if c["sym"] in syms]
    other = [(n, p) for n, p in OTHER_STRESS if p.get("sym", syms[0]) in syms]
    if len(crashes) < len(CRASHES):
        log.warning("%d crashes skipped: their instruments are not in --syms", len(CRASHES) - len(crashes))
    try:
        scorer = AnomalyScorer(args.model)
    except (ModelRefused, FileNotFoundError) as e:
        log.error("cannot evaluate %s: %s", args.model, e)
        return 2
    used = model_seeds(scorer.card)
    overlap = sorted(set(args.cal_seeds + args.normal_seeds) & set(used["all"]))
    if overlap:
        log.error("seeds %s are the model's own training, calibration or validation days: pick others", overlap)
        return 2
    cal_days, test_days = standard_days(args.cal_seeds, args.normal_seeds, args.normal_duration,
                                        args.stress_duration, crashes, other, args.stress_seed)
    cache = None if args.no_cache else Path(args.cache)
    try:
        days = load_days(cal_days + test_days, scorer, syms, cache, log.info)
    except ValueError as e:
        log.error("%s", e)
        return 2
    ev = evaluate(days[: len(cal_days)], days[len(cal_days):])
    given = sys.argv[2:] if sys.argv[1:2] == ["backtest-anomaly"] else sys.argv[1:]
    meta = {"command": " ".join(["pretrade backtest-anomaly", *given]),
            "model": args.model, "version": scorer.version, "syms": syms, "model_seeds": used,
            "cal_seeds": args.cal_seeds, "normal_seeds": args.normal_seeds,
            "normal_duration": args.normal_duration, "stress_duration": args.stress_duration,
            "cal_days": [d.name() for d in cal_days],
            "stress_days": [d.name() for d in test_days if d.scenario != "normal"]}
    path = write_report(ev, args.out, meta)
    log.info("VAE: %s", json.dumps(ev.summary()["vae"]))
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m pretrade.backtest.anomaly_cli", description=__doc__.splitlines()[0])
    add_arguments(ap)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raise SystemExit(run(ap.parse_args()))
