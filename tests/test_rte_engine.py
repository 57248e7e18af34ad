"""The risk engine in-process: event-time cycles, determinism, model failure, actions, restart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pretrade.features.spec import FeatureConfig
from pretrade.market.simulator import simulate
from pretrade.risk.engine import RiskEngine, load_scorer
from pretrade.risk.limits import ALL, load_config
from pretrade.schema import table

ORDER = ("quote", "trade", "book", "l3", "news")
CFG = load_config()
FAST = FeatureConfig(warmup_steps=100, norm_halflife_steps=600)  # ready after 10 s of data


class ZScorer:
    """A stand-in model for unit tests: the score rises with the size of the normalised features."""

    version = "z-test-1"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def score(self, z):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("onnx session died")
        err = np.mean(np.asarray(z) ** 2, axis=1)

        class R:
            score = 1 - np.exp(-err / 3)
            error = err

            @staticmethod
            def top_features(k):
                return [["rv_1m", "spread_bps"][:k]] * len(err)

        return R()


@pytest.fixture(scope="module")
def frames():
    res = simulate("flash-crash", 5, ["ESZ6", "ACME"], 170, at=100.0, sym="ESZ6")
    return {n: df for n, df in res.frames.items() if n in ORDER and len(df)}


def messages(frames, slice_s):
    """The feed's message sequence: per slice of market time, table by table."""
    t0 = min(df["time"].iloc[0] for df in frames.values())
    t1 = max(df["time"].iloc[-1] for df in frames.values())
    step = pd.Timedelta(seconds=slice_s)
    lo = t0
    while lo <= t1:
        for name in ORDER:
            df = frames.get(name)
            if df is not None:
                a, b = df["time"].searchsorted([lo, lo + step])
                if b > a:
                    yield name, df.iloc[a:b]
        lo += step


def run(engine, msgs):
    out = []
    for name, df in msgs:
        out += engine.ingest(name, df)
    return out


def rows(outs, name):
    spec = table(name)
    parts = [pd.DataFrame(dict(zip(spec.names, o.columns, strict=True))) for o in outs if o.table == name]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=spec.names)


def engine(scorer=None, **kw):
    return RiskEngine(CFG, scorer if scorer is not None else ZScorer(), feature_config=FAST,
                      lateness_ns=60_000_000_000, **kw)


def test_cycles_fall_on_the_event_time_grid(frames):
    out = run(engine(), messages(frames, 60))
    hb = rows(out, "heartbeat")
    t = hb["time"].to_numpy().view(np.int64)
    assert len(t) > 500 and np.all(np.diff(t) == 100_000_000) and np.all(t % 100_000_000 == 0)
    lim = rows(out, "limits")
    assert set(lim["sym"]) == {"ESZ6", "ACME"}
    assert (lim["seq"].diff().dropna() == 1).all()            # monotonic, no gap
    feats = rows(out, "features")
    assert len(feats) == 2 * len(hb)
    assert len(rows(out, "riskScore")) > 0
    ready = feats[feats["ready"]]
    assert len(ready) and np.isfinite(ready["z_rv_1m"]).all()  # the fat-finger model's vol_z, for the gateway
    assert not np.allclose(ready["z_rv_1m"], ready["rv_1m"])    # normalised, not the raw volatility


def test_same_output_whatever_the_message_boundaries(frames):
    a = run(engine(), messages(frames, 60))    # as the feed at --speed max
    b = run(engine(), messages(frames, 5))     # as the feed paced at 50x real time
    # The newest `lateness` of data waits for later ticks: compare the span both have cycled.
    end = min(rows(a, "heartbeat")["time"].max(), rows(b, "heartbeat")["time"].max())
    assert end > rows(a, "heartbeat")["time"].min() + pd.Timedelta(seconds=40)
    for name in ("limits", "riskScore", "riskAlert", "features"):
        ra, rb = rows(a, name), rows(b, name)
        ra, rb = ra[ra["time"] <= end].reset_index(drop=True), rb[rb["time"] <= end].reset_index(drop=True)
        assert len(ra) or name == "riskAlert"
        pd.testing.assert_frame_equal(ra, rb)


