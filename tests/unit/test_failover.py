"""Failover, failback and drills on in-process memory stores with a running service: the
data at risk of a forced failover is exactly the versions not replicated; a planned one
drains first (RPO 0) or aborts and changes nothing; a failback settles conflicts by each
policy, restores the old primary's unreplicated writes and switches back; a drill changes
nothing and is in the report."""

from __future__ import annotations

import contextlib
import hashlib
import json

import pytest

from cloudmirror.config import validate_config
from cloudmirror.dr import drills, failover
from cloudmirror.dr.failback import conflict_key
from cloudmirror.errors import ConflictError, InvalidInput, NotFoundError
from cloudmirror.ledger.failovers import Failovers
from cloudmirror.ledger.mirrors import MirrorSpecs
from cloudmirror.location import parse_location
from cloudmirror.reports.data import build_data
from cloudmirror.services import mirrors
from cloudmirror.stores import open_store
from cloudmirror.stores.base import NotFound, PutOptions
from tests.conftest import unique_name
from tests.integration.harness import FAST_WORKERS, eventually, running

POLL = [{"poll": 0.05}]


def make_config(ledger_url: str, targets: int = 2, **mirror):
    src = f"memory://{unique_name('old')}"
    dsts = [f"memory://{unique_name('dst')}" for _ in range(targets)]
    return validate_config({"ledger": ledger_url, "workers": {**FAST_WORKERS, "poll_interval": 0.02},
                            "mirrors": [{"name": "m", "source": src, "targets": dsts, "events": POLL, **mirror}]})


@contextlib.asynccontextmanager
async def service(cfg):
    """A running service whose mirrors are in the ledger (seeded at its start)."""
    async with running(cfg) as r:
        await eventually(lambda: [s.name for s in MirrorSpecs(r.ledger).all()] == ["m"], message="seeded")
        yield r


def store(url: str):
    return open_store(parse_location(url))


async def put(url: str, key: str, data: bytes) -> None:
    await store(url).put(key, data, PutOptions(size=len(data)))


async def read(url: str, key: str) -> bytes | None:
    try:
        got = await store(url).get(key)
    except NotFound:
        return None
    return b"".join([c async for c in got.body])


async def keys(url: str) -> dict[str, str]:
    s = store(url)
    out = {}
    async for o in s.list():
        out[o.key] = hashlib.md5(await read(url, o.key)).hexdigest()  # noqa: S324 - MD5 as a content checksum, not for security
    return out


def holds(url: str, key: str, data: bytes):
    async def check():
        return await read(url, key) == data
    return check


async def assert_state_unchanged(urls: list[str], before: dict[str, dict]) -> None:
    for u in urls:
        assert await keys(u) == before[u], u


async def pause(r, cfg, paused: bool) -> None:
    mirrors.set_paused(cfg, r.ledger, "m", paused)
    await eventually(lambda: r.service.config.mirror("m").paused is paused, message="service picked up the pause")


def pending_to(ledger, target: str) -> int:
    return Failovers(ledger).backlog_to("m", target)["objects"]


# ---------------------------------------------------------------- forced: data at risk
async def test_forced_failover_lists_exactly_the_versions_not_replicated(ledger_url):
    cfg = make_config(ledger_url)
    m = cfg.mirror("m")
    old, p, t2 = m.source, m.targets[0].url, m.targets[1].url
    async with service(cfg) as r:
        await put(old, "done.txt", b"replicated")
        await eventually(holds(p, "done.txt", b"replicated"))
        await pause(r, cfg, True)
        await put(old, "a.txt", b"at risk a")
        await put(old, "b/c.txt", b"at risk c!")
        await eventually(lambda: pending_to(r.ledger, p) == 2, message="writes recorded, not copied")

        fo = await failover.failover(r.service, "m", to=p, mode="forced", events=POLL, requested_by="test")

        assert fo["status"] == "completed" and fo["kind"] == "forced" and fo["switched_at"] is not None
        assert fo["at_risk_objects"] == 2 and fo["at_risk_bytes"] == len(b"at risk a") + len(b"at risk c!")
        assert fo["rpo_seconds"] > 0 and fo["old_is_target"] is False
        at_risk = failover.failover_objects(r.ledger, fo["id"], kind="at_risk").items
        seen = {k: v for k in ("a.txt", "b/c.txt") for v in r.ledger.replications_for("m", k)
                if v["target"] == p}
        assert {(o["key"], o["op"], o["size"], o["source_time"], o["target"]) for o in at_risk} == {
            ("a.txt", "put", 9, seen["a.txt"]["source_time"], p),
            ("b/c.txt", "put", 10, seen["b/c.txt"]["source_time"], p)}
        assert mirrors.get_mirror(r.ledger, "m")["active"] == p
        report = build_data(cfg, r.ledger, mirror="m", since=fo["started_at"] - 60, until=fo["finished_at"] + 60)
        assert [(f["kind"], f["to"], f["outcome"]) for f in report["failovers"]] == [
            ("forced", p, f"completed: 2 object(s) at risk ({fo['at_risk_bytes']} bytes)")]
        # the service now reads the new primary; the old one receives nothing until the failback
        await eventually(lambda: r.service.config.mirror("m").source == p, message="reversed")
        assert [t.url for t in r.service.config.mirror("m").targets] == [t2]
        with pytest.raises(ConflictError, match="already failed over"):
            await failover.failover(r.service, "m", to=t2, mode="forced")


