"""Azure-specific behaviour of AzureStore on Azurite: metadata keys round trip, unmappable
metadata/tags/storage classes, staged uploads (verify before commit, bounded memory and
concurrency), pinned reads, cross-account copies via SAS, credentials from the environment,
request counting and errors. (What every store shares is in tests/conformance; the rules that
need no emulator are in tests/unit/test_azure_rules.py.)"""

from __future__ import annotations

import gzip
import hashlib
import random
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest

from cloudmirror import metrics
from cloudmirror.local.provision import create_azure_container, delete_azure_container
from cloudmirror.location import parse_location
from cloudmirror.stores.azure import AzureStore
from cloudmirror.stores.base import (
    REPLICA_MARKER,
    AccessDenied,
    BucketNotFound,
    ChecksumMismatch,
    CopyOptions,
    FatalError,
    GetOptions,
    HeadOptions,
    ListOptions,
    NotFound,
    PreconditionFailed,
    PutOptions,
    ServerSideCopier,
)
from tests.conftest import azure_location_url, unique_name
from tests.unit.test_azure_rules import KEYS

MiB = 1024 * 1024
DEV = "devstoreaccount1"
SECOND = "cmdrstore"


@pytest.fixture
async def new_store(azurite):
    """new_store(account=DEV) -> an AzureStore on a fresh container; closed and deleted after."""
    opened: list[AzureStore] = []

    def make(account: str = DEV) -> AzureStore:
        loc = parse_location(azure_location_url(account, unique_name("cm")))
        create_azure_container(loc)
        store = AzureStore(loc)
        opened.append(store)
        return store

    yield make
    for s in opened:
        await s.close()
        delete_azure_container(s.location)


async def read_all(store, key: str, **kw) -> bytes:
    got = await store.get(key, GetOptions(**kw))
    return b"".join([c async for c in got.body])


async def raw_metadata(store: AzureStore, key: str) -> dict[str, str]:
    """The metadata names exactly as Azure stores them."""
    client, _ = await store.client_for(store.location)
    return (await client.get_blob_client(store.container, key).get_blob_properties()).metadata


# ---------------------------------------------------------------- metadata and tags
async def test_metadata_keys_round_trip_through_azure(new_store):
    store = new_store()
    md = {"cloudmirror-replica": "1", "a.b": "dot", "x_y": "underscore", "日本": "kanji", "2fa": "digit",
          "Owner": "Ann", "empty": ""}
    await store.put("k", b"x", PutOptions(metadata=md))
    assert (await store.head("k")).metadata == {k.lower(): v for k, v in md.items()}
    assert set(await raw_metadata(store, "k")) == {*KEYS.values(), "empty"}
    listed = [m async for m in store.list()]
    assert listed[0].metadata == {k.lower(): v for k, v in md.items()} and listed[0].is_replica
    got = await store.get("k")
    assert got.meta.metadata["cloudmirror-replica"] == "1"


@pytest.mark.parametrize("value", ["héllo", "tab\there", " padded", "padded ", "line\nbreak"])
async def test_unmappable_metadata_value_raises_and_writes_nothing(new_store, value):
    store = new_store()
    for body in (b"small", _stream(b"x" * (3 * MiB))):
        with pytest.raises(FatalError) as e:
            await store.put("k", body, PutOptions(metadata={"ok": "fine", "bad-key": value}, part_size=MiB,
                                                  multipart_threshold=MiB))
        assert e.value.code == "UnmappableMetadata" and "'bad-key'" in str(e.value)
    with pytest.raises(NotFound):
        await store.head("k")


async def test_colliding_metadata_keys_are_unmappable(new_store):
    with pytest.raises(FatalError) as e:
        await new_store().put("k", b"x", PutOptions(metadata={"Owner": "a", "owner": "b"}))
    assert e.value.code == "UnmappableMetadata" and "owner" in str(e.value)


