"""Reconciler on memory stores: the merge-join, what counts as a difference, dry runs, and
resuming a run whose listing failed half way from its checkpoint."""

from __future__ import annotations

from cloudmirror.config import validate_config
from cloudmirror.ledger.runs import Runs
from cloudmirror.replication.reconcile import Reconciler, merge
from cloudmirror.replication.transfer import Endpoint
from cloudmirror.services.runtime import Service
from cloudmirror.stores.base import SOURCE_VERSION_KEY, ListOptions, PutOptions, RetryableError
from tests.conftest import unique_name


async def _aiter(items):
    for i in items:
        yield i


async def test_merge_join_of_two_sorted_listings():
    got = [(k, a, b) async for k, a, b in merge(_aiter([("a", 1), ("c", 3), ("d", 4)]),
                                                _aiter([("b", 20), ("c", 30), ("e", 50)]))]
    assert got == [("a", 1, None), ("b", None, 20), ("c", 3, 30), ("d", 4, None), ("e", None, 50)]


class FailingList:
    """Wraps a store: its listing fails after `after` objects (once)."""

    def __init__(self, store, after: int):
        self.store, self.after = store, after

    def __getattr__(self, name):
        return getattr(self.store, name)

    async def list(self, opts: ListOptions | None = None):
        n = 0
        async for m in self.store.list(opts):
            if self.after is not None and n == self.after:
                self.after = None
                raise RetryableError("connection reset while listing")
            n += 1
            yield m


def _service(sqlite_url: str, src: str, dst: str, **mirror) -> Service:
    cfg = validate_config({"ledger": sqlite_url, "mirrors": [
        {"name": "m", "source": src, "targets": [dst], "events": [], **mirror}]})
    return Service(cfg)


async def test_differences_dry_run_and_resume_after_a_failed_listing(sqlite_url):
    src, dst = f"memory://{unique_name('src')}", f"memory://{unique_name('dst')}"
    svc = _service(sqlite_url, src, dst)
    s, d = svc.endpoint(src).store, svc.endpoint(dst).store
    for i in range(1300):
        await s.put(f"k{i:05}", f"v{i}".encode())
    await d.put("k00000", b"v0")  # in sync
    await d.put("k00001", b"stale")  # size differs
    await d.put("k00002", b"vX")  # same size, MD5 differs
    await d.put("zz-extra", b"x")
    m, t = svc.config.mirrors[0], svc.config.mirrors[0].targets[0]
    dry = await Reconciler(m, t, svc.endpoint, svc.ledger).run(dry_run=True)
    assert (dry.listed, dry.missing, dry.stale, dry.extra, dry.recorded) == (1300, 1297, 2, 1, 0)
    assert Runs(svc.ledger).list() == [] and svc.ledger.backlog() == 0

    failing = Endpoint(svc.endpoint(src).location, FailingList(s, after=1100))
    endpoint = lambda url: failing if url == src else svc.endpoint(url)  # noqa: E731 - a one-line lambda reads better here
    try:
        await Reconciler(m, t, endpoint, svc.ledger).run()
        raise AssertionError("the listing should have failed")
    except RetryableError:
        pass
    [run] = Runs(svc.ledger).list()
    assert run["status"] == "failed" and run["position"] == "k00999"  # two pages of 500 recorded
    recorded = svc.ledger.backlog()
    assert recorded == 999  # 1000 keys listed, k00000 in sync, none of the extra yet
    again = await Reconciler(m, t, svc.endpoint, svc.ledger).run()
    assert again.run_id == run["id"] and again.listed == 300  # resumed after k00999
    assert Runs(svc.ledger).get(run["id"])["status"] == "finished"
    # the rest; the extra stays: cloudmirror did not write it (deletes: replicate)
    assert (again.extra, again.foreign, again.deletes) == (1, 1, 0)
    assert svc.ledger.backlog() == 999 + 300
    await svc.close()


async def test_unknown_md5_falls_back_to_the_replica_marker(sqlite_url):
    src, dst = f"memory://{unique_name('src')}", f"memory://{unique_name('dst')}"
    svc = _service(sqlite_url, src, dst, deletes="ignore")
    s, d = svc.endpoint(src).store, svc.endpoint(dst).store
    put = await s.put("k", b"same")
    await d.put("k", b"same", PutOptions(metadata={SOURCE_VERSION_KEY: put.etag or ""}))
    await d.put("kept-extra", b"x")
    m, t = svc.config.mirrors[0], svc.config.mirrors[0].targets[0]
    rec = Reconciler(m, t, svc.endpoint, svc.ledger)
    p = await rec.run(dry_run=True)
    assert (p.stale, p.extra, p.extra_kept) == (0, 1, 1)  # deletes: ignore -> reported only
    await svc.close()
