"""GCS-specific behaviour of the GCS store, on fake-gcs-server: tags kept as metadata
entries, rewrite copies, the verify-before-finalise invariant of resumable uploads, bounded
memory of streamed transfers, generation pinning and errors. (The rules that need no emulator
are in tests/unit/test_gcs_rules.py.)"""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from cloudmirror import metrics
from cloudmirror.local.provision import create_gcs_bucket, delete_gcs_bucket
from cloudmirror.location import parse_location
from cloudmirror.stores.base import (
    BucketNotFound,
    ChecksumMismatch,
    CopyOptions,
    DeleteOptions,
    FatalError,
    GetOptions,
    HeadOptions,
    ListOptions,
    NotFound,
    PreconditionFailed,
    PutOptions,
)
from cloudmirror.stores.gcs import GCSStore
from cloudmirror.stores.gcs.common import TAG_PREFIX
from tests.conftest import gcs_location_url, unique_name

MiB = 1024 * 1024


@pytest.fixture
async def new_store(gcs_endpoint):
    opened: list[GCSStore] = []
    made = []

    def make(versioned: bool = False, bucket: str | None = None) -> GCSStore:
        loc = parse_location(gcs_location_url(gcs_endpoint, bucket or unique_name("cm")))
        if bucket is None:
            create_gcs_bucket(loc, versioned=versioned)
            made.append(loc)
        s = GCSStore(loc)
        opened.append(s)
        return s

    yield make
    for s in opened:
        await s.close()
    for loc in made:
        delete_gcs_bucket(loc)


