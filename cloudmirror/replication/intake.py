"""Intake: receive feed messages, record their versions in the ledger, then ack.

Invariant 1: a message is acked only after the ledger commit that records it (or records
it as a dead letter). If recording fails the message is not acked and comes back.

A poison message never holds its batch back: when recording the batch fails, the messages
are recorded one by one, and one that still fails is dead-lettered with the error (when the
ledger takes the dead letter: a ledger that refuses everything is down, and then nothing is
acked). A message the queue has handed out more than `max_receives` times is dead-lettered
without being recorded (it may be what crashes the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import fields

from cloudmirror import metrics
from cloudmirror.events.base import Feed, FeedMessage
from cloudmirror.ledger import db
from cloudmirror.ledger.repo import Ledger, RecordOutcome
from cloudmirror.redact import redact
from cloudmirror.replication.planner import Batch, Router, dead_letter, plan_message

log = logging.getLogger("cloudmirror.intake")


class Intake:
    def __init__(self, feed: Feed, router: Router, ledger: Ledger, *, visibility_timeout_s: int = 60,
                 on_recorded: Callable[[], None] = lambda: None, error_backoff: float = 1.0, receivers: int = 1,
                 max_receives: int | None = None):
        self.feed = feed
        self.router = router
        self.ledger = ledger
        self.visibility_timeout_s = visibility_timeout_s
        self.on_recorded = on_recorded
        self.error_backoff = error_backoff
        self.receivers = receivers
        # (the feed's setting when not given: SqsFeed carries the config's max_receives)
        self.max_receives = max_receives if max_receives is not None else getattr(feed, "max_receives", None)
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
        """Record one received batch, then ack it (isolating a message that cannot be recorded)."""
        plans = [plan_message(self.router, self.feed.address, m, max_receives=self.max_receives) for m in msgs]
        batch = Batch()
        for p in plans:
            batch.add(p)
        keeper = asyncio.create_task(self._keep_invisible(msgs))
        try:
            try:
                outcome = await asyncio.to_thread(self.ledger.record, batch.versions, batch.dead)
            except Exception as e:  # noqa: BLE001 - one poison message must not block the batch
                log.warning("recording %d messages from %s failed (%s); recording them one by one",
                            len(msgs), self.feed.address, _error(e))
                outcome, batch, msgs = await self._one_by_one(msgs, plans)
        finally:
            keeper.cancel()
        await self.feed.ack(msgs)
        self._count(len(msgs), outcome, batch)

    async def _one_by_one(self, msgs: list[FeedMessage],
                          plans: list[Batch]) -> tuple[RecordOutcome, Batch, list[FeedMessage]]:
        """Record each message in its own transaction; dead-letter one that fails. Returns what
        was recorded and the messages to ack. Acks the messages recorded so far and re-raises
        when the ledger also refuses the dead letter (it is down)."""
        total, done, kept = RecordOutcome(), [], Batch()
        for msg, plan in zip(msgs, plans, strict=True):
            try:
                out = await asyncio.to_thread(self.ledger.record, plan.versions, plan.dead)
                kept.add(plan)
            except Exception as e:  # noqa: BLE001 - the culprit: dead-lettered with the error below
                last = self.max_receives is not None and (msg.receive_count or 0) >= self.max_receives
                if db.is_transient(e) and not last:  # contention, not this message: it comes back
                    log.warning("message %s from %s not recorded (%s); it comes back", msg.message_id,
                                self.feed.address, _error(e))
                    continue
                reason = f"could not be recorded: {_error(e)}"
                if msg.receive_count:
                    reason = f"received {msg.receive_count} times; {reason}"
                letter = dead_letter(self.feed.address, msg, reason)
                try:
                    out = await asyncio.to_thread(self.ledger.record, [], [letter])
                except Exception:
                    if done:  # what is recorded is acked; the rest comes back
                        await self.feed.ack(done)
                        self._count(len(done), total, kept)
                    raise
                kept.dead.append(letter)
            done.append(msg)
            for f in fields(total):
                setattr(total, f.name, getattr(total, f.name) + getattr(out, f.name))
        return total, kept, done

    def _count(self, n: int, outcome: RecordOutcome, batch: Batch) -> None:
        self.messages += n
        self.recorded += outcome.new
        for label, k in (("new", outcome.new), ("duplicate", outcome.duplicate), ("stale", outcome.stale),
                         ("ignored", batch.ignored)):
            if k:
                metrics.EVENTS.labels(self.feed.address, label).inc(k)
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


def _error(e: BaseException) -> str:
    """The error of a failed record, one line, redacted."""
    return redact(f"{type(e).__name__}: {db.describe(e)}")[:1000]