# ---------------------------------------------------------------- planned
async def test_planned_failover_drains_first_and_records_rpo_zero(sqlite_url):
    cfg = make_config(sqlite_url, targets=1)
    m = cfg.mirror("m")
    old, p = m.source, m.targets[0].url
    async with service(cfg) as r:
        for i in range(5):
            await put(old, f"k{i}", b"x" * i)
        await eventually(lambda: r.ledger.count(mirror="m") == 5, message="writes recorded")
        fo = await failover.failover(r.service, "m", to=p, mode="planned", fence=True, drain_timeout_s=30,
                                     events=POLL)
        assert fo["status"] == "completed" and fo["drained"] is True and fo["fence"] is True
        assert fo["fenced_at"] is not None and fo["rpo_seconds"] == 0 and fo["at_risk_objects"] == 0
        # the memory store cannot fence: the fence is an intent, and the record says so
        assert fo["detail"]["fence"] == {"applied": False, "reason": "not supported by memory: writes are not blocked"}
        assert fo["old_is_target"] is True
        # writes to the new primary flow back to the old one while failed over
        await put(p, "new.txt", b"written on the new primary")
        await eventually(holds(old, "new.txt", b"written on the new primary"))


async def test_planned_failover_that_cannot_drain_aborts_and_changes_nothing(sqlite_url):
    cfg = make_config(sqlite_url, targets=1)
    m = cfg.mirror("m")
    async with service(cfg) as r:
        await pause(r, cfg, True)
        await put(m.source, "stuck.txt", b"stuck")
        await eventually(lambda: pending_to(r.ledger, m.targets[0].url) == 1)
        with pytest.raises(ConflictError, match="aborted"):
            await failover.failover(r.service, "m", to=m.targets[0].url, drain_timeout_s=0.3)
        assert mirrors.get_mirror(r.ledger, "m")["active"] == m.source
        [rec] = failover.list_failovers(r.ledger, mirror="m").items
        assert rec["status"] == "aborted" and "did not drain" in rec["error"] and rec["switched_at"] is None


async def test_bad_requests_are_refused_with_the_field(sqlite_url):
    cfg = make_config(sqlite_url, targets=1)
    async with service(cfg) as r:
        with pytest.raises(NotFoundError):
            await failover.failover(r.service, "nope", to="memory://x")
        with pytest.raises(InvalidInput, match="^to: .*not a target"):
            await failover.failover(r.service, "m", to=cfg.mirror("m").source)
        with pytest.raises(InvalidInput, match="^mode"):
            await failover.failover(r.service, "m", to=cfg.mirror("m").targets[0].url, mode="sideways")
        with pytest.raises(InvalidInput, match=r"^events\[0\]"):
            await failover.failover(r.service, "m", to=cfg.mirror("m").targets[0].url, events=[{"poll": -1}])
        with pytest.raises(ConflictError, match="not failed over"):
            await failover.failback(r.service, "m")
        with pytest.raises(InvalidInput, match="^policy"):
            await failover.failback(r.service, "m", policy="coin_toss")
        assert failover.list_failovers(r.ledger).items == []