@pytest.mark.parametrize(("tags", "named"), [
    ({"team": "a&b"}, "'team'"),
    ({"héllo": "x"}, "'héllo'"),
    ({"k" * 129: "v"}, "'" + "k" * 129 + "'"),
    ({"long": "v" * 257}, "'long'"),
    ({"": "v"}, "''"),
    ({f"t{i}": "v" for i in range(11)}, "t10"),
])
async def test_unmappable_tags_raise_and_write_nothing(new_store, tags, named):
    store = new_store()
    with pytest.raises(FatalError) as e:
        await store.put("k", b"x", PutOptions(tags=tags))
    assert e.value.code == "UnmappableTags" and named in str(e.value)
    with pytest.raises(NotFound):
        await store.head("k")


async def test_tags_at_the_limits_round_trip(new_store):
    store = new_store()
    tags = {f"k{i}": "v" for i in range(8)} | {"K" * 128: "a+b-c.d/e:f=g_h " + "z" * 240, "empty": ""}
    await store.put("k", b"x", PutOptions(tags=tags))
    meta = await store.head("k", HeadOptions(include_tags=True))
    assert meta.tags == tags and meta.tag_count == 10
    assert await store.get_tags("k") == tags
    await store.put("k", b"y")  # an overwrite without tags clears them
    assert await store.get_tags("k") == {} and (await store.head("k")).tag_count == 0


@pytest.mark.parametrize(("storage_class", "tier"), [
    ("STANDARD", "Hot"), ("STANDARD_IA", "Cool"), ("ONEZONE_IA", "Cool"), ("GLACIER_IR", "Cold"),
    ("GLACIER", "Archive"), ("DEEP_ARCHIVE", "Archive"), ("cool", "Cool"), (None, "Hot")])
async def test_storage_class_maps_to_an_access_tier(new_store, storage_class, tier):
    store = new_store()
    await store.put("k", b"x", PutOptions(storage_class=storage_class))
    assert (await store.head("k")).storage_class == tier


@pytest.mark.parametrize(("opts", "code"), [
    (PutOptions(storage_class="INTELLIGENT_TIERING"), "UnmappableStorageClass"),
    (PutOptions(sse="aws:kms"), "UnmappableEncryption"),
])
async def test_unmappable_storage_class_and_encryption(new_store, opts, code):
    store = new_store()
    with pytest.raises(FatalError) as e:
        await store.put("k", b"x", opts)
    assert e.value.code == code
    if opts.storage_class:
        assert "INTELLIGENT_TIERING" in str(e.value)


# ---------------------------------------------------------------- staged uploads
async def _stream(data: bytes, chunk: int = 300_000):
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]


async def test_streamed_put_with_wrong_md5_leaves_the_old_blob_intact(new_store):
    store = new_store()
    old = await store.put("k", b"the old bytes", PutOptions(metadata={"v": "1"}))
    data = random.Random(1).randbytes(5 * MiB + 17)
    started: list[str] = []

    async def hook(upload_id: str) -> None:
        started.append(upload_id)

    opts = PutOptions(md5=hashlib.md5(b"other").hexdigest(), part_size=2 * MiB, multipart_threshold=MiB,
                      max_buffers=2, on_upload_started=hook)
    with pytest.raises(ChecksumMismatch):
        await store.put("k", _stream(data), opts)
    assert len(started) == 1
    meta = await store.head("k")
    assert (meta.etag, meta.size, meta.metadata) == (old.etag, 13, {"v": "1"})
    assert await read_all(store, "k") == b"the old bytes"
    await store.abort_upload("k", started[0])  # a no-op, and idempotent
    await store.abort_upload("k", started[0])
    assert [m.key async for m in store.list()] == ["k"]


