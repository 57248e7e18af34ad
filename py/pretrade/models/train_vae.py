"""Train the VAE anomaly model from simulated normal markets; export ONNX and its model card.

    python -m pretrade.models.train_vae --out models/        # about a minute or two on 2 cores

Training rows: ready (post warm-up) normalised features of the `normal` scenario, seeds
--train-seeds; calibration: other normal days (--cal-seeds), never seen in training; validation: a
held-out normal day (false alarms) and a flash crash (detection before the bottom). Reproducible
for a seed.

Scoring (the card's calibration): the total error leaves out each row's largest per-feature error
(TRIM), so a lone feature at its clip cannot raise an alert, and High Alert starts HIGH_MARGIN
times beyond the largest normal total on the calibration days: none there, and on held-out normal
days well under one per market day (docs/models.md, the walk-forward backtest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pretrade.features.spec import FEATURES, FeatureConfig

log = logging.getLogger(__name__)

# The features the RFE of docs/feature-selection.md kept (rank 1); liquidity_decay was eliminated.
MODEL_FEATURES: tuple[str, ...] = tuple(f for f in FEATURES if f != "liquidity_decay")
SCORING = "vae-1.1.0"  # the version prefix: 1.1 scores a total without the largest feature error
TRIM = 1  # per-feature errors left out of each row's total (the largest)
HIGH_MARGIN = 1.2  # High Alert: this times the largest normal total of the calibration days
CAL_SEEDS: tuple[int, ...] = (103, 106, 107)  # normal calibration days (never trained on)


def simulated_features(scenario: str, seed: int, duration: int, every: int = 1, **params):
    """Ready feature rows of one simulated run (a DataFrame) and its labels."""
    from pretrade.features.batch import compute_features
    from pretrade.market.simulator import simulate

    res = simulate(scenario, seed=seed, duration=duration, **params)
    df = compute_features(res.frames)
    df = df[df["ready"]]
    if every > 1:
        df = df[(df["time"].to_numpy().view(np.int64) // 100_000_000) % every == 0]
    return df.reset_index(drop=True), res.labels


def _matrix(df, features) -> np.ndarray:
    return df[["z_" + f for f in features]].to_numpy(np.float32)


def alert_episodes(times: np.ndarray, alert: np.ndarray, gap_ns: int = 60_000_000_000) -> int:
    """Alert episodes: runs of alerting rows, merged when less than gap_ns apart."""
    t = np.asarray(times).view(np.int64)[np.asarray(alert)]
    if len(t) == 0:
        return 0
    return int(1 + np.count_nonzero(np.diff(t) > gap_ns))


def validate(score_fn, features, seed: int, duration: int) -> dict:
    """False High Alert episodes on a held-out normal day; flash-crash detection before the bottom."""
    from pretrade.models.anomaly import tier_codes

    out: dict = {}
    df, _ = simulated_features("normal", seed, duration)
    tiers = tier_codes(score_fn(_matrix(df, features)))
    eps = sum(
        alert_episodes(g["time"].to_numpy(), tiers[g.index] >= 2) for _, g in df.groupby("sym")
    )
    instrument_days = df["sym"].nunique() * duration / 23_400
    out["normal"] = {
        "seed": seed,
        "seconds": duration,
        "instruments": int(df["sym"].nunique()),
        "high_alert_episodes": int(eps),
        "high_alert_episodes_per_instrument_day": eps / instrument_days,
        "share_rows_by_tier": np.bincount(tiers, minlength=4).astype(float).tolist(),
    }
    out["normal"]["share_rows_by_tier"] = [
        c / len(tiers) for c in out["normal"]["share_rows_by_tier"]
    ]
    df, labels = simulated_features("flash-crash", seed + 1, 1800, at=1200.0, sym="ESZ6")
    st = labels["stress"].iloc[0]
    es = df[df["sym"] == st["sym"]].reset_index(drop=True)
    score = score_fn(_matrix(es, features))
    tiers = tier_codes(score)
    t = es["time"].to_numpy()
    win = (t >= np.datetime64(st["start"])) & (t <= np.datetime64(st["bottom_time"]))
    first = t[win & (tiers >= 2)]
    out["flash_crash"] = {
        "seed": seed + 1,
        "sym": st["sym"],
        "start": str(st["start"]),
        "bottom": str(st["bottom_time"]),
        "max_tier_before_bottom": int(tiers[win].max()) if win.any() else 0,
        "first_high_alert": str(first[0]) if len(first) else None,
        "lead_seconds_before_bottom": (
            float((np.datetime64(st["bottom_time"]) - first[0]) / np.timedelta64(1, "s"))
            if len(first)
            else None
        ),
        "max_score_before_bottom": float(score[win].max()) if win.any() else 0.0,
    }
    return out


def calibrate(errors_fn, features: list[str], cal_seeds, duration: int,
              marked: np.ndarray | None = None):
    """(Calibration, rows used) from the total errors of normal calibration days (plus the inputs
    of alerts people marked wrong): errors_fn maps feature rows (n, d) to squared errors (n, d)."""
    from pretrade.models.anomaly import Calibration, total_error

    parts = []
    for s in cal_seeds:
        df, _ = simulated_features("normal", s, duration)
        parts.append(total_error(errors_fn(_matrix(df, features)), TRIM))
        log.info("calibration data: normal seed %d, %d rows", s, len(df))
    if marked is not None and len(marked):
        parts.append(total_error(errors_fn(marked), TRIM))
    e = np.concatenate(parts)
    cal = Calibration.fit(e, q_high=1.0, high_margin=HIGH_MARGIN, trim=TRIM)
    log.info("calibrated on normal seeds %s (%d rows): thresholds %s", list(cal_seeds), len(e), cal)
    return cal, len(e)


def model_version(data_hash: str, cal) -> str:
    """Version of weights (their training data) and scoring (the calibration, to 6 significant
    digits: torch and onnxruntime differ in the last bits): caches and the model's status follow
    it, so a recalibrated model is a new version."""
    rounded = {k: float(f"{v:.6g}") for k, v in cal.as_dict().items()}
    cal_hash = hashlib.sha256(json.dumps(rounded, sort_keys=True).encode()).hexdigest()
    return f"{SCORING}+{data_hash[:8]}.{cal_hash[:6]}"


def _marked_normal(labels: str | Path | None, features: list[str]) -> np.ndarray:
    """Inputs of the alerts people marked wrong (normal examples), from a marks file if given."""
    if labels is None:
        return np.zeros((0, len(features)), dtype=np.float32)
    from pretrade.models.labels import read_marks, vae_normal_rows

    rows = vae_normal_rows(read_marks(labels), features)
    log.info("human labels %s: %d alerts marked wrong with their inputs join calibration", labels, len(rows))
    return rows


def train(
    out_dir: str | Path,
    train_seeds=(101, 102),
    cal_seeds=CAL_SEEDS,
    val_seed: int = 104,
    duration: int = 7200,
    seed: int = 0,
    features=MODEL_FEATURES,
    epochs: int | None = None,
    labels: str | Path | None = None,
) -> Path:
    """Train, calibrate, validate, export; returns the ONNX path (its card is beside it).

    `labels`: a marks file (pretrade.models.labels); alerts a person marked wrong, with their
    inputs, join the calibration rows as normal examples."""
    from pretrade.models.anomaly import KIND, TIER_SCORES, TIERS, result_from_errors
    from pretrade.models.card import write_card
    from pretrade.models.drift import reference_from_data
    from pretrade.models.vae import VaeConfig, config_dict, errors, export_onnx, train_vae

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = list(features)
    t0 = time.perf_counter()
    parts = []
    for s in train_seeds:
        df, _ = simulated_features("normal", s, duration, every=2)
        parts.append(_matrix(df, features))
        log.info(
            "training data: normal seed %d, %d rows (%.0f s)", s, len(df), time.perf_counter() - t0
        )
    X = np.vstack(parts)
    data_hash = hashlib.sha256(X.tobytes()).hexdigest()
    cfg = VaeConfig() if epochs is None else VaeConfig(epochs=epochs)
    model = train_vae(X, cfg, seed=seed)
    marked = _marked_normal(labels, features)
    cal, cal_rows = calibrate(lambda Z: errors(model, Z), features, cal_seeds, duration, marked)

    def score_fn(Z):
        return result_from_errors(errors(model, Z), cal, features).score

    metrics = validate(score_fn, features, val_seed, duration)
    log.info("validation: %s", json.dumps(metrics))
    path = out_dir / "vae.onnx"
    export_onnx(model, len(features), str(path))
    version = model_version(data_hash, cal)
    card = {
        "kind": KIND,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "features": features,
        "input": "normalised features z_<name> from pretrade.features, in this order",
        "feature_config": asdict(FeatureConfig()),
        "training_data": {
            "scenario": "normal",
            "seeds": list(train_seeds),
            "seconds": duration,
            "instruments": "all ten of pretrade.market.instruments.UNIVERSE",
            "rows": len(X),
            "every_steps": 2,
            "sha256": data_hash,
        },
        "calibration_data": {
            "scenario": "normal",
            "seeds": list(cal_seeds),
            "seconds": duration,
            "rows": cal_rows,
            "human_labels": len(marked),
        },
        "calibration": cal.as_dict(),
        "reference": reference_from_data(X, features).to_dict(),
        "tiers": {"names": list(TIERS), "above_score": [0.0, *TIER_SCORES]},
        "model": {"type": "VAE", "seed": seed, **config_dict(cfg)},
        "validation": metrics,
        "walk_forward": None,
        "output": OUTPUT,
    }
    write_card(path, card)
    log.info("wrote %s and its card (%s) in %.0f s", path, version, time.perf_counter() - t0)
    return path


def recalibrate(
    path: str | Path, cal_seeds=CAL_SEEDS, val_seed: int = 104, duration: int = 7200
) -> dict:
    """Refit the calibration and validation of an existing artifact (its weights unchanged) from
    fresh normal data, and rewrite its card under a new version; returns the new card."""
    from pretrade.models.anomaly import AnomalyScorer, result_from_errors
    from pretrade.models.card import write_card

    scorer = AnomalyScorer(path)
    features = scorer.features
    cal, cal_rows = calibrate(scorer.errors, features, cal_seeds, duration)

    def score_fn(Z):
        return result_from_errors(scorer.errors(Z), cal, features).score

    card = dict(scorer.card)
    card.update(
        version=model_version(card["training_data"]["sha256"], cal),
        calibration=cal.as_dict(),
        calibration_data={
            "scenario": "normal",
            "seeds": list(cal_seeds),
            "seconds": duration,
            "rows": cal_rows,
        },
        output=OUTPUT,
        walk_forward=None,
        validation=validate(score_fn, features, val_seed, duration),
        recalibrated=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    for k in ("artifact", "sha256"):
        card.pop(k, None)
    write_card(path, card)
    log.info("validation: %s", json.dumps(card["validation"]))
    return card


def _no_nan(x):
    """JSON-safe copy: NaN (a detector that never alerted has no lead time) becomes null."""
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_no_nan(v) for v in x]
    return None if isinstance(x, float) and x != x else x


def attach_walk_forward(path: str | Path, report: str | Path) -> dict:
    """Copy the headline figures of a `pretrade backtest-anomaly` report (its anomaly.json) into the
    card's `walk_forward`; refused (ValueError) when the report evaluated another version."""
    from pretrade.models.anomaly import KIND
    from pretrade.models.card import read_card, write_card

    card = read_card(path, KIND)
    rep_ = json.loads(Path(report).read_text())
    meta = rep_.get("meta", {})
    if meta.get("version") != card["version"]:
        raise ValueError(f"{report} evaluated {meta.get('version')!r}, not this card's {card['version']!r}")
    card["walk_forward"] = _no_nan({
        "report": str(report),
        "command": meta.get("command"),
        "calibration_seeds": meta.get("cal_seeds"),
        "normal_test_seeds": meta.get("normal_seeds"),
        "targets": rep_.get("targets"),
        "detectors": rep_.get("summary"),
        "recall_by_kind": {k: v.get("vae") for k, v in rep_.get("recall_by_kind", {}).items()},
    })
    write_card(path, {k: v for k, v in card.items() if k not in ("artifact", "sha256")})
    log.info("walk-forward figures of %s written to the card of %s", report, path)
    return card


