"""The deep-hedging agent: a no-transaction-band policy network trained through simulated paths.

Deep hedging (Buehler, Gonon, Teichmann, Wood 2019): the policy is a network, the hedged P&L of
every simulated path is a differentiable function of its outputs, and the network is trained by
gradient descent to minimise a risk measure of that P&L, here CVaR 95 of the loss. The network has
the no-transaction-band form (Imaki et al. 2021): from the state it outputs a centre (delta plus a
learned shift) and a lower and upper width; the new holding is the old one clipped into
[centre - lower, centre + upper]. Under proportional costs the optimal policy has exactly this
shape, so the network learns only where the band lies, trains in seconds on a CPU, and shrinks to
delta hedging as costs go to zero. One network serves every cost level: the cost is an input.

State (STATE, per rebalancing date): standardised moneyness log(S/K) / (vol sqrt(tau)), tau / T,
vol / 0.2, Black-Scholes delta at vol, proportional cost in units of 10 bps.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pretrade.hedging.baselines import bs_delta, path_vol
from pretrade.hedging.env import Contract, Costs, Paths, hedged_pnl
from pretrade.models.card import ModelRefused, onnx_session, read_card

log = logging.getLogger(__name__)

KIND = "hedging"
STATE: tuple[str, ...] = ("moneyness", "tau_frac", "vol", "delta", "cost_10bps")
N_STATE = len(STATE)


def state_row(spot: np.ndarray | float, tau: np.ndarray | float, vol: np.ndarray | float,
              cost: float, contract: Contract) -> np.ndarray:
    """The agent's state (n, N_STATE) float32 from spot, time to maturity (years), volatility and
    proportional cost (fraction of notional, per side)."""
    spot, tau, vol = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (spot, tau, vol))
    if np.any(spot <= 0) or np.any(vol <= 0) or np.any(tau < 0) or cost < 0:
        raise ValueError("spot and vol must be positive, tau and cost not negative")
    tau_c = np.maximum(tau, 1e-6)
    spot, tau_c, vol = np.broadcast_arrays(spot, tau_c, vol)
    m = np.log(spot / contract.strike) / (vol * np.sqrt(tau_c))
    d = bs_delta(spot, contract.strike, tau_c, vol, contract.kind)
    cols = [np.clip(m, -8, 8), tau_c / contract.maturity, vol / 0.2, d, np.full(spot.shape, cost * 1e3)]
    return np.stack(cols, axis=-1).astype(np.float32)


def path_states(paths: Paths, contract: Contract, cost: float) -> np.ndarray:
    """States (n_paths, n_steps, N_STATE) at every rebalancing date of the paths."""
    tau = np.broadcast_to(paths.tau(contract.maturity)[None, :], paths.S[:, :-1].shape)
    return state_row(paths.S[:, :-1], tau, path_vol(paths), cost, contract)


def policy_net(hidden: int = 32):
    """The band network: one step maps (state, previous holding) to the new holding."""
    import torch

    class BandPolicy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Linear(N_STATE, hidden), torch.nn.SiLU(),
                torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                torch.nn.Linear(hidden, 3))
            with torch.no_grad():  # start as a narrow band around delta
                self.body[-1].weight.mul_(0.1)
                self.body[-1].bias.copy_(torch.tensor([0.0, -3.0, -3.0]))

        def forward(self, state: torch.Tensor, hedge: torch.Tensor) -> torch.Tensor:
            out = self.body(state)
            centre = state[:, 3:4] + 0.3 * torch.tanh(out[:, 0:1])
            lo = centre - torch.nn.functional.softplus(out[:, 1:2])
            hi = centre + torch.nn.functional.softplus(out[:, 2:3])
            return torch.minimum(torch.maximum(hedge, lo), hi)

    return BandPolicy()


def rollout(net, states: Any) -> Any:
    """Holdings (n, n_steps) of the policy along paths given their states (n, n_steps, N_STATE)."""
    import torch

    h = torch.zeros(states.shape[0], 1, dtype=states.dtype)
    out = []
    for k in range(states.shape[1]):
        h = net(states[:, k], h)
        out.append(h)
    return torch.cat(out, dim=1)


@dataclass
class TrainConfig:
    """Training parameters (recorded in the model card)."""

    costs: tuple[float, ...] = (0.0, 0.0002, 0.0005, 0.001, 0.002, 0.005)  # proportional, per side
    fixed: float = 0.0
    iterations: int = 200
    batch: int = 2000          # paths per cost level per iteration
    lr: float = 3e-3
    hidden: int = 32
    level: float = 0.95


def _cvar_t(losses, level: float):
    """CVaR of a torch vector of losses: the mean of its worst (1 - level) share."""
    k = max(1, int(math.ceil(losses.shape[0] * (1 - level))))
    return losses.topk(k).values.mean()


def train_agent(paths: Paths, contract: Contract, premium: float, cfg: TrainConfig | None = None,
                seed: int = 0):
    """Train the band network to minimise the sum over cost levels of CVaR of the hedged loss."""
    import torch

    cfg = cfg or TrainConfig()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = policy_net(cfg.hidden)
    states = [torch.from_numpy(path_states(paths, contract, c)) for c in cfg.costs]
    S = torch.from_numpy(paths.S)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.iterations)
    n = paths.S.shape[0]
    t0 = time.perf_counter()
    for it in range(cfg.iterations):
        idx = torch.from_numpy(rng.choice(n, size=min(cfg.batch, n), replace=False))
        opt.zero_grad()
        loss = 0.0
        for c, st in zip(cfg.costs, states, strict=True):
            H = rollout(net, st[idx]).double()
            pnl, _ = hedged_pnl(S[idx], H, contract, Costs(c, cfg.fixed), premium,
                                smooth_fixed=0.01 if cfg.fixed else 0.0)
            loss = loss + _cvar_t(-pnl, cfg.level)
        loss.backward()
        opt.step()
        sched.step()
        if it % 100 == 0:
            log.info("iteration %d: sum of CVaR %.4f (%.0f s)", it, float(loss.detach()), time.perf_counter() - t0)
    net.eval()
    return net


def agent_hedge(net, paths: Paths, contract: Contract, costs: Costs) -> np.ndarray:
    """Holdings (n_paths, n_steps) of a trained torch policy on paths."""
    import torch

    with torch.no_grad():
        return rollout(net, torch.from_numpy(path_states(paths, contract, costs.proportional))).numpy().astype(
            np.float64)


def export_onnx(net, path: str | Path) -> None:
    """Write one policy step to ONNX: inputs `state` (n, N_STATE) and `hedge` (n, 1) float32,
    output `new_hedge` (n, 1): units of underlying per option sold."""
    import torch

    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(2, N_STATE), torch.zeros(2, 1)), str(path),
                          input_names=["state", "hedge"], output_names=["new_hedge"],
                          dynamic_axes={"state": {0: "n"}, "hedge": {0: "n"}, "new_hedge": {0: "n"}},
                          opset_version=17, dynamo=False)


# ---- serving ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptionPosition:
    """An option book line to hedge: `contracts` > 0 are sold (short), < 0 bought; the
    underlying `sym`, its lot size, and the underlying units currently held as hedge."""

    sym: str
    contracts: float
    strike: float
    maturity: float          # the option's original life (years), for the state's tau / T
    kind: str = "call"
    multiplier: float = 1.0  # underlying units per contract
    hedge_units: float = 0.0
    lot: int = 1


class HedgingAgent:
    """The served agent: the ONNX policy step, checked against its card."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        card = read_card(self.path, KIND, required=("state",))
        if list(card["state"]) != list(STATE):
            raise ModelRefused(f"model {self.path} takes state {card['state']}, this code builds {list(STATE)}")
        self.session = onnx_session(self.path)
        self.card, self.version = card, str(card["version"])

    def step(self, state: np.ndarray, hedge: np.ndarray) -> np.ndarray:
        """New holdings (n,) per option sold from states (n, N_STATE) and current holdings (n,)."""
        out = self.session.run(None, {"state": np.asarray(state, np.float32).reshape(-1, N_STATE),
                                      "hedge": np.asarray(hedge, np.float32).reshape(-1, 1)})[0]
        return out[:, 0].astype(np.float64)

    def schedule(self, position: OptionPosition, market_state: dict[str, float]) -> list[dict[str, Any]]:
        """Hedge orders that move `position`'s hedge to the agent's target now.

        market_state: spot, tau (years to expiry), vol (annualised), cost (proportional per side,
        default 0.001). Returns [] inside the no-trade band, else one order dict: sym, side
        ('buy'/'sell'), qty (a multiple of the lot), target_units, reason.
        """
        return schedule(self, position, market_state)


