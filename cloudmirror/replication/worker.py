"""The worker pool: claims replications from the ledger and carries them out.

- bounded concurrency per (mirror, target) (a semaphore each);
- leases (replication/leases.py): renewed from a thread of their own while a job runs, so a
  busy event loop does not let them lapse; each write to a target first makes sure the lease
  still holds, and every outcome is recorded under the claim's lease token, so a worker that
  was starved or paused past its lease neither writes nor records anything for a job that
  was handed to another; a job whose lease is lost is cancelled; expired leases of crashed
  workers are reclaimed, and their next holder first looks whether the copy already landed;
- each job copies the source's *current* state guarded by the etag its HEAD saw, so a late
  or duplicate event can never make a target go back (invariant 3);
- errors: precondition failures retry at once, others back off exponentially with jitter
  up to `max_attempts`, then end `failed` with the reason;
- stop(): no new claims, in-flight copies drain (up to drain_timeout), the rest are released.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cloudmirror import metrics
from cloudmirror.config import Config, Mirror, Target
from cloudmirror.ledger.repo import LISTED_ORIGINS, Job, Ledger
from cloudmirror.replication.history import sync_history
from cloudmirror.replication.leases import LeaseKeeper, LeaseLost
from cloudmirror.replication.transfer import (
    Endpoint,
    close_source,
    copy_object,
    open_source,
    replica_metadata,
    server_side,
    written_by,
)
from cloudmirror.stores.base import GetResult, NotFound, ObjectMeta, PreconditionFailed, StoreError

log = logging.getLogger("cloudmirror.worker")


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: in [d/2, d] where d = min(cap, base * 2**(attempt-1))."""
    d = min(cap, base * (2 ** max(0, attempt - 1)))
    return d * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto


@dataclass
class Outcome:
    status: str  # completed | superseded | skipped
    detail: str | None = None
    meta: ObjectMeta | None = None
    target_etag: str | None = None
    target_version_id: str | None = None


