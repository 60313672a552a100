"""The emulator side of the bench: one moto server, buckets, the S3 -> SQS wiring, writers."""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

from bench.procs import BenchError, cpu_seconds, poll
from cloudmirror.local.moto import reset_moto, start_moto
from cloudmirror.local.provision import create_sqs_queue, notify_bucket_to_queue

SRC_REGION, DST_REGION = "us-east-1", "eu-west-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": SRC_REGION,
               "AWS_REGION": SRC_REGION}


def bench_env() -> dict[str, str]:
    """The environment of every child: emulator credentials, never a real account's."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL")}
    env.update(CREDENTIALS)
    return env


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Moto:
    """A moto server we started; `cpu()` is its CPU seconds so far."""

    endpoint: str
    proc: object  # cloudmirror.local.procs.Proc
    _clients: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, log_dir: Path) -> "Moto":
        os.environ.update(CREDENTIALS)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(k, None)
        proc, endpoint = start_moto(log_dir=log_dir)
        return cls(endpoint, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        self.proc.stop()

    def reset(self) -> None:
        """Forget every bucket and queue (frees the emulator's memory between scenarios)."""
        reset_moto(self.endpoint)

    def client(self, service: str, region: str = SRC_REGION):
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                self._clients[key] = boto3.client(
                    service, endpoint_url=self.endpoint, region_name=region,
                    config=BotoConfig(max_pool_connections=32, retries={"mode": "standard", "max_attempts": 3},
                                      s3={"addressing_style": "path"}, read_timeout=120))
            return self._clients[key]

    # ------------------------------------------------------------ setup
    def bucket(self, prefix: str, region: str) -> str:
        b = name(prefix)
        kw = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        self.client("s3", region).create_bucket(Bucket=b, **kw)
        return b

    def notified_queue(self, bucket: str) -> str:
        """A queue receiving the bucket's ObjectCreated/ObjectRemoved events; returns its URL."""
        url, arn = create_sqs_queue(self.endpoint, SRC_REGION, name("bench-q"))
        notify_bucket_to_queue(self.endpoint, SRC_REGION, bucket, arn)
        return url

    def url(self, bucket: str, region: str) -> str:
        return f"s3://{bucket}?region={region}&endpoint={self.endpoint}"

    # ------------------------------------------------------------ data
    def put_many(self, bucket: str, keys: list[str], body_for, *, threads: int = 8) -> float:
        """PUT every key (single PutObject each) with a thread pool; returns wall seconds."""
        s3 = self.client("s3", SRC_REGION)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as ex:
            for f in [ex.submit(s3.put_object, Bucket=bucket, Key=k, Body=body_for(i)) for i, k in enumerate(keys)]:
                f.result()
        return time.perf_counter() - t0

    def listing(self, bucket: str, region: str) -> dict[str, tuple[int, str]]:
        """key -> (size, etag) of every object in the bucket."""
        out = {}
        for page in self.client("s3", region).get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                out[o["Key"]] = (o["Size"], o["ETag"].strip('"'))
        return out

    def queue_depth(self, queue_url: str) -> int:
        a = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        return int(a["Attributes"]["ApproximateNumberOfMessages"]) + int(
            a["Attributes"]["ApproximateNumberOfMessagesNotVisible"])

    def wait_queue_depth(self, queue_url: str, at_least: int, timeout: float = 60) -> int:
        """Poll until every expected notification sits in the queue."""
        return poll(lambda: (d := self.queue_depth(queue_url)) >= at_least and d, timeout=timeout, interval=0.1,
                    what=f"{at_least} messages in {queue_url}")


def check_replicas(moto: Moto, src: str, dst: str, expected: int) -> str | None:
    """None when dst holds exactly src's objects (same sizes and etags), else what differs."""
    a, b = moto.listing(src, SRC_REGION), moto.listing(dst, DST_REGION)
    if len(a) != expected:
        return f"source holds {len(a)} objects, expected {expected}"
    missing = sorted(set(a) - set(b))
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    extra = sorted(set(b) - set(a))
    if missing or differ or extra:
        return (f"{dst}: {len(missing)} missing, {len(differ)} differ, {len(extra)} extra "
                f"(e.g. {(missing + differ + extra)[:3]})")
    return None


class PacedWriter:
    """Puts `rate` objects per second for `seconds` on a fixed schedule (object i is due at
    t0 + i/rate) from a few threads, recording each put's start and end (epoch seconds)."""

    def __init__(self, moto: Moto, bucket: str, *, rate: float, seconds: float, size: int, prefix: str = "lat/",
                 threads: int = 4):
        self.moto, self.bucket, self.rate, self.size, self.prefix = moto, bucket, rate, size, prefix
        self.n = max(1, int(rate * seconds))
        self.threads = threads
        self.puts: dict[str, tuple[float, float, float]] = {}  # key -> (due, put start, put end), epoch
        self.errors: list[str] = []
        self._next = 0
        self._lock = threading.Lock()

    def key(self, i: int) -> str:
        return f"{self.prefix}{i:06d}"

    def run(self) -> None:
        s3 = self.moto.client("s3", SRC_REGION)
        body = os.urandom(self.size)
        start = time.time() + 0.2

        def work() -> None:
            while True:
                with self._lock:
                    i = self._next
                    self._next += 1
                if i >= self.n:
                    return
                due = start + i / self.rate
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                t1 = time.time()
                try:
                    s3.put_object(Bucket=self.bucket, Key=self.key(i), Body=body)
                except Exception as e:  # noqa: BLE001 - reported, and the check below fails
                    self.errors.append(f"{self.key(i)}: {e}")
                    continue
                self.puts[self.key(i)] = (due, t1, time.time())

        ts = [threading.Thread(target=work, name=f"writer-{n}", daemon=True) for n in range(self.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=self.n / self.rate + 120)
        if any(t.is_alive() for t in ts):
            raise BenchError("the paced writer did not finish")

    def achieved(self) -> dict:
        if not self.puts:
            return {"objects": 0}
        starts = sorted(v[1] for v in self.puts.values())
        ends = [v[2] for v in self.puts.values()]
        span = max(ends) - starts[0]
        lag = [v[1] - v[0] for v in self.puts.values()]
        return {"objects": len(self.puts), "errors": len(self.errors), "span_s": span,
                "rate": len(self.puts) / span if span > 0 else float("nan"), "max_lag_s": max(lag),
                "put_ms_p50": 1000 * sorted(e - s for _, s, e in self.puts.values())[len(self.puts) // 2]}
