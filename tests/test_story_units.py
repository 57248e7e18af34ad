"""The flash-crash story's parts without processes: the firm's strategies, the ledger, the facts,
and the exchange advancing its market second by second with outside orders in the same books."""

from __future__ import annotations

import pandas as pd
import pytest

from pretrade.story.algos import Cancel, Ledger, MarketMaker, NewOrder, Seller
from pretrade.story.report import iso, limit_changes
from pretrade.story.runner import STORY_ONSET, RunResult, StoryConfig


def test_seller_clips_then_chases_with_one_200_lot_market_order() -> None:
    s = Seller()
    mid = {t: 5000.0 if t < 0 else 5000.0 - 5 * t for t in range(-20, 40)}  # 1.5% down at t = 15
    sent = [(t, o) for t in range(-20, 40) for o in s.step(float(t), mid[t])]
    assert [t for t, o in sent if o.clordid.startswith("CHASE")] == [15]
    sent = [o for _, o in sent]
    clips = [o for o in sent if o.clordid.startswith("SELL")]
    chase = [o for o in sent if o.clordid.startswith("CHASE")]
    assert [o.qty for o in clips] == [100] * 8 and sum(o.qty for o in clips) == s.parent
    assert len(chase) == 1 and chase[0].qty == 200 and chase[0].price is None and chase[0].side == "sell"
    assert all(o.price is None and o.strategy == "algo" for o in clips)


def test_market_maker_requotes_only_when_the_touch_moves_and_respects_its_inventory() -> None:
    mm = MarketMaker(tick=0.25, max_inventory=30)
    assert mm.step(-20.0, 100.0, 100.25, 0) == []           # before its start
    first = mm.step(-15.0, 100.0, 100.25, 0)
    assert [(o.side, o.price) for o in first] == [("buy", 100.0), ("sell", 100.25)]
    assert mm.step(-14.0, 100.0, 100.25, 0) == []           # same touch: keep the quotes
    moved = mm.step(-13.0, 99.75, 100.25, 0)
    assert isinstance(moved[0], Cancel) and moved[0].orig == first[0].clordid
    assert isinstance(moved[1], NewOrder) and moved[1].price == 99.75
    long = mm.step(-12.0, 99.75, 100.25, 40)                 # too long: the bid is pulled
    assert [type(o) for o in long] == [Cancel] and "buy" not in mm.live


def test_ledger_marks_every_strategy_and_tracks_peak_exposure() -> None:
    led = Ledger()
    led.fill("algo", "sell", 100, 5000.0, 5000.0)
    led.fill("mm", "buy", 10, 4990.0, 4990.0)
    assert led.position == {"algo": -100, "mm": 10}
    pnl = led.pnl(4950.0)
    assert pnl["algo"] == pytest.approx(100 * 50) and pnl["mm"] == pytest.approx(-10 * 40)
    assert led.peak_position == 100 and led.peak_exposure == pytest.approx(500_000.0)


def test_iso_times_carry_nanoseconds() -> None:
    assert iso(pd.Timestamp("2026-11-20 14:30:15")) == "2026-11-20T14:30:15.000000000"
    assert iso(pd.Timestamp(1_700_000_000_123_456_789)).endswith(".123456789")
    assert iso(pd.NaT) is None


def test_limit_changes_name_old_and_new_per_strategy() -> None:
    rows = []
    for seq, (strategy, tier, q) in enumerate([("", "NORMAL", 500), ("algo", "NORMAL", 500),
                                               ("", "HIGH_ALERT", 50), ("algo", "HIGH_ALERT", 50)], 1):
        rows.append({"time": STORY_ONSET + pd.Timedelta(seconds=seq), "sym": "ESZ6", "strategy": strategy,
                     "seq": seq, "tier": tier, "state": "ACTIVE", "maxQty": q, "maxNotional": 1e6,
                     "bandBps": 500.0, "passiveBandBps": 500.0 if tier == "NORMAL" else 1000.0,
                     "maxPosition": 100, "maxRate": 10, "reason": b"cycle"})
    run = RunResult("enforce", Ledger(), 0.0, {}, 0, [], [], tables={"limits": pd.DataFrame(rows)})
    ch = limit_changes(run, "ESZ6")
    qty = [c for c in ch if c["field"] == "max_order_qty"]
    assert [(c["strategy"], c["old"], c["new"], c["tier"]) for c in qty] == [("*", 500, 50, "HIGH_ALERT"),
                                                                            ("algo", 500, 50, "HIGH_ALERT")]
    assert {c["field"] for c in ch} == {"max_order_qty", "passive_band_bps"}


def test_story_config_puts_the_onset_at_the_story_time() -> None:
    cfg = StoryConfig(onset=360)
    assert cfg.start == pd.Timestamp("2026-11-20 14:24:15")
    args = cfg.exchange_args()
    assert args[args.index("--warmup") + 1] == str(360 - cfg.lead) and "at=360.0" in args


def test_the_exchange_market_advances_and_outside_orders_move_the_same_book() -> None:
    from pretrade.gateway.exchange import Venue, market_seconds, run_market
    from pretrade.market.simulator import Simulation

    venue = Venue(Simulation("normal", 3, ["ESZ6"], 20))
    blocks = market_seconds(venue, 0, 20)
    first = [next(blocks) for _ in range(5)]
    assert all(b["quote"]["time"].max() < pd.Timestamp(venue.sim.start_ns + (k + 1) * 10**9)
               for k, b in enumerate(first) if len(b["quote"]))
    assert venue.sim.clock == 5
    out = venue.new("c1", "ESZ6", "sell", 30, None)              # a market order walks the live book
    assert any(f.get(32) for _, f in out)
    nxt = next(blocks)                                            # its trades are in the next second
    t = nxt["trade"]
    assert len(t) and t["time"].min() == pd.Timestamp(venue.sim.start_ns + 5 * 10**9)
    res = run_market(Venue(Simulation("normal", 3, ["ESZ6"], 10)), None, None, warmup=4)
    assert res["sent"]["quote"] > 0 and not res["refused"]


def test_market_maker_pauses_after_a_rejection() -> None:
    mm = MarketMaker(tick=0.25, pause=5.0)
    bid, _ = mm.step(0.0, 100.0, 100.25, 0)
    mm.rejected(bid.clordid, 0.5)
    assert "buy" not in mm.live
    assert mm.step(2.0, 99.0, 99.25, 0) == []                # paused
    assert [o.side for o in mm.step(6.0, 99.0, 99.25, 0) if isinstance(o, NewOrder)] == ["buy", "sell"]
