"""Prometheus metrics the API exposes at /metrics: its own requests, and what it sees on the
tickerplant (rejections by rule, tier by instrument, alerts, the engine's heartbeat).

Each app has its own registry, so two apps in one process (tests) do not collide.
"""

from __future__ import annotations

from typing import Any

TIER_CODE = {"NORMAL": 0, "ELEVATED": 1, "HIGH_ALERT": 2, "CRITICAL": 3}


class Metrics:
    """The API's Prometheus collectors, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pretrade_api_requests", "API requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("pretrade_api_request_seconds", "API request latency by route", ["route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                                 registry=r)
        self.actions = Counter("pretrade_api_actions", "governance actions by action and outcome",
                               ["action", "outcome"], registry=r)
        self.decisions = Counter("pretrade_decisions", "pre-trade check outcomes seen, by rule and outcome",
                                 ["rule", "outcome"], registry=r)
        self.rejections = Counter("pretrade_rejections", "orders rejected, by rule", ["rule"], registry=r)
        self.tier = Gauge("pretrade_tier", "current tier by instrument (0 Normal .. 3 Critical)", ["sym"],
                          registry=r)
        self.max_qty = Gauge("pretrade_max_order_qty", "current max order qty by instrument and strategy",
                             ["sym", "strategy"], registry=r)
        self.score = Gauge("pretrade_anomaly_score", "latest anomaly score by instrument", ["sym"], registry=r)
        self.alerts = Counter("pretrade_alerts", "alerts seen by severity and kind", ["severity", "kind"],
                              registry=r)
        self.updates = Counter("pretrade_api_feed_rows", "tickerplant rows received by table", ["table"],
                               registry=r)
        self.heartbeat_age = Gauge("pretrade_engine_heartbeat_age_seconds",
                                   "seconds since the risk engine's last heartbeat reached the API", registry=r)

    def observe(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Count what one tickerplant update says."""
        self.updates.labels(table).inc(len(rows))
        for row in rows:
            if table == "decision":
                rule, outcome = str(row.get("rule", "")), str(row.get("outcome", ""))
                self.decisions.labels(rule, outcome).inc()
                if outcome.startswith("reject"):
                    self.rejections.labels(rule).inc()
            elif table == "riskScore":
                self.tier.labels(row["sym"]).set(TIER_CODE.get(row.get("tier", ""), -1))
                score = row.get("score")
                self.score.labels(row["sym"]).set(float("nan") if score is None else float(score))
            elif table == "limits":
                self.max_qty.labels(row["sym"], row["strategy"] or "*").set(int(row["maxQty"]))
                if not row["strategy"]:
                    self.tier.labels(row["sym"]).set(TIER_CODE.get(row.get("tier", ""), -1))
            elif table == "riskAlert":
                self.alerts.labels(str(row.get("severity", "")), str(row.get("kind", ""))).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