# ---------------------------------------------------------------- failback
@pytest.mark.parametrize("policy", ["newest_wins", "primary_wins", "keep_both"])
async def test_failback_settles_conflicts_restores_and_switches_back(sqlite_url, policy):
    cfg = make_config(sqlite_url, max_deletes=0)
    m = cfg.mirror("m")
    old, p, t2 = m.source, m.targets[0].url, m.targets[1].url
    async with service(cfg) as r:
        await put(old, "both.txt", b"v1")
        await put(old, "gone-on-new.txt", b"replicated, then deleted on the new primary")
        await eventually(holds(t2, "gone-on-new.txt", b"replicated, then deleted on the new primary"))
        await eventually(holds(p, "both.txt", b"v1"))
        await pause(r, cfg, True)
        await put(old, "both.txt", b"v2 on the old primary, at risk")
        await put(old, "only-old.txt", b"at risk, never replicated")
        await eventually(lambda: pending_to(r.ledger, p) == 2)
        fo = await failover.failover(r.service, "m", to=p, mode="forced", events=POLL)
        assert fo["at_risk_objects"] == 2
        await pause(r, cfg, False)
        await eventually(lambda: r.service.config.mirror("m").source == p)

        await put(p, "both.txt", b"v3 on the new primary")  # written on both sides: a conflict
        await put(p, "during.txt", b"written during the failover")
        await eventually(holds(t2, "during.txt", b"written during the failover"))  # other targets follow P
        # deleted once the restarted service's poll of P has listed it (a poll's baseline is in
        # memory: an object that vanishes before a restarted poll's first listing is left to a reconcile)
        await store(p).delete("gone-on-new.txt")
        await eventually(lambda: r.ledger.replications_for("m", "gone-on-new.txt")[-1]["op"] == "delete")

        # P's delete reaches O: 1 delete is above max_deletes (0)
        with pytest.raises(ConflictError, match=r"would delete 1 object\(s\) on memory://old-.*gone-on-new\.txt"):
            await failover.failback(r.service, "m", policy=policy, requested_by="test")
        refused = failover.list_failovers(r.ledger, kind="failback").items[0]
        assert refused["status"] == "failed" and refused["detail"]["deletes_refused"]["sample"] == ["gone-on-new.txt"]
        assert mirrors.get_mirror(r.ledger, "m")["active"] == p  # nothing switched, nothing deleted
        assert await read(old, "gone-on-new.txt") == b"replicated, then deleted on the new primary"

        fb = await failover.failback(r.service, "m", policy=policy, requested_by="test", force=True)

        assert fb["status"] == "completed" and fb["kind"] == "failback" and fb["policy"] == policy
        assert fb["of_failover"] == fo["id"] and fb["conflicts"] == 1
        [c] = failover.failover_objects(r.ledger, fb["id"], kind="conflict").items
        assert c["key"] == "both.txt" and c["op"] == "put" and c["other_time"] > c["source_time"]
        assert c["resolution"] == {"newest_wins": "primary", "primary_wins": "primary",
                                   "keep_both": "kept_both"}[policy]
        restored = {o["key"] for o in failover.failover_objects(r.ledger, fb["id"], kind="restored").items}
        assert restored == {"only-old.txt"}
        assert mirrors.get_mirror(r.ledger, "m")["active"] == old
        # writes made to the new primary during the failover reached the old primary
        assert await read(old, "during.txt") == b"written during the failover"
        assert await read(old, "both.txt") == b"v3 on the new primary"
        assert await read(old, "gone-on-new.txt") is None
        assert await read(p, "only-old.txt") == b"at risk, never replicated"
        if policy == "keep_both":
            kept = conflict_key("both.txt", fb["detail"]["conflict_suffix"].removeprefix(".conflict-"))
            assert await read(p, kept) == b"v2 on the old primary, at risk"
            assert await read(old, kept) == b"v2 on the old primary, at risk"
        # the normal direction runs again, and the restored key reaches the other targets
        await eventually(lambda: r.service.config.mirror("m").source == old)
        await put(old, "after.txt", b"after the failback")
        await eventually(holds(p, "after.txt", b"after the failback"))
        assert await read(t2, "only-old.txt") == b"at risk, never replicated"
        assert await keys(old) == await keys(p)
        assert Failovers(r.ledger).backlog_to("m", old)["objects"] == 0


async def test_newest_wins_keeps_a_later_write_on_the_old_primary(sqlite_url):
    cfg = make_config(sqlite_url, targets=1)
    m = cfg.mirror("m")
    old, p = m.source, m.targets[0].url
    async with service(cfg) as r:
        await failover.failover(r.service, "m", to=p, mode="planned", drain_timeout_s=10, events=POLL)
        await eventually(lambda: r.service.config.mirror("m").source == p)
        await put(p, "k.txt", b"new primary first")
        await eventually(holds(old, "k.txt", b"new primary first"))
        await put(old, "k.txt", b"old primary later (ignoring the fence)")
        fb = await failover.failback(r.service, "m")
        [c] = failover.failover_objects(r.ledger, fb["id"], kind="conflict").items
        assert c["resolution"] == "old_primary" and c["source_time"] > c["other_time"]
        assert await read(p, "k.txt") == b"old primary later (ignoring the fence)"
        assert await read(old, "k.txt") == b"old primary later (ignoring the fence)"


async def test_failback_leaves_a_replica_another_mirror_wrote(sqlite_url):
    cfg = make_config(sqlite_url, targets=1, max_deletes=100)
    m = cfg.mirror("m")
    old, p = m.source, m.targets[0].url
    async with service(cfg) as r:
        # the old primary holds a replica another mirror wrote (never copied to P: a replica)
        await store(old).put("theirs.txt", b"x", PutOptions(metadata={"cloudmirror-replica": "other-mirror"}))
        await failover.failover(r.service, "m", to=p, mode="planned", drain_timeout_s=10, events=POLL)
        await eventually(lambda: r.service.config.mirror("m").source == p)
        fb = await failover.failback(r.service, "m")
        assert fb["status"] == "completed" and fb["deleted"] == 0
        assert await read(old, "theirs.txt") == b"x"


