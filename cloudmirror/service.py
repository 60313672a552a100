"""Wires the parts for the roles `run` (intake + workers + API), `worker` and `api`, and
holds the service functions that the CLI and the REST API share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field

from cloudmirror import mirrors
from cloudmirror.config import Config, Mirror, Target
from cloudmirror.events import open_feed
from cloudmirror.replication.poller import PollFeed
from cloudmirror.ledger import rpo as ledger_rpo
from cloudmirror.ledger.mirrors import MirrorSpecs
from cloudmirror.ledger.repo import Ledger
from cloudmirror.ledger.runs import Runs
from cloudmirror.location import parse_location
from cloudmirror.replication.intake import Intake
from cloudmirror.replication.planner import Router
from cloudmirror.replication.reconcile import Progress, Reconciler
from cloudmirror.replication.transfer import Endpoint
from cloudmirror.replication.worker import WorkerPool
from cloudmirror.stores import open_store

log = logging.getLogger("cloudmirror.service")
CONTROL_POLL_S = 1.0  # how often a running service looks for changed mirrors in the ledger


class ServiceError(RuntimeError):
    """The service cannot start (e.g. the API address is taken); the message says why."""


def bind_api(listen: str) -> socket.socket:
    """Bind the API's listening socket before anything else starts. Raises ServiceError."""
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except OSError as e:
        sock.close()
        raise ServiceError(f"cannot listen on {listen} (api.listen): {e.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def upgrade_db(config: Config) -> None:
    """`db upgrade`: bring the ledger schema to the newest revision. Idempotent."""
    ledger = Ledger(config.ledger, pool_size=0)
    try:
        ledger.upgrade()
    finally:
        ledger.close()


def status(config: Config, ledger: Ledger, *, now: float | None = None) -> list[dict]:
    """Per mirror and target: counts by status and the RPO: the age of the oldest source
    write not yet on the target (pending, in progress, or failed and not made moot by a newer
    copy of its key -- the same rule as the live RPO, /metrics and the reports). Targets with
    no replications yet appear with zeros."""
    now = time.time() if now is None else now
    rows = {(r["mirror"], r["target"]): r for r in ledger.status(now=now)}
    for b in ledger_rpo.backlog(ledger):
        r = rows.get((b["mirror"], b["target"]))
        if r is not None and b["oldest_open"] is not None:
            r["rpo_seconds"] = max(r["rpo_seconds"], now - b["oldest_open"])
    missed = Runs(ledger).missed_events()
    out = []
    for m in config.mirrors:
        for t in m.targets:
            r = rows.get((m.name, t.name)) or dict(mirror=m.name, target=t.name, pending=0, in_progress=0,
                                                   completed=0, failed=0, superseded=0, skipped=0,
                                                   rpo_seconds=0.0)
            r["rpo_objective"] = m.rpo_objective
            r["objective_met"] = r["rpo_seconds"] <= m.rpo_objective
            r["missed_events"] = missed.get((m.name, t.name), 0)
            out.append(r)
    return out


def group_status(config: Config, rows: list[dict], *, now: float | None = None) -> list[dict]:
    """Per consistency group: its recovery point is the earliest source write time still
    pending on any target of any of its mirrors (now when nothing is pending); its RPO is
    the worst of its targets'; `lagging` names the mirror and target that set it."""
    now = time.time() if now is None else now
    out = []
    for g in config.groups:
        members = [r for r in rows if r["mirror"] in g.mirrors]
        worst = max(members, key=lambda r: r["rpo_seconds"], default=None)
        rpo = worst["rpo_seconds"] if worst else 0.0
        objective = min((config.mirror(m).rpo_objective for m in g.mirrors), default=0.0)
        out.append(dict(group=g.name, mirrors=list(g.mirrors), rpo_seconds=rpo, recovery_point=now - rpo,
                        lagging=(f"{worst['mirror']} -> {worst['target']}" if worst and rpo > 0 else None),
                        pending=sum(r["pending"] + r["in_progress"] for r in members),
                        rpo_objective=objective, objective_met=rpo <= objective))
    return out


@dataclass
class Service:
    """One process's share of the work. Build, `await run(...)`, then `await close()`."""

    config: Config
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    ledger: Ledger | None = None

    def __post_init__(self) -> None:
        self.base_config = self.config  # the config file; self.config is what runs now
        if self.ledger is None:
            self.ledger = Ledger(self.config.ledger)
        self._endpoints: dict[str, Endpoint] = {}
        self._stop = asyncio.Event()
        self._pipeline_stop = asyncio.Event()
        self.pool: WorkerPool | None = None
        self.intakes: list[Intake] = []

    def endpoint(self, url: str) -> Endpoint:
        """The store for a location URL, opened once per process."""
        ep = self._endpoints.get(url)
        if ep is None:
            loc = parse_location(url)
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
                except Exception as e:  # noqa: BLE001
                    log.warning("could not open %s yet: %s", url, e)

    async def run(self, *, intake: bool = True, workers: bool = True, api: bool = False) -> None:
        """Run the chosen roles until stop(). Raises ServiceError before starting anything
        when the API cannot listen.

        The mirrors come from the ledger (seeded from the config file at start); when one
        changes (the API, or a failover), the intake and the workers restart with the new
        set: in-flight copies drain first, so nothing is lost or copied twice."""
        api_socket = bind_api(self.config.api.listen) if api else None
        await asyncio.to_thread(mirrors.seed, self.base_config, self.ledger)
        rev = await self._load_mirrors()
        tasks = []
        if api_socket is not None:
            tasks.append(asyncio.create_task(self._serve_api(api_socket), name="api"))
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

        rev, self.config = await asyncio.to_thread(load)
        return rev

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
                        tasks.append(asyncio.create_task(self._reconcile_loop(m, t), name=f"reconcile {m.name} {t.name}"))
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
        Raises KeyError for an unknown mirror or target, StoreError when a listing fails."""
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

    async def _serve_api(self, sock: socket.socket) -> None:
        import uvicorn

        from api.app import create_app

        app = create_app(self.base_config, self.ledger, service=self)  # the API reuses our stores and wakes our workers
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        server.install_signal_handlers = lambda: None  # the service owns signals
        serve = asyncio.create_task(server.serve(sockets=[sock]))
        await self._stop.wait()
        server.should_exit = True
        await serve

    async def close(self) -> None:
        for ep in self._endpoints.values():
            with contextlib.suppress(Exception):
                await ep.store.close()
        self._endpoints.clear()
        self.ledger.close()
