"""The hedging environment, the baselines, the deep-hedging agent, its ONNX export and schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pretrade.hedging.agent import (
    N_STATE,
    HedgingAgent,
    OptionPosition,
    TrainConfig,
    agent_hedge,
    export_onnx,
    state_row,
    train_agent,
)
from pretrade.hedging.baselines import (
    band_hedge,
    bs_delta,
    bs_price,
    delta_hedge,
    leland_hedge,
    leland_sigma,
    tune_band,
)
from pretrade.hedging.env import Contract, Costs, Market, cvar, hedged_pnl, metrics, simulate_paths
from pretrade.models.card import ModelRefused, write_card

C = Contract()
BS = Market("bs")
PREMIUM = float(bs_price(BS.s0, C.strike, C.maturity, BS.sigma))


def test_zero_cost_delta_hedging_replicates_the_black_scholes_price():
    stds = {}
    for n in (25, 400):
        p = simulate_paths(BS, C.maturity, n, 3000, seed=3)
        pnl, cost = hedged_pnl(p.S, delta_hedge(p, C), C, Costs(), PREMIUM)
        assert float(cost.sum()) == 0.0
        stds[n] = pnl.std()
        assert abs(pnl.mean()) < 4 * stds[n] / math.sqrt(len(pnl)) + 0.01  # the premium is the fair price
    assert stds[400] < 0.35 * stds[25]          # error ~ 1 / sqrt(rebalances): 16x -> about 1/4
    assert stds[400] < 0.06 * PREMIUM


def test_paths_are_deterministic_by_seed_and_heston_is_a_martingale():
    h = Market("heston")
    a = simulate_paths(h, C.maturity, 20, 20000, seed=5, substeps=2)
    b = simulate_paths(h, C.maturity, 20, 20000, seed=5, substeps=2)
    c = simulate_paths(h, C.maturity, 20, 20000, seed=6, substeps=2)
    np.testing.assert_array_equal(a.S, b.S)
    assert not np.array_equal(a.S, c.S)
    assert (a.v >= 0).all() and a.v.std() > 0
    assert a.S[:, -1].mean() == pytest.approx(h.s0, rel=0.005)
    with pytest.raises(ValueError):
        Market("garch")


def test_costs_numpy_and_torch_agree_and_fixed_costs_count_trades():
    import torch

    p = simulate_paths(BS, C.maturity, 10, 50, seed=1)
    H = delta_hedge(p, C)
    H[:, 3] = H[:, 2]  # no trade at the 4th date
    costs = Costs(0.001, 0.05)
    pnl, cost = hedged_pnl(p.S, H, C, costs, PREMIUM)
    pnl_t, cost_t = hedged_pnl(torch.from_numpy(p.S), torch.from_numpy(H), C, costs, PREMIUM)
    np.testing.assert_allclose(pnl_t.numpy(), pnl, rtol=1e-12)
    prop = 0.001 * (np.abs(H[:, 0]) * p.S[:, 0] + (np.abs(np.diff(H, axis=1)) * p.S[:, 1:-1]).sum(1))
    np.testing.assert_allclose(cost, prop + 0.05 * 9)  # 10 dates, one without a trade
    m = metrics(pnl, cost, H)
    assert m["cvar95"] == pytest.approx(cvar(-pnl)) and m["cvar95"] >= -m["mean_pnl"]


def test_leland_volatility_formula():
    sigma, k, dt = 0.2, 0.001, 1 / 365
    le = math.sqrt(2 / math.pi) * (2 * k) / (sigma * math.sqrt(dt))
    assert float(leland_sigma(sigma, k, dt)) == pytest.approx(sigma * math.sqrt(1 + le))
    assert float(leland_sigma(sigma, 0.0, dt)) == pytest.approx(sigma)
    p = simulate_paths(BS, C.maturity, 30, 200, seed=2)
    np.testing.assert_allclose(leland_hedge(p, C, Costs(0.0)), delta_hedge(p, C))
    # a higher vol flattens delta: more stock held out of the money, less in the money
    assert bs_delta(np.array([90.0]), 100, np.array([0.05]), np.array([0.3]))[0] > \
        bs_delta(np.array([90.0]), 100, np.array([0.05]), np.array([0.2]))[0]


def test_band_reduces_trading_and_zero_width_is_delta():
    p = simulate_paths(BS, C.maturity, 30, 2000, seed=4)
    delta = delta_hedge(p, C)
    np.testing.assert_allclose(band_hedge(p, C, 0.0), delta)
    band = band_hedge(p, C, 0.05)
    assert np.abs(band - delta).max() <= 0.05 + 1e-12
    zero = Costs()
    assert metrics(*hedged_pnl(p.S, band, C, zero, PREMIUM), band)["turnover"] < \
        0.7 * metrics(*hedged_pnl(p.S, delta, C, zero, PREMIUM), delta)["turnover"]
    assert tune_band(p, C, Costs(0.002), PREMIUM) > 0  # costly trading: a band pays
    assert tune_band(p, C, zero, PREMIUM) <= 0.01


@pytest.fixture(scope="module")
def trained():
    """A small agent trained on 10 and 20 bps (and 0) on BS paths; held-out paths of another seed."""
    import torch

    torch.set_num_threads(1)
    train = simulate_paths(BS, C.maturity, 20, 4000, seed=11)
    cfg = TrainConfig(costs=(0.0, 0.001, 0.002), iterations=100, batch=800)
    net = train_agent(train, C, PREMIUM, cfg, seed=0)
    return net, train, simulate_paths(BS, C.maturity, 20, 8000, seed=12)


def test_agent_beats_every_baseline_at_10_bps_and_more(trained):
    net, train, test = trained
    for c in (0.001, 0.002):
        costs = Costs(c)
        w = tune_band(train, C, costs, PREMIUM)
        base = {name: cvar(-hedged_pnl(test.S, H, C, costs, PREMIUM)[0])
                for name, H in (("delta", delta_hedge(test, C)), ("leland", leland_hedge(test, C, costs)),
                                ("band", band_hedge(test, C, w)))}
        agent = cvar(-hedged_pnl(test.S, agent_hedge(net, test, C, costs), C, costs, PREMIUM)[0])
        assert agent < min(base.values()), (c, agent, base)


def test_agent_recovers_delta_hedging_without_costs(trained):
    net, _, test = trained
    delta = delta_hedge(test, C)
    gap = {c: np.mean(np.abs(agent_hedge(net, test, C, Costs(c)) - delta)) for c in (0.0, 0.001, 0.002)}
    assert gap[0.0] < gap[0.001] < gap[0.002]  # the band narrows towards delta as costs fall
    assert gap[0.0] < 0.05
    H = agent_hedge(net, test, C, Costs(0.0))
    agent = cvar(-hedged_pnl(test.S, H, C, Costs(), PREMIUM)[0])
    assert agent <= 1.02 * cvar(-hedged_pnl(test.S, delta, C, Costs(), PREMIUM)[0])


def test_training_is_deterministic_by_seed():
    import torch

    torch.set_num_threads(1)
    p = simulate_paths(BS, C.maturity, 10, 500, seed=1)
    cfg = TrainConfig(costs=(0.001,), iterations=5, batch=200)
    a = agent_hedge(train_agent(p, C, PREMIUM, cfg, seed=3), p, C, Costs(0.001))
    b = agent_hedge(train_agent(p, C, PREMIUM, cfg, seed=3), p, C, Costs(0.001))
    np.testing.assert_array_equal(a, b)


def _served(net, tmp_path):
    path = tmp_path / "hedging_bs.onnx"
    export_onnx(net, path)
    write_card(path, {"kind": "hedging", "version": "test", "state": ["moneyness", "tau_frac", "vol", "delta",
                                                                       "cost_10bps"]})
    return path


def test_onnx_agrees_with_torch(trained, tmp_path):
    import torch

    net = trained[0]
    agent = HedgingAgent(_served(net, tmp_path))
    rng = np.random.default_rng(0)
    state = state_row(rng.uniform(80, 120, 500), rng.uniform(0, C.maturity, 500), rng.uniform(0.1, 0.4, 500),
                      0.001, C)
    hedge = rng.uniform(0, 1, 500).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(state), torch.from_numpy(hedge[:, None])).numpy()[:, 0]
    np.testing.assert_allclose(agent.step(state, hedge), ref, atol=1e-5)
    assert state.shape == (500, N_STATE)


def test_schedule_turns_the_policy_into_hedge_orders(trained, tmp_path):
    agent = HedgingAgent(_served(trained[0], tmp_path))
    mkt = {"spot": 100.0, "tau": C.maturity / 2, "vol": 0.2, "cost": 0.001}
    pos = OptionPosition("ACME", contracts=10, strike=100, maturity=C.maturity, multiplier=100, lot=100)
    orders = agent.schedule(pos, mkt)
    assert len(orders) == 1 and orders[0]["side"] == "buy" and orders[0]["qty"] % 100 == 0
    target = orders[0]["target_units"]
    assert 300 < target < 700  # about delta 0.5 of 1,000 underlying units
    held = OptionPosition("ACME", 10, 100, C.maturity, multiplier=100, hedge_units=round(target, -2), lot=100)
    assert agent.schedule(held, mkt) == []  # inside the band: no order
    long = OptionPosition("ACME", -10, 100, C.maturity, multiplier=100, lot=100)
    assert agent.schedule(long, mkt)[0]["side"] == "sell"
    with pytest.raises(ValueError, match="spot"):
        agent.schedule(pos, {"tau": 0.1, "vol": 0.2})


def test_agent_card_is_checked(trained, tmp_path):
    path = _served(trained[0], tmp_path)
    write_card(path, {"kind": "hedging", "version": "x", "state": ["spot"]})
    with pytest.raises(ModelRefused, match="state"):
        HedgingAgent(path)
    write_card(path, {"kind": "impact", "version": "x", "state": []})
    with pytest.raises(ModelRefused):
        HedgingAgent(path)


def test_a_hedge_order_is_checked_by_the_gateway_like_any_other(trained, tmp_path):
    """The gateway's decision path (Gate.check, without the FIX transport): the agent's hedge
    order passes under loose limits and is refused, naming the rule, when it exceeds max_qty."""
    from pretrade.gateway.gate import Gate
    from pretrade.gateway.limits_table import LimitsTable
    from pretrade.risk.checks import Order
    from pretrade.risk.limits import Limit, load_config

    agent = HedgingAgent(_served(trained[0], tmp_path))
    pos = OptionPosition("ACME", contracts=10, strike=100, maturity=C.maturity, multiplier=100, lot=100)
    (o,) = agent.schedule(pos, {"spot": 100.0, "tau": C.maturity / 2, "vol": 0.2, "cost": 0.001})
    order = Order(o["sym"], o["side"], o["qty"], 100.01, "hedger", "HEDGE1")

    def gate_with(max_qty: int) -> Gate:
        table = LimitsTable(load_config(), ttl_s=60.0, fallback_scale=0.5, clock=lambda: 100.0)
        table.bids["ACME"], table.asks["ACME"] = 99.99, 100.01
        table.apply_limits([Limit(0, "ACME", "", 1, "NORMAL", "ACTIVE", "", max_qty, 1e9, 500.0, 1500.0,
                                  1_000_000, 1000, 0.1, "", "vae-test")])
        return Gate(table, load_config().checks)

    assert gate_with(10_000).check(order, "hedge").decision.ok
    v = gate_with(o["qty"] - 100).check(order, "hedge")
    assert not v.decision.ok and v.decision.code == "MAX_ORDER_QTY"
