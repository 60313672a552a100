"""Pub/Sub feed (google-cloud-pubsub streaming pull) for Cloud Storage notifications.

The SDK pulls on its own background threads and calls back for every message; the callback
hands the message to the asyncio side with ``loop.call_soon_threadsafe`` into an
asyncio.Queue, from which `receive()` returns batches. Everything the SDK holds counts
against FlowControl (max_messages / max_bytes) until it is acked or nacked, which bounds
what one process takes from the subscription.

Visibility, like SQS: while the SDK holds a message it keeps extending its ack deadline
(lease management). So that a message whose recording failed comes back, a message handed
out by `receive()` is leased for ``visibility_timeout_s`` only: `extend()` pushes that
deadline out (and sends a ModifyAckDeadline), and a message still unacked when it passes is
nacked by the next `receive()`, which makes Pub/Sub redeliver it. `close()` nacks what was
taken but not acked.

``PUBSUB_EMULATOR_HOST`` is honoured (by the SDK); ``emulator_host=`` does the same for
one feed. Several feeds may live in one process (each has its own client and threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Sequence

from cloudmirror import metrics
from cloudmirror.events.base import FeedError, FeedMessage, MalformedEvent
from cloudmirror.events.gcs_events import is_overwrite_half, message_body, parse_notification

log = logging.getLogger("cloudmirror.events.pubsub")

_KIND = "pubsub"
_MAX_ACK_DEADLINE = 600  # Pub/Sub's maximum ModifyAckDeadline
_SETTLE_TIMEOUT_S = 60  # exactly-once subscriptions answer acks; a dead stream never does


def subscription_path(address: str) -> str:
    """Validate ``projects/P/subscriptions/S`` (a leading ``pubsub://`` is tolerated)."""
    path = address.removeprefix("pubsub://").strip("/")
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "subscriptions" or not parts[1] or not parts[3]:
        raise ValueError(f"a Pub/Sub subscription is projects/PROJECT/subscriptions/NAME, got {address!r}")
    return path


class PubSubFeed:
    """One Pub/Sub subscription. Bound to the event loop of its first `receive()`."""

    def __init__(self, subscription: str, *, wait_time_s: int = 10, visibility_timeout_s: int = 60,
                 batch: int = 100, max_outstanding: int = 1000, max_outstanding_bytes: int = 100 * 1024 * 1024,
                 max_lease_s: int = 3600, emulator_host: str | None = None, callback_threads: int = 2):
        self.address = subscription_path(subscription)
        self.wait_time_s = wait_time_s
        self.visibility_timeout_s = visibility_timeout_s
        self.batch = batch
        self.max_outstanding = max_outstanding
        self.max_outstanding_bytes = max_outstanding_bytes
        self.max_lease_s = max_lease_s
        self.emulator_host = emulator_host
        self.callback_threads = callback_threads
        self._client = None
        self._future = None  # the StreamingPullFuture
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._start_lock: asyncio.Lock | None = None
        self._taken: dict[str, tuple[object, float]] = {}  # ack_id -> (SDK message, deadline) handed out
        self._closed = False

    # ------------------------------------------------------------ SDK side (its threads)
    def _make_client(self):
        from google.cloud import pubsub_v1

        if self.emulator_host:
            import grpc
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

            channel = grpc.insecure_channel(self.emulator_host)
            return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
        return pubsub_v1.SubscriberClient()

    def _on_message(self, message) -> None:
        """SDK callback (a pool thread): pass the message to the event loop."""
        loop, queue = self._loop, self._queue
        if self._closed or loop is None or queue is None:
            message.nack()
            return
        try:
            loop.call_soon_threadsafe(self._deliver, message)
        except RuntimeError:  # the loop is closed: let Pub/Sub redeliver it
            message.nack()

    def _deliver(self, message) -> None:
        """On the event loop: queue the message for `receive()` (or hand it back when closed)."""
        if self._closed or self._queue is None:
            message.nack()
        else:
            self._queue.put_nowait(message)

    def _start(self) -> None:
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

        if self._client is None:
            self._client = self._make_client()
        # the stream's ack deadline bounds how long a message lost in flight (pushed into a
        # stream that is going away) stays hidden: the visibility timeout, as with SQS
        stream_deadline = max(10, min(self.visibility_timeout_s, _MAX_ACK_DEADLINE))
        flow = pubsub_v1.types.FlowControl(max_messages=self.max_outstanding, max_bytes=self.max_outstanding_bytes,
                                           max_lease_duration=self.max_lease_s,
                                           max_duration_per_lease_extension=stream_deadline)
        scheduler = ThreadScheduler(concurrent.futures.ThreadPoolExecutor(
            max_workers=self.callback_threads, thread_name_prefix=f"pubsub-{self.address.rsplit('/', 1)[-1]}"))
        metrics.QUEUE_REQUESTS.labels(_KIND, "StreamingPull").inc()
        self._future = self._client.subscribe(self.address, self._on_message, flow_control=flow, scheduler=scheduler)

    def _check_stream(self) -> None:
        """Raise FeedError when the streaming pull has died (it is restarted next time)."""
        fut = self._future
        if fut is None or not fut.done():
            return
        self._future = None
        try:
            exc = fut.exception(timeout=0)
        except concurrent.futures.CancelledError:
            exc = None
        raise FeedError(f"{self.address}: streaming pull stopped: {exc or 'cancelled'}")

    # ------------------------------------------------------------ Feed protocol
    async def receive(self) -> list[FeedMessage]:
        if self._closed:
            raise FeedError(f"{self.address}: feed is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
            self._start_lock = asyncio.Lock()
        self._expire_leases()
        if self._future is None:
            async with self._start_lock:  # several receive loops share one stream
                if self._future is None:
                    await asyncio.to_thread(self._start)
        self._check_stream()
        got = []
        try:
            got.append(await asyncio.wait_for(self._queue.get(), timeout=self.wait_time_s))
        except TimeoutError:
            self._check_stream()
            return []
        while len(got) < self.batch and not self._queue.empty():
            got.append(self._queue.get_nowait())
        deadline = time.monotonic() + self.visibility_timeout_s
        out = []
        for m in got:
            self._taken[m.ack_id] = (m, deadline)
            out.append(self._to_feed_message(m))
        return out

    def _to_feed_message(self, m) -> FeedMessage:
        attrs = dict(m.attributes)
        fm = FeedMessage(message_id=m.message_id, body=message_body(attrs, m.data), receipt=m.ack_id,
                         extra={"delivery_attempt": m.delivery_attempt, "publish_time": str(m.publish_time)})
        try:
            fm.events = parse_notification(attrs, m.data)
        except MalformedEvent as e:
            fm.error = str(e)
        else:
            if is_overwrite_half(attrs):
                fm.extra["skipped"] = (f"{attrs.get('eventType')} of generation {attrs.get('objectGeneration')} "
                                       f"overwritten by generation {attrs.get('overwrittenByGeneration')}")
        return fm

    def _expire_leases(self) -> None:
        """Nack handed-out messages whose visibility passed unextended: Pub/Sub redelivers them."""
        now = time.monotonic()
        expired = [a for a, (_, deadline) in self._taken.items() if deadline <= now]
        for ack_id in expired:
            m, _ = self._taken.pop(ack_id)
            log.info("%s: message %s not acked within its visibility timeout; releasing it", self.address,
                     m.message_id)
            m.nack()
        if expired:
            metrics.QUEUE_REQUESTS.labels(_KIND, "ModifyAckDeadline").inc()

    async def ack(self, messages: Sequence[FeedMessage]) -> None:
        futures = []
        for fm in messages:
            entry = self._taken.pop(fm.receipt, None)
            if entry is None:  # acked before, or released (then it comes back: a duplicate)
                continue
            futures.append((fm, entry[0].ack_with_response()))
        if not futures:
            return
        metrics.QUEUE_REQUESTS.labels(_KIND, "Acknowledge").inc()
        await self._settle(futures, "ack")

    async def extend(self, messages: Sequence[FeedMessage], seconds: int) -> None:
        seconds = max(0, min(int(seconds), _MAX_ACK_DEADLINE))
        deadline = time.monotonic() + seconds
        futures = []
        for fm in messages:
            entry = self._taken.get(fm.receipt)
            if entry is None:
                continue
            self._taken[fm.receipt] = (entry[0], deadline)
            futures.append((fm, entry[0].modify_ack_deadline_with_response(seconds)))
        if not futures:
            return
        metrics.QUEUE_REQUESTS.labels(_KIND, "ModifyAckDeadline").inc()
        await self._settle(futures, "extend")

    async def _settle(self, futures, what: str) -> None:
        """Wait for the SDK's responses (immediate unless exactly-once delivery is on). An
        invalid ack id (the lease ran out) only means the message comes back: a duplicate."""
        from google.cloud.pubsub_v1.subscriber.exceptions import AcknowledgeError, AcknowledgeStatus

        failed = []
        for fm, fut in futures:
            try:
                await asyncio.wait_for(asyncio.wrap_future(fut), timeout=_SETTLE_TIMEOUT_S)
            except TimeoutError:
                failed.append(f"{fm.message_id}: no response within {_SETTLE_TIMEOUT_S}s")
            except AcknowledgeError as e:
                if e.error_code == AcknowledgeStatus.INVALID_ACK_ID:
                    log.info("%s: %s of message %s: ack id expired", self.address, what, fm.message_id)
                else:
                    failed.append(f"{fm.message_id}: {e.error_code.name}: {e.info}")
            except Exception as e:  # noqa: BLE001 - transport errors surface here
                failed.append(f"{fm.message_id}: {e}")
        if failed:
            raise FeedError(f"{self.address}: {what} failed for {len(failed)} message(s): {failed[0]}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pending = [m for m, _ in self._taken.values()]
        self._taken.clear()
        if self._queue is not None:
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
        for m in pending:  # taken but never acked: hand them back now rather than at expiry
            m.nack()
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        fut, self._future = self._future, None
        if fut is not None:
            fut.cancel()  # stops the stream, flushes pending acks/nacks
            try:
                fut.result(timeout=30)
            except (concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
                pass
            except Exception as e:  # noqa: BLE001 - closing: however the stream ended, it is only logged
                log.debug("%s: streaming pull ended with %s", self.address, e)
        if self._client is not None:
            self._client.close()
            self._client = None
