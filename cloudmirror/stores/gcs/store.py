"""Google Cloud Storage behind the store protocol (gs://bucket[/prefix][?endpoint=...&project=...]),
using google-cloud-storage.

The SDK is blocking: every call runs in a per-store thread pool (at most MAX_WORKERS threads;
streamed downloads have their own pool of the same size so they cannot starve short calls),
over one storage.Client per store (see connection.GCSConnection). With an `endpoint` parameter (fake-gcs-server) the
client is anonymous; otherwise Application Default Credentials, project from `project` or
ADC. Every HTTP request sent (retries included) increments
`cloudmirror_storage_requests_total{provider="gcs", operation=...}`, one "list" per page.

Identity: `version_id` is the generation (versioned bucket or not) and `etag` is
"{generation}.{metageneration}". GetOptions.if_match / CopyOptions.source_if_match take
that etag (or a bare generation) and are checked exactly against the object read, whose
bytes are then read pinned to its generation.

Tags: GCS has no object tags; tag `k=v` is the custom metadata entry `cloudmirror-tag.k: v`.
head/get/list strip those entries from `metadata`, report them as `tags` (include_tags) and
always set `tag_count`. Storage class names of other providers are mapped (STANDARD_IA ->
NEARLINE, GLACIER_IR -> COLDLINE, GLACIER -> ARCHIVE, ...; see common). `kms_key_id`
is a Cloud KMS key name; `sse` is ignored (GCS always encrypts at rest).

Versioning: a delete without a version makes the live generation noncurrent; GCS has no
delete markers, so listings never yield any, and `is_latest` is false for noncurrent
generations.

Server-side copy (rewrite) is a collaborator the store holds and delegates to: a GCSCopier
(see copy).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cloudmirror.location import Location
from cloudmirror.stores.base import (
    ChecksumMismatch,
    CopyOptions,
    DeleteOptions,
    FatalError,
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
from cloudmirror.stores.gcs.common import (
    TIMEOUT,
    etag_of,
    guard_holds,
    is_session_url,
    md5_hex,
    meta_from_props,
    parse_generation,
    parse_guard,
)
from cloudmirror.stores.gcs.connection import MAX_WORKERS, GCSConnection, retry
from cloudmirror.stores.gcs.copy import GCSCopier
from cloudmirror.stores.gcs.transfer import ResumableSession, chunk_size_for, resumable_upload, stream_download
from cloudmirror.stores.streams import read_up_to

__all__ = ["GCSStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_LIST_PAGE = 1000  # the most GCS returns per page


class GCSStore:
    """Store + ServerSideCopier (rewrite, delegated to `copier`, a GCSCopier) for gs://
    locations; requests go through `conn`, a GCSConnection."""

    def __init__(self, location: Location):
        self.location = location
        self.bucket = location.bucket
        # fake-gcs-server finalises an upload on a status query: resume interrupted chunks only on real GCS
        self.resume_chunks = location.endpoint is None
        self.conn = GCSConnection(location)
        self.copier = GCSCopier(location, self.conn)
        self._download_pool: ThreadPoolExecutor | None = None
        self._downloads: set[threading.Event] = set()

    async def close(self) -> None:
        """Stop streamed downloads, release the threads and connections. Idempotent; the
        store can be used again afterwards (everything is re-created on demand)."""
        for stop in list(self._downloads):
            stop.set()
        self._downloads.clear()
        pool, self._download_pool = self._download_pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self.conn.close()

    # ------------------------------------------------------------ copy (delegated)
    def can_copy_from(self, source: Location) -> bool:
        """Any gs:// location on the same endpoint (the same credentials reach both)."""
        return self.copier.can_copy_from(source)

    async def copy(self, source: Location, source_key: str, key: str, opts: CopyOptions) -> PutResult:
        """Rewrite source/source_key to key (see GCSCopier.copy). Raises PreconditionFailed,
        NotFound, ChecksumMismatch, ..."""
        return await self.copier.copy(source, source_key, key, opts)

    # ------------------------------------------------------------ reads
    async def head(self, key: str, opts: HeadOptions | None = None) -> ObjectMeta:
        """Object metadata (tags when include_tags; tag_count always). Raises NotFound,
        BucketNotFound (when GCS says so), AccessDenied, RetryableError, FatalError."""
        opts = opts or HeadOptions()
        props = await self.conn.props(key, parse_generation(opts.version_id, self.conn.where(key)), "head")
        return meta_from_props(props, include_tags=opts.include_tags)

    async def get_tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """The object's tags (its cloudmirror-tag.* metadata). Raises NotFound."""
        return dict((await self.head(key, HeadOptions(version_id=version_id, include_tags=True))).tags or {})

    async def get(self, key: str, opts: GetOptions | None = None) -> GetResult:
        """Reads the metadata, then streams that generation's bytes in chunks of
        opts.chunk_size (the download starts on the first iteration). Raises NotFound,
        PreconditionFailed (if_match no longer holds), BucketNotFound, ..."""
        opts = opts or GetOptions()
        where = self.conn.where(key)
        guard = parse_guard(opts.if_match, where)
        generation = parse_generation(opts.version_id, where)
        try:
            props = await self.conn.props(key, generation, "get")
        except NotFound:
            if guard is not None and generation is not None and (moved := await self.conn.moved_on(key, generation)):
                raise moved from None
            raise
        if not guard_holds(guard, props):
            raise PreconditionFailed(f"{where}: PreconditionFailed: etag is {etag_of(props)}, not {opts.if_match}",
                                     code="PreconditionFailed")
        meta = meta_from_props(props)
        body = self._body(key, int(props["generation"]), meta.size, opts.chunk_size)
        return GetResult(meta=meta, body=body)

    async def _body(self, key: str, generation: int, size: int, chunk_size: int) -> AsyncIterator[bytes]:
        if size == 0:
            return
        await self.conn.ready()
        if self._download_pool is None:
            self._download_pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="cloudmirror-gcs-get")
        pool, client = self._download_pool, self.conn.client
        loop = asyncio.get_running_loop()
        blob = self.conn.blob(key, generation)

        def download(sink: Any) -> None:
            blob.download_to_file(sink, client=client, raw_download=True, timeout=TIMEOUT, retry=retry())

        def track(stop: threading.Event, active: bool) -> None:
            (self._downloads.add if active else self._downloads.discard)(stop)

        try:
            async for chunk in stream_download(lambda fn: loop.run_in_executor(pool, fn), download, chunk_size,
                                               self.bucket, key, track):
                yield chunk
        except NotFound:  # the generation went away while we read it: the key was overwritten (or deleted)
            if (moved := await self.conn.moved_on(key, generation)) is not None:
                raise moved from None
            raise

    async def list(self, opts: ListOptions | None = None) -> AsyncIterator[ObjectMeta]:
        """Yields objects under opts.prefix after opts.start_after in key order, one request
        per page of opts.page_size (no user metadata). versions=True: every generation,
        newest first per key (GCS has no delete markers)."""
        opts = opts or ListOptions()
        if opts.versions:
            async for m in self._list_versions(opts):
                yield m
            return
        token: str | None = None
        while True:
            items, token = await self._page(opts, token, opts.page_size, False)
            for props in items:
                if props["name"] != opts.start_after:
                    yield meta_from_props(props, with_metadata=False)
            if not token:
                return

    async def _page(self, opts: ListOptions, token: str | None, size: int, versions: bool
                    ) -> tuple[list[dict[str, Any]], str | None]:
        client = await self.conn.ready()

        def fetch() -> tuple[list[dict[str, Any]], str | None]:
            it = client.list_blobs(self.bucket, prefix=opts.prefix or None, start_offset=opts.start_after or None,
                                   page_size=max(1, min(size, MAX_LIST_PAGE)), page_token=token,
                                   versions="true" if versions else None, timeout=TIMEOUT, retry=retry())
            page = next(it.pages, None)
            items = [dict(b._properties) for b in page] if page is not None else []  # noqa: SLF001 - the SDK exposes the raw resource only as _properties
            return items, it.next_page_token

        return await self.conn.run("list", fetch, opts.prefix or None, missing="bucket")

    async def _list_versions(self, opts: ListOptions) -> AsyncIterator[ObjectMeta]:
        """Generations of a key are held until the next key shows up (they may span pages)
        and yielded newest first. A page that brings nothing new under an unchanged token
        (fake-gcs-server's name tokens restart inside a key's versions) is asked again with a
        larger page size."""
        current: str | None = None
        group: dict[int, dict[str, Any]] = {}
        token: str | None = None
        size = max(1, opts.page_size)

        def flush() -> list[ObjectMeta]:
            return [meta_from_props(group[g], with_metadata=False) for g in sorted(group, reverse=True)]

        while True:
            items, next_token = await self._page(opts, token, size, True)
            progress = False
            for props in items:
                name, gen = props["name"], int(props["generation"])
                if name == opts.start_after or (current is not None and name < current):
                    continue
                if name == current:
                    progress = progress or gen not in group
                    group.setdefault(gen, props)
                    continue
                for m in flush():
                    yield m
                current, group, progress = name, {gen: props}, True
            if not next_token:
                for m in flush():
                    yield m
                return
            if next_token == token and not progress:
                if size >= MAX_LIST_PAGE:
                    raise FatalError(f"{self.conn.where()}: listing versions makes no progress at page token {token!r}")
                size = min(size * 2, MAX_LIST_PAGE)
                continue
            token = next_token

    # ------------------------------------------------------------ writes
    async def put(self, key: str, body: bytes | AsyncIterator[bytes], opts: PutOptions | None = None) -> PutResult:
        """A single upload for bytes and for streams that end below opts.multipart_threshold
        (a stream of unknown size is peeked up to min(threshold, chunk size)); else a
        resumable upload in chunks of opts.part_size (rounded up to 256 KiB). The MD5/size
        are verified against opts.md5/opts.size before anything is committed
        (ChecksumMismatch). Not idempotent in versioned buckets."""
        opts = opts or PutOptions()
        await self.conn.ready()
        if isinstance(body, (bytes, bytearray, memoryview)):
            return await self._put_single(key, bytes(body), opts)
        it = aiter(body)
        if opts.size is not None and opts.size >= opts.multipart_threshold:
            return await self._put_resumable(key, [], it, opts)
        limit = opts.multipart_threshold
        if opts.size is None:
            limit = min(limit, chunk_size_for(opts.part_size))
        head, got, ended = await read_up_to(it, limit + 1)
        if ended and got <= limit:
            return await self._put_single(key, b"".join(head), opts)
        return await self._put_resumable(key, head, None if ended else it, opts)

    async def _put_single(self, key: str, data: bytes, opts: PutOptions) -> PutResult:
        where = self.conn.where(key)
        blob = self.conn.write_blob(key, opts, opts.tags)

        def upload() -> tuple[dict[str, Any], str]:
            digest = hashlib.md5(data, usedforsecurity=False).digest()  # an integrity check
            verify_written(where, opts, digest.hex(), len(data))
            blob.md5_hash = base64.b64encode(digest).decode()  # GCS rejects the upload if the bytes differ
            blob.upload_from_string(data, content_type=opts.content_type or "application/octet-stream",
                                    checksum=None, timeout=TIMEOUT)
            return dict(blob._properties), digest.hex()  # noqa: SLF001 - the SDK exposes the raw resource only as _properties

        props, md5 = await self.conn.run("put", upload, key, missing="bucket")
        return self._written(where, props, md5, len(data))

    async def _put_resumable(self, key: str, head: list[bytes], rest: AsyncIterator[bytes] | None,
                             opts: PutOptions) -> PutResult:
        where = self.conn.where(key)
        blob = self.conn.write_blob(key, opts, opts.tags)
        url = await self.conn.run("put", lambda: blob.create_resumable_upload_session(
            content_type=opts.content_type or "application/octet-stream", checksum=None, timeout=TIMEOUT),
            key, missing="bucket")
        session = ResumableSession(self.conn.http, url, self.resume_chunks)
        if opts.on_upload_started is not None:
            try:
                await opts.on_upload_started(url)
            except BaseException:
                await asyncio.shield(self._cancel_quietly(session))
                raise

        async def run(op: str, fn: Callable[[], T]) -> T:
            return await self.conn.run(op, fn, key, missing="bucket")

        props, md5, size = await resumable_upload(run, session, where, head, rest, opts)
        return self._written(where, props, md5, size)

    async def _cancel_quietly(self, session: ResumableSession) -> None:
        try:
            await self.conn.run("abort_upload", session.cancel)
        except StoreError as e:
            log.warning("could not cancel resumable upload %s: %s", session.url, e)

    @staticmethod
    def _written(where: str, props: dict[str, Any], md5: str, size: int) -> PutResult:
        """PutResult after checking what GCS stored against what we sent."""
        stored_md5 = md5_hex(props)
        stored_size = int(props.get("size") or 0)
        if stored_size != size or (stored_md5 is not None and stored_md5 != md5):
            raise ChecksumMismatch(f"{where}: stored {stored_size} bytes md5 {stored_md5}, sent {size} bytes md5 {md5}",
                                   code="BadDigest")
        return PutResult(etag=etag_of(props), version_id=str(int(props["generation"])), size=stored_size, md5=md5)

    async def delete(self, key: str, opts: DeleteOptions | None = None) -> None:
        """Deletes the live object (noncurrent in a versioned bucket) or, with a version, that
        generation. Idempotent. Raises BucketNotFound (when GCS says so), AccessDenied, ..."""
        opts = opts or DeleteOptions()
        try:
            generation = parse_generation(opts.version_id, self.conn.where(key))
        except NotFound:
            return
        await self.conn.ready()
        blob = self.conn.blob(key, generation)
        try:
            await self.conn.run("delete", lambda: blob.delete(timeout=TIMEOUT, retry=retry()), key)
        except NotFound:
            pass

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Cancels a resumable upload session (upload_id is its URL). Idempotent: a finished,
        cancelled or unknown session is fine; ids that are not this bucket's session URLs are
        ignored (credentials are only ever sent to our own endpoint)."""
        await self.conn.ready()
        if not is_session_url(upload_id, self.conn.api, self.bucket):
            log.debug("abort_upload(%s): %r is not a session URL of %s; nothing to cancel", key, upload_id,
                      self.conn.api)
            return
        await self.conn.run("abort_upload", ResumableSession(self.conn.http, upload_id, False).cancel, key)
