"""PubSubFeed against the Pub/Sub emulator fed by fake-gcs-server, and AzureQueueFeed against
Azurite's Queue service fed by the fake Event Grid publisher (Event Grid has no emulator)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from cloudmirror.config import EventFeed
from cloudmirror.events import open_feed
from cloudmirror.events.base import FeedMessage
from cloudmirror.ledger.repo import is_newer
from tests.conftest import unique_name

pytestmark = pytest.mark.timeout(180)


async def collect(feed, until: Callable[[list[FeedMessage]], bool], *, timeout: float = 30.0,
                  keep: Callable[[FeedMessage], bool] = lambda m: True) -> list[FeedMessage]:
    """Receive until `until(messages)` holds (or fail at the deadline). Messages `keep`
    rejects (another test's bucket on the shared topic) are acked and dropped."""
    got: list[FeedMessage] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < deadline, f"timed out; received {[(m.message_id, m.events, m.error) for m in got]}"
        batch = await feed.receive()
        foreign = [m for m in batch if not keep(m)]
        if foreign:
            await feed.ack(foreign)
        got += [m for m in batch if keep(m)]
    return got


async def quiet_for(feed, seconds: float, keep: Callable[[FeedMessage], bool] = lambda m: True) -> list[FeedMessage]:
    """Everything (of ours) received during `seconds`; the caller expects none."""
    got: list[FeedMessage] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += [m for m in await feed.receive() if keep(m)]
    return got


# =============================================================================== GCS / Pub/Sub
@pytest.fixture
def gcs(gcs_with_events, pubsub_host, monkeypatch):
    """A fresh bucket on fake-gcs-server and a fresh subscription on its notification topic."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from cloudmirror.local.gcp import ensure_subscription

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_host)
    bucket = unique_name("gcsev")
    sub = ensure_subscription(pubsub_host, gcs_with_events.project, gcs_with_events.topic, unique_name("sub"),
                              ack_deadline_s=10)
    client = storage.Client(project=gcs_with_events.project, credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_with_events.endpoint})

    class G:
        pass

    g = G()
    g.bucket_name, g.sub, g.client, g.host = bucket, sub, client, pubsub_host
    g.topic = f"projects/{gcs_with_events.project}/topics/{gcs_with_events.topic}"
    g.bucket = client.create_bucket(bucket)
    g.ours = lambda m: json.loads(m.body)["attributes"].get("bucketId") == bucket
    return g


def publish(g, data: bytes, **attributes: str) -> str:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    try:
        return publisher.publish(g.topic, data, **attributes).result(timeout=30)
    finally:
        publisher.stop()


def make_visible_again(g, receipts: list[str]) -> None:
    """ModifyAckDeadline 0 on raw ack ids: an unacked message becomes deliverable at once;
    for an acked one it changes nothing. Turns 'was the ack sent?' into a quick check."""
    from google.api_core.exceptions import InvalidArgument
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    try:
        client.modify_ack_deadline(subscription=g.sub, ack_ids=receipts, ack_deadline_seconds=0)
    except InvalidArgument:  # an emulator may refuse ack ids of acked messages
        pass
    finally:
        client.close()


async def assert_acked(g, receipts: list[str], window: float = 3.0) -> None:
    """After the feed closed: the messages do not come back, even when made visible again.

    Quirk: the emulator may still push a message made visible again into the stream that just
    closed, hiding it until that stream's ack deadline (the feed's visibility timeout, at least
    10 s). Only a `window` past that deadline proves the acks; a short window usually does."""
    from google.api_core.exceptions import DeadlineExceeded
    from google.cloud import pubsub_v1

    make_visible_again(g, receipts)
    client = pubsub_v1.SubscriberClient()
    back = []
    try:
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            try:
                resp = await asyncio.to_thread(client.pull, subscription=g.sub, max_messages=50, timeout=1)
            except DeadlineExceeded:
                continue
            ours = [r for r in resp.received_messages if r.message.attributes.get("bucketId") == g.bucket_name]
            back += [r.message.message_id for r in ours]
            if resp.received_messages:  # leave nothing leased behind
                client.acknowledge(subscription=g.sub, ack_ids=[r.ack_id for r in resp.received_messages])
    finally:
        client.close()
    assert back == [], f"acked messages came back: {back}"


async def test_pubsub_feed_normalises_gcs_writes_overwrites_and_deletes(gcs):
    key, other = "dir/a b+c%.txt", "ü €/日本.bin"
    gcs.bucket.blob(key).upload_from_string(b"one")
    first = gcs.bucket.get_blob(key).generation
    gcs.bucket.blob(key).upload_from_string(b"two!")  # overwrite: FINALIZE + DELETE(overwrittenBy) pair
    second = gcs.bucket.get_blob(key).generation
    gcs.bucket.blob(other).upload_from_string(b"x" * 10)
    gcs.bucket.blob(key).delete()

    feed = open_feed(EventFeed(pubsub=gcs.sub, wait_time_s=2, visibility_timeout_s=10))
    try:
        msgs = await collect(feed, lambda got: len(got) >= 5, keep=gcs.ours)
        assert all(m.error is None for m in msgs), [m.error for m in msgs]
        skipped = [m for m in msgs if not m.events]
        assert len(skipped) == 1 and "overwritten by generation" in skipped[0].extra["skipped"]
        events = sorted((e for m in msgs for e in m.events if e.key == key), key=lambda e: e.sequencer)
        assert [(e.op, e.version_id) for e in events] == [("put", str(first)), ("put", str(second)),
                                                          ("delete", str(second))]
        assert all(is_newer(b.sequencer, None, a.sequencer, None) for a, b in zip(events, events[1:], strict=False))
        assert [e.size for e in events] == [3, 4, None]
        assert {e.container_id for e in events} == {f"gs://{gcs.bucket_name}"}
        [ev_other] = [e for m in msgs for e in m.events if e.key == other]
        assert (ev_other.op, ev_other.size) == ("put", 10)

        await feed.ack(msgs)
        await feed.ack(msgs)  # idempotent
    finally:
        await feed.close()  # the SDK sends acks asynchronously; closing flushes them
    await assert_acked(gcs, [m.receipt for m in msgs], window=12)  # > the 10 s stream deadline


async def test_intake_records_gcs_versions_and_dead_letters_then_acks(gcs, sqlite_url, tmp_path):
    from cloudmirror.config import validate_config
    from cloudmirror.ledger.repo import Ledger
    from cloudmirror.replication.intake import Intake
    from cloudmirror.replication.planner import Router

    cfg = validate_config({"ledger": sqlite_url, "mirrors": [{
        "name": "m", "source": f"gs://{gcs.bucket_name}", "targets": [f"file://{tmp_path}"],
        "events": [{"pubsub": gcs.sub, "wait_time_s": 1, "visibility_timeout_s": 30}]}]})
    key = "k.txt"
    gcs.bucket.blob(key).upload_from_string(b"1")
    gcs.bucket.blob(key).upload_from_string(b"22")
    gcs.bucket.blob(key).delete()
    publish(gcs, b"", eventType="OBJECT_DELETE", bucketId=gcs.bucket_name)  # no objectId
    feed = open_feed(cfg.mirrors[0].events[0])
    ledger = Ledger(sqlite_url)
    intake = Intake(feed, Router(cfg.mirrors), ledger, visibility_timeout_s=30)
    try:
        deadline = time.monotonic() + 30
        while intake.messages < 5:  # 2 finalize, the overwrite's delete half, the delete, the malformed one
            assert time.monotonic() < deadline, intake.messages
            msgs = await feed.receive()
            if msgs:
                await intake.handle(msgs)
        rows = ledger.replications_for("m", key)
        # three versions, none taken for a duplicate (the delete of a generation shares its
        # version id with the write of that generation)
        assert sorted((r["op"], r["duplicates"]) for r in rows) == [("delete", 0), ("put", 0), ("put", 0)], rows
        [dead] = [d for d in ledger.dead_letters() if gcs.bucket_name in d["body"]]
        assert "names no objectId" in dead["reason"]
    finally:
        await feed.close()
        ledger.close()


async def test_pubsub_metadata_update_is_a_newer_put_of_the_same_generation(gcs):
    blob = gcs.bucket.blob("meta.txt")
    blob.upload_from_string(b"m")
    blob.metadata = {"colour": "blue"}
    blob.patch()
    feed = open_feed(EventFeed(pubsub=gcs.sub, wait_time_s=2))
    try:
        msgs = await collect(feed, lambda got: len(got) >= 2, keep=gcs.ours)
        by_name = {m.events[0].event_name: m.events[0] for m in msgs}
        fin, upd = by_name["OBJECT_FINALIZE"], by_name["OBJECT_METADATA_UPDATE"]
        assert fin.version_id == upd.version_id and fin.etag != upd.etag
        assert is_newer(upd.sequencer, None, fin.sequencer, None)
        await feed.ack(msgs)
    finally:
        await feed.close()


async def test_pubsub_visibility_extend_and_ack_by_extended_message(gcs):
    from cloudmirror.events.pubsub import PubSubFeed

    attrs = dict(eventType="OBJECT_FINALIZE", bucketId=gcs.bucket_name, objectId="k", objectGeneration="7",
                 payloadFormat="NONE", eventTime="2026-11-24T22:03:53Z")
    msg_id = publish(gcs, b"", **attrs)
    feed = PubSubFeed(gcs.sub, wait_time_s=1, visibility_timeout_s=2)
    try:
        [m1] = await collect(feed, lambda got: len(got) >= 1, keep=gcs.ours)
        assert m1.message_id == msg_id and m1.events[0].version_id == "7"
        # not acked nor extended: released after its visibility timeout, delivered again
        [m2] = await collect(feed, lambda got: len(got) >= 1, keep=gcs.ours, timeout=20)
        assert m2.message_id == msg_id
        # extended: stays away well past the 2 s visibility timeout
        await feed.extend([m2], 30)
        assert await quiet_for(feed, 4, gcs.ours) == []
        await feed.ack([m2])
    finally:
        await feed.close()
    await assert_acked(gcs, [m2.receipt])


async def test_pubsub_malformed_messages_carry_the_reason(gcs):
    bucket = gcs.bucket_name
    publish(gcs, b"{not json", eventType="OBJECT_FINALIZE", bucketId=bucket, objectId="x", objectGeneration="1",
            payloadFormat="JSON_API_V1")
    publish(gcs, b"", eventType="OBJECT_FINALIZE", bucketId=bucket)
    publish(gcs, b"", eventType="OBJECT_EXPLODED", bucketId=bucket, objectId="y", objectGeneration="1")
    feed = open_feed(EventFeed(pubsub=gcs.sub, wait_time_s=2))
    try:
        msgs = await collect(feed, lambda got: len(got) >= 3, keep=gcs.ours)
        reasons = sorted(m.error or "" for m in msgs)
        assert all(not m.events for m in msgs)
        assert any("not JSON" in r for r in reasons), reasons
        assert any("names no objectId" in r for r in reasons), reasons
        assert any("unknown Cloud Storage eventType 'OBJECT_EXPLODED'" in r for r in reasons), reasons
        assert all(json.loads(m.body)["attributes"]["bucketId"] == bucket for m in msgs)  # dead letters say what
        await feed.ack(msgs)
    finally:
        await feed.close()


async def test_two_pubsub_feeds_in_one_process_share_a_subscription(gcs):
    for i in range(6):
        publish(gcs, b"", eventType="OBJECT_FINALIZE", bucketId=gcs.bucket_name, objectId=f"k{i}",
                objectGeneration=str(100 + i), payloadFormat="NONE")
    from cloudmirror import metrics

    streams = metrics.QUEUE_REQUESTS.labels("pubsub", "StreamingPull")
    started = streams._value.get()
    a = open_feed(EventFeed(pubsub=gcs.sub, wait_time_s=1))
    b = open_feed(EventFeed(pubsub=gcs.sub, wait_time_s=1))
    try:
        got: dict[str, FeedMessage] = {}
        # several receive loops on one feed share its single stream
        for feed, batch in zip((a, a, a, b), await asyncio.gather(a.receive(), a.receive(), a.receive(), b.receive()),
                               strict=True):
            got.update({m.events[0].key: m for m in batch if gcs.ours(m)})
            await feed.ack(batch)
        assert streams._value.get() - started == 2
        deadline = time.monotonic() + 30
        while len(got) < 6:
            assert time.monotonic() < deadline, sorted(got)
            for feed, batch in zip((a, b), await asyncio.gather(a.receive(), b.receive()), strict=True):
                mine = [m for m in batch if gcs.ours(m)]
                got.update({m.events[0].key: m for m in mine})
                await feed.ack(batch)
        assert sorted(got) == [f"k{i}" for i in range(6)]
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_pubsub_missing_subscription_is_a_feed_error(pubsub_host, monkeypatch):
    from cloudmirror.events.pubsub import FeedError, PubSubFeed

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    feed = PubSubFeed(f"projects/cloudmirror-test/subscriptions/{unique_name('nope')}", wait_time_s=1,
                      emulator_host=pubsub_host)
    try:
        with pytest.raises(FeedError, match="streaming pull stopped"):
            for _ in range(15):  # up to 15 s, as before; a receive checks the stream after its 1 s wait
                await feed.receive()
    finally:
        await feed.close()


# =============================================================================== Azure / Azurite
ACCOUNT = "devstoreaccount1"


@pytest.fixture
def az(azurite):
    """A fresh container with blobs and a fresh queue (created twice: idempotent)."""
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueClient

    from cloudmirror.local.provision import ensure_azure_queue

    queue = unique_name("q")
    url = f"az://{ACCOUNT}/{queue}?connection_string_env=CLOUDMIRROR_AZURITE_CONN_{ACCOUNT.upper()}"
    ensure_azure_queue(url)
    ensure_azure_queue(url)
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string(ACCOUNT))
    container = blobs.create_container(unique_name("ctr"))
    qc = QueueClient.from_connection_string(azurite.connection_string(ACCOUNT), queue)

    class A:
        pass

    a = A()
    a.url, a.container, a.queue = url, container, qc
    a.count = lambda: qc.get_queue_properties().approximate_message_count
    yield a
    qc.close()
    blobs.close()


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
async def test_azure_queue_feed_reads_event_grid_blob_events(az, schema):
    from cloudmirror.local.eventgrid_fake import FakeEventGridPublisher

    pub = FakeEventGridPublisher(ACCOUNT, az.queue.send_message, schema=schema)
    keys = ["plain.txt", "dir/with space+plus%.txt", "ü €/日本.bin"]
    props = {}
    for i, k in enumerate(keys):
        az.container.upload_blob(k, b"x" * (i + 1), overwrite=True)
        props[k] = az.container.get_blob_client(k).get_blob_properties()
    pub.publish(pub.created_from_properties(props[keys[0]]))
    pub.publish([pub.created_from_properties(props[keys[1]]), pub.created_from_properties(props[keys[2]])])  # array
    az.container.delete_blob(keys[0])
    plain = FakeEventGridPublisher(ACCOUNT, az.queue.send_message, schema=schema, base64_encode=False)
    plain.publish(plain.deleted_event(az.container.container_name, keys[0]))
    tier = dict(pub.sent[0])
    tier["eventType" if schema == "eventgrid" else "type"] = "Microsoft.Storage.BlobTierChanged"
    pub.publish(tier)  # nothing to copy

    feed = open_feed(EventFeed(azure_queue=az.url, wait_time_s=2, visibility_timeout_s=30))
    try:
        msgs = await collect(feed, lambda got: len(got) >= 4)
        assert all(m.error is None for m in msgs), [m.error for m in msgs]
        assert sorted(m.extra["encoding"] for m in msgs) == ["base64", "base64", "base64", "text"]
        assert [m for m in msgs if not m.events][0].extra["skipped"]
        events = [e for m in msgs for e in m.events]
        puts = {e.key: e for e in events if e.op == "put"}
        assert sorted(puts) == sorted(keys)
        for k in keys:
            assert puts[k].etag == props[k].etag.strip('"') and puts[k].size == props[k].size
            assert puts[k].container_id == f"az://{ACCOUNT}/{az.container.container_name}"
        [delete] = [e for e in events if e.op == "delete"]
        assert delete.key == keys[0] and is_newer(delete.sequencer, None, puts[keys[0]].sequencer, None)

        assert az.count() == 4  # received (invisible), not yet deleted
        await feed.ack(msgs)
        assert az.count() == 0
        await feed.ack(msgs)  # idempotent: already gone
    finally:
        await feed.close()


async def test_azure_extend_renews_the_pop_receipt_and_keeps_the_message_hidden(az):
    from cloudmirror.events.azure_queue import AzureQueueFeed
    from cloudmirror.local.eventgrid_fake import FakeEventGridPublisher

    pub = FakeEventGridPublisher(ACCOUNT, az.queue.send_message)
    az.container.upload_blob("k", b"abc")
    pub.publish(pub.created_from_properties(az.container.get_blob_client("k").get_blob_properties()))
    feed = AzureQueueFeed(az.url, wait_time_s=1, visibility_timeout_s=1)
    try:
        [m] = await collect(feed, lambda got: len(got) >= 1)
        stale = FeedMessage(m.message_id, m.body, m.receipt)
        await feed.extend([m], 30)
        assert m.receipt != stale.receipt
        assert await quiet_for(feed, 3) == []  # would be back after 1 s without the extension
        await feed.ack([stale])  # the old pop receipt no longer deletes it (tolerated)
        assert az.count() == 1
        await feed.ack([m])
        assert az.count() == 0
    finally:
        await feed.close()


async def test_azure_unacked_message_returns_and_poison_messages_are_dead_lettered(az):
    from cloudmirror.events.azure_queue import AzureQueueFeed
    from cloudmirror.local.eventgrid_fake import FakeEventGridPublisher

    az.queue.send_message("this is not an event")
    pub = FakeEventGridPublisher(ACCOUNT, az.queue.send_message)
    pub.publish(pub.deleted_event(az.container.container_name, "gone.txt"))
    feed = AzureQueueFeed(az.url, wait_time_s=1, visibility_timeout_s=1, max_dequeue_count=1)
    try:
        first = await collect(feed, lambda got: len(got) >= 2)
        [bad] = [m for m in first if m.error]
        [good] = [m for m in first if not m.error]
        assert "neither JSON nor base64" in bad.error and "dequeued 1 time" in bad.error
        assert good.events[0].op == "delete" and good.extra["dequeue_count"] == 1
        await feed.ack([bad])
        # the good one was not acked: back after its visibility timeout, now over the limit
        [again] = await collect(feed, lambda got: len(got) >= 1, timeout=15)
        assert again.message_id == good.message_id and again.extra["dequeue_count"] == 2
        assert "poison message" in again.error and again.events == []
        await feed.ack([again])
        assert az.count() == 0
    finally:
        await feed.close()


async def test_azure_feed_errors_name_the_queue(azurite):
    from cloudmirror.events.azure_queue import AzureQueueFeed, FeedError

    feed = AzureQueueFeed(f"az://{ACCOUNT}/{unique_name('missing')}?connection_string_env=CLOUDMIRROR_AZURITE_CONN_{ACCOUNT.upper()}",
                          wait_time_s=0)
    try:
        with pytest.raises(FeedError, match="GetMessages: QueueNotFound"):
            await feed.receive()
    finally:
        await feed.close()


async def test_azure_queue_by_endpoint_and_account_key(azurite, monkeypatch):
    from cloudmirror.events.azure_queue import AzureQueueFeed
    from cloudmirror.local.azurite import SECOND_ACCOUNT
    from cloudmirror.local.eventgrid_fake import FakeEventGridPublisher
    from cloudmirror.local.provision import ensure_azure_queue

    monkeypatch.setenv("AZURE_STORAGE_KEY", azurite.accounts[SECOND_ACCOUNT])
    port = azurite.queue_endpoint(SECOND_ACCOUNT).rsplit(":", 1)[1].split("/")[0]
    url = f"az://{SECOND_ACCOUNT}/{unique_name('q')}?endpoint=http://127.0.0.1:{port}&credential=key"
    ensure_azure_queue(url)
    feed = AzureQueueFeed(url, wait_time_s=2)
    try:
        sent = []
        pub = FakeEventGridPublisher(SECOND_ACCOUNT, sent.append, schema="cloudevents")
        pub.publish(pub.deleted_event("ctr", "x/y z"))
        from azure.storage.queue.aio import QueueClient

        async with QueueClient.from_connection_string(azurite.connection_string(SECOND_ACCOUNT),
                                                      url.split("/")[3].split("?")[0]) as qc:
            await qc.send_message(sent[0])
        [m] = await collect(feed, lambda got: len(got) >= 1)
        assert (m.events[0].container_id, m.events[0].key) == (f"az://{SECOND_ACCOUNT}/ctr", "x/y z")
        await feed.ack([m])
    finally:
        await feed.close()