def test_missing_model_means_static_limits_and_a_critical_alert(frames, tmp_path):
    scorer, err = load_scorer(tmp_path)
    assert scorer is None and "vae.onnx" in err
    e = RiskEngine(CFG, None, err, feature_config=FAST, lateness_ns=60_000_000_000)
    out = run(e, messages(frames, 60))
    al = rows(out, "riskAlert")
    crit = al[(al["severity"] == "critical") & (al["kind"] == "model")]
    assert len(crit) == 1 and b"vae.onnx" in crit["text"].iloc[0]
    lim = rows(out, "limits")
    assert (lim["maxQty"] == [CFG.static(s, t).max_qty for s, t in zip(lim["sym"], lim["strategy"], strict=True)]).all()
    assert set(rows(out, "heartbeat")["status"]) == {"static"}


def test_model_failing_mid_run_falls_back(frames):
    e = engine(ZScorer(fail_after=50))
    out = run(e, messages(frames, 60))
    al = rows(out, "riskAlert")
    crit = al[al["kind"] == "model"]
    assert len(crit) == 1 and b"onnx session died" in crit["text"].iloc[0]
    assert not e.policy.controls.model_active
    last = e.policy.last
    assert all(r.max_qty == CFG.static(r.sym, r.strategy).max_qty for r in last.values() if r.state == "ACTIVE")


def test_kill_switch_and_reset_are_audited(frames):
    e = engine()
    run(e, messages(frames, 60))
    out = e.act("kill", "ACME", ALL, "alice", "desk error")
    lim, al = rows(out, "limits"), rows(out, "riskAlert")
    assert set(lim["state"]) == {"HALTED"} and set(lim["halt"]) == {"kill"}
    assert al["who"].iloc[0] == "alice" and b"desk error" in al["text"].iloc[0]
    with pytest.raises(ValueError, match="who"):
        e.act("kill", "ACME", ALL, "")
    out = e.act("reset", "ACME", ALL, "bob")
    if "ACME" not in e.policy.controls.breakers:
        assert "HALTED" not in set(rows(out, "limits")["state"])


def journal_of(msgs, engine_):
    """What a tickerplant journal holds: the inputs and the engine's own rows, in order."""
    recs = []
    for name, df in msgs:
        outs = engine_.ingest(name, df)
        for o in outs:
            recs.append(("upd", o.table, o.columns))
        recs.append(("upd", name, [df[c].to_numpy() for c in table(name).names]))
    return recs