async def test_staged_put_sets_md5_headers_metadata_tags_and_tier(new_store):
    store = new_store()
    data = random.Random(2).randbytes(3 * MiB + 5)
    md5 = hashlib.md5(data).hexdigest()
    opts = PutOptions(part_size=MiB, multipart_threshold=MiB, content_type="application/x-test",
                      cache_control="no-cache", metadata={"cloudmirror-replica": "1"}, tags={"t": "1"},
                      storage_class="STANDARD_IA", md5=md5, size=len(data))
    res = await store.put("big", _stream(data), opts)
    assert (res.md5, res.size) == (md5, len(data)) and res.etag
    meta = await store.head("big", HeadOptions(include_tags=True))
    assert (meta.md5, meta.size, meta.etag, meta.content_type, meta.cache_control) == (
        md5, len(data), res.etag, "application/x-test", "no-cache")
    assert (meta.metadata, meta.tags, meta.storage_class) == ({"cloudmirror-replica": "1"}, {"t": "1"}, "Cool")
    client, _ = await store.client_for(store.location)
    committed, _ = await client.get_blob_client(store.container, "big").get_block_list("committed")
    assert [b.size for b in committed] == [MiB, MiB, MiB, 5]
    assert len({len(b.id) for b in committed}) == 1  # block ids of equal length


