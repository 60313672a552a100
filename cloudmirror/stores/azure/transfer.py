"""Reads and writes of blob bytes for the Azure store.

Reads are ranged GETs of max(chunk_size, 1 MiB) bytes, each guarded by the etag the first
one saw (If-Match), so a blob rewritten mid-read raises PreconditionFailed instead of
mixing versions; one range is in memory at a time.

Writes are one Put Blob (with Content-MD5 checked by the service and the blob's MD5
stored) up to the single-put threshold, else staged blocks (Put Block, each with its own
Content-MD5) committed by Put Block List. At most `max_buffers` blocks are alive at once
(plus the chunks of the one being filled and one incoming chunk); blocks are sent in 64 KiB
pieces (BlockBody), so the HTTP client never copies a whole block. The MD5 and
size of the whole stream are verified BEFORE the block list is committed, so a mismatch
commits nothing and the previous blob stays intact. Staged-but-uncommitted blocks are
invisible and garbage-collected by the service (after 7 days); nothing else needs cleaning.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from azure.core import MatchConditions

from cloudmirror.stores.azure.errors import translate
from cloudmirror.stores.azure.mapping import WriteParams, meta_from_props, strip_etag
from cloudmirror.stores.base import FatalError, GetResult, PutOptions, PutResult, StoreError, verify_written
from cloudmirror.stores.streams import bounded_map, md5_digest, md5_update, rechunk

MIN_GET = 1024 * 1024
MAX_BLOCKS = 50_000
MAX_BLOCK = 4000 * 1024 * 1024
MIN_BLOCK = 64 * 1024


class Target:
    """Where a transfer goes: the blob client and the names used in messages."""

    def __init__(self, blob: Any, account: str, container: str, key: str):
        self.blob, self.account, self.container, self.key = blob, account, container, key

    @property
    def where(self) -> str:
        return f"az://{self.account}/{self.container}/{self.key}"

    def translate(self):  # noqa: ANN201 - a context manager
        return translate(self.account, self.container, self.key)


# ---------------------------------------------------------------- reads
async def ranged_get(t: Target, chunk_size: int, if_match: str | None) -> GetResult:
    """Stream the blob in chunks of chunk_size (the last may be shorter); see the module
    docstring. Raises NotFound / PreconditionFailed before returning."""
    chunk_size = max(1, chunk_size)
    req = max(chunk_size, MIN_GET)
    cond = {"etag": if_match.strip('"'), "match_condition": MatchConditions.IfNotModified} if if_match else {}
    for _ in range(3):
        try:
            with t.translate():
                d = await t.blob.download_blob(offset=0, length=req, max_concurrency=1, decompress=False, **cond)
                first = await d.readall()
        except StoreError as e:  # an empty blob has no range 0-: read its properties instead
            if e.code != "InvalidRange":
                raise
            with t.translate():
                p = await t.blob.get_blob_properties(**cond)
            if p.size == 0:
                return GetResult(meta=meta_from_props(t.key, p), body=_pieces(b"", chunk_size))
            continue  # rewritten in between: read again
        total = int(str(d.properties.content_range).rsplit("/", 1)[-1])
        meta = meta_from_props(t.key, d.properties, size=total)
        return GetResult(meta=meta, body=_rest(t, first, total, req, chunk_size, meta.etag))
    raise FatalError(f"{t.where}: Unstable: the blob kept changing between reads", code="Unstable")


async def _rest(t: Target, first: bytes, total: int, req: int, chunk_size: int,
                etag: str | None) -> AsyncIterator[bytes]:
    async for piece in _pieces(first, chunk_size):
        yield piece
    offset = len(first)
    del first
    cond = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
    while offset < total:
        with t.translate():
            d = await t.blob.download_blob(offset=offset, length=min(req, total - offset), max_concurrency=1,
                                           decompress=False, **cond)
            data = await d.readall()
        if not data:
            raise FatalError(f"{t.where}: ShortRead: no bytes at offset {offset} of {total}", code="ShortRead")
        offset += len(data)
        async for piece in _pieces(data, chunk_size):
            yield piece
        del data


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    if len(data) <= size:
        if data:
            yield data
        return
    with memoryview(data) as mv:
        for i in range(0, len(data), size):
            yield bytes(mv[i:i + size])


# ---------------------------------------------------------------- writes
async def put_single(t: Target, data: bytes, opts: PutOptions, params: WriteParams) -> PutResult:
    """Put Blob with Content-MD5 (verified by the service) and the blob's MD5 property."""
    digest = await md5_digest(data)
    md5 = digest.hex()
    verify_written(t.where, opts, md5, len(data))
    with t.translate():
        r = await t.blob.upload_blob(data, length=len(data), overwrite=True, max_concurrency=1,
                                     content_settings=params.content_settings(digest), metadata=params.metadata,
                                     tags=params.tags or None, standard_blob_tier=params.tier_arg(),
                                     transactional_content_md5=digest)
    return PutResult(etag=strip_etag(r.get("etag")), version_id=r.get("version_id"), size=len(data), md5=md5)


