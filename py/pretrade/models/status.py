"""Model lifecycle: candidate -> shadow -> approved -> retired, with who, when and why.

The truth is an append-only log, `status.jsonl` in the models folder (one JSON object a line:
time, model, version, from, to, who, why); the card's `status` field mirrors the latest entry so
a card read alone shows it. A card with no status and no log entry predates governance and counts
as approved. Only a person approves: automation (who == "automation") may take a model off
(approved -> shadow) but never put it back. A newly trained version (`pretrade train`) enters as
a candidate, logged with who trained it and when (`StatusBook.after_training`); a status copied
from another version's card does not carry over.

The risk engine binds only an approved model; a candidate or shadow model is scored but its
scores do not set limits; a retired one is not loaded.

    pretrade model-status                       # every model's status and its last change
    pretrade model-status approve vae --who alice --why "validated on the 2026-11 replay"
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATUSES = ("candidate", "shadow", "approved", "retired")
TRANSITIONS: dict[str, frozenset[str]] = {
    "candidate": frozenset({"shadow", "approved", "retired"}),
    "shadow": frozenset({"approved", "retired"}),
    "approved": frozenset({"shadow", "retired"}),
    "retired": frozenset(),
}
AUTOMATION = "automation"
LEGACY = "approved"  # a card from before governance, with no status anywhere
LOG_NAME = "status.jsonl"


def append_line(path: Path, text: str) -> None:
    """Append one line to an append-only log, fsynced; after a torn last line (a crash mid-write)
    the new line starts on its own line, so it is never lost to the torn one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, (("\n" if torn else "") + text + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class StatusError(ValueError):
    """A status change that the lifecycle does not allow, or lacks who or why."""


def check_transition(old: str, new: str, who: str, why: str) -> None:
    """StatusError unless old -> new is allowed for `who`, with a reason."""
    if new not in STATUSES:
        raise StatusError(f"unknown status {new!r}; one of {', '.join(STATUSES)}")
    if new not in TRANSITIONS.get(old, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(old, ()))) or "none (final)"
        raise StatusError(f"a {old} model cannot become {new}; from {old}: {allowed}")
    if not who.strip():
        raise StatusError("a status change needs the name of who makes it")
    if not why.strip():
        raise StatusError("a status change needs a reason")
    if new == "approved" and who == AUTOMATION:
        raise StatusError("only a person approves a model; automation may only take it off")


