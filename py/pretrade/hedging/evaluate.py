"""Evaluation of the hedging agent against the baselines on held-out paths: table, plots, ONNX.

For each dynamics (Black-Scholes, Heston) the agent is trained once on training paths (every cost
level of the grid at once), the no-trade band's width is tuned per cost level on the same training
paths, and all strategies are measured on held-out paths of another seed: mean hedging cost,
mean and std of hedged P&L, CVaR 95 of the loss, turnover.

Rerun: `python -m pretrade.hedging.evaluate` (writes models/hedging_<dynamics>.onnx with cards and
docs/reports/hedging/report.md with PNG plots).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pretrade.hedging.agent import KIND, STATE, TrainConfig, agent_hedge, export_onnx, train_agent
from pretrade.hedging.baselines import band_hedge, bs_price, delta_hedge, leland_hedge, tune_band
from pretrade.hedging.env import Contract, Costs, Market, hedged_pnl, metrics, simulate_paths

log = logging.getLogger(__name__)

STRATEGIES = ("delta", "leland", "band", "agent")


def premium_for(market: Market, contract: Contract) -> float:
    """The premium received: the Black-Scholes price at the model's (starting) volatility."""
    vol = market.sigma if market.model == "bs" else float(np.sqrt(market.v0))
    return float(bs_price(market.s0, contract.strike, contract.maturity, vol, contract.kind))


def evaluate_dynamics(market: Market, contract: Contract, cfg: TrainConfig, n_steps: int = 30,
                      n_train: int = 20_000, n_test: int = 20_000, seed: int = 1) -> dict[str, Any]:
    """Train the agent and measure every strategy at every cost level of cfg.costs.

    Returns {"table": DataFrame (one row per cost level and strategy), "net": the torch policy,
    "test": held-out paths, "premium", "hedges": {(cost, strategy): holdings}}."""
    t0 = time.perf_counter()
    substeps = 1 if market.model == "bs" else 4
    train = simulate_paths(market, contract.maturity, n_steps, n_train, seed, substeps)
    test = simulate_paths(market, contract.maturity, n_steps, n_test, seed + 1000, substeps)
    premium = premium_for(market, contract)
    net = train_agent(train, contract, premium, cfg, seed=seed)
    log.info("%s: agent trained in %.0f s", market.model, time.perf_counter() - t0)
    rows, hedges = [], {}
    delta = delta_hedge(test, contract)
    for c in cfg.costs:
        costs = Costs(c, cfg.fixed)
        width = tune_band(train, contract, costs, premium)
        for name, H in (("delta", delta), ("leland", leland_hedge(test, contract, costs)),
                        ("band", band_hedge(test, contract, width)), ("agent", agent_hedge(net, test, contract, costs))):
            pnl, cost = hedged_pnl(test.S, H, contract, costs, premium)
            rows.append({"dynamics": market.model, "cost_bps": c * 1e4, "fixed": cfg.fixed, "strategy": name,
                         **metrics(pnl, cost, H), "band_width": width if name == "band" else np.nan,
                         "mean_abs_vs_delta": float(np.mean(np.abs(H - delta)))})
            hedges[(c, name)] = (H, pnl)
    return {"table": pd.DataFrame(rows), "net": net, "test": test, "premium": premium, "hedges": hedges}


def wins(table: pd.DataFrame, min_cost_bps: float = 10.0) -> pd.DataFrame:
    """Per dynamics and cost level >= min_cost_bps: the agent's CVaR 95, the best baseline's, and
    whether the agent is lower than every baseline."""
    t = table[table["cost_bps"] >= min_cost_bps - 1e-9]
    out = []
    for (dyn, c), g in t.groupby(["dynamics", "cost_bps"]):
        base = g[g["strategy"] != "agent"]
        best = base.loc[base["cvar95"].idxmin()]
        agent = float(g.loc[g["strategy"] == "agent", "cvar95"].iloc[0])
        out.append({"dynamics": dyn, "cost_bps": c, "agent_cvar95": agent, "best_baseline": best["strategy"],
                    "best_baseline_cvar95": float(best["cvar95"]), "agent_wins": agent < float(base["cvar95"].min())})
    return pd.DataFrame(out)


