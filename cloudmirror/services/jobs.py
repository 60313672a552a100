"""Background jobs that the REST API starts and reports on: today a reconcile, run in the API
process by the same Service.reconcile that `cloudmirror reconcile` uses.

A job is a row of the ledger's `jobs` table: queued -> running -> finished | failed, with
progress counters refreshed every PROGRESS_EVERY_S (also the heartbeat) and, when finished,
the per-target findings that `cloudmirror reconcile --json` prints. A reconcile whose deletes on
a target were refused (more than the mirror's max_deletes; see cloudmirror.replication.reconcile)
ends `failed`, its error saying how many it would delete with a sample of the keys, its result
holding every target's findings (the copies it found are recorded all the same); asked with
`force`, the deletes are made. At most
`max_concurrent` jobs run at once per process; the others wait, queued. A job whose process
stops is marked failed (interrupted) on a clean stop, or (abandoned) by the next API process
to start once its heartbeat is ABANDONED_AFTER_S old; the reconcile run itself resumes from
its checkpoint the next time the mirror is reconciled.

Two reconciles that change the ledger do not overlap on one mirror and target: a second one
is refused (ConflictError) while the first is queued or running (checked in the ledger, so
across API processes too, though two processes asked at the same instant could both start;
the scheduled `reconcile_every` runs of the workers are not jobs and are not checked). Dry
runs change nothing and may run beside anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from cloudmirror.errors import ConflictError, NotFoundError
from cloudmirror.ledger.jobs import JobLedger
from cloudmirror.ledger.repo import Ledger
from cloudmirror.paging import DEFAULT_LIMIT, Page, page_of
from cloudmirror.replication.reconcile import Progress
from cloudmirror.services.runtime import Service

log = logging.getLogger("cloudmirror.services.jobs")

RECONCILE = "reconcile"
PROGRESS_EVERY_S = 2.0
ABANDONED_AFTER_S = 120.0
MAX_CONCURRENT = 2
COUNTERS = ("listed", "missing", "stale", "extra", "extra_kept", "foreign", "deletes", "deletes_refused", "in_flight",
            "too_recent", "recorded", "missed_events")


def reconcile_summary(target: str, p: Progress) -> dict:
    """One target's findings, with the keys that `cloudmirror reconcile --json` prints."""
    return dict(target=target, kind=p.kind, listed=p.listed, missing=p.missing, stale=p.stale, extra=p.extra,
                extra_kept=p.extra_kept, in_flight=p.in_flight, recorded=p.recorded, missed_events=p.missed_events,
                examples=list(p.examples), target_listed=p.target_listed, foreign=p.foreign, deletes=p.deletes,
                delete_limit=p.delete_limit, deletes_refused=p.deletes_refused, delete_sample=list(p.delete_sample),
                refusal=p.refusal)


@dataclass
class ReconcileTally:
    """Progress of a reconcile job over its targets (one after the other)."""

    targets: list[str]
    done: list[Progress] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    current: Progress | None = None
    copies: int = 0
    deletes: int = 0

    def update(self, p: Progress) -> None:
        self.current = p

    def target_done(self, target: str, p: Progress, ops: dict[str, int]) -> None:
        self.done.append(p)
        self.current = None
        deletes = 0 if p.deletes_refused else ops["delete"]  # refused ones are recorded, never carried out
        self.copies += ops["put"]
        self.deletes += deletes
        self.rows.append(dict(reconcile_summary(target, p), run_id=p.run_id or None,
                              copies_enqueued=ops["put"], deletes_enqueued=deletes))

    def snapshot(self) -> dict:
        runs = self.done + ([self.current] if self.current is not None else [])
        out = {k: sum(getattr(p, k) for p in runs) for k in COUNTERS}
        out["differences"] = out["missing"] + out["stale"] + out["extra"]
        out["enqueued"] = out.pop("recorded")
        out.update(copies_enqueued=self.copies, deletes_enqueued=self.deletes, targets_total=len(self.targets),
                   targets_done=len(self.done),
                   current_target=self.targets[len(self.done)] if len(self.done) < len(self.targets) else None)
        return out


