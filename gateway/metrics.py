"""Prometheus metrics shared by the API and the workers.

Counters and histograms observed in-process; gauges of current state (submissions and
deliveries by status, queue depth) are read from the database at scrape time by a collector
registered in gateway.api (so they are right in the multi-process PostgreSQL mode too).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["ATTEMPTS", "DELIVERY_LATENCY", "SUBMISSIONS_RECEIVED"]

SUBMISSIONS_RECEIVED = Counter(
    "dui_gateway_submissions_received_total",
    "Submissions accepted by the API",
    ["document_type"],
)
ATTEMPTS = Counter(
    "dui_gateway_delivery_attempts_total",
    "Delivery attempts by connector and outcome (success, transient, permanent)",
    ["connector", "outcome"],
)
DELIVERY_LATENCY = Histogram(
    "dui_gateway_end_to_end_latency_seconds",
    "From submission accepted to delivery acknowledged by the destination",
    ["document_type", "connector"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
