"""Event feeds, one module per kind, imported lazily: `open_feed(EventFeed)` -> Feed."""

from __future__ import annotations

from cloudmirror.config import EventFeed
from cloudmirror.events.base import Feed


def open_feed(feed: EventFeed) -> Feed:
    """Build the feed for a config entry. Raises ValueError for kinds not available here."""
    if feed.kind == "sqs":
        from cloudmirror.events.sqs import SqsFeed

        return SqsFeed(feed.sqs, wait_time_s=feed.wait_time_s, visibility_timeout_s=feed.visibility_timeout_s,
                       region=feed.region, eventbridge_keys_encoded=feed.eventbridge_keys == "encoded",
                       max_receives=feed.max_receives)
    if feed.kind == "pubsub":
        from cloudmirror.events.pubsub import PubSubFeed

        return PubSubFeed(feed.pubsub, wait_time_s=feed.wait_time_s, visibility_timeout_s=feed.visibility_timeout_s,
                          max_outstanding=feed.max_outstanding)
    if feed.kind == "azure_queue":
        from cloudmirror.events.azure_queue import AzureQueueFeed

        return AzureQueueFeed(feed.azure_queue, wait_time_s=feed.wait_time_s,
                              visibility_timeout_s=feed.visibility_timeout_s)
    raise ValueError(f"event feed kind {feed.kind!r} is not supported yet")
