"""The gateway's start-up state from the firm's record: today's positions from the RDB's fills,
and the traders' habits (the fat-finger model's history) from recent days of orders.

A restarted gateway that believed every position flat would under-block the position and
concentration checks, so the service rebuilds positions before any order passes (Gate.positions_known)
and keeps retrying while the RDB is unreachable. The traders' history is advisory state: without
it the model sees every trader as new (it flags more, never less), so a failed warm-up is logged
and the gateway runs on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from pretrade.models.order_features import warm_history

log = logging.getLogger(__name__)

# Every fill of the day: one row per ExecutionReport with ExecType F (event "fill"), qty = LastQty.
FILLS_SQL = "s)select sym, execid, side, qty from execution where event = 'fill'"

_ORDER_COLS = "o.time, o.sym, o.account, o.side, o.qty, o.price, o.ordtype, q.bid, q.ask"


def fills(rdb: str, timeout: float = 10.0) -> list[tuple[str, str, str, int]]:
    """Today's fills (sym, execid, side, qty) from the RDB at HOST:PORT; raises OSError /
    ConnectionError / QError when it cannot answer."""
    from pretrade.client import connect

    with connect(rdb, timeout=timeout) as c:
        f = c.sql(FILLS_SQL)
    if f is None or not len(f):
        return []
    return [(str(s), str(e), str(sd), int(q)) for s, e, sd, q in
            zip(f["sym"], f["execid"], f["side"], f["qty"], strict=True)]


def orders_sql(days: int | None) -> str:
    """New orders with the quote prevailing at each (as-of join), in time order: from the RDB
    (days None) or from the HDB's last `days` dates that have orders."""
    if days is None:
        orders, quotes = "select * from \"order\" where event = 'new'", "select time, sym, bid, ask from quote"
    else:
        recent = f"select distinct date from \"order\" order by date desc limit {int(days)}"
        orders = f"select * from \"order\" where event = 'new' and date in ({recent})"
        quotes = f"select time, sym, bid, ask from quote where date in ({recent})"
    return (f"s)select {_ORDER_COLS} from ({orders}) o asof left join ({quotes}) q "
            "on o.sym = q.sym and o.time >= q.time order by o.time")


def recent_orders(rdb: str | None, hdb: str | None, days: int, timeout: float = 60.0) -> pd.DataFrame:
    """The last `days` days of new orders from the HDB and today's from the RDB (either may be
    None or down: logged, skipped), with bid/ask, in time order."""
    from pretrade.client import connect

    parts = []
    for name, addr, d in (("HDB", hdb, days), ("RDB", rdb, None)):
        if not addr or (d is not None and d <= 0):
            continue
        try:
            with connect(addr, timeout=timeout) as c:
                f = c.sql(orders_sql(d))
        except Exception as e:  # noqa: BLE001 - advisory state: say so and go on without it
            log.warning("trader history: no orders from the %s at %s (%s)", name, addr, e)
            continue
        if f is not None and len(f):
            parts.append(f)
    if not parts:
        return pd.DataFrame(columns=["time", "sym", "account", "side", "qty", "price", "ordtype", "bid", "ask"])
    return pd.concat(parts, ignore_index=True).sort_values("time", kind="stable").reset_index(drop=True)


def warm(rdb: str | None, hdb: str | None, days: int) -> tuple[Any | None, dict[str, Any]]:
    """(history or None, what was loaded: orders, traders, days, seconds) for the log line."""
    t0 = time.perf_counter()
    orders = recent_orders(rdb, hdb, days)
    # as the gate scores them: a market order at the mid, an order without account as "-"
    orders["price"] = orders["price"].astype(float).fillna((orders["bid"].astype(float) + orders["ask"].astype(float)) / 2)
    orders["account"] = orders["account"].replace("", "-")
    history = warm_history(orders) if len(orders) else None  # pretrade.models.order_features
    info = {"orders": len(orders), "accounts": int(orders["account"].nunique()) if len(orders) else 0,
            "dates": int(pd.to_datetime(orders["time"]).dt.normalize().nunique()) if len(orders) else 0,
            "seconds": time.perf_counter() - t0}
    return history, info
