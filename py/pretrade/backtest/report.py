"""The walk-forward report: Markdown with PNG plots (PR and ROC curves, reliability, per-kind recall)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pretrade.backtest.fatfinger import WalkForwardResult
from pretrade.backtest.metrics import classification_report
from pretrade.models.fatfinger import PRICE_KINDS, TARGET_FPR, OrderSet, reliability_table
from pretrade.models.order_features import FEATURES

WARM_ORDERS = 5  # a trader's habit in an instrument counts as warmed up after this many orders


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _num(x: float, fmt: str = ".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _plots(res: WalkForwardResult, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    d = res.data.take(res.test_idx)
    y = d.y.astype(bool)
    names = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, s in (("model", res.p_model), ("static limits", res.s_static)):
        pr, rc, _ = precision_recall_curve(y, s)
        axes[0].plot(rc, pr, label=label)
        fpr, tpr, _ = roc_curve(y, s)
        axes[1].plot(fpr, tpr, label=label)
    axes[0].set(xlabel="recall", ylabel="precision", title="Precision-recall (out of fold)")
    axes[1].set(xlabel="false-positive rate (log)", ylabel="recall", title="ROC (out of fold)", xscale="log",
                xlim=(1e-5, 1))
    for ax in axes:
        ax.legend(loc="lower left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fatfinger_pr_roc.png", dpi=90)
    plt.close(fig)
    names.append("fatfinger_pr_roc.png")

    rel = [r for r in reliability_table(res.p_model, y) if r["orders"]]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    ax.plot([r["mean_predicted"] for r in rel], [r["observed_rate"] for r in rel], "o-", label="model")
    ax.set(xlabel="mean predicted probability", ylabel="observed error rate", title="Reliability")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fatfinger_reliability.png", dpi=90)
    plt.close(fig)
    names.append("fatfinger_reliability.png")

    m, b = res.report("model"), res.report("static")
    kinds = list(m["recall_by_kind"])
    x = np.arange(len(kinds))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [m["recall_by_kind"][k]["recall"] for k in kinds], 0.4, label="model")
    ax.bar(x + 0.2, [b["recall_by_kind"][k]["recall"] for k in kinds], 0.4, label="static limits")
    ax.set_xticks(x, kinds, rotation=20)
    ax.set(ylabel="recall", title="Recall per error kind (out of fold)", ylim=(0, 1.05))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fatfinger_recall_by_kind.png", dpi=90)
    plt.close(fig)
    names.append("fatfinger_recall_by_kind.png")
    return names


def _row(name: str, r: dict[str, Any]) -> str:
    return (f"| {name} | {_pct(r['recall_gross'])} ({r['gross']}) | {_pct(r['recall_subtle'])} ({r['subtle']}) "
            f"| {_pct(r['recall'])} | {_pct(r['fpr'])} ({r['valid_flagged']} of {r['valid']}) "
            f"| {_num(r['false_alarms_per_day'], '.1f')} | {_pct(r['precision'])} | {_num(r['pr_auc'])} |")


def size_oracle_bound(d: OrderSet, fpr: float = 0.001) -> dict[str, Any]:
    """Recall on gross-by-intent errors of a detector that flags at most `fpr` of valid orders by
    size against the trader's TRUE typical size (ground truth, which no model has) and catches every
    price more than 5% off: an extra zero on a small order that lands inside the valid sizes is
    invisible to it. Rows without a known typical size are left out."""
    known = np.isfinite(d.typical) & (d.typical > 0)
    ratio = np.where(known, d.qty / np.where(known, d.typical, 1.0), np.nan)
    valid = np.sort(ratio[known & (d.y == 0)])
    if not len(valid):
        return {"errors": 0, "caught": 0, "recall": math.nan, "ratio_cut": math.nan}
    cut = valid[min(len(valid) - 1, int(math.ceil((1 - fpr) * len(valid))))]
    intent = d.gross_intent & known
    by_price = intent & np.isin(d.kind, PRICE_KINDS)
    caught = by_price | (intent & (ratio > cut))
    n = int(intent.sum())
    return {"errors": n, "caught": int(caught.sum()), "recall": caught.sum() / n if n else math.nan,
            "ratio_cut": float(cut)}


def _intent_section(res: WalkForwardResult, d: OrderSet) -> list[str]:
    """Recall on gross errors by intent (10x what the trader meant), beside the size oracle's bound."""
    if not d.gross_intent.any():
        return []
    r = classification_report(d.y.astype(bool), res.p_model, res.flag_model, d.kind, d.gross_intent, d.time)
    b = size_oracle_bound(d)
    return ["", "## Gross by intent: 10x what the trader meant", "",
            "The table above measures an error as gross by what a risk officer can see: the order is 10x the "
            "trader's typical size in the instrument or more (the simulator's ground truth of the trader's "
            "habit that day), or its price is more than 5% from the mid. Read as 10x what the trader MEANT, "
            "every extra zero is gross, including one on an order a third of the trader's usual size, "
            "which then looks like the trader's largest valid orders. Size cannot tell most of those apart "
            "from valid orders: the bound below is what a detector would reach that KNEW each trader's true "
            "typical size (no model does: it must estimate the habit from the trader's own orders) and "
            "used the whole 0.1% budget of valid orders flagged (the model uses about half of it).", "",
            "| measure | gross-by-intent errors | recall |", "|---|---|---|",
            f"| model (walk-forward), as in the table above | {r['gross']} | {_pct(r['recall_gross'])} |",
            f"| bound: a detector knowing each trader's true typical size, at most 0.1% of valid orders "
            f"flagged (size > {b['ratio_cut']:.2f}x typical), every price > 5% off caught | {b['errors']} "
            f"| {_pct(b['recall'])} |"]


