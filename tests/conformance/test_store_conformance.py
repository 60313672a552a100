"""The store conformance suite: every store (memory, file, s3 on moto, gcs on fake-gcs-server,
azure on Azurite) passes it."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from cloudmirror import metrics
from cloudmirror.location import Location, parse_location
from cloudmirror.stores import open_store
from cloudmirror.stores.base import (
    REPLICA_MARKER,
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
    ServerSideCopier,
    Store,
)
from cloudmirror.stores.memory import set_versioning
from tests.conftest import azure_location_url, gcs_location_url, unique_name

MiB = 1024 * 1024
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
LIST_OP = {"memory": ("memory", "list"), "file": ("file", "list"), "s3": ("s3", "ListObjectsV2"),
           "gcs": ("gcs", "list"), "azure": ("azure", "list")}


@dataclass
class Env:
    kind: str
    new_location: Callable[..., Location]  # (region="us-east-1", versioned=False) -> a fresh bucket
    missing_location: Callable[[], Location | None]
    opened: list[Store] = field(default_factory=list)
    store: Store = None  # type: ignore[assignment]
    location: Location = None  # type: ignore[assignment]

    def open(self, location: Location) -> Store:
        s = open_store(location)
        self.opened.append(s)
        return s


@pytest.fixture(params=["memory", "file", "s3", "gcs", "azure"])
async def env(request, tmp_path):
    kind = request.param
    if kind == "memory":
        def new(region="us-east-1", versioned=False):
            name = unique_name("mem")
            set_versioning(name, versioned)
            return parse_location(f"memory://{name}")
        missing = lambda: None  # noqa: E731 - memory buckets spring into being
    elif kind == "file":
        def new(region="us-east-1", versioned=False):
            if versioned:
                pytest.skip("file stores have no versioning")
            root = tmp_path / unique_name("root")
            root.mkdir()
            return parse_location(f"file://{root}")
        missing = lambda: parse_location(f"file://{tmp_path / 'no-such-root'}")  # noqa: E731 - a one-line lambda reads better here
    elif kind == "gcs":
        from cloudmirror.local.provision import create_gcs_bucket

        endpoint = request.getfixturevalue("gcs_endpoint")

        def new(region="us-east-1", versioned=False):
            loc = parse_location(gcs_location_url(endpoint, unique_name("cm")))
            create_gcs_bucket(loc, versioned=versioned)
            return loc
        missing = lambda: parse_location(gcs_location_url(endpoint, unique_name("nobucket")))  # noqa: E731 - a one-line lambda reads better here
    elif kind == "azure":
        from cloudmirror.local.provision import create_azure_container

        az = request.getfixturevalue("azurite")
        accounts = list(az.accounts)

        def new(region="us-east-1", versioned=False):
            if versioned:
                pytest.skip("Azurite has no blob versioning")
            # a second "region" is the second storage account: copies across accounts use a SAS
            account = accounts[0] if region == "us-east-1" else accounts[1]
            loc = parse_location(azure_location_url(account, unique_name("cm")))
            create_azure_container(loc)
            return loc
        missing = lambda: parse_location(azure_location_url(accounts[0], unique_name("nobucket")))  # noqa: E731 - a one-line lambda reads better here
    else:
        from cloudmirror.local.provision import create_s3_bucket

        endpoint = request.getfixturevalue("moto_endpoint")

        def new(region="us-east-1", versioned=False):
            name = unique_name("cm")
            create_s3_bucket(endpoint, region, name, versioned=versioned)
            return parse_location(f"s3://{name}?region={region}&endpoint={endpoint}")
        missing = lambda: parse_location(f"s3://{unique_name('nobucket')}?region=us-east-1&endpoint={endpoint}")  # noqa: E731 - a one-line lambda reads better here
    e = Env(kind, new, missing)
    e.location = new()
    e.store = e.open(e.location)
    yield e
    for s in e.opened:
        await s.close()


class UploadIds(list):
    """An on_upload_started hook that records the upload ids."""

    async def __call__(self, upload_id: str) -> None:
        self.append(upload_id)


async def read_all(store: Store, key: str, **kw) -> bytes:
    res = await store.get(key, GetOptions(**kw))
    return b"".join([c async for c in res.body])


async def keys_of(it: AsyncIterator) -> list[str]:
    return [m.key async for m in it]


def rand_bytes(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


async def stream(data: bytes, chunk: int = 777_777) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]


# ---------------------------------------------------------------- basics
async def test_put_get_round_trip(env):
    data = b"hello, mirror"
    md5 = hashlib.md5(data).hexdigest()
    res = await env.store.put("a/hello.txt", data)
    assert (res.md5, res.size) == (md5, len(data)) and res.etag
    if env.kind in ("memory", "file", "s3"):  # elsewhere the etag is not the MD5 (GCS generation, Azure 0x8D..)
        assert res.etag == md5
    meta = await env.store.head("a/hello.txt")
    assert (meta.key, meta.size, meta.etag, meta.md5) == ("a/hello.txt", len(data), res.etag, md5)
    assert meta.last_modified is not None and meta.is_latest and not meta.is_delete_marker
    got = await env.store.get("a/hello.txt")
    assert got.meta.etag == res.etag
    assert b"".join([c async for c in got.body]) == data
    assert isinstance(env.store, Store)


async def test_zero_byte_object(env):
    res = await env.store.put("empty", b"")
    assert (res.size, res.md5) == (0, EMPTY_MD5)
    meta = await env.store.head("empty")
    assert (meta.size, meta.md5) == (0, EMPTY_MD5)
    assert await read_all(env.store, "empty") == b""
    res = await env.store.put("empty-stream", stream(b""))
    assert (res.size, res.md5) == (0, EMPTY_MD5)
    assert (await env.store.head("empty-stream")).size == 0


async def test_headers_metadata_and_tags_round_trip(env):
    data = gzip.compress(b"some text " * 100)
    opts = PutOptions(content_type="text/plain; charset=utf-8", content_encoding="gzip",
                      content_disposition='attachment; filename="a b.txt"', content_language="de-CH",
                      cache_control="max-age=60", metadata={"owner": "ann", "note": "hello world"},
                      tags={"team": "blue", "env": "prod x"}, storage_class="STANDARD_IA")
    await env.store.put("doc.txt.gz", data, opts)
    meta = await env.store.head("doc.txt.gz")
    assert meta.content_headers() == {"content_type": "text/plain; charset=utf-8", "content_encoding": "gzip",
                                      "content_disposition": 'attachment; filename="a b.txt"',
                                      "content_language": "de-CH", "cache_control": "max-age=60"}
    assert meta.metadata == {"owner": "ann", "note": "hello world"}
    # S3 class names map onto the provider's own (Azure access tier, GCS storage class)
    assert meta.storage_class == {"azure": "Cool", "gcs": "NEARLINE"}.get(env.kind, "STANDARD_IA")
    assert meta.tags is None  # not fetched
    tagged = await env.store.head("doc.txt.gz", HeadOptions(include_tags=True))
    assert tagged.tags == {"team": "blue", "env": "prod x"} and tagged.tag_count == 2
    got = await env.store.get("doc.txt.gz")
    assert got.meta.tag_count == 2 and got.meta.metadata["owner"] == "ann"
    assert b"".join([c async for c in got.body]) == data
    # from_meta carries everything needed to write a faithful replica
    again = PutOptions.from_meta(tagged)
    assert (again.metadata, again.tags, again.content_type) == (meta.metadata, tagged.tags, meta.content_type)


AWKWARD_KEYS = [
    "with space.txt",
    "plus+sign+.txt",
    "percent%20literal%.txt",
    "ünïcödé/日本語 ファイル.txt",
    "deep/" + "/".join("abcdefghij") + "/leaf.txt",
    "&$@=;:,?#[]!'()*~.txt",
    ("x" * 99 + "/") * 9 + "y" * 100,  # 1000 bytes
]


async def test_awkward_keys(env):
    assert len(AWKWARD_KEYS[-1].encode()) == 1000
    for i, key in enumerate(AWKWARD_KEYS):
        await env.store.put(key, f"body {i}".encode())
    for i, key in enumerate(AWKWARD_KEYS):
        assert (await env.store.head(key)).key == key
        assert await read_all(env.store, key) == f"body {i}".encode()
    assert await keys_of(env.store.list()) == sorted(AWKWARD_KEYS)
    assert await keys_of(env.store.list(ListOptions(prefix="ünïcödé/"))) == ["ünïcödé/日本語 ファイル.txt"]
    for key in AWKWARD_KEYS:
        await env.store.delete(key)
    assert await keys_of(env.store.list()) == []


async def test_list_paging_prefix_and_start_after(env):
    keys = [f"p/{i}" for i in range(5)]
    for k in [*keys, "q/outside", "o"]:
        await env.store.put(k, k.encode())
    counter = metrics.STORAGE_REQUESTS.labels(*LIST_OP[env.kind])
    before = counter._value.get()
    listed = [m async for m in env.store.list(ListOptions(prefix="p/", page_size=2))]
    assert [m.key for m in listed] == keys
    assert counter._value.get() - before == 3  # three pages of at most 2
    assert all(m.size == 3 and m.md5 == hashlib.md5(m.key.encode()).hexdigest() for m in listed)
    assert await keys_of(env.store.list(ListOptions(prefix="p/", start_after="p/1", page_size=2))) == keys[2:]
    assert await keys_of(env.store.list(ListOptions(start_after="p/4"))) == ["q/outside"]
    assert await keys_of(env.store.list()) == ["o", *keys, "q/outside"]
    assert await keys_of(env.store.list(ListOptions(prefix="nothing/"))) == []


async def test_list_order_is_key_order_across_prefixes(env):
    keys = ["a-b", "a/b", "a/c/d", "a0", "a.txt", "b"]
    for k in keys:
        await env.store.put(k, b"x")
    assert await keys_of(env.store.list(ListOptions(page_size=2))) == sorted(keys)
    assert await keys_of(env.store.list(ListOptions(start_after="a/b"))) == ["a/c/d", "a0", "b"]


async def test_delete_is_idempotent_and_missing_is_not_found(env):
    await env.store.put("gone", b"x")
    await env.store.delete("gone")
    await env.store.delete("gone")
    await env.store.delete("never/was")
    for call in (env.store.head("gone"), env.store.get("gone"), env.store.head("never/was")):
        with pytest.raises(NotFound):
            await call
    assert await keys_of(env.store.list()) == []


async def test_get_if_match(env):
    first = await env.store.put("k", b"one")
    assert await read_all(env.store, "k", if_match=first.etag) == b"one"
    await env.store.put("k", b"two")
    with pytest.raises(PreconditionFailed):
        await env.store.get("k", GetOptions(if_match=first.etag))


# ---------------------------------------------------------------- big streams, checksums
async def test_streaming_put_of_20_mib_round_trips(env):
    data = rand_bytes(20 * MiB)
    md5 = hashlib.md5(data).hexdigest()
    started = hook = UploadIds()
    opts = PutOptions(part_size=5 * MiB, max_buffers=2, multipart_threshold=8 * MiB, md5=md5, on_upload_started=hook)
    res = await env.store.put("big/blob.bin", stream(data), opts)
    assert (res.md5, res.size) == (md5, len(data))
    meta = await env.store.head("big/blob.bin")
    assert meta.size == len(data)
    if env.kind == "s3":
        assert len(started) == 1 and meta.etag.endswith("-4") and res.etag == meta.etag
        assert await env.store.list_uploads() == []
    else:
        assert meta.md5 == md5
    got = await env.store.get("big/blob.bin", GetOptions(chunk_size=MiB))
    h, sizes = hashlib.md5(), []
    async for chunk in got.body:
        h.update(chunk)
        sizes.append(len(chunk))
    assert h.hexdigest() == md5
    assert sizes == [MiB] * 20


async def test_checksum_mismatch_writes_nothing(env):
    with pytest.raises(ChecksumMismatch):
        await env.store.put("small", b"abc", PutOptions(md5=EMPTY_MD5))
    with pytest.raises(ChecksumMismatch):
        await env.store.put("sized", b"abc", PutOptions(size=4))
    data = rand_bytes(12 * MiB, seed=3)
    started = hook = UploadIds()
    opts = PutOptions(part_size=5 * MiB, max_buffers=2, multipart_threshold=5 * MiB, md5=EMPTY_MD5,
                      on_upload_started=hook)
    with pytest.raises(ChecksumMismatch):
        await env.store.put("large", stream(data), opts)
    for key in ("small", "sized", "large"):
        with pytest.raises(NotFound):
            await env.store.head(key)
    assert await keys_of(env.store.list()) == []
    if env.kind == "s3":
        assert len(started) == 1
        assert await env.store.list_uploads() == []
        await env.store.abort_upload("large", started[0])  # idempotent
    await env.store.abort_upload("large", "no-such-upload")


async def test_missing_bucket(env):
    loc = env.missing_location()
    if loc is None:
        pytest.skip(f"{env.kind} buckets are created on first use")
    store = env.open(loc)
    with pytest.raises(BucketNotFound) as e:
        await keys_of(store.list())
    assert loc.bucket in str(e.value) and "NoSuchBucket" in str(e.value)
    with pytest.raises(BucketNotFound):
        await store.put("k", b"x")
    with pytest.raises((BucketNotFound, NotFound)):
        await store.head("k")


# ---------------------------------------------------------------- server-side copy
def copier(env) -> ServerSideCopier:
    if not isinstance(env.store, ServerSideCopier):
        assert env.kind == "file"
        pytest.skip(f"{env.kind} has no server-side copy")
    return env.store


async def test_server_side_copy(env):
    dst = copier(env)
    src_loc = env.new_location()
    src = env.open(src_loc)
    await src.put("src/obj.txt", b"payload", PutOptions(content_type="text/plain", metadata={"owner": "ann"},
                                                         tags={"team": "blue"}))
    meta = await src.head("src/obj.txt")
    assert dst.can_copy_from(src_loc)
    opts = CopyOptions(size=meta.size, md5=meta.md5, source_if_match=meta.etag, content_type="text/markdown",
                       metadata={**meta.metadata, REPLICA_MARKER: "1"})
    res = await dst.copy(src_loc, "src/obj.txt", "dst/obj.txt", opts)
    assert (res.size, res.md5) == (7, meta.md5)
    copied = await env.store.head("dst/obj.txt", HeadOptions(include_tags=True))
    assert copied.metadata == {"owner": "ann", REPLICA_MARKER: "1"} and copied.is_replica
    assert copied.content_type == "text/markdown"
    assert copied.tags == {"team": "blue"}
    assert await read_all(env.store, "dst/obj.txt") == b"payload"
    # non-empty tags replace the source's
    await dst.copy(src_loc, "src/obj.txt", "dst/retagged", CopyOptions(tags={"x": "y"}))
    assert (await env.store.head("dst/retagged", HeadOptions(include_tags=True))).tags == {"x": "y"}
    # the copy guard: the source changed since it was planned
    await src.put("src/obj.txt", b"changed!!")
    with pytest.raises(PreconditionFailed):
        await dst.copy(src_loc, "src/obj.txt", "dst/obj2.txt", opts)
    with pytest.raises(NotFound):
        await dst.copy(src_loc, "src/missing", "dst/x", CopyOptions())


async def test_copy_of_a_specific_version(env):
    dst = copier(env)
    src_loc = env.new_location(versioned=True)
    src = env.open(src_loc)
    v1 = await src.put("k", b"first")
    await src.put("k", b"second")
    res = await dst.copy(src_loc, "k", "k", CopyOptions(source_version_id=v1.version_id, md5=v1.md5,
                                                         source_if_match=v1.etag, size=5))
    assert res.md5 == v1.md5
    assert await read_all(env.store, "k") == b"first"


async def test_copy_across_regions(env):
    dst_loc = env.new_location(region="eu-west-1")
    dst = env.open(dst_loc)
    if not isinstance(dst, ServerSideCopier):
        pytest.skip(f"{env.kind} has no server-side copy")
    put = await env.store.put("from/use1.txt", b"across the ocean", PutOptions(tags={"t": "1"}))
    assert dst.can_copy_from(env.location)
    res = await dst.copy(env.location, "from/use1.txt", "to/euw1.txt",
                         CopyOptions(size=16, md5=put.md5, source_if_match=put.etag, metadata={REPLICA_MARKER: "1"}))
    assert res.md5 == put.md5
    assert await read_all(dst, "to/euw1.txt") == b"across the ocean"
    assert (await dst.head("to/euw1.txt", HeadOptions(include_tags=True))).tags == {"t": "1"}


async def test_large_copy(env):
    """Above copy_multipart_threshold (lowered here) S3 copies with UploadPartCopy."""
    dst = copier(env)
    if hasattr(dst, "copy_multipart_threshold"):
        dst.copy_multipart_threshold = 8 * MiB
    data = rand_bytes(18 * MiB, seed=5)
    src_loc = env.new_location()
    src = env.open(src_loc)
    await src.put("big", data, PutOptions(tags={"a": "b"}, metadata={"m": "1"}, part_size=6 * MiB))
    meta = await src.head("big")
    started = hook = UploadIds()
    opts = CopyOptions(size=meta.size, source_if_match=meta.etag, part_size=5 * MiB, on_upload_started=hook,
                       content_type="application/x-big", metadata={"m": "1", REPLICA_MARKER: "1"})
    res = await dst.copy(src_loc, "big", "big-copy", opts)
    assert res.size == len(data)
    copied = await env.store.head("big-copy", HeadOptions(include_tags=True))
    assert (copied.size, copied.tags, copied.content_type) == (len(data), {"a": "b"}, "application/x-big")
    assert copied.metadata == {"m": "1", REPLICA_MARKER: "1"}
    assert hashlib.md5(await read_all(env.store, "big-copy")).hexdigest() == hashlib.md5(data).hexdigest()
    await src.put("big", data[:-1])  # the source changes: the guard must hold
    with pytest.raises(PreconditionFailed):
        await dst.copy(src_loc, "big", "big-copy-2", opts)
    with pytest.raises(NotFound):
        await env.store.head("big-copy-2")
    if env.kind == "s3":
        assert copied.etag.endswith("-4") and len(started) == 1
        assert await env.store.list_uploads() == []


# ---------------------------------------------------------------- versioning
async def test_versions_and_delete_markers(env):
    if env.kind == "file":
        pytest.skip("file stores have no versioning")
    loc = env.new_location(versioned=True)
    store = env.open(loc)
    v1 = await store.put("k", b"one")
    v2 = await store.put("k", b"two")
    await store.put("z", b"z")
    assert v1.version_id and v2.version_id and v1.version_id != v2.version_id
    assert await read_all(store, "k", version_id=v1.version_id) == b"one"
    await store.delete("k")
    with pytest.raises(NotFound):
        await store.head("k")
    assert (await store.head("k", HeadOptions(version_id=v2.version_id))).size == 3
    versions = [m async for m in store.list(ListOptions(versions=True, page_size=2))]
    if env.kind == "gcs":  # no delete markers: the delete made the live generation noncurrent
        assert [(m.key, m.is_delete_marker, m.is_latest) for m in versions] == [
            ("k", False, False), ("k", False, False), ("z", False, True)]
        assert [m.version_id for m in versions[:2]] == [v2.version_id, v1.version_id]
        assert await keys_of(store.list()) == ["z"]
        return
    assert [(m.key, m.is_delete_marker, m.is_latest) for m in versions] == [
        ("k", True, True), ("k", False, False), ("k", False, False), ("z", False, True)]
    assert [m.version_id for m in versions[1:3]] == [v2.version_id, v1.version_id]
    assert await keys_of(store.list()) == ["z"]
    await store.delete("k", DeleteOptions(version_id=versions[0].version_id))  # remove the marker
    assert await read_all(store, "k") == b"two"


# ---------------------------------------------------------------- store-specific
async def test_file_store_rejects_keys_outside_root(env):
    if env.kind != "file":
        pytest.skip("file store only")
    for key in ("../evil", "a/../../evil", "/abs", "a//b", "a/./b", "dir/", "", ".cloudmirror-meta/x"):
        with pytest.raises(FatalError):
            await env.store.put(key, b"x")
    root = env.location.bucket
    await env.store.put("a", b"file")
    with pytest.raises(FatalError):
        await env.store.put("a/b", b"under a file")
    assert await keys_of(env.store.list()) == ["a"]
    assert sorted(os.listdir(root)) == [".cloudmirror-meta", "a"]
    assert not os.path.exists(os.path.join(os.path.dirname(root), "evil"))


async def test_memory_stores_share_a_bucket(env):
    if env.kind != "memory":
        pytest.skip("memory store only")
    other = env.open(env.location)
    await env.store.put("shared", b"x")
    assert (await other.head("shared")).size == 1
