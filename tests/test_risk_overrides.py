"""People's limit overrides: which clock they run on, their audit text, and restoring them after a
restart; and the one definition of the six limit fields."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from pretrade.risk.limits import (
    ALL,
    LIMIT_FIELDS,
    Limit,
    LimitValues,
    StaticLimits,
    column_name,
    load_config,
)
from pretrade.risk.policy import Override, Policy, Scores, override_text, parse_override, scale
from pretrade.schema import table

S = 1_000_000_000
CFG = load_config()
WALL = 1_800_000_000 * S            # a wall-clock instant far from the event times below


def calm(now: int) -> Scores:
    return Scores(["ESZ6"], np.array([0.0]), np.array([now]), [""], "vae")


def policy() -> Policy:
    p = Policy(CFG)
    p.cycle(0, calm(0))
    return p


def in_force(p: Policy) -> int:
    return p.last[("ESZ6", ALL)].max_qty


def test_a_wall_clock_override_ignores_event_time_and_ends_on_the_wall_clock():
    p = policy()
    rows, alerts = p.override(0, "ESZ6", ALL, "max_qty", 300, 600, "risk1", "desk call", wall=WALL)
    assert [r.max_qty for r in rows] == [300]
    assert "(wall clock)" in alerts[0]["text"] and alerts[0]["who"] == "risk1"
    rows, _ = p.cycle(3600 * S, calm(3600 * S), wall=WALL + 599 * S)  # an hour of replayed data
    assert rows == [] and in_force(p) == 300
    assert p.expire_overrides(3600 * S, None) == []                 # no wall clock: held
    rows = p.expire_overrides(3600 * S, WALL + 600 * S)              # a quiet market: no cycle
    assert [r.max_qty for r in rows if r.strategy == ALL] == [10000]
    assert "override expired" in rows[0].reason and rows[0].time == 3600 * S
    assert p.overrides == {}


def test_an_event_clock_override_ignores_the_wall_clock():
    p = policy()
    p.override(0, "ESZ6", ALL, "max_qty", 300, 10, "risk1")         # no wall time: event clock
    assert p.overrides[("ESZ6", ALL)]["max_qty"] == Override(300.0, 10 * S, "event")
    assert p.expire_overrides(5 * S, WALL + 10**6 * S) == []
    rows, _ = p.cycle(10 * S, calm(10 * S), wall=WALL)
    assert [r.max_qty for r in rows if r.strategy == ALL] == [10000]


@pytest.mark.parametrize("value,seconds", [(300, float("nan")), (300, 0), (300, 8 * 86400),
                                           (float("nan"), 10), (-1, 10)])
def test_an_override_out_of_bounds_is_refused_and_changes_nothing(value, seconds):
    p = policy()
    with pytest.raises(ValueError, match="outside the static bounds"):
        p.override(0, "ESZ6", ALL, "max_qty", value, seconds, "risk1", wall=WALL)
    assert p.overrides == {} and in_force(p) == 10000


def test_the_audit_text_carries_the_override_back():
    o = Override(1234567.5, WALL + 123_456_789, "wall")
    text = override_text("risk1", "ESZ6", "mm", "max_notional", o, 600) + ": desk call: 5 = 6 for 7 s"
    assert parse_override(text, 0) == ("max_notional", o)
    old = "override by risk1 on ESZ6/*: max_qty = 300 for 10 s: note"   # written before the expiry was
    assert parse_override(old, 5 * S) == ("max_qty", Override(300.0, 15 * S, "event"))
    assert parse_override("kill by risk1 on ESZ6/*", 0) is None


def test_a_restart_restores_overrides_and_ends_those_whose_time_passed_while_down():
    a = policy()
    _, long_ = a.override(0, "ESZ6", ALL, "max_qty", 300, 600, "risk1", wall=WALL)
    _, short = a.override(0, "ESZ6", "mm", "max_position", 700, 5, "risk2", wall=WALL)
    journal = list(a.last.values())
    alerts = long_ + short
    b = Policy(CFG)
    b.restore(sorted(journal, key=lambda r: r.seq), [],
              [(al["sym"], al["strategy"], *parse_override(al["text"], al["time"])) for al in alerts])
    assert b.overrides == a.overrides and b.seq == a.seq
    assert b.expire_overrides(0, WALL + 4 * S) == []                 # restarted within 4 s: both held
    rows = b.expire_overrides(0, WALL + 30 * S)                       # the short one ended while down
    assert [(r.strategy, r.max_position, r.seq) for r in rows] == [("mm", 50000, a.seq + 1)]
    assert b.last[("ESZ6", ALL)].max_qty == 300                       # the long one still holds
    assert list(b.overrides) == [("ESZ6", ALL)]


def test_the_six_limit_fields_are_declared_once_and_keep_the_row_order():
    assert tuple(f.name for f in fields(StaticLimits)) == LIMIT_FIELDS
    assert issubclass(StaticLimits, LimitValues) and issubclass(Limit, LimitValues)
    assert isinstance(scale(CFG.static("ESZ6"), 1, CFG.policy), LimitValues)
    assert list(table("limits").names[7:13]) == [column_name(f) for f in LIMIT_FIELDS]
    lim = Limit(1, "ESZ6", ALL, 2, "NORMAL", "ACTIVE", "", 3, 4.0, 5.0, 6.0, 7, 8)   # positional, as ever
    assert (lim.seq, lim.halt, lim.max_qty, lim.max_rate) == (2, "", 3, 8)
    assert lim.row()[:13] == [1, "ESZ6", ALL, 2, "NORMAL", "ACTIVE", "", 3, 4.0, 5.0, 6.0, 7, 8]
