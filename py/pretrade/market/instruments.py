"""The simulated instrument universe: price scale, tick and lot size, volatility and activity.

The ten default instruments span the price scales the system must handle unchanged: an index
future (ticks of 0.25), a 78,000 USD crypto pair, a $5 stock and ordinary equities.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Instrument:
    """One simulated instrument and the parameters of its order flow."""

    sym: str
    price: float       # opening price
    tick: float        # tick size (price units)
    lot: int           # lot size (shares or contracts); every size is a multiple
    daily_vol: float   # daily volatility of the fundamental log-price
    beta: float        # loading on the common market factor (cross-instrument correlation)
    rate: float        # base order-flow events per second at mid-day
    mm_size: int       # market maker's quote size per level at the first level, in lots

    @property
    def decimals(self) -> int:
        """Decimal places that represent every multiple of the tick exactly."""
        text = f"{self.tick:.10f}".rstrip("0")
        return len(text.split(".")[1]) if "." in text else 0


UNIVERSE: dict[str, Instrument] = {i.sym: i for i in [
    Instrument("ESZ6", 5000.00, 0.25, 1, 0.010, 1.0, 9.0, 40),
    Instrument("NQZ6", 18000.00, 1.00, 1, 0.013, 1.1, 7.0, 20),
    Instrument("BTCUSD", 78000.00, 5.00, 1, 0.030, 0.5, 7.0, 15),
    Instrument("ACME", 100.00, 0.01, 100, 0.015, 0.9, 6.0, 30),
    Instrument("BOLT", 40.00, 0.01, 100, 0.020, 1.2, 5.0, 40),
    Instrument("CRUX", 250.00, 0.05, 10, 0.015, 0.8, 5.0, 30),
    Instrument("DYNE", 20.00, 0.01, 100, 0.025, 1.3, 5.0, 50),
    Instrument("EMBR", 60.00, 0.01, 100, 0.018, 1.0, 5.0, 30),
    Instrument("FLUX", 150.00, 0.02, 10, 0.012, 0.7, 5.0, 30),
    Instrument("GLOW", 5.00, 0.01, 100, 0.030, 1.0, 4.0, 80),
]}


def resolve(syms: list[str] | tuple[str, ...] | None) -> list[Instrument]:
    """The instruments named (all ten when None), with a clear error for an unknown name."""
    if not syms:
        return list(UNIVERSE.values())
    unknown = [s for s in syms if s not in UNIVERSE]
    if len(set(syms)) != len(syms):
        raise ValueError(f"instruments named twice in {list(syms)}")
    if unknown:
        raise ValueError(f"unknown instrument(s) {unknown}; known: {', '.join(UNIVERSE)}")
    return [UNIVERSE[s] for s in syms]
