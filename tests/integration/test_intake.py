"""Intake against real moto SQS/SNS/EventBridge: envelopes, visibility, ack-after-commit."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from cloudmirror.config import validate_config
from cloudmirror.events.sqs import SqsFeed
from cloudmirror.ledger.repo import Ledger
from cloudmirror.replication.intake import Intake
from cloudmirror.replication.planner import Router
from tests.integration.harness import Cloud, config, converged, eventually, mirror, name, running

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cloud(moto_endpoint):
    return Cloud(moto_endpoint)


def queue_counts(cloud: Cloud, q: str) -> tuple[int, int]:
    a = cloud.sqs().get_queue_attributes(QueueUrl=q, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


@pytest.mark.parametrize("raw", [False, True], ids=["sns-enveloped", "sns-raw"])
async def test_s3_via_sns_to_sqs(cloud, sqlite_url, raw):
    src, dst = cloud.bucket(), cloud.bucket("eu-west-1")
    sns = __import__("boto3").client("sns", endpoint_url=cloud.endpoint, region_name="us-east-1")
    topic = sns.create_topic(Name=name("t"))["TopicArn"]
    q = cloud.queue_for(src, notify=False)
    q_arn = cloud.sqs().get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=q_arn,
                  Attributes={"RawMessageDelivery": "true"} if raw else {})
    cloud.s3().put_bucket_notification_configuration(Bucket=src, NotificationConfiguration={
        "TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})
    async with running(config(sqlite_url, [mirror("m", cloud, src, [dst], q)])) as r:
        cloud.s3().put_object(Bucket=src, Key="via sns+1.txt", Body=b"hello")
        await eventually(converged(cloud, src, dst))
        assert r.ledger.dead_letters() == []


async def test_s3_via_eventbridge_to_sqs(cloud, sqlite_url):
    src, dst = cloud.bucket(), cloud.bucket("eu-west-1")
    events = __import__("boto3").client("events", endpoint_url=cloud.endpoint, region_name="us-east-1")
    q = cloud.queue_for(src, notify=False)
    q_arn = cloud.sqs().get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = name("r")
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": ["aws.s3"], "detail": {"bucket": {"name": [src]}}}))
    events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": q_arn}])
    cloud.s3().put_bucket_notification_configuration(Bucket=src, NotificationConfiguration={
        "EventBridgeConfiguration": {}})
    m = mirror("m", cloud, src, [dst], q)
    m["events"][0]["eventbridge_keys"] = "plain"  # moto does not encode EventBridge keys
    async with running(config(sqlite_url, [m])) as r:
        cloud.s3().put_object(Bucket=src, Key="via eventbridge+1 ü.txt", Body=b"hello")
        await eventually(converged(cloud, src, dst))
        assert r.ledger.dead_letters() == []


class SlowLedger(Ledger):
    """A real ledger whose commit takes `delay` seconds (a slow or busy database)."""

    delay = 0.0
    fail = False

    def record(self, *a, **kw):
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("database unavailable")
        return super().record(*a, **kw)


async def test_visibility_is_extended_while_a_slow_commit_runs(cloud, sqlite_url):
    src = cloud.bucket()
    q = cloud.queue_for(src)
    cfg = validate_config({"mirrors": [mirror("m", cloud, src, [cloud.bucket("eu-west-1")], q)]})
    ledger = SlowLedger(sqlite_url)
    # 3 s, extended every 1.5 s: the margin holds on a loaded machine (with 2 s, one extension
    # that moto answered late let the messages reappear)
    ledger.delay = 6.0
    feed = SqsFeed(q, wait_time_s=1, visibility_timeout_s=3, region="us-east-1")
    intake = Intake(feed, Router(cfg.mirrors), ledger, visibility_timeout_s=3)
    cloud.s3().put_object(Bucket=src, Key="k", Body=b"x")
    try:
        msgs = await eventually(feed.receive, message="the event arrived")  # with moto's s3:TestEvent
        handling = asyncio.create_task(intake.handle(msgs))
        # the commit takes twice the visibility timeout: the messages must stay hidden throughout
        while not handling.done():
            assert queue_counts(cloud, q) == (0, len(msgs))
            await asyncio.sleep(0.1)
        await handling
        assert queue_counts(cloud, q) == (0, 0)  # acked after the commit
        assert ledger.count() == 1
    finally:
        await feed.close()
        ledger.close()


async def test_a_failed_commit_does_not_ack(cloud, sqlite_url):
    src = cloud.bucket()
    q = cloud.queue_for(src)
    cfg = validate_config({"mirrors": [mirror("m", cloud, src, [cloud.bucket("eu-west-1")], q)]})
    ledger = SlowLedger(sqlite_url)
    ledger.fail = True
    feed = SqsFeed(q, wait_time_s=1, visibility_timeout_s=5, region="us-east-1")
    intake = Intake(feed, Router(cfg.mirrors), ledger)
    cloud.s3().put_object(Bucket=src, Key="k", Body=b"x")
    try:
        msgs = await eventually(feed.receive, message="the event arrived")
        with pytest.raises(RuntimeError, match="database unavailable"):
            await intake.handle(msgs)
        assert queue_counts(cloud, q) == (0, len(msgs))  # still on the queue, invisible until the timeout
        ledger.fail = False
        await feed.extend(msgs, 0)  # visible again now instead of after the timeout
        again = await eventually(feed.receive, message="the messages came back")
        await intake.handle(again)
        assert ledger.count() == 1 and queue_counts(cloud, q) == (0, 0)
    finally:
        await feed.close()
        ledger.close()
