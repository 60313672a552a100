"""Any source to any target: every (source, target) pair of {s3, gcs, azure, file}, through
the real feeds (SQS from moto, Pub/Sub from fake-gcs-server, Event Grid messages in an
Azurite queue, polling for disks), with the ledger on SQLite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from cloudmirror.stores.base import PutOptions
from tests.integration.harness import config, eventually, running
from tests.integration.providers import PROVIDERS, Provider, same, snapshot

MiB = 1024 * 1024
BIG = 64 * MiB
HEADERS = dict(content_type="text/plain; charset=utf-8", cache_control="max-age=60",
               content_disposition='attachment; filename="report.txt"', content_language="de-CH")


@pytest.fixture
def cloud(tmp_path, request):
    """The local cloud's handles; emulators are started lazily, only for the pair's providers."""
    ctx: dict = {}
    kinds = set(request.node.callspec.params.get("pair", ("s3", "s3")))
    if "s3" in kinds:
        ctx["s3"] = request.getfixturevalue("moto_endpoint")
    if "gcs" in kinds:
        ctx["gcs"] = request.getfixturevalue("gcs_with_events")
        ctx["pubsub"] = request.getfixturevalue("pubsub_host")
        os.environ["PUBSUB_EMULATOR_HOST"] = ctx["pubsub"]
    if "azure" in kinds:
        ctx["azurite"] = request.getfixturevalue("azurite")
    return ctx


async def big_body(size: int, chunk: int = 4 * MiB) -> AsyncIterator[bytes]:
    block = os.urandom(chunk)
    for off in range(0, size, chunk):
        yield block[: min(chunk, size - off)]


async def sizes(url: str, provider: Provider) -> dict[str, int]:
    from cloudmirror.location import parse_location
    from cloudmirror.stores.base import ListOptions

    loc = parse_location(url)
    return {m.key[len(loc.prefix):]: m.size async for m in provider.store(url).list(ListOptions(prefix=loc.prefix))}


PAIRS = [(s, t) for s in PROVIDERS for t in PROVIDERS]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("pair", PAIRS, ids=[f"{s}-to-{t}" for s, t in PAIRS])
async def test_mirror_converges_between_any_two_providers(pair, cloud, tmp_path, sqlite_url):
    await assert_pair_converges(pair, cloud, tmp_path, sqlite_url)


@pytest.mark.postgres
@pytest.mark.timeout(240)
@pytest.mark.parametrize("pair", [("gcs", "azure"), ("azure", "gcs")], ids=["gcs-to-azure", "azure-to-gcs"])
async def test_cross_provider_mirror_on_postgres(pair, cloud, tmp_path, pg_url):
    """The same with the ledger on PostgreSQL (the several-workers setup)."""
    await assert_pair_converges(pair, cloud, tmp_path, pg_url)


async def assert_pair_converges(pair: tuple[str, str], cloud: dict, tmp_path, ledger_url: str) -> None:
    src_kind, dst_kind = pair
    src_p = Provider(src_kind, cloud, tmp_path)
    dst_p = src_p if dst_kind == src_kind else Provider(dst_kind, cloud, tmp_path)
    cloud["schema"] = "cloudevents" if dst_kind in ("azure", "file") else "eventgrid"
    src = src_p.new_location()
    dst = dst_p.new_location(second=True)
    mirror = {"name": "m", "source": src, "targets": [dst], "events": [src_p.feed_for(src)]}
    cfg = config(ledger_url, [mirror])
    try:
        async with running(cfg) as r:
            opts = PutOptions(metadata={"owner": "ann", "x-note": "hello world"}, tags={"team": "blue"}, **HEADERS)
            await src_p.put(src, "plain.txt", b"version one", opts)
            await src_p.put(src, "with space/ünïcödé 日本.txt", "ü".encode(), PutOptions(content_type="text/plain"))
            await src_p.put(src, "zero-byte", b"")
            await src_p.put(src, "to-delete", b"short-lived")
            await src_p.put(src, "big/64MiB.bin", big_body(BIG),
                            PutOptions(size=BIG, part_size=8 * MiB, content_type="application/octet-stream",
                                       metadata={"kind": "big"}))
            # let the first copies land, then overwrite and delete
            await eventually(lambda: _has(dst_p, dst, "to-delete", "plain.txt"), timeout=120,
                             message="the first writes did not reach the target")
            await src_p.put(src, "plain.txt", b"version two, longer", opts)
            await src_p.delete(src, "to-delete")
            want = await sizes(src, src_p)
            assert want == {"plain.txt": 19, "with space/ünïcödé 日本.txt": 2, "zero-byte": 0, "big/64MiB.bin": BIG}

            async def caught_up():
                return await sizes(dst, dst_p) == want and r.ledger.backlog() == 0
            await eventually(caught_up, timeout=150, interval=0.2, message=f"{src_kind} -> {dst_kind} did not converge")
            await eventually(lambda: same(src, dst), timeout=30, interval=0.5)
            snap = await snapshot(dst)
            assert snap["plain.txt"]["metadata"] == {"owner": "ann", "x-note": "hello world"}
            assert snap["plain.txt"]["tags"] == {"team": "blue"}
            assert {k: snap["plain.txt"][k] for k in HEADERS} == HEADERS
            assert r.ledger.count(mirror="m", status="failed") == 0
            assert r.ledger.count(mirror="m", status="completed") >= 6
    finally:
        await src_p.close()
        await dst_p.close()


async def _has(p: Provider, url: str, *keys: str) -> bool:
    have = await sizes(url, p)
    return all(k in have for k in keys)
