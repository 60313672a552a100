"""End-to-end harness: fresh buckets + queue per test, cloudmirror running in-process,
convergence checked by polling with a deadline (never by sleeping)."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import boto3
from botocore.exceptions import ClientError

from cloudmirror.config import Config, validate_config
from cloudmirror.ledger.repo import Ledger
from cloudmirror.local.provision import create_sqs_queue, notify_bucket_to_queue
from cloudmirror.services import runtime
from cloudmirror.services.runtime import Service
from cloudmirror.stores.base import REPLICA_MARKER, SOURCE_VERSION_KEY

FAST_WORKERS = {"poll_interval": 0.05, "lease": 10, "retry_base_delay": 0.05, "retry_max_delay": 0.2,
                "max_attempts": 3, "multipart_threshold": 5 * 1024 * 1024, "part_size": 5 * 1024 * 1024,
                "drain_timeout": 10}


def name(prefix="cm") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Cloud:
    """One S3-compatible endpoint (moto or LocalStack)."""

    endpoint: str
    kind: str = "moto"

    def s3(self, region="us-east-1"):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=region)

    def sqs(self, region="us-east-1"):
        return boto3.client("sqs", endpoint_url=self.endpoint, region_name=region)

    def bucket(self, region="us-east-1", versioned=False) -> str:
        b = name()
        kw = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        self.s3(region).create_bucket(Bucket=b, **kw)
        if versioned:
            self.s3(region).put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        return b

    def url(self, bucket: str, region="us-east-1") -> str:
        return f"s3://{bucket}?region={region}&endpoint={self.endpoint}"

    def queue_for(self, bucket: str, region="us-east-1", notify=True) -> str:
        url, arn = create_sqs_queue(self.endpoint, region, name("q"))
        if notify:
            notify_bucket_to_queue(self.endpoint, region, bucket, arn)
        return url


def mirror(name_: str, cloud: Cloud, source: str, targets: list[str], queue: str | None, *, src_region="us-east-1",
           tgt_region="eu-west-1", **extra) -> dict:
    m = {"name": name_, "source": cloud.url(source, src_region), "targets": [cloud.url(t, tgt_region) for t in targets],
         "events": [{"sqs": queue, "wait_time_s": 1, "region": src_region}] if queue else []}
    m.update(extra)
    return m


def config(ledger_url: str, mirrors: list[dict], **workers) -> Config:
    return validate_config({"ledger": ledger_url, "mirrors": mirrors, "workers": {**FAST_WORKERS, **workers}})


@dataclass
class Running:
    service: Service
    task: asyncio.Task
    ledger: Ledger = field(init=False)

    def __post_init__(self):
        self.ledger = self.service.ledger


# How often the tests' services look for changed mirrors in the ledger (the product's
# runtime.CONTROL_POLL_S is 1 s): a pause, failover or API change is followed at once.
CONTROL_POLL_S = 0.1


@asynccontextmanager
async def running(cfg: Config, **roles):
    """Run cloudmirror (intake + workers) in this event loop for the duration of the block."""
    saved, runtime.CONTROL_POLL_S = runtime.CONTROL_POLL_S, CONTROL_POLL_S
    svc = Service(cfg)
    task = asyncio.create_task(svc.run(**roles))
    try:
        yield Running(svc, task)
    finally:
        try:
            svc.stop()
            await asyncio.wait_for(task, 30)
            await svc.close()
        finally:
            runtime.CONTROL_POLL_S = saved


async def eventually(check, *, timeout=30.0, interval=0.05, message="condition not met"):
    """Poll `check` (sync or async; truthy = done) until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = check()
            if asyncio.iscoroutine(last):
                last = await last
            if last:
                return last
        except AssertionError as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


def snapshot(s3, bucket: str, *, prefix: str = "") -> dict[str, dict]:
    """Everything that must converge, per key: bytes digest, content headers, metadata, tags."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            k = o["Key"]
            got = s3.get_object(Bucket=bucket, Key=k)
            body = got["Body"].read()
            md = {a: b for a, b in got.get("Metadata", {}).items() if a not in (REPLICA_MARKER, SOURCE_VERSION_KEY)}
            tagset = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=k)["TagSet"]}
            out[k[len(prefix):]] = {"md5": hashlib.md5(body).hexdigest(), "size": len(body),  # noqa: S324
                                    "content_type": got.get("ContentType"), "cache_control": got.get("CacheControl"),
                                    "content_disposition": got.get("ContentDisposition"), "metadata": md,
                                    "tags": tagset}
    return out


def converged(cloud: Cloud, src: str, dst: str, src_region="us-east-1", dst_region="eu-west-1"):
    """A check for `eventually`: the target equals the source (raises AssertionError with the diff,
    also when an object listed is gone before it is read: a delete still under way)."""
    def check():
        try:
            a, b = snapshot(cloud.s3(src_region), src), snapshot(cloud.s3(dst_region), dst)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            raise AssertionError(f"changed while being read: {e}") from None
        if a != b:
            missing = sorted(set(a) - set(b))[:3]
            extra = sorted(set(b) - set(a))[:3]
            differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])[:3]
            raise AssertionError(f"missing={missing} extra={extra} differ={differ}")
        return True
    return check


def drained(ledger: Ledger):
    return lambda: ledger.backlog() == 0