OUTPUT = ("sq_errors: squared reconstruction error per feature; score = calibration of their mean "
          "without the calibration's `trim` largest")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="models", help="folder for vae.onnx and vae.json (default models)"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (weights, batches)")
    parser.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=[101, 102],
        help="simulation seeds of the normal days trained on",
    )
    parser.add_argument(
        "--cal-seeds",
        type=int,
        nargs="+",
        default=list(CAL_SEEDS),
        help="normal days the thresholds come from (never trained on)",
    )
    parser.add_argument("--val-seed", type=int, default=104, help="held-out day for validation")
    parser.add_argument("--duration", type=int, default=7200, help="seconds per simulated day")
    parser.add_argument("--epochs", type=int, help="training epochs (default from VaeConfig)")
    parser.add_argument(
        "--walk-forward",
        metavar="JSON",
        help="only copy a backtest report's figures (pretrade backtest-anomaly's anomaly.json) into "
        "OUT/vae.json's walk_forward",
    )
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="keep OUT/vae.onnx's weights; refit its thresholds and validation, rewrite its card",
    )
    parser.add_argument("--who", default="", help="who trains, recorded with the new version in the "
                        "models folder's status log (a candidate until a person approves it; default: "
                        "the login name)")


def run(args: argparse.Namespace) -> int:
    from pretrade.models.status import record_training

    if args.walk_forward:
        attach_walk_forward(Path(args.out) / "vae.onnx", args.walk_forward)
        return 0
    if args.recalibrate:
        record_training(args.out, lambda: recalibrate(Path(args.out) / "vae.onnx", tuple(args.cal_seeds),
                                                      args.val_seed, args.duration),
                        args.who, "recalibrated by `python -m pretrade.models.train_vae --recalibrate`")
        return 0
    record_training(args.out, lambda: train(args.out, tuple(args.train_seeds), tuple(args.cal_seeds),
                                            args.val_seed, args.duration, args.seed, epochs=args.epochs),
                    args.who, f"trained by `python -m pretrade.models.train_vae` (seed {args.seed})")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        prog="python -m pretrade.models.train_vae", description=__doc__.splitlines()[0]
    )
    add_arguments(ap)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raise SystemExit(run(ap.parse_args()))