def raw_blob(store: GCSStore, key: str):
    """The object as the SDK sees it (no store mapping), or None."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="p", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": store.location.endpoint})
    return client.bucket(store.bucket).get_blob(key)


async def read_all(store: GCSStore, key: str, **kw) -> bytes:
    got = await store.get(key, GetOptions(**kw))
    return b"".join([c async for c in got.body])


async def stream(data: bytes, chunk: int = 300_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]


class Hook(list):
    async def __call__(self, upload_id: str) -> None:
        self.append(upload_id)


# ---------------------------------------------------------------- tags <-> metadata
async def test_tags_are_metadata_entries_and_never_user_metadata(new_store):
    store = new_store()
    await store.put("t", b"x", PutOptions(metadata={"Owner": "ann"}, tags={"team": "blue", "Env": "prod x"}))
    raw = raw_blob(store, "t")
    assert raw.metadata == {"owner": "ann", f"{TAG_PREFIX}team": "blue", f"{TAG_PREFIX}Env": "prod x"}

    meta = await store.head("t")
    assert meta.metadata == {"owner": "ann"} and meta.tags is None and meta.tag_count == 2
    tagged = await store.head("t", HeadOptions(include_tags=True))
    assert tagged.tags == {"team": "blue", "Env": "prod x"} and tagged.metadata == {"owner": "ann"}
    assert await store.get_tags("t") == {"team": "blue", "Env": "prod x"}
    got = await store.get("t")
    assert got.meta.metadata == {"owner": "ann"} and got.meta.tag_count == 2
    [listed] = [m async for m in store.list()]
    assert not any(k.startswith(TAG_PREFIX) for k in listed.metadata) and listed.tag_count == 2

    await store.put("plain", b"y")
    assert (await store.head("plain", HeadOptions(include_tags=True))).tags == {}
    assert await store.get_tags("plain") == {}
    with pytest.raises(FatalError, match="reserved for tags"):
        await store.put("bad", b"z", PutOptions(metadata={"Cloudmirror-Tag.team": "red"}))
    with pytest.raises(NotFound):
        await store.get_tags("missing")


async def test_copy_replaces_metadata_and_tags_or_copies_the_source_tags(new_store):
    src, dst = new_store(), new_store()
    await src.put("s", b"payload", PutOptions(metadata={"m": "1"}, tags={"a": "b"}, content_type="text/plain"))
    meta = await src.head("s")
    await dst.copy(src.location, "s", "copied-tags", CopyOptions(metadata={"r": "2"}, source_if_match=meta.etag))
    c1 = await dst.head("copied-tags", HeadOptions(include_tags=True))
    assert (c1.metadata, c1.tags, c1.content_type) == ({"r": "2"}, {"a": "b"}, "text/plain")
    # empty tags clear the source's
    res = await dst.copy(src.location, "s", "untagged", CopyOptions(tags={}, metadata={"r": "3"}))
    c2 = await dst.head("untagged", HeadOptions(include_tags=True))
    assert (c2.metadata, c2.tags, c2.tag_count) == ({"r": "3"}, {}, 0)
    assert res.etag == c2.etag and res.version_id == c2.version_id and res.md5 == meta.md5
    assert await read_all(dst, "untagged") == b"payload"


# ---------------------------------------------------------------- rewrite copy
async def test_rewrite_copy_of_a_large_object_follows_the_rewrite_token(new_store, monkeypatch):
    """fake-gcs-server finishes any rewrite in one call (it ignores maxBytesRewrittenPerCall),
    so the first call is made to report partial progress: the copy must keep calling with
    the token until done, and the bytes must arrive intact."""
    from google.cloud.storage import Blob

    src, dst = new_store(), new_store()
    data = random.Random(11).randbytes(24 * MiB)
    put = await src.put("big", data, PutOptions(tags={"k": "v"}))
    tokens: list[str | None] = []
    real = Blob.rewrite

    def rewrite(self, source, token=None, **kw):
        tokens.append(token)
        if token is None:
            return "tok-1", 8 * MiB, len(data)
        return real(self, source, token=None, **kw)

    monkeypatch.setattr(Blob, "rewrite", rewrite)
    res = await dst.copy(src.location, "big", "big-copy", CopyOptions(size=len(data), md5=put.md5,
                                                                       source_if_match=put.etag))
    assert tokens == [None, "tok-1"]
    assert (res.size, res.md5) == (len(data), hashlib.md5(data).hexdigest())
    assert hashlib.md5(await read_all(dst, "big-copy", chunk_size=4 * MiB)).hexdigest() == res.md5
    assert await dst.get_tags("big-copy") == {"k": "v"}


async def test_copy_guard_and_expectations(new_store):
    src, dst = new_store(), new_store()
    first = await src.put("s", b"one")
    await src.put("s", b"two")
    for opts in (CopyOptions(source_if_match=first.etag),  # the live object moved on
                 CopyOptions(source_version_id=first.version_id, source_if_match=first.etag)):  # pinned: gone
        with pytest.raises(PreconditionFailed):
            await dst.copy(src.location, "s", "d", opts)
    with pytest.raises(ChecksumMismatch):
        await dst.copy(src.location, "s", "d", CopyOptions(size=99))
    with pytest.raises(NotFound):
        await dst.head("d")
    with pytest.raises(NotFound):
        await dst.copy(src.location, "nope", "d", CopyOptions())
    assert dst.can_copy_from(src.location)
    assert not dst.can_copy_from(parse_location("gs://other-bucket"))  # another endpoint (real GCS)
    assert not dst.can_copy_from(parse_location("s3://bkt?region=us-east-1"))


# ---------------------------------------------------------------- verify before finalise
async def test_streamed_put_with_wrong_md5_leaves_the_previous_object_intact(new_store):
    store = new_store()
    old = await store.put("k", b"the old bytes")
    data = random.Random(5).randbytes(3 * MiB + 123)
    hook = Hook()
    opts = PutOptions(part_size=MiB, multipart_threshold=MiB, md5=hashlib.md5(b"other").hexdigest(),
                      on_upload_started=hook)
    with pytest.raises(ChecksumMismatch):
        await store.put("k", stream(data), opts)
    assert len(hook) == 1 and "upload_id=" in hook[0]  # it was a resumable session
    meta = await store.head("k")
    assert (meta.version_id, meta.etag, meta.size) == (old.version_id, old.etag, 13)
    assert await read_all(store, "k") == b"the old bytes"
    # a stream longer than the announced size fails early, also without committing
    with pytest.raises(ChecksumMismatch):
        await store.put("k", stream(data), PutOptions(part_size=MiB, multipart_threshold=MiB, size=MiB + 1))
    assert (await store.head("k")).version_id == old.version_id
    await store.abort_upload("k", hook[0])  # idempotent
    await store.abort_upload("k", "no-such-upload")


async def test_streamed_put_commits_with_headers_and_verified_md5(new_store):
    store = new_store()
    data = random.Random(9).randbytes(2 * MiB + 77)
    md5 = hashlib.md5(data).hexdigest()
    hook = Hook()
    res = await store.put("s", stream(data), PutOptions(part_size=300_000, multipart_threshold=MiB, md5=md5,
                                                        content_type="application/x-test", metadata={"m": "1"},
                                                        tags={"t": "1"}, on_upload_started=hook))
    assert len(hook) == 1
    meta = await store.head("s", HeadOptions(include_tags=True))
    assert (res.md5, res.size, res.etag, res.version_id) == (md5, len(data), meta.etag, meta.version_id)
    assert (meta.md5, meta.content_type, meta.metadata, meta.tags) == (md5, "application/x-test", {"m": "1"},
                                                                       {"t": "1"})
    assert await read_all(store, "s") == data


# ---------------------------------------------------------------- bounded memory
async def test_streaming_64_mib_put_and_get_holds_a_few_chunks(new_store):
    store = new_store()
    part, total = 8 * MiB, 64 * MiB
    rng = random.Random(64)
    sent = hashlib.md5()
    hook = Hook()

    async def source() -> AsyncIterator[bytes]:
        for _ in range(total // MiB):
            chunk = rng.randbytes(MiB)
            sent.update(chunk)
            yield chunk

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        res = await store.put("big", source(), PutOptions(part_size=part, multipart_threshold=part, max_buffers=2,
                                                          on_upload_started=hook))
        put_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        got = await store.get("big", GetOptions(chunk_size=MiB))
        received, sizes = hashlib.md5(), []
        async for chunk in got.body:
            received.update(chunk)
            sizes.append(len(chunk))
            del chunk
        get_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert len(hook) == 1 and (res.size, res.md5) == (total, sent.hexdigest())
    assert received.hexdigest() == sent.hexdigest() and sizes == [MiB] * 64
    # put: the chunk being sent + the next one being filled + one incoming 1 MiB chunk
    assert put_peak < 3 * part, f"put peak {put_peak / MiB:.1f} MiB"
    # get: the consumer's chunk + the one being filled (+ joining it)
    assert get_peak < 4 * MiB, f"get peak {get_peak / MiB:.1f} MiB"


# ---------------------------------------------------------------- generations
async def test_get_is_pinned_to_the_generation_it_saw(new_store):
    store = new_store()
    await store.put("k", b"A" * 3 * MiB)
    got = await store.get("k", GetOptions(chunk_size=MiB))
    await store.put("k", b"B" * 3 * MiB)  # overwritten before the body is read
    with pytest.raises(PreconditionFailed):
        b"".join([c async for c in got.body])

    versioned = new_store(versioned=True)
    await versioned.put("k", b"A" * MiB)
    got = await versioned.get("k", GetOptions(chunk_size=MiB // 2))
    await versioned.put("k", b"B" * MiB)
    assert b"".join([c async for c in got.body]) == b"A" * MiB  # the old generation, never mixed bytes


def _threads_downloading(store) -> int:
    """Download threads of the store's pool that are busy (not parked idle). Counted from the
    pool's own idle semaphore: walking other threads' live frames races with them on 3.11."""
    pool = store._download_pool
    return 0 if pool is None else len(pool._threads) - pool._idle_semaphore._value


async def test_an_abandoned_body_stops_its_download_thread(new_store):
    import asyncio
    import time

    store = new_store()
    await store.put("k", random.Random(3).randbytes(16 * MiB))
    unread = await store.get("k")  # never iterated: no download starts
    got = await store.get("k", GetOptions(chunk_size=MiB))
    first = await anext(got.body)
    assert len(first) == MiB and _threads_downloading(store) == 1  # blocked on the hand-off
    await got.body.aclose()
    deadline = time.monotonic() + 10
    while _threads_downloading(store) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # poll (the thread wakes at once when the slot is released)
    assert _threads_downloading(store) == 0 and not store._downloads
    assert await read_all(store, "k", chunk_size=4 * MiB) == random.Random(3).randbytes(16 * MiB)
    del unread


async def test_versions_listing_and_deletes(new_store):
    store = new_store(versioned=True)
    puts = [await store.put("k", f"v{i}".encode()) for i in range(3)]
    z = await store.put("z", b"z")
    assert all(p.version_id == p.etag.split(".")[0] for p in puts)
    await store.delete("k")  # the live generation becomes noncurrent; no delete marker
    with pytest.raises(NotFound):
        await store.head("k")
    for page_size in (1, 2, 1000):  # 1: a key's versions span pages
        versions = [m async for m in store.list(ListOptions(versions=True, page_size=page_size))]
        assert [(m.key, m.version_id, m.is_latest, m.is_delete_marker) for m in versions] == [
            ("k", puts[2].version_id, False, False), ("k", puts[1].version_id, False, False),
            ("k", puts[0].version_id, False, False), ("z", z.version_id, True, False)]
    assert [m.key async for m in store.list(ListOptions(versions=True, start_after="k"))] == ["z"]
    assert await read_all(store, "k", version_id=puts[1].version_id) == b"v1"
    await store.delete("k", DeleteOptions(version_id="not-a-generation"))  # cannot exist: nothing to do
    await store.delete("never-was", DeleteOptions(version_id=z.version_id))


async def test_delete_of_a_version_names_the_generation(new_store, monkeypatch):
    """fake-gcs-server ignores `generation` on DELETE (it always deletes the live object), so
    what is checked here is the request: it must target that generation."""
    from google.cloud.storage import Blob

    store = new_store(versioned=True)
    old = await store.put("k", b"1")
    await store.put("k", b"2")
    deleted: list[tuple[str, int | None]] = []
    real = Blob.delete

    def delete(self, *a, **kw):
        deleted.append((self.name, self.generation))
        return real(self, *a, **kw)

    monkeypatch.setattr(Blob, "delete", delete)
    await store.delete("k", DeleteOptions(version_id=old.version_id))
    await store.delete("k")
    assert deleted == [("k", int(old.version_id)), ("k", None)]


# ---------------------------------------------------------------- errors and mappings
async def test_error_classification_against_the_emulator(new_store):
    missing = new_store(bucket=unique_name("nobucket"))
    with pytest.raises(BucketNotFound, match="NoSuchBucket") as e:
        [m async for m in missing.list()]
    assert missing.bucket in str(e.value)
    with pytest.raises(BucketNotFound, match=missing.bucket):
        await missing.put("k", b"x")
    with pytest.raises(BucketNotFound):
        await missing.put("k", stream(b"x" * MiB), PutOptions(size=MiB, multipart_threshold=1024))
    store = new_store()
    with pytest.raises(NotFound, match="NoSuchKey"):
        await store.head("nope")
    with pytest.raises(NotFound):
        await store.get("nope")
    first = await store.put("k", b"1")
    await store.put("k", b"2")
    for guard in (first.etag, first.version_id, "d41d8cd98f00b204e9800998ecf8427e"):  # etag, generation, an MD5
        with pytest.raises(PreconditionFailed):
            await store.get("k", GetOptions(if_match=guard))
    with pytest.raises(PreconditionFailed):  # pinned to a generation that was overwritten
        await store.get("k", GetOptions(version_id=first.version_id, if_match=first.etag))
    with pytest.raises(NotFound):
        await store.head("k", HeadOptions(version_id=first.version_id))
    with pytest.raises(FatalError, match="FROZEN"):
        await store.put("k", b"3", PutOptions(storage_class="FROZEN"))


async def test_abort_upload_never_sends_credentials_elsewhere(new_store):
    store = new_store()
    counter = metrics.STORAGE_REQUESTS.labels("gcs", "abort_upload")
    before = counter._value.get()
    for foreign in ("https://evil.example/upload/storage/v1/b/x/o?upload_id=1", "no-such-upload",
                    f"{store.location.endpoint}/upload/storage/v1/b/another-bucket/o?upload_id=1"):
        await store.abort_upload("k", foreign)
    assert counter._value.get() == before
    await store.abort_upload("k", f"{store.location.endpoint}/upload/storage/v1/b/{store.bucket}/o?"
                                  "uploadType=resumable&name=k&upload_id=unknown")
    assert counter._value.get() == before + 1


async def test_requests_are_counted_per_operation(new_store):
    store = new_store()
    put, head = metrics.STORAGE_REQUESTS.labels("gcs", "put"), metrics.STORAGE_REQUESTS.labels("gcs", "head")
    p0, h0 = put._value.get(), head._value.get()
    await store.put("k", b"x")
    await store.head("k")
    assert (put._value.get() - p0, head._value.get() - h0) == (1, 1)
