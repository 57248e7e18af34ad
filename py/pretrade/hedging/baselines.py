"""Published hedging baselines: Black-Scholes delta, Leland's cost-adjusted delta, a no-trade band.

Each strategy maps simulated paths to holdings (n_paths, n_steps) at the rebalancing dates. The
volatility a strategy uses is the model's: sigma under Black-Scholes, the current instantaneous
volatility sqrt(v_t) under Heston (what a desk would read from its vol surface).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

from pretrade.hedging.env import Contract, Costs, Paths, cvar, hedged_pnl


def bs_d1(S: np.ndarray, K: float, tau: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """d1 of Black-Scholes with zero rates."""
    sd = sigma * np.sqrt(np.maximum(tau, 1e-12))
    return (np.log(S / K) + 0.5 * sd ** 2) / sd


def bs_price(S: np.ndarray | float, K: float, tau: np.ndarray | float, sigma: np.ndarray | float,
             kind: str = "call") -> np.ndarray:
    """Black-Scholes price with zero rates."""
    S, tau, sigma = (np.asarray(a, dtype=np.float64) for a in (S, tau, sigma))
    d1 = bs_d1(S, K, tau, sigma)
    d2 = d1 - sigma * np.sqrt(tau)
    call = S * ndtr(d1) - K * ndtr(d2)
    return call if kind == "call" else call - S + K


def bs_delta(S: np.ndarray, K: float, tau: np.ndarray, sigma: np.ndarray, kind: str = "call") -> np.ndarray:
    """Black-Scholes delta with zero rates (units of underlying per option)."""
    d = ndtr(bs_d1(S, K, tau, sigma))
    return d if kind == "call" else d - 1.0


def leland_sigma(sigma: np.ndarray | float, proportional: float, dt: float) -> np.ndarray:
    """Leland's (1985) adjusted volatility for a short option hedged every dt with a cost of
    `proportional` per side (round trip k = 2 * proportional):
    sigma_L^2 = sigma^2 * (1 + sqrt(2 / pi) * k / (sigma * sqrt(dt)))."""
    sigma = np.asarray(sigma, dtype=np.float64)
    le = math.sqrt(2 / math.pi) * 2 * proportional / (sigma * math.sqrt(dt))
    return sigma * np.sqrt(1 + le)


def path_vol(paths: Paths) -> np.ndarray:
    """The volatility a strategy sees at each rebalancing date: sqrt(v_t)."""
    return np.sqrt(np.maximum(paths.v[:, :-1], 1e-8))


def delta_hedge(paths: Paths, contract: Contract, costs: Costs | None = None) -> np.ndarray:
    """Black-Scholes delta at every date, at the model's current volatility."""
    tau = paths.tau(contract.maturity)[None, :]
    return bs_delta(paths.S[:, :-1], contract.strike, tau, path_vol(paths), contract.kind)


def leland_hedge(paths: Paths, contract: Contract, costs: Costs) -> np.ndarray:
    """Delta at Leland's cost-adjusted volatility (the hedger is short the option)."""
    tau = paths.tau(contract.maturity)[None, :]
    sig = leland_sigma(path_vol(paths), costs.proportional, paths.dt)
    return bs_delta(paths.S[:, :-1], contract.strike, tau, sig, contract.kind)


def band_hedge(paths: Paths, contract: Contract, width: float) -> np.ndarray:
    """No-trade band around delta: trade only when the holding leaves [delta - w, delta + w],
    and then only to the band's nearest edge."""
    delta = delta_hedge(paths, contract)
    h = np.empty_like(delta)
    prev = np.zeros(len(delta))
    for k in range(delta.shape[1]):
        prev = np.clip(prev, delta[:, k] - width, delta[:, k] + width)
        h[:, k] = prev
    return h


BAND_WIDTHS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)


def tune_band(paths: Paths, contract: Contract, costs: Costs, premium: float,
              widths: tuple[float, ...] = BAND_WIDTHS) -> float:
    """The band width (from `widths`) with the lowest CVaR 95 on these (training) paths."""
    best = min(widths, key=lambda w: cvar(-hedged_pnl(paths.S, band_hedge(paths, contract, w),
                                                      contract, costs, premium)[0]))
    return float(best)
