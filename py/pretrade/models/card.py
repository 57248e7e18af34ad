"""Model cards: the JSON beside every model artifact, and the check that refuses a mismatched one.

A card names the artifact's SHA-256, its input features in order and its thresholds, so a model
that was swapped, truncated or trained on other features is refused at load time with a clear
error instead of scoring silently wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


class ModelRefused(RuntimeError):
    """A model artifact that fails to load or does not match its card."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(artifact: str | Path) -> Path:
    """The card of an artifact: the same name with .json instead of .onnx."""
    return Path(artifact).with_suffix(".json")


def write_card(artifact: str | Path, card: dict[str, Any]) -> Path:
    """Write the card beside the artifact, adding the artifact's file name and SHA-256."""
    card = {**card, "artifact": Path(artifact).name, "sha256": sha256_file(artifact)}
    path = card_path(artifact)
    path.write_text(json.dumps(card, indent=2, sort_keys=False, default=str) + "\n")
    return path


def read_card(artifact: str | Path, kind: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The verified card of an artifact; ModelRefused if the card is missing, unreadable, for
    another kind of model, lacks a required field, or its SHA-256 does not match the artifact."""
    artifact = Path(artifact)
    if not artifact.is_file():
        raise ModelRefused(f"model {artifact} does not exist")
    path = card_path(artifact)
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelRefused(f"model {artifact} has no card ({path.name} is missing)") from None
    except (OSError, ValueError) as e:
        raise ModelRefused(f"model card {path} is unreadable: {e}") from None
    if card.get("kind") != kind:
        raise ModelRefused(f"model card {path} is for a {card.get('kind')!r} model, not {kind!r}")
    missing = [k for k in ("version", "sha256", *required) if k not in card]
    if missing:
        raise ModelRefused(f"model card {path} lacks {', '.join(missing)}")
    actual = sha256_file(artifact)
    if actual != card["sha256"]:
        raise ModelRefused(
            f"model {artifact} does not match its card: SHA-256 {actual[:12]}... "
            f"!= {card['sha256'][:12]}... (artifact changed after training?)"
        )
    return card


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime session on the CPU for the model at `path`, or ModelRefused saying why it
    failed to load (onnxruntime raises its own exception types). One place for every model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise ModelRefused(f"model {path} failed to load: {e}") from None
