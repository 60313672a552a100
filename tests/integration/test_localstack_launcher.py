"""LocalStack host-mode launcher: the demo setup exists and S3 -> SQS events are AWS-faithful.

The session's LocalStack (tests/conftest.py `localstack`: start_localstack with the init hooks,
shared by every LocalStack test); its teardown checks that it stops on SIGTERM and frees its port.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from urllib.parse import unquote_plus

import pytest

from cloudmirror.local.localstack import (
    DEMO_QUEUE,
    DEMO_SOURCE_BUCKET,
    DEMO_SOURCE_REGION,
    DEMO_TARGET_BUCKET,
    DEMO_TARGET_REGION,
    health,
)

pytestmark = pytest.mark.localstack

EVENT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def aws(localstack):
    import boto3

    def client(service, region=DEMO_SOURCE_REGION):
        return boto3.client(service, region_name=region, endpoint_url=localstack.endpoint)

    return client


@pytest.fixture(scope="module")
def queue_url(aws):
    return aws("sqs").get_queue_url(QueueName=DEMO_QUEUE)["QueueUrl"]


def records_for(sqs, queue_url: str, key: str, *, want: int, timeout: float = 30.0, quiet: float = 2.0) -> list[dict]:
    """Drain the queue until `want` records for `key` arrived, then for `quiet` more seconds (to catch extras).

    Every message read is deleted; records of other keys (and s3:TestEvent) are dropped.
    """
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for msg in resp.get("Messages", []):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
            body = json.loads(msg["Body"])
            for rec in body.get("Records", []):
                if unquote_plus(rec["s3"]["object"]["key"]) == key:
                    found.append(rec)
        if len(found) >= want and quiet_until is None:
            quiet_until = time.monotonic() + quiet
    return found


def test_services_up(localstack):
    states = health(localstack.endpoint)
    for service in ("s3", "sqs", "sns", "events", "kms"):
        assert states.get(service) in ("available", "running"), states


def test_demo_setup_exists(aws, queue_url):
    s3 = aws("s3")
    assert s3.get_bucket_versioning(Bucket=DEMO_SOURCE_BUCKET)["Status"] == "Enabled"
    assert s3.get_bucket_location(Bucket=DEMO_SOURCE_BUCKET)["LocationConstraint"] in (None, "us-east-1")
    assert s3.get_bucket_location(Bucket=DEMO_TARGET_BUCKET)["LocationConstraint"] == DEMO_TARGET_REGION

    sqs = aws("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn", "Policy"])["Attributes"]
    assert attrs["QueueArn"] == f"arn:aws:sqs:{DEMO_SOURCE_REGION}:000000000000:{DEMO_QUEUE}"
    statement = json.loads(attrs["Policy"])["Statement"][0]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"

    conf = s3.get_bucket_notification_configuration(Bucket=DEMO_SOURCE_BUCKET)["QueueConfigurations"]
    assert len(conf) == 1 and conf[0]["QueueArn"] == attrs["QueueArn"]
    assert sorted(conf[0]["Events"]) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


def test_s3_data_stays_in_the_run_dir(aws, localstack):
    # host_runtime.py moves S3 storage out of the shared /tmp/localstack-s3-storage
    assert (localstack.data_dir / "s3" / DEMO_SOURCE_BUCKET).is_dir()


def test_put_event_has_version_and_sequencer(aws, queue_url):
    key = f"put/{uuid.uuid4().hex[:8]} dir/ü+x.txt"
    put = aws("s3").put_object(Bucket=DEMO_SOURCE_BUCKET, Key=key, Body=b"hello")
    [rec] = records_for(aws("sqs"), queue_url, key, want=1)
    obj = rec["s3"]["object"]
    assert rec["eventName"] == "ObjectCreated:Put"
    assert rec["eventSource"] == "aws:s3" and rec["awsRegion"] == DEMO_SOURCE_REGION
    assert rec["s3"]["bucket"]["name"] == DEMO_SOURCE_BUCKET
    assert obj["versionId"] == put["VersionId"]
    assert re.fullmatch(r"[0-9A-F]+", obj["sequencer"])
    assert obj["size"] == 5 and obj["eTag"] == put["ETag"].strip('"')
    assert EVENT_TIME.match(rec["eventTime"]), rec["eventTime"]
    # keys are URL-encoded: LocalStack writes a space as %20 and '+' as %2B (AWS writes '+' for a space)
    assert " " not in obj["key"] and "+" not in obj["key"]


def test_delete_in_versioned_bucket_creates_delete_marker_event(aws, queue_url):
    key = f"del/{uuid.uuid4().hex[:8]}.txt"
    s3 = aws("s3")
    s3.put_object(Bucket=DEMO_SOURCE_BUCKET, Key=key, Body=b"x")
    deleted = s3.delete_object(Bucket=DEMO_SOURCE_BUCKET, Key=key)
    assert deleted["DeleteMarker"] is True
    recs = records_for(aws("sqs"), queue_url, key, want=2)
    assert [r["eventName"] for r in recs] == ["ObjectCreated:Put", "ObjectRemoved:DeleteMarkerCreated"]
    assert recs[1]["s3"]["object"]["versionId"] == deleted["VersionId"]
    assert recs[1]["s3"]["object"]["sequencer"]


def test_multipart_upload_gives_one_complete_event(aws, queue_url):
    key = f"mpu/{uuid.uuid4().hex[:8]}.bin"
    s3 = aws("s3")
    upload = s3.create_multipart_upload(Bucket=DEMO_SOURCE_BUCKET, Key=key)
    parts = []
    for number, body in ((1, b"a" * (5 * 1024 * 1024)), (2, b"b" * 1024)):
        part = s3.upload_part(Bucket=DEMO_SOURCE_BUCKET, Key=key, UploadId=upload["UploadId"],
                              PartNumber=number, Body=body)
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    done = s3.complete_multipart_upload(Bucket=DEMO_SOURCE_BUCKET, Key=key, UploadId=upload["UploadId"],
                                        MultipartUpload={"Parts": parts})
    recs = records_for(aws("sqs"), queue_url, key, want=1)
    assert [r["eventName"] for r in recs] == ["ObjectCreated:CompleteMultipartUpload"]
    assert recs[0]["s3"]["object"]["versionId"] == done["VersionId"]
    assert recs[0]["s3"]["object"]["size"] == 5 * 1024 * 1024 + 1024
