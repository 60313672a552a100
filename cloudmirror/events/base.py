"""The one normalised event type every feed produces, and the feed protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol


class FeedError(RuntimeError):
    """The queue or subscription cannot be reached or refuses us (retried by the intake
    loop). Raised by every feed."""


class MalformedEvent(ValueError):
    """A message that cannot be understood. The message is the reason recorded in the
    dead-letter table."""


@dataclass(frozen=True)
class ObjectEvent:
    """One write (put) or removal (delete) announced for one object of one bucket.

    `container_id` is the bucket identity as in Location.container_id (``s3://bucket``),
    `key` the full provider key (decoded). Fields a provider does not send are None.
    """

    container_id: str
    key: str
    op: Literal["put", "delete"]
    event_time: datetime | None = None
    version_id: str | None = None
    etag: str | None = None
    sequencer: str | None = None
    size: int | None = None
    event_name: str = ""


@dataclass
class FeedMessage:
    """One queue message: its events (or why it is malformed) and how to ack it."""

    message_id: str
    body: str
    receipt: str  # SQS receipt handle / Pub/Sub ack id / Azure pop receipt
    events: list[ObjectEvent] = field(default_factory=list)
    error: str | None = None  # set when the message is malformed (dead-letter reason)
    extra: dict = field(default_factory=dict)
    # why parts of the message (records) were malformed, each a dead letter; its events still count
    rejected: list[str] = field(default_factory=list)
    # how many times the queue has handed this message out, this time included (None: unknown)
    receive_count: int | None = None


class Feed(Protocol):
    """A source of FeedMessages. Acks happen only after the ledger commit (invariant 1)."""

    address: str

    async def receive(self) -> list[FeedMessage]:
        """Waits (long poll) for up to one batch. Returns [] on timeout."""

    async def ack(self, messages: Sequence[FeedMessage]) -> None:
        """Removes messages from the queue for good. Idempotent."""

    async def extend(self, messages: Sequence[FeedMessage], seconds: int) -> None:
        """Keeps messages invisible for another `seconds` while they are being recorded."""

    async def close(self) -> None: ...
