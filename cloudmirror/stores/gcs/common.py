"""Shared pieces of the GCS store: the client factory, the mapping between store options /
ObjectMeta and GCS object resources (tags, storage classes, identity), and error
classification (the one place that maps google-cloud-storage / requests exceptions to the
StoreError hierarchy).

Identity: ``version_id`` is the object's generation; ``etag`` is
``"{generation}.{metageneration}"`` (a bare generation is accepted as a guard too).

Tags: GCS has no object tags. A tag ``name=value`` is stored as the custom metadata entry
``cloudmirror-tag.name: value``; reads strip those entries out of ``metadata`` and report
them as ``tags`` / ``tag_count``. User metadata may not use that prefix.

Storage classes: GCS names (STANDARD, NEARLINE, COLDLINE, ARCHIVE and the legacy
MULTI_REGIONAL, REGIONAL, DURABLE_REDUCED_AVAILABILITY) pass through. Other providers'
names map to the nearest GCS class: S3 STANDARD, REDUCED_REDUNDANCY,
INTELLIGENT_TIERING, EXPRESS_ONEZONE -> STANDARD; STANDARD_IA, ONEZONE_IA -> NEARLINE;
GLACIER_IR -> COLDLINE; GLACIER, DEEP_ARCHIVE -> ARCHIVE; Azure Hot -> STANDARD,
Cool -> NEARLINE, Cold -> COLDLINE, Archive -> ARCHIVE. Anything else is a FatalError.
HEAD reports the GCS name.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from google.api_core import exceptions as gx
from google.auth import exceptions as auth_exc
from google.auth.transport.requests import AuthorizedSession

from cloudmirror import metrics
from cloudmirror.location import Location
from cloudmirror.stores.base import (
    AccessDenied,
    BucketNotFound,
    ChecksumMismatch,
    FatalError,
    NotFound,
    ObjectMeta,
    PreconditionFailed,
    PutOptions,
    RetryableError,
    StoreError,
)

TAG_PREFIX = "cloudmirror-tag."
SCOPE = "https://www.googleapis.com/auth/devstorage.full_control"
TIMEOUT = (10, 120)  # (connect, read) seconds for every request
DEFAULT_API = "https://storage.googleapis.com"
POOL_SIZE = 32  # HTTP connections kept per store (>= the store's worker threads)

GCS_CLASSES = frozenset({"STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE", "MULTI_REGIONAL", "REGIONAL",
                         "DURABLE_REDUCED_AVAILABILITY"})
CLASS_MAP = {
    # Amazon S3
    "REDUCED_REDUNDANCY": "STANDARD", "INTELLIGENT_TIERING": "STANDARD", "EXPRESS_ONEZONE": "STANDARD",
    "STANDARD_IA": "NEARLINE", "ONEZONE_IA": "NEARLINE",
    "GLACIER_IR": "COLDLINE", "GLACIER": "ARCHIVE", "DEEP_ARCHIVE": "ARCHIVE",
    # Azure access tiers
    "HOT": "STANDARD", "COOL": "NEARLINE", "COLD": "COLDLINE",
}
_HEADER_FIELDS = (("content_type", "contentType"), ("content_encoding", "contentEncoding"),
                  ("content_disposition", "contentDisposition"), ("content_language", "contentLanguage"),
                  ("cache_control", "cacheControl"))


# ---------------------------------------------------------------- client
_tls = threading.local()


def set_operation(op: str | None) -> None:
    """Name the store operation the current thread's HTTP requests belong to (for metrics)."""
    _tls.op = op


class CountingSession(AuthorizedSession):
    """An AuthorizedSession that counts every HTTP request it sends (retries and redirects
    included) as cloudmirror_storage_requests_total{provider="gcs", operation=<thread's op>}."""

    def send(self, request, **kwargs):  # type: ignore[override]
        metrics.storage_request("gcs", getattr(_tls, "op", None) or "other")
        return super().send(request, **kwargs)


def make_client(location: Location) -> tuple[Any, CountingSession, str]:
    """(storage.Client, its HTTP session, API base URL) for a location. Blocking (ADC may
    ask the metadata server). With an `endpoint` parameter: anonymous credentials against
    that endpoint (an emulator); otherwise Application Default Credentials, the project
    from the `project` parameter or ADC."""
    from google.cloud import storage

    endpoint = location.endpoint
    project = location.param("project")
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        credentials: Any = AnonymousCredentials()
        project = project or "cloudmirror-local"
    else:
        import google.auth

        credentials, adc_project = google.auth.default(scopes=[SCOPE])
        project = project or adc_project
    session = CountingSession(credentials)
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    client = storage.Client(project=project, credentials=credentials, _http=session,
                            client_options={"api_endpoint": endpoint} if endpoint else None)
    return client, session, (endpoint or DEFAULT_API).rstrip("/")


