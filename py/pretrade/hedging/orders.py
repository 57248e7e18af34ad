"""The hedging agent's schedule as FIX orders: each hedge order the agent emits becomes a
NewOrderSingle to the gateway, which checks it like any other order (no bypass for hedges)."""

from __future__ import annotations

from typing import Any

from pretrade.gateway import messages as m

HEDGE_STRATEGY = "hedge"


def new_order_fields(order: dict[str, Any], clordid: str, price: float | None = None,
                     strategy: str = HEDGE_STRATEGY) -> dict[int, Any]:
    """NewOrderSingle fields for one order of HedgingAgent.schedule: a market order (limit when
    `price` is given), tagged with `strategy` so the gateway's per-strategy limits bind it."""
    if order.get("side") not in m.FIX_SIDE or not int(order.get("qty", 0)) > 0:
        raise ValueError(f"not a hedge order (side buy/sell, qty > 0): {order!r}")
    return {m.CL_ORD_ID: clordid, m.SYMBOL: order["sym"], m.SIDE: m.FIX_SIDE[order["side"]],
            m.ORDER_QTY: int(order["qty"]), m.ORD_TYPE: "1" if price is None else "2", m.PRICE: price,
            m.STRATEGY: strategy, m.TRANSACT_TIME: m.utc_now()}
