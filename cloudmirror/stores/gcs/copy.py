"""Server-side copy for the GCS store (the ServerSideCopier capability): a GCSCopier that
GCSStore holds and delegates to. objects.rewrite, following the rewrite token until done.

The source is read first (pinned to opts.source_version_id when given) and checked against
opts.source_if_match exactly (generation and metageneration); the rewrite is then pinned to
that generation (and guarded by its metageneration, so the tags read are still the
source's), so the bytes copied are the bytes checked, even on fake-gcs-server, which
ignores ifSourceGenerationMatch / ifSourceMetagenerationMatch. A rewrite that finds the pinned
generation gone raises PreconditionFailed when the key holds a newer one, NotFound when it
is gone. The result's size and MD5 (CRC32C for composite sources) are compared with the
source's.
"""

from __future__ import annotations

import logging
from typing import Any

from cloudmirror.location import Location
from cloudmirror.stores.base import (
    BucketNotFound,
    ChecksumMismatch,
    CopyOptions,
    FatalError,
    NotFound,
    PreconditionFailed,
    PutResult,
)
from cloudmirror.stores.gcs.common import (
    TIMEOUT,
    etag_of,
    guard_holds,
    md5_hex,
    parse_generation,
    parse_guard,
    split_metadata,
)
from cloudmirror.stores.gcs.connection import GCSConnection

log = logging.getLogger(__name__)


class GCSCopier:
    """Rewrites into `location` through `conn`, the store's GCSConnection."""

    def __init__(self, location: Location, conn: GCSConnection):
        self.location = location
        self.bucket = location.bucket
        self.conn = conn

    def can_copy_from(self, source: Location) -> bool:
        """Any gs:// location on the same endpoint (the same credentials reach both)."""
        return source.scheme == "gs" and source.endpoint == self.location.endpoint

    async def copy(self, source: Location, source_key: str, key: str, opts: CopyOptions) -> PutResult:
        """Rewrite source/source_key (pinned to the generation checked against the guard)
        to key here, following the rewrite token until done. Content headers given, metadata
        and tags (the source's when opts.tags is None) REPLACE the source's; storage class
        and KMS key from opts. Raises PreconditionFailed when the source no longer matches
        opts.source_if_match, NotFound when it is gone, ChecksumMismatch when the source or
        the result disagree with opts.md5 / opts.size."""
        if not self.can_copy_from(source):
            raise FatalError(f"{self.conn.where(key)}: cannot rewrite from {source}", code="NotSupported")
        where = f"{self.conn.where(key)} (copy of {self.conn.where(source_key, source.bucket)})"
        src_where = self.conn.where(source_key, source.bucket)
        guard = parse_guard(opts.source_if_match, src_where)
        src_gen = parse_generation(opts.source_version_id, src_where)
        try:
            src = await self.conn.props(source_key, src_gen, "copy", source.bucket)
        except NotFound:
            if guard is not None and src_gen is not None and (moved := await self.conn.moved_on(source_key, src_gen,
                                                                                               source.bucket)):
                raise moved from None
            raise
        if not guard_holds(guard, src):
            raise PreconditionFailed(f"{src_where}: PreconditionFailed: etag is {etag_of(src)}, "
                                     f"not {opts.source_if_match}", code="PreconditionFailed")
        src_md5, src_size = md5_hex(src), int(src.get("size") or 0)
        if (opts.size is not None and opts.size != src_size) or (opts.md5 and src_md5 and opts.md5.lower() != src_md5):
            raise ChecksumMismatch(f"{where}: source is {src_size} bytes md5 {src_md5}, expected {opts.size} bytes "
                                   f"md5 {opts.md5}", code="BadDigest")
        tags = opts.tags if opts.tags is not None else split_metadata(src.get("metadata"))[1]
        dest = self.conn.write_blob(key, opts, tags)
        wanted = dict(dest.metadata or {})
        pinned = self.conn.blob(source_key, int(src["generation"]), source.bucket)
        # the metadata (tags) read must still be the source's when the rewrite runs
        guards = {"if_source_generation_match": int(src["generation"])}
        if src.get("metageneration"):
            guards["if_source_metageneration_match"] = int(src["metageneration"])

        def rewrite() -> dict[str, Any]:
            token = None
            while True:
                token, _, _ = dest.rewrite(pinned, token=token, timeout=TIMEOUT, **guards)
                if token is None:
                    break
            props = dict(dest._properties)  # noqa: SLF001 - the SDK exposes the raw resource only as _properties
            stored = props.get("metadata") or {}
            if stored != wanted:  # an empty metadata map in the body reads as "not given": the source's is copied
                # PATCH merges metadata: null removes a key; a null map removes them all
                dest.metadata = {**{k: None for k in stored if k not in wanted}, **wanted} if wanted else None
                dest.patch(if_generation_match=int(props["generation"]), timeout=TIMEOUT)
                props = dict(dest._properties)  # noqa: SLF001 - the SDK exposes the raw resource only as _properties
                if (props.get("metadata") or {}) != wanted:
                    log.warning("%s: the service kept metadata %s after a rewrite asking for %s", where,
                                props.get("metadata"), wanted)
            return props

        try:
            props = await self.conn.run("copy", rewrite, key)
        except NotFound as e:
            if (moved := await self.conn.moved_on(source_key, int(src["generation"]), source.bucket)) is not None:
                raise moved from None
            try:
                await self.conn.props(source_key, int(src["generation"]), "copy", source.bucket)
            except NotFound:
                raise e from None  # the source went away
            raise BucketNotFound(f"gs://{self.bucket}: NoSuchBucket: the rewrite to {key} found no bucket "
                                 "(the source is still there)", code="NoSuchBucket") from e
        size, md5 = int(props.get("size") or 0), md5_hex(props)
        same = md5 == src_md5 if src_md5 else props.get("crc32c") == src.get("crc32c")  # composites: no MD5
        if size != src_size or not same:
            raise ChecksumMismatch(f"{where}: copied {size} bytes md5 {md5} crc32c {props.get('crc32c')}, source has "
                                   f"{src_size} bytes md5 {src_md5} crc32c {src.get('crc32c')}", code="BadDigest")
        return PutResult(etag=etag_of(props), version_id=str(int(props["generation"])), size=size, md5=md5)
