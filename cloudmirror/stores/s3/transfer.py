"""Multipart upload and multipart server-side copy for the S3 store.

Memory is bounded (invariant 7): a part buffer is read only after a slot of the
`max_buffers` semaphore is taken, and the slot is given back when that part's upload
finishes, so at most `max_buffers` part buffers (plus one incoming chunk being
re-chunked) are alive at once. Every part carries Content-MD5; the MD5 of the whole
stream is computed while reading. Any failure aborts the upload (best effort).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from cloudmirror.stores.base import ChecksumMismatch, FatalError, PutOptions, PutResult, verify_written
from cloudmirror.stores.s3.errors import translate
from cloudmirror.stores.streams import bounded_map, md5_digest, md5_update, rechunk

log = logging.getLogger(__name__)


MIN_PART = 5 * 1024 * 1024
MAX_PARTS = 10_000


def is_plain_md5(etag: str | None) -> bool:
    """True when an etag looks like a plain MD5 (32 hex digits, no multipart '-N')."""
    return bool(etag) and len(etag) == 32 and all(c in "0123456789abcdefABCDEF" for c in etag)


def effective_part_size(part_size: int, size: int | None) -> int:
    """At least 5 MiB, and large enough that `size` fits in 10,000 parts."""
    ps = max(part_size, MIN_PART)
    if size is not None and -(-size // ps) > MAX_PARTS:
        ps = -(-size // MAX_PARTS)
        ps = -(-ps // (1024 * 1024)) * 1024 * 1024
    return ps


async def _abort(client: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as e:  # best effort: the caller re-raises the original error
        log.warning("could not abort upload %s of s3://%s/%s: %s", upload_id, bucket, key, e)


def multipart_etag(digests: list[bytes]) -> str:
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


async def multipart_upload(client: Any, bucket: str, key: str, first: list[bytes], rest: AsyncIterator[bytes] | None,
                           opts: PutOptions, create_params: dict[str, Any]) -> PutResult:
    """Upload the chunks of `first` (consumed) followed by `rest` as a multipart upload.
    Raises ChecksumMismatch (upload aborted, nothing written) when opts.md5 / opts.size do
    not match the bytes read."""
    part_size = effective_part_size(opts.part_size, opts.size)
    kms = opts.sse == "aws:kms"
    with translate(bucket, key):
        created = await client.create_multipart_upload(Bucket=bucket, Key=key, **create_params)
    upload_id = created["UploadId"]
    whole = hashlib.md5(usedforsecurity=False)
    total = 0

    async def parts() -> AsyncIterator[bytes]:
        nonlocal total
        count = 0
        async for piece in rechunk(first, rest, part_size):
            count += 1
            if count > MAX_PARTS:
                raise FatalError(f"s3://{bucket}/{key}: TooManyParts: more than {MAX_PARTS} parts of {part_size} bytes")
            await md5_update(whole, piece)
            total += len(piece)
            yield piece

    async def send(n: int, data: bytes) -> tuple[dict[str, Any], bytes]:
        digest = await md5_digest(data)
        with translate(bucket, key):
            r = await client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=data,
                                         ContentMD5=base64.b64encode(digest).decode())
        etag = r["ETag"].strip('"')
        if not kms and is_plain_md5(etag) and etag.lower() != digest.hex():
            raise ChecksumMismatch(f"s3://{bucket}/{key}: part {n} etag {etag} != md5 {digest.hex()}")
        return {"PartNumber": n, "ETag": r["ETag"]}, digest

    try:
        if opts.on_upload_started is not None:
            await opts.on_upload_started(upload_id)
        done = await bounded_map(parts(), send, opts.max_buffers)
        md5 = whole.hexdigest()
        verify_written(f"s3://{bucket}/{key}", opts, md5, total)
        with translate(bucket, key):
            r = await client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": [p for p, _ in done]})
    except BaseException:
        await asyncio.shield(_abort(client, bucket, key, upload_id))
        raise
    etag = r.get("ETag", "").strip('"') or None
    expected = multipart_etag([d for _, d in done])
    if not kms and etag and "-" in etag and etag != expected:
        raise ChecksumMismatch(f"s3://{bucket}/{key}: multipart etag {etag} != expected {expected}")
    return PutResult(etag=etag, version_id=None if r.get("VersionId") in (None, "", "null") else r["VersionId"],
                     size=total, md5=md5)


async def multipart_copy(client: Any, bucket: str, key: str, copy_source: dict[str, str], size: int,
                         guard: str | None, opts: PutOptions, create_params: dict[str, Any]) -> dict[str, Any]:
    """Copy `size` bytes of copy_source into bucket/key with UploadPartCopy.

    `guard` is the source etag every part must still match (CopySourceIfMatch). Returns
    the CompleteMultipartUpload response. Aborts the upload on any failure."""
    part_size = effective_part_size(opts.part_size, size)
    with translate(bucket, key):
        created = await client.create_multipart_upload(Bucket=bucket, Key=key, **create_params)
    upload_id = created["UploadId"]

    async def ranges() -> AsyncIterator[tuple[int, int]]:
        for start in range(0, size, part_size):
            yield start, min(start + part_size, size) - 1

    async def send(n: int, rng: tuple[int, int]) -> dict[str, Any]:
        extra = {"CopySourceIfMatch": f'"{guard}"'} if guard else {}
        with translate(bucket, key):
            r = await client.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n,
                                              CopySource=copy_source, CopySourceRange=f"bytes={rng[0]}-{rng[1]}",
                                              **extra)
        return {"PartNumber": n, "ETag": r["CopyPartResult"]["ETag"]}

    try:
        if opts.on_upload_started is not None:
            await opts.on_upload_started(upload_id)
        parts = await bounded_map(ranges(), send, max(opts.max_buffers, 4))
        with translate(bucket, key):
            return await client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                          MultipartUpload={"Parts": parts})
    except BaseException:
        await asyncio.shield(_abort(client, bucket, key, upload_id))
        raise
