"""Duplicated and reordered GCS and Azure events never regress a target: three versions of
one key, their events delivered newest first and again out of order, through the real
Pub/Sub emulator and a real Azurite queue. And untrusted event metadata (a forged S3 event
dated 2999 or with the highest sequencer, through moto S3 + SQS) never hides a later real
write."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from cloudmirror.ledger.repo import ORDERING_FEED
from cloudmirror.location import parse_location
from cloudmirror.stores.base import HeadOptions
from tests.integration.harness import Cloud, config, converged, eventually, mirror, running
from tests.integration.providers import Provider, snapshot

BODIES = [b"version one", b"version two!", b"version three!!"]


async def _assert_converged_on_newest(r, src: str, dst: str, newest_etag: str) -> None:
    async def newest_there():
        snap = await snapshot(dst)
        return r.ledger.backlog() == 0 and snap.get("k", {}).get("size") == len(BODIES[-1])
    await eventually(newest_there, timeout=60, message="the newest version did not arrive")
    assert (await snapshot(dst)) == (await snapshot(src))
    rows = r.ledger.replications_for("m", "k")
    assert len({row["version_pk"] for row in rows}) == 3, rows  # three writes, duplicates folded
    assert sum(row["duplicates"] for row in {row["version_pk"]: row for row in rows}.values()) >= 2
    completed = [row for row in rows if row["status"] == "completed"]
    # every copy that ran shipped the newest bytes: nothing older ever reached the target
    assert completed and all(row["copied_etag"] == newest_etag for row in completed), rows
    assert {row["status"] for row in rows} <= {"completed", "superseded"}


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
async def test_azure_events_duplicated_and_reordered(schema, tmp_path, azurite, sqlite_url):
    from cloudmirror.local.eventgrid_fake import next_sequencer, publish_blob_event

    ctx = {"azurite": azurite, "schema": schema}
    az, disk = Provider("azure", ctx, tmp_path), Provider("file", ctx, tmp_path)
    src, dst = az.new_location(), disk.new_location()
    feed = az.feed_for(src)
    queue = ctx["queues"].pop(parse_location(src).container_id)  # the test publishes, not Provider.put
    loc = parse_location(src)
    store = az.store(src)
    metas, seqs = [], []
    for body in BODIES:
        await store.put("k", body)
        metas.append(await store.head("k", HeadOptions()))
        seqs.append(next_sequencer())
    try:
        events = {}
        for i in (2, 0, 1):  # newest first, then the older ones
            events[i] = await publish_blob_event(queue, loc, "k", "put", metas[i], schema=schema, sequencer=seqs[i])
        for i in (2, 0):  # Event Grid delivers at least once: the same events again
            await _send(queue, events[i])
        cfg = config(sqlite_url, [{"name": "m", "source": src, "targets": [dst], "events": [feed]}])
        async with running(cfg) as r:
            await _assert_converged_on_newest(r, src, dst, metas[-1].etag)
            # a late duplicate of the oldest event changes nothing
            await _send(queue, events[0])
            oldest = lambda: next(row for row in r.ledger.replications_for("m", "k")  # noqa: E731 - a one-line lambda reads better here
                                  if row["etag"] == metas[0].etag)
            await eventually(lambda: oldest()["duplicates"] >= 2, timeout=30, message="late duplicate not seen")
            assert (oldest()["status"] in ("superseded", "completed")
                    and oldest()["copied_etag"] in (None, metas[-1].etag))
            assert (await snapshot(dst))["k"]["size"] == len(BODIES[-1])
    finally:
        await az.close()


async def _send(queue_url: str, event: dict) -> None:
    from cloudmirror.events.azure_queue import open_queue_client
    from cloudmirror.local.eventgrid_fake import encode_eventgrid_message

    client, cred = open_queue_client(queue_url, aio=True)
    try:
        await client.send_message(encode_eventgrid_message(event))
    finally:
        await client.close()
        if cred is not None:
            await cred.close()


async def test_gcs_events_duplicated_and_reordered(tmp_path, gcs_with_events, pubsub_host, sqlite_url):
    from google.cloud import pubsub_v1

    os.environ["PUBSUB_EMULATOR_HOST"] = pubsub_host
    ctx = {"gcs": gcs_with_events, "pubsub": pubsub_host}
    gcs, disk = Provider("gcs", ctx, tmp_path), Provider("file", ctx, tmp_path)
    src, dst = gcs.new_location(), disk.new_location()
    feed = gcs.feed_for(src)
    bucket = parse_location(src).bucket
    store = gcs.store(src)
    puts = [await store.put("k", body) for body in BODIES]  # real notifications, in order
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(gcs_with_events.project, gcs_with_events.topic)
    for i in (2, 0, 1, 2, 0):  # the same notifications again, newest first, then out of order
        gen = puts[i].version_id
        data = {"kind": "storage#object", "name": "k", "bucket": bucket, "generation": gen,
                "size": str(len(BODIES[i])), "contentType": "application/octet-stream"}
        publisher.publish(topic, json.dumps(data).encode(), bucketId=bucket, objectId="k", objectGeneration=gen,
                          eventType="OBJECT_FINALIZE", eventTime="2026-11-24T00:00:00Z",
                          payloadFormat="JSON_API_V1").result(timeout=30)
    try:
        cfg = config(sqlite_url, [{"name": "m", "source": src, "targets": [dst], "events": [feed]}])
        async with running(cfg) as r:
            await _assert_converged_on_newest(r, src, dst, puts[-1].etag)
    finally:
        await gcs.close()


# --------------------------------------------------------------------- untrusted event metadata
def _forged_s3_event(bucket: str, key: str, etag: str, size: int, *, event_time: str) -> str:
    """A well-formed S3 notification for a real object, claiming to be newer than anything:
    the highest sequencer there is (and, in one variant, an event time in the year 2999)."""
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": event_time,
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": key, "size": size, "eTag": etag, "sequencer": "F" * 32}}}]})


@pytest.mark.timeout(180)
# 2999: recorded as untrusted, not ordered; ten minutes ahead (within the clock skew allowed, as
# moto's real events carry no sequencer, this is what orders them): the source decides
@pytest.mark.parametrize("event_time", ["2999-01-01T00:00:00.000Z", "ten minutes ahead"])
async def test_a_bogus_s3_event_never_hides_later_real_writes(moto_endpoint, ledger_url, event_time):
    """Issue 12: a valid event for K dated 2999 (or carrying a forged sequencer) must not make
    the next real writes of K look older and never be copied, while status claims RPO 0."""
    cloud = Cloud(moto_endpoint)
    src, dst = cloud.bucket(), cloud.bucket("eu-west-1")
    q = cloud.queue_for(src)
    s3, sqs = cloud.s3(), cloud.sqs()
    cfg = config(ledger_url, [mirror("m", cloud, src, [dst], q)])
    if event_time == "ten minutes ahead":
        event_time = (datetime.now(UTC) + timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    async with running(cfg) as r:
        etag = s3.put_object(Bucket=src, Key="K", Body=b"v1")["ETag"].strip('"')
        await eventually(converged(cloud, src, dst), message="v1 replicated")
        sqs.send_message(QueueUrl=q, MessageBody=_forged_s3_event(src, "K", etag, 2, event_time=event_time))
        await eventually(lambda: len({x["version_pk"] for x in r.ledger.replications_for("m", "K")}) == 2
                    and r.ledger.backlog() == 0, message="the bogus event recorded and handled")
    async with running(cfg, workers=False) as r:  # intake only: the target must stay behind
        s3.put_object(Bucket=src, Key="K", Body=b"v2, a real write")
        await eventually(lambda: len({x["version_pk"] for x in r.ledger.replications_for("m", "K")}) == 3,
                    message="the real write's event recorded")
        newest = r.ledger.replications_for("m", "K")[-1]
        assert newest["status"] == "pending", newest  # not written off as "older than" the bogus event
        [st] = r.ledger.status(now=time.time() + 1)
        assert st["pending"] >= 1 and st["rpo_seconds"] >= 1, st  # status does not claim RPO 0
    async with running(cfg) as r:
        s3.put_object(Bucket=src, Key="K", Body=b"v3, the newest real write")
        await eventually(converged(cloud, src, dst), message="K converged on the newest real write")
        await eventually(lambda: r.ledger.backlog() == 0 and len(r.ledger.replications_for("m", "K")) == 4,
                    message="every event recorded and handled")
        rows = r.ledger.replications_for("m", "K")
    got = cloud.s3("eu-west-1").get_object(Bucket=dst, Key="K")["Body"].read()
    assert got == b"v3, the newest real write"
    assert {x["status"] for x in rows} <= {"completed", "superseded"}, rows
    newest = hashlib.md5(got).hexdigest()  # noqa: S324 - the S3 etag of a simple put, not for security
    assert newest in {x["copied_etag"] for x in rows if x["status"] == "completed"}, rows
    flagged = [d for d in r.ledger.dead_letters() if d["feed"] == ORDERING_FEED]
    if event_time.startswith("2999"):  # recorded with its time clamped to the clock, and shown as a dead letter
        assert rows[1]["source_time"] < time.time() + 1
        assert len(flagged) == 1 and "2999-01-01T00:00:00+00:00 is ahead of the clock" in flagged[0]["reason"]
    else:
        assert flagged == []
