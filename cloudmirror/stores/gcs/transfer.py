"""Streaming transfers for the GCS store.

Downloads: one pinned (generation=...) media GET per object, run in a worker thread by the
SDK (which validates the CRC32C/MD5 of the whole body and resumes a broken connection with
a ranged request); the thread hands chunks of exactly `chunk_size` bytes to the event loop
through a one-slot hand-off, so at most two chunks are alive (one with the consumer, one
being filled or waiting) however large the object.

Uploads above the threshold: a resumable session fed from the async iterator in chunks of
`part_size` rounded up to a multiple of 256 KiB. The MD5 and size of the stream are
computed on the way and checked with `verify_written` BEFORE the final chunk is sent: a
mismatch (or any error) cancels the session and nothing is committed (an object only
appears when the final chunk arrives). At most two chunks are held at once (the one being
sent and the next one being read).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import requests

from cloudmirror.stores.base import ChecksumMismatch, FatalError, PutOptions, verify_written
from cloudmirror.stores.gcs.common import TIMEOUT, GcsHttpError, classify_error, set_operation

log = logging.getLogger(__name__)

CHUNK_ALIGN = 256 * 1024  # resumable chunks (all but the last) are multiples of this
MAX_CHUNK_ATTEMPTS = 5
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_END = object()


def chunk_size_for(part_size: int) -> int:
    """part_size rounded up to a multiple of 256 KiB (at least 256 KiB)."""
    return max(CHUNK_ALIGN, -(-part_size // CHUNK_ALIGN) * CHUNK_ALIGN)


# ---------------------------------------------------------------- download
class _Stopped(Exception):
    """The consumer went away: abandon the download."""


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class _HandOff:
    """File-like sink for the SDK's download: re-cuts the body into `chunk_size` pieces and
    passes each to the event loop. A new piece is only started once the consumer has taken
    the previous one, so at most two pieces exist: the consumer's and the one being filled
    (or waiting in the queue)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, chunk_size: int):
        self.loop = loop
        self.queue = queue
        self.chunk_size = chunk_size
        self.slot = threading.Semaphore(1)
        self.stop = threading.Event()
        self.parts: list[bytes] = []
        self.filled = 0
        self.holding = False  # this thread holds the slot for the piece being filled

    def write(self, data: bytes) -> int:
        if self.stop.is_set():
            raise _Stopped()
        mv = memoryview(data)
        while len(mv):
            if not self.holding:
                self._acquire()
            take = min(len(mv), self.chunk_size - self.filled)
            self.parts.append(data if take == len(data) else bytes(mv[:take]))
            self.filled += take
            mv = mv[take:]
            if self.filled == self.chunk_size:
                self._deliver()
        return len(data)

    def flush_tail(self) -> None:
        if self.parts:
            self._deliver()

    def _deliver(self) -> None:
        piece = b"".join(self.parts)
        self.parts.clear()
        self.filled = 0
        self.holding = False  # the slot now travels with the piece; the consumer gives it back
        self.put(piece)

    def _acquire(self) -> None:
        while not self.slot.acquire(timeout=5.0):  # the timeout only matters when the loop died
            if self.stop.is_set() or self.loop.is_closed():
                raise _Stopped()
        self.holding = True
        if self.stop.is_set():
            raise _Stopped()

    def put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed
            self.stop.set()
            raise _Stopped() from None


