"""The hedging environment: a short option position hedged in its underlying at discrete dates.

Dynamics are Black-Scholes (geometric Brownian motion) or Heston (stochastic variance, full
truncation Euler on the log-price); rates are zero. The hedger has sold one option for a premium,
holds h_k units of the underlying over [t_k, t_{k+1}) and pays, on every change of holding,
a proportional cost (a fraction of the notional traded) plus a fixed cost per trade. The hedge is
opened at t_0 (a trade from 0) and not unwound at maturity (cash settlement against the hedge).

    P&L = premium - payoff(S_T) + sum_k h_k (S_{k+1} - S_k) - costs

`hedged_pnl` is written with operations that numpy arrays and torch tensors share, so the
baselines are evaluated and the agent is trained (by gradient through the paths) on one
implementation of the P&L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Market:
    """Price dynamics of the underlying. model 'bs': constant sigma; 'heston': variance v with
    mean reversion kappa to theta, vol of variance xi, correlation rho, start v0."""

    model: str = "bs"
    s0: float = 100.0
    mu: float = 0.0
    sigma: float = 0.2
    kappa: float = 2.0
    theta: float = 0.04
    xi: float = 0.5
    rho: float = -0.7
    v0: float = 0.04

    def __post_init__(self) -> None:
        if self.model not in ("bs", "heston"):
            raise ValueError(f"market model must be 'bs' or 'heston', not {self.model!r}")
        if self.s0 <= 0 or self.sigma <= 0 or self.v0 <= 0 or self.theta <= 0 or not -1 <= self.rho <= 1:
            raise ValueError("s0, sigma, v0, theta must be positive and rho in [-1, 1]")


@dataclass(frozen=True)
class Contract:
    """A European option the hedger is short: call or put, strike, maturity in years."""

    strike: float = 100.0
    maturity: float = 30 / 365
    kind: str = "call"

    def __post_init__(self) -> None:
        if self.kind not in ("call", "put") or self.strike <= 0 or self.maturity <= 0:
            raise ValueError(f"bad contract {self}: kind call/put, positive strike and maturity")

    def payoff(self, s: Any) -> Any:
        """Payoff at maturity (works on numpy arrays and torch tensors)."""
        x = s - self.strike if self.kind == "call" else self.strike - s
        return (x + abs(x)) / 2


@dataclass(frozen=True)
class Costs:
    """Transaction costs: `proportional` (fraction of notional traded: 0.001 = 10 bps) and
    `fixed` (currency per trade, per unit of option position)."""

    proportional: float = 0.0
    fixed: float = 0.0

    def __post_init__(self) -> None:
        if self.proportional < 0 or self.fixed < 0:
            raise ValueError("costs cannot be negative")


@dataclass
class Paths:
    """Simulated paths on the rebalancing grid: spot S and variance v, (n_paths, n_steps + 1)."""

    S: np.ndarray
    v: np.ndarray
    dt: float

    @property
    def n_steps(self) -> int:
        return self.S.shape[1] - 1

    def tau(self, maturity: float) -> np.ndarray:
        """Time to maturity (years) at each rebalancing date t_0..t_{n-1}."""
        return maturity - self.dt * np.arange(self.n_steps)


def simulate_paths(market: Market, maturity: float, n_steps: int, n_paths: int, seed: int,
                   substeps: int = 1) -> Paths:
    """Seeded paths of the underlying at n_steps + 1 dates over [0, maturity]; Heston is
    integrated on `substeps` finer steps per date."""
    if n_steps < 1 or n_paths < 1 or substeps < 1:
        raise ValueError("n_steps, n_paths and substeps must be positive")
    rng = np.random.default_rng(seed)
    dt = maturity / n_steps
    if market.model == "bs":
        z = rng.standard_normal((n_paths, n_steps))
        inc = (market.mu - 0.5 * market.sigma ** 2) * dt + market.sigma * math.sqrt(dt) * z
        logs = np.concatenate([np.zeros((n_paths, 1)), np.cumsum(inc, axis=1)], axis=1)
        return Paths(market.s0 * np.exp(logs), np.full((n_paths, n_steps + 1), market.sigma ** 2), dt)
    h = dt / substeps
    x = np.zeros(n_paths)
    v = np.full(n_paths, market.v0)
    S = np.empty((n_paths, n_steps + 1))
    V = np.empty((n_paths, n_steps + 1))
    S[:, 0], V[:, 0] = market.s0, market.v0
    for k in range(n_steps):
        for _ in range(substeps):
            z1 = rng.standard_normal(n_paths)
            z2 = market.rho * z1 + math.sqrt(1 - market.rho ** 2) * rng.standard_normal(n_paths)
            vp = np.maximum(v, 0.0)
            x = x + (market.mu - 0.5 * vp) * h + np.sqrt(vp * h) * z1
            v = v + market.kappa * (market.theta - vp) * h + market.xi * np.sqrt(vp * h) * z2
        S[:, k + 1] = market.s0 * np.exp(x)
        V[:, k + 1] = np.maximum(v, 0.0)
    return Paths(S, V, dt)


def hedged_pnl(S: Any, hedges: Any, contract: Contract, costs: Costs, premium: float,
               smooth_fixed: float = 0.0) -> tuple[Any, Any]:
    """(P&L, costs paid) per path of a short option hedged with `hedges` (n_paths, n_steps):
    units held after rebalancing at each date t_0..t_{n-1}. numpy or torch in, the same out.
    `smooth_fixed` > 0 replaces the fixed cost's trade indicator by tanh(|trade| / smooth_fixed)
    so that it has a gradient (training only)."""
    trades_first = abs(hedges[:, 0])
    trades_rest = abs(hedges[:, 1:] - hedges[:, :-1])
    S_now = S[:, :-1]
    cost = costs.proportional * (trades_first * S_now[:, 0] + (trades_rest * S_now[:, 1:]).sum(1))
    if costs.fixed:
        if smooth_fixed > 0:
            n_trades = ((trades_first / smooth_fixed).tanh() + (trades_rest / smooth_fixed).tanh().sum(1))
        else:
            # (x > 0) + 0 * x: the indicator in x's float type (numpy and torch promote alike)
            n_trades = (trades_first > 1e-12) + 0 * trades_first + ((trades_rest > 1e-12) + 0 * trades_rest).sum(1)
        cost = cost + costs.fixed * n_trades
    gains = (hedges * (S[:, 1:] - S[:, :-1])).sum(1)
    return premium - contract.payoff(S[:, -1]) + gains - cost, cost


def cvar(losses: np.ndarray, level: float = 0.95) -> float:
    """Conditional value at risk: the mean of the worst (1 - level) share of losses."""
    losses = np.sort(np.asarray(losses, dtype=np.float64))
    k = max(1, int(math.ceil(len(losses) * (1 - level))))
    return float(losses[-k:].mean())


def metrics(pnl: np.ndarray, cost: np.ndarray, hedges: np.ndarray) -> dict[str, float]:
    """Mean hedging cost, mean and std of hedged P&L, CVaR 95 of the loss (-P&L), turnover."""
    turnover = np.abs(hedges[:, 0]) + np.abs(np.diff(hedges, axis=1)).sum(axis=1)
    return {"mean_cost": float(np.mean(cost)), "mean_pnl": float(np.mean(pnl)),
            "std_pnl": float(np.std(pnl)), "cvar95": cvar(-pnl, 0.95),
            "turnover": float(np.mean(turnover))}
