"""An independent kdb+ IPC implementation (aiokdb, from PyPI) publishes, subscribes and queries.

qPython was tried too: version 2.0.0 cannot be imported with numpy 2 (it uses numpy.string_), so
aiokdb is the independent client here; PyKX cross-checks the codec in test_ipc_codec.py.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from pretrade.ipc import codec, wire
from pretrade.ipc.auth import Users, hash_password
from pretrade.ipc.dispatch import Dispatcher
from pretrade.ipc.server import BackgroundServer

aiokdb = pytest.importorskip("aiokdb")
from aiokdb import TypeEnum, cv, kf, kj, kk, kp, ks, ktn  # noqa: E402
from aiokdb.client import open_qipc_connection  # noqa: E402
from aiokdb.server import CredentialsException  # noqa: E402

TS = np.datetime64("2026-11-21T14:30:22.123456789", "ns")
TS_Q = int(TS.astype(np.int64)) - codec.EPOCH_NS  # q's value: ns since 2000.01.01
NAMES, QTYPES = ["time", "sym", "price", "size"], "psfj"


class MiniTick(Dispatcher):
    """Just enough of a tickerplant to exercise the wire: .u.upd, .u.sub, SQL."""

    def __init__(self) -> None:
        super().__init__({".u.upd": self.upd, ".u.sub": self.sub}, sql=self.select)
        self.rows: list = []
        self.subs: list = []

    def upd(self, conn, table, row):
        self.rows.append((table, row))
        df = pd.DataFrame({"time": [row[0]], "sym": [row[1]], "price": [row[2]], "size": [row[3]]})
        payload = codec.encode(["upd", table, codec.QRaw(codec.encode_table(df, QTYPES, NAMES))])
        frame = wire.frame(payload, wire.ASYNC)
        for c in self.subs:
            c.send_frame(frame)

    def sub(self, conn, table, syms):
        self.subs.append(conn)
        return [table, codec.QRaw(codec.encode_table({n: [] for n in NAMES}, QTYPES, NAMES))]

    def select(self, conn, text):
        if "boom" in text:
            raise ValueError("Parser Error: syntax error at or near boom")
        return pd.DataFrame({"sym": ["AAPL", "MSFT"], "n": np.array([3, 4])})


@pytest.fixture
def tick():
    h = MiniTick()
    with BackgroundServer(h) as srv:
        yield srv


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_publish_subscribe_query_and_error_from_aiokdb(tick):
    async def scenario():
        sr, sw = await open_qipc_connection(port=tick.port, user="sub")
        pr, pw = await open_qipc_connection(port=tick.port, user="pub")

        # subscribe: kdb+tick answers (table name; empty schema)
        ans = await sw.sync_req(kk(ks(".u.sub"), ks("trade"), ks("")))
        assert ans.kK()[0].aS() == "trade"
        schema = ans.kK()[1]
        assert schema.t == TypeEnum.XT and list(schema.kS()) == NAMES
        assert [c.t for c in schema.kK()] == [12, 11, 9, 7] and len(schema) == 0

        # publish one row, async, as a feed handler does: .u.upd[`trade; (time; sym; price; size)]
        await pw.async_msg(
            kk(ks(".u.upd"), ks("trade"), kk(kp(TS_Q), ks("AAPL"), kf(101.25), kj(300)))
        )

        # the subscriber receives (`upd; `trade; table) with the exact values
        mt, msg = await sr.read()
        assert mt == 0
        assert msg.kK()[0].aS() == "upd" and msg.kK()[1].aS() == "trade"
        tbl = msg.kK()[2]
        assert list(tbl.kS()) == NAMES
        cols = tbl.kK()
        assert cols[0].kJ()[0] == TS_Q and list(cols[1].kS()) == ["AAPL"]
        assert cols[2].kF()[0] == 101.25 and cols[3].kJ()[0] == 300

        # a query gets a table back; an error comes back as an error
        res = await pw.sync_req(cv("s)select sym, count(*) as n from trade group by sym"))
        assert res.t == TypeEnum.XT and list(res["sym"].kS()) == ["AAPL", "MSFT"]
        assert list(res["n"].kJ()) == [3, 4]
        with pytest.raises(aiokdb.KException, match="Parser Error"):
            await pw.sync_req(cv("s)select boom"))
        with pytest.raises(aiokdb.KException, match="nyi"):
            await pw.sync_req(cv("2+2"))
        with pytest.raises(aiokdb.KException, match="nosuch"):
            await pw.sync_req(kk(ks("nosuch"), kj(1)))
        # the connection survives its errors
        assert (await pw.sync_req(cv("s)select 1"))).t == TypeEnum.XT
        sw.close()
        pw.close()

    run(scenario())
    h = tick.handler
    table, row = h.rows[0]
    assert table == "trade"
    assert row == [TS, "AAPL", 101.25, 300] and isinstance(row[0], np.datetime64)


def test_many_columns_update_from_aiokdb(tick):
    """A 100-row column update built by aiokdb decodes to numpy vectors with the right values."""

    async def scenario():
        r, w = await open_qipc_connection(port=tick.port)
        times = ktn(TypeEnum.KP)
        times.kJ().extend(TS_Q + i for i in range(100))
        syms = ktn(TypeEnum.KS)
        syms.appendS(*[f"S{i % 7}" for i in range(100)])
        prices = ktn(TypeEnum.KF)
        prices.kF().extend(float(i) / 4 for i in range(100))
        await w.async_msg(kk(ks(".u.upd"), ks("quote"), kk(times, syms, prices)))
        await w.sync_req(cv("s)select 1"))  # answered after the update was handled
        w.close()

    h = tick.handler
    h.functions[".u.upd"] = lambda conn, table, data: h.rows.append((table, data))
    run(scenario())
    table, cols = h.rows[0]
    assert table == "quote"
    assert cols[0].dtype == np.dtype("datetime64[ns]") and cols[0][5] == TS + np.timedelta64(
        5, "ns"
    )
    assert cols[1].tolist() == [f"S{i % 7}" for i in range(100)]
    assert cols[2].tolist() == [i / 4 for i in range(100)]


def test_aiokdb_login_refused_with_wrong_password(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text(f'[users]\nbob = "{hash_password("pw")}"\n')
    with BackgroundServer(MiniTick(), users=Users.load(path)) as srv:

        async def scenario():
            with pytest.raises(CredentialsException):
                await open_qipc_connection(port=srv.port, user="bob", password="bad")
            r, w = await open_qipc_connection(port=srv.port, user="bob", password="pw")
            assert (await w.sync_req(cv("s)select 1"))).t == TypeEnum.XT
            w.close()

        run(scenario())


def test_aiokdb_decompresses_our_compression():
    from aiokdb.compress import compress as a_compress
    from aiokdb.compress import decompress as a_decompress

    for payload in [
        codec.encode(np.arange(3000)),
        codec.encode(np.array(["AAPL", "MSFT"] * 500, dtype=object)),
        b"\x0a\x00" + (4000).to_bytes(4, "little") + b"ab" * 2000,
    ]:
        msg = wire.frame(payload, wire.ASYNC)
        ours = wire.compress(msg)
        assert ours[2] == 1 and len(ours) < len(msg)
        assert a_decompress(ours[8:]) == payload  # aiokdb reads what we compress
        theirs = a_compress(payload)
        framed = msg[:2] + b"\x01\x00" + (len(theirs) + 8).to_bytes(4, "little") + theirs
        assert wire.decompress(framed) == msg  # we read what aiokdb compresses
