"""Prometheus metrics (prometheus-client). Defined once here; everyone increments them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STORAGE_REQUESTS = Counter(
    "cloudmirror_storage_requests_total", "Requests sent to object stores", ["provider", "operation"]
)
QUEUE_REQUESTS = Counter("cloudmirror_queue_requests_total", "Requests sent to event queues", ["feed", "operation"])
EVENTS = Counter("cloudmirror_events_total", "Events received", ["mirror", "outcome"])
DEAD_LETTERS = Counter("cloudmirror_dead_letters_total", "Malformed messages dead-lettered", ["feed"])
REPLICATIONS = Counter("cloudmirror_replications_total", "Replications finished", ["mirror", "target", "status"])
BYTES_COPIED = Counter("cloudmirror_bytes_copied_total", "Bytes written to targets", ["mirror", "target"])
LATENCY = Histogram(
    "cloudmirror_replication_latency_seconds",
    "Source write (or event) to replica completed",
    ["mirror", "target"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
BACKLOG = Gauge("cloudmirror_backlog_objects", "Replications pending or in progress", ["mirror", "target"])


def storage_request(provider: str, operation: str) -> None:
    STORAGE_REQUESTS.labels(provider, operation).inc()


def storage_request_total() -> float:
    """Total storage requests made by this process (used by benchmarks)."""
    return sum(s.value for m in STORAGE_REQUESTS.collect() for s in m.samples if s.name.endswith("_total"))
