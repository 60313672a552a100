"""Backfill and reconciliation across providers: every provider is a source and a target at
least once. Objects that existed before the mirror are backfilled; then the target is
changed behind cloudmirror's back (overwritten, deleted, an extra object) and a reconcile
repairs it; a dry run in between changes nothing."""

from __future__ import annotations

import pytest

from cloudmirror.stores.base import PutOptions
from tests.integration.harness import config, drained, eventually, running
from tests.integration.providers import Provider, same, snapshot
from tests.integration.test_any_to_any import cloud  # noqa: F401 - the fixture

PAIRS = [("gcs", "azure"), ("azure", "file"), ("file", "gcs"), ("s3", "azure"), ("azure", "s3")]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("pair", PAIRS, ids=[f"{s}-to-{t}" for s, t in PAIRS])
async def test_backfill_then_repair_across_providers(pair, cloud, tmp_path, sqlite_url):  # noqa: F811 - the `cloud` fixture imported above
    src_kind, dst_kind = pair
    src_p, dst_p = Provider(src_kind, cloud, tmp_path), Provider(dst_kind, cloud, tmp_path)
    src, dst = src_p.new_location(), dst_p.new_location(second=True)
    try:
        src_store = src_p.store(src)
        for i in range(30):  # existing objects, announced by no event
            await src_store.put(f"pre/{i:03d}.txt", f"object {i}".encode(), PutOptions(metadata={"i": str(i)}))
        # replicate_all: the extra object below was not written by cloudmirror (with the default
        # `replicate` it is kept: tests/integration/test_reconcile.py); 1 delete is within 10 % of 30
        mirror = {"name": "m", "source": src, "targets": [dst], "backfill": True, "reconcile_grace": 0,
                  "deletes": "replicate_all",
                  "events": [{"poll": "1h"}] if src_kind == "file" else []}
        cfg = config(sqlite_url, [mirror])
        async with running(cfg) as r:
            await eventually(lambda: same(src, dst), timeout=120, message=f"{src_kind} backfilled to {dst_kind}")
            await eventually(drained(r.ledger), timeout=60, message="backlog drained")
            # each object copied once: by the backfill, or for a disk by its poll's first listing
            copies = [i for i in range(30) for x in r.ledger.replications_for("m", f"pre/{i:03d}.txt")
                      if x["status"] == "completed" and x["detail"] is None]
            assert copies == list(range(30))

            dst_store = dst_p.store(dst)
            from cloudmirror.location import parse_location

            loc = parse_location(dst)
            await dst_store.put(loc.full_key("pre/000.txt"), b"overwritten behind our back", PutOptions())
            await dst_store.delete(loc.full_key("pre/001.txt"))
            await dst_store.put(loc.full_key("extra.txt"), b"not from the source", PutOptions())
            before = await snapshot(dst)

            [dry] = await r.service.reconcile("m", dry_run=True)
            assert (dry.missing, dry.stale, dry.extra) == (1, 1, 1)
            assert await snapshot(dst) == before, "a dry run changed the target"

            [run] = await r.service.reconcile("m")
            assert (run.missing, run.stale, run.extra, run.deletes, run.deletes_refused) == (1, 1, 1, 1, False)
            await eventually(lambda: same(src, dst), timeout=60, message="repaired")
            await eventually(drained(r.ledger), timeout=60, message="backlog drained")
            assert r.ledger.count(mirror="m", status="failed") == 0
    finally:
        await src_p.close()
        await dst_p.close()