@dataclass(frozen=True)
class Change:
    """One entry of the status log."""

    time: str
    model: str
    version: str
    old: str
    new: str
    who: str
    why: str

    def to_json(self) -> str:
        return json.dumps({"time": self.time, "model": self.model, "version": self.version,
                           "from": self.old, "to": self.new, "who": self.who, "why": self.why})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class StatusBook:
    """The status log and cards of one models folder."""

    def __init__(self, models_dir: str | Path) -> None:
        self.dir = Path(models_dir)
        self.path = self.dir / LOG_NAME

    def history(self, model: str | None = None) -> list[Change]:
        """Every logged change (of one model name if given), oldest first; a torn last line
        (a crash mid-write) is skipped with a warning."""
        if not self.path.exists():
            return []
        out = []
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                c = Change(d["time"], d["model"], d["version"], d["from"], d["to"], d["who"], d["why"])
            except (ValueError, KeyError) as e:
                log.warning("%s line %d unreadable, skipped: %s", self.path, n, e)
                continue
            if model is None or c.model == model:
                out.append(c)
        return out

    def card(self, model: str) -> dict[str, Any]:
        try:
            return json.loads((self.dir / f"{model}.json").read_text())
        except FileNotFoundError:
            raise StatusError(f"no model {model!r} in {self.dir} ({model}.json missing)") from None

    def status(self, model: str, version: str | None = None) -> str:
        """The status of a model (its card's version unless given): the last logged change of
        that version, else the card's field (unless it records a change of another version: a
        card copied from an older one), else approved (a card from before governance)."""
        card = self.card(model)
        version = version or str(card.get("version", ""))
        for c in reversed(self.history(model)):
            if c.version == version:
                return c.new
        if card.get("version") != version:
            return "candidate"
        changed = card.get("status_changed") or {}
        if "status" in card and changed.get("version", version) != version:
            return "candidate"
        return str(card.get("status", LEGACY))

    def change(self, model: str, new: str, who: str, why: str, version: str | None = None) -> Change:
        """Move a model to `new`: checked, appended to the log (fsynced), mirrored in its card."""
        card = self.card(model)
        version = version or str(card.get("version", ""))
        old = self.status(model, version)
        check_transition(old, new, who, why)
        return self._record(model, card, Change(_now(), model, version, old, new, who, why))

    def register(self, model: str, who: str, why: str) -> Change:
        """The card's version of `model`, newly trained, enters the lifecycle as a candidate:
        logged with who and why (from no status to candidate), mirrored in its card."""
        if not who.strip() or not why.strip():
            raise StatusError("registering a trained model needs who trained it and why")
        card = self.card(model)
        return self._record(model, card, Change(_now(), model, str(card.get("version", "")), "",
                                                "candidate", who, why))

    def _record(self, model: str, card: dict[str, Any], c: Change) -> Change:
        """Append a change to the log (fsynced) and mirror it in the card if it is the card's."""
        append_line(self.path, c.to_json())
        if card.get("version") == c.version:
            self._write_card(model, {**card, "status": c.new, "status_changed": {
                "time": c.time, "who": c.who, "why": c.why, "version": c.version}})
        log.warning("model %s %s: %s -> %s by %s: %s", model, c.version, c.old or "(new)", c.new,
                    c.who, c.why)
        return c

    def _write_card(self, model: str, card: dict[str, Any]) -> None:
        tmp = self.dir / f".{model}.json.tmp"
        tmp.write_text(json.dumps(card, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, self.dir / f"{model}.json")

    def cards(self) -> dict[str, dict[str, Any]]:
        """Every model's card, by name (what `after_training` compares with)."""
        return {m: self.card(m) for m in self.models()}

    def after_training(self, before: dict[str, dict[str, Any]], who: str, why: str) -> list[Change]:
        """Statuses after a training run wrote into the folder, given `cards()` from before it:
        each new version is registered a candidate (never inheriting its predecessor's approval);
        an unchanged version keeps its status (its rewritten card gets the status fields back)."""
        out = []
        for name, card in self.cards().items():
            old = before.get(name)
            if old is None or old.get("version") != card.get("version"):
                out.append(self.register(name, who, why))
                continue
            kept = {k: old[k] for k in ("status", "status_changed") if k in old}
            if any(card.get(k) != v for k, v in kept.items()):
                self._write_card(name, {**card, **kept})
        return out

    def models(self) -> list[str]:
        """Names of the models in the folder (cards with a kind)."""
        names = []
        for p in sorted(self.dir.glob("*.json")):
            try:
                if "kind" in json.loads(p.read_text()):
                    names.append(p.stem)
            except (OSError, ValueError):
                continue
        return names


def record_training(folder: str | Path, train: Callable[[], Any], who: str, why: str) -> list[Change]:
    """Run `train` (which writes into `folder`) and enter each new version it wrote as a candidate,
    with who trained it and why; logs what now waits for a person's approval."""
    book = StatusBook(folder)
    before = book.cards()
    train()
    changes = book.after_training(before, who or getpass.getuser(), why)
    for c in changes:
        log.warning("%s %s is a candidate: scored in shadow, not binding, until a person approves it "
                    "(pretrade model-status approve %s --who NAME --why TEXT, or .rte.approve)",
                    c.model, c.version, c.model)
    return changes


# ---- `pretrade model-status` ---------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", default="show",
                   choices=["show", "history", "candidate", "shadow", "approve", "retire"],
                   help="show (default): each model's status; history: the log; the others move "
                        "MODEL to that status (approve: to approved). For a running engine use its "
                        "IPC call .rte.approve[model;who;note] instead, which also puts it back to work")
    p.add_argument("model", nargs="?", help="model name, the card's file name without .json (e.g. vae)")
    p.add_argument("--models", type=Path, default=Path("models"), help="models folder (default models)")
    p.add_argument("--who", default="", help="who makes the change (required to change)")
    p.add_argument("--why", default="", help="why (required to change)")


def run(args: argparse.Namespace) -> int:
    book = StatusBook(args.models)
    if args.action == "show":
        for m in book.models():
            card = book.card(m)
            last = [c for c in book.history(m) if c.version == card.get("version")]
            tail = f"  ({last[-1].time} by {last[-1].who}: {last[-1].why})" if last else ""
            print(f"{m:16s} {card.get('version', '?'):32s} {book.status(m)}{tail}")
        return 0
    if args.action == "history":
        for c in book.history(args.model):
            print(c.to_json())
        return 0
    if not args.model:
        print("name the model, e.g. pretrade model-status approve vae --who NAME --why TEXT")
        return 2
    new = "approved" if args.action == "approve" else "retired" if args.action == "retire" else args.action
    try:
        c = book.change(args.model, new, args.who, args.why)
    except StatusError as e:
        print(f"refused: {e}")
        return 2
    print(f"{c.model} {c.version}: {c.old} -> {c.new} by {c.who}")
    return 0