# ---------------------------------------------------------------- options -> resource
def storage_class_for(name: str | None, where: str) -> str | None:
    """The GCS storage class for a requested class name (see the module doc). Raises
    FatalError naming an unknown class."""
    if not name:
        return None
    upper = name.strip().upper()
    if upper in GCS_CLASSES:
        return upper
    if upper in CLASS_MAP:
        return CLASS_MAP[upper]
    raise FatalError(f"{where}: InvalidStorageClass: no GCS storage class for {name!r} "
                     f"(use one of {', '.join(sorted(GCS_CLASSES))})", code="InvalidStorageClass")


def custom_metadata(where: str, metadata: dict[str, str], tags: dict[str, str]) -> dict[str, str]:
    """GCS custom metadata for user metadata (keys lower-cased) plus tags as
    cloudmirror-tag.<name> entries. Raises FatalError for user keys using the tag prefix."""
    md: dict[str, str] = {}
    for k, v in metadata.items():
        lk = k.lower()
        if lk.startswith(TAG_PREFIX):
            raise FatalError(f"{where}: InvalidMetadata: metadata key {k!r} uses the prefix {TAG_PREFIX!r} "
                             "reserved for tags", code="InvalidMetadata")
        md[lk] = v
    for k, v in tags.items():
        md[TAG_PREFIX + k] = v
    return md


def apply_write_options(blob: Any, where: str, opts: PutOptions, tags: dict[str, str]) -> None:
    """Set content headers, custom metadata (+ tags) and storage class on a Blob about to
    be written (simple upload, resumable session or rewrite destination)."""
    for attr, _ in _HEADER_FIELDS:
        value = getattr(opts, attr)
        if value is not None:
            setattr(blob, attr, value)
    blob.metadata = custom_metadata(where, opts.metadata, tags)
    sc = storage_class_for(opts.storage_class, where)
    if sc:
        blob.storage_class = sc


