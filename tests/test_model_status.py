"""Model lifecycle: valid and invalid transitions, the append-only log with who/when/why, the card
mirroring it, and `pretrade model-status`."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from pretrade.models.status import (
    STATUSES,
    TRANSITIONS,
    StatusBook,
    StatusError,
    check_transition,
)
from pretrade.models.status import add_arguments as status_args
from pretrade.models.status import run as status_run


@pytest.fixture
def book(tmp_path) -> StatusBook:
    (tmp_path / "vae.json").write_text(json.dumps({"kind": "vae-anomaly", "version": "v1"}))
    (tmp_path / "fatfinger.json").write_text(json.dumps({"kind": "fatfinger", "version": "f1",
                                                         "status": "candidate"}))
    return StatusBook(tmp_path)


def test_every_transition_is_either_allowed_or_refused_with_a_reason():
    for old in STATUSES:
        for new in STATUSES:
            if new in TRANSITIONS[old]:
                check_transition(old, new, "alice", "reviewed")
            else:
                with pytest.raises(StatusError, match="cannot become"):
                    check_transition(old, new, "alice", "reviewed")
    assert TRANSITIONS["retired"] == frozenset()        # retired is final


@pytest.mark.parametrize("who,why,match", [("", "x", "who"), ("alice", " ", "reason"),
                                           ("automation", "drift gone", "only a person")])
def test_a_change_needs_a_person_and_a_reason(who, why, match):
    with pytest.raises(StatusError, match=match):
        check_transition("shadow", "approved", who, why)


def test_automation_may_take_a_model_off():
    check_transition("approved", "shadow", "automation", "input drift")


def test_status_comes_from_the_log_then_the_card_then_legacy_approved(book, tmp_path):
    assert book.status("vae") == "approved"            # no status anywhere: from before governance
    assert book.status("fatfinger") == "candidate"     # the card's field
    book.change("fatfinger", "shadow", "alice", "shadow week starts")
    book.change("fatfinger", "approved", "bob", "shadow report reviewed")
    assert book.status("fatfinger") == "approved"
    card = json.loads((tmp_path / "fatfinger.json").read_text())
    assert card["status"] == "approved" and card["status_changed"]["who"] == "bob"
    hist = book.history("fatfinger")
    assert [(c.old, c.new, c.who, c.why) for c in hist] == [
        ("candidate", "shadow", "alice", "shadow week starts"),
        ("shadow", "approved", "bob", "shadow report reviewed")]
    assert all(c.time.endswith("+00:00") for c in hist)
    with pytest.raises(StatusError):
        book.change("fatfinger", "candidate", "bob", "again")
    assert len(book.history()) == 2                     # a refused change is not logged


def test_a_new_version_starts_as_candidate_and_the_log_is_per_version(book, tmp_path):
    book.change("vae", "shadow", "automation", "drift")
    (tmp_path / "vae.json").write_text(json.dumps({"kind": "vae-anomaly", "version": "v2"}))
    assert book.status("vae") == "approved"            # v2's card, no log entry for v2
    assert book.status("vae", "v1") == "shadow"
    assert book.status("vae", "v3") == "candidate"     # a version the card does not describe


def test_the_log_is_append_only_and_survives_a_torn_line(book):
    book.change("vae", "shadow", "alice", "try")
    with open(book.path, "a") as f:
        f.write('{"time": "2026-11-21T00:00')           # a crash mid-write
    assert book.status("vae") == "shadow"
    first = book.path.read_text()
    book.change("vae", "retired", "alice", "replaced")
    assert book.path.read_text().startswith(first)
    assert book.status("vae") == "retired"
    with pytest.raises(StatusError, match="final"):
        book.change("vae", "approved", "alice", "undo")


def test_unknown_model_is_a_clear_error(book):
    with pytest.raises(StatusError, match="no model 'impact'"):
        book.status("impact")


def test_cli_shows_and_changes_status(book, tmp_path, capsys):
    p = argparse.ArgumentParser()
    status_args(p)
    assert status_run(p.parse_args(["--models", str(tmp_path)])) == 0
    out = capsys.readouterr().out
    assert "vae" in out and "approved" in out and "candidate" in out
    assert status_run(p.parse_args(["approve", "fatfinger", "--models", str(tmp_path)])) == 2
    assert "refused" in capsys.readouterr().out
    assert status_run(p.parse_args(["approve", "fatfinger", "--models", str(tmp_path),
                                    "--who", "carol", "--why", "backtest signed off"])) == 0
    assert book.status("fatfinger") == "approved"


ROOT = Path(__file__).resolve().parents[1]


def retrain(tmp_path, monkeypatch, version: str | None, who: str = "trainer1") -> None:
    """`pretrade train --model vae` with the training itself stood in for: it rewrites the card as
    a retraining does (a fresh dict of the old card's fields, `version` new unless None)."""
    from pretrade.models import train

    def fake_vae(seed, out, labels=None):
        card = json.loads((out / "vae.json").read_text())
        if version is None:       # the same version: a fresh card, without status fields
            card = {k: v for k, v in card.items() if not k.startswith("status")}
        else:                     # a new version, the old card's status copied (as recalibrate does)
            card["version"] = version
        (out / "vae.json").write_text(json.dumps(card))

    monkeypatch.setitem(train.TRAINERS, "vae", (fake_vae, "stand-in"))
    p = argparse.ArgumentParser()
    train.add_arguments(p)
    assert train.run(p.parse_args(["--model", "vae", "--out", str(tmp_path), "--who", who,
                                   "--labels", str(tmp_path / "none.jsonl")])) == 0


def test_a_retrained_model_is_a_candidate_until_a_person_approves_and_the_engine_holds_it(tmp_path, monkeypatch):
    from pretrade.risk.engine import RiskEngine, load_governance, load_scorer
    from pretrade.risk.limits import load_config

    shutil.copy(ROOT / "models" / "vae.onnx", tmp_path)
    shutil.copy(ROOT / "models" / "vae.json", tmp_path)
    book = StatusBook(tmp_path)
    assert book.status("vae") == "approved"             # the committed model
    retrain(tmp_path, monkeypatch, "vae-retrained-2")
    assert book.status("vae") == "candidate"            # not the approval of the model it replaces
    (entry,) = book.history("vae")
    assert (entry.version, entry.old, entry.new, entry.who) == ("vae-retrained-2", "", "candidate", "trainer1")
    assert "pretrade train --model vae" in entry.why and entry.time.endswith("+00:00")
    card = json.loads((tmp_path / "vae.json").read_text())
    assert card["status"] == "candidate" and card["status_changed"]["version"] == "vae-retrained-2"

    scorer, err = load_scorer(tmp_path)
    assert scorer is not None, err
    status, sbook, _ = load_governance(tmp_path, scorer, drift_config=False)
    e = RiskEngine(load_config(), scorer, model_status=status, status_book=sbook)
    assert status == "candidate" and e.shadow and not e.policy.controls.model_active
    assert "candidate" in e.policy.controls.model_fault
    with pytest.raises(ValueError, match="only a person's"):
        e.act("activate", who="alice")                   # activate alone does not bind a candidate
    e.approve("vae", "alice", "shadow report reviewed")
    assert e.model_status == "approved" and e.policy.controls.model_active
    assert [(c.new, c.who) for c in book.history("vae")][-1] == ("approved", "alice")


def test_retraining_the_same_version_keeps_its_status(book, tmp_path, monkeypatch):
    book.change("vae", "shadow", "alice", "shadow week")
    retrain(tmp_path, monkeypatch, None)                # same version, a fresh card without status
    assert book.status("vae") == "shadow" and len(book.history("vae")) == 1
    assert json.loads((tmp_path / "vae.json").read_text())["status"] == "shadow"


def test_a_status_copied_from_another_versions_card_does_not_carry_over(book, tmp_path):
    book.change("vae", "shadow", "alice", "try")
    book.change("vae", "approved", "bob", "ok")
    card = json.loads((tmp_path / "vae.json").read_text())
    (tmp_path / "vae.json").write_text(json.dumps({**card, "version": "v9"}))  # recalibrated copy
    assert book.status("vae") == "candidate"


def test_a_recalibration_outside_pretrade_train_also_enters_as_candidate(book, tmp_path):
    """`python -m pretrade.models.train_vae --recalibrate` rewrites the card with a new version:
    record_training registers it, so the approval of the version it replaces does not carry over."""
    from pretrade.models.status import record_training

    book.change("vae", "shadow", "alice", "try")
    book.change("vae", "approved", "bob", "ok")

    def recalibrate() -> None:
        card = json.loads((tmp_path / "vae.json").read_text())
        (tmp_path / "vae.json").write_text(json.dumps({**card, "version": "v1-recal"}))

    (change,) = record_training(tmp_path, recalibrate, "carol", "recalibrated")
    assert (change.version, change.new, change.who) == ("v1-recal", "candidate", "carol")
    assert book.status("vae") == "candidate" and book.status("fatfinger") == "candidate"
    assert record_training(tmp_path, lambda: None, "carol", "nothing new") == []   # no new version