def plot(results: dict[str, dict[str, Any]], contract: Contract, out_dir: Path) -> list[Path]:
    """PNG plots: CVaR 95 against cost per strategy; P&L histograms at 10 bps; the agent's holding
    against delta at mid-life at 0 and 20 bps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (dyn, r) in zip(axes[0], results.items(), strict=True):
        t = r["table"]
        for s in STRATEGIES:
            g = t[t["strategy"] == s]
            ax.plot(g["cost_bps"], g["cvar95"], marker="o", label=s)
        ax.set(title=f"{dyn}: CVaR 95 of hedged loss", xlabel="proportional cost (bps per side)",
               ylabel="CVaR 95 (per option, S0 = 100)")
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "hedging_cvar_vs_cost.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (dyn, r) in zip(axes[0], results.items(), strict=True):
        c = min(r["hedges"], key=lambda k: abs(k[0] - 0.001))[0]
        for s in STRATEGIES:
            ax.hist(r["hedges"][(c, s)][1], bins=120, histtype="step", label=s, density=True)
        ax.set(title=f"{dyn}: hedged P&L at {c * 1e4:g} bps", xlabel="P&L per option", ylabel="density")
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "hedging_pnl_hist.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (dyn, r) in zip(axes[0], results.items(), strict=True):
        test = r["test"]
        k = test.n_steps // 2
        S = test.S[:2000, k]
        order = np.argsort(S)
        delta = r["hedges"][(0.0, "delta")][0][:2000, k]
        if dyn == "bs":
            ax.plot(S[order], delta[order], color="k", lw=1, label="BS delta")
        else:  # delta at each path's own volatility: a cloud, not a curve
            ax.scatter(S, delta, s=1, color="k", alpha=0.5, label="BS delta at sqrt(v_t)")
        for c in (0.0, 0.002):
            if (c, "agent") in r["hedges"]:
                ax.scatter(S, r["hedges"][(c, "agent")][0][:2000, k], s=2, alpha=0.4, label=f"agent, {c * 1e4:g} bps")
        ax.set(title=f"{dyn}: holding at mid-life", xlabel=f"spot (strike {contract.strike:g})",
               ylabel="units held per option sold")
        ax.legend(markerscale=4)
    fig.tight_layout()
    paths.append(out_dir / "hedging_policy.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, floats with 4 decimals."""
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    rows = [" | ".join(df.columns), " | ".join("---" for _ in df.columns)]
    rows += [" | ".join(cell(v) for v in r) for r in df.itertuples(index=False)]
    return "\n".join(f"| {r} |" for r in rows)


