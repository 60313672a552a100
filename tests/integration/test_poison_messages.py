"""Poison messages on a real (moto) SQS queue (issue 12): each bad message is dead-lettered
on its own with the reason, the good ones of the same batch are replicated, nothing returns
after the visibility timeout, and a message that keeps coming back leaves after
max_receives -- on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from cloudmirror.config import validate_config
from cloudmirror.events.sqs import SqsFeed
from cloudmirror.ledger.repo import Ledger
from cloudmirror.replication.intake import Intake
from cloudmirror.replication.planner import Router
from tests.integration.harness import Cloud, config, converged, eventually, mirror, running

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def cloud(moto_endpoint):
    return Cloud(moto_endpoint)


def record(bucket: str, key="k", name="ObjectCreated:Put", **obj) -> dict:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2026-11-24T10:00:00.000Z",
            "eventName": name, "s3": {"bucket": {"name": bucket},
                                      "object": {"key": key, "size": 3, "eTag": "abc", "sequencer": "0A", **obj}}}


def bad_bodies(bucket: str) -> dict[str, str]:
    """One message of each bad kind (S3 direct, SNS-wrapped, EventBridge), by kind."""
    def s3(**kw):
        return json.dumps({"Records": [record(bucket, **kw)]})

    eb = {"version": "0", "source": "aws.s3", "detail-type": "Object Created", "time": "2026-11-24T10:00:00Z",
          "detail": {"bucket": {"name": bucket}, "object": {"key": 12, "size": 5, "etag": "e"}}}
    return {
        "numeric key": s3(key=12345),
        "numeric eventName": s3(name=42),
        "numeric eTag": s3(eTag=7),
        "object sequencer": s3(sequencer={"hex": "0A"}),
        "size 1e30": s3(size=1e30),
        "NUL in key": s3(key="nul%00key"),
        "2.8 KB key": s3(key="k" * 2800),
        "SNS-wrapped numeric key": json.dumps({"Type": "Notification", "Message": s3(key=5)}),
        "EventBridge numeric key": json.dumps(eb),
        "not JSON": "{oops",
    }


REASONS = ["key is not a string", "eventName is not a string", "eTag is not a string", "sequencer is not a string",
           "size is not a byte count", "NUL character", "2800 bytes", "key is not a string", "key is not a string",
           "not JSON"]


def queue_counts(cloud: Cloud, q: str) -> tuple[int, int]:
    a = cloud.sqs().get_queue_attributes(QueueUrl=q, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def fill(cloud: Cloud, src: str, q: str) -> list[str]:
    """9 real writes (moto notifies the queue) and one message of each bad kind."""
    keys = [f"good-{i}.txt" for i in range(9)]
    for k in keys:
        cloud.s3().put_object(Bucket=src, Key=k, Body=k.encode())
    for body in bad_bodies(src).values():
        cloud.sqs().send_message(QueueUrl=q, MessageBody=body)
    return keys


async def receive_all(feed: SqsFeed, n: int) -> list:
    """Every message on the queue, received into one list (one batch to handle)."""
    got: dict[str, object] = {}

    async def more():
        for m in await feed.receive():
            got[m.message_id] = m
        return len(got) >= n
    await eventually(more, message=f"{n} messages received")
    return list(got.values())


async def test_one_batch_of_good_and_poison_is_recorded_and_acked(cloud, ledger_url):
    """The whole mix in ONE handle(): the 9 good versions recorded, each bad message a dead
    letter with its reason, the queue empty."""
    src = cloud.bucket()
    q = cloud.queue_for(src)
    cfg = validate_config({"mirrors": [mirror("m", cloud, src, [cloud.bucket("eu-west-1")], q)]})
    keys = fill(cloud, src, q)
    ledger = Ledger(ledger_url)
    feed = SqsFeed(q, wait_time_s=1, visibility_timeout_s=30, region="us-east-1")
    intake = Intake(feed, Router(cfg.mirrors), ledger, visibility_timeout_s=30)
    try:
        msgs = await receive_all(feed, len(keys) + len(REASONS) + 1)  # (+ moto's s3:TestEvent)
        await intake.handle(msgs)
        assert _recorded(ledger, keys) == keys
        reasons = sorted(d["reason"] for d in ledger.dead_letters())
        assert len(reasons) == len(REASONS)
        for words in REASONS:
            assert sum(words in r for r in reasons) >= 1, (words, reasons)
        assert queue_counts(cloud, q) == (0, 0)  # acked: nothing comes back after the timeout
    finally:
        await feed.close()
        ledger.close()


def _recorded(ledger: Ledger, keys: list[str]) -> list[str]:
    """The keys that have a version in the ledger, each once per version."""
    return sorted(k for k in keys for r in ledger.replications_for("m", k))


async def test_the_service_replicates_the_good_events_of_a_poisoned_queue(cloud, ledger_url):
    """9 good + one of each bad kind on the queue before the service starts: the 9 replicate
    promptly, the bad ones are dead letters, the queue is empty."""
    src, dst = cloud.bucket(), cloud.bucket("eu-west-1")
    q = cloud.queue_for(src)
    fill(cloud, src, q)
    m = mirror("m", cloud, src, [dst], q)
    m["events"][0]["visibility_timeout_s"] = 5  # a message that was not acked would be back within the test
    async with running(config(ledger_url, [m])) as r:
        await eventually(converged(cloud, src, dst), timeout=45)
        await eventually(lambda: len(r.ledger.dead_letters()) == len(REASONS), message="every bad message dead")
        await eventually(lambda: queue_counts(cloud, q) == (0, 0), message="the queue is empty")
    assert len(r.ledger.dead_letters()) == len(REASONS)  # none twice: nothing came back


class FailingLedger(Ledger):
    """A real ledger that fails to record any batch holding the key `boom` (a value the
    planner's checks let through but the database refuses)."""

    def record(self, items, dead=(), **kw):
        if any(i.key == "boom" for i in items):
            raise ValueError("invalid byte sequence for encoding UTF8 (a refused value)")
        return super().record(items, dead, **kw)


async def test_a_message_the_ledger_refuses_is_isolated_and_the_rest_acked(cloud, ledger_url):
    src = cloud.bucket()
    q = cloud.queue_for(src, notify=False)
    cfg = validate_config({"mirrors": [mirror("m", cloud, src, [cloud.bucket("eu-west-1")], q)]})
    for k in ("a", "boom", "b", "c"):
        cloud.sqs().send_message(QueueUrl=q, MessageBody=json.dumps({"Records": [record(src, key=k)]}))
    ledger = FailingLedger(ledger_url)
    feed = SqsFeed(q, wait_time_s=1, visibility_timeout_s=30, region="us-east-1")
    intake = Intake(feed, Router(cfg.mirrors), ledger, visibility_timeout_s=30)
    try:
        await intake.handle(await receive_all(feed, 4))
        assert _recorded(ledger, ["a", "b", "c", "boom"]) == ["a", "b", "c"]
        [d] = ledger.dead_letters()
        assert d["reason"].startswith("received 1 times; could not be recorded: ValueError: invalid byte sequence")
        assert queue_counts(cloud, q) == (0, 0)
    finally:
        await feed.close()
        ledger.close()


async def test_a_message_that_keeps_coming_back_leaves_after_max_receives(cloud, sqlite_url):
    """A message whose handling never completes (the process dies while recording it) is
    received again and again; the receive after max_receives dead-letters it."""
    src = cloud.bucket()
    q = cloud.queue_for(src, notify=False)
    cfg = validate_config({"mirrors": [mirror("m", cloud, src, [cloud.bucket("eu-west-1")], q)]})
    cloud.sqs().send_message(QueueUrl=q, MessageBody=json.dumps({"Records": [record(src, key="crash")]}))
    ledger = Ledger(sqlite_url)
    feed = SqsFeed(q, wait_time_s=1, visibility_timeout_s=30, region="us-east-1", max_receives=3)
    intake = Intake(feed, Router(cfg.mirrors), ledger)
    try:
        for n in (1, 2, 3):  # handed out, never acked (a crash), visible again at once
            [m] = await eventually(feed.receive, message=f"receive {n}")
            assert m.receive_count == n
            await feed.extend([m], 0)
        [m] = await eventually(feed.receive, message="receive 4")
        await intake.handle([m])
        assert [d["reason"] for d in ledger.dead_letters()] == ["received 4 times (max_receives 3)"]
        assert ledger.replications_for("m", "crash") == [] and queue_counts(cloud, q) == (0, 0)
    finally:
        await feed.close()
        ledger.close()
