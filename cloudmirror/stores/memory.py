"""An in-process store (memory://bucket) for tests and demos.

Buckets live in a module-level registry, so two MemoryStore instances for the same bucket
share data. Etags are the MD5 hex of the bytes; a bucket with versioning enabled
(`set_versioning`) gives every write a monotonic version id and turns deletes into delete
markers. `inject_fault` makes the next calls of an operation fail (for retry tests).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from cloudmirror import metrics
from cloudmirror.location import Location
from cloudmirror.stores.base import (
    ChecksumMismatch,
    CopyOptions,
    DeleteOptions,
    GetOptions,
    GetResult,
    HeadOptions,
    ListOptions,
    NotFound,
    ObjectMeta,
    PreconditionFailed,
    PutOptions,
    PutResult,
    StoreError,
    verify_written,
)

_version_counter = itertools.count(1)


@dataclass
class _Version:
    meta: ObjectMeta  # tags always set (a dict)
    data: bytes = b""


@dataclass
class _Bucket:
    versioned: bool = False
    objects: dict[str, list[_Version]] = field(default_factory=dict)  # oldest first
    faults: dict[str, list[StoreError]] = field(default_factory=dict)


_BUCKETS: dict[str, _Bucket] = {}


def _bucket(name: str) -> _Bucket:
    return _BUCKETS.setdefault(name, _Bucket())


def reset_memory_stores() -> None:
    """Forget every memory bucket (tests call this between cases)."""
    _BUCKETS.clear()


def set_versioning(bucket: str, enabled: bool = True) -> None:
    """Turn versioning on (or off) for a memory bucket, creating it when needed."""
    _bucket(bucket).versioned = enabled


def inject_fault(bucket: str, operation: str, error: StoreError, times: int = 1) -> None:
    """Make the next `times` calls of `operation` (head, get, put, delete, list, copy) on
    `bucket` raise `error`."""
    _bucket(bucket).faults.setdefault(operation, []).extend([error] * times)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class MemoryStore:
    """Store + ServerSideCopier over the in-process registry. All calls are atomic."""

    def __init__(self, location: Location):
        self.location = location
        self.bucket = location.bucket
        _bucket(location.bucket)

    def _op(self, operation: str) -> _Bucket:
        metrics.storage_request("memory", operation)
        b = _bucket(self.bucket)  # looked up each call: survives reset_memory_stores()
        faults = b.faults.get(operation)
        if faults:
            raise faults.pop(0)
        return b

    def _where(self, key: str) -> str:
        return f"memory://{self.bucket}/{key}"

    def _find(self, b: _Bucket, key: str, version_id: str | None) -> _Version:
        versions = b.objects.get(key) or []
        if version_id is None:
            v = versions[-1] if versions else None
        else:
            v = next((x for x in versions if x.meta.version_id == version_id), None)
        if v is None:
            raise NotFound(f"{self._where(key)}: NoSuchKey" + (f" (version {version_id})" if version_id else ""),
                           code="NoSuchKey")
        if v.meta.is_delete_marker:
            raise NotFound(f"{self._where(key)}: DeleteMarker", code="DeleteMarker")
        return v

    @staticmethod
    def _public(v: _Version, include_tags: bool) -> ObjectMeta:
        m = replace(v.meta, metadata=dict(v.meta.metadata), checksums=dict(v.meta.checksums))
        m.tags = dict(v.meta.tags or {}) if include_tags else None
        return m

    async def get_tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """The object's tags. Raises NotFound."""
        return dict((await self.head(key, HeadOptions(version_id=version_id, include_tags=True))).tags or {})

    async def head(self, key: str, opts: HeadOptions | None = None) -> ObjectMeta:
        """Raises NotFound (also for a delete marker)."""
        opts = opts or HeadOptions()
        v = self._find(self._op("head"), key, opts.version_id)
        return self._public(v, opts.include_tags)

    async def get(self, key: str, opts: GetOptions | None = None) -> GetResult:
        """Streams in chunks of opts.chunk_size. Raises NotFound, PreconditionFailed."""
        opts = opts or GetOptions()
        v = self._find(self._op("get"), key, opts.version_id)
        if opts.if_match and opts.if_match.strip('"') != v.meta.etag:
            raise PreconditionFailed(f"{self._where(key)}: PreconditionFailed: etag is {v.meta.etag}, "
                                     f"not {opts.if_match}", code="PreconditionFailed")
        return GetResult(meta=self._public(v, False), body=_chunks(v.data, max(1, opts.chunk_size)))

    async def put(self, key: str, body: bytes | AsyncIterator[bytes], opts: PutOptions | None = None) -> PutResult:
        """Raises ChecksumMismatch (nothing written) when opts.md5 / opts.size disagree."""
        opts = opts or PutOptions()
        if isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
        else:
            data = b"".join([c async for c in body])
        b = self._op("put")
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        verify_written(self._where(key), opts, md5, len(data))
        meta = ObjectMeta(key=key, size=len(data), etag=md5, md5=md5, last_modified=_now(),
                          metadata={k.lower(): v for k, v in opts.metadata.items()}, tags=dict(opts.tags),
                          tag_count=len(opts.tags), storage_class=opts.storage_class or "STANDARD",
                          **_headers(opts))
        return self._store(b, key, _Version(meta, data))

    def _store(self, b: _Bucket, key: str, v: _Version) -> PutResult:
        versions = b.objects.setdefault(key, [])
        if b.versioned:
            v.meta.version_id = f"{next(_version_counter):012d}"
            for old in versions:
                old.meta.is_latest = False
            versions.append(v)
        else:
            versions[:] = [v]
        return PutResult(etag=v.meta.etag, version_id=v.meta.version_id, size=v.meta.size, md5=v.meta.md5)

    async def delete(self, key: str, opts: DeleteOptions | None = None) -> None:
        """Idempotent. In a versioned bucket adds a delete marker, or removes the given version."""
        opts = opts or DeleteOptions()
        b = self._op("delete")
        versions = b.objects.get(key)
        if not versions:
            if not b.versioned:
                return
            versions = b.objects.setdefault(key, [])
        if opts.version_id is not None:
            versions[:] = [v for v in versions if v.meta.version_id != opts.version_id]
            if versions:
                versions[-1].meta.is_latest = True
        elif b.versioned:
            marker = ObjectMeta(key=key, size=0, last_modified=_now(), is_delete_marker=True, tags={})
            self._store(b, key, _Version(marker))
        else:
            versions.clear()
        if not versions:
            b.objects.pop(key, None)

    async def list(self, opts: ListOptions | None = None) -> AsyncIterator[ObjectMeta]:
        """Key order (versions newest first), page by page; a page is a fresh snapshot."""
        opts = opts or ListOptions()
        after = opts.start_after or ""
        while True:
            b = self._op("list")
            keys = sorted(k for k in b.objects if k.startswith(opts.prefix) and k > after)
            page: list[ObjectMeta] = []
            for k in keys:
                versions = b.objects[k]
                if opts.versions:
                    page += [self._public(v, False) for v in reversed(versions)]
                elif not versions[-1].meta.is_delete_marker:
                    page.append(self._public(versions[-1], False))
                after = k
                if len(page) >= opts.page_size:
                    break
            for m in page:
                yield m
            if not keys or after == keys[-1]:
                return

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """No multipart uploads here: a no-op (idempotent)."""

    async def close(self) -> None:
        """Nothing to release."""

    # ------------------------------------------------------------ server-side copy
    def can_copy_from(self, source: Location) -> bool:
        return source.scheme == "memory"

    async def copy(self, source: Location, source_key: str, key: str, opts: CopyOptions) -> PutResult:
        """Copies bytes between memory buckets; metadata/headers from opts (REPLACE), tags
        copied unless opts.tags. Raises NotFound, PreconditionFailed (source_if_match),
        ChecksumMismatch (opts.md5 / opts.size disagree with the source)."""
        b = self._op("copy")
        src = MemoryStore(source)
        v = src._find(_bucket(source.bucket), source_key, opts.source_version_id)
        if opts.source_if_match and opts.source_if_match.strip('"') != v.meta.etag:
            raise PreconditionFailed(f"{src._where(source_key)}: PreconditionFailed: etag is {v.meta.etag}, "
                                     f"not {opts.source_if_match}", code="PreconditionFailed")
        if ((opts.md5 is not None and opts.md5.lower() != v.meta.md5)
                or (opts.size is not None and opts.size != v.meta.size)):
            raise ChecksumMismatch(f"{self._where(key)}: source is {v.meta.size} bytes md5 {v.meta.md5}, "
                                   f"expected {opts.size} bytes md5 {opts.md5}")
        tags = dict(opts.tags) if opts.tags is not None else dict(v.meta.tags or {})
        meta = ObjectMeta(key=key, size=v.meta.size, etag=v.meta.etag, md5=v.meta.md5, last_modified=_now(),
                          metadata={k.lower(): x for k, x in opts.metadata.items()}, tags=tags, tag_count=len(tags),
                          storage_class=opts.storage_class or "STANDARD", **_headers(opts))
        return self._store(b, key, _Version(meta, v.data))


def _headers(opts: PutOptions) -> dict[str, str | None]:
    return {"content_type": opts.content_type, "content_encoding": opts.content_encoding,
            "content_disposition": opts.content_disposition, "content_language": opts.content_language,
            "cache_control": opts.cache_control}


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]