# ---------------------------------------------------------------- resource -> ObjectMeta
def split_metadata(md: dict[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """(user metadata with lower-case keys, tags) from GCS custom metadata."""
    user: dict[str, str] = {}
    tags: dict[str, str] = {}
    for k, v in (md or {}).items():
        if k.lower().startswith(TAG_PREFIX):
            tags[k[len(TAG_PREFIX):]] = v
        else:
            user[k.lower()] = v
    return user, tags


def etag_of(props: dict[str, Any]) -> str:
    return f"{int(props['generation'])}.{int(props.get('metageneration') or 1)}"


def md5_hex(props: dict[str, Any]) -> str | None:
    """Hex MD5 of the object (None for composite objects, which have only a CRC32C)."""
    b64 = props.get("md5Hash")
    if not b64 or props.get("componentCount"):
        return None
    return base64.b64decode(b64).hex()


def parse_time(value: str | None) -> datetime | None:
    """RFC 3339 timestamps as GCS writes them (any number of fractional digits, 'Z')."""
    if not value:
        return None
    s = value.replace("Z", "+00:00")
    if "." in s:
        head, _, rest = s.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        s = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def meta_from_props(props: dict[str, Any], include_tags: bool = False, with_metadata: bool = True) -> ObjectMeta:
    """ObjectMeta from a GCS object resource (JSON API field names)."""
    user, tags = split_metadata(props.get("metadata"))
    crc = props.get("crc32c")
    return ObjectMeta(
        key=props["name"],
        size=int(props.get("size") or 0),
        etag=etag_of(props),
        version_id=str(int(props["generation"])),
        last_modified=parse_time(props.get("updated")),
        metadata=user if with_metadata else {},
        tags=dict(tags) if include_tags else None,
        tag_count=len(tags),
        storage_class=props.get("storageClass") or "STANDARD",
        md5=md5_hex(props),
        checksums={"crc32c": crc} if crc else {},
        is_latest=not props.get("timeDeleted"),
        **{attr: props.get(f) for attr, f in _HEADER_FIELDS},
    )


def parse_guard(etag: str | None, where: str) -> tuple[int, int | None] | None:
    """(generation, metageneration or None) from an etag guard "G.M" or "G". Raises
    PreconditionFailed for a guard that cannot be a GCS etag (e.g. an MD5 from elsewhere)."""
    if etag is None:
        return None
    text = etag.strip().strip('"')
    gen, _, meta = text.partition(".")
    if gen.isdigit() and (meta == "" or meta.isdigit()):
        return int(gen), (int(meta) if meta else None)
    raise PreconditionFailed(f"{where}: PreconditionFailed: {etag!r} is not a GCS etag (generation.metageneration)",
                             code="PreconditionFailed")


def guard_holds(guard: tuple[int, int | None] | None, props: dict[str, Any]) -> bool:
    if guard is None:
        return True
    gen, meta = guard
    return int(props["generation"]) == gen and (meta is None or int(props.get("metageneration") or 1) == meta)


def parse_generation(version_id: str | None, where: str) -> int | None:
    """A version id as a generation. Raises NotFound for one that cannot be a generation."""
    if version_id is None:
        return None
    if not str(version_id).isdigit():
        raise NotFound(f"{where}: NoSuchVersion: {version_id!r} is not a GCS generation", code="NoSuchVersion")
    return int(version_id)


# ---------------------------------------------------------------- errors
class GcsHttpError(Exception):
    """A failed raw HTTP request (resumable upload protocol)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message

    @classmethod
    def from_response(cls, r: requests.Response) -> "GcsHttpError":
        message = r.reason or ""
        try:
            body = r.json()
            message = (body.get("error") or {}).get("message") or message
        except (ValueError, AttributeError):
            text = (r.text or "").strip()
            message = text[:300] or message
        return cls(r.status_code, message)


_TRANSIENT = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
              requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError,
              auth_exc.TransportError, ConnectionError, TimeoutError)
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


def _status_and_message(exc: BaseException) -> tuple[int, str] | None:
    if isinstance(exc, gx.GoogleAPICallError):
        return int(exc.code or 0), _short(exc.message or str(exc))
    if isinstance(exc, GcsHttpError):
        return exc.status, exc.message
    response = getattr(exc, "response", None)  # google-resumable-media InvalidResponse
    if response is not None and hasattr(response, "status_code") and not isinstance(exc, requests.RequestException):
        try:
            message = json.loads(response.text).get("error", {}).get("message") or response.reason
        except (ValueError, AttributeError):
            message = getattr(response, "reason", "") or ""
        return int(response.status_code), _short(str(message))
    return None


_REQUEST_PREFIX = re.compile(r"^(\d{3} )?(GET|POST|PUT|PATCH|DELETE|HEAD) \S+: ")


def _short(message: str) -> str:
    """The first line of an SDK message, without the "404 GET <url>: " it starts with."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    return _REQUEST_PREFIX.sub("", line)[:300]


def classify_error(exc: BaseException, bucket: str, key: str | None = None, *, missing: str = "key") -> StoreError:
    """Map an SDK / transport exception to a StoreError (never raises).

    `missing` says what a bare 404 means for the request: "key" (NotFound) or "bucket"
    (BucketNotFound; listings and uploads can only 404 for a missing bucket). A 404 whose
    message says the bucket does not exist is BucketNotFound either way.
    """
    from google.cloud.storage.exceptions import DataCorruption

    if isinstance(exc, StoreError):
        return exc
    where = f"gs://{bucket}/{key}" if key is not None else f"gs://{bucket}"
    if isinstance(exc, DataCorruption):
        return ChecksumMismatch(f"{where}: BadDigest: {_short(str(exc))}", code="BadDigest")
    if isinstance(exc, gx.RetryError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else None
        inner = classify_error(cause, bucket, key, missing=missing) if cause else None
        if inner is not None and not isinstance(inner, FatalError):
            return inner
        return RetryableError(f"{where}: RetryError: {_short(str(exc))}", code="RetryError")
    sm = _status_and_message(exc)
    if sm is not None:
        status, message = sm
        low = message.lower()
        if status == 404:
            if missing == "bucket" or ("bucket" in low and ("not exist" in low or "not found" in low)):
                return BucketNotFound(f"gs://{bucket}: NoSuchBucket: {message or 'the bucket does not exist'}",
                                      code="NoSuchBucket")
            return NotFound(f"{where}: NoSuchKey: {message or 'Not Found'}", code="NoSuchKey")
        if status in (401, 403):
            return AccessDenied(f"{where}: AccessDenied: {message}", code="AccessDenied")
        if status == 412:
            return PreconditionFailed(f"{where}: PreconditionFailed: {message}", code="PreconditionFailed")
        if status in _RETRYABLE_STATUS or status >= 500:
            return RetryableError(f"{where}: HTTP {status}: {message}", code=str(status))
        if status == 400 and any(w in low for w in ("md5", "crc32c", "hash", "checksum")):
            return ChecksumMismatch(f"{where}: BadDigest: {message}", code="BadDigest")
        return FatalError(f"{where}: HTTP {status}: {message}", code=str(status))
    if isinstance(exc, (auth_exc.DefaultCredentialsError, auth_exc.RefreshError)):
        return AccessDenied(f"{where}: NoCredentials: {exc}", code="NoCredentials")
    if isinstance(exc, _TRANSIENT):
        name = type(exc).__name__
        return RetryableError(f"{where}: {name}: {_short(str(exc)) or 'connection failed'}", code=name)
    return FatalError(f"{where}: {type(exc).__name__}: {_short(str(exc))}", code=type(exc).__name__)


@contextmanager
def translate(bucket: str, key: str | None = None, *, missing: str = "key") -> Iterator[None]:
    """Re-raise any non-StoreError exception inside the block as a classified StoreError."""
    try:
        yield
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - everything the SDK / transport raises is classified
        raise classify_error(e, bucket, key, missing=missing) from e


def is_session_url(url: str, api_base: str, bucket: str) -> bool:
    """True when `url` is a resumable upload session of this API endpoint and bucket (we
    only ever send credentials to such URLs)."""
    from urllib.parse import quote

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    base = urlsplit(api_base)
    hosts = {base.netloc}
    if api_base == DEFAULT_API:
        hosts |= {"www.googleapis.com", "storage.googleapis.com"}
    return (parts.scheme == base.scheme and parts.netloc in hosts and "upload_id=" in parts.query
            and parts.path in (f"/upload/storage/v1/b/{bucket}/o", f"/upload/storage/v1/b/{quote(bucket, safe='')}/o"))
