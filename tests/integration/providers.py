"""Provider-neutral test harness for the any-to-any matrix: each provider makes fresh
locations, wires their event feed, writes through the store protocol (and, for Azure,
publishes the Event Grid message the real service would deliver), and snapshots a location
for comparison (bytes digest, content headers, user metadata, tags)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudmirror.location import Location, parse_location
from cloudmirror.stores import open_store
from cloudmirror.stores.base import (
    REPLICA_MARKER,
    SOURCE_VERSION_KEY,
    HeadOptions,
    ListOptions,
    NotFound,
    PutOptions,
    Store,
)
from tests.conftest import GCS_PROJECT, GCS_TOPIC, azure_location_url, gcs_location_url, unique_name

PROVIDERS = ("s3", "gcs", "azure", "file")


@dataclass
class Provider:
    """One provider in the test's local cloud."""

    kind: str
    ctx: dict[str, Any]
    tmp: Path
    stores: list[Store] = field(default_factory=list)

    # ------------------------------------------------------------ locations
    def new_location(self, *, second: bool = False) -> str:
        """A fresh, empty bucket / container / directory; `second` picks another region or
        account where the provider has one."""
        if self.kind == "s3":
            from cloudmirror.local.provision import create_s3_bucket

            region = "eu-west-1" if second else "us-east-1"
            b = unique_name("cm")
            create_s3_bucket(self.ctx["s3"], region, b)
            return f"s3://{b}?region={region}&endpoint={self.ctx['s3']}"
        if self.kind == "gcs":
            from cloudmirror.local.provision import create_gcs_bucket

            url = gcs_location_url(self.ctx["gcs"].endpoint, unique_name("cm"))
            create_gcs_bucket(parse_location(url))
            return url
        if self.kind == "azure":
            from cloudmirror.local.provision import create_azure_container

            accounts = list(self.ctx["azurite"].accounts)
            url = azure_location_url(accounts[1] if second else accounts[0], unique_name("cm"))
            create_azure_container(parse_location(url))
            return url
        root = self.tmp / unique_name("disk")
        root.mkdir()
        return f"file://{root}"

    def feed_for(self, url: str) -> dict:
        """The `events:` entry that announces writes to this source location."""
        loc = parse_location(url)
        if self.kind == "s3":
            from cloudmirror.local.provision import create_sqs_queue, notify_bucket_to_queue

            q, arn = create_sqs_queue(self.ctx["s3"], "us-east-1", unique_name("q"))
            notify_bucket_to_queue(self.ctx["s3"], "us-east-1", loc.bucket, arn)
            return {"sqs": q, "region": "us-east-1", "wait_time_s": 1}
        if self.kind == "gcs":
            from cloudmirror.local.gcp import ensure_subscription

            sub = unique_name("sub")
            ensure_subscription(self.ctx["pubsub"], GCS_PROJECT, GCS_TOPIC, sub,
                                filter_=f'attributes.bucketId = "{loc.bucket}"')
            return {"pubsub": f"projects/{GCS_PROJECT}/subscriptions/{sub}", "wait_time_s": 1}
        if self.kind == "azure":
            from cloudmirror.local.provision import ensure_azure_queue

            queue = f"az://{loc.account}/{unique_name('q')}?connection_string_env=CLOUDMIRROR_AZURITE_CONN_{loc.account.upper()}"
            ensure_azure_queue(queue)
            self.ctx.setdefault("queues", {})[loc.container_id] = queue
            return {"azure_queue": queue, "wait_time_s": 1}
        return {"poll": 0.2}

    # ------------------------------------------------------------ writes
    def store(self, url: str) -> Store:
        s = open_store(parse_location(url))
        self.stores.append(s)
        return s

    async def put(self, url: str, key: str, body, opts: PutOptions | None = None) -> None:
        loc = parse_location(url)
        store = self.store(url)
        await store.put(loc.full_key(key), body, opts or PutOptions())
        await self._announce(loc, store, key, "put")

    async def delete(self, url: str, key: str) -> None:
        loc = parse_location(url)
        store = self.store(url)
        await store.delete(loc.full_key(key))
        await self._announce(loc, store, key, "delete")

    async def _announce(self, loc: Location, store: Store, key: str, op: str) -> None:
        """Azure: deliver what Event Grid would put into the Storage Queue (no emulator)."""
        if self.kind != "azure" or loc.container_id not in self.ctx.get("queues", {}):
            return
        from cloudmirror.local.eventgrid_fake import publish_blob_event

        meta = await store.head(loc.full_key(key)) if op == "put" else None
        await publish_blob_event(self.ctx["queues"][loc.container_id], loc, loc.full_key(key), op, meta,
                                 schema=self.ctx.get("schema", "eventgrid"))

    async def close(self) -> None:
        for s in self.stores:
            await s.close()
        self.stores.clear()


async def snapshot(url: str) -> dict[str, dict]:
    """What must converge, per key relative to the location: bytes digest and size, content
    headers, user metadata (without cloudmirror's own keys) and tags."""
    loc = parse_location(url)
    store = open_store(loc)
    out: dict[str, dict] = {}
    try:
        async for m in store.list(ListOptions(prefix=loc.prefix)):
            head = await store.head(m.key, HeadOptions(include_tags=True))
            got = await store.get(m.key)
            h, n = hashlib.md5(), 0  # noqa: S324
            async for chunk in got.body:
                h.update(chunk)
                n += len(chunk)
            md = {k: v for k, v in head.metadata.items() if k not in (REPLICA_MARKER, SOURCE_VERSION_KEY)}
            headers = head.content_headers()
            # no content type = the provider's default (S3 says binary/, the others application/)
            if headers.get("content_type") in (None, "binary/octet-stream"):
                headers["content_type"] = "application/octet-stream"
            out[loc.rel_key(m.key)] = {"md5": h.hexdigest(), "size": n, **headers, "metadata": md,
                                       "tags": dict(head.tags or {})}
    finally:
        await store.close()
    return out


def diff(a: dict, b: dict) -> str:
    missing = sorted(set(a) - set(b))[:3]
    extra = sorted(set(b) - set(a))[:3]
    differ = [(k, {f: (a[k].get(f), b[k].get(f)) for f in {*a[k], *b[k]} if a[k].get(f) != b[k].get(f)})
              for k in sorted(set(a) & set(b)) if a[k] != b[k]][:3]
    return f"missing={missing} extra={extra} differ={differ}"


async def same(src: str, dst: str) -> bool:
    """For `eventually`: raises AssertionError with the difference until dst equals src (also
    when an object listed is gone before it is read: a delete still under way)."""
    try:
        a, b = await snapshot(src), await snapshot(dst)
    except NotFound as e:
        raise AssertionError(f"changed while being read: {e}") from None
    if a != b:
        raise AssertionError(diff(a, b))
    return True
