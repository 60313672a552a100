"""Amazon S3 (and S3-compatible endpoints such as moto and LocalStack) behind the store
protocol, using aioboto3.

One aioboto3 session per store (the location's `profile`, else the default chain);
clients are created lazily per (region, endpoint), cached, and closed by `close()`.
Every HTTP request sent (retries included) increments
`cloudmirror_storage_requests_total{provider="s3", operation=...}`.
Errors are classified by `errors.classify_error`. Server-side copy and the fence are
collaborators the store holds and delegates to: an S3Copier (see copy) and an S3Fencer
(see fence).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import datetime
from typing import Any

import aioboto3
from botocore.utils import parse_timestamp

from cloudmirror.location import Location
from cloudmirror.stores.base import (
    ChecksumMismatch,
    CopyOptions,
    DeleteOptions,
    GetOptions,
    GetResult,
    HeadOptions,
    ListOptions,
    ObjectMeta,
    PutOptions,
    PutResult,
    verify_written,
)
from cloudmirror.stores.s3.common import (
    client_config,
    count_request,
    etag_of,
    get_tags,
    listed_meta,
    meta_from_response,
    write_params,
    written_version,
)
from cloudmirror.stores.s3.copy import S3Copier
from cloudmirror.stores.s3.errors import translate
from cloudmirror.stores.s3.fence import S3Fencer
from cloudmirror.stores.s3.transfer import effective_part_size, is_plain_md5, multipart_upload
from cloudmirror.stores.streams import md5_digest, read_up_to

__all__ = ["S3Store"]


_SESSIONS: dict[str | None, aioboto3.Session] = {}


def _session(profile: str | None) -> aioboto3.Session:
    """One session per profile for the process: botocore loads its models once, not per store."""
    if profile not in _SESSIONS:
        session = aioboto3.Session(profile_name=profile)
        # listings carry one ISO 8601 LastModified per object: botocore's dateutil parser
        # costs ~43 us each, datetime.fromisoformat ~0.2 us (a third of a no-op reconcile's CPU)
        session._session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_fast_timestamp)
        _SESSIONS[profile] = session
    return _SESSIONS[profile]


def _fast_timestamp(value):
    """ISO 8601 timestamps the fast way; anything else (HTTP dates) through botocore's parser."""
    if isinstance(value, str) and len(value) >= 20 and value[4] == "-" and value[10] == "T":
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return parse_timestamp(value)


