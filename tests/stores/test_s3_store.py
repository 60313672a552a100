"""S3-specific behaviour of S3Store on moto: bounded memory, aborts, request counting, errors.
(The behaviour every store shares is in tests/conformance; the rules that need no emulator
are in tests/unit/test_s3_rules.py.)"""

from __future__ import annotations

import hashlib
import random

import pytest

from cloudmirror import metrics
from cloudmirror.local.provision import create_s3_bucket
from cloudmirror.location import parse_location
from cloudmirror.stores.base import (
    AccessDenied,
    CopyOptions,
    FatalError,
    HeadOptions,
    ListOptions,
    NotFound,
    PutOptions,
    RetryableError,
)
from cloudmirror.stores.s3 import S3Store
from cloudmirror.stores.s3.transfer import multipart_etag
from tests.conftest import unique_name
from tests.unit.test_s3_rules import client_error

MiB = 1024 * 1024


@pytest.fixture
async def store(moto_endpoint):
    bucket = unique_name("cm")
    create_s3_bucket(moto_endpoint, "us-east-1", bucket)
    s = S3Store(parse_location(f"s3://{bucket}?region=us-east-1&endpoint={moto_endpoint}"))
    yield s
    await s.close()


def count(op: str) -> float:
    return metrics.STORAGE_REQUESTS.labels("s3", op)._value.get()


async def test_every_request_is_counted_once(store):
    puts, heads = count("PutObject"), count("HeadObject")
    await store.put("k", b"x")
    await store.head("k")
    await store.head("k")
    assert (count("PutObject") - puts, count("HeadObject") - heads) == (1, 2)
    tagging = count("GetObjectTagging")
    await store.head("k", HeadOptions(include_tags=True))
    assert count("GetObjectTagging") - tagging == 1


async def test_small_bodies_use_one_put_and_big_ones_multipart(store):
    puts, creates = count("PutObject"), count("CreateMultipartUpload")
    await store.put("small", b"a" * 100, PutOptions(multipart_threshold=5 * MiB))
    res = await store.put("sized", b"b" * (6 * MiB), PutOptions(multipart_threshold=5 * MiB, part_size=5 * MiB))
    assert (count("PutObject") - puts, count("CreateMultipartUpload") - creates) == (1, 1)
    digests = [hashlib.md5(b"b" * (5 * MiB)).digest(), hashlib.md5(b"b" * MiB).digest()]
    assert res.etag == multipart_etag(digests) == (await store.head("sized")).etag


async def test_multipart_put_holds_at_most_max_buffers_parts(store, monkeypatch):
    client = await store.client()
    original = client.upload_part
    state = {"read": 0, "done": 0, "in_flight": 0, "max_in_flight": 0, "max_ahead": 0}

    async def upload_part(**kw):
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
            return await original(**kw)
        finally:
            state["in_flight"] -= 1
            state["done"] += len(kw["Body"])

    monkeypatch.setattr(client, "upload_part", upload_part)
    chunk = 256 * 1024

    async def body():
        rng = random.Random(1)
        for _ in range(30 * MiB // chunk):
            state["max_ahead"] = max(state["max_ahead"], state["read"] - state["done"])
            state["read"] += chunk
            yield rng.randbytes(chunk)

    res = await store.put("bounded", body(), PutOptions(part_size=5 * MiB, max_buffers=2))
    assert res.size == 30 * MiB
    assert state["max_in_flight"] == 2
    # bytes read but not yet uploaded never exceed max_buffers parts (+ one incoming chunk)
    assert state["max_ahead"] <= 2 * 5 * MiB + chunk, state


async def test_failed_part_aborts_the_upload(store, monkeypatch):
    client = await store.client()
    original = client.upload_part
    started = []

    async def upload_part(**kw):
        if kw["PartNumber"] == 2:
            raise client_error("SlowDown", 503, "Please reduce your request rate.")
        return await original(**kw)

    async def hook(upload_id):
        started.append(upload_id)

    monkeypatch.setattr(client, "upload_part", upload_part)
    with pytest.raises(RetryableError, match="SlowDown"):
        await store.put("k", b"z" * (12 * MiB), PutOptions(part_size=5 * MiB, multipart_threshold=5 * MiB,
                                                            on_upload_started=hook))
    assert len(started) == 1
    assert await store.list_uploads() == []
    with pytest.raises(NotFound):
        await store.head("k")


async def test_failed_part_copy_aborts_the_upload(store, monkeypatch):
    store.copy_multipart_threshold = 8 * MiB
    await store.put("src", b"s" * (12 * MiB))
    client = await store.client()
    original = client.upload_part_copy

    async def upload_part_copy(**kw):
        if kw["PartNumber"] == 3:
            raise client_error("AccessDenied", 403)
        return await original(**kw)

    monkeypatch.setattr(client, "upload_part_copy", upload_part_copy)
    with pytest.raises(AccessDenied):
        await store.copy(store.location, "src", "dst", CopyOptions(part_size=5 * MiB))
    assert await store.list_uploads() == []
    with pytest.raises(NotFound):
        await store.head("dst")


async def test_head_of_a_delete_marker_version_is_not_found(moto_endpoint):
    bucket = unique_name("cm")
    create_s3_bucket(moto_endpoint, "us-east-1", bucket, versioned=True)
    s = S3Store(parse_location(f"s3://{bucket}?region=us-east-1&endpoint={moto_endpoint}"))
    try:
        await s.put("k", b"x")
        await s.delete("k")
        marker = [m async for m in s.list(ListOptions(versions=True)) if m.is_delete_marker][0]
        with pytest.raises(NotFound):
            await s.head("k", HeadOptions(version_id=marker.version_id))
    finally:
        await s.close()


async def test_get_stream_can_be_abandoned(store):
    await store.put("k", b"q" * (3 * MiB))
    res = await store.get("k")
    first = await anext(res.body)
    assert len(first) == MiB
    await res.body.aclose()
    assert (await store.head("k")).size == 3 * MiB  # the client still works


async def test_can_copy_from_same_endpoint_and_profile_only(store):
    ep = store.location.endpoint
    assert store.can_copy_from(parse_location(f"s3://other-bucket?region=eu-west-1&endpoint={ep}"))
    assert not store.can_copy_from(parse_location("s3://other-bucket?region=us-east-1"))
    assert not store.can_copy_from(parse_location(f"s3://other-bucket?endpoint={ep}&profile=prod"))
    assert not store.can_copy_from(parse_location("gs://other-bucket"))
    assert S3Store(parse_location("s3://abc?region=us-east-1")).can_copy_from(parse_location("s3://xyz"))


async def test_cross_region_copy_goes_through_the_target_region(store, moto_endpoint):
    bucket = unique_name("cm")
    create_s3_bucket(moto_endpoint, "eu-west-1", bucket)
    target = S3Store(parse_location(f"s3://{bucket}?region=eu-west-1&endpoint={moto_endpoint}"))
    try:
        put = await store.put("k", b"hello")
        res = await target.copy(store.location, "k", "k", CopyOptions(md5=put.md5, size=5))
        assert res.md5 == put.md5
        assert (await target.client()).meta.region_name == "eu-west-1"
    finally:
        await target.close()


async def test_unknown_profile_is_a_store_error():
    s = S3Store(parse_location("s3://some-bucket?region=us-east-1&profile=no-such-profile-xyz"))
    with pytest.raises(FatalError, match="ProfileNotFound"):
        await s.head("k")
    await s.close()
