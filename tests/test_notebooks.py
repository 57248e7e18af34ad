"""The quant notebooks (notebooks/*.ipynb) executed top to bottom against a real stack.

The stack: tickerplant, RDB and HDB as `pretrade` processes with the password `pretrade up` uses;
a simulated feed published into the tickerplant, an end of day (so the HDB has a partition), a
second feed for today; the simulated exchange and the FIX gateway with limits published to the
tickerplant, and one over-limit order sent by a QuickFIX client so a real `decision` row exists.
Each notebook runs in a fresh kernel (nbclient) and any cell error fails the test.

PRETRADE_SAVE_NOTEBOOKS=1 writes the executed notebooks (with their outputs) back to notebooks/.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")
fix = pytest.importorskip("quickfix", reason="QuickFIX is not installed: pip install -e '.[fix]'")

from pretrade.up import IPC_USER, Process, _start, _stop, _wait_port, ipc_credentials  # noqa: E402
from test_gateway_e2e import Engine, passive, send_order  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.fix, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FIX_PASSWORD = "nb-secret"
SYMS = ["ESZ6", "ACME"]


def _feed(env: dict, tp_port: int, seed: int, logs: Path) -> None:
    """Publish a few minutes of simulated market for SYMS into the tickerplant, as `pretrade feed` does."""
    p = Process(f"feed{seed}", [sys.executable, "-m", "pretrade.cli", "feed", "sim", "--tp",
                                f"127.0.0.1:{tp_port}", "--speed", "max", "--restamp", "--scenario", "normal",
                                "--seed", str(seed), "--syms", *SYMS, "--duration", "3m"])
    _start(p, logs, env)
    assert p.popen.wait(120) == 0, p.logfile.read_text()[-2000:]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A real tp/rdb/hdb with yesterday in the HDB, today in the RDB and one rejected order."""
    from pretrade.client import connect
    from pretrade.gateway.exchange import Venue, start_exchange
    from pretrade.gateway.fixclient import FixInitiator
    from pretrade.gateway.service import GatewayService
    from pretrade.risk.limits import Limit
    from pretrade.schema import TABLES
    from pretrade.tick.eod import end_of_day

    tmp = tmp_path_factory.mktemp("nb")
    users, password = ipc_credentials(tmp)
    ports = {name: free_port() for name in ("tp", "rdb", "hdb", "ex", "gw")}
    tp_addr = f"127.0.0.1:{ports['tp']}"
    saved = {k: os.environ.get(k) for k in ("PRETRADE_USER", "PRETRADE_PASSWORD", "NB_FIX_PW")}
    os.environ.update(PRETRADE_USER=IPC_USER, PRETRADE_PASSWORD=password, NB_FIX_PW=FIX_PASSWORD)
    env = dict(os.environ, PYKX_UNLICENSED="true", PYKX_SUPPRESS_WARNINGS="true")
    exe = [sys.executable, "-m", "pretrade.cli"]
    procs = [
        Process("tp", exe + ["tp", "--port", str(ports["tp"]), "--journal", str(tmp / "journal"),
                             "--users", str(users)], ports["tp"]),
        Process("hdb", exe + ["hdb", "--port", str(ports["hdb"]), "--dir", str(tmp / "hdb"),
                              "--users", str(users)], ports["hdb"]),
        Process("rdb", exe + ["rdb", "--port", str(ports["rdb"]), "--tp", tp_addr, "--hdb", str(tmp / "hdb"),
                              "--hdb-addr", f"127.0.0.1:{ports['hdb']}", "--users", str(users)], ports["rdb"]),
    ]
    stops: list = []
    with contextlib.ExitStack() as undo:
        undo.callback(lambda: [f() for f in reversed(stops)])
        undo.callback(_restore, saved)
        for p in procs:
            _start(p, tmp, env)
            stops.append(lambda p=p: _stop(p))
            _wait_port(p, 60)
        # a first session, ended: it becomes the HDB's partition; then today's session in the RDB
        _feed(env, ports["tp"], 1, tmp)
        end_of_day("127.0.0.1", ports["tp"], IPC_USER, password)
        _until(lambda: any((tmp / "hdb").glob("date=*/trade.parquet")), "the end-of-day partition")
        _feed(env, ports["tp"], 2, tmp)

        clients = tmp / "clients.toml"
        clients.write_text('[client.CLIENT1]\npassword_env = "NB_FIX_PW"\n')
        venue = Venue.primed(seed=1, syms=SYMS)
        exchange = start_exchange(tmp / "ex", ports["ex"], venue=venue)
        stops.append(exchange.stop)
        svc = GatewayService(tmp / "gw", ports["gw"], tp_addr, ("127.0.0.1", ports["ex"]), ttl_s=3600.0,
                             clients_path=str(clients), model_path=None).start()
        stops.append(svc.stop)
        engine = Engine(tp_addr)  # plays the risk engine: quotes, limits and heartbeats
        stops.append(engine.kill)
        client = FixInitiator(tmp / "c1", ports["gw"], "CLIENT1", "PRETRADE", password=FIX_PASSWORD)
        stops.insert(stops.index(exchange.stop) + 1, client.stop)  # acceptors stop first
        assert client.wait_logon(15) and svc.gateway.exchange_up.wait(15), "FIX sessions did not log on"
        def quote_seen() -> bool:  # the gateway's subscription may not be live yet: quote until seen
            for sym in SYMS:
                b, a, _, _ = next(s.book for s in venue.sim.sims if s.ins.sym == sym).top()
                engine.quote(sym, b * venue.insts[sym].tick, a * venue.insts[sym].tick)
            return all(svc.table.ref_price(sym) == svc.table.ref_price(sym) for sym in SYMS)  # not NaN

        _until(quote_seen, "the gateway's reference prices")
        # the limits a stressed market gets: tightened, with the scores and features that did it
        for seq, (tier, max_qty, score, top, reason) in enumerate([
            ("NORMAL", 10000, 0.02, "spread_bps,ofi,rv_1s", "initial limits"),
            ("HIGH_ALERT", 50, 0.62, "spread_bps,depth_imbalance,rv_1s",
             "score 0.62 > 0.30: tier NORMAL -> HIGH_ALERT, max order qty 10000 -> 50"),
        ], start=1):
            engine.seq = seq
            lim = Limit(time.time_ns(), "ESZ6", "", seq, tier, "ACTIVE", "", max_qty, 2e6, 500.0, 1500.0,
                        50000, 50, score, top, "vae-3", "NORMAL" if seq > 1 else "", 10000 if seq > 1 else -1,
                        reason)
            engine.conn.publish("limits", [dict(zip(TABLES["limits"].names, lim.row(), strict=True))])
            deadline = time.monotonic() + 10
            while (got := svc.table.book.get("ESZ6")) is None or got.seq != seq:
                assert time.monotonic() < deadline, "the gateway did not apply the limits"
                time.sleep(0.02)
        engine.start_heartbeat()  # what notebook 1's subscription sees arrive
        ok = send_order(type("S", (), dict(client=client)), "ESZ6", "buy", 20, passive_price(venue, "buy"))
        bad = send_order(type("S", (), dict(client=client)), "ESZ6", "buy", 200, passive_price(venue, "buy"))
        assert ok[39] == "0" and bad[39] == "8", (ok.get(58), bad.get(58))
        with connect(f"127.0.0.1:{ports['rdb']}") as rdb:  # decision rows travel gateway -> tp -> rdb
            _until(lambda: len(rdb.sql(f"select * from decision where clordid = '{bad[11]}'")), "the decision row")
        yield dict(tp=tp_addr, rdb=f"127.0.0.1:{ports['rdb']}", hdb=f"127.0.0.1:{ports['hdb']}",
                   clordid=bad[11], text=bad[58], password=password)


