"""Server-side copy for the S3 store (the ServerSideCopier capability): an S3Copier that
S3Store holds and delegates to. CopyObject up to `multipart_threshold`, UploadPartCopy
above it.

Copies are verified (invariant 6): a single copy of a plain-MD5 source must produce that
etag; otherwise the copied size is checked with a HEAD. The copy guard (invariant 3) is
CopySourceIfMatch on every request; because some emulators (moto) ignore it, a single copy
whose result etag differs from the guarded one also raises PreconditionFailed, and a
multipart copy first checks the guard with HeadObject(IfMatch).
"""

from __future__ import annotations

from typing import Any

from cloudmirror.location import Location
from cloudmirror.stores.base import ChecksumMismatch, CopyOptions, ObjectMeta, PreconditionFailed, PutResult
from cloudmirror.stores.s3.common import (
    ClientFactory,
    etag_of,
    get_tags,
    meta_from_response,
    write_params,
    written_version,
)
from cloudmirror.stores.s3.errors import translate
from cloudmirror.stores.s3.transfer import is_plain_md5, multipart_copy

COPY_MAX_SINGLE = 5 * 1024**3  # CopyObject's limit


class S3Copier:
    """Copies into `location` with the clients `client` gives (S3Store.client).

    `multipart_threshold`: copies larger than this use UploadPartCopy (5 GiB, the CopyObject
    limit; tests lower it through S3Store.copy_multipart_threshold)."""

    def __init__(self, location: Location, client: ClientFactory, *, multipart_threshold: int = COPY_MAX_SINGLE):
        self.location = location
        self.bucket = location.bucket
        self.client = client
        self.multipart_threshold = multipart_threshold

    def can_copy_from(self, source: Location) -> bool:
        """Same S3 service (endpoint, None == None) and the same credentials (profile)."""
        return (source.scheme == "s3" and source.endpoint == self.location.endpoint
                and source.param("profile") == self.location.param("profile"))

    async def copy(self, source: Location, source_key: str, key: str, opts: CopyOptions) -> PutResult:
        """Server-side copy of source/source_key to key in this location (the request goes
        to this location's regional client). Content headers and metadata are REPLACED by
        opts; tags are copied unless opts.tags is non-empty. Raises PreconditionFailed when
        the source no longer matches opts.source_if_match, NotFound when it is gone,
        ChecksumMismatch when the result disagrees with opts.md5 / opts.size."""
        c = await self.client()
        src_client = await self.client(source)
        copy_source = {"Bucket": source.bucket, "Key": source_key}
        if opts.source_version_id:
            copy_source["VersionId"] = opts.source_version_id
        where = f"s3://{self.bucket}/{key} (copy of s3://{source.bucket}/{source_key})"
        src_meta: ObjectMeta | None = None
        size = opts.size
        if size is None or size > self.multipart_threshold:
            src_meta = await self._head_source(src_client, source.bucket, source_key, opts)
            size = src_meta.size
        if size > self.multipart_threshold:
            return await self._copy_multipart(c, src_client, copy_source, key, size, src_meta, opts, where)
        params = write_params(opts)
        params.update(CopySource=copy_source, MetadataDirective="REPLACE",
                      TaggingDirective="COPY" if opts.tags is None else "REPLACE")
        if opts.source_if_match:
            params["CopySourceIfMatch"] = f'"{opts.source_if_match}"'
        with translate(self.bucket, key):
            r = await c.copy_object(Bucket=self.bucket, Key=key, **params)
        etag = etag_of(r.get("CopyObjectResult") or {})
        version_id = written_version(r)
        expected = opts.md5 or (src_meta.md5 if src_meta else None)
        if expected and opts.sse != "aws:kms" and is_plain_md5(etag):
            if etag.lower() == expected.lower():
                return PutResult(etag=etag, version_id=version_id, size=size, md5=etag.lower())
            if opts.source_if_match and opts.source_if_match.strip('"') != etag:
                raise PreconditionFailed(f"{where}: PreconditionFailed: the source changed (copied etag {etag}, "
                                         f"expected {opts.source_if_match})", code="PreconditionFailed")
            raise ChecksumMismatch(f"{where}: copied etag {etag} != source md5 {expected}")
        await self._verify_size(c, key, version_id, size, where)
        return PutResult(etag=etag, version_id=version_id, size=size, md5=expected)

    async def _head_source(self, src_client: Any, bucket: str, key: str, opts: CopyOptions) -> ObjectMeta:
        params = {"Bucket": bucket, "Key": key}
        if opts.source_version_id:
            params["VersionId"] = opts.source_version_id
        if opts.source_if_match:
            params["IfMatch"] = f'"{opts.source_if_match}"'
        with translate(bucket, key):
            return meta_from_response(key, await src_client.head_object(**params))

    async def _copy_multipart(self, c: Any, src_client: Any, copy_source: dict[str, str], key: str, size: int,
                              src_meta: ObjectMeta | None, opts: CopyOptions, where: str) -> PutResult:
        if opts.tags is not None:
            tags = opts.tags
        else:
            tags = await get_tags(src_client, copy_source["Bucket"], copy_source["Key"], copy_source.get("VersionId"))
        # guard every part: by the caller's etag, else by the etag just seen (a version id pins it already)
        guard = opts.source_if_match or (None if opts.source_version_id or not src_meta else src_meta.etag)
        r = await multipart_copy(c, self.bucket, key, copy_source, size, guard, opts, write_params(opts, tags))
        version_id = written_version(r)
        await self._verify_size(c, key, version_id, size, where)
        return PutResult(etag=etag_of(r), version_id=version_id, size=size, md5=opts.md5)

    async def _verify_size(self, c: Any, key: str, version_id: str | None, size: int | None, where: str) -> None:
        if size is None:
            return
        params = {"Bucket": self.bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        with translate(self.bucket, key):
            r = await c.head_object(**params)
        if int(r.get("ContentLength") or 0) != size:
            raise ChecksumMismatch(f"{where}: copied {r.get('ContentLength')} bytes, expected {size}")
