"""A feed for sources that send no notifications (file:// disks and NAS mounts, or buckets
whose notifications cannot be wired): list the source every `every` seconds and announce
what changed since the last listing.

The first listing announces every object (a backfill). A later one announces new and
changed objects (a different etag, size or modification time) as puts and vanished ones as
deletes. The listing that produced a batch becomes the baseline only when that batch is
acked, i.e. after the ledger commit (invariant 1): if recording fails, the next poll
announces the same changes again. After a restart everything is announced again, and the
ledger drops what it has already seen (same version token).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone

from cloudmirror import metrics
from cloudmirror.events.base import FeedMessage, ObjectEvent
from cloudmirror.location import Location
from cloudmirror.stores.base import ListOptions, ObjectMeta, Store

# what identifies one state of an object in a listing
_State = tuple[str, int, float]


def _state(m: ObjectMeta) -> _State:
    lm = m.last_modified.timestamp() if m.last_modified else 0.0
    return (m.etag or m.md5 or "", m.size, lm)


class PollFeed:
    """Feed protocol over periodic listings of one source location."""

    def __init__(self, store: Store, location: Location, every: float, *, batch: int = 500,
                 stale_after: float = 120.0):
        self.store = store
        self.location = location
        self.every = every
        self.batch = batch
        self.address = f"poll {location.display} every {every:g}s"
        self._known: dict[str, _State] | None = None
        self._pending: dict[str, dict[str, _State]] = {}  # poll id -> listing awaiting its acks
        self._unacked: dict[str, int] = {}  # poll id -> messages not yet acked
        self._next_poll = 0.0
        self._queue: list[FeedMessage] = []
        self._handed_at = 0.0
        self.stale_after = stale_after

    async def receive(self) -> list[FeedMessage]:
        if self._queue:
            out, self._queue = self._queue[:1], self._queue[1:]
            self._handed_at = time.monotonic()
            return out
        if self._pending:  # the last poll is still being recorded
            if time.monotonic() - self._handed_at < self.stale_after:
                await asyncio.sleep(min(self.every, 0.2))
                return []
            # recording failed (never acked): forget it, the next poll announces it again
            self._pending.clear()
            self._unacked.clear()
        wait = self._next_poll - time.monotonic()
        if wait > 0:
            await asyncio.sleep(min(wait, 1.0))
            return []
        self._next_poll = time.monotonic() + self.every
        listing = await self._list()
        events = self._diff(listing)
        metrics.QUEUE_REQUESTS.labels("poll", "list").inc()
        if not events:
            self._known = listing
            return []
        poll_id = uuid.uuid4().hex
        msgs = [FeedMessage(message_id=f"{poll_id}:{i}", body=f"{len(chunk)} changes in {self.location.display}",
                            receipt=poll_id, events=chunk)
                for i, chunk in enumerate(events[j:j + self.batch] for j in range(0, len(events), self.batch))]
        self._pending[poll_id] = listing
        self._unacked[poll_id] = len(msgs)
        self._queue = msgs[1:]
        self._handed_at = time.monotonic()
        return msgs[:1]

    async def _list(self) -> dict[str, _State]:
        out: dict[str, _State] = {}
        async for m in self.store.list(ListOptions(prefix=self.location.prefix)):
            out[m.key] = _state(m)
        return out

    def _diff(self, listing: dict[str, _State]) -> list[ObjectEvent]:
        known = self._known or {}
        cid = self.location.container_id
        now = datetime.now(timezone.utc)
        events = []
        for key, st in listing.items():
            if known.get(key) != st:
                etag, size, lm = st
                when = datetime.fromtimestamp(lm, timezone.utc) if lm else now
                events.append(ObjectEvent(cid, key, "put", event_time=when, etag=etag or None, size=size,
                                          sequencer=f"{int(lm * 1e9):020X}", event_name="poll:changed"))
        for key in known.keys() - listing.keys():
            events.append(ObjectEvent(cid, key, "delete", event_time=now, sequencer=f"{time.time_ns():020X}",
                                      event_name="poll:vanished"))
        return events

    async def ack(self, messages: Sequence[FeedMessage]) -> None:
        for m in messages:
            left = self._unacked.get(m.receipt)
            if left is None:
                continue
            if left <= 1:
                self._unacked.pop(m.receipt)
                self._known = self._pending.pop(m.receipt)
            else:
                self._unacked[m.receipt] = left - 1

    async def extend(self, messages: Sequence[FeedMessage], seconds: int) -> None:
        """Nothing is leased: a no-op."""

    async def close(self) -> None:
        """The store belongs to the service: nothing to release here."""
