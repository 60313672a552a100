"""Feeds create their SDK client once, however many receive loops start together (issue 12
item 5: the SQS feed made one client per loop and orphaned the others)."""

from __future__ import annotations

import asyncio

from cloudmirror.events.sqs import SqsFeed


async def test_receive_loops_starting_together_share_one_sqs_client():
    feed = SqsFeed("http://127.0.0.1:9/000000000000/q", region="us-east-1")  # no request is made
    try:
        clients = await asyncio.gather(*(feed._sqs() for _ in range(8)))
        assert len({id(c) for c in clients}) == 1
        assert len(feed._stack._exit_callbacks) == 1  # one client entered, none orphaned
    finally:
        await feed.close()
