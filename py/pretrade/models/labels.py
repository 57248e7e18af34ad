"""Human marks: a risk officer says an alert or a decision was right or wrong.

Marks are appended, one JSON object a line, to a file under the data folder (default
data/labels/marks.jsonl; fsynced, never rewritten), each with who and when. The next training
reads them back as labels (`pretrade train --labels`, used when the file exists):

- an alert marked wrong (a false alarm) whose model inputs are known joins the VAE's calibration
  rows as a normal example, so the next thresholds sit above it (train_vae.train);
- a decision marked right or wrong whose order features are known becomes a labelled fat-finger
  training row: an order blocked by a wrong call was valid, one passed by a wrong call was an
  error (fatfinger.train_fatfinger).

A mark without inputs is kept and shown (who said what about which call) but cannot train.
The risk engine fills an alert's inputs itself (`.rte.mark`, it remembers the inputs of the
alerts it raised); a decision's order features come from whoever records the mark.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pretrade.models.status import append_line

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("data/labels/marks.jsonl")
TARGETS = ("alert", "decision")
VERDICTS = ("right", "wrong")


@dataclass(frozen=True)
class Mark:
    """One person's judgement of one call.

    target: alert or decision; ref: which one (an alert's time, a decision's clordid); call: what
    the system said (an alert's tier such as "High Alert", a decision's "accepted" or
    "rejected:<rule>"); features: the model's inputs at that moment by name, when known."""

    who: str
    target: str
    ref: str
    sym: str
    verdict: str
    call: str = ""
    model: str = ""
    note: str = ""
    features: dict[str, float] = field(default_factory=dict)
    time: str = ""  # when the mark was made (UTC, ISO 8601); set by add_mark

    def validate(self) -> None:
        """ValueError naming the first bad field."""
        if not self.who.strip():
            raise ValueError("a mark needs the name of who makes it")
        if self.target not in TARGETS:
            raise ValueError(f"a mark's target is one of {', '.join(TARGETS)}, not {self.target!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"a mark's verdict is one of {', '.join(VERDICTS)}, not {self.verdict!r}")
        if not self.ref.strip():
            raise ValueError("a mark needs the alert time or decision clordid it is about")
        bad = [k for k, v in self.features.items() if not np.isfinite(float(v))]
        if bad:
            raise ValueError(f"a mark's features must be finite numbers: {', '.join(bad)}")


def add_mark(mark: Mark, path: str | Path = DEFAULT_PATH) -> Mark:
    """Validate and append a mark (stamped now), fsynced; returns it as stored."""
    mark.validate()
    stored = Mark(**{**asdict(mark), "features": {k: float(v) for k, v in mark.features.items()},
                     "time": datetime.now(UTC).isoformat(timespec="milliseconds")})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    append_line(path, json.dumps(asdict(stored)))
    log.info("mark by %s: %s %s %s was %s", stored.who, stored.target, stored.sym, stored.ref,
             stored.verdict)
    return stored


def read_marks(path: str | Path = DEFAULT_PATH) -> list[Mark]:
    """Every mark in the file, oldest first ([] if there is none); unreadable lines (a torn last
    write) are skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            m = Mark(**json.loads(line))
            m.validate()
        except (ValueError, TypeError) as e:
            log.warning("%s line %d is not a mark, skipped: %s", path, n, e)
            continue
        out.append(m)
    return out


def latest(marks: list[Mark]) -> list[Mark]:
    """One mark per (target, ref, sym): a person's later mark of the same call replaces the earlier."""
    last: dict[tuple[str, str, str], Mark] = {}
    for m in marks:
        last[(m.target, m.ref, m.sym)] = m
    return list(last.values())


def _rows(marks: list[Mark], features: list[str]) -> tuple[np.ndarray, list[Mark]]:
    usable = [m for m in marks if all(f in m.features for f in features)]
    X = np.array([[m.features[f] for f in features] for m in usable], dtype=np.float32)
    return X.reshape(len(usable), len(features)), usable


def vae_normal_rows(marks: list[Mark], features: list[str]) -> np.ndarray:
    """Model inputs (n, d) of alerts marked wrong (false alarms): normal examples."""
    wrong = [m for m in latest(marks) if m.target == "alert" and m.verdict == "wrong"]
    return _rows(wrong, features)[0]


def fatfinger_rows(marks: list[Mark], features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of marked decisions with order features: y = 1 where the order was an error (a
    rejection marked right, an acceptance marked wrong), 0 where it was valid."""
    dec = [m for m in latest(marks) if m.target == "decision"]
    X, used = _rows(dec, features)
    rejected = np.array([m.call.startswith("rejected") for m in used], dtype=bool)
    right = np.array([m.verdict == "right" for m in used], dtype=bool)
    return X, (rejected == right).astype(np.int64)


def summary(marks: list[Mark]) -> dict[str, Any]:
    """Counts by target and verdict, and how many carry inputs (for cards and reports)."""
    out: dict[str, Any] = {}
    for m in latest(marks):
        k = f"{m.target}_{m.verdict}"
        out[k] = out.get(k, 0) + 1
    out["with_inputs"] = sum(1 for m in latest(marks) if m.features)
    return out
