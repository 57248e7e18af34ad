"""Replay of recorded data: L3 reconstruction, L2 files, any price scale, and messy feeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pretrade.market.replay import Replay, ReplayReport, detect, replay_l3
from pretrade.market.simulator import simulate
from pretrade.schema import table

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def _all(rep: Replay) -> dict[str, pd.DataFrame]:
    parts: dict[str, list] = {}
    for block in rep.blocks():
        for name, df in block.items():
            parts.setdefault(name, []).append(df)
    return {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}


def test_l3_replay_rebuilds_the_simulators_own_market() -> None:
    """Replaying the simulator's L3 events gives back its trades and its quotes."""
    res = simulate("normal", 9, syms=["ESZ6", "GLOW"], duration=120)
    l3 = res["l3"].rename(columns={"orderid": "order_id"})
    out = replay_l3(l3, ReplayReport())
    pd.testing.assert_frame_equal(out["trade"], res["trade"])
    # the simulator quotes after each agent action, the replay after each message: compare the
    # quote in force at the end of each timestamp, where it changed
    def last(q):
        q = q.groupby(["sym", "time"]).last().reset_index()
        top = q[["bid", "ask", "bsize", "asize"]].fillna(-1)
        same = (top == top.groupby(q.sym).shift()).all(axis=1)
        return q[~same.to_numpy()].reset_index(drop=True)
    pd.testing.assert_frame_equal(last(out["quote"]), last(res["quote"]))
    assert list(out["book"].columns) == table("book").names
    pd.testing.assert_frame_equal(out["book"], res["book"])  # same sampling of the same books


def test_clean_example_file_and_price_scales(tmp_path: Path) -> None:
    rep = Replay([EXAMPLES / "l3_events.csv"])
    out = _all(rep)
    assert not any(rep.report.problems.values()), rep.report.summary()
    trades = out["trade"]
    assert trades.price.tolist() == [4500.25, 78000.0, 4500.25]
    assert trades.side.tolist() == ["buy", "sell", "buy"] and trades["size"].tolist() == [5, 1, 3]
    q = out["quote"].groupby("sym").last()
    assert q.loc["GLOW", "bid"] == 5.00 and q.loc["GLOW", "ask"] == 5.02
    assert q.loc["BTCUSD", "bid"] == 78000.0 and q.loc["BTCUSD", "ask"] == 78000.5
    assert q.loc["ESZ6", "bsize"] == 6 and pd.isna(q.loc["ESZ6", "ask"]) is False
    b = out["book"].groupby("sym").last()
    assert b.loc["ESZ6", "bid2"] == 4499.75 and b.loc["ESZ6", "ask1"] == 4500.50
    # the same data as Parquet gives the same result
    pq = tmp_path / "events.parquet"
    pd.read_csv(EXAMPLES / "l3_events.csv").to_parquet(pq)
    again = _all(Replay([pq]))
    for name in ("trade", "quote", "book", "l3"):
        pd.testing.assert_frame_equal(again[name], out[name])


def test_dirty_file_is_counted_and_survived() -> None:
    rep = Replay([EXAMPLES / "l3_dirty.csv"])
    out = _all(rep)
    p = rep.report.problems
    assert rep.report.rows_in == 15
    assert p["bad_row"] == 3 and p["duplicate"] == 1 and p["out_of_order"] == 1
    assert p["unknown_order"] == 1 and p["duplicate_order_id"] == 1 and p["overfill"] == 1
    assert p["crossed"] == 1 and p["locked"] == 1
    assert out["trade"]["size"].tolist() == [8]  # the overfill filled what rested
    final = out["quote"].iloc[-1]
    assert (final.bid, final.ask, final.bsize, final.asize) == (4500.0, 4500.25, 12, 6)
    text = rep.report.summary()
    assert "unknown_order: 1" in text and "crossed: 1" in text


def test_l2_book_and_trades(tmp_path: Path) -> None:
    rep = Replay([EXAMPLES / "l2_book.csv", EXAMPLES / "l2_trade.csv"])
    out = _all(rep)
    assert list(out["book"].columns) == table("book").names
    assert out["book"].bid1.tolist()[2] == 78000.0 and np.isnan(out["book"].bid4).all()
    assert out["trade"].price.tolist() == [4500.25, 78000.5, 5.01]
    # quotes come from level 1, only when it changes (the last ESZ6 snapshot repeats the one before)
    q = out["quote"]
    assert len(q) == 4 and q[q.sym == "ESZ6"].bsize.tolist() == [12, 10]
    # a folder of files works too, and Parquet as well as CSV
    folder = tmp_path / "l2"
    folder.mkdir()
    pd.read_csv(EXAMPLES / "l2_book.csv").to_parquet(folder / "book.parquet")
    pd.read_csv(EXAMPLES / "l2_trade.csv").to_csv(folder / "trade.csv", index=False)
    again = _all(Replay([folder]))
    pd.testing.assert_frame_equal(again["trade"], out["trade"])
    pd.testing.assert_frame_equal(again["book"], out["book"])


def test_l2_crossed_snapshots_and_bad_rows_are_counted(tmp_path: Path) -> None:
    f = tmp_path / "book.csv"
    f.write_text("time,sym,bid1,bsize1,ask1,asize1\n"
                 "2026-11-20T14:30:01,ESZ6,4500.50,1,4500.25,2\n"
                 "2026-11-20T14:30:00,ESZ6,4500.25,1,4500.25,2\n"
                 "2026-11-20T14:30:02,ESZ6,4500.00,x,4500.25,2\n")
    rep = Replay([f])
    _all(rep)
    p = rep.report.problems
    assert p["crossed"] == 1 and p["locked"] == 1 and p["out_of_order"] == 1
    assert p["bad_row"] == 0  # a missing size in a book level is an empty level


def test_wrong_inputs_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Replay([tmp_path / "missing.csv"])
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        Replay([bad])
    xlsx = tmp_path / "x.xlsx"
    xlsx.write_text("")
    with pytest.raises(ValueError, match="unknown format"):
        Replay([xlsx])
    assert detect(pd.DataFrame(columns=["time", "sym", "event", "order_id"])) == "l3"
