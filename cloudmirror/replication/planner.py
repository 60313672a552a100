"""What to copy: route normalised events to mirrors and turn them into ledger versions.

Pure functions over config and events; no I/O.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field

from cloudmirror.config import Mirror
from cloudmirror.events.base import FeedMessage, ObjectEvent
from cloudmirror.ledger.repo import DeadLetter, NewVersion, TargetPlan


def version_token(ev: ObjectEvent) -> str:
    """The identity of one write, to drop duplicate deliveries of the same event.

    A version id names a write exactly (with its etag, when the provider changes that
    without a new version: a GCS metadata update keeps the generation). Without one
    (unversioned buckets), a write is (operation, sequencer, etag, event time): identical
    bytes written twice at different times stay two versions, while a redelivered event
    stays one. A delete never shares a token with a write (a GCS delete names the
    generation it removed).
    """
    if ev.version_id:
        token = f"v:{ev.version_id}" + (f"|{ev.etag}" if ev.etag else "") + ("|delete" if ev.op == "delete" else "")
    else:
        ts = f"{ev.event_time.timestamp():.6f}" if ev.event_time else ""
        token = f"e:{ev.op}|{ev.sequencer or ''}|{ev.etag or ''}|{ts}"
    if len(token) > 500:
        token = "h:" + hashlib.sha256(token.encode()).hexdigest()
    return token


class Router:
    """Maps a source bucket (container id) to the mirrors that read from it."""

    def __init__(self, mirrors: list[Mirror]):
        self._by_container: dict[str, list[Mirror]] = defaultdict(list)
        for m in mirrors:
            self._by_container[m.source_location.container_id].append(m)

    def knows(self, container_id: str) -> bool:
        return container_id in self._by_container

    def plan(self, ev: ObjectEvent, *, now: float | None = None) -> list[NewVersion]:
        """The ledger versions one event creates (one per mirror whose scope holds the key)."""
        now = time.time() if now is None else now
        out = []
        for m in self._by_container.get(ev.container_id, ()):
            rel = m.source_location.rel_key(ev.key)
            if rel is None:
                continue
            out.append(NewVersion(
                mirror=m.name, key=rel, token=version_token(ev), op=ev.op,
                source_time=ev.event_time.timestamp() if ev.event_time else now,
                targets=[target_plan(m, t.name, rel, ev.op) for t in m.targets],
                version_id=ev.version_id, etag=ev.etag, sequencer=ev.sequencer, size=ev.size))
        return out


def target_plan(m: Mirror, target: str, rel_key: str, op: str) -> TargetPlan:
    if not m.filter.matches(rel_key):
        return TargetPlan(target, "skipped", "filtered out")
    if op == "delete" and m.deletes == "ignore":
        return TargetPlan(target, "skipped", "deletes: ignore")
    return TargetPlan(target)


@dataclass
class Batch:
    versions: list[NewVersion] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    ignored: int = 0


def plan_messages(router: Router, feed: str, messages: list[FeedMessage], *, now: float | None = None) -> Batch:
    """Plan a received batch: versions to record and dead letters (malformed messages, or
    events for buckets no mirror reads from)."""
    batch = Batch()
    for msg in messages:
        if msg.error:
            batch.dead.append(DeadLetter(feed=feed, body=msg.body, reason=msg.error, message_id=msg.message_id))
            continue
        unknown = sorted({ev.container_id for ev in msg.events if not router.knows(ev.container_id)})
        if unknown:
            batch.dead.append(DeadLetter(feed=feed, body=msg.body, message_id=msg.message_id,
                                         reason=f"no mirror reads from {', '.join(unknown)}"))
        for ev in msg.events:
            planned = router.plan(ev, now=now) if router.knows(ev.container_id) else []
            if not planned:
                batch.ignored += 1
            batch.versions.extend(planned)
    return batch