async def stream_download(run: Callable[[Callable[[], Any]], "asyncio.Future[Any]"], download: Callable[[Any], None],
                          chunk_size: int, bucket: str, key: str, on_stop: Callable[[threading.Event, bool], None]
                          ) -> AsyncIterator[bytes]:
    """Yield the body in chunks of exactly chunk_size (the last may be shorter).

    `download(sink)` performs the (blocking) download into the sink; `run(fn)` runs fn in a
    worker thread. The download starts on the first iteration and stops when the consumer
    stops iterating. Errors are raised as classified StoreErrors."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    sink = _HandOff(loop, queue, max(1, chunk_size))
    on_stop(sink.stop, True)

    def job() -> None:
        set_operation("get")
        try:
            download(sink)
            sink.flush_tail()
            sink.put(_END)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, classified there
            try:
                sink.put(_Failure(e))
            except _Stopped:
                pass
        finally:
            set_operation(None)

    fut = run(job)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, _Failure):
                raise classify_error(item.exc, bucket, key) from item.exc
            sink.slot.release()
            yield item
            del item
        await fut
    finally:
        sink.stop.set()
        sink.slot.release()  # wake a writer blocked on the hand-off: it sees stop and gives up
        on_stop(sink.stop, False)


# ---------------------------------------------------------------- upload
class ChunkSource:
    """Cuts the chunks of `head` followed by those of `rest` into pieces of `size` bytes and
    can tell whether more bytes follow (peeking at most one incoming chunk). A piece is
    filled in place and every incoming chunk is let go once copied, so building a piece
    holds the piece plus one incoming chunk."""

    def __init__(self, head: list[bytes], rest: AsyncIterator[bytes] | None):
        self.pending: deque[memoryview] = deque(memoryview(c) for c in head if c)
        self.rest = rest
        self.ended = rest is None

    async def _pull(self) -> bool:
        while not self.ended:
            try:
                chunk = await anext(self.rest)  # type: ignore[arg-type]
            except StopAsyncIteration:
                self.ended = True
                return False
            if chunk:
                self.pending.append(memoryview(chunk))
                return True
        return False

    async def has_more(self) -> bool:
        return bool(self.pending) or await self._pull()

    async def read(self, size: int) -> bytearray:
        """Up to `size` bytes (fewer only at the end of the stream)."""
        out = bytearray(size)
        n = 0
        with memoryview(out) as dst:
            while n < size:
                if not self.pending and not await self._pull():
                    break
                mv = self.pending.popleft()
                take = min(len(mv), size - n)
                dst[n:n + take] = mv[:take]
                if take < len(mv):
                    self.pending.appendleft(mv[take:])
                n += take
                del mv
        if n < size:
            del out[n:]
        return out


class ResumableSession:
    """The client side of one resumable upload session (blocking; run in a worker thread).

    `resume` enables recovering from an interrupted chunk by asking the service how many
    bytes it persisted (PUT with Content-Range: bytes */*). fake-gcs-server finalises the
    object on such a status query, so stores on a custom endpoint disable it and fail the
    upload instead (the caller retries it from the start)."""

    def __init__(self, http: requests.Session, url: str, resume: bool):
        self.http = http
        self.url = url
        self.resume = resume

    def send(self, data: bytes | bytearray, offset: int, total: int | None, md5_b64: str | None = None) -> dict | None:
        """Send `data` at `offset`. total=None: an intermediate chunk (returns None once the
        service persisted all of it); else the final chunk (returns the object resource)."""
        end = offset + len(data)
        pos = 0  # bytes of data the service has persisted
        attempts = 0
        while True:
            start = offset + pos
            piece = data[pos:] if pos else data
            if total is None:
                content_range = f"bytes {start}-{end - 1}/*"
            elif not piece:
                content_range = f"bytes */{total}"
            else:
                content_range = f"bytes {start}-{end - 1}/{total}"
            headers = {"Content-Range": content_range}
            if total is not None and md5_b64:
                headers["X-Goog-Hash"] = f"md5={md5_b64}"
            done: dict | None = None
            try:
                r = self.http.put(self.url, data=piece, headers=headers, timeout=TIMEOUT)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                    requests.exceptions.ChunkedEncodingError):
                attempts += 1
                if not self.resume or attempts >= MAX_CHUNK_ATTEMPTS:
                    raise
                persisted, done = self._recover(attempts)
            else:
                if r.status_code in (200, 201):
                    persisted, done = end, r.json()
                elif r.status_code == 308:
                    persisted = _persisted(r)
                    if persisted <= start:  # nothing of this request was kept: do not spin
                        attempts += 1
                        if attempts >= MAX_CHUNK_ATTEMPTS:
                            raise FatalError(f"resumable upload makes no progress at byte {persisted}")
                elif r.status_code in _RETRY_STATUS and self.resume and attempts + 1 < MAX_CHUNK_ATTEMPTS:
                    attempts += 1
                    persisted, done = self._recover(attempts)
                else:
                    raise GcsHttpError.from_response(r)
            if done is not None:
                if total is None:
                    raise FatalError(f"resumable upload finalised before its last chunk (at byte {end})")
                return done
            if total is None and persisted >= end:
                return None
            if not offset <= persisted <= end:
                raise FatalError(f"resumable upload out of step: the service has {persisted} bytes, "
                                 f"this request sent bytes {offset}-{end - 1}")
            pos = persisted - offset

    def _recover(self, attempt: int) -> tuple[int, dict | None]:
        """Wait, then ask how many bytes were persisted: (persisted, object if finalised)."""
        time.sleep(min(8.0, 0.25 * 2 ** attempt) * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto
        r = self.http.put(self.url, data=b"", headers={"Content-Range": "bytes */*"}, timeout=TIMEOUT)
        if r.status_code in (200, 201):
            return -1, r.json()
        if r.status_code == 308:
            return _persisted(r), None
        raise GcsHttpError.from_response(r)

    def cancel(self) -> None:
        """DELETE the session. Fine when it is already gone (404/410) or cancelled (499)."""
        r = self.http.delete(self.url, timeout=TIMEOUT)
        if r.status_code not in (200, 204, 404, 410, 499):
            raise GcsHttpError.from_response(r)


def _persisted(r: requests.Response) -> int:
    """Bytes persisted according to a 308's Range header ("bytes=0-N"; absent: none)."""
    rng = r.headers.get("Range")
    if not rng or "-" not in rng:
        return 0
    return int(rng.rsplit("-", 1)[1]) + 1


async def resumable_upload(run: Callable[[str, Callable[[], Any]], Any], session: ResumableSession, where: str,
                           head: list[bytes], rest: AsyncIterator[bytes] | None, opts: PutOptions
                           ) -> tuple[dict, str, int]:
    """Feed head + rest into the session. Returns (object resource, md5 hex, size). Cancels the
    session on any failure, ChecksumMismatch included (nothing is committed then)."""
    size = chunk_size_for(opts.part_size)
    src = ChunkSource(head, rest)
    head.clear()
    whole = hashlib.md5(usedforsecurity=False)  # an integrity check
    total = 0
    overlap = opts.max_buffers >= 2  # read the next chunk while this one is sent
    try:
        piece = await src.read(size)
        while True:
            total += len(piece)
            if opts.size is not None and total > opts.size:
                raise ChecksumMismatch(f"{where}: read more than the expected {opts.size} bytes", code="SizeMismatch")
            if len(piece) == size and await src.has_more():
                offset = total - len(piece)

                def send_intermediate(data: bytes = piece, at: int = offset) -> None:
                    whole.update(data)
                    session.send(data, at, None)

                sending = asyncio.ensure_future(run("put", send_intermediate))
                del piece
                if not overlap:
                    await sending
                reading = asyncio.ensure_future(src.read(size))
                await asyncio.wait({sending, reading}, return_when=asyncio.FIRST_EXCEPTION)
                if sending.done() and sending.exception() is not None:
                    reading.cancel()
                    await asyncio.gather(reading, return_exceptions=True)
                try:
                    await sending
                finally:
                    if not reading.done():
                        reading.cancel()
                        await asyncio.gather(reading, return_exceptions=True)
                piece = await reading
                continue
            await run("put", lambda data=piece: whole.update(data))
            md5 = whole.hexdigest()
            verify_written(where, opts, md5, total)  # before the final chunk: a mismatch commits nothing
            md5_b64 = base64.b64encode(whole.digest()).decode()
            resource = await run("put", functools.partial(session.send, piece, total - len(piece), total, md5_b64))
            return resource, md5, total
    except BaseException:
        await asyncio.shield(_cancel(run, session, where))
        raise


async def _cancel(run: Callable[[str, Callable[[], Any]], Any], session: ResumableSession, where: str) -> None:
    try:
        await run("abort_upload", session.cancel)
    except Exception as e:  # noqa: BLE001 - best effort: the caller raises the original error
        log.warning("could not cancel the resumable upload of %s: %s", where, e)
