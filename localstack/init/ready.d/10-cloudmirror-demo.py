"""LocalStack READY hook: the cloudmirror demo setup.

Creates, idempotently:
  - s3://cloudmirror-demo-use1 (us-east-1, versioning enabled)  the source
  - s3://cloudmirror-demo-euw1 (eu-west-1)                       the target
  - SQS queue cloudmirror-demo-events (us-east-1), whose policy lets S3 (that bucket) send
  - the source bucket's notification: s3:ObjectCreated:* and s3:ObjectRemoved:* -> the queue

LocalStack runs it in its own process (exec, not as __main__) once the gateway is up, both in
Docker (mounted at /etc/localstack/init/ready.d) and under localstack/launch. It also runs on its
own against any endpoint: AWS_ENDPOINT_URL=http://127.0.0.1:4566 python 10-cloudmirror-demo.py
"""

import json
import os

import boto3
from botocore.exceptions import ClientError

SOURCE_BUCKET = "cloudmirror-demo-use1"
SOURCE_REGION = "us-east-1"
TARGET_BUCKET = "cloudmirror-demo-euw1"
TARGET_REGION = "eu-west-1"
QUEUE_NAME = "cloudmirror-demo-events"


def _endpoint():
    if os.environ.get("LOCALSTACK_INFRA_PROCESS") == "1":
        # inside LocalStack: its own gateway (127.0.0.1 works in Docker and in host mode)
        from localstack import config

        return config.internal_service_url(host="127.0.0.1")
    return os.environ.get("AWS_ENDPOINT_URL") or "http://127.0.0.1:4566"


def _client(service, region):
    return boto3.client(service, region_name=region, endpoint_url=_endpoint(),
                        aws_access_key_id="test", aws_secret_access_key="test")


def _create_bucket(s3, bucket, region):
    kwargs = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as e:
        if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise


def setup_demo():
    s3 = _client("s3", SOURCE_REGION)
    sqs = _client("sqs", SOURCE_REGION)

    _create_bucket(s3, SOURCE_BUCKET, SOURCE_REGION)
    s3.put_bucket_versioning(Bucket=SOURCE_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    _create_bucket(_client("s3", TARGET_REGION), TARGET_BUCKET, TARGET_REGION)

    queue_url = sqs.create_queue(QueueName=QUEUE_NAME)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AllowS3SendFromSourceBucket",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{SOURCE_BUCKET}"}},
        }],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})

    s3.put_bucket_notification_configuration(
        Bucket=SOURCE_BUCKET,
        NotificationConfiguration={"QueueConfigurations": [{
            "Id": "cloudmirror-demo",
            "QueueArn": queue_arn,
            "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
        }]},
    )
    print(f"cloudmirror demo: s3://{SOURCE_BUCKET} ({SOURCE_REGION}, versioned) -> {queue_url}; "
          f"target s3://{TARGET_BUCKET} ({TARGET_REGION})", flush=True)


setup_demo()  # no __main__ guard: LocalStack exec()s this file with empty globals
