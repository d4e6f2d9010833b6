"""Prometheus metrics of one gateway process (own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter("gateway_decisions", "Decisions by channel, outcome and reason",
                                 ["channel", "outcome", "reason"], registry=r)
        self.opt_outs = Counter("gateway_opt_outs", "Opt-outs recorded, by channel and source",
                                ["channel", "source"], registry=r)
        self.spool_depth = Gauge("gateway_spool_depth", "Copies waiting for delivery",
                                 registry=r)
        self.delivery_attempts = Counter("gateway_delivery_attempts",
                                         "Upstream delivery attempts by result",
                                         ["result"], registry=r)
        self.provider_latency = Histogram("gateway_provider_latency_seconds",
                                          "SMS provider request latency", ["provider"],
                                          registry=r)
        self.smtp_messages = Counter("gateway_smtp_messages", "SMTP transactions by result",
                                     ["result"], registry=r)
