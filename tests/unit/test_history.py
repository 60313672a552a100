"""All-versions mode on memory stores: every source version reaches the target oldest first,
a crash between two copies resumes without duplicates, deletes and foreign writes converge,
and unversioned buckets are refused with a reason. Plus the worker and config wiring."""

from __future__ import annotations

import pytest

from cloudmirror.config import ConfigError, validate_config
from cloudmirror.ledger.repo import Ledger, NewVersion, TargetPlan
from cloudmirror.location import parse_location
from cloudmirror.replication.history import key_versions, sync_history
from cloudmirror.replication.transfer import Endpoint
from cloudmirror.stores import open_store
from cloudmirror.stores.base import (
    REPLICA_MARKER,
    SOURCE_VERSION_KEY,
    FatalError,
    GetOptions,
    PutOptions,
    RetryableError,
)
from cloudmirror.stores.memory import reset_memory_stores, set_versioning
from tests.unit.test_worker import drain

SRC, DST = "memory://hsrc", "memory://hdst"


@pytest.fixture
def stores():
    reset_memory_stores()
    set_versioning("hsrc")
    set_versioning("hdst")
    eps = {u: Endpoint(parse_location(u), open_store(parse_location(u))) for u in (SRC, DST)}
    yield eps[SRC], eps[DST]
    reset_memory_stores()


def mirror(**kw):
    cfg = validate_config({"mirrors": [{"name": "m", "source": SRC, "targets": [DST], "versions": "all", **kw}]})
    return cfg.mirrors[0], cfg.workers


async def contents(ep: Endpoint, key: str) -> list[bytes]:
    out = []
    for v in await key_versions(ep.store, ep.location.full_key(key)):
        if v.is_delete_marker:
            continue
        got = await ep.store.get(key, GetOptions(version_id=v.version_id))
        out.append(b"".join([c async for c in got.body]))
    return out


async def write(ep: Endpoint, key: str, *bodies: bytes) -> None:
    for b in bodies:
        await ep.store.put(key, b, PutOptions(content_type="text/plain", metadata={"n": b.decode()}))


async def sync(src, dst, key="k", **kw):
    m, settings = mirror(**kw)
    return await sync_history(src, dst, key, mirror=m, target=m.targets[0], settings=settings)


async def test_five_versions_reach_the_target_in_order_once(stores):
    src, dst = stores
    bodies = [f"v{i}".encode() for i in range(1, 6)]
    await write(src, "k", *bodies)
    done = await sync(src, dst)
    assert done.copied == 5
    assert await contents(dst, "k") == bodies
    newest = await dst.store.head("k")
    assert newest.metadata[REPLICA_MARKER] == "m" and newest.metadata["n"] == "v5"
    assert newest.metadata[SOURCE_VERSION_KEY] == (await src.store.head("k")).version_id
    again = await sync(src, dst)
    assert again.copied == 0 and await contents(dst, "k") == bodies
    await write(src, "k", b"v6")
    assert (await sync(src, dst)).copied == 1
    assert await contents(dst, "k") == bodies + [b"v6"]


async def test_a_crash_between_copies_resumes_without_duplicates(stores):
    src, dst = stores
    bodies = [f"v{i}".encode() for i in range(1, 6)]
    await write(src, "k", *bodies)
    # the third copy fails (two landed), as if the process died there
    m, settings = mirror()
    calls = {"n": 0}
    real_put = dst.store.put

    async def put_that_dies(key, body, opts=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RetryableError("connection reset")
        return await real_put(key, body, opts)

    dst.store.put = put_that_dies  # the memory store copies server-side: make it stream
    dst.store.can_copy_from = lambda loc: False
    with pytest.raises(RetryableError):
        await sync_history(src, dst, "k", mirror=m, target=m.targets[0], settings=settings)
    assert await contents(dst, "k") == bodies[:2]
    done = await sync_history(src, dst, "k", mirror=m, target=m.targets[0], settings=settings)
    assert done.copied == 3
    assert await contents(dst, "k") == bodies


async def test_a_source_delete_ends_the_target_history_with_a_delete(stores):
    src, dst = stores
    await write(src, "k", b"a", b"b")
    await src.store.delete("k")  # a delete marker
    done = await sync(src, dst)
    assert done.copied == 2 and done.deleted
    assert await contents(dst, "k") == [b"a", b"b"]
    assert not [m async for m in dst.store.list()], "the key is deleted on the target"
    kept = await sync(src, dst, deletes="ignore")
    assert kept.copied == 0 and not kept.deleted


async def test_deletes_ignore_keeps_the_target_current(stores):
    src, dst = stores
    await write(src, "k", b"a")
    await src.store.delete("k")
    done = await sync(src, dst, deletes="ignore")
    assert done.copied == 1 and not done.deleted
    assert (await dst.store.head("k")).metadata["n"] == "a"


async def test_a_write_behind_our_back_is_covered_by_the_source_newest(stores):
    src, dst = stores
    await write(src, "k", b"a", b"b")
    await sync(src, dst)
    await dst.store.put("k", b"intruder", PutOptions())
    done = await sync(src, dst)
    assert done.copied == 1
    assert await contents(dst, "k") == [b"a", b"b", b"intruder", b"b"]


async def test_unversioned_buckets_are_refused_with_a_reason(stores):
    src, dst = stores
    set_versioning("hdst", False)
    await write(src, "k", b"a", b"b")
    with pytest.raises(FatalError, match="versioned target"):
        await sync(src, dst)
    set_versioning("hdst", True)
    set_versioning("hsrc", False)
    await write(src, "u", b"x")
    with pytest.raises(FatalError, match="versioned source"):
        await sync(src, dst, key="u")


async def test_versions_all_with_a_disk_is_a_config_error_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match="versions") as e:
        validate_config({"mirrors": [{"name": "m", "source": SRC, "targets": [f"file://{tmp_path}"],
                                      "versions": "all"}]})
    assert "targets[0]" in str(e.value)
    with pytest.raises(ConfigError, match="versions"):
        validate_config({"mirrors": [{"name": "m", "source": SRC, "targets": [DST], "versions": "some"}]})


async def test_the_worker_copies_the_history_whatever_version_the_events_name(stores, sqlite_url):
    src, dst = stores
    bodies = [f"v{i}".encode() for i in range(1, 6)]
    await write(src, "k", *bodies)
    cfg = validate_config({"ledger": sqlite_url, "workers": {"poll_interval": 0.01},
                           "mirrors": [{"name": "m", "source": SRC, "targets": [DST], "versions": "all"}]})
    ledger = Ledger(sqlite_url)
    try:
        # five events without version ids, the last one first: only one job survives, and it
        # copies the whole history
        for i in (5, 1, 2, 3, 4):
            ledger.record([NewVersion(mirror="m", key="k", token=str(i), op="put", source_time=float(i),
                                      sequencer=f"{i:04d}", targets=[TargetPlan(DST)])])
        await drain(cfg, ledger, lambda url: {SRC: src, DST: dst}[url])
        assert await contents(dst, "k") == bodies
        done = [r for r in ledger.replications_for("m", "k") if r["status"] == "completed"]
        assert len(done) == 1 and done[0]["detail"] == "copied 5 versions"
    finally:
        ledger.close()
