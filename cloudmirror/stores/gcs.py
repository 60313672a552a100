"""Google Cloud Storage behind the store protocol (gs://bucket[/prefix][?endpoint=...&project=...]),
using google-cloud-storage.

The SDK is blocking: every call runs in a per-store thread pool (at most MAX_WORKERS threads;
streamed downloads have their own pool of the same size so they cannot starve short calls),
over one storage.Client per store. With an `endpoint` parameter (fake-gcs-server) the
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
NEARLINE, GLACIER_IR -> COLDLINE, GLACIER -> ARCHIVE, ...; see gcs_common). `kms_key_id`
is a Cloud KMS key name; `sse` is ignored (GCS always encrypts at rest).

Versioning: a delete without a version makes the live generation noncurrent; GCS has no
delete markers, so listings never yield any, and `is_latest` is false for noncurrent
generations.
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
from cloudmirror.stores.gcs_common import (
    TIMEOUT,
    apply_write_options,
    classify_error,
    etag_of,
    guard_holds,
    is_session_url,
    make_client,
    md5_hex,
    meta_from_props,
    parse_generation,
    parse_guard,
    set_operation,
    translate,
)
from cloudmirror.stores.gcs_copy import GCSCopyMixin
from cloudmirror.stores.gcs_transfer import ResumableSession, chunk_size_for, resumable_upload, stream_download

__all__ = ["GCSStore", "classify_error", "create_bucket", "delete_bucket"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_WORKERS = 16
MAX_LIST_PAGE = 1000  # the most GCS returns per page


def _retry():
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(30.0)


class GCSStore(GCSCopyMixin):
    """Store + ServerSideCopier (rewrite, see gcs_copy) for gs:// locations."""

    def __init__(self, location: Location):
        self.location = location
        self.bucket = location.bucket
        # fake-gcs-server finalises an upload on a status query: resume interrupted chunks only on real GCS
        self.resume_chunks = location.endpoint is None
        self._client: Any = None
        self._http: Any = None
        self._api = ""
        self._pool: ThreadPoolExecutor | None = None
        self._download_pool: ThreadPoolExecutor | None = None
        self._downloads: set[threading.Event] = set()
        self._lock: asyncio.Lock | None = None

    # ------------------------------------------------------------ plumbing
    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="cloudmirror-gcs")
        return self._pool

    async def _ready(self) -> Any:
        """The storage.Client, created on first use (in a worker thread: ADC may block)."""
        if self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                loop = asyncio.get_running_loop()
                try:
                    client, http, api = await loop.run_in_executor(self._executor(), make_client, self.location)
                except Exception as e:  # noqa: BLE001
                    raise classify_error(e, self.bucket) from e
                self._client, self._http, self._api = client, http, api
        return self._client

    async def _run(self, op: str, fn: Callable[[], T], key: str | None = None, *, missing: str = "key",
                   bucket: str | None = None) -> T:
        """Run fn in the pool with its requests counted as `op`; errors classified (naming
        `bucket`, this store's by default)."""
        await self._ready()

        def job() -> T:
            set_operation(op)
            try:
                return fn()
            finally:
                set_operation(None)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(), job)
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - classified at the boundary
            raise classify_error(e, bucket or self.bucket, key, missing=missing) from e

    def _blob(self, key: str, generation: int | None = None, bucket: str | None = None, **kw: Any) -> Any:
        return self._client.bucket(bucket or self.bucket).blob(key, generation=generation, **kw)

    def _where(self, key: str | None = None, bucket: str | None = None) -> str:
        b = bucket or self.bucket
        return f"gs://{b}/{key}" if key is not None else f"gs://{b}"

    async def _props(self, key: str, generation: int | None, op: str, bucket: str | None = None) -> dict[str, Any]:
        """The object resource (GET metadata). Raises NotFound, BucketNotFound, ..."""
        await self._ready()
        blob = self._blob(key, generation, bucket)

        def fetch() -> dict[str, Any]:
            blob.reload(timeout=TIMEOUT, retry=_retry())
            return dict(blob._properties)  # noqa: SLF001 - the JSON resource, as the API returned it

        return await self._run(op, fetch, key, bucket=bucket)

    async def _moved_on(self, key: str, generation: int, bucket: str | None = None) -> PreconditionFailed | None:
        """After a read pinned to `generation` found nothing: PreconditionFailed when the key
        now holds another generation (it was overwritten), None when the key is gone or
        still at that generation (the 404 was about something else)."""
        try:
            live = await self._props(key, None, "head", bucket)
        except NotFound:
            return None
        if int(live["generation"]) == generation:
            return None
        return PreconditionFailed(f"{self._where(key, bucket)}: PreconditionFailed: generation {generation} "
                                  f"was replaced by {live['generation']}", code="PreconditionFailed")

    async def close(self) -> None:
        """Stop streamed downloads, release the threads and connections. Idempotent; the
        store can be used again afterwards (everything is re-created on demand)."""
        for stop in list(self._downloads):
            stop.set()
        self._downloads.clear()
        http, self._http, self._client = self._http, None, None
        pools = [p for p in (self._pool, self._download_pool) if p is not None]
        self._pool = self._download_pool = None
        for p in pools:
            p.shutdown(wait=False, cancel_futures=True)
        if http is not None:
            http.close()

    # ------------------------------------------------------------ reads
    async def head(self, key: str, opts: HeadOptions | None = None) -> ObjectMeta:
        """Object metadata (tags when include_tags; tag_count always). Raises NotFound,
        BucketNotFound (when GCS says so), AccessDenied, RetryableError, FatalError."""
        opts = opts or HeadOptions()
        props = await self._props(key, parse_generation(opts.version_id, self._where(key)), "head")
        return meta_from_props(props, include_tags=opts.include_tags)

    async def get_tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """The object's tags (its cloudmirror-tag.* metadata). Raises NotFound."""
        return dict((await self.head(key, HeadOptions(version_id=version_id, include_tags=True))).tags or {})

    async def get(self, key: str, opts: GetOptions | None = None) -> GetResult:
        """Reads the metadata, then streams that generation's bytes in chunks of
        opts.chunk_size (the download starts on the first iteration). Raises NotFound,
        PreconditionFailed (if_match no longer holds), BucketNotFound, ..."""
        opts = opts or GetOptions()
        where = self._where(key)
        guard = parse_guard(opts.if_match, where)
        generation = parse_generation(opts.version_id, where)
        try:
            props = await self._props(key, generation, "get")
        except NotFound:
            if guard is not None and generation is not None and (moved := await self._moved_on(key, generation)):
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
        await self._ready()
        if self._download_pool is None:
            self._download_pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="cloudmirror-gcs-get")
        pool, client = self._download_pool, self._client
        loop = asyncio.get_running_loop()
        blob = self._blob(key, generation)

        def download(sink: Any) -> None:
            blob.download_to_file(sink, client=client, raw_download=True, timeout=TIMEOUT, retry=_retry())

        def track(stop: threading.Event, active: bool) -> None:
            (self._downloads.add if active else self._downloads.discard)(stop)

        try:
            async for chunk in stream_download(lambda fn: loop.run_in_executor(pool, fn), download, chunk_size,
                                               self.bucket, key, track):
                yield chunk
        except NotFound:  # the generation went away while we read it: the key was overwritten (or deleted)
            if (moved := await self._moved_on(key, generation)) is not None:
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
        client = await self._ready()

        def fetch() -> tuple[list[dict[str, Any]], str | None]:
            it = client.list_blobs(self.bucket, prefix=opts.prefix or None, start_offset=opts.start_after or None,
                                   page_size=max(1, min(size, MAX_LIST_PAGE)), page_token=token,
                                   versions="true" if versions else None, timeout=TIMEOUT, retry=_retry())
            page = next(it.pages, None)
            items = [dict(b._properties) for b in page] if page is not None else []  # noqa: SLF001
            return items, it.next_page_token

        return await self._run("list", fetch, opts.prefix or None, missing="bucket")

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
                    raise FatalError(f"{self._where()}: listing versions makes no progress at page token {token!r}")
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
        await self._ready()
        if isinstance(body, (bytes, bytearray, memoryview)):
            return await self._put_single(key, bytes(body), opts)
        it = aiter(body)
        if opts.size is not None and opts.size >= opts.multipart_threshold:
            return await self._put_resumable(key, [], it, opts)
        limit = opts.multipart_threshold
        if opts.size is None:
            limit = min(limit, chunk_size_for(opts.part_size))
        head, ended = await _read_up_to(it, limit + 1)
        if ended and sum(map(len, head)) <= limit:
            return await self._put_single(key, b"".join(head), opts)
        return await self._put_resumable(key, head, None if ended else it, opts)

    def _write_blob(self, key: str, opts: PutOptions, tags: dict[str, str]) -> Any:
        blob = self._blob(key, kms_key_name=opts.kms_key_id or None)
        apply_write_options(blob, self._where(key), opts, tags)
        return blob

    async def _put_single(self, key: str, data: bytes, opts: PutOptions) -> PutResult:
        where = self._where(key)
        blob = self._write_blob(key, opts, opts.tags)

        def upload() -> tuple[dict[str, Any], str]:
            digest = hashlib.md5(data).digest()  # noqa: S324 - integrity check
            verify_written(where, opts, digest.hex(), len(data))
            blob.md5_hash = base64.b64encode(digest).decode()  # GCS rejects the upload if the bytes differ
            blob.upload_from_string(data, content_type=opts.content_type or "application/octet-stream",
                                    checksum=None, timeout=TIMEOUT)
            return dict(blob._properties), digest.hex()  # noqa: SLF001

        props, md5 = await self._run("put", upload, key, missing="bucket")
        return self._written(where, props, md5, len(data))

    async def _put_resumable(self, key: str, head: list[bytes], rest: AsyncIterator[bytes] | None,
                             opts: PutOptions) -> PutResult:
        where = self._where(key)
        blob = self._write_blob(key, opts, opts.tags)
        url = await self._run("put", lambda: blob.create_resumable_upload_session(
            content_type=opts.content_type or "application/octet-stream", checksum=None, timeout=TIMEOUT),
            key, missing="bucket")
        session = ResumableSession(self._http, url, self.resume_chunks)
        if opts.on_upload_started is not None:
            try:
                await opts.on_upload_started(url)
            except BaseException:
                await asyncio.shield(self._cancel_quietly(session))
                raise

        async def run(op: str, fn: Callable[[], T]) -> T:
            return await self._run(op, fn, key, missing="bucket")

        props, md5, size = await resumable_upload(run, session, where, head, rest, opts)
        return self._written(where, props, md5, size)

    async def _cancel_quietly(self, session: ResumableSession) -> None:
        try:
            await self._run("abort_upload", session.cancel)
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
            generation = parse_generation(opts.version_id, self._where(key))
        except NotFound:
            return
        await self._ready()
        blob = self._blob(key, generation)
        try:
            await self._run("delete", lambda: blob.delete(timeout=TIMEOUT, retry=_retry()), key)
        except NotFound:
            pass

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Cancels a resumable upload session (upload_id is its URL). Idempotent: a finished,
        cancelled or unknown session is fine; ids that are not this bucket's session URLs are
        ignored (credentials are only ever sent to our own endpoint)."""
        await self._ready()
        if not is_session_url(upload_id, self._api, self.bucket):
            log.debug("abort_upload(%s): %r is not a session URL of %s; nothing to cancel", key, upload_id, self._api)
            return
        await self._run("abort_upload", ResumableSession(self._http, upload_id, False).cancel, key)


async def _read_up_to(it: AsyncIterator[bytes], n: int) -> tuple[list[bytes], bool]:
    """Read chunks until at least n bytes or the end; returns (chunks, ended)."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        try:
            chunk = await anext(it)
        except StopAsyncIteration:
            return chunks, True
        chunks.append(chunk)
        got += len(chunk)
    return chunks, False