def write_report(res: WalkForwardResult, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write fatfinger.md and its PNGs into out_dir; returns the Markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs = _plots(res, out)
    m, b = res.report("model"), res.report("static")
    lines = [
        "# Fat-finger model: walk-forward backtest",
        "",
        f"Command: `{meta.get('command', '')}`. Days (simulation seeds, never used to train the shipped model): "
        f"{meta.get('seeds')}, {meta.get('duration')} s each, scenario `fat-finger` with {meta.get('sim_params')}. "
        + (f"Before them, history days every fold trains on and none is tested on: seeds {meta['history_seeds']} "
           f"with {meta['history_params']['train']} and {meta['cal_seeds']} with {meta['history_params']['cal']} "
           "(the shipped model's training and calibration days). "
           if meta.get("history_seeds") or meta.get("cal_seeds") else "")
        + "One desk (the scenario's firm seed) trades every day, and its history carries from day to day. "
        f"{len(res.folds)} expanding-window folds, embargo {meta.get('embargo_s')} s; each fold retrains, "
        f"calibrates (Platt) and sets its threshold (at most {TARGET_FPR:.2%} of valid orders flagged) on "
        "out-of-fold margins of its training days, and tunes the static limits on the same training rows.",
        "",
        "The static limits as tuned block far more valid orders than the model; the third row scales "
        "them (one factor on both limits) until they block no more valid orders than the model did, "
        "for a like-for-like recall. The layered row blocks when either the model or the scaled static "
        "limits would (the gateway runs both).",
        "",
        "Targets: recall >= 99% on gross errors (10x the trader's typical size and more, price > 5% off; "
        "\"Gross by intent\" below reads 10x as 10x what the trader meant), >= 90% on subtle ones, "
        "at most 0.1% of valid orders flagged, beating static limits on both.",
        "",
        "## Out of fold, all test windows",
        "",
        "| detector | recall gross (n) | recall subtle (n) | recall all | valid flagged | false alarms / day | precision | PR-AUC |",
        "|---|---|---|---|---|---|---|---|",
        _row("model (walk-forward)", m),
        _row("static limits", b),
        _row("static limits, scaled to the model's valid-flagged count", res.report("static_matched")),
        _row("layered: model or scaled static limits (as in the gateway)", res.report("layered")),
    ]
    if res.served is not None:
        lines.append(_row(f"shipped model {res.served['version']} (all test windows)", res.served))
    lines += ["", "## Recall per error kind", "", "| kind | errors | model | static limits |", "|---|---|---|---|"]
    for k, v in m["recall_by_kind"].items():
        lines.append(f"| {k} | {v['errors']} | {_pct(v['recall'])} | {_pct(b['recall_by_kind'][k]['recall'])} |")
    d = res.data.take(res.test_idx)
    warm = d.X[:, FEATURES.index("trader_orders")] >= np.log1p(WARM_ORDERS)
    lines += ["", "## Recall by the trader's history in the instrument", "",
              f"An error on one of a trader's first {WARM_ORDERS} orders in an instrument has little habit to be "
              "measured against: a trader new to the desk, or trying an instrument they never traded before "
              "(the desk's history carries over from earlier days, as the gateway's does).", "",
              "| trader's earlier orders in the instrument | gross recall (n) | subtle recall (n) | valid flagged |",
              "|---|---|---|---|"]
    for name, sel in ((f">= {WARM_ORDERS}", warm), (f"< {WARM_ORDERS} (cold start)", ~warm)):
        r = classification_report(d.y[sel].astype(bool), res.p_model[sel], res.flag_model[sel], d.kind[sel],
                                  d.gross[sel], d.time[sel])
        lines.append(f"| {name} | {_pct(r['recall_gross'])} ({r['gross']}) | {_pct(r['recall_subtle'])} "
                     f"({r['subtle']}) | {_pct(r['fpr'])} ({r['valid_flagged']} of {r['valid']}) |")
    lines += _intent_section(res, d)
    lines += ["", "## Per fold", "",
              "| fold | train orders | test orders | train end | test start | threshold | model gross / subtle / valid flagged | static gross / subtle / valid flagged |",
              "|---|---|---|---|---|---|---|---|"]
    for f in res.folds:
        fm, fb = f["model"], f["static"]
        lines.append(f"| {f['fold']} | {f['train_orders']} | {f['test_orders']} | {f['train_end']} | {f['test_start']} "
                     f"| {f['threshold']:.4f} | {_pct(fm['recall_gross'])} / {_pct(fm['recall_subtle'])} / {_pct(fm['fpr'])} "
                     f"| {_pct(fb['recall_gross'])} / {_pct(fb['recall_subtle'])} / {_pct(fb['fpr'])} |")
    lines += ["", "## Reliability (model, out of fold)", "", "| bin | orders | mean predicted | observed |",
              "|---|---|---|---|"]
    d = res.data.take(res.test_idx)
    for r in reliability_table(res.p_model, d.y):
        lines.append(f"| {r['bin']} | {r['orders']} | {_num(r['mean_predicted'])} | {_num(r['observed_rate'])} |")
    missed = ~res.flag_model & d.y.astype(bool)
    lines += ["", f"## Errors the model missed ({int(missed.sum())})", "",
              "| time | sym | kind | gross | probability |", "|---|---|---|---|---|"]
    for k in np.nonzero(missed)[0][:40]:
        lines.append(f"| {np.datetime64(int(d.time[k]), 'ns')} | {d.sym[k]} | {d.kind[k]} | {bool(d.gross[k])} "
                     f"| {res.p_model[k]:.4f} |")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in pngs] + [""]
    path = out / "fatfinger.md"
    path.write_text("\n".join(lines))
    return path
