"""The /metrics gauges that live in the ledger (RPO, backlog, failures, missed events), read
at scrape time for the mirrors as they run now. The counters and histograms that the workers
and feeds increment are in cloudmirror.metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cloudmirror.config import Config
from cloudmirror.ledger import rpo as ledger_rpo
from cloudmirror.ledger.dead_letters import DeadLetters
from cloudmirror.ledger.repo import Ledger
from cloudmirror.ledger.runs import Runs
from cloudmirror.services import mirrors

log = logging.getLogger("cloudmirror.metrics")


class LedgerCollector:
    """Gauges computed from the ledger at scrape time (no SQL here: ledger.rpo does it):
    cloudmirror_rpo_seconds, cloudmirror_backlog_objects, cloudmirror_backlog_bytes and
    cloudmirror_failed_replications per (mirror, target); cloudmirror_missed_events_total per
    (mirror, target) (found by reconciles); cloudmirror_rpo_objective_seconds per mirror;
    cloudmirror_group_rpo_seconds per group; cloudmirror_dead_letters_pending per feed (those
    of every process's intake, unlike the counter cloudmirror_dead_letters_total);
    cloudmirror_ledger_up (0 when the ledger could not be read: the scrape still succeeds)."""

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
        up = GaugeMetricFamily("cloudmirror_ledger_up", "Whether the ledger could be read for this scrape")
        now = time.time()
        try:
            if callable(config):
                config = config()
            rows = {(r["mirror"], r["target"]): r for r in ledger_rpo.backlog(ledger)}
            missed = Runs(ledger).missed_events()
            dead = DeadLetters(ledger).counts()
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
        dead_g = GaugeMetricFamily("cloudmirror_dead_letters_pending",
                                   "Messages the intake could not use, awaiting an operator (re-drive or discard)",
                                   labels=["feed"])
        for feed in sorted({feed for feed, _ in dead}):  # 0 for a feed whose dead letters were all resolved
            dead_g.add_metric([feed], dead.get((feed, "pending"), 0))
        yield from (up, rpo, objects, size, failed, missed_c, objective, group, dead_g)


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


def install_metrics(config: Config, ledger: Ledger) -> None:
    """Serve the ledger's RPO, backlog, failure and missed-event figures on /metrics
    (computed at scrape time) for the mirrors as they run now: each scrape reads them from
    the ledger (mirrors.current_config of `config`, cached per revision), so mirrors added,
    changed or failed over through the API show without a restart. Call once per process
    (again to rebind). Idempotent."""
    current: Callable[[], Config] = lambda: mirrors.current_config(config, ledger)  # noqa: E731 - read per scrape
    register_ledger_collector(current, ledger)
