"""Model lifecycle: valid and invalid transitions, the append-only log with who/when/why, the card
mirroring it, and `pretrade model-status`."""

from __future__ import annotations

import argparse
import json

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
