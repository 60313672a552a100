"""The store protocol: what every provider module implements.

Small and object_store-like: head/get/put/delete/list/copy, each taking an options
dataclass. Optional capabilities are separate runtime_checkable protocols
(`ServerSideCopier`, `Fencer`), checked once when a transfer is planned.

Errors are classified at this boundary (see the StoreError hierarchy): callers never see
an SDK exception.

Keys passed to a store are *full provider keys* (the location's prefix already applied).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from cloudmirror.location import Location

# Metadata keys cloudmirror writes on every replica (lower-case; providers add their prefix,
# e.g. x-amz-meta-). Objects carrying REPLICA_MARKER are never replicated again.
REPLICA_MARKER = "cloudmirror-replica"
SOURCE_VERSION_KEY = "cloudmirror-source-version"


# ---------------------------------------------------------------- errors
class StoreError(Exception):
    """Base of all store errors. `retryable` says whether trying again may help."""

    retryable = False

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.code = code


class NotFound(StoreError):
    """The key (or version) does not exist. Also raised for a delete marker."""


class BucketNotFound(StoreError):
    """The bucket / container does not exist (fatal for this location)."""


class AccessDenied(StoreError):
    """Credentials lack permission (fatal until someone fixes IAM)."""


class PreconditionFailed(StoreError):
    """An If-Match / CopySourceIfMatch / ifGenerationMatch guard did not hold."""


class RetryableError(StoreError):
    """Throttling, 5xx, timeouts, connection resets."""

    retryable = True


class FatalError(StoreError):
    """Anything else that will not get better by retrying the same request."""


class ChecksumMismatch(StoreError):
    """The bytes written do not match the bytes read (invariant 6)."""

    retryable = True


def verify_written(where: str, opts: "PutOptions", md5: str, size: int) -> None:
    """Invariant 6 at the store boundary: raise ChecksumMismatch when the bytes read do not
    match what the caller expects (opts.md5 / opts.size), before anything is committed."""
    if opts.md5 is not None and opts.md5.lower() != md5:
        raise ChecksumMismatch(f"{where}: MD5 of the bytes read {md5} != expected {opts.md5}", code="BadDigest")
    if opts.size is not None and opts.size != size:
        raise ChecksumMismatch(f"{where}: read {size} bytes, expected {opts.size}", code="SizeMismatch")


# ---------------------------------------------------------------- data
@dataclass
class ObjectMeta:
    """What a HEAD or a listing tells about one object version."""

    key: str
    size: int
    etag: str | None = None  # without quotes
    version_id: str | None = None
    last_modified: datetime | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    content_disposition: str | None = None
    content_language: str | None = None
    cache_control: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # user metadata, keys lower-case
    tags: dict[str, str] | None = None  # None = not fetched
    tag_count: int | None = None  # None = unknown; S3 HEAD reports it (absent = 0)
    storage_class: str | None = None
    md5: str | None = None  # hex MD5 of the whole object when known
    checksums: dict[str, str] = field(default_factory=dict)  # e.g. {"crc32c": "...", "sha256": ...}
    is_latest: bool = True
    is_delete_marker: bool = False

    @property
    def is_replica(self) -> bool:
        return REPLICA_MARKER in self.metadata

    def content_headers(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("content_type", self.content_type),
                ("content_encoding", self.content_encoding),
                ("content_disposition", self.content_disposition),
                ("content_language", self.content_language),
                ("cache_control", self.cache_control),
            )
            if v is not None
        }


@dataclass
class HeadOptions:
    version_id: str | None = None
    include_tags: bool = False  # fetch tags (an extra request on S3) when the object has any


@dataclass
class GetOptions:
    version_id: str | None = None
    if_match: str | None = None  # etag guard: raise PreconditionFailed when it changed
    chunk_size: int = 1024 * 1024


@dataclass
class PutOptions:
    """How to write an object. `size` lets a store choose single vs multipart upfront."""

    size: int | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    content_disposition: str | None = None
    content_language: str | None = None
    cache_control: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    storage_class: str | None = None
    sse: str | None = None  # "AES256" | "aws:kms"
    kms_key_id: str | None = None
    md5: str | None = None  # expected hex MD5 of the bytes (verified when the store can)
    multipart_threshold: int = 16 * 1024 * 1024
    part_size: int = 16 * 1024 * 1024
    max_buffers: int = 4  # part buffers in memory at once (invariant 7)
    on_upload_started: "UploadStartedHook | None" = None  # record multipart upload ids

    @classmethod
    def from_meta(cls, meta: ObjectMeta, **kw) -> "PutOptions":
        return cls(size=meta.size, metadata=dict(meta.metadata), tags=dict(meta.tags or {}),
                   **meta.content_headers(), **kw)


class UploadStartedHook(Protocol):
    async def __call__(self, upload_id: str) -> None: ...


@dataclass
class CopyOptions(PutOptions):
    """A server-side copy. Content headers/metadata given here REPLACE the source's; so do
    `tags` when given (an empty dict clears them); `tags=None` copies the source's."""

    tags: dict[str, str] | None = None  # type: ignore[assignment]
    source_version_id: str | None = None
    source_if_match: str | None = None  # guard: the source must still have this etag


