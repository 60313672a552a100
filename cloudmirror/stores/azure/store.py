"""Azure Blob Storage (and Azurite) behind the store protocol, using azure-storage-blob's
aio API. az://ACCOUNT/CONTAINER[/prefix][?params]; keys are full blob names.

AUTHENTICATION (resolved on first use; nothing secret is ever in the URL):

* ``connection_string_env=VAR``: the connection string in environment variable VAR
  (AccountKey= or SharedAccessSignature=, BlobEndpoint= or AccountName=/EndpointSuffix=,
  or UseDevelopmentStorage=true). VAR unset -> AccessDenied naming VAR. Its AccountName
  must be the location's account. Excludes ``endpoint`` and ``credential``.
* otherwise the endpoint is ``endpoint=`` (default https://ACCOUNT.blob.core.windows.net;
  an emulator host without a path, e.g. http://127.0.0.1:10000, gets /ACCOUNT appended)
  and ``credential=`` chooses the credential:
  ``key`` -- the account key from AZURE_STORAGE_KEY;
  ``sas`` -- a SAS token from AZURE_STORAGE_SAS_TOKEN;
  ``default`` (also when absent) -- azure.identity.aio.DefaultAzureCredential.
  A missing variable -> AccessDenied (code NoCredentials) naming it; an unknown credential
  -> FatalError.

IDENTITY: ``etag`` is the blob's ETag without quotes (0x8D...; GetOptions.if_match and
CopyOptions.source_if_match send it back as If-Match / x-ms-source-if-match);
``version_id`` is the blob version id on accounts with versioning (None elsewhere, e.g.
Azurite); ``md5`` is the hex of the Content-MD5 property (set on every write here; None
when another writer left it empty); ``storage_class`` is the access tier (Hot, Cool, Cold,
Archive); ``tag_count`` the blob's index tag count.

METADATA: Azure metadata names must be C# identifiers and are case-insensitive. A key is
lower-cased, then every character other than an ASCII letter or digit (including '_'
itself), and a leading digit, becomes ``_xHH_`` for each of its UTF-8 bytes:
``cloudmirror-replica`` -> ``cloudmirror_x2D_replica``, ``x_y`` -> ``x_x5F_y``, ``2fa`` ->
``_x32_fa``. Reading decodes the escapes and lower-cases, so names written by other tools
read back as they are (lower-cased). Values travel in HTTP headers: a value that is not
printable ASCII, or has leading/trailing spaces, raises FatalError(code
"UnmappableMetadata") naming the key -- nothing is dropped or altered silently.

TAGS are blob index tags, which allow at most 10 tags, keys of 1-128 and values of 0-256
characters from [A-Za-z0-9 +-./:=_]; anything else raises FatalError(code
"UnmappableTags") naming the tag. Tags are written with the blob (x-ms-tags).

STORAGE CLASS -> access tier: STANDARD -> Hot, STANDARD_IA / ONEZONE_IA -> Cool,
GLACIER_IR -> Cold, GLACIER / DEEP_ARCHIVE -> Archive (GCS NEARLINE / COLDLINE / ARCHIVE
likewise; Azure's own tier names are accepted in any case); anything else raises
FatalError(code "UnmappableStorageClass"). sse="aws:kms" / kms_key_id raise FatalError
(Azure always encrypts at rest; "AES256" needs nothing).

TRANSFERS (see transfer): ranged reads pinned to one etag; Put Blob up to the
threshold, else staged blocks of part_size, at most max_buffers in memory, verified before
Put Block List commits them. The upload id given to on_upload_started is the block-id
prefix; abort_upload is a no-op because uncommitted blocks are invisible and the service
garbage-collects them (after 7 days, or at the next commit to the blob).

COPY: see copy (Copy Blob with a read-only SAS for the source, polled): an AzureCopier the
store holds and delegates to.

One BlobServiceClient per (account, endpoint, credential), created lazily; the store's own
and the copy sources' are closed (with their credentials) by close(). Every HTTP request
(retries included) counts in cloudmirror_storage_requests_total{provider="azure"}; a
listing page is operation "list". Errors are classified by errors.classify_error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from cloudmirror.location import Location
from cloudmirror.stores.azure.auth import (
    SINGLE_PUT_MAX,
    Auth,
    auth_cache_key,
    client_kwargs,
    make_credential,
    resolve_auth,
)
from cloudmirror.stores.azure.copy import AzureCopier
from cloudmirror.stores.azure.errors import translate
from cloudmirror.stores.azure.mapping import WriteParams, check_tags, meta_from_props
from cloudmirror.stores.azure.transfer import Target, put_single, put_staged, ranged_get
from cloudmirror.stores.base import (
    CopyOptions,
    DeleteOptions,
    GetOptions,
    GetResult,
    HeadOptions,
    ListOptions,
    NotFound,
    ObjectMeta,
    PutOptions,
    PutResult,
)
from cloudmirror.stores.streams import read_up_to

__all__ = ["AzureStore"]


class AzureStore:
    """Store + ServerSideCopier (delegated to `copier`, an AzureCopier) for az://
    locations. Safe for concurrent calls."""

    def __init__(self, location: Location):
        self.location = location
        self.account = location.account
        self.container = location.bucket
        self._clients: dict[tuple[Any, ...], tuple[Any, Auth, Any]] = {}  # key -> (client, auth, credential)
        self._lock: asyncio.Lock | None = None
        self.copier = AzureCopier(location, self.client_for)

    # ------------------------------------------------------------ clients
    async def client_for(self, location: Location) -> tuple[Any, Auth]:
        """The cached BlobServiceClient (and its Auth) for a location's account and
        credential. Raises AccessDenied / FatalError for a bad configuration."""
        key = auth_cache_key(location)
        if (hit := self._clients.get(key)) is not None:
            return hit[0], hit[1]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if (hit := self._clients.get(key)) is None:
                from azure.storage.blob.aio import BlobServiceClient

                auth = resolve_auth(location)
                credential = make_credential(auth, aio=True)
                with translate(location.account, location.bucket):
                    client = BlobServiceClient(auth.account_url, credential=credential, **client_kwargs())
                hit = self._clients[key] = (client, auth, credential)
        return hit[0], hit[1]

    async def _blob(self, key: str, version_id: str | None = None) -> Target:
        client, _ = await self.client_for(self.location)
        return Target(client.get_blob_client(self.container, key, version_id=version_id), self.account,
                      self.container, key)

    async def warm(self) -> None:
        """Resolve the credentials and build the client now. Raises their StoreError."""
        await self.client_for(self.location)

    async def close(self) -> None:
        """Close every client and credential. Idempotent."""
        clients, self._clients = self._clients, {}
        for client, _, credential in clients.values():
            await client.close()
            if hasattr(credential, "close"):
                await credential.close()

    # ------------------------------------------------------------ copy (delegated)
    @property
    def copy_timeout(self) -> float:
        """Seconds a copy may stay pending before it is aborted (see AzureCopier)."""
        return self.copier.copy_timeout

    @copy_timeout.setter
    def copy_timeout(self, value: float) -> None:
        self.copier.copy_timeout = value

    def can_copy_from(self, source: Location) -> bool:
        """An az:// source on the same blob service, any account, whose credentials resolve."""
        return self.copier.can_copy_from(source)

    async def copy(self, source: Location, source_key: str, key: str, opts: CopyOptions) -> PutResult:
        """Server-side copy of source/source_key to key (see AzureCopier.copy). Raises
        NotFound, PreconditionFailed, ChecksumMismatch, FatalError, RetryableError."""
        return await self.copier.copy(source, source_key, key, opts)

    # ------------------------------------------------------------ reads
    async def head(self, key: str, opts: HeadOptions | None = None) -> ObjectMeta:
        """Get Blob Properties (+ Get Blob Tags when include_tags and the blob has tags).
        Raises NotFound, BucketNotFound, AccessDenied, RetryableError, FatalError."""
        opts = opts or HeadOptions()
        t = await self._blob(key, opts.version_id)
        with t.translate():
            p = await t.blob.get_blob_properties()
        meta = meta_from_props(key, p)
        if opts.include_tags:
            meta.tags = await self._tags(t) if meta.tag_count else {}
            meta.tag_count = len(meta.tags)
        return meta

    async def get_tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """Get Blob Tags ({} when none). Raises NotFound."""
        return await self._tags(await self._blob(key, version_id))

    async def _tags(self, t: Target) -> dict[str, str]:
        with t.translate():
            return dict(await t.blob.get_blob_tags())

    async def get(self, key: str, opts: GetOptions | None = None) -> GetResult:
        """Ranged reads of max(chunk_size, 1 MiB), yielded in chunks of opts.chunk_size, all
        pinned to the etag of the first (or opts.if_match). Raises NotFound,
        PreconditionFailed (here or while streaming, when the blob changes)."""
        opts = opts or GetOptions()
        return await ranged_get(await self._blob(key, opts.version_id), opts.chunk_size, opts.if_match)

    async def list(self, opts: ListOptions | None = None) -> AsyncIterator[ObjectMeta]:
        """List Blobs page by page (opts.page_size each, user metadata included), in key
        order; keys <= start_after are skipped (Azure has no start-after: its markers are
        opaque). versions=True includes every version, newest first per key; Azure has
        no delete markers (a deleted key's versions all have is_latest False)."""
        opts = opts or ListOptions()
        client, _ = await self.client_for(self.location)
        cc = client.get_container_client(self.container)
        include = ["metadata", "versions"] if opts.versions else ["metadata"]
        pages = cc.list_blobs(name_starts_with=opts.prefix or None, include=include,
                              results_per_page=max(1, opts.page_size)).by_page()
        group: list[ObjectMeta] = []  # versions of one key, kept until the key changes
        while True:
            with translate(self.account, self.container, opts.prefix or None):
                try:
                    page = await anext(pages)
                except StopAsyncIteration:
                    break
                items = [b async for b in page]
            for b in items:
                if opts.start_after is not None and b.name <= opts.start_after:
                    continue
                m = meta_from_props(b.name, b)
                if not opts.versions:
                    yield m
                    continue
                if group and group[0].key != m.key:
                    for v in _newest_first(group):
                        yield v
                    group = []
                group.append(m)
        for v in _newest_first(group):
            yield v

    # ------------------------------------------------------------ writes
    async def put(self, key: str, body: bytes | AsyncIterator[bytes], opts: PutOptions | None = None) -> PutResult:
        """Put Blob up to min(opts.multipart_threshold, 256 MiB), else staged blocks (see
        transfer). A stream of unknown size is peeked up to min(threshold, part_size)
        bytes to choose. Raises ChecksumMismatch (nothing committed) when opts.md5 /
        opts.size disagree with the bytes; FatalError for unmappable metadata, tags or
        storage class (checked before anything is read or sent)."""
        opts = opts or PutOptions()
        t = await self._blob(key)
        params = WriteParams.of(opts, t.where)
        single_max = min(opts.multipart_threshold, SINGLE_PUT_MAX)
        if isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
            if len(data) <= single_max:
                return await put_single(t, data, opts, params)
            return await put_staged(t, [data], None, opts, params)
        it = aiter(body)
        if opts.size is not None and opts.size > single_max:
            return await put_staged(t, [], it, opts, params)
        limit = single_max if opts.size is not None else min(single_max, max(opts.part_size, 1))
        chunks, got, ended = await read_up_to(it, limit + 1)
        if ended and got <= limit:
            return await put_single(t, b"".join(chunks), opts, params)
        return await put_staged(t, chunks, None if ended else it, opts, params)

    async def delete(self, key: str, opts: DeleteOptions | None = None) -> None:
        """Delete Blob with its snapshots (or one version). Idempotent. Raises
        BucketNotFound, AccessDenied, ..."""
        opts = opts or DeleteOptions()
        t = await self._blob(key, opts.version_id)
        try:
            with t.translate():
                await t.blob.delete_blob(delete_snapshots=None if opts.version_id else "include")
        except NotFound:
            pass

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """A no-op (idempotent): uncommitted blocks are invisible and garbage-collected by
        the service after 7 days; no API deletes them."""

    async def set_tags(self, key: str, tags: dict[str, str], version_id: str | None = None) -> None:
        """Replace the blob's index tags. Raises FatalError (UnmappableTags), NotFound."""
        t = await self._blob(key, version_id)
        tags = check_tags(tags, t.where)
        with t.translate():
            await t.blob.set_blob_tags(tags)


def _newest_first(group: list[ObjectMeta]) -> list[ObjectMeta]:
    """Azure lists the versions of a key oldest first; version ids are timestamps."""
    return sorted(group, key=lambda m: (m.is_latest, m.version_id or ""), reverse=True)
