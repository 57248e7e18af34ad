"""The Dispatcher: function calls, typed q call forms, expressions, SQL and 'nyi, through TCP."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pretrade.ipc.client import QClient
from pretrade.ipc.codec import QError
from pretrade.ipc.dispatch import Dispatcher, parse_call, parse_literal
from pretrade.ipc.server import BackgroundServer


@pytest.mark.parametrize(
    "text,expected",
    [
        ("`trade", "trade"),
        ("`", ""),
        ("`a`b", ["a", "b"]),
        ("42", 42),
        ("-2.5", -2.5),
        ("1 2 3", [1, 2, 3]),
        ("7i", np.int32(7)),
        ('"hi; there"', b"hi; there"),
        ('"tab\\there"', b"tab\there"),
        ("1b", True),
        ("2026.11.21", dt.date(2026, 11, 21)),
        ("2026.11.21D10:00:00.5", np.datetime64("2026-11-21T10:00:00.5", "ns")),
        ("::", None),
    ],
)
def test_literals(text, expected):
    got = parse_literal(text)
    if isinstance(got, np.ndarray):
        got = got.tolist()
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "text,expected",
    [
        (".u.sub[`trade;`]", (".u.sub", ["trade", ""])),
        (".u.end 2026.11.21", (".u.end", [dt.date(2026, 11, 21)])),
        ("f[]", ("f", [])),
        ('f[1;"a;b";`x]', ("f", [1, b"a;b", "x"])),
        ("select from trade", None),
        ("1+1", None),
        ("f[1;", None),
        ('f["open]', None),
    ],
)
def test_call_forms(text, expected):
    assert parse_call(text) == expected


@pytest.fixture
def served():
    calls = []

    def upd(conn, table, data):
        calls.append((conn.user, table, data))

    def add(conn, a, b):
        return a + b

    def sql(conn, text):
        return pd.DataFrame({"q": [text]})

    d = Dispatcher(
        {".u.upd": upd, "add": add},
        expressions={"(.u.sub[`;`];`.u `i`L)": lambda conn: [1, 2]},
        sql=sql,
    )
    with BackgroundServer(d) as srv, QClient("127.0.0.1", srv.port, "ann") as q:
        yield q, calls


def test_dispatch_through_tcp(served):
    q, calls = served
    assert q.query("add", 2, 3) == 5  # (`add; 2; 3)
    assert q.query("add[2;3]") == 5  # typed form, as a q user would
    assert q.query("add[2.5;1 2]").tolist() == [3.5, 4.5]
    q.send_async(".u.upd", "trade", [1, "a"])
    assert q.query("(.u.sub[`;`];`.u `i`L)") == [1, 2]  # a registered expression
    assert q.query("s)select 1")["q"].tolist() == ["select 1"]  # SQL, prefix removed
    assert calls == [("ann", "trade", [1, "a"])]


def test_dispatch_errors(served):
    q, _ = served
    with pytest.raises(QError, match="nosuch: no such function"):
        q.query("nosuch", 1)
    with pytest.raises(QError, match="nosuch: no such function"):
        q.query("nosuch[1]")
    with pytest.raises(QError, match="^nyi$"):
        q.query("select from trade")
    with pytest.raises(QError, match="^nyi$"):
        q.query(42)
    with pytest.raises(QError, match="unsupported operand"):
        q.query("add", 1, "x")  # the function's own error reaches the client
    assert q.query("add", 1, 1) == 2  # and the connection carries on


def test_sql_absent_is_nyi():
    with (
        BackgroundServer(Dispatcher({})) as srv,
        QClient("127.0.0.1", srv.port) as q,
        pytest.raises(QError, match="nyi"),
    ):
        q.query("s)select 1")
