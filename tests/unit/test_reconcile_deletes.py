"""Deletes cannot wipe data (issue 11): on memory stores with a running service, a reconcile
deletes on a target only the objects this mirror wrote (the ledger's record of its copies,
or its replica marker) unless the mirror says `deletes: replicate_all`; above
`max_deletes` it deletes nothing, reports the count and a sample, and needs `force`; a
source delete event never removes an object cloudmirror did not write."""

from __future__ import annotations

import time

from cloudmirror.config import validate_config
from cloudmirror.ledger.repo import NewVersion, TargetPlan
from cloudmirror.location import parse_location
from cloudmirror.stores import open_store
from cloudmirror.stores.base import REPLICA_MARKER, NotFound, PutOptions
from tests.conftest import unique_name
from tests.integration.harness import FAST_WORKERS, eventually, running


def make_config(ledger_url: str, **mirror):
    src, dst = f"memory://{unique_name('src')}", f"memory://{unique_name('dst')}"
    return validate_config({"ledger": ledger_url, "workers": FAST_WORKERS, "mirrors": [
        {"name": "m", "source": src, "targets": [dst], "events": [], "reconcile_grace": 0, **mirror}]})


def store(url: str):
    return open_store(parse_location(url))


async def names(url: str) -> set[str]:
    return {o.key async for o in store(url).list()}


async def body(url: str, key: str) -> bytes | None:
    try:
        got = await store(url).get(key)
    except NotFound:
        return None
    return b"".join([c async for c in got.body])


def skipped_details(ledger, key: str) -> list[str]:
    return [r["detail"] for r in ledger.replications_for("m", key) if r["status"] == "skipped"]


async def test_replicate_deletes_only_what_the_mirror_wrote(sqlite_url):
    cfg = make_config(sqlite_url)
    m = cfg.mirror("m")
    src, dst = m.source, m.targets[0].url
    for i in range(30):  # a target that was not empty: none of it may go
        await store(dst).put(f"old/{i:02}", f"existing {i}".encode())
    await store(dst).put("old/marked-by-another", b"x", PutOptions(metadata={REPLICA_MARKER: "other-mirror"}))
    for i in range(6):
        await store(src).put(f"new/{i}", f"source {i}".encode())
    before = await names(dst)
    async with running(cfg) as r:
        [dry] = await r.service.reconcile("m", dry_run=True)
        assert (dry.missing, dry.extra, dry.foreign, dry.deletes, dry.deletes_refused) == (6, 31, 31, 0, False)
        [p] = await r.service.reconcile("m")
        assert (p.kind, p.missing, p.extra, p.extra_kept, p.foreign, p.deletes) == ("backfill", 6, 31, 31, 31, 0)
        await eventually(lambda: r.ledger.backlog() == 0, message="copies made")
        assert await names(dst) == before | {f"new/{i}" for i in range(6)}  # copied; nothing that was there went

        # behind the mirror's back (no events): new/0 deleted on the source, new/1 as well and
        # its replica overwritten on the target by someone else, new/2 deleted and its replica
        # rewritten with the same bytes but without the marker (the ledger still knows it)
        await store(src).delete("new/0")
        await store(src).delete("new/1")
        await store(dst).put("new/1", b"someone else's data")
        await store(src).delete("new/2")
        await store(dst).put("new/2", b"source 2")
        [p] = await r.service.reconcile("m")
        assert (p.kind, p.extra, p.foreign, p.deletes, p.deletes_refused) == ("reconcile", 34, 32, 2, False)
        assert sorted(p.delete_sample) == ["new/0", "new/2"] and p.delete_limit == 4  # 10 % of 37 listed, rounded up
        await eventually(lambda: r.ledger.backlog() == 0, message="deletes made")
        assert await names(dst) == before | {"new/1", "new/3", "new/4", "new/5"}
        assert await body(dst, "new/1") == b"someone else's data"


