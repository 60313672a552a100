"""What to copy: route normalised events to mirrors and turn them into ledger versions.

Pure functions over config and events; no I/O. Events are untrusted input: every version
handed to the ledger fits its columns (checked here, whatever the feed), and whatever does
not becomes a dead letter with the reason; planning never raises.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field

from cloudmirror.config import Mirror
from cloudmirror.events.base import FeedMessage, ObjectEvent
from cloudmirror.ledger.repo import DeadLetter, NewVersion, TargetPlan

# What the ledger can hold (ledger/models.py). A key is indexed with its mirror and token
# (PostgreSQL's B-tree entries are at most 2704 bytes): 2048 bytes of key leave room for a
# 64-byte mirror name and a 500-byte token. Every provider's own limit is lower (S3 and GCS
# 1024 bytes; Azure 1024 characters).
MAX_KEY_BYTES = 2048
MAX_TOKEN_BYTES = 500
_LIMITS = {"version_id": 1024, "etag": 128, "sequencer": 128}  # characters (varchar)
_MAX_SIZE = 2**63 - 1  # BIGINT
_MAX_REASON = 2000


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
    if len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
        token = "h:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
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

    def add(self, other: Batch) -> None:
        self.versions.extend(other.versions)
        self.dead.extend(other.dead)
        self.ignored += other.ignored


def plan_messages(router: Router, feed: str, messages: list[FeedMessage], *, now: float | None = None,
                  max_receives: int | None = None) -> Batch:
    """Plan a received batch: versions to record and dead letters (malformed messages or
    records, events the ledger cannot hold, events for buckets no mirror reads from, and
    messages received more than `max_receives` times)."""
    batch = Batch()
    for msg in messages:
        batch.add(plan_message(router, feed, msg, now=now, max_receives=max_receives))
    return batch


def plan_message(router: Router, feed: str, msg: FeedMessage, *, now: float | None = None,
                 max_receives: int | None = None) -> Batch:
    """Plan one message (see plan_messages). Never raises."""
    batch = Batch()

    def dead(reason: str) -> None:
        batch.dead.append(dead_letter(feed, msg, reason))

    if max_receives is not None and msg.receive_count is not None and msg.receive_count > max_receives:
        dead(f"received {msg.receive_count} times (max_receives {max_receives})")
        return batch
    if msg.error:
        dead(msg.error)
        return batch
    for reason in msg.rejected:
        dead(reason)
    try:
        unknown = sorted({ev.container_id for ev in msg.events if not router.knows(ev.container_id)})
        if unknown:
            dead(f"no mirror reads from {', '.join(map(str, unknown))}")
        for ev in msg.events:
            planned = router.plan(ev, now=now) if router.knows(ev.container_id) else []
            problems = [p for v in planned if (p := unstorable(v))]
            if problems:
                dead(f"event for {_show(ev.key)}: {problems[0]}")
                continue
            if not planned:
                batch.ignored += 1
            batch.versions.extend(planned)
    except Exception as e:  # noqa: BLE001 - an event that breaks planning is dead-lettered, not fatal
        return Batch(dead=[dead_letter(feed, msg, f"could not be planned: {type(e).__name__}: {e}")])
    return batch


def unstorable(v: NewVersion) -> str | None:
    """Why the ledger cannot hold `v` (a value beyond its columns or not storable text), or None."""
    if not isinstance(v.key, str) or not v.key:
        return "the key is empty or not a string"
    if problem := _text(v.key, "the key"):
        return problem
    if (n := len(v.key.encode("utf-8"))) > MAX_KEY_BYTES:
        return f"the key is {n} bytes, more than the ledger's {MAX_KEY_BYTES}"
    if problem := _text(v.token, "the version token"):
        return problem
    for name, limit in _LIMITS.items():
        value = getattr(v, name)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"{name} is not a string: {_show(value)}"
        if len(value) > limit:
            return f"{name} is {len(value)} characters, more than the ledger's {limit}"
        if problem := _text(value, name):
            return problem
    if v.size is not None and (isinstance(v.size, bool) or not isinstance(v.size, int) or not 0 <= v.size <= _MAX_SIZE):
        return f"size is not a byte count the ledger can hold: {_show(v.size)}"
    if not isinstance(v.source_time, (int, float)) or v.source_time != v.source_time or abs(v.source_time) > 1e12:
        return f"the source time is not a time: {_show(v.source_time)}"
    return None


def _text(value: str, what: str) -> str | None:
    if "\x00" in value:
        return f"{what} contains a NUL character: {_show(value)}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid Unicode: {_show(value)}"
    return None


def dead_letter(feed: str, msg: FeedMessage, reason: str) -> DeadLetter:
    """A dead letter for `msg` whose text the ledger can store (no NULs, no lone surrogates)."""
    return DeadLetter(feed=feed, body=storable_text(msg.body), reason=storable_text(reason)[:_MAX_REASON],
                      message_id=storable_text(msg.message_id)[:256] if msg.message_id is not None else None)


def storable_text(value: object) -> str:
    """`value` as text PostgreSQL and SQLite both store: NULs and lone surrogates escaped."""
    text = value if isinstance(value, str) else str(value)
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def _show(v: object, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
