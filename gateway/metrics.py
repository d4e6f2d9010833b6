"""Prometheus metrics (own registry, so tests can run several gateways in one process).

With several worker processes (`[gateway] processes`), the supervisor sets
PROMETHEUS_MULTIPROC_DIR before any of them starts: each process then keeps its values in
files there (prometheus_client's multiprocess mode) and /metrics, whichever worker answers
it, sums every worker's."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as gateway.supervisor sets it


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter("gateway_decisions", "Decisions by channel, outcome and reason",
                                 ["channel", "outcome", "reason"], registry=r)
        self.opt_outs = Counter("gateway_opt_outs", "Opt-outs recorded, by channel and source",
                                ["channel", "source"], registry=r)
        self.spool_depth = Gauge("gateway_spool_depth", "Copies waiting for delivery",
                                 registry=r, multiprocess_mode="livesum")
        self.delivery_attempts = Counter("gateway_delivery_attempts",
                                         "Upstream delivery attempts by result",
                                         ["result"], registry=r)
        self.provider_latency = Histogram("gateway_provider_latency_seconds",
                                          "SMS provider request latency", ["provider"],
                                          registry=r)
        self.smtp_messages = Counter("gateway_smtp_messages", "SMTP transactions by result",
                                     ["result"], registry=r)

    def exposition(self) -> bytes:
        """The text /metrics answers: this process's, or every worker's summed."""
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined, directory)
        return generate_latest(combined)
