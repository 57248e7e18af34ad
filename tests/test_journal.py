"""The journal: kdb+ log format on disk, counting, torn/corrupt tails moved aside, replay."""

from __future__ import annotations

import numpy as np
import pytest

from pretrade.ipc import codec
from pretrade.tick import journal as jn


def rec(sym: str, price: float, size: int = 100) -> bytes:
    """One (`upd;`trade;row) record, as the tickerplant journals it."""
    row = [np.datetime64("2026-11-21T10:00:00.000000001", "ns"), sym, price, size, "buy"]
    return codec.encode(["upd", "trade", row])


def cols_rec(n: int) -> bytes:
    t = np.array(["2026-11-21T10:00:00"] * n, dtype="datetime64[ns]")
    data = [t, np.array(["A"] * n, dtype=object), np.arange(n, dtype=float),
            np.arange(n, dtype=np.int64), np.array(["sell"] * n, dtype=object)]
    return codec.encode(["upd", "trade", data])


def test_new_file_is_an_empty_kdb_log(tmp_path):
    path = tmp_path / "sym2026.11.21"
    with jn.Journal(path) as j:
        assert j.count == 0
    # what `.[L;();:;()]` writes: the file form of an empty general list
    assert path.read_bytes() == bytes.fromhex("ff01000000000000")


def test_records_are_appended_without_ipc_header_and_counted(tmp_path):
    path = tmp_path / "sym2026.11.21"
    with jn.Journal(path) as j:
        assert j.append(rec("AAPL", 1.5)) == 1
        assert j.append(rec("MSFT", 2.5) + cols_rec(3), n=2) == 3
    data = path.read_bytes()
    assert data[:8] == jn.HEADER  # kdb+ keeps no count in the header
    assert data[8:] == rec("AAPL", 1.5) + rec("MSFT", 2.5) + cols_rec(3)
    v = jn.validate(path)
    assert (v.ok, v.count, v.valid_bytes) == (True, 3, len(data))
    got = list(jn.iter_records(path))
    assert [(f, t) for f, t, _ in got] == [("upd", "trade")] * 3
    assert got[0][2][1] == "AAPL" and got[1][2][2] == 2.5
    assert list(got[2][2][4]) == ["sell"] * 3
    assert [f for f, _, _ in jn.iter_records(path, limit=2)] == ["upd", "upd"]
    s = jn.summary(path)
    assert s["messages"] == {"trade": 3} and s["rows"] == {"trade": 5}


def test_reopen_continues_the_count(tmp_path):
    path = tmp_path / "j"
    with jn.Journal(path) as j:
        j.append(rec("A", 1.0))
    with jn.Journal(path) as j:
        assert j.count == 1 and j.recovered.ok
        assert j.append(rec("B", 2.0)) == 2
    assert jn.validate(path).count == 2


@pytest.mark.parametrize("tail", [
    lambda r: r[: len(r) // 2],          # torn write: half a record
    lambda r: b"\x00" * 64,              # zero-filled tail (after a crash on some file systems)
    lambda r: b"\x07garbage-bytes",      # garbage
])
def test_bad_tail_is_moved_aside_and_valid_part_kept(tmp_path, tail, caplog):
    path = tmp_path / "sym2026.11.21"
    with jn.Journal(path) as j:
        j.append(rec("A", 1.0) + rec("B", 2.0), n=2)
    good = path.read_bytes()
    bad = tail(rec("C", 3.0))
    with open(path, "ab") as f:
        f.write(bad)
    v = jn.validate(path)
    assert not v.ok and v.count == 2 and v.valid_bytes == len(good)
    assert path.read_bytes() == good + bad  # validate changes nothing

    with jn.Journal(path) as j:
        assert j.count == 2 and not j.recovered.ok
        assert j.append(rec("D", 4.0)) == 3
    assert "bad tail" in caplog.text
    aside = list(tmp_path.glob("sym2026.11.21.badtail.*"))
    assert len(aside) == 1 and aside[0].read_bytes() == bad
    assert [d[1] for _, _, d in jn.iter_records(path)] == ["A", "B", "D"]
    assert jn.validate(path).ok


def test_torn_header_is_repaired(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(b"\xff\x01\x00")
    with jn.Journal(path) as j:
        assert j.count == 0
        j.append(rec("A", 1.0))
    assert jn.validate(path).count == 1


def test_a_file_that_is_not_a_journal_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello world")
    with pytest.raises(jn.JournalError, match="not a kdb\\+ log"):
        jn.Journal(path)
    assert path.read_bytes() == b"hello world"


def test_roll_starts_a_new_file(tmp_path):
    with jn.Journal(tmp_path / "sym2026.11.21") as j:
        j.append(rec("A", 1.0))
        j.roll(tmp_path / "sym2026.11.22")
        assert j.count == 0 and j.path.name == "sym2026.11.22"
        j.append(rec("B", 1.0))
    assert jn.validate(tmp_path / "sym2026.11.21").count == 1
    assert jn.validate(tmp_path / "sym2026.11.22").count == 1


def test_cli_reports_count_tables_and_validity(tmp_path, capsys):
    import argparse

    path = tmp_path / "j"
    with jn.Journal(path) as j:
        j.append(rec("A", 1.0) + cols_rec(4), n=2)
    args = argparse.Namespace(file=str(path), validate=True, head=1)
    assert jn.run(args) == 0
    out = capsys.readouterr().out
    assert "messages  2" in out and "trade" in out and "5 rows" in out and "valid     yes" in out
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x03")
    assert jn.run(args) == 1
    assert "NO:" in capsys.readouterr().out


def test_a_failed_write_leaves_no_torn_record(tmp_path, monkeypatch):
    import errno
    import os

    path = tmp_path / "j"
    j = jn.Journal(path)
    j.append(rec("A", 1.0))
    real_write = os.write

    def half_then_full(fd, data):  # writes part of the record, then the disk is full
        real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(jn.JournalError, match="No space left"):
        j.append(rec("B", 2.0))
    monkeypatch.setattr(os, "write", real_write)
    assert j.count == 1 and jn.validate(path).ok
    j.append(rec("C", 3.0))
    j.close()
    assert [d[1] for _, _, d in jn.iter_records(path)] == ["A", "C"]
