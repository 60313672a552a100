"""The failback's comparison of the current primary P with the old one O, and its repairs.

Both locations are listed in key order and merge-joined (constant memory); keys whose size
or MD5 differ are looked at with a HEAD on each side, which tells an original write from a
cloudmirror replica (the replica marker). Per key in the mirror's scope:

| P | O | meaning | action |
|---|---|---|---|
| original | replica or absent | written on P (during the failover) | copy P -> O |
| replica | original | O's write never reached P (data at risk, or written on O later) | copy O -> P (*restored*) |
| absent | original, not deleted on P since the failover | the same | copy O -> P (*restored*) |
| replica | absent | O deleted it and the delete was at risk | delete on P (a replica) |
| replica | absent, delete not at risk | O lost it | copy P -> O |
| absent, deleted since the failover | replica, or original older than the failover | P's delete | delete on O |
| original | original | **conflict**: written on both sides | by the policy |
| absent, deleted since the failover | original written after the switch or at risk | **conflict** (a delete vs a write) | by the policy |

Policies: `newest_wins` (default) keeps the side written last (the objects' last-modified
times; a delete's time from the ledger; a tie keeps the current primary's), `primary_wins`
keeps the current primary's, `keep_both` keeps the current primary's under the key and
the old primary's under `NAME.conflict-<UTC stamp>.EXT` (the stamp before the last
extension, so suffix filters still match), written as an original on P and copied to O.

The old primary is unfenced first (when its store is a Fencer and a planned failover
fenced it): at the failback's start rather than at its switch, so that a failback never
switches applications back onto a location that still denies their writes. Writes that
land on O while the failback runs are ordinary O writes to the comparison (copied to P,
or conflicts), and the rounds repeat until nothing differs. A failback that then fails
leaves O unfenced (the fence is not put back): applications follow `active`, still P.

Copies go straight through the stores (copy_object: guarded by the etag seen, verified,
marked as replicas); every round compares again until nothing differs. The other targets
followed P during the failover; what the failback restores from O (and the kept conflict
versions) is copied to them as well.

Deletes cannot wipe data. A *replica* in the table above means one this mirror wrote: its
replica marker names the mirror, or the ledger recorded a completed copy of the key to that
location with the object's etag or version id (another mirror's replica counts as an
original here, and is left in place where a replica would be deleted, unless the mirror
says `deletes: replicate_all`). Besides those, the failback deletes on O only what
applications deleted on P since the failover (recorded in the ledger) when O's object is
the version from before the switch, and the losing side of a conflict. And it never deletes
more than the mirror's `max_deletes` on a location (a count, or a percent of the objects the
comparison listed there in scope) unless forced: a round that would is refused before it
changes anything (ConflictError naming the count and a sample of the keys, also kept in the
record's detail as `deletes_refused`; nothing is switched).
"""  # noqa: E501 - a markdown table row cannot be wrapped

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cloudmirror.config import Mirror, Target
from cloudmirror.errors import ConflictError
from cloudmirror.ledger.failovers import Failovers, SwitchRefused
from cloudmirror.replication.reconcile import merge
from cloudmirror.replication.transfer import Endpoint, copy_object, written_by
from cloudmirror.stores.base import (
    REPLICA_MARKER,
    SOURCE_VERSION_KEY,
    Fencer,
    GetOptions,
    ListOptions,
    NotFound,
    ObjectMeta,
    PreconditionFailed,
    PutOptions,
)

POLICIES = ("newest_wins", "primary_wins", "keep_both")
MAX_ROUNDS = 20
CONCURRENCY = 8


def conflict_key(key: str, stamp: str) -> str:
    """'a/photo.jpg' -> 'a/photo.conflict-20261126T090000Z.jpg'; 'a/README' -> 'a/README.conflict-...'."""
    head, slash, leaf = key.rpartition("/")
    stem, dot, ext = leaf.rpartition(".")
    if not dot or not stem:
        return f"{key}.conflict-{stamp}"
    return f"{head}{slash}{stem}.conflict-{stamp}.{ext}"


def _ts(meta: ObjectMeta | None) -> float:
    return meta.last_modified.timestamp() if meta is not None and meta.last_modified else 0.0


def _copy_of(a: ObjectMeta, b: ObjectMeta) -> bool:
    """Is `a` a cloudmirror replica of exactly the version `b`?"""
    rec = a.metadata.get(SOURCE_VERSION_KEY)
    return a.is_replica and bool(rec) and rec in (b.version_id, b.etag)


