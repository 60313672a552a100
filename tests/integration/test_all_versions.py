"""All-versions mode end to end: a versioned S3 source fed by SQS (moto's events carry no
version ids), versioned targets on S3 (another region, server-side copies) and GCS
(streamed). Five versions of one key, written back to back, reach every target in order;
a delete ends the target's history with a delete; a backfill copies existing histories."""

from __future__ import annotations

import pytest

from cloudmirror.local.provision import create_gcs_bucket
from cloudmirror.location import parse_location
from cloudmirror.replication.history import key_versions
from cloudmirror.stores import open_store
from cloudmirror.stores.base import GetOptions, PutOptions
from tests.conftest import gcs_location_url, unique_name
from tests.integration.harness import Cloud, config, drained, eventually, running


async def history(url: str, key: str) -> list[bytes | None]:
    """The contents of every version of `key`, oldest first (None for a delete marker)."""
    store = open_store(parse_location(url))
    try:
        loc = parse_location(url)
        out: list[bytes | None] = []
        for v in await key_versions(store, loc.full_key(key)):
            if v.is_delete_marker:
                out.append(None)
                continue
            got = await store.get(loc.full_key(key), GetOptions(version_id=v.version_id))
            out.append(b"".join([c async for c in got.body]))
        return out
    finally:
        await store.close()


def contents_only(h: list[bytes | None]) -> list[bytes]:
    return [b for b in h if b is not None]


@pytest.fixture
def setup(moto_endpoint, gcs_endpoint, sqlite_url):
    cloud = Cloud(moto_endpoint)
    src = cloud.bucket(versioned=True)
    dst_s3 = cloud.bucket("eu-west-1", versioned=True)
    dst_gcs = gcs_location_url(gcs_endpoint, unique_name("cmv"))
    create_gcs_bucket(parse_location(dst_gcs), versioned=True)
    targets = [cloud.url(dst_s3, "eu-west-1"), dst_gcs]
    return cloud, src, targets, sqlite_url


async def put_versions(cloud: Cloud, bucket: str, key: str, bodies: list[bytes]) -> None:
    store = open_store(parse_location(cloud.url(bucket)))
    try:
        for b in bodies:
            await store.put(key, b, PutOptions(content_type="text/plain", metadata={"body": b.decode()}))
    finally:
        await store.close()


async def test_five_versions_reach_every_target_in_order(setup):
    cloud, src, targets, db = setup
    queue = cloud.queue_for(src)
    cfg = config(db, [{"name": "av", "source": cloud.url(src), "targets": targets, "versions": "all",
                       "events": [{"sqs": queue, "wait_time_s": 1}], "reconcile_grace": 0}])
    bodies = [f"version {i}".encode() for i in range(1, 6)]
    async with running(cfg) as r:
        await put_versions(cloud, src, "doc.txt", bodies)
        for t in targets:
            await eventually(lambda t=t: history(t, "doc.txt"), timeout=60, message=f"history on {t}")
        await eventually(drained(r.ledger), timeout=60, message="backlog drained")
        for t in targets:
            assert await history(t, "doc.txt") == bodies, t
        # a delete ends each target's history with a delete; the versions stay
        store = open_store(parse_location(cloud.url(src)))
        await store.delete("doc.txt")
        await store.close()

        async def deleted_everywhere():
            for t in targets:
                ts = open_store(parse_location(t))
                try:
                    if [m async for m in ts.list()]:
                        return False
                finally:
                    await ts.close()
            return True

        # moto sends no event when a delete marker is created (S3 sends
        # ObjectRemoved:DeleteMarkerCreated): reconciliation finds the delete
        await r.service.reconcile("av")
        await eventually(deleted_everywhere, timeout=60, message="the delete replicated")
        await eventually(drained(r.ledger), timeout=60, message="backlog drained")
    for t in targets:
        assert contents_only(await history(t, "doc.txt")) == bodies, t
    failed = r.ledger.count(mirror="av", status="failed")
    assert failed == 0


async def test_backfill_copies_existing_histories_oldest_first(setup):
    cloud, src, targets, db = setup
    await put_versions(cloud, src, "a", [b"a1", b"a2", b"a3"])
    await put_versions(cloud, src, "b", [b"b1"])
    cfg = config(db, [{"name": "avb", "source": cloud.url(src), "targets": targets, "versions": "all",
                       "backfill": True, "reconcile_grace": 0}])
    async with running(cfg) as r:
        async def copied():
            return all([await history(t, "a") == [b"a1", b"a2", b"a3"] and await history(t, "b") == [b"b1"]
                        for t in targets])

        await eventually(copied, timeout=60, message="histories backfilled")
        await eventually(drained(r.ledger), timeout=60, message="backlog drained")
        assert r.ledger.count(mirror="avb", status="failed") == 0
