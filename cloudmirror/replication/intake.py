"""Intake: receive feed messages, record their versions in the ledger, then ack.

Invariant 1: a message is acked only after the ledger commit that records it (or records
it as a dead letter). If recording fails the message is not acked and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from cloudmirror import metrics
from cloudmirror.events.base import Feed, FeedMessage
from cloudmirror.ledger.repo import Ledger
from cloudmirror.replication.planner import Router, plan_messages

log = logging.getLogger("cloudmirror.intake")


class Intake:
    def __init__(self, feed: Feed, router: Router, ledger: Ledger, *, visibility_timeout_s: int = 60,
                 on_recorded: Callable[[], None] = lambda: None, error_backoff: float = 1.0, receivers: int = 1):
        self.feed = feed
        self.router = router
        self.ledger = ledger
        self.visibility_timeout_s = visibility_timeout_s
        self.on_recorded = on_recorded
        self.error_backoff = error_backoff
        self.receivers = receivers
        self._stopping = asyncio.Event()
        self.messages = 0
        self.recorded = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Loop until stop(); feed and ledger errors are logged and retried with backoff.

        A receive in progress when stop() comes is allowed to finish (long polls last at most
        wait_time_s) and its messages are recorded: abandoning a long poll client-side would
        leave the server free to hand messages to the dead request, hiding them for the whole
        visibility timeout.
        """
        try:
            await asyncio.gather(*(self._receive_loop() for _ in range(self.receivers)))
        finally:
            await self.feed.close()

    async def _receive_loop(self) -> None:
        """One receive -> record -> ack loop; several run side by side on one queue so that
        receiving the next batch overlaps recording the last one."""
        delay = self.error_backoff
        while not self._stopping.is_set():
            try:
                msgs = await self.feed.receive()
                if msgs:
                    await self.handle(msgs)
                delay = self.error_backoff
            except Exception:  # noqa: BLE001 - the loop must survive queue and DB outages
                log.exception("intake from %s failed; retrying in %.1fs", self.feed.address, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                delay = min(delay * 2, 30.0)

    async def handle(self, msgs: list[FeedMessage]) -> None:
        """Record one received batch, then ack it."""
        batch = plan_messages(self.router, self.feed.address, msgs)
        keeper = asyncio.create_task(self._keep_invisible(msgs))
        try:
            outcome = await asyncio.to_thread(self.ledger.record, batch.versions, batch.dead)
        finally:
            keeper.cancel()
        await self.feed.ack(msgs)
        self.messages += len(msgs)
        self.recorded += outcome.new
        for label, n in (("new", outcome.new), ("duplicate", outcome.duplicate), ("stale", outcome.stale),
                         ("ignored", batch.ignored)):
            if n:
                metrics.EVENTS.labels(self.feed.address, label).inc(n)
        if batch.dead:
            metrics.DEAD_LETTERS.labels(self.feed.address).inc(len(batch.dead))
            for d in batch.dead:
                log.warning("dead-lettered message %s from %s: %s", d.message_id, d.feed, d.reason)
        if outcome.new:
            self.on_recorded()

    async def _keep_invisible(self, msgs: list[FeedMessage]) -> None:
        """While a batch is being recorded, keep extending its visibility."""
        while True:
            await asyncio.sleep(self.visibility_timeout_s / 2)
            try:
                await self.feed.extend(msgs, self.visibility_timeout_s)
            except Exception:  # noqa: BLE001 - best effort: keep extending; a lapse only redelivers the batch
                log.warning("could not extend visibility of %d messages", len(msgs), exc_info=True)
