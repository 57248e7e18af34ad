"""Tickerplant behaviour without the network: midnight roll, batch counters, subscription rules."""

from __future__ import annotations

import datetime as dt

from pretrade.ipc import codec, wire
from pretrade.tick import journal as jn
from pretrade.tick import tpwire
from pretrade.tick.tickerplant import Tickerplant

UPD = b"\x00\x00\x03\x00\x00\x00\xf5.u.upd\x00\xf5trade\x00"


class Conn:
    """Stands in for a server connection: records the messages sent to it."""

    name = "test-conn"

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_frame(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    def messages(self) -> list:
        out = []
        for f in self.frames:
            pos = 0
            while pos < len(f):
                n = int.from_bytes(f[pos + 4 : pos + 8], "little")
                out.append(codec.loads(f[pos + 8 : pos + n]))
                pos += n
        return out


def update(tp: Tickerplant, sym: str, size: int) -> tpwire.Update:
    return tpwire.parse_upd(UPD + codec.encode_row([sym, 1.0, size, "buy"], "sfjs"), tp.specs)


def test_an_update_after_midnight_ends_the_day_first(tmp_path):
    tp = Tickerplant(tmp_path)
    sub = Conn()
    tp.sub(sub, "trade", "")
    tp.accept([update(tp, "ES", 1)])
    day = tp.d
    tp._eod_ns = 0  # the wall clock has passed midnight
    tp.accept([update(tp, "ES", 2)])
    msgs = sub.messages()
    assert [m[0] for m in msgs] == ["upd", ".u.end", "upd"] and msgs[1][1] == day
    assert tp.d == day + dt.timedelta(days=1) and tp.i == 1
    assert jn.validate(tmp_path / f"sym{day:%Y.%m.%d}").count == 1
    assert [d[3] for _, _, d in jn.iter_records(tp.journal.path)] == [2]


def test_batch_mode_counts_like_tick_q(tmp_path):
    tp = Tickerplant(tmp_path, batch_ms=100)
    sub = Conn()
    tp.sub(sub, "trade", "")
    tp.accept([update(tp, "ES", i) for i in range(3)])
    assert (tp.i, tp.j) == (0, 3) and sub.frames == []  # journaled, not yet published
    tp.flush()
    assert (tp.i, tp.j) == (3, 3)
    [msg] = sub.messages()
    assert msg[2]["size"].tolist() == [0, 1, 2]


def test_zero_latency_sends_one_message_per_update_in_one_write(tmp_path):
    tp = Tickerplant(tmp_path)
    a, b = Conn(), Conn()
    tp.sub(a, "trade", "")
    tp.sub(b, "trade", "NQ")
    tp.accept([update(tp, "ES", 1), update(tp, "NQ", 2), update(tp, "ES", 3)])
    assert len(a.frames) == 1 and [m[2]["size"].tolist() for m in a.messages()] == [[1], [2], [3]]
    assert [m[2]["size"].tolist() for m in b.messages()] == [[2]]
    assert a.frames[0].startswith(wire.frame(b"", wire.ASYNC)[:2])


def test_a_new_sub_replaces_the_old_one_and_disconnect_forgets(tmp_path):
    tp = Tickerplant(tmp_path)
    c = Conn()
    tp.sub(c, "trade", "ES")
    tp.sub(c, "trade", "NQ")  # u.q: del then add
    tp.accept([update(tp, "ES", 1), update(tp, "NQ", 2)])
    assert [m[2]["sym"].tolist() for m in c.messages()] == [["NQ"]]
    answer = codec.loads(tp.sub(c, "", ""))
    assert [t for t, _ in answer] == tp.t
    assert tp.status()["subscribers"]["quote"] == 1
    tp.drop(c)
    assert tp.subscribers() == 0


def test_unknown_table_subscription_is_an_error(tmp_path):
    import pytest

    tp = Tickerplant(tmp_path)
    with pytest.raises(codec.QError, match="nosuch: no such table"):
        tp.sub(Conn(), "nosuch", "")


def test_text_forms_answer_like_q(tmp_path):
    from pretrade.tick.tickerplant import TickerplantHandler

    tp = Tickerplant(tmp_path)
    h = TickerplantHandler(tp)
    c = Conn()
    c.handle = 7

    def ask(text: str):
        answer = h.on_message(c, wire.SYNC, memoryview(codec.encode(text.encode())))
        return codec.loads(answer) if isinstance(answer, bytes) else answer

    table, empty = ask(".u.sub[`trade;`AAPL`MSFT]")
    assert table == "trade" and len(empty) == 0
    w = ask(".u.w")
    assert w["trade"][0][0] == 7 and list(w["trade"][0][1]) == ["AAPL", "MSFT"] and w["quote"] == []
    assert ask(".u.t").tolist() == tp.t and ask(".u.i") == 0 and ask(".u.L") == ":" + str(tp.journal.path)
    assert ask(".u.d") == tp.d and ask(".tp.status[]")["mode"] == "zero-latency"
    import pytest

    with pytest.raises(codec.QError, match="no such function"):
        ask("exit 0")