async def test_64_mib_streamed_put_bounds_memory_and_concurrency(new_store, monkeypatch):
    from azure.storage.blob.aio import BlobClient

    store = new_store()
    part, buffers, total = 4 * MiB, 2, 64 * MiB
    in_flight = peak_in_flight = 0
    original = BlobClient.stage_block

    async def counting_stage_block(self, *args, **kwargs):
        nonlocal in_flight, peak_in_flight
        in_flight += 1
        peak_in_flight = max(peak_in_flight, in_flight)
        try:
            return await original(self, *args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(BlobClient, "stage_block", counting_stage_block)
    h = hashlib.md5()

    async def generated():
        rng = random.Random(3)
        for _ in range(total // (512 * 1024)):
            chunk = rng.randbytes(512 * 1024)
            h.update(chunk)
            yield chunk

    opts = PutOptions(part_size=part, max_buffers=buffers, multipart_threshold=8 * MiB)
    tracemalloc.start()
    try:
        res = await store.put("huge", generated(), opts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (res.size, res.md5) == (total, h.hexdigest())
    assert peak < (buffers + 2) * part, f"peak {peak / MiB:.1f} MiB"
    assert peak_in_flight == buffers
    assert (await store.head("huge")).md5 == h.hexdigest()


async def test_a_producer_reusing_its_buffer_and_a_failing_producer(new_store):
    store = new_store()
    expected = hashlib.md5()

    async def reusing():
        buf = bytearray(700_000)
        for i in range(5):
            buf[:] = bytes([i]) * len(buf)  # the same buffer, rewritten after each yield
            expected.update(buf)
            yield buf

    res = await store.put("reused", reusing(), PutOptions(part_size=MiB, multipart_threshold=MiB))
    assert res.md5 == expected.hexdigest() == (await store.head("reused")).md5

    async def failing():
        yield b"x" * (2 * MiB)
        raise OSError("the source broke")

    with pytest.raises(OSError, match="the source broke"):
        await store.put("reused", failing(), PutOptions(part_size=MiB, multipart_threshold=MiB))
    assert (await store.head("reused")).etag == res.etag


async def test_bytes_body_above_the_threshold_is_staged(new_store):
    store = new_store()
    data = random.Random(4).randbytes(2 * MiB + 1)
    counter = metrics.STORAGE_REQUESTS.labels("azure", "stage_block")
    before = counter._value.get()
    res = await store.put("b", data, PutOptions(multipart_threshold=MiB, part_size=MiB))
    assert counter._value.get() - before == 3
    assert res.md5 == hashlib.md5(data).hexdigest() == (await store.head("b")).md5


# ---------------------------------------------------------------- reads
async def test_get_is_pinned_to_one_version(new_store):
    store = new_store()
    await store.put("k", random.Random(5).randbytes(3 * MiB))
    got = await store.get("k", GetOptions(chunk_size=MiB))
    body = aiter(got.body)
    assert len(await anext(body)) == MiB
    await store.put("k", b"rewritten")
    with pytest.raises(PreconditionFailed):
        await anext(body)


async def test_get_returns_stored_bytes_of_gzip_blobs_across_ranges(new_store):
    store = new_store()
    data = gzip.compress(random.Random(6).randbytes(3 * MiB), compresslevel=1)
    await store.put("g.gz", data, PutOptions(content_encoding="gzip"))
    got = await store.get("g.gz", GetOptions(chunk_size=MiB))
    chunks = [c async for c in got.body]
    assert b"".join(chunks) == data and got.meta.content_encoding == "gzip"
    assert got.meta.size == len(data) and got.meta.md5 == hashlib.md5(data).hexdigest()
    assert [len(c) for c in chunks[:-1]] == [MiB] * (len(chunks) - 1)


async def test_small_chunks_of_an_empty_and_a_tiny_blob(new_store):
    store = new_store()
    await store.put("empty", b"")
    await store.put("tiny", b"abcdefg")
    assert [c async for c in (await store.get("empty", GetOptions(chunk_size=3))).body] == []
    assert [c async for c in (await store.get("tiny", GetOptions(chunk_size=3))).body] == [b"abc", b"def", b"g"]
    with pytest.raises(PreconditionFailed):
        await store.get("empty", GetOptions(if_match="0x0"))


async def test_versions_listing_without_versioning_is_current_blobs(new_store):
    store = new_store()
    for k in ("b", "a", "c"):
        await store.put(k, k.encode())
    listed = [m async for m in store.list(ListOptions(versions=True, page_size=2, start_after="a"))]
    assert [(m.key, m.is_latest, m.is_delete_marker, m.version_id) for m in listed] == [
        ("b", True, False, None), ("c", True, False, None)]


# ---------------------------------------------------------------- server-side copy
async def test_cross_account_copy_uses_a_sas_and_replaces_headers_and_metadata(new_store):
    src, dst = new_store(DEV), new_store(SECOND)
    assert isinstance(dst, ServerSideCopier) and dst.can_copy_from(src.location)
    await src.put("s", b"across accounts", PutOptions(content_type="text/plain", content_language="en",
                                                      metadata={"owner": "ann"}, tags={"team": "blue"}))
    meta = await src.head("s")
    opts = CopyOptions(size=meta.size, md5=meta.md5, source_if_match=meta.etag, content_type="text/markdown",
                       metadata={REPLICA_MARKER: "1"}, storage_class="STANDARD_IA")
    res = await dst.copy(src.location, "s", "d/copy", opts)
    assert (res.size, res.md5) == (15, meta.md5)
    copied = await dst.head("d/copy", HeadOptions(include_tags=True))
    assert copied.metadata == {REPLICA_MARKER: "1"} and copied.tags == {"team": "blue"}
    assert (copied.content_type, copied.content_language) == ("text/markdown", None)  # replaced, not merged
    assert (copied.md5, copied.etag, copied.storage_class) == (meta.md5, res.etag, "Cool")
    client, _ = await dst.client_for(dst.location)
    props = await client.get_blob_client(dst.container, "d/copy").get_blob_properties()
    assert "sig=" in props.copy.source and "sp=r" in props.copy.source  # a read-only SAS
    assert await read_all(dst, "d/copy") == b"across accounts"
    # empty metadata and tags replace the source's too
    await dst.copy(src.location, "s", "d/bare", CopyOptions(tags={}))
    bare = await dst.head("d/bare", HeadOptions(include_tags=True))
    assert (bare.metadata, bare.tags, bare.md5) == ({}, {}, meta.md5)


async def test_copy_guard_and_missing_source(new_store):
    src, dst = new_store(DEV), new_store(SECOND)
    first = await src.put("s", b"one")
    await src.put("s", b"two")
    with pytest.raises(PreconditionFailed):
        await dst.copy(src.location, "s", "d", CopyOptions(source_if_match=first.etag))
    with pytest.raises(ChecksumMismatch):
        await dst.copy(src.location, "s", "d", CopyOptions(md5=hashlib.md5(b"one").hexdigest()))
    with pytest.raises(NotFound):
        await dst.copy(src.location, "gone", "d", CopyOptions())
    with pytest.raises(NotFound):
        await dst.head("d")
    with pytest.raises(FatalError) as e:
        await dst.copy(src.location, "s", "d", CopyOptions(tags={"bad": "a&b"}))
    assert e.value.code == "UnmappableTags"


async def test_copy_requests_are_counted(new_store):
    src, dst = new_store(DEV), new_store(DEV)
    await src.put("s", b"x")
    counter = metrics.STORAGE_REQUESTS.labels("azure", "copy")
    before = counter._value.get()
    await dst.copy(src.location, "s", "d", CopyOptions(content_type="application/octet-stream"))
    assert counter._value.get() - before == 1


def test_can_copy_from_the_same_blob_service_only(azurite):
    here = AzureStore(parse_location(azure_location_url(DEV, "c")))
    assert here.can_copy_from(parse_location(azure_location_url(SECOND, "other")))
    assert not here.can_copy_from(parse_location("az://acct/c"))  # the public cloud
    assert not here.can_copy_from(parse_location("s3://bucket"))
    assert not here.can_copy_from(parse_location("az://x/c?connection_string_env=CM_TEST_UNSET_VAR"))
    cloud = AzureStore(parse_location("az://one/c"))
    assert cloud.can_copy_from(parse_location("az://two/c"))  # any account of the same cloud
    assert not cloud.can_copy_from(parse_location("az://two/c?endpoint=https://two.blob.core.chinacloudapi.cn"))


# ---------------------------------------------------------------- authentication
async def test_account_key_and_sas_credentials_from_the_environment(new_store, azurite, monkeypatch):
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    base = new_store()
    host = f"http://127.0.0.1:{azurite.blob_port}"
    monkeypatch.setenv("AZURE_STORAGE_KEY", azurite.accounts[DEV])
    by_key = AzureStore(parse_location(f"az://{DEV}/{base.container}?credential=key&endpoint={host}"))
    await by_key.put("by-key", b"k")
    sas = generate_account_sas(DEV, azurite.accounts[DEV], ResourceTypes(object=True, container=True),
                               AccountSasPermissions(read=True, list=True),
                               expiry=datetime.now(timezone.utc) + timedelta(minutes=10))
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?" + sas)
    by_sas = AzureStore(parse_location(f"az://{DEV}/{base.container}?credential=sas&endpoint={host}"))
    try:
        assert await read_all(by_sas, "by-key") == b"k"
        with pytest.raises(AccessDenied):  # the SAS is read-only
            await by_sas.put("nope", b"x")
    finally:
        await by_key.close()
        await by_sas.close()


# ---------------------------------------------------------------- errors and counting
async def test_missing_container_is_bucket_not_found_everywhere(azurite):
    loc = parse_location(azure_location_url(DEV, unique_name("nobucket")))
    store = AzureStore(loc)
    try:
        for call in (store.put("k", b"x"), store.put("k", _stream(b"x" * 3 * MiB), PutOptions(multipart_threshold=MiB)),
                     store.delete("k"), store.get("k")):
            with pytest.raises(BucketNotFound) as e:
                await call
            assert loc.bucket in str(e.value) and "NoSuchBucket" in str(e.value)
    finally:
        await store.close()


async def test_requests_are_counted_by_operation(new_store):
    store = new_store()
    ops = ("put", "head", "get_tags", "get", "list", "delete")
    before = {op: metrics.STORAGE_REQUESTS.labels("azure", op)._value.get() for op in ops}
    await store.put("k", b"x", PutOptions(tags={"a": "b"}))
    await store.head("k", HeadOptions(include_tags=True))
    await read_all(store, "k")
    [m async for m in store.list()]
    await store.delete("k")
    after = {op: metrics.STORAGE_REQUESTS.labels("azure", op)._value.get() for op in ops}
    assert {op: after[op] - before[op] for op in ops} == dict.fromkeys(ops, 1)