@dataclass
class Plan:
    to_old: list[str] = field(default_factory=list)  # copy P -> O
    to_new: list[ObjectMeta] = field(default_factory=list)  # copy O -> P (O's head meta, key relative)
    del_old: list[ObjectMeta] = field(default_factory=list)
    del_new: list[ObjectMeta] = field(default_factory=list)
    keep: list[tuple[str, ObjectMeta]] = field(default_factory=list)  # (conflict key, O's version) to write on P
    conflicts: list[dict] = field(default_factory=list)
    kept_deletes: int = 0  # deletes not made (deletes: ignore, or an object this mirror did not write)
    listed_old: int = 0  # objects in scope on O, then on P (the base of a max_deletes percent)
    listed_new: int = 0

    @property
    def empty(self) -> bool:
        return not (self.to_old or self.to_new or self.del_old or self.del_new or self.keep)


class Failback:
    def __init__(self, service, m: Mirror, active: str, record: dict, switch: dict | None, policy: str,
                 timeout_s: float, force: bool = False):
        self.service = service
        self.m = m
        self.new, self.old = active, m.source
        self.P: Endpoint = service.endpoint(self.new)
        self.O: Endpoint = service.endpoint(self.old)
        self.record = record
        self.switched_at = switch["switched_at"] if switch else 0.0
        self.switch_id = switch["id"] if switch else None
        self.policy = policy
        self.timeout_s = timeout_s
        self.store = Failovers(service.ledger)
        self.settings = service.base_config.workers
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.others = [t for t in m.targets if t.url != self.new]
        self.counts = dict(conflicts=0, restored=0, copied=0, deleted=0)
        self.force = force
        self.deleted = {"old": 0, "new": 0}  # per location, for max_deletes
        self.limits: dict[str, int] | None = None  # from the first comparison, before any delete
        self._sem = asyncio.Semaphore(CONCURRENCY)

    async def run(self) -> dict:
        unfenced = await self.unfence_old()
        at_risk = await asyncio.to_thread(self._at_risk)
        deleted = await asyncio.to_thread(self.store.deleted_since, self.m.name, self.switched_at or 0.0)
        deadline = time.monotonic() + self.timeout_s
        rounds = 0
        while True:
            plan = await self.compare(at_risk, deleted)
            await asyncio.to_thread(self._record_conflicts, plan)
            if plan.empty:
                break
            if rounds >= MAX_ROUNDS or time.monotonic() > deadline:
                raise ConflictError(f"failback #{self.record['id']}: {self.old} and {self.new} still differ after "
                                    f"{rounds} round(s) ({len(plan.to_old) + len(plan.to_new)} copies left); are "
                                    "applications still writing to both? Nothing was switched")
            await self._check_deletes(plan, rounds)
            await self.apply(plan)
            rounds += 1
            await asyncio.to_thread(self.store.beat, self.record["id"], {"rounds": rounds, **self.counts})
        try:
            await asyncio.to_thread(self.store.switch_back, self.record["id"], self.m.name, self.old, self.new)
        except SwitchRefused as e:
            raise ConflictError(str(e)) from None
        # writes that reached P between the last comparison and the switch: P is a target now
        late = await self.compare(at_risk, deleted, after_switch=True)
        await self.apply(late)
        return await asyncio.to_thread(self.store.finish, self.record["id"], "completed", **self.counts,
                                       detail={"rounds": rounds, "conflict_suffix": f".conflict-{self.stamp}",
                                               "unfenced": unfenced})

    async def _check_deletes(self, plan: Plan, rounds: int) -> None:
        """Refuse a round that would take a location past max_deletes (unless forced), before
        it changes anything. Raises ConflictError with the count and a sample of the keys."""
        if self.limits is None:
            self.limits = {"old": self.m.delete_limit(plan.listed_old), "new": self.m.delete_limit(plan.listed_new)}
        if self.force:
            return
        for side, where, dels, listed in (("old", self.old, plan.del_old, plan.listed_old),
                                          ("new", self.new, plan.del_new, plan.listed_new)):
            total = self.deleted[side] + len(dels)
            if total <= self.limits[side]:
                continue
            sample = sorted(o.key for o in dels)[:20]
            refused = dict(location=where, deletes=total, limit=self.limits[side], listed=listed, sample=sample)
            await asyncio.to_thread(self.store.beat, self.record["id"],
                                    {"rounds": rounds, **self.counts, "deletes_refused": refused})
            raise ConflictError(
                f"failback #{self.record['id']} stopped before deleting: it would delete {total} object(s) on "
                f"{where}, more than max_deletes allows ({self.limits[side]} of {listed} listed); e.g. "
                f"{', '.join(sample[:5])}. Nothing was switched; run it again with --force (API: \"force\": true) "
                "to delete them")

    async def unfence_old(self) -> bool:
        """Remove a fence from the old primary (a no-op without one; idempotent). Returns
        whether one was removed. Raises the StoreError of a fence that cannot be removed,
        before anything is copied."""
        if not isinstance(self.O.store, Fencer):
            return False
        unfenced = await self.O.store.unfence()
        await asyncio.to_thread(self.store.beat, self.record["id"], {"unfenced": unfenced})
        return unfenced

    def _at_risk(self) -> dict[str, str]:
        """key -> op of the newest version the failover left at risk."""
        if self.switch_id is None:
            return {}
        out: dict[str, tuple[float, str]] = {}
        after = None
        while True:
            rows = self.store.objects(self.switch_id, kind="at_risk", after=after, limit=1000)
            for r in rows[:1000]:
                if r["key"] not in out or (r["source_time"] or 0) >= out[r["key"]][0]:
                    out[r["key"]] = (r["source_time"] or 0, r["op"])
            if len(rows) <= 1000:
                return {k: op for k, (_, op) in out.items()}
            after = rows[999]["id"]

    # ------------------------------------------------------------ comparing
    async def _listing(self, ep: Endpoint) -> AsyncIterator[tuple[str, ObjectMeta]]:
        prefix = ep.location.prefix
        async for o in ep.store.list(ListOptions(prefix=prefix)):
            yield o.key[len(prefix):], o

    async def _head(self, ep: Endpoint, key: str) -> ObjectMeta | None:
        try:
            meta = await ep.store.head(ep.location.full_key(key))
        except NotFound:
            return None
        meta.key = key
        return meta

    async def _ours(self, url: str, meta: ObjectMeta) -> bool:
        """Did this mirror write `meta` (an object at location `url`)? Its marker, else the
        ledger's record of a completed copy with its etag or version id. `deletes:
        replicate_all` counts any cloudmirror replica as its own."""
        if written_by(meta, self.m.name) or (self.m.deletes == "replicate_all" and meta.is_replica):
            return True
        written = await asyncio.to_thread(self.service.ledger.written, self.m.name, url, [meta.key])
        return written_by(meta, self.m.name, written.get(meta.key, set()))

    async def compare(self, at_risk: dict[str, str], deleted: dict[str, float], *, after_switch: bool = False) -> Plan:
        plan = Plan()
        async for key, p, o in merge(self._listing(self.P), self._listing(self.O)):
            if not self.m.filter.matches(key):
                continue
            plan.listed_new += p is not None
            plan.listed_old += o is not None
            if p is not None and o is not None and p.size == o.size and p.md5 and p.md5 == o.md5:
                continue
            p, o = await asyncio.gather(self._head(self.P, key), self._head(self.O, key))
            if p is not None and o is not None and (p.size == o.size and p.md5 and p.md5 == o.md5
                                                    or _copy_of(p, o) or _copy_of(o, p)):
                continue
            if after_switch:  # only originals that landed on P late, where O has no write of its own
                if p is not None and not p.is_replica and (o is None or o.is_replica):
                    plan.to_old.append(key)
                continue
            await self._classify(plan, key, p, o, at_risk, deleted)
        return plan

    async def _classify(self, plan: Plan, key: str, p: ObjectMeta | None, o: ObjectMeta | None,
                  at_risk: dict[str, str], deleted: dict[str, float]) -> None:
        if p is not None and o is not None:
            if p.is_replica and not o.is_replica:
                plan.to_new.append(o)
            elif not p.is_replica and not o.is_replica:
                self._conflict(plan, key, p, _ts(p), o)
            else:
                plan.to_old.append(key)
        elif p is not None:  # only on P
            if p.is_replica and at_risk.get(key) == "delete":
                if await self._ours(self.new, p):
                    plan.del_new.append(p)
                else:
                    plan.kept_deletes += 1
            else:
                plan.to_old.append(key)
        elif o is not None:  # only on O
            replicates = self.m.deletes != "ignore"
            if key in deleted:
                if not o.is_replica and (_ts(o) > self.switched_at or key in at_risk):
                    self._conflict(plan, key, None, deleted[key], o)
                elif replicates:
                    plan.del_old.append(o)
                else:
                    plan.kept_deletes += 1
            elif o.is_replica:
                if replicates and await self._ours(self.old, o):
                    plan.del_old.append(o)
                else:
                    plan.kept_deletes += 1
            else:
                plan.to_new.append(o)

    def _conflict(self, plan: Plan, key: str, p: ObjectMeta | None, p_time: float, o: ObjectMeta) -> None:
        o_time = _ts(o)
        winner = "old_primary" if self.policy == "newest_wins" and o_time > p_time else "primary"
        resolution, detail = winner, None
        if self.policy == "keep_both":
            resolution = "kept_both"
            ckey = conflict_key(key, self.stamp)
            detail = f"the old primary's version kept as {ckey}"
            plan.keep.append((ckey, o))
        if winner == "old_primary":
            plan.to_new.append(o)
        elif p is not None:
            plan.to_old.append(key)
        else:
            plan.del_old.append(o)
        plan.conflicts.append(dict(key=key, op="put" if p is not None else "delete", size=o.size, source_time=o_time,
                                   other_time=p_time, resolution=resolution, detail=detail))

    def _record_conflicts(self, plan: Plan) -> None:
        self.counts["conflicts"] += self.store.add_objects(self.record["id"], "conflict", plan.conflicts)

    # ------------------------------------------------------------ repairing
    async def apply(self, plan: Plan) -> None:
        # the old primary's kept versions go first: the copies below overwrite their key on O
        await self._each(self._keep_both, plan.keep)
        await self._each(self._restore, plan.to_new)
        await self._each(self._to_old, plan.to_old)
        await self._each(self._delete_old, plan.del_old)
        await self._each(self._delete_new, plan.del_new)
        restored = [dict(key=o.key, op="put", size=o.size, source_time=_ts(o), detail="copied from the old primary")
                    for o in plan.to_new] + [dict(key=p.key, op="delete", size=p.size, source_time=_ts(p),
                                                  detail="the old primary's delete") for p in plan.del_new]
        self.counts["restored"] += await asyncio.to_thread(self.store.add_objects, self.record["id"], "restored",
                                                           restored)

    async def _each(self, fn, items) -> None:
        async def one(item):
            async with self._sem:
                try:
                    await fn(item)
                except (PreconditionFailed, NotFound):
                    pass  # it changed while we looked: the next round compares again
        await asyncio.gather(*(one(i) for i in items))

    async def _copy(self, src: Endpoint, dst: Endpoint, key: str, target: Target) -> None:
        meta = await src.store.head(src.location.full_key(key))
        await copy_object(src, dst, key, meta, mirror=self.m.name, target=target, settings=self.settings)

    async def _to_old(self, key: str) -> None:
        await self._copy(self.P, self.O, key, Target(url=self.old))
        self.counts["copied"] += 1

    async def _restore(self, o: ObjectMeta) -> None:
        """O's write reaches P, and the other targets (they followed P during the failover)."""
        for t in [Target(url=self.new), *self.others]:
            await self._copy(self.O, self.service.endpoint(t.url), o.key, t)

    async def _delete_old(self, o: ObjectMeta) -> None:
        now = await self._head(self.O, o.key)
        if now is not None and now.etag == o.etag:
            await self.O.store.delete(self.O.location.full_key(o.key))
            self.counts["deleted"] += 1
            self.deleted["old"] += 1

    async def _delete_new(self, p: ObjectMeta) -> None:
        now = await self._head(self.P, p.key)
        if now is not None and now.is_replica and now.etag == p.etag:
            await self.P.store.delete(self.P.location.full_key(p.key))
            self.counts["deleted"] += 1
            self.deleted["new"] += 1
            for t in self.others:  # their copies too (this mirror's replicas only)
                ep = self.service.endpoint(t.url)
                there = await self._head(ep, p.key)
                if there is not None and await self._ours(t.url, there):
                    await ep.store.delete(ep.location.full_key(p.key))

    async def _keep_both(self, item: tuple[str, ObjectMeta]) -> None:
        """Write O's version of a key to P under the conflict key, as an original (streamed)."""
        ckey, o = item
        got = await self.O.store.get(self.O.location.full_key(o.key), GetOptions(if_match=o.etag))
        md = {k: v for k, v in got.meta.metadata.items() if k not in (REPLICA_MARKER, SOURCE_VERSION_KEY)}
        opts = PutOptions(size=got.meta.size, metadata=md, md5=got.meta.md5, **got.meta.content_headers(),
                          multipart_threshold=self.settings.multipart_threshold, part_size=self.settings.part_size,
                          max_buffers=self.settings.max_buffers)
        await self.P.store.put(self.P.location.full_key(ckey), got.body, opts)
        self.counts["copied"] += 1
        await self._to_old(ckey)
        for t in self.others:
            await self._copy(self.P, self.service.endpoint(t.url), ckey, t)
