"""Mapping between store options/metadata and S3 API parameters/responses, and the
botocore client configuration shared by every S3 client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from botocore.config import Config

from cloudmirror import metrics
from cloudmirror.stores.base import ObjectMeta, PutOptions
from cloudmirror.stores.s3.errors import translate
from cloudmirror.stores.s3.transfer import is_plain_md5

#: `client(location=None)`: the cached client for a location's (region, endpoint), by default
#: the store's own (S3Store.client)
ClientFactory = Callable[..., Awaitable[Any]]

_HEADER_PARAMS = (("content_type", "ContentType"), ("content_encoding", "ContentEncoding"),
                  ("content_disposition", "ContentDisposition"), ("content_language", "ContentLanguage"),
                  ("cache_control", "CacheControl"))
_CHECKSUM_FIELDS = (("ChecksumCRC32", "crc32"), ("ChecksumCRC32C", "crc32c"), ("ChecksumSHA1", "sha1"),
                    ("ChecksumSHA256", "sha256"), ("ChecksumCRC64NVME", "crc64nvme"))


def client_config(endpoint: str | None) -> Config:
    """botocore Config shared by every client: standard retries (3 attempts), a pool of
    64 connections, bounded timeouts, path-style addressing for custom endpoints, and
    checksums only where required (we send Content-MD5 ourselves)."""
    return Config(
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=64,
        connect_timeout=10,
        read_timeout=120,
        tcp_keepalive=True,
        s3={"addressing_style": "path"} if endpoint else None,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def count_request(event_name: str = "", **_: Any) -> None:
    """botocore before-send hook: one count per HTTP request (retries included)."""
    metrics.storage_request("s3", event_name.rsplit(".", 1)[-1])


def meta_from_response(key: str, r: dict[str, Any]) -> ObjectMeta:
    """ObjectMeta from a HeadObject / GetObject response."""
    etag = etag_of(r)
    sse = r.get("ServerSideEncryption")
    plain = is_plain_md5(etag) and sse != "aws:kms" and not r.get("SSECustomerAlgorithm")
    return ObjectMeta(
        key=key,
        size=int(r.get("ContentLength") or 0),
        etag=etag,
        version_id=r.get("VersionId"),
        last_modified=r.get("LastModified"),
        content_type=r.get("ContentType"),
        content_encoding=r.get("ContentEncoding"),
        content_disposition=r.get("ContentDisposition"),
        content_language=r.get("ContentLanguage"),
        cache_control=r.get("CacheControl"),
        metadata={k.lower(): v for k, v in (r.get("Metadata") or {}).items()},
        tag_count=int(r.get("TagCount") or 0),  # S3 sends x-amz-tagging-count only when > 0
        storage_class=r.get("StorageClass") or "STANDARD",
        md5=etag.lower() if plain and etag else None,
        checksums={name: r[f] for f, name in _CHECKSUM_FIELDS if r.get(f)},
    )


def write_params(opts: PutOptions, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """PutObject / CreateMultipartUpload / CopyObject parameters for opts."""
    p: dict[str, Any] = {param: getattr(opts, attr) for attr, param in _HEADER_PARAMS if getattr(opts, attr)}
    p["Metadata"] = dict(opts.metadata)
    tags = opts.tags if tags is None else tags
    if tags:
        p["Tagging"] = urlencode(tags)
    if opts.storage_class:
        p["StorageClass"] = opts.storage_class
    if opts.sse:
        p["ServerSideEncryption"] = opts.sse
    if opts.kms_key_id:
        p["SSEKMSKeyId"] = opts.kms_key_id
    return p


def listed_meta(o: dict[str, Any]) -> ObjectMeta:
    """ObjectMeta from a ListObjectsV2 / ListObjectVersions entry (no user metadata)."""
    etag = etag_of(o)
    return ObjectMeta(key=o["Key"], size=int(o.get("Size") or 0), etag=etag, version_id=o.get("VersionId"),
                      last_modified=o.get("LastModified"), storage_class=o.get("StorageClass") or "STANDARD",
                      md5=etag.lower() if is_plain_md5(etag) else None, is_latest=o.get("IsLatest", True))


def written_version(r: dict[str, Any]) -> str | None:
    """The version id a write created; "null" (unversioned / suspended bucket) -> None."""
    v = r.get("VersionId")
    return None if v in (None, "", "null") else v


def etag_of(r: dict[str, Any], field: str = "ETag") -> str | None:
    return (r.get(field) or "").strip('"') or None


async def get_tags(client: Any, bucket: str, key: str, version_id: str | None) -> dict[str, str]:
    """GetObjectTagging of bucket/key (a version when given). Raises NotFound, AccessDenied, ..."""
    params = {"Bucket": bucket, "Key": key}
    if version_id:
        params["VersionId"] = version_id
    with translate(bucket, key):
        r = await client.get_object_tagging(**params)
    return {t["Key"]: t["Value"] for t in r.get("TagSet", [])}
