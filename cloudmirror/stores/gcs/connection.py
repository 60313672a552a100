"""The GCS store's connection: one storage.Client per store (created on first use), the
thread pool every blocking SDK call runs in (at most MAX_WORKERS threads), and the object
requests that both the store and its copier make through them.

Every request made through `run` is counted under the store operation it belongs to and
has its errors classified at this boundary (StoreError subclasses only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cloudmirror.location import Location
from cloudmirror.stores.base import NotFound, PreconditionFailed, PutOptions, StoreError
from cloudmirror.stores.gcs.common import TIMEOUT, apply_write_options, classify_error, make_client, set_operation

T = TypeVar("T")

MAX_WORKERS = 16


def retry() -> Any:
    """The SDK retry policy for idempotent requests (30 s in all)."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(30.0)


class GCSConnection:
    """The storage.Client, its HTTP session and API base URL for one gs:// location, and
    the pool its blocking calls run in. `close()` releases them; they are re-created on
    demand afterwards."""

    def __init__(self, location: Location):
        self.location = location
        self.bucket = location.bucket
        self.client: Any = None  # the storage.Client, once ready() returned
        self.http: Any = None  # its HTTP session
        self.api = ""  # its API base URL
        self._pool: ThreadPoolExecutor | None = None
        self._lock: asyncio.Lock | None = None

    def executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="cloudmirror-gcs")
        return self._pool

    async def ready(self) -> Any:
        """The storage.Client, created on first use (in a worker thread: ADC may block).
        Raises the StoreError the credentials or the configuration give."""
        if self.client is not None:
            return self.client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.client is None:
                loop = asyncio.get_running_loop()
                try:
                    client, http, api = await loop.run_in_executor(self.executor(), make_client, self.location)
                except Exception as e:  # noqa: BLE001 - everything the SDK / transport raises is classified
                    raise classify_error(e, self.bucket) from e
                self.client, self.http, self.api = client, http, api
        return self.client

    async def run(self, op: str, fn: Callable[[], T], key: str | None = None, *, missing: str = "key",
                  bucket: str | None = None) -> T:
        """Run fn in the pool with its requests counted as `op`; errors classified (naming
        `bucket`, this location's by default; `missing` as in classify_error)."""
        await self.ready()

        def job() -> T:
            set_operation(op)
            try:
                return fn()
            finally:
                set_operation(None)

        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor(), job)
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - classified at the boundary
            raise classify_error(e, bucket or self.bucket, key, missing=missing) from e

    def blob(self, key: str, generation: int | None = None, bucket: str | None = None, **kw: Any) -> Any:
        """A Blob of this location's bucket (or `bucket`); needs ready()."""
        return self.client.bucket(bucket or self.bucket).blob(key, generation=generation, **kw)

    def write_blob(self, key: str, opts: PutOptions, tags: dict[str, str]) -> Any:
        """A Blob about to be written with opts (headers, metadata + tags, class, KMS key).
        Raises FatalError for an unknown storage class or a reserved metadata key."""
        blob = self.blob(key, kms_key_name=opts.kms_key_id or None)
        apply_write_options(blob, self.where(key), opts, tags)
        return blob

    def where(self, key: str | None = None, bucket: str | None = None) -> str:
        b = bucket or self.bucket
        return f"gs://{b}/{key}" if key is not None else f"gs://{b}"

    async def props(self, key: str, generation: int | None, op: str, bucket: str | None = None) -> dict[str, Any]:
        """The object resource (GET metadata). Raises NotFound, BucketNotFound, ..."""
        await self.ready()
        blob = self.blob(key, generation, bucket)

        def fetch() -> dict[str, Any]:
            blob.reload(timeout=TIMEOUT, retry=retry())
            return dict(blob._properties)  # noqa: SLF001 - the JSON resource, as the API returned it

        return await self.run(op, fetch, key, bucket=bucket)

    async def moved_on(self, key: str, generation: int, bucket: str | None = None) -> PreconditionFailed | None:
        """After a read pinned to `generation` found nothing: PreconditionFailed when the key
        now holds another generation (it was overwritten), None when the key is gone or
        still at that generation (the 404 was about something else)."""
        try:
            live = await self.props(key, None, "head", bucket)
        except NotFound:
            return None
        if int(live["generation"]) == generation:
            return None
        return PreconditionFailed(f"{self.where(key, bucket)}: PreconditionFailed: generation {generation} "
                                  f"was replaced by {live['generation']}", code="PreconditionFailed")

    def close(self) -> None:
        """Release the threads and connections. Idempotent."""
        http, self.http, self.client = self.http, None, None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if http is not None:
            http.close()
