"""Prometheus metrics (prometheus-client). Defined once here; every layer increments them.
Figures that live in the ledger (RPO, backlog, failures, missed events) are read at scrape
time by services.metrics.LedgerCollector."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STORAGE_REQUESTS = Counter(
    "cloudmirror_storage_requests_total", "Requests sent to object stores", ["provider", "operation"]
)
QUEUE_REQUESTS = Counter("cloudmirror_queue_requests_total", "Requests sent to event queues", ["feed", "operation"])
EVENTS = Counter("cloudmirror_events_total", "Events received, by feed and outcome", ["feed", "outcome"])
DEAD_LETTERS = Counter("cloudmirror_dead_letters_total", "Malformed messages dead-lettered", ["feed"])
REPLICATIONS = Counter("cloudmirror_replications_total", "Replications finished", ["mirror", "target", "status"])
BYTES_COPIED = Counter("cloudmirror_bytes_copied_total", "Bytes written to targets", ["mirror", "target"])
LATENCY = Histogram(
    "cloudmirror_replication_latency_seconds",
    "Source write (or event) to replica completed",
    ["mirror", "target"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)


def storage_request(provider: str, operation: str) -> None:
    STORAGE_REQUESTS.labels(provider, operation).inc()