def test_conflict_key_keeps_the_extension():
    assert conflict_key("a/photo.jpg", "20261126T090000Z") == "a/photo.conflict-20261126T090000Z.jpg"
    assert conflict_key("README", "S") == "README.conflict-S"
    assert conflict_key("dir.d/.env", "S") == "dir.d/.env.conflict-S"


# ---------------------------------------------------------------- drills
async def test_drill_is_recorded_reported_and_changes_nothing(ledger_url):
    cfg = make_config(ledger_url)
    m = cfg.mirror("m")
    urls = [m.source, *(t.url for t in m.targets)]
    async with service(cfg) as r:
        for i in range(30):
            await put(m.source, f"obj/{i:02d}", f"body {i}".encode())
        for t in m.targets:
            await eventually(holds(t.url, "obj/29", b"body 29"))
        await eventually(lambda: r.ledger.backlog("m") == 0)
        before = {u: await keys(u) for u in urls}
        versions = r.ledger.count(mirror="m")

        d = await drills.drill(r.service, "m", sample=10, requested_by="test", seed=7)

        assert d["outcome"] == "passed", d
        assert d["rpo_seconds"] == 0 and d["rto_seconds"] is not None and d["rto_seconds"] > 0
        for t in d["results"]:
            assert t["listed"] == 30 and t["missing"] == t["stale"] == t["unexplained_differences"] == 0
            assert t["checksums"]["sampled"] == t["checksums"]["matched"] == 10
            assert t["rto_forced_seconds"] <= t["rto_seconds"]
        await assert_state_unchanged(urls, before)
        assert r.ledger.count(mirror="m") == versions
        assert drills.list_drills(r.ledger, mirror="m").items[0]["id"] == d["id"]

        report = build_data(r.service.config, r.ledger, mirror="m", since=d["started_at"] - 60,
                            until=d["finished_at"] + 60)
        assert {(x["target"], x["outcome"]) for x in report["drills"]} == {(t.url, "passed") for t in m.targets}


async def test_drill_finds_a_replica_changed_behind_our_back(sqlite_url):
    cfg = make_config(sqlite_url, targets=1)
    m = cfg.mirror("m")
    async with service(cfg) as r:
        await put(m.source, "x", b"original")
        await eventually(holds(m.targets[0].url, "x", b"original"))
        await eventually(lambda: r.ledger.backlog("m") == 0)
        await put(m.targets[0].url, "x", b"tampered")  # not a replica any more: the dry run sees it differ
        d = await drills.drill(r.service, "m", sample=5)
        [t] = d["results"]
        assert d["outcome"] == "failed" and t["unexplained_differences"] == 1 and t["checksums"]["lagging"] == 1
        with pytest.raises(InvalidInput, match="^sample"):
            await drills.drill(r.service, "m", sample=-1)
        with pytest.raises(NotFoundError):
            await drills.drill(r.service, "nope")


# ---------------------------------------------------------------- command line
def test_cli_failover_failback_and_drill(sqlite_url, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from cloudmirror.cli import app

    cfg = make_config(sqlite_url, targets=1)
    path = tmp_path / "cloudmirror.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    target = cfg.mirror("m").targets[0].url
    cli = CliRunner()

    def run(*args: str):
        return cli.invoke(app, [*args, "-c", str(path)])

    got = run("drill", "m", "--sample", "3")
    assert got.exit_code == 0 and "drill #1 of m: passed" in got.output, got.output
    got = run("failover", "m", "--to", "memory://nowhere", "--force")
    assert got.exit_code == 2 and "to: 'memory://nowhere' is not a target" in got.output
    got = run("failover", "m", "--to", target, "--drain-timeout", "nonsense")
    assert got.exit_code == 2 and "--drain-timeout" in got.output
    got = run("failover", "m", "--to", target, "--force", "--poll", "1s")
    assert got.exit_code == 0 and "data at risk: 0 object(s)" in got.output, got.output
    got = run("failover", "m", "--to", target, "--force")
    assert got.exit_code == 1 and "already failed over" in got.output
    got = run("failback", "m", "--policy", "keep_both", "--json")
    assert got.exit_code == 0, got.output
    rec = json.loads(got.output[got.output.index("{"):])
    assert rec["kind"] == "failback" and rec["status"] == "completed" and rec["policy"] == "keep_both"
    got = run("failback", "m")
    assert got.exit_code == 1 and "not failed over" in got.output
