"""`pretrade train`: train the models from a seed, reproducibly, into one folder with a card each.

Each model's own module does the work (data from the simulator, fit, calibration, ONNX export,
card); this command only chooses which and in what order, and enters each new version in the
models folder's status log as a candidate (pretrade.models.status): it serves in shadow until a
person approves it. The VAE's finer options (seeds of the
days, epochs, recalibration alone) are on `python -m pretrade.models.train_vae --help`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def _seed(seed: int | None) -> dict[str, int]:
    """The seed keyword, or none so the trainer uses the seed its committed artifact came from."""
    return {} if seed is None else {"seed": seed}


def _vae(seed: int | None, out: Path, labels: Path | None = None) -> None:
    from pretrade.models.train_vae import train

    train(out, labels=labels, **_seed(seed))


def _fatfinger(seed: int | None, out: Path, labels: Path | None = None) -> None:
    from pretrade.models.fatfinger import train_fatfinger

    train_fatfinger(out_dir=out, labels=labels, **_seed(seed))


def _impact(seed: int | None, out: Path) -> None:
    from pretrade.models.impact import train_impact

    train_impact(out, **_seed(seed))


def _hedging(seed: int | None, out: Path) -> None:
    from pretrade.hedging.evaluate import train_and_report

    train_and_report(models_dir=out, **_seed(seed))


# name -> (trainer, what it is); training order: the VAE first (others may read its scores).
TRAINERS: dict[str, tuple[Callable[..., None], str]] = {
    "vae": (_vae, "anomaly score (variational autoencoder) on simulated normal days"),
    "fatfinger": (_fatfinger, "fat-finger probability (gradient boosting) on simulated order flow"),
    "impact": (_impact, "market impact in bps (neural network) on simulated executions"),
    "hedging": (_hedging, "deep-hedging agent (Black-Scholes and Heston) with its evaluation report"),
}


LABELLED = ("vae", "fatfinger")  # trainers that take people's marks as labels


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=[*TRAINERS, "all"], default="all",
                   help="which model to train (default all): " +
                        "; ".join(f"{k}: {v[1]}" for k, v in TRAINERS.items()))
    p.add_argument("--out", type=Path, default=Path("models"),
                   help="folder for the ONNX files and their cards (default models)")
    p.add_argument("--labels", type=Path, default=Path("data/labels/marks.jsonl"), metavar="FILE",
                   help="people's marks of alerts and decisions (pretrade.models.labels), used when the "
                        "file exists: alerts marked wrong calibrate the VAE as normal examples, marked "
                        "decisions train the fat-finger model (default data/labels/marks.jsonl)")
    p.add_argument("--who", default="",
                   help="who trains, recorded in the models folder's status log with each new version "
                        "(a candidate until a person approves it; default: the login name)")
    p.add_argument("--seed", type=int, default=None,
                   help="training seed: the same seed gives the same models (default: each model's "
                        "own seed, the one its committed artifact was trained with)")


def run(args: argparse.Namespace) -> int:
    names = list(TRAINERS) if args.model == "all" else [args.model]
    labels = getattr(args, "labels", None)
    labels = labels if labels is not None and labels.exists() else None
    if labels is not None:
        log.info("human labels from %s", labels)
    from pretrade.models.status import record_training

    seed = "its own seed" if args.seed is None else f"seed {args.seed}"
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        log.info("[%d/%d] training %s: %s", i, len(names), name, TRAINERS[name][1])
        train, extra = TRAINERS[name][0], ((labels,) if name in LABELLED else ())
        record_training(args.out, functools.partial(train, args.seed, args.out, *extra), getattr(args, "who", ""),
                        f"trained by `pretrade train --model {name}` ({seed})")
        log.info("[%d/%d] %s done in %.0f s; written to %s", i, len(names), name,
                 time.perf_counter() - t0, args.out)
    return 0
