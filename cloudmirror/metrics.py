"""Prometheus metrics (prometheus-client). Defined once here; everyone increments them.
Figures that live in the ledger (RPO, backlog, failures, missed events) are read at scrape
time by LedgerCollector, registered once with register_ledger_collector."""

from __future__ import annotations

import logging
import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("cloudmirror.metrics")

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


# ---------------------------------------------------------------- figures read from the ledger
class LedgerCollector:
    """Gauges computed from the ledger at scrape time (no SQL here: ledger.rpo does it):
    cloudmirror_rpo_seconds, cloudmirror_backlog_objects, cloudmirror_backlog_bytes and
    cloudmirror_failed_replications per (mirror, target); cloudmirror_missed_events_total per
    (mirror, target) (found by reconciles); cloudmirror_rpo_objective_seconds per mirror;
    cloudmirror_group_rpo_seconds per group; cloudmirror_ledger_up (0 when the ledger could
    not be read: the scrape still succeeds)."""

    def __init__(self) -> None:
        self.config = None
        self.ledger = None

    def bind(self, config, ledger) -> None:
        """`config`: a Config, or a callable returning the one to report on (read at each
        scrape, e.g. the mirrors as they run now)."""
        self.config, self.ledger = config, ledger

    def describe(self):  # no collect() at registration time
        return []

    def collect(self):
        config, ledger = self.config, self.ledger
        if config is None or ledger is None:
            return
        from cloudmirror.ledger import rpo as ledger_rpo
        from cloudmirror.ledger.runs import Runs

        up = GaugeMetricFamily("cloudmirror_ledger_up", "Whether the ledger could be read for this scrape")
        now = time.time()
        try:
            if callable(config):
                config = config()
            rows = {(r["mirror"], r["target"]): r for r in ledger_rpo.backlog(ledger)}
            missed = Runs(ledger).missed_events()
        except Exception as e:  # noqa: BLE001 - a scrape must not fail because the database did
            log.warning("metrics: cannot read the ledger: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        labels = ["mirror", "target"]
        rpo = GaugeMetricFamily("cloudmirror_rpo_seconds",
                                "Current RPO: age of the oldest version not yet on the target", labels=labels)
        objects = GaugeMetricFamily("cloudmirror_backlog_objects", "Replications pending or in progress", labels=labels)
        size = GaugeMetricFamily("cloudmirror_backlog_bytes", "Bytes of the versions pending or in progress",
                                 labels=labels)
        failed = GaugeMetricFamily("cloudmirror_failed_replications", "Replications that gave up (awaiting a retry)",
                                   labels=labels)
        missed_c = CounterMetricFamily("cloudmirror_missed_events",
                                       "Source writes no event announced (found by reconciles)", labels=labels)
        objective = GaugeMetricFamily("cloudmirror_rpo_objective_seconds", "The mirror's RPO objective",
                                      labels=["mirror"])
        group = GaugeMetricFamily("cloudmirror_group_rpo_seconds", "A consistency group's RPO (its worst target)",
                                  labels=["group"])
        by_mirror: dict[str, float] = {}
        for m in config.mirrors:
            objective.add_metric([m.name], m.rpo_objective)
            for t in m.targets:
                r = rows.get((m.name, t.name), {})
                oldest = r.get("oldest_open")
                value = max(0.0, now - oldest) if oldest is not None else 0.0
                by_mirror[m.name] = max(by_mirror.get(m.name, 0.0), value)
                rpo.add_metric([m.name, t.name], value)
                objects.add_metric([m.name, t.name], r.get("backlog_objects", 0))
                size.add_metric([m.name, t.name], r.get("backlog_bytes", 0))
                failed.add_metric([m.name, t.name], r.get("failed", 0))
                missed_c.add_metric([m.name, t.name], missed.get((m.name, t.name), 0))
        for g in config.groups:
            group.add_metric([g.name], max((by_mirror.get(n, 0.0) for n in g.mirrors), default=0.0))
        yield from (up, rpo, objects, size, failed, missed_c, objective, group)


_COLLECTORS: dict[int, LedgerCollector] = {}


def register_ledger_collector(config, ledger, registry: CollectorRegistry = REGISTRY) -> LedgerCollector:
    """Register the ledger collector on `registry` once; a later call rebinds it to this
    config and ledger (e.g. a new app in the same process). Idempotent."""
    c = _COLLECTORS.get(id(registry))
    if c is None:
        c = _COLLECTORS[id(registry)] = LedgerCollector()
        registry.register(c)
    c.bind(config, ledger)
    return c
