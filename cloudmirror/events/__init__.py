"""Event feeds, one module per kind, imported lazily: `open_feed(EventFeed)` -> Feed."""

from __future__ import annotations

from cloudmirror.config import EventFeed
from cloudmirror.events.base import Feed


def open_feed(feed: EventFeed) -> Feed:
    """Build the feed for a config entry. Raises ValueError for kinds not available here."""
    if feed.kind == "sqs":
        from cloudmirror.events.sqs import SqsFeed

        return SqsFeed(feed.sqs, wait_time_s=feed.wait_time_s, visibility_timeout_s=feed.visibility_timeout_s,
                       region=feed.region, eventbridge_keys_encoded=feed.eventbridge_keys == "encoded")
    raise ValueError(f"event feed kind {feed.kind!r} is not supported yet")
