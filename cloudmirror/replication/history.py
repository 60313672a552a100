"""All-versions mode (`versions: all`): a target's version history follows the source's.

A job for a key in this mode does not copy "the current version": it brings the target's
history of the key up to date. It lists the source's versions of the key (oldest first)
and the target's, finds the newest source version the target already holds (each copy's
replica marker records the source version it came from), and copies every later source
version in order, each one guarded and verified like any copy. So the target's versions
hold the same sequence of contents as the source's, whatever the events said (they may be
lost, collapsed or carry no version id at all: the listing is the truth).

- A crash between two copies resumes after the last version that landed: a version is
  written at most once more (the one in flight), never out of order.
- A key deleted on the source (a delete marker on S3, no live generation on GCS) is deleted
  on the target after its history is copied, when `deletes: replicate`. Intermediate deletes
  (put, delete, put) are not replayed as markers: the sequence of contents is what matches.
- When the target's current object is not the source's newest (someone wrote to the
  target directly), the newest source version is copied again so the target converges.

Errors: FatalError when the source or a target is not versioned (the mode needs both), and
the StoreErrors of the copies. Idempotent: running a sync twice copies nothing the second time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloudmirror.config import Mirror, Target, WorkerSettings
from cloudmirror.replication.transfer import Endpoint, copy_object
from cloudmirror.stores.base import (
    SOURCE_VERSION_KEY,
    FatalError,
    HeadOptions,
    ListOptions,
    NotFound,
    ObjectMeta,
    PutResult,
    Store,
)


@dataclass
class SyncResult:
    copied: int = 0
    deleted: bool = False
    last: ObjectMeta | None = None  # the newest source version copied
    result: PutResult | None = None  # the target's answer to that copy

    def detail(self) -> str | None:
        parts = []
        if self.copied != 1:
            parts.append(f"copied {self.copied} versions" if self.copied else "the target's history was up to date")
        if self.deleted:
            parts.append("deleted on the target (the key is deleted on the source)")
        return "; ".join(parts) or None


async def key_versions(store: Store, full_key: str) -> list[ObjectMeta]:
    """Every version of exactly `full_key` (delete markers included), oldest first."""
    found = [m async for m in store.list(ListOptions(prefix=full_key, versions=True)) if m.key == full_key]
    found.reverse()  # stores list the versions of a key newest first
    return found


def _is_live(versions: list[ObjectMeta]) -> bool:
    return any(v.is_latest and not v.is_delete_marker for v in versions)


def _unversioned(versions: list[ObjectMeta]) -> bool:
    return any(v.version_id in (None, "", "null") for v in versions)


async def sync_history(src: Endpoint, dst: Endpoint, key: str, *, mirror: Mirror, target: Target,
                       settings: WorkerSettings,
                       on_upload_started: Callable[[str], Awaitable[None]] | None = None) -> SyncResult:
    """Copy every source version of `key` (relative) the target lacks, oldest first."""
    src_key, dst_key = src.location.full_key(key), dst.location.full_key(key)
    src_versions = await key_versions(src.store, src_key)
    if _unversioned(src_versions):
        raise FatalError(f"versions: all needs a versioned source; {src.location} has {key!r} without version ids",
                         code="SourceNotVersioned")
    dst_versions = await key_versions(dst.store, dst_key)
    if _unversioned(dst_versions):
        raise FatalError(f"versions: all needs a versioned target; {dst.location} has {key!r} without version ids",
                         code="TargetNotVersioned")
    contents = [v for v in src_versions if not v.is_delete_marker]
    start, target_current = await _position(dst, dst_key, dst_versions, contents)
    todo = contents[start:]
    source_live = _is_live(src_versions)
    if not todo and source_live and target_current != contents[-1].version_id:
        todo = contents[-1:]  # the target's current object did not come from the source's newest
    out = SyncResult()
    for listed in todo:
        try:
            meta = await src.store.head(src_key, HeadOptions(version_id=listed.version_id))
        except NotFound:
            continue  # that version was removed from the source's history meanwhile
        if meta.is_replica:
            continue  # a version cloudmirror wrote there (a two-way pair): never copied back
        out.result = await copy_object(src, dst, key, meta, mirror=mirror.name, target=target, settings=settings,
                                       on_upload_started=on_upload_started)
        if not out.result.version_id:
            raise FatalError(f"versions: all needs a versioned target; {dst.location} gave {key!r} no version id",
                             code="TargetNotVersioned")
        out.copied += 1
        out.last = meta
    if not source_live and mirror.deletes != "ignore" and (out.copied or _is_live(dst_versions)):
        out.deleted = await _delete_current_replica(dst, dst_key)
    return out


async def _position(dst: Endpoint, dst_key: str, dst_versions: list[ObjectMeta],
                    contents: list[ObjectMeta]) -> tuple[int, str | None]:
    """(index in `contents` of the first source version the target lacks, the source version
    the target's current object came from). Walks the target's versions newest first and
    reads each one's replica marker (one HEAD; normally the newest answers)."""
    index = {v.version_id: i for i, v in enumerate(contents)}
    live = _is_live(dst_versions)
    current: str | None = None
    for n, tv in enumerate(reversed([v for v in dst_versions if not v.is_delete_marker])):
        try:
            head = await dst.store.head(dst_key, HeadOptions(version_id=tv.version_id))
        except NotFound:
            continue
        recorded = head.metadata.get(SOURCE_VERSION_KEY) if head.is_replica else None
        if n == 0 and live:
            current = recorded
        if recorded in index:
            return index[recorded] + 1, current
    return 0, current


async def _delete_current_replica(dst: Endpoint, dst_key: str) -> bool:
    """Delete the target's current object (a versioned target keeps it as history) when
    cloudmirror wrote it. Returns whether something was deleted."""
    try:
        current = await dst.store.head(dst_key)
    except NotFound:
        return False
    if not current.is_replica:
        return False
    await dst.store.delete(dst_key)
    return True
