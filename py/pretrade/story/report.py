"""The flash-crash story's facts: JSON (documented in docs/operations.md), the printed timeline
and comparison, and an HTML report with PNG plots. Functions take the runs' data and return data
or write files; nothing here talks to a process."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from pretrade.story.runner import STORY_ONSET, RunResult, StoryConfig

FIELDS = {"maxQty": "max_order_qty", "maxNotional": "max_notional", "bandBps": "price_band_bps",
          "passiveBandBps": "passive_band_bps", "maxPosition": "max_position", "maxRate": "max_rate",
          "state": "state"}
TIMELINE_COLS = ["time", "rv_1m", "spread_bps", "imbalance_depth", "trade_to_order", "score", "tier"]


def iso(t: Any) -> str | None:
    """A timestamp as ISO 8601 with nanoseconds (None for a missing one)."""
    if t is None or pd.isna(t):
        return None
    t = pd.Timestamp(t)
    return f"{t.strftime('%Y-%m-%dT%H:%M:%S')}.{t.value % 1_000_000_000:09d}"


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def mids(run: RunResult, sym: str) -> pd.Series:
    """The run's mid price by time (quotes with both sides)."""
    q = run.tables.get("quote", pd.DataFrame())
    if not len(q):
        return pd.Series(dtype=float)
    q = q[(q["sym"] == sym) & q["bid"].notna() & q["ask"].notna()]
    return pd.Series(((q["bid"] + q["ask"]) / 2).to_numpy(), index=pd.DatetimeIndex(q["time"])).sort_index()


def bottom(run: RunResult, cfg: StoryConfig) -> tuple[pd.Timestamp | None, float]:
    """When and where the mid was lowest from the onset to the end of the run."""
    m = mids(run, cfg.sym)
    m = m[m.index >= STORY_ONSET]
    if not len(m):
        return None, math.nan
    return m.idxmin(), float(m.min())


def limit_changes(run: RunResult, sym: str) -> list[dict]:
    """Every change of a limit the engine published for `sym`, per strategy row, in seq order."""
    lim = run.tables.get("limits", pd.DataFrame())
    if not len(lim):
        return []
    lim = lim[lim["sym"] == sym].sort_values("seq")
    out, prev = [], {}
    for r in lim.itertuples(index=False):
        key = r.strategy
        old = prev.get(key)
        if old is not None:
            for col, name in FIELDS.items():
                a, b = getattr(old, col), getattr(r, col)
                if a != b:
                    out.append({"time": iso(r.time), "sym": sym, "strategy": key or "*", "field": name,
                                "old": _num(a), "new": _num(b), "tier": r.tier, "seq": int(r.seq),
                                "reason": _text(r.reason)})
        prev[key] = r
    return out


