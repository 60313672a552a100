"""Mapping between store options/metadata and Azure Blob properties (the rules are in the
docstring of cloudmirror.stores.azure): metadata key encoding, header-safe values, blob
index tag limits, access tiers, and ObjectMeta from BlobProperties.

Every check runs before a request is sent, so an unmappable write changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cloudmirror.stores.base import FatalError, ObjectMeta, PutOptions

# ---------------------------------------------------------------- metadata keys
_ESCAPED = re.compile(r"(?:_x[0-9A-Fa-f]{2}_)+")


def encode_meta_key(key: str) -> str:
    """A user metadata key as an Azure metadata name (a C# identifier): ASCII letters and
    digits stay, every other character (including '_') becomes `_xHH_` per UTF-8 byte, and
    so does a leading digit. Keys are lower-cased first (Azure names are case-insensitive)."""
    out: list[str] = []
    for i, ch in enumerate(key.lower()):
        if ch.isascii() and ch.isalnum() and not (i == 0 and ch.isdigit()):
            out.append(ch)
        else:
            out.extend(f"_x{b:02X}_" for b in ch.encode("utf-8"))
    return "".join(out)


def decode_meta_key(name: str) -> str:
    """Inverse of encode_meta_key, lower-cased. A name with no (or a malformed) escape
    is returned as it is, lower-cased."""
    def repl(m: re.Match[str]) -> str:
        raw = bytes(int(m.group(0)[i + 2:i + 4], 16) for i in range(0, len(m.group(0)), 5))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return m.group(0)

    return _ESCAPED.sub(repl, name).lower()


def _header_safe(value: str) -> bool:
    """Printable ASCII without leading/trailing whitespace (HTTP would trim it)."""
    return all(" " <= c <= "~" for c in value) and value == value.strip(" ")


def encode_metadata(metadata: dict[str, str], where: str) -> dict[str, str]:
    """User metadata as Azure metadata. Raises FatalError(code="UnmappableMetadata")
    naming the key when a key is empty or collides with another after lower-casing, or a
    value is not printable ASCII without surrounding spaces (never dropped silently)."""
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise FatalError(f"{where}: UnmappableMetadata: empty metadata key", code="UnmappableMetadata")
        if not isinstance(value, str) or not _header_safe(value):
            raise FatalError(f"{where}: UnmappableMetadata: the value of metadata key {key!r} is not printable "
                             "ASCII without leading/trailing spaces; Azure metadata travels in HTTP headers",
                             code="UnmappableMetadata")
        name = encode_meta_key(key)
        if name in out:
            raise FatalError(f"{where}: UnmappableMetadata: metadata key {key!r} collides with another key "
                             "(Azure metadata names are case-insensitive)", code="UnmappableMetadata")
        out[name] = value
    return out


def decode_metadata(metadata: dict[str, Any] | None) -> dict[str, str]:
    """Azure metadata as user metadata (keys decoded and lower-cased; a None value, which
    listings give for an empty one, is "")."""
    return {decode_meta_key(k): "" if v is None else str(v) for k, v in (metadata or {}).items()}


# ---------------------------------------------------------------- blob index tags
MAX_TAGS = 10
_TAG_CHARS = re.compile(r"[A-Za-z0-9 +\-./:=_]*")


def check_tags(tags: dict[str, str], where: str) -> dict[str, str]:
    """Tags as Azure blob index tags, unchanged. Raises FatalError(code="UnmappableTags")
    naming the tag when there are more than 10, a key is not 1-128 characters or a value
    is over 256, or either has a character outside [A-Za-z0-9 +-./:=_]."""
    if len(tags) > MAX_TAGS:
        raise FatalError(f"{where}: UnmappableTags: {len(tags)} tags ({', '.join(sorted(tags))}); Azure blob index "
                         f"tags allow at most {MAX_TAGS}", code="UnmappableTags")
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise FatalError(f"{where}: UnmappableTags: tag {k!r} is not a string pair", code="UnmappableTags")
        if not 1 <= len(k) <= 128 or len(v) > 256:
            raise FatalError(f"{where}: UnmappableTags: tag {k!r}: keys are 1-128 characters and values at most "
                             "256 in Azure blob index tags", code="UnmappableTags")
        if not _TAG_CHARS.fullmatch(k) or not _TAG_CHARS.fullmatch(v):
            raise FatalError(f"{where}: UnmappableTags: tag {k!r}={v!r} has characters Azure blob index tags do not "
                             "allow (only letters, digits, space and + - . / : = _)", code="UnmappableTags")
    return dict(tags)


# ---------------------------------------------------------------- access tiers
_TIERS = {
    "STANDARD": "Hot", "STANDARD_IA": "Cool", "ONEZONE_IA": "Cool", "GLACIER_IR": "Cold",
    "GLACIER": "Archive", "DEEP_ARCHIVE": "Archive",
    "NEARLINE": "Cool", "COLDLINE": "Cold", "ARCHIVE": "Archive",  # GCS names
    "HOT": "Hot", "COOL": "Cool", "COLD": "Cold",  # Azure's own (any case)
}


def access_tier(storage_class: str | None, where: str) -> str | None:
    """The Azure access tier for a storage class (S3, GCS or Azure names). Raises
    FatalError(code="UnmappableStorageClass") naming an unknown one."""
    if not storage_class:
        return None
    tier = _TIERS.get(storage_class.upper())
    if tier is None:
        raise FatalError(f"{where}: UnmappableStorageClass: storage class {storage_class!r} has no Azure access tier "
                         f"(known: {', '.join(sorted(_TIERS))})", code="UnmappableStorageClass")
    return tier


# ---------------------------------------------------------------- write parameters
_HEADERS = ("content_type", "content_encoding", "content_disposition", "content_language", "cache_control")


@dataclass
class WriteParams:
    """Everything a write sends besides the bytes, validated up front."""

    headers: dict[str, str | None]
    metadata: dict[str, str]  # encoded names
    tags: dict[str, str] | None  # None = (copy) take the source's
    tier: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, opts: PutOptions, where: str) -> "WriteParams":
        """Validate opts (metadata, tags, storage class, encryption). Raises FatalError.
        CopyOptions.tags=None stays None (copy the source's tags)."""
        if opts.sse == "aws:kms" or opts.kms_key_id:
            raise FatalError(f"{where}: UnmappableEncryption: SSE-KMS has no Azure equivalent here (Azure encrypts "
                             "every blob at rest; customer-managed keys are an account setting)",
                             code="UnmappableEncryption")
        if opts.sse not in (None, "AES256"):
            raise FatalError(f"{where}: UnmappableEncryption: unknown sse {opts.sse!r}", code="UnmappableEncryption")
        tags = opts.tags
        return cls(headers={h: getattr(opts, h) for h in _HEADERS},
                   metadata=encode_metadata(opts.metadata, where),
                   tags=None if tags is None else check_tags(tags, where),
                   tier=access_tier(opts.storage_class, where))

    def content_settings(self, md5: bytes | bytearray | None) -> Any:
        from azure.storage.blob import ContentSettings

        return ContentSettings(content_md5=md5, **self.headers)

    def tier_arg(self) -> Any:
        from azure.storage.blob import StandardBlobTier

        return StandardBlobTier(self.tier) if self.tier else None


def headers_differ(params: WriteParams, content_settings: Any) -> bool:
    """True when a blob's content headers are not exactly params.headers."""
    return any((getattr(content_settings, h, None) or None) != (params.headers[h] or None) for h in _HEADERS)


# ---------------------------------------------------------------- reading
def strip_etag(etag: str | None) -> str | None:
    return (etag or "").strip('"') or None


def md5_hex(content_settings: Any) -> str | None:
    md5 = getattr(content_settings, "content_md5", None)
    return bytes(md5).hex() if md5 else None


def meta_from_props(key: str, p: Any, size: int | None = None) -> ObjectMeta:
    """ObjectMeta from BlobProperties (a HEAD, a download or a listing entry)."""
    cs = p.content_settings
    return ObjectMeta(
        key=key,
        size=int(p.size if size is None else size),
        etag=strip_etag(p.etag),
        version_id=getattr(p, "version_id", None),
        last_modified=p.last_modified,
        content_type=cs.content_type or None,
        content_encoding=cs.content_encoding or None,
        content_disposition=cs.content_disposition or None,
        content_language=cs.content_language or None,
        cache_control=cs.cache_control or None,
        metadata=decode_metadata(p.metadata),
        tag_count=int(getattr(p, "tag_count", None) or 0),
        storage_class=str(p.blob_tier.value if hasattr(p.blob_tier, "value") else p.blob_tier) if p.blob_tier else None,
        md5=md5_hex(cs),
        is_latest=getattr(p, "is_current_version", None) is not False,
    )