def test_restart_rebuilds_from_the_journal_without_a_seq_gap(frames):
    msgs = list(messages(frames, 60))
    half = len(msgs) // 2
    a = engine()
    recs = journal_of(msgs[:half], a)
    recs += [("upd", o.table, o.columns) for o in a.act("kill", ALL, "algo", "carol")]
    seq_before = a.policy.seq
    b = engine()
    b.restore(recs)
    assert b.policy.seq == seq_before
    assert b.policy.controls.killed("ESZ6", "algo")
    assert b.next_grid == a.next_grid
    out = run(b, msgs[half:])
    out += b.act("kill", "ESZ6", ALL, "dave")
    lim = rows(out, "limits")
    assert lim["seq"].iloc[0] == seq_before + 1 and (lim["seq"].diff().dropna() == 1).all()


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def test_every_governance_action_survives_a_restart_and_overrides_run_on_the_wall_clock(frames):
    msgs = list(messages(frames, 60))
    half = len(msgs) // 2
    wall = Clock(1_800_000_000 * 10**9)
    a = engine(wall_clock=wall)
    recs = journal_of(msgs[:half], a)
    for outs in (a.override("ESZ6", ALL, "maxQty", 123, 600, "risk1", "desk call"),
                 a.override("ACME", "mm", "maxPosition", 77, 5, "risk1"),
                 a.act("kill", "ACME", "algo", "carol"), a.act("reduce", "ESZ6", "mm", "dave"),
                 a.act("kill", ALL, "mm", "erin"), a.act("reset", ALL, "mm", "erin"),
                 a.to_shadow("vae", "frank", "shadow week")):
        recs += [("upd", o.table, o.columns) for o in outs]
    seq_before = a.policy.seq
    wall.ns += 30 * 10**9                          # down for 30 s: the 5 s override ended meanwhile
    b = engine(wall_clock=wall)
    b.restore(recs)
    assert b.policy.seq == seq_before
    c, d = a.policy.controls, b.policy.controls
    assert (d.kills, d.reducing, d.breakers) == (c.kills, c.reducing, c.breakers) == (
        {("ACME", "algo")}, {("ESZ6", "mm")}, c.breakers)
    assert b.model_status == "shadow" and not d.model_active
    assert b.policy.overrides == a.policy.overrides and len(b.overrides_in_force()) == 2
    lim = rows(b.reconcile(), "limits")            # no market data needed: the wall clock ended it
    assert list(lim["seq"]) == [seq_before + 1] and list(lim["sym"] + "/" + lim["strategy"]) == ["ACME/mm"]
    assert lim["maxPosition"].iloc[0] != 77 and b"override expired" in lim["reason"].iloc[0]
    out = b.approve("vae", "grace", "shadow report reviewed") + run(b, msgs[half:])
    lim = rows(out, "limits")
    assert lim["seq"].iloc[0] == seq_before + 2 and (lim["seq"].diff().dropna() == 1).all()
    esz6 = lim[(lim["sym"] == "ESZ6") & (lim["strategy"] == "")]
    assert len(esz6) and (esz6["maxQty"] == 123).all()   # held through the replayed tier changes
    assert b.policy.controls.model_active and ("ESZ6", ALL) in b.policy.overrides


