"""Units of the API's parts without processes: tokens, audit log, row conversion, and the
policy's limit override (the engine function `.rte.override` the API calls)."""

from __future__ import annotations

import numpy as np
import pytest

from pretrade.ops.audit import AuditLog
from pretrade.ops.auth import Tokens, token_hash
from pretrade.ops.live import LiveState, rows_of

S = 1_000_000_000


def test_tokens_load_check_and_refuse_bad_files(tmp_path):
    f = tmp_path / "u.toml"
    f.write_text(f'[users.ann]\nrole = "trader"\ntoken_sha256 = "{token_hash("t-ann")}"\n')
    t = Tokens.load(f)
    assert t.user_for("t-ann").name == "ann" and not t.user_for("t-ann").can_act
    assert t.user_for("t-bob") is None
    f.write_text(f'[users.ann]\nrole = "boss"\ntoken_sha256 = "{token_hash("x")}"\n')
    with pytest.raises(ValueError, match="role 'boss'"):
        Tokens.load(f)
    f.write_text('[users.ann]\nrole = "trader"\ntoken_sha256 = "plain-token"\n')
    with pytest.raises(ValueError, match="64 hex"):
        Tokens.load(f)
    with pytest.raises(FileNotFoundError, match="API users file"):
        Tokens.load(tmp_path / "missing.toml")


def test_shipped_users_file_loads():
    from pretrade.config import CONFIG_DIR

    t = Tokens.load(CONFIG_DIR / "api_users.toml")
    assert t.user_for("demo-risk-token").role == "risk_officer"
    assert t.user_for("demo-trader-token").role == "trader"


def test_audit_is_append_only_and_queryable(tmp_path):
    log = AuditLog(tmp_path / "a" / "audit.jsonl")
    log.write("risk1", "risk_officer", "kill", {"sym": "ESZ6"}, "ok", "done")
    log.write("trader1", "trader", "/actions/kill", {}, "denied")
    with open(log.path, "a") as f:
        f.write('{"torn": ')                      # a crash mid-line loses that line only
    log2 = AuditLog(log.path)                     # a restarted API appends to the same file
    log2.write("risk1", "risk_officer", "reset", {"sym": "ESZ6"}, "error", "rte down")
    got = log2.query()
    assert [e["action"] for e in got] == ["reset", "/actions/kill", "kill"]
    assert [e["action"] for e in log2.query(who="risk1", outcome="ok")] == ["kill"]
    assert log2.query(since="2999") == [] and len(log2.query(limit=1)) == 1


def test_rows_of_columns_frames_and_one_row_of_atoms():
    t = np.array(["2026-11-20T14:30:00.123456789"], dtype="datetime64[ns]")
    cols = [t, np.array(["ESZ6"], dtype=object), np.array([np.nan]), np.array([0.5]),
            np.array(["ELEVATED"], dtype=object), [b"spread_bps"], np.array(["vae-1"], dtype=object),
            np.array([False])]
    (row,) = rows_of("riskScore", cols)
    assert row == {"time": "2026-11-20T14:30:00.123456789", "sym": "ESZ6", "score": None, "error": 0.5,
                   "tier": "ELEVATED", "top": "spread_bps", "model": "vae-1", "stale": False}
    atoms = [np.datetime64("2026-11-20T14:30:00", "ns"), "rte", 3, 10, 2, "ok"]
    assert rows_of("heartbeat", atoms)[0]["status"] == "ok"


def test_live_state_keeps_the_newest_seq_and_a_series():
    st = LiveState()
    row = {"time": "t1", "sym": "ESZ6", "strategy": "", "seq": 5, "maxQty": 500, "tier": "ELEVATED", "state": "ACTIVE"}
    st.apply("limits", [row, {**row, "seq": 4, "maxQty": 999}])
    assert st.limits[("ESZ6", "")]["maxQty"] == 500
    st.apply("riskScore", [{"time": "t2", "sym": "ESZ6", "score": 0.4, "tier": "HIGH_ALERT"}])
    assert [p["tier"] for p in st.series["ESZ6"]][-1] == "HIGH_ALERT" and st.series["ESZ6"][-1]["maxQty"] == 999


def _policy():
    from pretrade.risk.limits import load_config
    from pretrade.risk.policy import Policy, Scores

    p = Policy(load_config(None))
    p.cycle(0, Scores(["ESZ6"], np.array([0.0]), np.array([0]), [""], "vae"))
    return p, Scores


def test_override_stays_within_the_ceiling_and_expires():
    p, Scores = _policy()
    rows, alerts = p.override(0, "ESZ6", "", "max_qty", 300, 10, "risk1", "desk call")
    assert [r.max_qty for r in rows] == [300] and alerts[0]["kind"] == "override" and alerts[0]["who"] == "risk1"
    with pytest.raises(ValueError, match="static bounds"):
        p.override(0, "ESZ6", "", "max_qty", 10**9, 10, "risk1")
    with pytest.raises(ValueError, match="unknown instrument"):
        p.override(0, "XXX", "", "max_qty", 1, 10, "risk1")
    with pytest.raises(ValueError, match="cannot be overridden"):
        p.override(0, "ESZ6", "", "tier", 1, 10, "risk1")
    rows, _ = p.cycle(5 * S, Scores(["ESZ6"], np.array([0.0]), np.array([5 * S]), [""], "vae"))
    assert rows == []                                             # still in force
    rows, _ = p.cycle(11 * S, Scores(["ESZ6"], np.array([0.0]), np.array([11 * S]), [""], "vae"))
    assert [r.max_qty for r in rows if r.strategy == ""] == [10000] and "override expired" in rows[0].reason


def test_engine_override_takes_the_limits_column_name():
    from pretrade.risk.engine import RiskEngine
    from pretrade.risk.limits import load_config

    _, Scores = _policy()
    e = RiskEngine(load_config(None))
    e.policy.cycle(0, Scores(["ESZ6"], np.array([0.0]), np.array([0]), [""], ""))
    out = e.override("ESZ6", "", "maxQty", 42, 60, "risk1")
    assert [o.table for o in out] == ["limits", "riskAlert"]
    with pytest.raises(ValueError, match="cannot be overridden"):
        e.override("ESZ6", "", "max_qty", 42, 60, "risk1")
