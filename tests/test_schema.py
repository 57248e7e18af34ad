"""The schema is the one source of truth; the generated q schema must match it."""

from pathlib import Path

import pytest

from pretrade.schema import TABLES, Column, Table, q_schema, table

ROOT = Path(__file__).resolve().parents[1]


def test_sym_q_is_generated_from_schema():
    on_disk = (ROOT / "tickerplant" / "sym.q").read_text()
    assert on_disk == q_schema(), "tickerplant/sym.q is stale: run `pretrade schema --q`"


def test_every_table_starts_with_time_and_sym():
    for t in TABLES.values():
        assert t.names[:2] == ["time", "sym"]
        assert t.qtypes[:2] == "ps"


def test_table_without_time_sym_is_refused():
    with pytest.raises(ValueError, match="time"):
        Table("bad", (Column("sym", "s"), Column("time", "p")), "")


def test_unknown_table_names_the_known_ones():
    with pytest.raises(KeyError, match="trade"):
        table("nosuch")


def test_book_has_ten_levels_a_side():
    names = table("book").names
    assert {f"bid{i}" for i in range(1, 11)} <= set(names)
    assert {f"asize{i}" for i in range(1, 11)} <= set(names)