class S3Store:
    """Store + ServerSideCopier (delegated to `copier`, an S3Copier) + Fencer (delegated to
    `fencer`, an S3Fencer) for s3:// locations.

    `copy_multipart_threshold`: copies larger than this use UploadPartCopy (5 GiB, the
    CopyObject limit; tests lower it)."""

    def __init__(self, location: Location):
        self.location = location
        self.bucket = location.bucket
        self._session: aioboto3.Session | None = None  # made on first use: a bad profile is a StoreError
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[str | None, str | None], Any] = {}
        self._lock: asyncio.Lock | None = None
        self.copier = S3Copier(location, self.client)
        self.fencer = S3Fencer(location, self.client, self.sts_client)

    # ------------------------------------------------------------ clients
    async def client(self, location: Location | None = None) -> Any:
        """The cached client for a location's (region, endpoint); defaults to this store's."""
        location = location or self.location
        region, endpoint = location.region, location.endpoint
        cache_key = (region, endpoint)
        if (c := self._clients.get(cache_key)) is not None:
            return c
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if (c := self._clients.get(cache_key)) is None:
                with translate(self.bucket):
                    if self._session is None:
                        self._session = _session(self.location.param("profile"))
                    c = await self._stack.enter_async_context(self._session.client(
                        "s3", region_name=region, endpoint_url=endpoint, config=client_config(endpoint)))
                c.meta.events.register("before-send.s3", count_request)
                self._clients[cache_key] = c
        return c

    def sts_client(self) -> AbstractAsyncContextManager[Any]:
        """A new STS client (for `async with`) on this store's session and endpoint. The
        session exists once client() has been awaited."""
        endpoint = self.location.endpoint
        assert self._session is not None, "await client() first"
        return self._session.client("sts", region_name=self.location.region, endpoint_url=endpoint,
                                    config=client_config(endpoint))

    async def warm(self) -> None:
        """Create the client now (botocore loads its models: ~0.3 s of CPU) instead of inside
        the first copy. Raises the StoreError a bad profile gives."""
        await self.client()

    async def close(self) -> None:
        """Close every client. Idempotent."""
        self._clients.clear()
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()

    # ------------------------------------------------------------ capabilities (delegated)
    @property
    def copy_multipart_threshold(self) -> int:
        return self.copier.multipart_threshold

    @copy_multipart_threshold.setter
    def copy_multipart_threshold(self, value: int) -> None:
        self.copier.multipart_threshold = value

    def can_copy_from(self, source: Location) -> bool:
        """Same S3 service (endpoint) and the same credentials (profile)."""
        return self.copier.can_copy_from(source)

    async def copy(self, source: Location, source_key: str, key: str, opts: CopyOptions) -> PutResult:
        """Server-side copy of source/source_key to key (see S3Copier.copy). Raises
        PreconditionFailed, NotFound, ChecksumMismatch, ..."""
        return await self.copier.copy(source, source_key, key, opts)

    async def fence(self, reason: str) -> str:
        """Deny object writes and deletes here to all but cloudmirror (see S3Fencer.fence).
        Idempotent. Raises FatalError, AccessDenied, BucketNotFound, RetryableError."""
        return await self.fencer.fence(reason)

    async def unfence(self) -> bool:
        """Remove the fence (see S3Fencer.unfence). Idempotent. Raises AccessDenied,
        BucketNotFound, RetryableError."""
        return await self.fencer.unfence()

    # ------------------------------------------------------------ reads
    async def head(self, key: str, opts: HeadOptions | None = None) -> ObjectMeta:
        """HeadObject (+ GetObjectTagging when include_tags). Raises NotFound (also for a
        delete marker), BucketNotFound, AccessDenied, RetryableError, FatalError."""
        opts = opts or HeadOptions()
        c = await self.client()
        params = {"Bucket": self.bucket, "Key": key}
        if opts.version_id:
            params["VersionId"] = opts.version_id
        with translate(self.bucket, key):
            r = await c.head_object(**params)
        meta = meta_from_response(key, r)
        if opts.include_tags:
            meta.tags = await get_tags(c, self.bucket, key, meta.version_id if opts.version_id else None)
            meta.tag_count = len(meta.tags)
        return meta

    async def get_tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """GetObjectTagging. Raises NotFound."""
        return await get_tags(await self.client(), self.bucket, key, version_id)

    async def get(self, key: str, opts: GetOptions | None = None) -> GetResult:
        """GetObject, streamed in chunks of opts.chunk_size. Raises NotFound,
        PreconditionFailed (if_match no longer holds), BucketNotFound, ..."""
        opts = opts or GetOptions()
        c = await self.client()
        params = {"Bucket": self.bucket, "Key": key}
        if opts.version_id:
            params["VersionId"] = opts.version_id
        if opts.if_match:
            params["IfMatch"] = f'"{opts.if_match.strip(chr(34))}"'
        with translate(self.bucket, key):
            r = await c.get_object(**params)
        return GetResult(meta=meta_from_response(key, r), body=self._stream(r["Body"], key, opts.chunk_size),
                         release=r["Body"].close)

    async def _stream(self, body: Any, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        try:
            buf = bytearray()
            while True:
                with translate(self.bucket, key):
                    piece = await body.read(chunk_size - len(buf))
                if not piece:
                    break
                buf += piece
                if len(buf) >= chunk_size:
                    yield bytes(buf)
                    buf.clear()
            if buf:
                yield bytes(buf)
        finally:
            body.close()

    async def list(self, opts: ListOptions | None = None) -> AsyncIterator[ObjectMeta]:
        """Yields objects under opts.prefix in key order, page by page (no user metadata);
        with versions=True every version and delete marker, newest first per key."""
        opts = opts or ListOptions()
        c = await self.client()
        base = {"Bucket": self.bucket, "Prefix": opts.prefix, "MaxKeys": opts.page_size}
        if opts.versions:
            async for m in self._list_versions(c, base, opts.start_after):
                yield m
            return
        params = dict(base)
        if opts.start_after:
            params["StartAfter"] = opts.start_after
        while True:
            with translate(self.bucket, opts.prefix or None):
                r = await c.list_objects_v2(**params)
            for o in r.get("Contents", []):
                yield listed_meta(o)
            if not r.get("IsTruncated") or not r.get("NextContinuationToken"):
                return
            params = dict(base, ContinuationToken=r["NextContinuationToken"])

    async def _list_versions(self, c: Any, base: dict[str, Any], start_after: str | None) -> AsyncIterator[ObjectMeta]:
        params = dict(base)
        if start_after:
            params["KeyMarker"] = start_after
        while True:
            with translate(self.bucket, base["Prefix"] or None):
                r = await c.list_object_versions(**params)
            page = [listed_meta(v) for v in r.get("Versions", [])]
            for d in r.get("DeleteMarkers", []):
                page.append(ObjectMeta(key=d["Key"], size=0, version_id=d.get("VersionId"),
                                       last_modified=d.get("LastModified"), is_latest=bool(d.get("IsLatest")),
                                       is_delete_marker=True))
            page.sort(key=lambda m: (m.key, not m.is_latest, -(m.last_modified.timestamp() if m.last_modified else 0)))
            for m in page:
                yield m
            if not r.get("IsTruncated"):
                return
            params = dict(base, KeyMarker=r.get("NextKeyMarker"))
            if r.get("NextVersionIdMarker"):
                params["VersionIdMarker"] = r["NextVersionIdMarker"]

    async def list_uploads(self, prefix: str = "") -> list[tuple[str, str]]:
        """Unfinished multipart uploads under prefix, as (key, upload_id)."""
        c = await self.client()
        out: list[tuple[str, str]] = []
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            with translate(self.bucket, prefix or None):
                r = await c.list_multipart_uploads(**params)
            out += [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]
            if not r.get("IsTruncated"):
                return out
            params.update(KeyMarker=r.get("NextKeyMarker"), UploadIdMarker=r.get("NextUploadIdMarker"))

    # ------------------------------------------------------------ writes
    async def put(self, key: str, body: bytes | AsyncIterator[bytes], opts: PutOptions | None = None) -> PutResult:
        """PutObject (with Content-MD5) up to opts.multipart_threshold, else a multipart
        upload holding at most opts.max_buffers parts in memory. A stream of unknown size is
        peeked up to min(threshold, part_size) bytes to choose. Raises ChecksumMismatch
        (nothing written) when opts.md5 / opts.size disagree with the bytes; aborts the
        multipart upload on any error. Not idempotent in versioned buckets."""
        opts = opts or PutOptions()
        c = await self.client()
        if isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
            if len(data) <= opts.multipart_threshold:
                return await self._put_single(c, key, data, opts)
            return await multipart_upload(c, self.bucket, key, [data], None, opts, write_params(opts))
        it = aiter(body)
        if opts.size is not None and opts.size > opts.multipart_threshold:
            return await multipart_upload(c, self.bucket, key, [], it, opts, write_params(opts))
        limit = opts.multipart_threshold
        if opts.size is None:
            limit = min(limit, effective_part_size(opts.part_size, None))
        head, got, ended = await read_up_to(it, limit + 1)
        if ended and got <= limit:
            return await self._put_single(c, key, b"".join(head), opts)
        return await multipart_upload(c, self.bucket, key, head, None if ended else it, opts, write_params(opts))

    async def _put_single(self, c: Any, key: str, data: bytes, opts: PutOptions) -> PutResult:
        digest = await md5_digest(data)
        md5 = digest.hex()
        verify_written(f"s3://{self.bucket}/{key}", opts, md5, len(data))
        with translate(self.bucket, key):
            r = await c.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentMD5=base64.b64encode(digest).decode(), **write_params(opts))
        etag = etag_of(r)
        if opts.sse != "aws:kms" and is_plain_md5(etag) and etag.lower() != md5:
            raise ChecksumMismatch(f"s3://{self.bucket}/{key}: stored etag {etag} != md5 {md5}")
        return PutResult(etag=etag, version_id=written_version(r), size=len(data), md5=md5)

    async def delete(self, key: str, opts: DeleteOptions | None = None) -> None:
        """DeleteObject (a delete marker in versioned buckets unless a version is given).
        Idempotent. Raises BucketNotFound, AccessDenied, ..."""
        opts = opts or DeleteOptions()
        c = await self.client()
        params = {"Bucket": self.bucket, "Key": key}
        if opts.version_id:
            params["VersionId"] = opts.version_id
        try:
            with translate(self.bucket, key):
                await c.delete_object(**params)
        except Exception as e:
            if getattr(e, "code", None) not in ("NoSuchKey", "NoSuchVersion", "404"):
                raise

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload. Idempotent (an unknown upload id is fine)."""
        c = await self.client()
        try:
            with translate(self.bucket, key):
                await c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as e:
            if getattr(e, "code", None) not in ("NoSuchUpload", "404", "NotFound"):
                raise
