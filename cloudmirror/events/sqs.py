"""SQS feed (aioboto3): batched long-poll receive, batched delete, visibility extension.

(The helpers that create a queue and wire a bucket's notifications into it are in
cloudmirror.local.provision.)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

import aioboto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from cloudmirror import metrics
from cloudmirror.events.base import FeedError, FeedMessage, MalformedEvent
from cloudmirror.events.s3_events import parse_message

_AWS_HOST = re.compile(r"^sqs[.-]([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


def queue_endpoint_and_region(queue_url: str, region: str | None = None) -> tuple[str | None, str]:
    """(endpoint_url or None for AWS, region) for a queue URL."""
    parts = urlsplit(queue_url)
    m = _AWS_HOST.match(parts.hostname or "")
    if m:
        return None, region or m.group(1)
    m = re.search(r"sqs\.([a-z0-9-]+)\.", parts.hostname or "")
    return f"{parts.scheme}://{parts.netloc}", region or (m.group(1) if m else "us-east-1")


class SqsFeed:
    """One SQS queue. Not shared between event loops."""

    def __init__(self, queue_url: str, *, wait_time_s: int = 10, visibility_timeout_s: int = 60,
                 endpoint: str | None = None, region: str | None = None, batch: int = 10,
                 eventbridge_keys_encoded: bool = True, max_receives: int | None = None):
        self.address = queue_url
        self.wait_time_s = wait_time_s
        self.visibility_timeout_s = visibility_timeout_s
        self.batch = batch
        self.eventbridge_keys_encoded = eventbridge_keys_encoded
        self.max_receives = max_receives  # the intake dead-letters a message received more often
        ep, self.region = queue_endpoint_and_region(queue_url, region)
        self.endpoint = endpoint or ep
        self._stack = contextlib.AsyncExitStack()
        self._client = None
        self._client_lock: asyncio.Lock | None = None

    async def _sqs(self):
        """The feed's one client, created by the first caller; receive loops starting
        together wait for it instead of each creating (and orphaning) their own."""
        if self._client is None:
            if self._client_lock is None:
                self._client_lock = asyncio.Lock()
            async with self._client_lock:
                if self._client is None:
                    session = aioboto3.Session()
                    cfg = BotoConfig(retries={"mode": "standard", "max_attempts": 3},
                                     read_timeout=self.wait_time_s + 10, connect_timeout=5)
                    self._client = await self._stack.enter_async_context(
                        session.client("sqs", region_name=self.region, endpoint_url=self.endpoint, config=cfg))
        return self._client

    async def _call(self, op: str, **kw):
        metrics.QUEUE_REQUESTS.labels("sqs", op).inc()
        client = await self._sqs()
        try:
            return await getattr(client, _snake(op))(QueueUrl=self.address, **kw)
        except ClientError as e:
            err = e.response.get("Error", {})
            raise FeedError(f"{self.address}: {op}: {err.get('Code')}: {err.get('Message')}") from None
        except BotoCoreError as e:
            raise FeedError(f"{self.address}: {op}: {e}") from None

    async def receive(self) -> list[FeedMessage]:
        resp = await self._call("ReceiveMessage", MaxNumberOfMessages=self.batch, WaitTimeSeconds=self.wait_time_s,
                                VisibilityTimeout=self.visibility_timeout_s,
                                MessageSystemAttributeNames=["ApproximateReceiveCount"])
        out = []
        for m in resp.get("Messages", []):
            fm = FeedMessage(message_id=m["MessageId"], body=m.get("Body", ""), receipt=m["ReceiptHandle"],
                             receive_count=_count(m.get("Attributes", {}).get("ApproximateReceiveCount")))
            try:
                fm.events, fm.rejected = parse_message(fm.body, eventbridge_keys_encoded=self.eventbridge_keys_encoded)
            except MalformedEvent as e:
                fm.error = str(e)
            out.append(fm)
        return out

    async def ack(self, messages: Sequence[FeedMessage]) -> None:
        for i in range(0, len(messages), 10):
            chunk = messages[i:i + 10]
            resp = await self._call("DeleteMessageBatch", Entries=[
                {"Id": str(n), "ReceiptHandle": m.receipt} for n, m in enumerate(chunk)])
            failed = [f for f in resp.get("Failed", []) if f.get("Code") != "ReceiptHandleIsInvalid"]
            if failed:
                raise FeedError(f"{self.address}: DeleteMessageBatch failed for {len(failed)}: "
                                f"{failed[0].get('Message')}")

    async def extend(self, messages: Sequence[FeedMessage], seconds: int) -> None:
        for i in range(0, len(messages), 10):
            chunk = messages[i:i + 10]
            await self._call("ChangeMessageVisibilityBatch", Entries=[
                {"Id": str(n), "ReceiptHandle": m.receipt, "VisibilityTimeout": seconds} for n, m in enumerate(chunk)])

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


def _count(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _snake(op: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()
