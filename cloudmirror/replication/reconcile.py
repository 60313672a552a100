"""Reconciliation: compare a source with a target by listing both, and record every
difference in the ledger as work that the workers carry out through the normal path.

The two listings are merge-joined page by page (memory is constant in the number of
objects). For each key in the mirror's scope:

- missing on the target -> a copy;
- on both, different -> a copy. Different means: sizes differ; or both MD5s are known and
  differ; or an MD5 is unknown on one side (multipart / block uploads) and the target's
  replica marker does not record the source's current version (one HEAD of the target);
  with `checksum`, objects whose MD5 is unknown are read on both sides and compared;
- only on the target -> a delete when the mirror replicates deletes and cloudmirror wrote
  the object (below), else reported and left in place.

Deletes never wipe data that cloudmirror did not write. With `deletes: replicate` an object
only on the target is deleted only when this mirror wrote it: its etag or version id is
one the ledger recorded for a copy the mirror completed to that target (one indexed query
per page), or else its replica marker names the mirror (one HEAD per such object: listings
do not carry user metadata). Anything else -- objects that were there before the mirror,
written by someone else, or written over a replica -- is counted as `foreign` and kept.
`deletes: replicate_all` deletes every object only on the target.

A run also never deletes more than the mirror's `max_deletes` on a target (a count, or a
percent of the objects the target listing found in scope) unless forced: its deletes are
recorded *held* (`skipped`, which no worker claims) and only once the whole listing is
compared are they released, when there are at most that many; above it, none is released,
the run reports the count and a sample of the keys (`deletes_refused`), and they stay
`skipped` with the reason. Copies are recorded as usual. A dry run reports the same
numbers; `force` records the deletes at once. A resumed run counts the deletes it held
before its interruption too (the percent is then of the objects listed since the resume).

A key whose replication to this target is already pending or in progress is left to that
job, and (except in a backfill) so is an object written within the mirror's
`reconcile_grace`, whose event may still be on its way. A difference for a source version
the ledger never saw is a *missed event*: counted on the run, which is how operators learn
their notifications are broken. A backfill is a reconcile of a target that has never been
reconciled; it does not count missed events.

Each page's findings are recorded in one transaction with the run's resume position (the
last source key of the page), so a run killed half way resumes after that key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from cloudmirror.config import Mirror, Target
from cloudmirror.ledger.repo import Ledger, NewVersion, TargetPlan
from cloudmirror.ledger.runs import HELD, Runs
from cloudmirror.replication.transfer import Endpoint, written_by
from cloudmirror.stores.base import SOURCE_VERSION_KEY, ListOptions, NotFound, ObjectMeta

log = logging.getLogger("cloudmirror.reconcile")
PAGE = 500
HEADS = 16  # concurrent HEADs reading the replica marker of objects the ledger does not know
SAMPLE = 20


@dataclass
class Progress:
    """What a run has done so far (also handed to the progress callback)."""

    run_id: int = 0
    kind: str = "reconcile"
    listed: int = 0
    target_listed: int = 0
    missing: int = 0
    stale: int = 0
    extra: int = 0
    extra_kept: int = 0  # extra on the target, left in place (deletes: ignore, or not written by cloudmirror)
    foreign: int = 0  # of those, objects cloudmirror did not write (kept whatever `deletes` says but replicate_all)
    deletes: int = 0  # deletes found (a dry run: it would make) on the target
    delete_limit: int = 0  # the mirror's max_deletes for this target, once the listing is done
    deletes_refused: bool = False  # deletes > delete_limit: none was (a dry run: would be) made
    delete_sample: list[str] = field(default_factory=list)  # a few keys it deletes, or would
    in_flight: int = 0  # differences already being repaired by a pending job
    too_recent: int = 0  # written within reconcile_grace: left to its event until the next run
    missed_events: int = 0
    recorded: int = 0
    started: float = field(default_factory=time.monotonic)
    wall_start: float = field(default_factory=time.time)  # before either listing began
    examples: list[str] = field(default_factory=list)  # a few differing keys, for reports

    @property
    def differences(self) -> int:
        return self.missing + self.stale + self.extra

    @property
    def rate(self) -> float:
        return self.listed / max(time.monotonic() - self.started, 1e-9)

    @property
    def refusal(self) -> str | None:
        """One line saying why the deletes were (or would be) refused, else None."""
        if not self.deletes_refused:
            return None
        return (f"{'would delete' if self.kind == 'dry-run' else 'nothing deleted: it would delete'} "
                f"{self.deletes} object(s), more than max_deletes allows ({self.delete_limit} of "
                f"{self.target_listed} listed); e.g. {', '.join(self.delete_sample[:5])}; run again with --force "
                "(API: \"force\": true) to delete them")


async def _relative(it: AsyncIterator[ObjectMeta], prefix: str, ahead: int = 2000
                    ) -> AsyncIterator[tuple[str, ObjectMeta]]:
    """Relative keys of a listing, read up to `ahead` objects in advance in a background task
    so that the source and target listings are fetched concurrently (memory stays bounded)."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=ahead)
    done = object()

    async def pump() -> None:
        try:
            async for m in it:
                await queue.put(m)
            await queue.put(done)
        except Exception as e:  # noqa: BLE001 - handed to the consumer
            await queue.put(e)

    task = asyncio.create_task(pump())
    try:
        while True:
            m = await queue.get()
            if m is done:
                return
            if isinstance(m, Exception):
                raise m
            yield m.key[len(prefix):], m
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def merge(src: AsyncIterator[tuple[str, ObjectMeta]], dst: AsyncIterator[tuple[str, ObjectMeta]]
                ) -> AsyncIterator[tuple[str, ObjectMeta | None, ObjectMeta | None]]:
    """Merge-join two key-ordered listings: (key, source meta or None, target meta or None)."""
    a = await anext(src, None)
    b = await anext(dst, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            yield a[0], a[1], None
            a = await anext(src, None)
        elif a is None or b[0] < a[0]:
            yield b[0], None, b[1]
            b = await anext(dst, None)
        else:
            yield a[0], a[1], b[1]
            a, b = await anext(src, None), await anext(dst, None)


class Reconciler:
    """Reconciles one mirror with one of its targets."""

    def __init__(self, mirror: Mirror, target: Target, endpoint: Callable[[str], Endpoint], ledger: Ledger):
        self.mirror = mirror
        self.target = target
        self.src = endpoint(mirror.source)
        self.dst = endpoint(target.url)
        self.ledger = ledger
        self.runs = Runs(ledger)
        self._checkpointed: dict[str, int] = {}

    async def run(self, *, dry_run: bool = False, checksum: bool = False, kind: str | None = None,
                  force: bool = False, on_progress: Callable[[Progress], None] = lambda p: None) -> Progress:
        """Compare, record the differences (unless dry_run), return what was found.
        Deletes above the mirror's max_deletes are refused (Progress.deletes_refused)
        unless `force`. Raises StoreError when a listing fails (the run is then marked
        failed; a later run of the same kind resumes from its last checkpoint)."""
        if kind is None:
            done = await asyncio.to_thread(self.runs.has_finished, self.mirror.name, self.target.name)
            kind = "reconcile" if done else "backfill"
        if dry_run:  # changes nothing, not even the runs table
            prog = Progress(run_id=0, kind="dry-run")
            await self._compare(prog, None, True, checksum, force, on_progress)
            await self._settle_deletes(prog, force)
            return prog
        run_id, position = await asyncio.to_thread(self.runs.start, self.mirror.name, self.target.name, kind)
        prog = Progress(run_id=run_id, kind=kind)
        try:
            await self._compare(prog, position, False, checksum, force, on_progress)
            await self._settle_deletes(prog, force)
        except BaseException as e:
            await asyncio.to_thread(self.runs.finish, run_id, error=f"{type(e).__name__}: {e}"[:2000])
            raise
        await asyncio.to_thread(self.runs.finish, run_id)
        return prog

    async def _compare(self, prog: Progress, position: str | None, dry_run: bool, checksum: bool, force: bool,
                       on_progress: Callable[[Progress], None]) -> None:
        sp, tp = self.src.location.prefix, self.dst.location.prefix
        start = {"start_after": sp + position} if position is not None else {}
        src = _relative(self.src.store.list(ListOptions(prefix=sp, **start)), sp)
        dst = _relative(self.dst.store.list(ListOptions(prefix=tp, **({"start_after": tp + position}
                                                                     if position is not None else {}))), tp)
        page: list[tuple[str, str, ObjectMeta | None, ObjectMeta | None]] = []  # (key, put|delete, source, target)
        last_src_key = position
        async for key, s, t in merge(src, dst):
            if not self.mirror.filter.matches(key):
                continue
            if s is not None:
                prog.listed += 1
                last_src_key = key
            if t is not None:
                prog.target_listed += 1
            diff = await self._differs(key, s, t, checksum)
            if diff is not None:
                if len(prog.examples) < 20:
                    prog.examples.append(f"{diff}: {key}")
                setattr(prog, diff, getattr(prog, diff) + 1)
                if diff == "extra" and self.mirror.deletes == "ignore":
                    prog.extra_kept += 1
                else:
                    page.append((key, "delete" if diff == "extra" else "put", s, t))
            if len(page) >= PAGE or (s is not None and prog.listed % PAGE == 0):
                await self._flush(page, prog, last_src_key, dry_run, force)
                page = []
                on_progress(prog)
        await self._flush(page, prog, last_src_key, dry_run, force)
        on_progress(prog)

    async def _own_deletes(self, page: list[tuple[str, str, ObjectMeta | None, ObjectMeta | None]], prog: Progress
                           ) -> list[tuple[str, str, ObjectMeta | None, ObjectMeta | None]]:
        """The page without the deletes of objects this mirror did not write (counted as
        foreign and kept), unless the mirror replicates all deletes."""
        cands = [(k, t) for k, op, _, t in page if op == "delete" and t is not None]
        if not cands or self.mirror.deletes == "replicate_all":
            return page
        name = self.mirror.name
        written = await asyncio.to_thread(self.ledger.written, name, self.target.name, [k for k, _ in cands])
        sem = asyncio.Semaphore(HEADS)

        async def verdict(key: str, t: ObjectMeta) -> str:
            if written_by(t, name, written.get(key, set())):
                return "ours"
            async with sem:  # the listing carried no marker: the object's own metadata tells
                try:
                    head = await self.dst.store.head(self.dst.location.full_key(key))
                except NotFound:
                    return "gone"
            return "ours" if written_by(head, name, written.get(key, set())) else "foreign"

        verdicts = dict(zip([k for k, _ in cands], await asyncio.gather(*(verdict(k, t) for k, t in cands)),
                            strict=True))
        foreign = sum(1 for v in verdicts.values() if v == "foreign")
        prog.foreign += foreign
        prog.extra_kept += foreign
        return [item for item in page if item[1] != "delete" or verdicts.get(item[0]) == "ours"]

    def _count_delete(self, prog: Progress, key: str) -> None:
        prog.deletes += 1
        if len(prog.delete_sample) < SAMPLE:
            prog.delete_sample.append(key)

    async def _settle_deletes(self, prog: Progress, force: bool) -> None:
        """Once the listing is compared: release the run's held deletes when they are within
        max_deletes (or forced), else refuse them all and say so."""
        prog.delete_limit = self.mirror.delete_limit(prog.target_listed)
        if prog.kind == "dry-run":
            prog.deletes_refused = not force and prog.deletes > prog.delete_limit
            return
        m, t = self.mirror.name, self.target.name
        if force:  # this run's deletes are pending already; those held before a resume go too
            prog.deletes += await asyncio.to_thread(self.runs.settle_held, m, t, prog.run_id, release=True)
            return
        prog.deletes, prog.delete_sample = await asyncio.to_thread(self.runs.held_deletes, m, t, prog.run_id,
                                                                   sample=SAMPLE)
        if prog.deletes <= prog.delete_limit:
            await asyncio.to_thread(self.runs.settle_held, m, t, prog.run_id, release=True)
            return
        prog.deletes_refused = True
        await asyncio.to_thread(self.runs.settle_held, m, t, prog.run_id, release=False,
                                detail=f"not deleted: reconcile run {prog.run_id} would delete {prog.deletes} "
                                       f"objects, above max_deletes ({prog.delete_limit}); needs --force")
        log.warning("reconcile of %s -> %s: %s", m, t, prog.refusal)

    async def _differs(self, key: str, s: ObjectMeta | None, t: ObjectMeta | None, checksum: bool) -> str | None:
        if s is None:
            return "extra"
        if t is None:
            return "missing"
        if s.size != t.size:
            return "stale"
        if s.md5 and t.md5:
            return None if s.md5 == t.md5 else "stale"
        if checksum:
            a, b = await asyncio.gather(self._md5(self.src, key), self._md5(self.dst, key))
            return None if a == b else "stale"
        try:
            head = await self.dst.store.head(self.dst.location.full_key(key))
        except NotFound:
            return "missing"
        recorded = head.metadata.get(SOURCE_VERSION_KEY)
        return None if recorded and recorded in (s.version_id, s.etag) else "stale"

    async def _in_sync_now(self, key: str, s: ObjectMeta) -> bool:
        try:
            t = await self.dst.store.head(self.dst.location.full_key(key))
        except NotFound:
            return False
        return await self._differs(key, s, t, checksum=False) is None

    @staticmethod
    async def _md5(ep: Endpoint, key: str) -> str | None:
        try:
            got = await ep.store.get(ep.location.full_key(key))
        except NotFound:
            return None
        h = hashlib.md5(usedforsecurity=False)  # a comparison, not security
        async for chunk in got.body:
            h.update(chunk)
        return h.hexdigest()

    async def _flush(self, page: list[tuple[str, str, ObjectMeta | None, ObjectMeta | None]], prog: Progress,
                     position: str | None, dry_run: bool, force: bool) -> None:
        page = await self._own_deletes(page, prog)
        if dry_run:
            for key, op, _, _ in page:
                if op == "delete":
                    self._count_delete(prog, key)
            return
        keys = [k for k, _, _, _ in page]
        busy = await asyncio.to_thread(self.runs.open_keys, self.mirror.name, self.target.name, keys) if keys else set()
        seen = await asyncio.to_thread(self.runs.seen, self.mirror.name, keys) if keys else {}
        copied = (await asyncio.to_thread(self.runs.copied, self.mirror.name, self.target.name, keys, prog.wall_start)
                  if keys else {})
        items, missed = [], 0
        now = time.time()
        recent = now - self.mirror.reconcile_grace
        for key, op, s, _ in page:
            # being repaired, or copied since the target was listed (then look again)
            if key in busy or (op == "put" and s is not None and s.etag in copied.get(key, ())
                               and await self._in_sync_now(key, s)):
                prog.in_flight += 1
                continue
            if prog.kind == "reconcile" and s is not None and s.last_modified and s.last_modified.timestamp() > recent:
                prog.too_recent += 1  # its event may still be on its way: judged by the next run
                continue
            if op == "put" and prog.kind == "reconcile" and not ({s.etag, s.version_id} & seen.get(key, set())):
                missed += 1
            when = s.last_modified.timestamp() if s is not None and s.last_modified else now
            plan = TargetPlan(self.target.name)
            if op == "delete":
                self._count_delete(prog, key)
                if not force:  # released once the whole run is within max_deletes
                    plan = TargetPlan(self.target.name, "skipped", HELD)
            items.append(NewVersion(
                mirror=self.mirror.name, key=key, token=f"r:{prog.run_id}:{op}", op=op, source_time=when,
                targets=[plan], version_id=s.version_id if s else None,
                etag=s.etag if s else None, size=s.size if s else None,
                origin="reconcile" if prog.kind == "reconcile" else "backfill"))
        if items:
            await asyncio.to_thread(self.ledger.record, items, [])
        prog.recorded += len(items)
        prog.missed_events += missed
        now_counts = {k: getattr(prog, k) for k in ("listed", "missing", "stale", "extra", "missed_events")}
        delta = {k: v - self._checkpointed.get(k, 0) for k, v in now_counts.items()}
        self._checkpointed = now_counts
        await asyncio.to_thread(self.runs.checkpoint, prog.run_id, position, **delta)