# ---------------------------------------------------------------- admin helpers (sync)
def create_bucket(location: Location, versioned: bool = False) -> None:
    """Create the location's bucket (object versioning on when `versioned`). For the local
    cloud and tests. Idempotent: an existing bucket gets the requested versioning. Raises
    StoreError."""
    from google.api_core import exceptions as gx

    with translate(location.bucket):
        client, http, _ = make_client(location)
        try:
            bucket = client.bucket(location.bucket)
            bucket.versioning_enabled = versioned
            try:
                client.create_bucket(bucket, timeout=TIMEOUT)
            except gx.Conflict:
                bucket = client.get_bucket(location.bucket, timeout=TIMEOUT)
                if bool(bucket.versioning_enabled) != versioned:
                    bucket.versioning_enabled = versioned
                    bucket.patch(timeout=TIMEOUT)
        finally:
            http.close()


def delete_bucket(location: Location) -> None:
    """Delete the location's bucket with every object generation in it. Idempotent (a
    missing bucket is fine). Raises StoreError."""
    from google.api_core import exceptions as gx

    with translate(location.bucket):
        client, http, _ = make_client(location)
        try:
            try:
                for blob in client.list_blobs(location.bucket, versions="true", timeout=TIMEOUT):
                    try:
                        client.bucket(location.bucket).blob(blob.name, generation=blob.generation).delete(timeout=TIMEOUT)
                    except gx.NotFound:
                        pass
                client.bucket(location.bucket).delete(timeout=TIMEOUT)
            except gx.NotFound:
                pass
        finally:
            http.close()