def write_report(results: dict[str, dict[str, Any]], contract: Contract, out_dir: Path, command: str) -> Path:
    """report.md: the full table, the win table and the plots."""
    table = pd.concat([r["table"] for r in results.values()], ignore_index=True)
    cols = ["dynamics", "cost_bps", "strategy", "mean_cost", "mean_pnl", "std_pnl", "cvar95", "turnover",
            "band_width", "mean_abs_vs_delta"]
    lines = ["# Hedging evaluation", "", f"Command: `{command}`", "",
             f"Short one {contract.kind}, strike {contract.strike:g}, {contract.maturity * 365:.0f} days, S0 = 100, "
             "held-out paths (another seed than training). P&L per option; CVaR 95 of the loss.", "",
             md_table(table[cols]), "", "## Agent against the best baseline", "",
             md_table(wins(table)), ""]
    lines += [f"![{p.stem}]({p.name})" for p in plot(results, contract, out_dir)]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def save_agent(result: dict[str, Any], market: Market, contract: Contract, cfg: TrainConfig,
               n_steps: int, seed: int, out_dir: Path) -> Path:
    """Export the agent to ONNX with its card (state, market, contract, training, evaluation)."""
    from pretrade.models.card import write_card

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"hedging_{market.model}.onnx"
    export_onnx(result["net"], path)
    table = result["table"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    write_card(path, {
        "kind": KIND,
        "version": f"hedging-{market.model}-1.0.0+{digest[:8]}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "state": list(STATE),
        "input": "state: pretrade.hedging.agent.state_row(spot, tau, vol, cost, contract); hedge: units held per option sold",
        "output": "new_hedge (n, 1): units of underlying to hold per option sold",
        "market": asdict(market),
        "contract": asdict(contract),
        "rebalancing_steps": n_steps,
        "training": {**asdict(cfg), "seed": seed, "risk_measure": f"CVaR {cfg.level:g} of the loss, summed over costs"},
        "evaluation": table.drop(columns=["dynamics"]).to_dict(orient="records"),
    })
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dynamics", nargs="+", default=["bs", "heston"], choices=["bs", "heston"],
                        help="price dynamics to evaluate (default both)")
    parser.add_argument("--costs-bps", type=float, nargs="+", default=[0, 2, 5, 10, 20, 50],
                        help="proportional cost levels, bps per side (the agent trains on all of them)")
    parser.add_argument("--fixed", type=float, default=0.0, help="fixed cost per trade, per option (default 0)")
    parser.add_argument("--paths", type=int, default=20_000, help="training and held-out paths each")
    parser.add_argument("--steps", type=int, default=30, help="rebalancing dates over the option's life")
    parser.add_argument("--iterations", type=int, default=200, help="agent training iterations")
    parser.add_argument("--seed", type=int, default=1, help="seed of paths and weights")
    parser.add_argument("--models", default="models", help="folder for hedging_<dynamics>.onnx and cards")
    parser.add_argument("--report", default="docs/reports/hedging", help="folder for report.md and the PNG plots")


def train_and_report(seed: int = 1, models_dir: str | Path = "models",
                     report_dir: str | Path | None = "docs/reports/hedging",
                     dynamics: tuple[str, ...] = ("bs", "heston"),
                     costs_bps: tuple[float, ...] = (0, 2, 5, 10, 20, 50),
                     fixed: float = 0.0, paths: int = 20_000, steps: int = 30, iterations: int = 200,
                     command: str = "python -m pretrade.hedging.evaluate") -> pd.DataFrame:
    """Train and evaluate the agent per dynamics, write models_dir/hedging_<dynamics>.onnx with
    cards and (unless report_dir is None) the report; returns the full table."""
    import torch

    torch.set_num_threads(1)  # the machine is shared; one thread is as fast at these sizes
    contract = Contract()
    cfg = TrainConfig(costs=tuple(c / 1e4 for c in costs_bps), fixed=fixed, iterations=iterations)
    results = {}
    for dyn in dynamics:
        market = Market(dyn)
        results[dyn] = evaluate_dynamics(market, contract, cfg, steps, paths, paths, seed)
        log.info("wrote %s", save_agent(results[dyn], market, contract, cfg, steps, seed, Path(models_dir)))
    if report_dir is not None:
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        log.info("wrote %s", write_report(results, contract, out, command))
    return pd.concat([r["table"] for r in results.values()], ignore_index=True)


def run(args: argparse.Namespace) -> int:
    import sys

    command = ("python -m pretrade.hedging.evaluate " + " ".join(sys.argv[1:])).strip()
    table = train_and_report(args.seed, args.models, args.report, tuple(args.dynamics), tuple(args.costs_bps),
                             args.fixed, args.paths, args.steps, args.iterations, command)
    print(table[["dynamics", "cost_bps", "strategy", "mean_cost", "std_pnl", "cvar95", "turnover"]].to_string(
        index=False, float_format=lambda x: f"{x:.4f}"))
    print(wins(table).to_string(index=False))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m pretrade.hedging.evaluate", description=__doc__.splitlines()[0])
    add_arguments(ap)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raise SystemExit(run(ap.parse_args()))