def block_size(part_size: int, size: int | None) -> int:
    """part_size within [64 KiB, 4000 MiB], grown so `size` fits in 50,000 blocks."""
    bs = min(max(part_size, MIN_BLOCK), MAX_BLOCK)
    if size is not None and -(-size // bs) > MAX_BLOCKS:
        bs = -(-size // MAX_BLOCKS)
        bs = -(-bs // MIN_BLOCK) * MIN_BLOCK
    return bs


def block_id(upload_id: str, n: int) -> str:
    """Block ids of one upload: all the same length (the SDK base64-encodes them)."""
    return f"{upload_id}-{n:06d}"


async def put_staged(t: Target, first: list[bytes], rest: AsyncIterator[bytes] | None, opts: PutOptions,
                     params: WriteParams) -> PutResult:
    """Stage the chunks of `first` (consumed) followed by `rest` as blocks of
    opts.part_size, verify the whole, commit."""
    from azure.storage.blob import BlobBlock

    size = block_size(opts.part_size, opts.size)
    upload_id = uuid.uuid4().hex
    whole = hashlib.md5(usedforsecurity=False)  # an integrity check, not security
    total = 0

    async def blocks() -> AsyncIterator[bytes]:
        nonlocal total
        count = 0
        async for block in rechunk(first, rest, size):
            count += 1
            if count > MAX_BLOCKS:
                raise FatalError(f"{t.where}: TooManyBlocks: more than {MAX_BLOCKS} blocks of {size} bytes "
                                 "(give PutOptions.size or a larger part_size)", code="TooManyBlocks")
            await md5_update(whole, block)
            total += len(block)
            yield block
            del block

    async def stage(n: int, data: bytes) -> str:
        bid = block_id(upload_id, n)
        digest = await md5_digest(data)
        with t.translate():
            await t.blob.stage_block(bid, BlockBody(data), length=len(data), transactional_content_md5=digest)
        return bid

    if opts.on_upload_started is not None:
        await opts.on_upload_started(upload_id)
    ids = await bounded_map(blocks(), stage, opts.max_buffers)
    md5 = whole.hexdigest()
    verify_written(t.where, opts, md5, total)  # before the commit: a mismatch leaves the old blob
    with t.translate():
        r = await t.blob.commit_block_list([BlobBlock(block_id=i) for i in ids],
                                           content_settings=params.content_settings(whole.digest()),
                                           metadata=params.metadata, tags=params.tags or None,
                                           standard_blob_tier=params.tier_arg())
    return PutResult(etag=strip_etag(r.get("etag")), version_id=r.get("version_id"), size=total, md5=md5)


class BlockBody:
    """A block's bytes as a request body that aiohttp sends in 64 KiB pieces (an async
    iterable: a bytes or BytesIO body would be copied whole by aiohttp, doubling the memory
    of every block in flight) and that the SDK's retry policy can rewind (tell/seek)."""

    PIECE = 64 * 1024

    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0

    def __len__(self) -> int:
        return len(self._data)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = min(max(0, base + offset), len(self._data))
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n is None or n < 0 else min(len(self._data), self._pos + n)
        with memoryview(self._data) as mv:
            piece = bytes(mv[self._pos:end])
        self._pos = end
        return piece

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        while piece := self.read(self.PIECE):
            yield piece
