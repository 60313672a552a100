"""Provisioning helpers for the local cloud, the demo, the benchmarks and the tests: create
(and delete) buckets, containers and queues, and wire a bucket's notifications to a queue.

All are blocking (sync SDK clients) and idempotent. Each provider's SDK is imported only
when its helper is called. Production code never imports this module: cloudmirror
replicates into buckets that already exist.
"""

from __future__ import annotations

import json
from typing import Any

from cloudmirror import metrics
from cloudmirror.location import Location


# ---------------------------------------------------------------- Amazon S3 / SQS
def create_s3_bucket(endpoint: str | None, region: str, bucket: str, versioned: bool = False) -> None:
    """Create a bucket (in `region`), optionally with versioning. Idempotent: a bucket we
    already own is fine. Raises botocore ClientError."""
    import boto3

    from cloudmirror.stores.s3.common import client_config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region, config=client_config(endpoint))
    kw: dict[str, Any] = {}
    if region != "us-east-1":
        kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(Bucket=bucket, **kw)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def _aws_client(service: str, endpoint: str | None, region: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=region)


def create_sqs_queue(endpoint: str | None, region: str, name: str, *,
                     visibility_timeout_s: int = 60) -> tuple[str, str]:
    """Create (or find) a queue that S3 may send to; returns (queue_url, queue_arn).
    Idempotent. Raises botocore ClientError."""
    sqs = _aws_client("sqs", endpoint, region)
    try:
        url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout_s)})["QueueUrl"]
    except sqs.exceptions.QueueNameExists:  # exists with other attributes: use it as it is
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": arn}]}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    return url, arn


def notify_bucket_to_queue(endpoint: str | None, region: str, bucket: str, queue_arn: str) -> None:
    """Send the bucket's ObjectCreated/ObjectRemoved events to the queue (replaces its
    config). Idempotent. Raises botocore ClientError."""
    s3 = _aws_client("s3", endpoint, region)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})


# ---------------------------------------------------------------- Google Cloud Storage
def create_gcs_bucket(location: Location, versioned: bool = False) -> None:
    """Create the location's bucket (object versioning on when `versioned`). Idempotent: an
    existing bucket gets the requested versioning. Raises StoreError."""
    from google.api_core import exceptions as gx

    from cloudmirror.stores.gcs.common import TIMEOUT, make_client, translate

    with translate(location.bucket):
        client, http, _ = make_client(location)
        try:
            bucket = client.bucket(location.bucket)
            bucket.versioning_enabled = versioned
            try:
                client.create_bucket(bucket, timeout=TIMEOUT)
            except gx.Conflict:
                bucket = client.get_bucket(location.bucket, timeout=TIMEOUT)
                if bool(bucket.versioning_enabled) != versioned:
                    bucket.versioning_enabled = versioned
                    bucket.patch(timeout=TIMEOUT)
        finally:
            http.close()


def delete_gcs_bucket(location: Location) -> None:
    """Delete the location's bucket with every object generation in it. Idempotent (a
    missing bucket is fine). Raises StoreError."""
    from google.api_core import exceptions as gx

    from cloudmirror.stores.gcs.common import TIMEOUT, make_client, translate

    with translate(location.bucket):
        client, http, _ = make_client(location)
        try:
            try:
                for blob in client.list_blobs(location.bucket, versions="true", timeout=TIMEOUT):
                    try:
                        client.bucket(location.bucket).blob(blob.name, generation=blob.generation).delete(
                            timeout=TIMEOUT)
                    except gx.NotFound:
                        pass
                client.bucket(location.bucket).delete(timeout=TIMEOUT)
            except gx.NotFound:
                pass
        finally:
            http.close()


# ---------------------------------------------------------------- Azure Blob Storage / Storage Queues
def _blob_service(location: Location) -> Any:
    from azure.storage.blob import BlobServiceClient

    from cloudmirror.stores.azure.auth import client_kwargs, make_credential, resolve_auth

    auth = resolve_auth(location)
    return BlobServiceClient(auth.account_url, credential=make_credential(auth, aio=False),
                             **client_kwargs(aio=False))


def create_azure_container(location: Location) -> None:
    """Create the location's container. Idempotent. Raises StoreError."""
    from azure.core.exceptions import ResourceExistsError

    from cloudmirror.stores.azure.errors import translate

    with translate(location.account, location.bucket), _blob_service(location) as client:
        try:
            client.create_container(location.bucket)
        except ResourceExistsError:
            pass


def delete_azure_container(location: Location) -> None:
    """Delete the location's container and everything in it. Idempotent. Raises StoreError."""
    from azure.core.exceptions import ResourceNotFoundError

    from cloudmirror.stores.azure.errors import translate

    with translate(location.account, location.bucket), _blob_service(location) as client:
        try:
            client.delete_container(location.bucket)
        except ResourceNotFoundError:
            pass


def ensure_azure_queue(url: str) -> str:
    """Create the az:// queue unless it exists. Idempotent. Returns the queue's URL (https).
    Raises ValueError for a bad queue URL or missing credentials, azure.core errors."""
    from azure.core.exceptions import ResourceExistsError

    from cloudmirror.events.azure_queue import open_queue_client

    client, cred = open_queue_client(url, aio=False)
    try:
        metrics.QUEUE_REQUESTS.labels("azure_queue", "CreateQueue").inc()
        client.create_queue()
    except ResourceExistsError:
        pass
    finally:
        client.close()
        if cred is not None:
            cred.close()
    return client.url