def schedule(agent: HedgingAgent, position: OptionPosition, market_state: dict[str, float]) -> list[dict[str, Any]]:
    """The agent's hedge orders for one position (see HedgingAgent.schedule)."""
    missing = [k for k in ("spot", "tau", "vol") if k not in market_state]
    if missing:
        raise ValueError(f"market_state lacks {', '.join(missing)}")
    units = position.contracts * position.multiplier
    if units == 0:
        return []
    contract = Contract(position.strike, position.maturity, position.kind)
    state = state_row(market_state["spot"], market_state["tau"], market_state["vol"],
                      float(market_state.get("cost", 0.001)), contract)
    # the network hedges a short option; a long one is hedged with the opposite holding
    sign = 1.0 if units > 0 else -1.0
    per_option = position.hedge_units / abs(units) * sign
    target = float(agent.step(state, np.array([per_option]))[0]) * abs(units) * sign
    lots = round((target - position.hedge_units) / position.lot)
    if lots == 0:
        return []
    return [{"sym": position.sym, "side": "buy" if lots > 0 else "sell", "qty": abs(lots) * position.lot,
             "target_units": target,
             "reason": f"hedge {position.contracts:g} {position.kind} K={position.strike:g}: "
                       f"{position.hedge_units:g} -> {target:.1f} units ({agent.version})"}]