async def test_replicate_all_above_max_deletes_deletes_nothing_until_forced(sqlite_url):
    cfg = make_config(sqlite_url, deletes="replicate_all")  # max_deletes: 10 % by default
    m = cfg.mirror("m")
    src, dst = m.source, m.targets[0].url
    for i in range(25):
        await store(dst).put(f"old/{i:02}", b"existing")
    await store(src).put("new", b"from the source")
    async with running(cfg) as r:
        [dry] = await r.service.reconcile("m", dry_run=True)
        assert (dry.deletes, dry.delete_limit, dry.deletes_refused) == (25, 3, True)
        assert dry.delete_sample == [f"old/{i:02}" for i in range(20)] and "would delete 25" in dry.refusal

        [p] = await r.service.reconcile("m")
        assert (p.deletes, p.delete_limit, p.deletes_refused) == (25, 3, True)
        assert p.delete_sample == dry.delete_sample and "nothing deleted" in p.refusal
        await eventually(lambda: r.ledger.backlog() == 0, message="the copy made")
        assert await names(dst) == {f"old/{i:02}" for i in range(25)} | {"new"}  # copied, nothing deleted
        [detail] = skipped_details(r.ledger, "old/07")
        assert detail.startswith("not deleted:") and "max_deletes" in detail

        [forced] = await r.service.reconcile("m", force=True)
        assert (forced.deletes, forced.deletes_refused) == (25, False)
        await eventually(lambda: r.ledger.backlog() == 0, message="the deletes made")
        assert await names(dst) == {"new"}


async def test_a_count_limit_and_deletes_within_it(sqlite_url):
    cfg = make_config(sqlite_url, deletes="replicate_all", max_deletes=3)
    m = cfg.mirror("m")
    for i in range(3):
        await store(m.targets[0].url).put(f"extra/{i}", b"x")
    async with running(cfg) as r:
        [p] = await r.service.reconcile("m")
        assert (p.deletes, p.delete_limit, p.deletes_refused) == (3, 3, False)
        await eventually(lambda: r.ledger.backlog() == 0)
        assert await names(m.targets[0].url) == set()


async def test_a_source_delete_event_never_removes_an_object_cloudmirror_did_not_write(sqlite_url):
    cfg = make_config(sqlite_url)
    m = cfg.mirror("m")
    src, dst, t = m.source, m.targets[0].url, m.targets[0].name
    await store(dst).put("pre-existing", b"the target's own object")  # a key the source deletes too
    await store(dst).put("another-mirrors", b"y", PutOptions(metadata={REPLICA_MARKER: "other-mirror"}))
    await store(src).put("copied", b"copied by cloudmirror")
    async with running(cfg) as r:
        await r.service.reconcile("m", target=t)
        await eventually(lambda: r.ledger.backlog() == 0)
        assert await body(dst, "copied") == b"copied by cloudmirror"
        await store(src).delete("copied")
        now = time.time()
        # the source's delete events for both keys (as an event feed would announce them)
        r.ledger.record([NewVersion(mirror="m", key=k, token=f"e:delete|{k}", op="delete", source_time=now,
                                    targets=[TargetPlan(t)]) for k in ("pre-existing", "another-mirrors", "copied")])
        r.service.pool.wake()
        await eventually(lambda: r.ledger.backlog() == 0, message="the deletes carried out")
        assert await body(dst, "pre-existing") == b"the target's own object"
        assert await body(dst, "another-mirrors") == b"y"
        assert await body(dst, "copied") is None
        assert skipped_details(r.ledger, "pre-existing") == [
            "the target object was not written by cloudmirror; left in place"]


async def test_cli_reconcile_refuses_above_max_deletes_and_deletes_with_force(sqlite_url, tmp_path):
    import asyncio
    import json

    import yaml
    from typer.testing import CliRunner

    from cloudmirror.cli import app
    from cloudmirror.ledger.repo import Ledger

    cfg = make_config(sqlite_url, deletes="replicate_all")
    dst = cfg.mirror("m").targets[0].url
    for i in range(5):
        await store(dst).put(f"extra/{i}", b"x")
    path = tmp_path / "cloudmirror.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    def run(*args: str):
        return CliRunner().invoke(app, ["reconcile", "m", "--json", "-c", str(path), *args])

    got = await asyncio.to_thread(run)
    assert got.exit_code == 1 and "deletes refused on 1 target(s)" in got.output, got.output
    [row] = json.loads(got.stdout[:got.stdout.rindex("]") + 1])
    assert (row["deletes"], row["delete_limit"], row["deletes_refused"]) == (5, 1, True)
    got = await asyncio.to_thread(run, "--force")
    assert got.exit_code == 0, got.output
    ledger = Ledger(sqlite_url)
    try:
        assert ledger.backlog() == 5  # the deletes, pending for the workers
    finally:
        ledger.close()
