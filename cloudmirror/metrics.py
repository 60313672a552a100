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

# the API's refusals before any work (api/guard.py): counted here, logged once, never written to the ledger
API_UNAUTHENTICATED = Counter(
    "cloudmirror_api_unauthenticated_total",
    "API requests refused for lack of a valid key: reason missing, malformed, invalid (unknown or revoked key) "
    "or rate_limited (429 after too many failed authentications from the client)",
    ["reason"],
)
API_BODY_TOO_LARGE = Counter("cloudmirror_api_body_too_large_total",
                             "API requests refused with 413 (a body over api.max_body_bytes)")
