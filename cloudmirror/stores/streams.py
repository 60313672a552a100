"""Provider-neutral helpers for streamed transfers: hashing off the event loop, reading the
head of a stream (to choose a single or a multipart write), re-cutting a stream into
fixed-size parts, and a bounded concurrent map (invariant 7: at most `limit` part buffers
alive at once)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_THREAD_HASH_MIN = 256 * 1024  # hash bigger buffers off the event loop (hashlib drops the GIL)


async def md5_digest(data: bytes) -> bytes:
    if len(data) >= _THREAD_HASH_MIN:
        return await asyncio.to_thread(lambda: hashlib.md5(data, usedforsecurity=False).digest())
    return hashlib.md5(data, usedforsecurity=False).digest()


async def md5_update(h: Any, data: bytes) -> None:
    if len(data) >= _THREAD_HASH_MIN:
        await asyncio.to_thread(h.update, data)
    else:
        h.update(data)


def crc32c_hasher() -> Any | None:
    """A running CRC32C (`update(bytes)`, `digest()`: 4 bytes big-endian, as GCS reports it
    base64-encoded), or None without the gcs extra (then there are no CRC32C-only sources
    either)."""
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.Checksum()


async def read_up_to(it: AsyncIterator[bytes], n: int) -> tuple[list[bytes], int, bool]:
    """Read chunks from `it` until at least n bytes or the end; returns (the chunks, their
    size, ended). Empty chunks are dropped and a chunk that is not `bytes` is copied (a
    producer may reuse the buffer it yielded). Raises what `it` raises."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        try:
            chunk = await anext(it)
        except StopAsyncIteration:
            return chunks, got, True
        if chunk:
            chunks.append(chunk if isinstance(chunk, bytes) else bytes(chunk))
            got += len(chunk)
    return chunks, got, False


async def rechunk(first: list[bytes], rest: AsyncIterator[bytes] | None, size: int) -> AsyncIterator[bytes]:
    """Cut the chunks of `first` (popped as they are used, so the caller keeps no
    reference) and then of `rest` into pieces of exactly `size` bytes (the last may be
    shorter). Holds at most one piece's worth of incoming chunks plus the piece joined
    from them; a chunk that is exactly one piece is passed on without a copy."""
    parts: list[memoryview] = []
    have = 0

    async def chunks() -> AsyncIterator[bytes]:
        while first:
            yield first.pop(0)
        if rest is not None:
            async for c in rest:
                yield c

    async for chunk in chunks():
        # a producer may reuse a bytearray it yielded: keep views of immutable bytes only
        view = memoryview(chunk if isinstance(chunk, bytes) else bytes(chunk))
        del chunk
        while len(view):
            n = min(size - have, len(view))
            parts.append(view[:n])
            view = view[n:]
            have += n
            if have == size:
                piece = _join(parts)
                parts.clear()
                have = 0
                yield piece
                del piece
        del view
    if have:
        yield _join(parts)


def _join(parts: list[memoryview]) -> bytes:
    if len(parts) == 1 and isinstance(parts[0].obj, bytes) and parts[0].nbytes == len(parts[0].obj):
        return parts[0].obj  # one whole chunk
    return b"".join(parts)


async def bounded_map(items: AsyncIterator[T], fn: Callable[[int, T], Awaitable[R]], limit: int) -> list[R]:
    """Run fn(n, item) for n = 1, 2, ... concurrently, at most `limit` at a time.

    The next item is pulled from `items` only after a slot is free, so items that are
    buffers are bounded too. Fails fast: the first error cancels the rest and is raised.
    """
    sem = asyncio.Semaphore(max(1, limit))
    tasks: list[asyncio.Task[R]] = []

    async def run(n: int, item: T) -> R:
        try:
            return await fn(n, item)
        finally:
            sem.release()

    try:
        n = 0
        while True:
            await sem.acquire()
            if any(t.done() and not t.cancelled() and t.exception() is not None for t in tasks):
                sem.release()
                break
            try:
                item = await anext(items)
            except StopAsyncIteration:
                sem.release()
                break
            except BaseException:
                sem.release()
                raise
            n += 1
            tasks.append(asyncio.create_task(run(n, item)))
            del item
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
