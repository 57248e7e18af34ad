"""Train the VAE anomaly model from simulated normal markets; export ONNX and its model card.

    python -m pretrade.models.train_vae --out models/        # about a minute or two on 2 cores

Training rows: ready (post warm-up) normalised features of the `normal` scenario, seeds
--train-seeds; calibration: another normal seed, never seen in training; validation: a held-out
normal day (false alarms) and a flash crash (detection before the bottom). Reproducible for a seed.
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


def train(
    out_dir: str | Path,
    train_seeds=(101, 102),
    cal_seed: int = 103,
    val_seed: int = 104,
    duration: int = 7200,
    seed: int = 0,
    features=MODEL_FEATURES,
    epochs: int | None = None,
) -> Path:
    """Train, calibrate, validate, export; returns the ONNX path (its card is beside it)."""
    from pretrade.models.anomaly import KIND, TIER_SCORES, TIERS, Calibration, result_from_errors
    from pretrade.models.card import write_card
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
    cal_df, _ = simulated_features("normal", cal_seed, duration)
    cal_err = errors(model, _matrix(cal_df, features)).mean(axis=1)
    cal = Calibration.fit(cal_err)
    log.info("calibrated on normal seed %d (%d rows): thresholds %s", cal_seed, len(cal_err), cal)

    def score_fn(Z):
        return result_from_errors(errors(model, Z), cal, features).score

    metrics = validate(score_fn, features, val_seed, duration)
    log.info("validation: %s", json.dumps(metrics))
    path = out_dir / "vae.onnx"
    export_onnx(model, len(features), str(path))
    version = f"vae-1.0.0+{data_hash[:8]}"
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
            "seed": cal_seed,
            "seconds": duration,
            "rows": len(cal_err),
        },
        "calibration": cal.as_dict(),
        "tiers": {"names": list(TIERS), "above_score": [0.0, *TIER_SCORES]},
        "model": {"type": "VAE", "seed": seed, **config_dict(cfg)},
        "validation": metrics,
        "walk_forward": None,
        "output": "sq_errors: squared reconstruction error per feature; score = calibration of their mean",
    }
    write_card(path, card)
    log.info("wrote %s and its card (%s) in %.0f s", path, version, time.perf_counter() - t0)
    return path


def recalibrate(
    path: str | Path, cal_seed: int = 103, val_seed: int = 104, duration: int = 7200
) -> dict:
    """Refit the calibration and validation of an existing artifact (its weights unchanged) from
    fresh normal data, and rewrite its card; returns the new card."""
    from pretrade.models.anomaly import AnomalyScorer, Calibration, result_from_errors
    from pretrade.models.card import write_card

    scorer = AnomalyScorer(path)
    features = scorer.features
    cal_df, _ = simulated_features("normal", cal_seed, duration)
    cal = Calibration.fit(scorer.errors(_matrix(cal_df, features)).mean(axis=1))
    log.info("recalibrated on normal seed %d (%d rows): %s", cal_seed, len(cal_df), cal)

    def score_fn(Z):
        return result_from_errors(scorer.errors(Z), cal, features).score

    card = dict(scorer.card)
    card.update(
        calibration=cal.as_dict(),
        calibration_data={
            "scenario": "normal",
            "seed": cal_seed,
            "seconds": duration,
            "rows": len(cal_df),
        },
        validation=validate(score_fn, features, val_seed, duration),
        recalibrated=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    for k in ("artifact", "sha256"):
        card.pop(k, None)
    write_card(path, card)
    log.info("validation: %s", json.dumps(card["validation"]))
    return card


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
        "--cal-seed", type=int, default=103, help="normal day the thresholds come from"
    )
    parser.add_argument("--val-seed", type=int, default=104, help="held-out day for validation")
    parser.add_argument("--duration", type=int, default=7200, help="seconds per simulated day")
    parser.add_argument("--epochs", type=int, help="training epochs (default from VaeConfig)")
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="keep OUT/vae.onnx's weights; refit its thresholds and validation, rewrite its card",
    )


def run(args: argparse.Namespace) -> int:
    if args.recalibrate:
        recalibrate(Path(args.out) / "vae.onnx", args.cal_seed, args.val_seed, args.duration)
        return 0
    train(
        args.out,
        tuple(args.train_seeds),
        args.cal_seed,
        args.val_seed,
        args.duration,
        args.seed,
        epochs=args.epochs,
    )
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        prog="python -m pretrade.models.train_vae", description=__doc__.splitlines()[0]
    )
    add_arguments(ap)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raise SystemExit(run(ap.parse_args()))
