"""How one version reaches one target: server-side copy when the target store can copy
from the source, else a streamed GET -> PUT.

Every write carries the replica marker (invariant 5). A server-side copy is guarded by the
etag its HEAD saw (invariant 3: CopySourceIfMatch / x-ms-source-if-match / generation); a
streamed copy starts with the GET, whose response is the version it copies. Every copy is
verified (invariant 6): the target store compares the MD5 of the bytes it is about to
commit with the source's, and the size (or CRC32C, when the source has no MD5) of what
streamed through is checked here.
"""
from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from cloudmirror.config import Target, WorkerSettings
from cloudmirror.location import Location
from cloudmirror.stores.base import (
    REPLICA_MARKER,
    SOURCE_VERSION_KEY,
    ChecksumMismatch,
    CopyOptions,
    GetOptions,
    GetResult,
    ObjectMeta,
    PutOptions,
    PutResult,
    ServerSideCopier,
    Store,
    UploadStartedHook,
)
from cloudmirror.stores.streams import crc32c_hasher


@dataclass
class Endpoint:
    """A store opened on a location."""

    location: Location
    store: Store


def replica_metadata(meta: ObjectMeta, mirror: str) -> dict[str, str]:
    md = {k: v for k, v in meta.metadata.items() if k not in (REPLICA_MARKER, SOURCE_VERSION_KEY)}
    md[REPLICA_MARKER] = mirror
    md[SOURCE_VERSION_KEY] = meta.version_id or meta.etag or ""
    return md


def written_by(meta: ObjectMeta, mirror: str, written: set[str] = frozenset()) -> bool:
    """Did `mirror` write this target object? Yes when its replica marker names the mirror
    (every copy carries it), or when its etag or version id is one the ledger recorded for a
    copy the mirror completed to that target (`written`: Ledger.written() of its key). What
    fails both tests is someone else's object: deletes leave it in place (unless the mirror
    says `deletes: replicate_all`)."""
    if meta.metadata.get(REPLICA_MARKER) == mirror:
        return True
    return bool(written & {x for x in (meta.etag, meta.version_id) if x})


def _write_options(cls, meta: ObjectMeta, mirror: str, target: Target, settings: WorkerSettings,
                   on_upload_started: UploadStartedHook | None, **extra):
    return cls(
        size=meta.size, metadata=replica_metadata(meta, mirror), storage_class=target.storage_class,
        sse=target.sse, kms_key_id=target.kms_key_id, md5=meta.md5,
        multipart_threshold=settings.multipart_threshold, part_size=settings.part_size,
        max_buffers=settings.max_buffers, on_upload_started=on_upload_started,
        **meta.content_headers(), **extra)


def server_side(src: Endpoint, dst: Endpoint) -> bool:
    """Can the target copy from the source without the bytes passing through us?"""
    return isinstance(dst.store, ServerSideCopier) and dst.store.can_copy_from(src.location)


async def open_source(src: Endpoint, key: str, settings: WorkerSettings) -> GetResult:
    """Start reading the source's current version of `key` (relative key). For a streamed
    copy the GET's response describes the version as a HEAD would, so no HEAD is needed.
    Raises NotFound and the other StoreErrors; close the body with close_source()."""
    return await src.store.get(src.location.full_key(key), GetOptions(chunk_size=_chunk(settings)))


async def close_source(got: GetResult) -> None:
    """Release a source body that will not be read to the end. Idempotent."""
    aclose = getattr(got.body, "aclose", None)
    if aclose is not None:
        await aclose()
    if got.release is not None:
        done = got.release()
        if asyncio.iscoroutine(done):
            await done


def _chunk(settings: WorkerSettings) -> int:
    return min(settings.part_size, 8 * 1024 * 1024)


async def copy_object(src: Endpoint, dst: Endpoint, key: str, meta: ObjectMeta, *, mirror: str, target: Target,
                      settings: WorkerSettings, on_upload_started: UploadStartedHook | None = None,
                      opened: GetResult | None = None, guard: Callable[[], Awaitable[None]] | None = None) -> PutResult:
    """Copy the source version described by `meta` (from a HEAD, or from `opened`, a GET
    already under way whose meta it is) to the target.

    `key` is relative to both locations' prefixes. `guard` is awaited before the write
    starts and before each chunk of a streamed one goes out; whatever it raises (the
    worker's LeaseLost) stops the copy. Raises PreconditionFailed when the source changed
    since the HEAD, NotFound when it is gone, ChecksumMismatch when the bytes written
    differ from the bytes read, and the other StoreErrors.
    """
    src_key, dst_key = src.location.full_key(key), dst.location.full_key(key)
    if meta.tags is None:  # tags are set explicitly on every copy: fetched only when there are some
        meta.tags = {} if meta.tag_count == 0 else await src.store.get_tags(src_key, meta.version_id)
    if guard is not None:
        await guard()
    if opened is None and server_side(src, dst):
        opts = _write_options(CopyOptions, meta, mirror, target, settings, on_upload_started,
                              source_version_id=meta.version_id, source_if_match=meta.etag, tags=dict(meta.tags))
        return await dst.store.copy(src.location, src_key, dst_key, opts)
    got = opened or await src.store.get(src_key, GetOptions(version_id=meta.version_id, if_match=meta.etag,
                                                            chunk_size=_chunk(settings)))
    check = StreamCheck(meta)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in got.body:
            if guard is not None:
                await guard()
            check.update(chunk)
            yield chunk

    opts = _write_options(PutOptions, meta, mirror, target, settings, on_upload_started, tags=dict(meta.tags or {}))
    result = await dst.store.put(dst_key, body(), opts)
    check.verify(f"{dst.location}/{dst_key}")
    return result


class StreamCheck:
    """Invariant 6 for streamed copies, the part the target store cannot do: the size of the
    bytes that went through us, and their CRC32C when that is the only checksum the source
    has (a composite GCS object). The MD5 is verified by the target store itself, before it
    commits (PutOptions.md5 = the source's MD5), so it is not computed twice."""

    def __init__(self, meta: ObjectMeta):
        self.meta = meta
        self.size = 0
        self.crc = crc32c_hasher() if meta.md5 is None and "crc32c" in meta.checksums else None

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.crc is not None:
            self.crc.update(chunk)

    def verify(self, where: str) -> None:
        """Raises ChecksumMismatch naming what differs."""
        if self.size != self.meta.size:
            raise ChecksumMismatch(f"{where}: read {self.size} bytes, source has {self.meta.size}", code="SizeMismatch")
        if self.crc is not None:
            got = base64.b64encode(self.crc.digest()).decode()
            if got != self.meta.checksums["crc32c"]:
                raise ChecksumMismatch(f"{where}: CRC32C of bytes read {got} != source {self.meta.checksums['crc32c']}",
                                       code="BadDigest")
