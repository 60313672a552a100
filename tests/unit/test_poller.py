"""The poll feed: a listing diff announced as events, the baseline moved only on ack."""

from __future__ import annotations

from cloudmirror.location import parse_location
from cloudmirror.replication.poller import PollFeed
from cloudmirror.stores import open_store
from tests.conftest import unique_name


async def receive_all(feed: PollFeed) -> list:
    msgs = []
    while True:
        got = await feed.receive()
        if not got:
            return msgs
        msgs += got


def ops(msgs) -> list[tuple[str, str]]:
    return sorted((e.op, e.key) for m in msgs for e in m.events)


async def test_poll_announces_changes_and_moves_on_only_after_ack(tmp_path):
    root = tmp_path / "disk"
    root.mkdir()
    loc = parse_location(f"file://{root}")
    store = open_store(loc)
    await store.put("a", b"1")
    await store.put("dir/b", b"2")
    feed = PollFeed(store, loc, every=0.001, batch=1, stale_after=60)
    first = await receive_all(feed)
    assert ops(first) == [("put", "a"), ("put", "dir/b")]  # a backfill, one message per batch
    assert all(e.container_id == loc.container_id and e.etag for m in first for e in m.events)
    # not acked (the ledger commit failed): nothing new until it is stale, then the same again
    assert await feed.receive() == []
    feed.stale_after = 0  # the unacked poll is now stale
    again = await feed.receive()
    feed.stale_after = 60
    again += await receive_all(feed)
    assert ops(again) == ops(first)
    await feed.ack(again)
    assert await receive_all(feed) == []  # no change since the acked listing
    await store.put("a", b"changed")
    await store.delete("dir/b")
    await store.put("c", b"3")
    changes = await receive_all(feed)
    assert ops(changes) == [("delete", "dir/b"), ("put", "a"), ("put", "c")]
    put_a = next(e for m in changes for e in m.events if e.key == "a")
    first_a = next(e for m in first for e in m.events if e.key == "a")
    assert put_a.etag != first_a.etag
    await feed.ack(changes)
    assert await receive_all(feed) == []


async def test_prefix_is_respected():
    name = unique_name("mem")
    loc = parse_location(f"memory://{name}/in")
    store = open_store(loc)
    await store.put("in/x", b"1")
    await store.put("out/y", b"2")
    feed = PollFeed(store, loc, every=0.001)
    assert ops(await receive_all(feed)) == [("put", "in/x")]