@dataclass
class DeleteOptions:
    version_id: str | None = None


@dataclass
class ListOptions:
    prefix: str = ""
    start_after: str | None = None
    page_size: int = 1000
    versions: bool = False  # list every version (and delete markers)


@dataclass
class PutResult:
    etag: str | None
    version_id: str | None = None
    size: int | None = None
    md5: str | None = None


@dataclass
class GetResult:
    meta: ObjectMeta
    body: AsyncIterator[bytes]
    # releases what get() opened (a response, a file) when the body is abandoned before it
    # is iterated: an async generator that never started cannot run its `finally`
    release: Callable[[], Any] | None = None


# ---------------------------------------------------------------- protocols
@runtime_checkable
class Store(Protocol):
    location: Location

    async def head(self, key: str, opts: HeadOptions | None = None) -> ObjectMeta:
        """Raises NotFound (also for a delete marker), BucketNotFound, AccessDenied, ..."""

    async def get(self, key: str, opts: GetOptions | None = None) -> GetResult:
        """Streams the object. Raises NotFound, PreconditionFailed (if_match)."""

    async def put(self, key: str, body: bytes | AsyncIterator[bytes], opts: PutOptions | None = None) -> PutResult:
        """Writes the object (multipart above opts.multipart_threshold, at most
        opts.max_buffers part buffers in memory). Raises ChecksumMismatch when opts.md5 is
        given and the written bytes differ. Not idempotent for versioned buckets."""

    async def delete(self, key: str, opts: DeleteOptions | None = None) -> None:
        """Deletes the key (a delete marker on versioned buckets). Idempotent: no error
        when the key is already gone."""

    def list(self, opts: ListOptions | None = None) -> AsyncIterator[ObjectMeta]:
        """Yields objects in key order (versions newest first per key), page by page."""

    async def get_tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """The object's tags (an empty dict when it has none). Raises NotFound."""

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Aborts an unfinished multipart upload. Idempotent."""

    async def close(self) -> None: ...


@runtime_checkable
class ServerSideCopier(Protocol):
    """Stores that can copy from another location without moving bytes through us."""

    def can_copy_from(self, source: Location) -> bool: ...

    async def copy(self, source: Location, source_key: str, key: str, opts: CopyOptions) -> PutResult:
        """Raises PreconditionFailed when opts.source_if_match no longer holds, NotFound
        when the source key is gone."""


@runtime_checkable
class Fencer(Protocol):
    """Stores that can block other identities' writes to their location (a planned
    failover's fence). Only S3 implements it (a bucket-policy statement)."""

    async def fence(self, reason: str) -> str:
        """Deny object writes and deletes on the location to everyone but cloudmirror.
        Idempotent. Returns a description of what was done. Raises AccessDenied (no power
        to change the policy), FatalError (our identity is unknown), RetryableError."""

    async def unfence(self) -> bool:
        """Remove the fence. Idempotent: True when a fence was removed, False when there
        was none. Raises AccessDenied, RetryableError."""