def test_a_crash_between_an_actions_audit_row_and_its_limits_is_repaired_on_restart(frames):
    from pretrade.risk.engine import audit_first

    msgs = list(messages(frames, 60))
    a = engine(wall_clock=Clock(1_800_000_000 * 10**9))
    recs = journal_of(msgs[: len(msgs) // 2], a)
    seq_before = a.policy.seq
    for outs in (a.act("kill", "ACME", ALL, "carol", "desk error"),
                 a.override("ESZ6", "mm", "maxQty", 42, 600, "dave")):
        published = audit_first(outs)
        assert published[0].table == "riskAlert"
        recs += [("upd", published[0].table, published[0].columns)]   # killed before the limits went out
    b = engine(wall_clock=Clock(1_800_000_000 * 10**9 + 10**9))
    b.restore(recs)
    assert b.policy.seq == seq_before and b.policy.controls.killed("ACME", ALL)
    lim = rows(b.reconcile(), "limits")
    assert list(lim["seq"]) == list(range(seq_before + 1, seq_before + 1 + len(lim)))
    acme = lim[lim["sym"] == "ACME"]
    assert len(acme) and set(acme["state"]) == {"HALTED"} and set(acme["halt"]) == {"kill"}
    assert list(lim[(lim["sym"] == "ESZ6")]["maxQty"]) == [42]
    assert b.reconcile() == []                       # once in step, nothing more


def test_on_replayed_data_an_override_can_run_on_event_time(frames):
    msgs = list(messages(frames, 60))
    wall = Clock(1_800_000_000 * 10**9)            # never moves: a replay at max speed
    e = engine(wall_clock=wall, override_clock="event")
    half = len(msgs) // 2
    run(e, msgs[:half])
    start = e.now
    out = e.override("ESZ6", ALL, "maxQty", 123, 5, "risk1")
    assert b"(event clock)" in rows(out, "riskAlert")["text"].iloc[0]
    lim = rows(run(e, msgs[half:]), "limits")
    ended = lim[lim["reason"].map(lambda r: b"override expired" in r)]
    assert len(ended) == 1 and ended["time"].iloc[0].value - start == 5 * 10**9
    with pytest.raises(ValueError, match="override clock"):
        engine(override_clock="market")


def test_q_host_helpers_drive_the_same_engine(frames):
    from pretrade.risk.engine import q_act, q_expire, q_ingest, q_override, q_restore

    e = engine()
    pairs = []
    for name, df in messages(frames, 60):
        pairs += q_ingest(e, name, df)
    assert {t for t, _ in pairs} >= {"limits", "heartbeat", "features"}
    assert all(isinstance(cols, list) and len(cols) == len(table(t).names) for t, cols in pairs)
    acted = q_act(e, "kill", "ESZ6", "", "alice", "from q")
    assert [t for t, _ in acted] == ["riskAlert", "limits"]          # the audit row first
    acted += q_override(e, "ACME", "", "maxQty", 5.0, 600.0, "alice", "from q")
    assert q_expire(e) == []                                   # 600 s of wall clock: held
    back = engine()
    q_restore(back, [(t, cols) for t, cols in pairs + acted])
    assert back.policy.seq == e.policy.seq and back.policy.controls.killed("ESZ6", "mm")
    assert back.policy.overrides == e.policy.overrides and back.policy.last[("ACME", ALL)].max_qty == 5


def test_features_table_has_the_feature_engines_columns():
    from pretrade.features.spec import FEATURES

    assert tuple(table("features").names[3:]) == (*FEATURES, "z_rv_1m")


class Scripted:
    """A stand-in model whose score follows a script of cycles: high, then calm."""

    version = "scripted-1"

    def __init__(self, high_calls: int, high: float = 0.5) -> None:
        self.calls, self.high_calls, self.high = 0, high_calls, high

    def score(self, z):
        self.calls += 1
        n = len(z)
        s = np.full(n, self.high if self.calls <= self.high_calls else 0.0)

        class R:
            score, error = s, s

            @staticmethod
            def top_features(k):
                return [["spread_bps"]] * n

        return R()


def quotes(syms, t0, seconds, step_ms=100):
    t = np.arange(t0, t0 + seconds * 1_000_000_000, step_ms * 1_000_000, dtype=np.int64)
    rows = {"time": np.repeat(t, len(syms)).view("datetime64[ns]"),
            "sym": np.array(list(syms) * len(t), dtype=object),
            "bid": np.full(len(t) * len(syms), 99.0), "ask": np.full(len(t) * len(syms), 101.0),
            "bsize": np.full(len(t) * len(syms), 500), "asize": np.full(len(t) * len(syms), 500)}
    return rows


def test_a_quiet_instruments_stale_score_never_loosens():
    e = RiskEngine(CFG, Scripted(high_calls=50), feature_config=FAST)
    t0 = 1_700_000_000 * 1_000_000_000
    for k in range(110):                           # 20 s both tick (scores high), then only LIVE
        e.ingest("quote", quotes(["LIVE", "QUIET"] if k < 20 else ["LIVE"], t0 + k * 10**9, 1))
    tiers = dict(zip(e.policy.syms, e.policy.tier.tolist(), strict=True))
    assert tiers["LIVE"] < 2                                       # loosened after the dwell
    assert tiers["QUIET"] == 2                                     # stale: held


def test_vectorised_top_features_match_the_models_own_ranking():
    from pretrade.risk.engine import top_features

    scorer, err = load_scorer("models")
    assert scorer is not None, err
    res = scorer.score(np.random.default_rng(7).normal(0, 2, (400, len(scorer.features))).astype(np.float32))
    assert top_features(res, 3) == [",".join(names) for names in res.top_features(3)]


def test_latest_tick_per_instrument_whatever_the_order_and_encoding():
    e = RiskEngine(CFG, None, "no model")
    t = np.array([30, 10, 20, 5], dtype=np.int64)
    e._note_ticks("quote", {"sym": np.array([b"A", "B", "A", "C"], dtype=object)}, t)
    e._note_ticks("trade", {"sym": np.array(["A", "C"], dtype=object)}, np.array([25, 40], dtype=np.int64))
    e._note_ticks("news", {"sym": np.array(["D"], dtype=object)}, np.array([99], dtype=np.int64))
    assert e.last_ticks(["A", "B", "C", "D"], -7).tolist() == [30, 10, 40, -7]