def _until(pred, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what} did not arrive within {timeout:.0f} s"
        time.sleep(0.1)


def passive_price(venue, side: str) -> float:
    """A resting price behind the touch (test_gateway_e2e.passive, on the venue itself)."""
    return passive(type("S", (), dict(venue=venue)), "ESZ6", side)


def _restore(saved: dict[str, str | None]) -> None:
    """Put environment variables back as they were (unset where they were unset)."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _run(name: str, stack: dict) -> nbformat.NotebookNode:
    """Execute notebooks/<name> in a fresh kernel pointed at the stack; save it back if asked."""
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    env = {"PRETRADE_TP": stack["tp"], "PRETRADE_RDB": stack["rdb"], "PRETRADE_HDB": stack["hdb"],
           "PRETRADE_CLORDID": stack["clordid"], "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        _restore(saved)
    if os.environ.get("PRETRADE_SAVE_NOTEBOOKS"):
        nbformat.write(nb, path)
    return nb


def _text(nb) -> str:
    """Every text output of the notebook, joined (streams, results, errors)."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") if "text" in o else o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_01_query_rdb_hdb(stack):
    nb = _run("01_query_rdb_hdb.ipynb", stack)
    text = _text(nb)
    assert "ESZ6" in text and "ACME" in text
    assert "partitions:" in text and "heartbeat" in text  # the HDB's date and the subscription's updates


def test_02_asof_join(stack):
    nb = _run("02_asof_join.ipynb", stack)
    text = _text(nb)
    assert "server and local as-of joins agree" in text and "effective spread" in text
    assert _images(nb) >= 1


def test_03_anomaly_score(stack):
    nb = _run("03_anomaly_score.ipynb", stack)
    text = _text(nb)
    assert "peak score" in text and "top features" in text
    assert _images(nb) >= 2


def test_04_rejected_order(stack):
    nb = _run("04_rejected_order.ipynb", stack)
    text = _text(nb)
    assert stack["text"] in text  # the rejection text the client received, read back from the decision table
    assert "MAX_ORDER_QTY" in text and "HIGH_ALERT" in text and "vae-3" in text