class WorkerPool:
    def __init__(self, config: Config, ledger: Ledger, endpoint: Callable[[str], Endpoint], *,
                 owner: str | None = None, paused: Callable[[str], bool] = lambda name: False):
        self.config = config
        self.settings = config.workers
        self.ledger = ledger
        self.endpoint = endpoint  # location URL -> Endpoint (cached by the service)
        self.owner = owner or f"worker-{uuid.uuid4().hex[:10]}"
        self.paused = paused
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._slots = {(m.name, t.name): asyncio.Semaphore(self.settings.concurrency_per_target)
                       for m in config.mirrors for t in m.targets}
        self._inflight: dict[int, asyncio.Task] = {}
        # completions waiting for the next batched commit, each with a future set once committed
        self._completed: list[tuple[dict, asyncio.Future]] = []
        self.processed = 0
        self.keeper = LeaseKeeper(ledger, self.owner, self.settings.lease)
        # claim again once this many slots of a target are free (not once per finished job)
        self._refill = max(1, min(8, self.settings.concurrency_per_target // 4))

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # ------------------------------------------------------------ main loop
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.keeper.on_lost = lambda job_id: _call_soon(loop, self._lost, job_id)
        self.keeper.on_reclaimed = lambda: _call_soon(loop, self.wake)
        self.keeper.start()
        flusher = asyncio.create_task(self._flush_completions())
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                claimed = await self._claim_round()
                if claimed:
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_interval)
                except TimeoutError:
                    pass
        finally:
            await self._drain()
            flusher.cancel()
            await self._flush()
            await asyncio.to_thread(self.keeper.stop)

    async def _claim_round(self) -> int:
        total = 0
        for m in self.config.mirrors:
            if m.paused or self.paused(m.name):
                continue
            for t in m.targets:
                sem = self._slots[(m.name, t.name)]
                free = sem._value  # noqa: SLF001 - free slots of our own semaphore
                if free <= 0:
                    continue
                sent = time.monotonic()
                jobs = await asyncio.to_thread(self.ledger.claim, m.name, t.name, self.owner,
                                               min(free, self.settings.claim_batch), self.settings.lease)
                for job in jobs:
                    self.keeper.add(job, sent)
                    await sem.acquire()
                    task = asyncio.create_task(self._run_job(m, t, job, sem))
                    self._inflight[job.id] = task
                total += len(jobs)
        return total

    async def _flush_completions(self, every: float = 0.01) -> None:
        """Commit finished jobs in batches: one transaction per tick instead of one per job."""
        while True:
            await asyncio.sleep(every)
            try:
                await self._flush()
            except Exception:  # noqa: BLE001 - keep the batch; the DB may come back
                log.exception("recording %d completions failed; will retry", len(self._completed))

    async def _flush(self) -> None:
        if not self._completed:
            return
        batch, self._completed = self._completed, []
        try:
            n = await asyncio.to_thread(self.ledger.complete_many, self.owner, [d for d, _ in batch])
        except BaseException:
            self._completed[:0] = batch
            raise
        if n < len(batch):
            log.warning("%d of %d completions refused: their leases had lapsed and were taken back",
                        len(batch) - n, len(batch))
        for _, committed in batch:
            if not committed.done():
                committed.set_result(None)

    def _lost(self, job_id: int) -> None:
        """The keeper found the job's claim taken back (its lease lapsed): stop its copy."""
        task = self._inflight.get(job_id)
        if task is not None and not task.done():
            log.warning("lease of replication %s lost; cancelling its copy", job_id)
            task.cancel()

    async def _drain(self) -> None:
        if not self._inflight:
            return
        tasks = list(self._inflight.values())
        done, pending = await asyncio.wait(tasks, timeout=self.settings.drain_timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    # ------------------------------------------------------------ one job
    async def _run_job(self, m: Mirror, t: Target, job: Job, sem: asyncio.Semaphore) -> None:
        started = time.time()
        try:
            outcome = await self.process(m, t, job)
        except asyncio.CancelledError:
            await asyncio.to_thread(self.ledger.release, self.owner, {job.id: job.token})
            raise
        except PreconditionFailed as e:
            # the source changed between our HEAD and the copy: look again almost at once (not
            # counted as a failed attempt; the short random pause keeps a hot key from spinning)
            await asyncio.to_thread(self.ledger.retry_later, job.id, self.owner, str(e),
                                    time.time() + random.uniform(0.01, 0.1),  # noqa: S311
                                    count_attempt=False, token=job.token)
        except Exception as e:  # noqa: BLE001 - every failure is recorded, none is lost
            if isinstance(e, LeaseLost) or not self.keeper.holds(job.id):
                log.warning("replication %s of %s to %s stopped: %s", job.id, job.key, t.name,
                            e if isinstance(e, LeaseLost) else "its lease was lost")
            else:
                await self._failed(m, t, job, e)
        else:
            await self._record(m, t, job, outcome, started)
        finally:
            self.keeper.remove(job.id)
            self._inflight.pop(job.id, None)
            sem.release()
            self.processed += 1
            if sem._value >= self._refill:  # noqa: SLF001
                self.wake()

    async def _failed(self, m: Mirror, t: Target, job: Job, e: Exception) -> None:
        reason = str(e) if isinstance(e, StoreError) else f"{type(e).__name__}: {e}"
        if job.attempts >= self.settings.max_attempts:
            log.warning("replication %s of %s to %s failed for good: %s", job.id, job.key, t.name, reason)
            await asyncio.to_thread(self.ledger.fail, job.id, self.owner, f"after {job.attempts} attempts: {reason}",
                                    token=job.token)
            metrics.REPLICATIONS.labels(m.name, t.name, "failed").inc()
            return
        delay = backoff(job.attempts, self.settings.retry_base_delay, self.settings.retry_max_delay)
        log.info("replication %s of %s to %s: attempt %d failed (%s); retry in %.2fs",
                 job.id, job.key, t.name, job.attempts, reason, delay)
        await asyncio.to_thread(self.ledger.retry_later, job.id, self.owner, reason, time.time() + delay,
                                token=job.token)

    async def _record(self, m: Mirror, t: Target, job: Job, o: Outcome, started: float) -> None:
        self.keeper.finishing(job.id)
        if o.status == "completed":
            meta = o.meta
            committed = asyncio.get_running_loop().create_future()
            self._completed.append((dict(
                id=job.id, token=job.token, detail=o.detail, copied_etag=meta.etag if meta else None,
                copied_version_id=_identity(meta) if meta else None, target_etag=o.target_etag,
                target_version_id=o.target_version_id, bytes=meta.size if meta else None), committed))
            await committed  # the job's slot (and key) stay held until it is on record
            metrics.LATENCY.labels(m.name, t.name).observe(max(0.0, time.time() - job.source_time))
            if meta and o.detail is None:
                metrics.BYTES_COPIED.labels(m.name, t.name).inc(meta.size)
        else:
            await asyncio.to_thread(self.ledger.finish_other, job.id, self.owner, o.status, o.detail or "",
                                    token=job.token)
        metrics.REPLICATIONS.labels(m.name, t.name, o.status).inc()

    async def process(self, m: Mirror, t: Target, job: Job) -> Outcome:
        """Carry out one replication. Idempotent: running it twice leaves the same target.
        Raises LeaseLost (before any write) when the job's claim was taken back."""
        src = self.endpoint(m.source)
        dst = self.endpoint(t.url)
        if job.upload_id:  # a previous attempt died mid-upload: clean up first
            await self.keeper.ensure(job.id)
            await dst.store.abort_upload(dst.location.full_key(job.key), job.upload_id)
            await self._remember_upload(job, None)
        if m.versions == "all":
            return await self._sync_history(m, t, job, src, dst)
        # a streamed copy starts with the GET: its response describes the version, no HEAD
        opened = None
        try:
            if job.op == "put" and not server_side(src, dst):
                opened = await open_source(src, job.key, self.settings)
                meta = opened.meta
            else:
                meta = await src.store.head(src.location.full_key(job.key))
        except NotFound:
            meta = None
        try:
            return await self._replicate(m, t, job, src, dst, meta, opened)
        finally:
            if opened is not None:
                await close_source(opened)

    async def _remember_upload(self, job: Job, upload_id: str | None) -> None:
        """Record the job's unfinished multipart upload; LeaseLost when the job is not ours."""
        if not await asyncio.to_thread(self.ledger.set_upload_id, job.id, upload_id, owner=self.owner,
                                       token=job.token):
            raise LeaseLost(f"replication {job.id} was taken back; its upload is not recorded")

    async def _replicate(self, m: Mirror, t: Target, job: Job, src: Endpoint, dst: Endpoint, meta: ObjectMeta | None,
                         opened: GetResult | None) -> Outcome:
        listed = job.origin in LISTED_ORIGINS
        if job.op == "delete":
            if meta is not None and not meta.is_replica:
                return Outcome("superseded", "the source holds the key again (a newer write)")
            return await self._delete_replica(m, t, job, dst)
        if meta is None:
            return Outcome("superseded", "the source no longer has the key")
        if meta.is_replica:
            return Outcome("skipped", "the source object is a cloudmirror replica (loop prevention)")
        if not listed and job.last_copied_etag is not None and (
                job.last_copied_etag, job.last_copied_version) == (meta.etag, _identity(meta)):
            return Outcome("completed", "the target already holds this version", meta=meta)
        if job.lapsed_before and (there := await _already_copied(dst, job.key, meta, m.name)) is not None:
            return Outcome("completed", "the target already holds this version (copied before a lease lapsed)",
                           meta=meta, target_etag=there.etag, target_version_id=there.version_id)

        async def remember_upload(upload_id: str) -> None:
            await self._remember_upload(job, upload_id)

        try:
            result = await copy_object(src, dst, job.key, meta, mirror=m.name, target=t, settings=self.settings,
                                       on_upload_started=remember_upload, opened=opened,
                                       guard=lambda: self.keeper.ensure(job.id))
        except NotFound:
            return Outcome("superseded", "the source key was deleted during the copy")
        moved = job.etag is not None and meta.etag != job.etag
        return Outcome("completed", f"source had moved on to etag {meta.etag}; copied that" if moved else None,
                       meta=meta, target_etag=result.etag, target_version_id=result.version_id)

    async def _sync_history(self, m: Mirror, t: Target, job: Job, src: Endpoint, dst: Endpoint) -> Outcome:
        """All-versions mode: whatever version the job names, the key's whole history is
        brought up to date (replication/history.py)."""
        async def remember_upload(upload_id: str) -> None:
            await self.keeper.ensure(job.id)
            await self._remember_upload(job, upload_id)

        await self.keeper.ensure(job.id)
        done = await sync_history(src, dst, job.key, mirror=m, target=t, settings=self.settings,
                                  on_upload_started=remember_upload)
        res = done.result
        return Outcome("completed", done.detail(), meta=done.last, target_etag=res.etag if res else None,
                       target_version_id=res.version_id if res else None)

    def _is_a_source(self, dst: Endpoint) -> bool:
        cid = dst.location.container_id
        return any(m.source_location.container_id == cid for m in self.config.mirrors)

    async def _delete_replica(self, m: Mirror, t: Target, job: Job, dst: Endpoint) -> Outcome:
        """Delete the target's object, but only one this mirror wrote (its replica marker, or
        the ledger's record of a copy with the object's etag or version id: one HEAD, and one
        indexed query when the marker is absent): an object that was there before, or that
        someone wrote over the replica, stays. `deletes: replicate_all` removes any object,
        except on a target that is also a mirror's source (a two-way pair: the echo of a
        delete must never remove a newer original write on the other side)."""
        dst_key = dst.location.full_key(job.key)
        try:
            current = await dst.store.head(dst_key)
        except NotFound:
            return Outcome("completed", "already absent on the target")
        if not (m.deletes == "replicate_all" and not self._is_a_source(dst)) and not written_by(current, m.name):
            written = await asyncio.to_thread(self.ledger.written, m.name, t.name, [job.key])
            if not written_by(current, m.name, written.get(job.key, set())):
                return Outcome("skipped", "the target object was not written by cloudmirror; left in place")
        await self.keeper.ensure(job.id)
        await dst.store.delete(dst_key)
        return Outcome("completed")


async def _already_copied(dst: Endpoint, key: str, meta: ObjectMeta, mirror: str) -> ObjectMeta | None:
    """The target's object when it is this mirror's copy of exactly the source version
    `meta` describes (same replica metadata, size, MD5, content headers and tag count), as
    a previous holder of the job may have left it before its lease lapsed; else None, and
    the job copies as usual. One HEAD, only for jobs reclaimed from a lapsed lease."""
    try:
        there = await dst.store.head(dst.location.full_key(key))
    except NotFound:
        return None
    headers = there.content_headers()
    same = (there.metadata == replica_metadata(meta, mirror) and there.size == meta.size
            and (meta.md5 is None or there.md5 is None or there.md5 == meta.md5)
            and all(headers.get(k) == v for k, v in meta.content_headers().items())
            and meta.tag_count is not None and there.tag_count == meta.tag_count)
    return there if same else None


def _identity(meta: ObjectMeta) -> str | None:
    """What distinguishes two writes of identical bytes: the version id, else the write time."""
    if meta.version_id:
        return meta.version_id
    return meta.last_modified.isoformat() if meta.last_modified else None



def _call_soon(loop: asyncio.AbstractEventLoop, fn, *args) -> None:
    """Run fn(*args) on the loop from another thread; nothing when the loop has closed."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nothing left to tell
        pass
