"""Shadow mode and A/B: which limits bind an order, set per instrument or strategy at run time.

Modes: `enforce` (dynamic limits bind: the default), `shadow` (static limits bind; the dynamic
decision is computed and recorded beside it), `ab` (a deterministic share of flow, by account and
strategy, is enforced on dynamic limits, the rest on static). Every change is audited: logged,
kept in `Modes.audit`, and passed to `on_change` (the gateway publishes it as a `riskAlert` row).

Reports read `decision` rows (as the gateway publishes them; outcome is "<verdict>/<limits>",
e.g. "pass/dynamic", "reject/static", "shadow-reject/dynamic", and "shadow-reject/model" for the
call of a fat-finger model that is not approved, so does not bind):
`shadow_report` lists orders where the binding and a shadow decision disagreed and why;
`ab_report` compares blocked-valid orders, caught errors and exposure per arm.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MODES = ("enforce", "shadow", "ab")


@dataclass(frozen=True)
class ModeChange:
    """One audited change: when, by whom, what (kind sym or strategy, key), to which mode."""

    time_ns: int
    who: str
    kind: str
    key: str
    mode: str
    share: float
    reason: str


def arm_of(account: str, strategy: str, share: float) -> str:
    """The A/B arm of an (account, strategy): "dynamic" for a stable `share` of keys, else
    "static". The same key always lands in the same arm (a hash, not a random draw)."""
    h = hashlib.blake2b(f"{account}|{strategy}".encode(), digest_size=8).digest()
    return "dynamic" if int.from_bytes(h, "big") / 2**64 < share else "static"


class Modes:
    """The mode of each instrument and strategy; a strategy's mode wins over its instrument's."""

    def __init__(self, default: str = "enforce", ab_share: float = 0.5,
                 on_change: Callable[[ModeChange], None] | None = None) -> None:
        if default not in MODES:
            raise ValueError(f"mode {default!r}: expected one of {MODES}")
        self.default, self.ab_share, self.on_change = default, ab_share, on_change
        self.by_sym: dict[str, str] = {}
        self.by_strategy: dict[str, str] = {}
        self.share: dict[str, float] = {}
        self.audit: list[ModeChange] = []
        self._lock = threading.Lock()

    def set(self, kind: str, key: str, mode: str, who: str, reason: str = "",
            share: float | None = None) -> ModeChange:
        """Set the mode of an instrument (kind "sym") or strategy (kind "strategy"); audited.
        ValueError for an unknown kind or mode, a share outside [0, 1], or no `who`."""
        if kind not in ("sym", "strategy"):
            raise ValueError(f"kind {kind!r}: expected sym or strategy")
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {MODES}")
        if not who:
            raise ValueError("a mode change must name who made it")
        share = self.ab_share if share is None else float(share)
        if not 0 <= share <= 1:
            raise ValueError(f"A/B share {share} must be in [0, 1]")
        change = ModeChange(time.time_ns(), who, kind, key, mode, share, reason)
        with self._lock:
            (self.by_sym if kind == "sym" else self.by_strategy)[key] = mode
            self.share[f"{kind}:{key}"] = share
            self.audit.append(change)
        log.warning("mode of %s %s set to %s by %s%s%s", kind, key, mode, who,
                    f" (dynamic share {share:g})" if mode == "ab" else "", f": {reason}" if reason else "")
        if self.on_change is not None:
            self.on_change(change)
        return change

    def mode_of(self, sym: str, strategy: str) -> tuple[str, float]:
        """(mode, A/B share) for an order in `sym` from `strategy`."""
        m = self.by_strategy.get(strategy)
        if m is not None:
            return m, self.share.get(f"strategy:{strategy}", self.ab_share)
        m = self.by_sym.get(sym)
        if m is not None:
            return m, self.share.get(f"sym:{sym}", self.ab_share)
        return self.default, self.ab_share


def _split(frame):
    parts = frame["outcome"].astype(str).str.split("/", n=1, expand=True)
    return parts[0], parts[1] if parts.shape[1] > 1 else ""


def shadow_report(decisions, marks=None):
    """Orders whose binding and shadow decisions differ: one row per order and shadow with both
    verdicts, the rule each applied and its text; `shadow` says which shadow: "dynamic" (shadow
    mode: static limits bound) or "model" (a candidate/shadow fat-finger model's own call; the
    `_dynamic` columns then hold the model's call). `decisions`: decision rows; `marks`:
    people's marks (pretrade.models.labels.Mark), whose latest mark of each order's decision is
    shown beside it (mark: right / wrong, mark_by, mark_note; empty where unmarked)."""
    import pandas as pd

    from pretrade.models.labels import latest

    d = decisions.copy()
    d["verdict"], d["limits"] = _split(d)
    shadow = d[d["verdict"].str.startswith("shadow-")]
    binding = d[~d["verdict"].str.startswith("shadow-")]
    j = binding.merge(shadow, on="clordid", suffixes=("_static", "_dynamic"))
    j["verdict_dynamic"] = j["verdict_dynamic"].str.removeprefix("shadow-")
    diff = j[j["verdict_static"] != j["verdict_dynamic"]]
    diff = diff.assign(shadow=diff["limits_dynamic"])
    cols = ["clordid", "sym_static", "account_static", "side_static", "qty_static", "price_static",
            "verdict_static", "rule_static", "shadow", "verdict_dynamic", "rule_dynamic", "text_dynamic",
            "text_static"]
    out = diff[cols].rename(columns=lambda c: c.replace("_static", "") if c in (
        "sym_static", "account_static", "side_static", "qty_static", "price_static") else c)
    out = pd.DataFrame(out).reset_index(drop=True)
    if marks is not None:
        by_order = {m.ref: m for m in latest(marks) if m.target == "decision"}
        got = [by_order.get(str(c)) for c in out["clordid"]]
        out["mark"] = [m.verdict if m else "" for m in got]
        out["mark_by"] = [m.who if m else "" for m in got]
        out["mark_note"] = [m.note if m else "" for m in got]
    return out


def ab_report(decisions, errors: set[str] | None = None):
    """Per A/B arm: orders, blocked, blocked-valid (blocked, not a known error), caught errors
    (blocked errors), missed errors, and exposure (notional passed). `errors`: the clordids known
    to be erroneous (e.g. the simulator's labelled fat-finger orders)."""
    import pandas as pd

    errors = errors or set()
    d = decisions.copy()
    d["verdict"], d["limits"] = _split(d)
    d = d[d["verdict"].isin(["pass", "reject"]) & d["limits"].isin(["dynamic", "static"])]
    d["error"] = d["clordid"].astype(str).isin(errors)
    d["blocked"] = d["verdict"] == "reject"
    d["notional"] = (d["qty"] * d["price"]).where(~d["blocked"], 0.0).fillna(0.0)
    g = d.groupby("limits")
    out = pd.DataFrame({
        "orders": g.size(),
        "blocked": g["blocked"].sum(),
        "blocked_valid": g.apply(lambda x: int((x["blocked"] & ~x["error"]).sum()), include_groups=False),
        "caught_errors": g.apply(lambda x: int((x["blocked"] & x["error"]).sum()), include_groups=False),
        "missed_errors": g.apply(lambda x: int((~x["blocked"] & x["error"]).sum()), include_groups=False),
        "exposure": g["notional"].sum(),
    })
    out.index.name = "arm"
    return out.reset_index()