class JobRunner:
    """Starts jobs as asyncio tasks of the running loop and records them in the ledger."""

    def __init__(self, service: Service, *, max_concurrent: int = MAX_CONCURRENT):
        self.service = service
        self.jobs = JobLedger(service.ledger)
        self._tasks: dict[int, asyncio.Task] = {}
        self._slots = asyncio.Semaphore(max_concurrent)
        self._admit = asyncio.Lock()

    async def open(self) -> int:
        """Fail the jobs of processes that died (no heartbeat for ABANDONED_AFTER_S)."""
        return await asyncio.to_thread(self.jobs.fail_abandoned, ABANDONED_AFTER_S,
                                       "abandoned: the process running it stopped (a reconcile resumes from its "
                                       "checkpoint the next time it runs)")

    async def close(self) -> None:
        """Interrupt the running jobs; each is recorded as failed."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def start_reconcile(self, mirror: str, *, target: str | None = None, dry_run: bool = False,
                              checksum: bool = False, force: bool = False, created_by: str) -> dict:
        """Queue a reconcile of one target or all targets of a mirror; returns the job.
        `force` carries out deletes above the mirror's max_deletes.
        Raises NotFoundError (unknown mirror), InvalidInput (not a target of the mirror),
        ConflictError (a reconcile that changes the ledger already covers that target)."""
        m = self.service.config.mirror(mirror)
        if target is not None:
            m.target(target)
        targets = [target] if target is not None else [t.name for t in m.targets]
        params = dict(dry_run=dry_run, checksum=checksum, force=force, targets=targets)
        async with self._admit:  # check and create as one step within this process
            if not dry_run:
                busy = await asyncio.to_thread(self.jobs.active_changing, RECONCILE, m.name, target)
                if busy is not None:
                    raise ConflictError(f"job {busy['id']} is already reconciling mirror {m.name!r}"
                                        f"{' -> ' + busy['target'] if busy['target'] else ''} ({busy['status']}): "
                                        "wait for it to finish")
            job = await asyncio.to_thread(self.jobs.create, kind=RECONCILE, mirror=m.name, target=target,
                                          params=params, created_by=created_by, owner=self.service.owner,
                                          progress=ReconcileTally(targets).snapshot())
        task = asyncio.create_task(self._reconcile(job["id"], m.name, targets, dry_run, checksum, force),
                                   name=f"job {job['id']}")
        self._tasks[job["id"]] = task
        task.add_done_callback(lambda _t, i=job["id"]: self._tasks.pop(i, None))
        return job

    async def _reconcile(self, job_id: int, mirror: str, targets: list[str], dry_run: bool, checksum: bool,
                         force: bool) -> None:
        tally = ReconcileTally(targets)
        beat = asyncio.create_task(self._heartbeat(job_id, tally))  # queued jobs are alive too
        try:
            async with self._slots:
                await asyncio.to_thread(self.jobs.start, job_id)
                for t in targets:
                    [p] = await self.service.reconcile(mirror, t, dry_run=dry_run, checksum=checksum, force=force,
                                                       on_progress=tally.update)
                    ops = (await asyncio.to_thread(self.jobs.run_ops, mirror, p.run_id)
                           if p.run_id else {"put": 0, "delete": 0})
                    tally.target_done(t, p, ops)
            await self._stop_beating(beat)
            refused = [f"{r['target']}: {r['refusal']}" for r in tally.rows if r["deletes_refused"] and not dry_run]
            await asyncio.to_thread(self.jobs.finish, job_id, progress=tally.snapshot(), result=tally.rows,
                                    error=(f"deletes refused (max_deletes) on {len(refused)} target(s): "
                                           + "; ".join(refused))[:2000] if refused else None)
        except asyncio.CancelledError:
            await self._stop_beating(beat)
            await asyncio.shield(asyncio.to_thread(
                self.jobs.finish, job_id, progress=tally.snapshot(), result=tally.rows or None,
                error="interrupted: the process stopped before the job finished"))
            raise
        except Exception as e:  # noqa: BLE001 - recorded on the job, which is how callers learn of it
            log.warning("job %s (reconcile %s) failed: %s", job_id, mirror, e)
            await self._stop_beating(beat)
            await asyncio.to_thread(self.jobs.finish, job_id, progress=tally.snapshot(), result=tally.rows or None,
                                    error=f"{type(e).__name__}: {e}"[:2000])

    @staticmethod
    async def _stop_beating(beat: asyncio.Task) -> None:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat

    async def _heartbeat(self, job_id: int, tally: ReconcileTally) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            try:
                await asyncio.to_thread(self.jobs.beat, job_id, tally.snapshot())
            except Exception as e:  # noqa: BLE001 - the next beat tries again
                log.warning("job %s: cannot record progress: %s", job_id, e)


def get_job(ledger: Ledger, job_id: int) -> dict:
    """A job by id. Raises NotFoundError."""
    job = JobLedger(ledger).get(job_id)
    if job is None:
        raise NotFoundError(f"no job with id {job_id}")
    return job


def list_jobs(ledger: Ledger, *, before: int | None = None, limit: int = DEFAULT_LIMIT, mirror: str | None = None,
              status: str | None = None) -> Page[dict]:
    """Jobs newest first."""
    return page_of(JobLedger(ledger).list(before=before, limit=limit, mirror=mirror, status=status), limit)