def _num(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v.item() if hasattr(v, "item") else v


def run_facts(run: RunResult, cfg: StoryConfig) -> dict:
    """One run's facts for the JSON: P&L, exposure, limit changes, rejections, counts."""
    pnl = run.ledger.pnl(run.mark)
    bt, bp = bottom(run, cfg)
    binding = run.mode == "enforce"
    why = {r["clordid"]: r for r in run.rejected}
    chase = [{"clordid": cl, "time": iso(o["time"]), "qty": o["qty"],
              "outcome": "rejected" if cl in why else "accepted", "filled": run.filled.get(cl, 0),
              "text": why[cl]["text"] if cl in why else ""}
             for cl, o in run.sent.items() if cl.startswith("CHASE")]
    return {
        "limits": "dynamic (the risk engine's limits bind)" if binding
                  else "static (config/limits.toml binds; the engine's limits are only recorded, shadow mode)",
        "pnl": round(sum(pnl.values()), 2),
        "pnl_by_strategy": {k: round(v, 2) for k, v in sorted(pnl.items())},
        "mark_price": run.mark,
        "position": dict(sorted(run.ledger.position.items())),
        "peak_exposure": round(run.ledger.peak_exposure, 2),
        "peak_position": run.ledger.peak_position,
        "limit_changes": limit_changes(run, cfg.sym) if binding else [],
        "rejected": [{"time": iso(r["time"]), "clordid": r["clordid"], "side": r["side"], "qty": r["qty"],
                      "rule": r["rule"], "text": r["text"], "strategy": r["strategy"]} for r in run.rejected],
        "accepted": run.acked,
        "orders_sent": len(run.sent),
        "chase_orders": chase,
        "blocked_valid": len(run.rejected),
        "price_bottom_time": iso(bt),
        "price_bottom": bp,
        "wall_seconds": round(run.wall_seconds, 1),
    }


def facts(cfg: StoryConfig, runs: dict[str, RunResult]) -> dict:
    """The story's JSON: seed, sym, the dynamic market's bottom, and both runs."""
    dyn = run_facts(runs["dynamic"], cfg)
    cuts = [c for c in dyn["limit_changes"] if c["field"] == "max_order_qty" and c["new"] < c["old"]]
    return {
        "seed": cfg.seed, "sym": cfg.sym, "story_onset": iso(STORY_ONSET),
        "price_bottom_time": dyn["price_bottom_time"],
        "first_cut_time": cuts[0]["time"] if cuts else None,
        "market": {"severity": cfg.severity, "fall_seconds": cfg.fall, "recovery": cfg.recovery,
                   "recovery_seconds": cfg.recovery_time, "speed": cfg.speed},
        "runs": {"static": run_facts(runs["static"], cfg), "dynamic": dyn},
    }


def timeline(run: RunResult, cfg: StoryConfig, first_cut: str | None) -> pd.DataFrame:
    """The engine's view as the story tells it: one row a second from 5 s before the onset to the
    bottom (30 s after the onset at most), and every 100 ms in the half second before the first cut."""
    f, s = run.tables.get("features", pd.DataFrame()), run.tables.get("riskScore", pd.DataFrame())
    if not len(f) or not len(s):
        return pd.DataFrame(columns=TIMELINE_COLS)
    f = f[f["sym"] == cfg.sym].drop_duplicates("time").set_index("time")
    s = s[s["sym"] == cfg.sym].drop_duplicates("time").set_index("time")
    both = f.join(s[["score", "tier"]], how="inner").sort_index()
    lo = STORY_ONSET - pd.Timedelta(seconds=5)
    bt, _ = bottom(run, cfg)
    hi = min(bt, STORY_ONSET + pd.Timedelta(seconds=30)) if bt is not None else STORY_ONSET + pd.Timedelta(seconds=30)
    want = set(pd.date_range(lo, hi, freq="1s"))
    if first_cut:
        cut = pd.Timestamp(first_cut)
        want |= set(pd.date_range(cut - pd.Timedelta("500ms"), cut, freq="100ms"))
    rows = both[both.index.isin(sorted(want))].reset_index()
    rows["rv_1m"] = rows["rv_1m"] * 100
    return rows[TIMELINE_COLS]


def _shown(changes: list[dict]) -> list[dict]:
    """The changes worth printing: the instrument row's order size, passive band and state."""
    return [c for c in changes if c["strategy"] == "*" and c["field"] in ("max_order_qty", "passive_band_bps", "state")]


def text(fx: dict, tl: pd.DataFrame) -> str:
    """The story printed: timeline, limit changes, rejections, comparison."""
    lines = [f"flash-crash story on {fx['sym']}, seed {fx['seed']}: onset {fx['story_onset'][11:23]}, "
             f"price bottom (dynamic run) {(fx['price_bottom_time'] or '-')[11:23]}", "",
             "time          rv_1m%  spread_bps  imbalance  trade/order  anomaly  state"]
    for r in tl.itertuples(index=False):
        lines.append(f"{r.time.strftime('%H:%M:%S.%f')[:12]}  {r.rv_1m:6.3f}  {r.spread_bps:10.1f}  "
                     f"{r.imbalance_depth:9.2f}  {r.trade_to_order:11.3f}  {r.score:7.3f}  {r.tier}")
    dyn, st = fx["runs"]["dynamic"], fx["runs"]["static"]
    lines += ["", "limit changes (dynamic run; instrument rows, order size, passive band and state; all in the JSON):"]
    for c in _shown(dyn["limit_changes"]):
        lines.append(f"  {c['time'][11:23]}  {c['sym']}/{c['strategy']:5} {c['field']:16} {c['old']} -> {c['new']}  "
                     f"({c['tier']})")
    for name, r in (("static", st), ("dynamic", dyn)):
        lines += ["", f"rejected ({name} run): {len(r['rejected'])}"]
        seen: dict[tuple[str, str], int] = {}
        for x in r["rejected"]:  # every seller order; the market maker's first of each rule
            key = (x["strategy"], x["rule"])
            seen[key] = seen.get(key, 0) + 1
            if x["strategy"] != "mm" or seen[key] == 1:
                lines.append(f"  {x['time'][11:23]}  {x['strategy']:4} {x['clordid']:9} {x['side']:4} {x['qty']:>4}  {x['text']}")
        lines += [f"  ... market maker: {n} rejected by {rule}" for (s, rule), n in seen.items() if s == "mm" and n > 1]
        for c in r["chase_orders"]:
            lines.append(f"  the {c['qty']}-lot market order {c['clordid']}: {c['outcome']}, {c['filled']} filled")
    lines += ["", f"{'':24}{'static':>14}{'dynamic':>14}"]
    for label, key in (("firm P&L (marked)", "pnl"), ("peak exposure", "peak_exposure"),
                       ("peak position (lots)", "peak_position"), ("orders accepted", "accepted"),
                       ("orders blocked", "blocked_valid")):
        lines.append(f"{label:24}{st[key]:>14,.0f}{dyn[key]:>14,.0f}")
    return "\n".join(lines)


def write_json(fx: dict, path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(fx, indent=2) + "\n")


def _plots(fx: dict, runs: dict[str, RunResult], cfg: StoryConfig, folder: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo = STORY_ONSET - pd.Timedelta(seconds=20)
    cut = pd.Timestamp(fx["first_cut_time"]) if fx["first_cut_time"] else None
    bt = pd.Timestamp(fx["price_bottom_time"]) if fx["price_bottom_time"] else None
    out = []

    def marks(ax) -> None:
        if cut is not None:
            ax.axvline(cut, color="tab:red", ls="--", lw=1, label="max order qty cut (dynamic)")
        if bt is not None:
            ax.axvline(bt, color="black", ls=":", lw=1, label="price bottom (dynamic)")

    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name, colour in (("static", "tab:orange"), ("dynamic", "tab:blue")):
        m = mids(runs[name], cfg.sym)
        m = m[m.index >= lo]
        ax.plot(m.index, m.to_numpy(), color=colour, lw=1, label=f"mid, {name} run")
        for r in runs[name].rejected:
            if r["qty"] >= 200:
                ax.scatter([r["time"]], [m.asof(r["time"]) if len(m) else math.nan], color="tab:red", zorder=5,
                           marker="x", s=60, label=f"{r['qty']}-lot order rejected ({name})")
    marks(ax)
    ax.set_title(f"{cfg.sym}: the market both runs traded in")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "price.png", dpi=100)
    plt.close(fig)
    out.append(("price.png", "Mid price of the venue in each run (the firm's orders move it)."))

    s = runs["dynamic"].tables.get("riskScore", pd.DataFrame())
    lim = runs["dynamic"].tables.get("limits", pd.DataFrame())
    fig, ax = plt.subplots(figsize=(9, 3.6))
    if len(s):
        s = s[(s["sym"] == cfg.sym) & (s["time"] >= lo)]
        ax.plot(s["time"], s["score"], color="tab:purple", lw=1, label="anomaly score")
    ax.set_ylabel("anomaly score")
    marks(ax)
    if len(lim):
        ax2 = ax.twinx()
        lim = lim[(lim["sym"] == cfg.sym) & (lim["strategy"] == "")].sort_values("time")
        t = list(lim["time"]) + [cfg.end]
        q = list(lim["maxQty"]) + [lim["maxQty"].iloc[-1]]
        ax2.step([max(x, lo) for x in t], q, where="post", color="tab:green", lw=1.5, label="max order qty")
        ax2.set_ylabel("max order qty")
        ax2.legend(loc="upper right", fontsize=7)
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title("Dynamic run: anomaly score and the limit it sets")
    fig.tight_layout()
    fig.savefig(folder / "score.png", dpi=100)
    plt.close(fig)
    out.append(("score.png", "The risk engine's anomaly score (100 ms cycles) and max order quantity."))

    fig, ax = plt.subplots(figsize=(9, 3.2))
    for name, colour in (("static", "tab:orange"), ("dynamic", "tab:blue")):
        p = runs[name].positions
        if p:
            ax.step([lo] + [x[0] for x in p] + [cfg.end], [0] + [x[1] for x in p] + [p[-1][1]],
                    where="post", color=colour, label=f"firm position, {name} run")
    marks(ax)
    ax.set_ylabel("lots")
    ax.legend(fontsize=7)
    ax.set_title("The firm's net position (all strategies)")
    fig.tight_layout()
    fig.savefig(folder / "position.png", dpi=100)
    plt.close(fig)
    out.append(("position.png", "The firm's net position over the story, static against dynamic limits."))
    return out


def write_html(fx: dict, runs: dict[str, RunResult], cfg: StoryConfig, tl: pd.DataFrame, folder: Path) -> Path:
    """index.html with the plots, the comparison, the timeline, limit changes and rejections."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plots(fx, runs, cfg, folder)
    e = html.escape
    dyn, st = fx["runs"]["dynamic"], fx["runs"]["static"]
    rows = "".join(f"<tr><td>{e(lbl)}</td><td>{st[k]:,.0f}</td><td>{dyn[k]:,.0f}</td></tr>"
                   for lbl, k in (("firm P&L, marked to market at the end", "pnl"),
                                  ("peak exposure (|position| x mid)", "peak_exposure"),
                                  ("peak position (lots)", "peak_position"), ("orders accepted", "accepted"),
                                  ("orders blocked", "blocked_valid")))
    changes = "".join(f"<tr><td>{e(c['time'])}</td><td>{e(c['strategy'])}</td><td>{e(c['field'])}</td>"
                      f"<td>{c['old']}</td><td>{c['new']}</td><td>{e(c['tier'])}</td><td>{e(c['reason'])}</td></tr>"
                      for c in _shown(dyn["limit_changes"]))
    rej = "".join(f"<tr><td>{name}</td><td>{e(x['time'])}</td><td>{e(x['clordid'])}</td><td>{x['side']}</td>"
                  f"<td>{x['qty']}</td><td>{e(x['rule'])}</td><td>{e(x['text'])}</td></tr>"
                  for name in ("static", "dynamic") for x in fx["runs"][name]["rejected"])
    tlr = "".join(f"<tr><td>{r.time.strftime('%H:%M:%S.%f')[:12]}</td><td>{r.rv_1m:.3f}</td><td>{r.spread_bps:.1f}</td>"
                  f"<td>{r.imbalance_depth:.2f}</td><td>{r.trade_to_order:.3f}</td><td>{r.score:.3f}</td>"
                  f"<td>{e(str(r.tier))}</td></tr>" for r in tl.itertuples(index=False))
    figs = "".join(f'<figure><img src="{n}" alt="{e(c)}"><figcaption>{e(c)}</figcaption></figure>' for n, c in plots)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>pretrade: the flash-crash story</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>The flash-crash story: static against dynamic limits</h1>
<p>{e(cfg.sym)}, seed {fx['seed']}; crash onset {e(fx['story_onset'])}; price bottom (dynamic run)
{e(str(fx['price_bottom_time']))}; first max-order-qty cut {e(str(fx['first_cut_time']))}. Both runs go through
the real tickerplant, risk engine, gateway and exchange-as-market from the same seed; in the static run the
gateway is in shadow mode (static limits bind).</p>
<h2>Comparison</h2><table><tr><th></th><th>static</th><th>dynamic</th></tr>{rows}</table>
{figs}
<h2>Timeline (dynamic run, the engine's 100 ms cycles)</h2>
<table><tr><th>time</th><th>1-min realized vol %</th><th>spread bps</th><th>book imbalance</th>
<th>trade-to-order</th><th>anomaly score</th><th>state</th></tr>{tlr}</table>
<h2>Limit changes (dynamic run: the instrument row's order size, passive band and state; every change is in story.json)</h2>
<table><tr><th>time</th><th>strategy</th><th>field</th><th>old</th><th>new</th><th>tier</th><th>reason</th></tr>{changes}</table>
<h2>Rejected orders</h2>
<table><tr><th>run</th><th>time</th><th>clordid</th><th>side</th><th>qty</th><th>rule</th><th>text</th></tr>{rej}</table>
</body></html>
"""
    path = folder / "index.html"
    path.write_text(page)
    return path
