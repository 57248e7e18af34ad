"""The calibration policy: tiers, hysteresis and dwell, bounds, halts, kill switch, model fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pretrade.risk.limits import ALL, Limit, load_config, parse_config
from pretrade.risk.policy import (
    NO_TIME,
    Action,
    Controls,
    Policy,
    Scores,
    apply_action,
    scale,
    step_tiers,
    tier_of,
    trading_state,
)

S = 1_000_000_000  # one second in ns
CFG = load_config()
P = CFG.policy


def one(tier, calm, score, now, score_time=None):
    t, c = step_tiers(np.array([tier]), np.array([calm]), np.array([score]),
                      np.array([now if score_time is None else score_time]), now, P)
    return int(t[0]), int(c[0])


def scores(syms, vals, now, model="vae-3"):
    return Scores(list(syms), np.array(vals, dtype=float), np.full(len(syms), now, dtype=np.int64),
                  ["spread_bps,rv_1m"] * len(syms), model)


def test_config_loads_and_strategy_only_tightens():
    assert CFG.static("XYZ").max_qty == 10000
    assert CFG.static("SIM0").max_qty == 20000          # instrument section may loosen the default
    assert CFG.static("SIM0", "mm").max_qty == 5000     # strategy tightens
    assert CFG.static("SIM0", "mm").max_rate == 50      # ... but never loosens (200 > 50)


def test_bad_config_is_refused_with_the_section_named():
    with pytest.raises(ValueError, match="default"):
        parse_config({})
    with pytest.raises(ValueError, match=r"instrument\.X.*unknown"):
        parse_config({"default": dict(max_qty=1, max_notional=1.0, band_bps=1.0, passive_band_bps=1.0,
                                      max_position=1, max_rate=1), "instrument": {"X": {"qty": 3}}})
    with pytest.raises(ValueError, match="Critical must halt"):
        parse_config({"default": dict(max_qty=1, max_notional=1.0, band_bps=1.0, passive_band_bps=1.0,
                                      max_position=1, max_rate=1),
                      "policy": {"states": ["ACTIVE"] * 4}})


def test_tier_of_scores():
    assert tier_of(np.array([0.0, 0.05, 0.3, 0.95, np.nan]), P).tolist() == [0, 1, 2, 3, -1]


def test_tightening_is_immediate():
    assert one(0, NO_TIME, 0.95, 10 * S)[0] == 3
    assert one(1, NO_TIME, 0.5, 10 * S)[0] == 2


def test_loosening_needs_dwell_and_goes_one_tier_at_a_time():
    t, calm = one(3, NO_TIME, 0.0, 0)
    assert t == 3 and calm == 0                       # calm clock starts
    t, calm = one(t, calm, 0.0, int(P.dwell_s * S) - 1)
    assert t == 3                                     # not yet
    t, calm = one(t, calm, 0.0, int(P.dwell_s * S))
    assert t == 2 and calm == NO_TIME                 # one step down, clock restarts
    t, calm = one(t, calm, 0.0, int(P.dwell_s * S) + 1)
    assert t == 2


def test_hysteresis_band_holds_the_tier():
    # score just under Elevated's lower bound but above hysteresis x bound: no loosening, ever
    s = P.tier_scores[0] * (P.hysteresis + 0.1)
    t, calm = 1, NO_TIME
    for k in range(0, 200):
        t, calm = one(t, calm, s, k * S)
    assert t == 1 and calm == NO_TIME


def test_noisy_score_resets_the_dwell():
    t, calm = one(2, NO_TIME, 0.0, 0)
    t, calm = one(t, calm, 0.29, 20 * S)              # back into the band: clock resets
    t, calm = one(t, calm, 0.0, 25 * S)
    t, calm = one(t, calm, 0.0, 40 * S)               # only 15 s calm since 25 s
    assert t == 2


@pytest.mark.parametrize("bad", [math.nan, "stale"])
def test_missing_nan_or_stale_score_never_loosens(bad):
    now = 100 * S
    t, calm = 3, 50 * S                                # calm for 50 s already
    if bad == "stale":
        t2, c2 = one(t, calm, 0.0, now, score_time=now - int((P.stale_s + 1) * S))
    else:
        t2, c2 = one(t, calm, bad, now)
    assert t2 == 3 and c2 == NO_TIME


def test_limits_never_exceed_ceilings_and_scale_by_tier():
    st = CFG.static("XYZ")
    qty = [scale(st, t, P).max_qty for t in range(4)]
    assert qty == [10000, 5000, 1000, 0]
    for t in range(-1, 4):
        v = scale(st, t, P)
        assert v.max_qty <= st.max_qty and v.max_notional <= st.max_notional
        assert v.band_bps <= st.band_bps and v.passive_band_bps <= st.passive_band_bps
        assert v.max_position <= st.max_position and v.max_rate <= st.max_rate
    assert scale(st, 1, P).passive_band_bps > scale(st, 0, P).passive_band_bps  # widened
    assert scale(st, 3, P).passive_band_bps == st.passive_band_bps              # ... capped


def test_critical_trips_breaker_and_automation_never_lifts_it():
    pol = Policy(CFG)
    rows, _ = pol.cycle(1 * S, scores(["A"], [0.0], 1 * S))
    assert rows and all(r.state == "ACTIVE" for r in rows)
    rows, alerts = pol.cycle(2 * S, scores(["A"], [0.95], 2 * S))
    assert {r.state for r in rows} == {"HALTED"} and {r.halt for r in rows} == {"breaker"}
    assert any(a["kind"] == "breaker" and a["severity"] == "critical" for a in alerts)
    for k in range(3, 400):                          # calm for minutes: tiers fall, halt stays
        pol.cycle(k * S, scores(["A"], [0.0], k * S))
    assert pol.tier[0] == 0
    assert all(pol.last[("A", s)].state == "HALTED" for s in CFG.strategy_keys())
    rows, alerts = pol.act(Action(400 * S, "alice", "reset", "A"))
    assert {r.state for r in rows} == {"ACTIVE"} and alerts[0]["who"] == "alice"
    assert "reset by alice" in rows[0].reason


def test_reset_while_still_critical_leaves_reducing():
    pol = Policy(CFG)
    pol.cycle(1 * S, scores(["A"], [0.95], 1 * S))
    rows, _ = pol.act(Action(2 * S, "bob", "reset", "A"))
    assert {r.state for r in rows} == {"REDUCING"}
    assert {r.max_qty for r in rows} == {0}


def test_every_change_has_a_reason_and_monotonic_seq():
    pol = Policy(CFG)
    out = []
    for k, s in enumerate([0.0, 0.0, 0.1, 0.5, 0.5, 0.0]):
        rows, _ = pol.cycle(k * S, scores(["A", "B"], [s, 0.0], k * S))
        out += rows
    seqs = [r.seq for r in out]
    assert seqs == list(range(1, len(out) + 1))
    a = [r for r in out if r.sym == "A" and r.strategy == ALL]
    assert [r.tier for r in a] == ["NORMAL", "ELEVATED", "HIGH_ALERT"]
    last = a[-1]
    assert last.prev_tier == "ELEVATED" and last.prev_max_qty == 5000 and last.max_qty == 1000
    assert "score 0.500" in last.reason and "vae-3" in last.reason and "spread_bps" in last.reason
    assert "maxQty 5000 -> 1000" in last.reason
    assert len([r for r in out if r.sym == "B"]) == len(CFG.strategy_keys())  # B never changed


def test_kill_switch_scopes_and_audit():
    c = Controls()
    c = apply_action(c, Action(0, "carol", "kill", ALL, "mm"))
    assert trading_state("X", "mm", 0, c, P) == ("HALTED", "kill")
    assert trading_state("X", "algo", 0, c, P) == ("ACTIVE", "")
    c2 = apply_action(c, Action(0, "carol", "kill"))            # firm-wide
    assert trading_state("Y", "algo", 0, c2, P)[0] == "HALTED"
    c3 = apply_action(c2, Action(0, "carol", "reset", ALL, "mm"))
    assert trading_state("Y", "mm", 0, c3, P)[0] == "HALTED"    # firm-wide kill still on
    pol = Policy(CFG)
    pol.cycle(0, scores(["A", "B"], [0.0, 0.0], 0))
    rows, alerts = pol.act(Action(S, "carol", "kill", "A", note="fat finger desk"))
    assert {r.sym for r in rows} == {"A"} and {r.state for r in rows} == {"HALTED"}
    assert alerts[0]["kind"] == "kill" and alerts[0]["who"] == "carol" and "fat finger" in alerts[0]["text"]


def test_model_deactivation_and_failure_fall_back_to_static_limits():
    pol = Policy(CFG)
    pol.cycle(0, scores(["A"], [0.5], 0))
    assert pol.last[("A", ALL)].max_qty == 1000
    rows, alerts = pol.fail_model(S, "vae.onnx failed to load: bad file")
    assert pol.last[("A", ALL)].max_qty == CFG.static("A").max_qty
    assert alerts[-1]["severity"] == "critical" and "vae.onnx" in alerts[-1]["text"]
    rows, _ = pol.cycle(2 * S, scores(["A"], [0.6], 2 * S))  # scores ignored while off
    assert rows == [] and pol.last[("A", ALL)].tier == "NORMAL"
    pol.act(Action(3 * S, "dave", "activate"))
    pol.cycle(4 * S, scores(["A"], [0.6], 4 * S))
    assert pol.last[("A", ALL)].max_qty == 1000


def test_model_failure_keeps_halts():
    pol = Policy(CFG)
    pol.cycle(0, scores(["A"], [0.95], 0))
    pol.fail_model(S, "scoring raised")
    assert pol.last[("A", ALL)].state == "HALTED"


def test_restore_resumes_seq_tiers_and_latches():
    pol = Policy(CFG)
    pol.cycle(0, scores(["A", "B"], [0.95, 0.5], 0))
    kill = Action(S, "erin", "kill", ALL, "algo")
    pol.act(kill)
    rows = list(pol.last.values())
    back = Policy(CFG)
    back.restore(sorted(rows, key=lambda r: r.seq), [kill])
    assert back.seq == pol.seq
    assert back.controls.breakers == {"A"} and back.controls.killed("B", "algo")
    assert back.tier[back.syms.index("B")] == 2
    new, _ = back.cycle(2 * S, scores(["A", "B"], [0.95, 0.5], 2 * S))
    assert new == []                                   # nothing changed: nothing republished
    new, _ = back.cycle(3 * S, scores(["A", "B", "C"], [0.95, 0.5, 0.0], 3 * S))
    assert [r.seq for r in new] == list(range(pol.seq + 1, pol.seq + 1 + len(new)))


def test_limit_row_roundtrip():
    pol = Policy(CFG)
    rows, _ = pol.cycle(5, scores(["A"], [0.5], 5))
    from pretrade.schema import table

    r = rows[0]
    d = dict(zip(table("limits").names, r.row(), strict=True))
    assert Limit.from_row(d) == r
