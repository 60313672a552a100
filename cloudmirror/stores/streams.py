"""Provider-neutral helpers for streamed transfers: hashing off the event loop, re-cutting
a stream into fixed-size parts, and a bounded concurrent map (invariant 7: at most `limit`
part buffers alive at once)."""

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
        return await asyncio.to_thread(lambda: hashlib.md5(data).digest())
    return hashlib.md5(data).digest()


async def md5_update(h: Any, data: bytes) -> None:
    if len(data) >= _THREAD_HASH_MIN:
        await asyncio.to_thread(h.update, data)
    else:
        h.update(data)


async def rechunk(head: bytes, rest: AsyncIterator[bytes] | None, size: int) -> AsyncIterator[bytes]:
    """Re-cut `head` followed by the chunks of `rest` into pieces of exactly `size` bytes
    (the last one may be shorter). Holds at most one piece plus one incoming chunk."""
    offset = 0
    while len(head) - offset >= size:  # a big `head` (a bytes body) is cut without copying it whole
        yield head[offset:offset + size]
        offset += size
    buf = bytearray(head[offset:])
    del head
    while True:
        while len(buf) >= size:
            with memoryview(buf) as mv:
                piece = bytes(mv[:size])
            del buf[:size]
            yield piece
            del piece
        if rest is None:
            break
        try:
            chunk = await anext(rest)
        except StopAsyncIteration:
            break
        buf += chunk
        del chunk
    if buf:
        yield bytes(buf)


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
