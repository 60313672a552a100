"""The running service: one process's intake, workers and reconcile loops, following the
mirrors in the ledger. The CLI's `run`, `worker` and `api` commands build it (and, for the
API, serve the app beside it); the API's jobs use it to run reconciles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cloudmirror.config import Config, Mirror, Target
from cloudmirror.events import open_feed
from cloudmirror.ledger.mirrors import MirrorSpecs
from cloudmirror.ledger.repo import Ledger
from cloudmirror.ledger.runs import Runs
from cloudmirror.location import parse_location
from cloudmirror.policy import PolicyRefused, SecurityPolicy
from cloudmirror.redact import install_log_redaction, register_env_prefix
from cloudmirror.replication.intake import Intake
from cloudmirror.replication.planner import Router
from cloudmirror.replication.poller import PollFeed
from cloudmirror.replication.reconcile import Progress, Reconciler
from cloudmirror.replication.transfer import Endpoint
from cloudmirror.replication.worker import WorkerPool
from cloudmirror.services import mirrors
from cloudmirror.stores import open_store

log = logging.getLogger("cloudmirror.service")
CONTROL_POLL_S = 1.0  # how often a running service looks for changed mirrors in the ledger


def upgrade_db(config: Config) -> None:
    """`db upgrade`: bring the ledger schema to the newest revision. Idempotent."""
    ledger = Ledger(config.ledger, pool_size=0)
    try:
        ledger.upgrade()
    finally:
        ledger.close()


@dataclass
class Service:
    """One process's share of the work. Build, `await run(...)`, then `await close()`."""

    config: Config
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    ledger: Ledger | None = None

    def __post_init__(self) -> None:
        install_log_redaction()  # no secret in any log record of this process (idempotent)
        self.base_config = self.config  # the config file; self.config is what runs now
        register_env_prefix(self.policy.env_prefix)  # the variables connection strings may come from
        if self.ledger is None:
            self.ledger = Ledger(self.config.ledger)
        self._endpoints: dict[str, Endpoint] = {}
        self._stop = asyncio.Event()
        self._pipeline_stop = asyncio.Event()
        self.pool: WorkerPool | None = None
        self.intakes: list[Intake] = []

    @property
    def policy(self) -> SecurityPolicy:
        """The config file's security policy: every store and feed is checked against it
        before it is opened."""
        return self.base_config.security

    def endpoint(self, url: str) -> Endpoint:
        """The store for a location URL, opened once per process. Raises PolicyRefused for a
        location the security policy does not allow (nothing is opened or sent)."""
        ep = self._endpoints.get(url)
        if ep is None:
            loc = parse_location(url)
            self.policy.check_location(loc, url)
            ep = self._endpoints[url] = Endpoint(loc, open_store(loc))
        return ep

    def stop(self) -> None:
        """Graceful stop: intake stops receiving, workers drain in-flight copies."""
        self._stop.set()
        self._pipeline_stop.set()
        for i in self.intakes:
            i.stop()
        if self.pool:
            self.pool.stop()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def warm(self) -> None:
        """Open every store of every mirror now, so the first event does not pay for it.
        Failures are logged, not raised: the replications will report them."""
        for m in self.config.mirrors:
            for url in (m.source, *(t.url for t in m.targets)):
                warm = getattr(self.endpoint(url).store, "warm", None)
                if warm is None:
                    continue
                try:
                    await warm()
                except Exception as e:  # noqa: BLE001 - a warm-up failure is logged; the replications report it
                    log.warning("could not open %s yet: %s", url, e)

    async def run(self, *, intake: bool = True, workers: bool = True,
                  beside: Callable[[Service, asyncio.Event], Awaitable[None]] | None = None) -> None:
        """Run the chosen roles until stop().

        The mirrors come from the ledger (seeded from the config file at start); when one
        changes (the API, or a failover), the intake and the workers restart with the new
        set: in-flight copies drain first, so nothing is lost or copied twice. `beside`
        (e.g. the REST API, built by the CLI) runs alongside and must return once the event
        it is given is set (at stop)."""
        await asyncio.to_thread(mirrors.seed, self.base_config, self.ledger)
        rev = await self._load_mirrors()
        tasks = []
        if beside is not None:
            tasks.append(asyncio.create_task(beside(self, self._stop), name="beside"))
        generation: list[asyncio.Task] = []
        try:
            while not self._stop.is_set():
                generation = await self._start_pipelines(intake=intake, workers=workers)
                rev = await self._wait_for_change(rev)
                await self._stop_pipelines(generation)
                generation = []
                if not self._stop.is_set():
                    rev = await self._load_mirrors()
                    log.info("mirrors changed: restarted with %d mirror(s)", len(self.config.mirrors))
        finally:
            self.stop()
            if generation:
                await self._stop_pipelines(generation)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self._log_endings(tasks, results)

    async def _load_mirrors(self) -> tuple[int, int]:
        def load():
            rev = MirrorSpecs(self.ledger).revision()
            return rev, mirrors.current_config(self.base_config, self.ledger)

        rev, config = await asyncio.to_thread(load)
        self.config = config.model_copy(update={"mirrors": self._allowed(config.mirrors)})
        return rev

    def _allowed(self, mirrors: list[Mirror]) -> list[Mirror]:
        """The mirrors the security policy allows; the others are logged and not run (one
        stored through the API before the policy was tightened, or a failover's feeds)."""
        out = []
        for m in mirrors:
            try:
                self.policy.check_mirror(m)
            except PolicyRefused as e:
                log.error("mirror %s is not run: %s", m.name, e)
                continue
            out.append(m)
        return out

    async def _wait_for_change(self, rev: tuple[int, int]) -> tuple[int, int]:
        """Until stop() or a mirror changes in the ledger; returns the revision then."""
        specs = MirrorSpecs(self.ledger)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=CONTROL_POLL_S)
            try:
                now = await asyncio.to_thread(specs.revision)
            except Exception as e:  # noqa: BLE001 - the ledger may come back; keep running
                log.warning("cannot read the mirrors' revision: %s", e)
                continue
            if now != rev:
                return now
        return rev

    async def _start_pipelines(self, *, intake: bool, workers: bool) -> list[asyncio.Task]:
        """Start intake, workers and reconcile loops for the current mirrors."""
        self._pipeline_stop = asyncio.Event()
        self.intakes = []
        self.pool = None
        if workers:
            await self.warm()
        tasks = []
        if workers:
            self.pool = WorkerPool(self.config, self.ledger, self.endpoint, owner=self.owner)
            tasks.append(asyncio.create_task(self.pool.run(), name="workers"))
        if intake:
            tasks += self._start_intake()
        if workers:
            for m in self.config.mirrors:
                if (m.backfill and not m.polled) or m.reconcile_every:
                    for t in m.targets:
                        tasks.append(asyncio.create_task(self._reconcile_loop(m, t),
                                                         name=f"reconcile {m.name} {t.name}"))
        return tasks

    def _start_intake(self) -> list[asyncio.Task]:
        router = Router(self.config.mirrors)
        seen: set[str] = set()
        tasks = []
        for m in self.config.mirrors:
            for f in m.events:
                ident = f"{f.address} {m.source}" if f.kind == "poll" else f.address
                if ident in seen:
                    continue
                seen.add(ident)
                wake = self.pool.wake if self.pool else (lambda: None)
                if f.kind == "poll":
                    src = self.endpoint(m.source)
                    feed, receivers = PollFeed(src.store, src.location, f.poll), 1
                else:
                    self.policy.check_feed(f, f"mirror {m.name} events")  # a refused mirror never gets here
                    feed, receivers = open_feed(f), f.receivers
                it = Intake(feed, router, self.ledger, visibility_timeout_s=f.visibility_timeout_s,
                            on_recorded=wake, receivers=receivers)
                self.intakes.append(it)
                tasks.append(asyncio.create_task(it.run(), name=f"intake {f.address}"))
        return tasks

    async def _stop_pipelines(self, tasks: list[asyncio.Task]) -> None:
        self._pipeline_stop.set()
        for i in self.intakes:
            i.stop()
        if self.pool:
            self.pool.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        self._log_endings(tasks, results)

    @staticmethod
    def _log_endings(tasks: list[asyncio.Task], results: list) -> None:
        for t, r in zip(tasks, results, strict=True):
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                log.error("%s ended with %r", t.get_name(), r)

    async def reconcile(self, mirror: str, target: str | None = None, **kw) -> list[Progress]:
        """Reconcile one mirror with one or all of its targets (see replication.reconcile).
        Raises MirrorNotFound, InvalidInput (not a target of the mirror), StoreError when a listing fails."""
        m = self.config.mirror(mirror)
        targets = [m.target(target)] if target else list(m.targets)
        out = []
        for t in targets:
            out.append(await Reconciler(m, t, self.endpoint, self.ledger).run(**kw))
            if self.pool:
                self.pool.wake()
        return out

    async def _reconcile_loop(self, m: Mirror, t: Target) -> None:
        """Backfill a target never reconciled, then reconcile every `reconcile_every`."""
        runs = Runs(self.ledger)
        wake = self.pool.wake if self.pool else (lambda: None)
        first = m.backfill and not m.polled and not await asyncio.to_thread(runs.has_finished, m.name, t.name)
        stop = self._pipeline_stop
        while not stop.is_set():
            if first or m.reconcile_every:
                try:
                    await Reconciler(m, t, self.endpoint, self.ledger).run(on_progress=lambda p: wake())
                    wake()
                except Exception as e:  # noqa: BLE001 - retried at the next interval
                    log.warning("reconcile of %s -> %s failed: %s", m.name, t.name, e)
            first = False
            if not m.reconcile_every:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=m.reconcile_every)

    async def close_stores(self) -> None:
        """Close every store this service opened (errors ignored). Idempotent."""
        for ep in self._endpoints.values():
            with contextlib.suppress(Exception):
                await ep.store.close()
        self._endpoints.clear()

    async def close(self) -> None:
        await self.close_stores()
        self.ledger.close()


class ApiService(Service):
    """The API's own Service when none runs beside it (tests, embedding): it shares the
    app's ledger (never closes it), reconciles the mirrors as they are in the ledger now,
    and on shutdown closes only the stores it opened."""

    async def reconcile(self, mirror: str, target: str | None = None, **kw):
        self.config = await asyncio.to_thread(mirrors.current_config, self.base_config, self.ledger)
        return await super().reconcile(mirror, target, **kw)

    async def close(self) -> None:
        await self.close_stores()
