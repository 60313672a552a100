"""Server-side copy for the Azure store (the ServerSideCopier capability): an AzureCopier
that AzureStore holds and delegates to. Copy Blob (start_copy_from_url), polled to
completion.

1. The source is read with Get Blob Properties guarded by opts.source_if_match (If-Match):
   NotFound / PreconditionFailed up front, and its size, MD5 and tag count, checked against
   opts.size / opts.md5 before anything is written (ChecksumMismatch).
2. Copy Blob is sent with x-ms-source-if-match = the etag just seen, so the service copies
   exactly the version that was checked, with the destination's metadata (which carries the
   replica marker, so it is never visible without it), tags (the source's when opts.tags is
   None: Copy Blob never copies tags) and access tier.
3. The copy is polled (Get Blob Properties, backoff from 50 ms to 2 s) until success,
   failure or `copy_timeout`; a timed-out copy is aborted. A failed or aborted copy leaves
   an empty destination, which is deleted (best effort).
4. What Copy Blob cannot set is applied after it: content headers (Set Blob Properties,
   keeping the copied MD5) when they differ from opts, and an empty metadata set.
5. The result's size and MD5 are verified against the expected ones (ChecksumMismatch).

The source URL is authorized by a read-only SAS valid for copy_timeout + 5 minutes: an
account-key SAS when the source's credential has the key, the source's SAS token for
credential=sas, a user delegation SAS (Entra ID) for a source in another account reached
with DefaultAzureCredential; a same-account source with Entra ID needs no SAS (the copy
request's own authorization covers it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from azure.core import MatchConditions

from cloudmirror.location import Location
from cloudmirror.stores.azure.auth import Auth, resolve_auth
from cloudmirror.stores.azure.errors import translate, where_of
from cloudmirror.stores.azure.mapping import WriteParams, headers_differ, md5_hex, meta_from_props, strip_etag
from cloudmirror.stores.base import (
    ChecksumMismatch,
    CopyOptions,
    NotFound,
    PreconditionFailed,
    PutResult,
    RetryableError,
    StoreError,
)

log = logging.getLogger(__name__)

_CLOCK_SKEW = timedelta(minutes=15)


#: `client_for(location)`: the cached BlobServiceClient and Auth for a location (AzureStore.client_for)
ClientFor = Callable[[Location], Awaitable[tuple[Any, Auth]]]


class AzureCopier:
    """Copies into `location` with the clients `client_for` gives.

    `copy_timeout`: seconds a copy may stay pending before it is aborted (RetryableError
    CopyTimeout)."""

    def __init__(self, location: Location, client_for: ClientFor, *, copy_timeout: float = 1800.0):
        self.location = location
        self.client_for = client_for
        self.copy_timeout = copy_timeout

    def can_copy_from(self, source: Location) -> bool:
        """An az:// source on the same blob service (the same cloud or emulator host), any
        account, whose credentials resolve."""
        if source.scheme != "az":
            return False
        try:
            return resolve_auth(source).service_id == resolve_auth(self.location).service_id
        except StoreError:
            return False

    async def copy(self, source: Location, source_key: str, key: str, opts: CopyOptions) -> PutResult:
        """Server-side copy of source/source_key to key here (see the module docstring).
        Raises NotFound (source gone), PreconditionFailed (source_if_match no longer holds),
        ChecksumMismatch, FatalError (unmappable metadata/tags/tier), RetryableError."""
        where = f"{where_of(self.location.account, self.location.bucket, key)} (copy of " \
                f"{where_of(source.account, source.bucket, source_key)})"
        params = WriteParams.of(opts, where)
        src_client, src_auth = await self.client_for(source)
        dst_client, _ = await self.client_for(self.location)
        src = src_client.get_blob_client(source.bucket, source_key, version_id=opts.source_version_id)
        dst = dst_client.get_blob_client(self.location.bucket, key)
        guard = {"etag": opts.source_if_match.strip('"'), "match_condition": MatchConditions.IfNotModified} \
            if opts.source_if_match else {}
        with translate(source.account, source.bucket, source_key):
            sp = await src.get_blob_properties(**guard)
        src_meta = meta_from_props(source_key, sp)
        if opts.size is not None and opts.size != src_meta.size:
            raise ChecksumMismatch(f"{where}: source is {src_meta.size} bytes, expected {opts.size}",
                                   code="SizeMismatch")
        if opts.md5 and src_meta.md5 and opts.md5.lower() != src_meta.md5:
            raise ChecksumMismatch(f"{where}: source MD5 {src_meta.md5} != expected {opts.md5}", code="BadDigest")
        tags = params.tags
        if tags is None:
            tags = {}
            if src_meta.tag_count:
                with translate(source.account, source.bucket, source_key):
                    tags = await src.get_blob_tags()
        url = await self._source_url(src, src_client, src_auth, source, source_key, opts.source_version_id)
        with translate(self.location.account, self.location.bucket, key):
            r = await dst.start_copy_from_url(url, metadata=params.metadata or None, tags=tags or None,
                                              standard_blob_tier=params.tier_arg(), source_etag=src_meta.etag,
                                              source_match_condition=MatchConditions.IfNotModified)
        p = await self._await_copy(dst, r, key, where)
        etag, version_id = strip_etag(p.etag), getattr(p, "version_id", None)
        with translate(self.location.account, self.location.bucket, key):
            if not params.metadata and p.metadata:  # Copy Blob keeps the source's unless given some
                w = await dst.set_blob_metadata({})
                etag, version_id = strip_etag(w.get("etag")), w.get("version_id") or version_id
            if headers_differ(params, p.content_settings):  # Copy Blob cannot set them; keep the MD5
                w = await dst.set_http_headers(params.content_settings(p.content_settings.content_md5))
                etag = strip_etag(w.get("etag"))
        md5 = md5_hex(p.content_settings)
        if p.size != src_meta.size:
            raise ChecksumMismatch(f"{where}: copied {p.size} bytes, source has {src_meta.size}", code="SizeMismatch")
        expected = (opts.md5 or src_meta.md5 or "").lower() or None
        if expected and md5 and md5 != expected:
            raise ChecksumMismatch(f"{where}: copied MD5 {md5} != expected {expected}", code="BadDigest")
        return PutResult(etag=etag, version_id=version_id, size=p.size, md5=md5 or expected)

    async def _source_url(self, src: Any, src_client: Any, src_auth: Auth, source: Location, key: str,
                          version_id: str | None) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = datetime.now(timezone.utc)
        sas_args = dict(account_name=source.account, container_name=source.bucket, blob_name=key,
                        permission=BlobSasPermissions(read=True), start=now - _CLOCK_SKEW,
                        expiry=now + timedelta(seconds=self.copy_timeout + 300), version_id=version_id)
        sas: str | None = None
        if src_auth.account_key:
            sas = generate_blob_sas(account_key=src_auth.account_key, **sas_args)
        elif src_auth.sas_token:
            sas = src_auth.sas_token
        elif source.account != self.location.account:  # Entra ID: a user delegation SAS
            with translate(source.account, source.bucket, key):
                udk = await src_client.get_user_delegation_key(now - _CLOCK_SKEW, sas_args["expiry"])
            sas = generate_blob_sas(user_delegation_key=udk, **sas_args)
        query = [f"versionid={quote(version_id, safe='')}"] if version_id else []
        if sas:
            query.append(sas)
        return src.url + ("?" + "&".join(query) if query else "")

    async def _await_copy(self, dst: Any, started: dict[str, Any], key: str, where: str) -> Any:
        """Poll until the copy is done; returns the destination's properties."""
        deadline = time.monotonic() + self.copy_timeout
        delay = 0.05
        copy_id = started.get("copy_id")
        while True:
            with translate(self.location.account, self.location.bucket, key):
                p = await dst.get_blob_properties()
            status = p.copy.status if p.copy else None
            if p.copy and p.copy.id and copy_id and p.copy.id != copy_id:
                raise RetryableError(f"{where}: CopySuperseded: another copy to the destination started",
                                     code="CopySuperseded")
            if status in (None, "success"):
                return p
            if status != "pending":
                await self._discard(dst, p)
                desc = p.copy.status_description or ""
                if "412" in desc.split(" ", 1)[0]:
                    raise PreconditionFailed(f"{where}: the source changed during the copy: {desc}",
                                             code="PreconditionFailed")
                if "404" in desc.split(" ", 1)[0]:
                    raise NotFound(f"{where}: the source disappeared during the copy: {desc}", code="BlobNotFound")
                code = f"Copy{status.capitalize()}"
                raise RetryableError(f"{where}: {code}: {desc or status}", code=code)
            if time.monotonic() >= deadline:
                try:
                    with translate(self.location.account, self.location.bucket, key):
                        await dst.abort_copy(p.copy.id)
                    with translate(self.location.account, self.location.bucket, key):
                        p = await dst.get_blob_properties()  # the abort changed the etag
                except StoreError as e:
                    log.warning("%s: could not abort the copy: %s", where, e)
                await self._discard(dst, p)
                raise RetryableError(f"{where}: CopyTimeout: still pending after {self.copy_timeout:.0f} s "
                                     "(aborted)", code="CopyTimeout")
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)

    async def _discard(self, dst: Any, p: Any) -> None:
        """Delete a destination left empty by a failed copy, unless something rewrote it."""
        try:
            await dst.delete_blob(etag=p.etag, match_condition=MatchConditions.IfNotModified)
        except Exception as e:  # noqa: BLE001 - best effort; the caller raises the copy's error
            log.warning("could not delete the failed copy %s: %s", dst.url, e)
