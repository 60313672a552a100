"""The mirrors in the ledger: seeded from the config file, changed through the service
functions the API uses, validated exactly like the file, and picked up by a running
service without a restart."""

from __future__ import annotations

import pytest

from cloudmirror.config import validate_config
from cloudmirror.errors import ConflictError, InvalidInput, NotFoundError
from cloudmirror.ledger.mirrors import MirrorSpecs
from cloudmirror.ledger.repo import Ledger
from cloudmirror.location import parse_location
from cloudmirror.services import mirrors
from cloudmirror.stores import open_store
from cloudmirror.stores.base import PutOptions
from cloudmirror.stores.memory import reset_memory_stores
from tests.integration.harness import eventually, running


def cfg(url, *ms, groups=()):
    return validate_config({"ledger": url, "mirrors": list(ms), "groups": list(groups),
                            "workers": {"poll_interval": 0.02}})


A = {"name": "a", "source": "memory://src-a", "targets": ["memory://dst-a"]}
B = {"name": "b", "source": "memory://src-b", "targets": ["memory://dst-b"]}


@pytest.fixture
def ledger_(ledger_url):
    led = Ledger(ledger_url)
    yield led
    led.close()


def names(ledger):
    return [r.name for r in MirrorSpecs(ledger).all()]


def test_the_file_seeds_and_wins_only_where_it_changed(ledger_url, ledger_):
    base = cfg(ledger_url, A, B)
    assert sorted(mirrors.seed(base, ledger_)) == ["a", "b"]
    assert mirrors.seed(base, ledger_) == []  # idempotent
    # an API change survives a restart with the same file...
    mirrors.update_mirror(base, ledger_, "a", {"rpo_objective": "1m"})
    mirrors.seed(base, ledger_)
    assert mirrors.get_mirror(ledger_, "a")["rpo_objective"] == 60.0
    # ...but an edit of the file wins, and a mirror removed from the file goes
    edited = cfg(ledger_url, {**A, "rpo_objective": "2m"})
    assert sorted(mirrors.seed(edited, ledger_)) == ["a", "b"]
    assert mirrors.get_mirror(ledger_, "a")["rpo_objective"] == 120.0
    assert names(ledger_) == ["a"]
    # a mirror created through the API is not the file's to remove
    mirrors.create_mirror(edited, ledger_, B)
    mirrors.seed(edited, ledger_)
    assert names(ledger_) == ["a", "b"]
    assert mirrors.get_mirror(ledger_, "b")["origin"] == "api"


def test_changes_are_validated_like_the_config_file(ledger_url, ledger_):
    base = cfg(ledger_url, A, groups=[{"name": "g", "mirrors": ["a"]}])
    mirrors.seed(base, ledger_)
    with pytest.raises(InvalidInput) as e:
        mirrors.create_mirror(base, ledger_, {**B, "targets": ["bogus://x"]})
    assert e.value.field.startswith("targets")
    with pytest.raises(InvalidInput) as e:
        mirrors.create_mirror(base, ledger_, {**B, "rpo_objective": "soon"})
    assert e.value.field == "rpo_objective"
    with pytest.raises(InvalidInput) as e:
        mirrors.create_mirror(base, ledger_, {**B, "colour": "blue"})
    assert e.value.field == "colour"
    with pytest.raises(ConflictError):
        mirrors.create_mirror(base, ledger_, A)
    with pytest.raises(InvalidInput, match="renamed"):
        mirrors.update_mirror(base, ledger_, "a", {"name": "z"})
    with pytest.raises(NotFoundError):
        mirrors.update_mirror(base, ledger_, "nope", {"paused": True})
    with pytest.raises(ConflictError, match="group"):
        mirrors.delete_mirror(base, ledger_, "a")
    rev = mirrors.get_mirror(ledger_, "a")["revision"]
    mirrors.update_mirror(base, ledger_, "a", {"paused": True}, expect_revision=rev)
    with pytest.raises(ConflictError, match="revision"):
        mirrors.update_mirror(base, ledger_, "a", {"paused": False}, expect_revision=rev)
    assert mirrors.current_config(base, ledger_).mirror("a").paused


def test_a_failed_over_mirror_reads_from_its_active_location(ledger_url, ledger_):
    base = cfg(ledger_url, {**A, "targets": ["memory://dst-a", "memory://dst-a2"]})
    mirrors.seed(base, ledger_)
    mirrors.set_active(ledger_, "a", "memory://dst-a")
    m = mirrors.current_config(base, ledger_).mirror("a")
    assert m.source == "memory://dst-a"
    assert [t.url for t in m.targets] == ["memory://src-a", "memory://dst-a2"]
    assert mirrors.get_mirror(ledger_, "a")["active"] == "memory://dst-a"
    mirrors.set_active(ledger_, "a", None)
    assert mirrors.current_config(base, ledger_).mirror("a").source == "memory://src-a"


async def test_a_running_service_picks_up_a_new_mirror_and_a_pause(ledger_url):
    reset_memory_stores()
    base = cfg(ledger_url, {**A, "events": [{"poll": "100ms"}]})
    src_b = open_store(parse_location("memory://src-b"))
    dst_b = open_store(parse_location("memory://dst-b"))
    async with running(base) as r:
        await src_b.put("k1", b"one", PutOptions())
        mirrors.create_mirror(base, r.ledger, {**B, "events": [{"poll": "100ms"}]})

        async def on_b(key):
            return [m.key async for m in dst_b.list()] == key

        await eventually(lambda: on_b(["k1"]), timeout=30, message="the new mirror replicated")
        mirrors.set_paused(base, r.ledger, "b", True)
        await eventually(lambda: r.service.config.mirror("b").paused, timeout=30, message="the pause applied")
        await src_b.put("k2", b"two", PutOptions())
        await eventually(lambda: r.ledger.count(mirror="b", status="pending") == 1, timeout=30,
                         message="the write recorded while paused")
        assert await on_b(["k1"]), "a paused mirror copied"
        mirrors.set_paused(base, r.ledger, "b", False)
        await eventually(lambda: on_b(["k1", "k2"]), timeout=30, message="resumed")
    reset_memory_stores()


def test_starts_that_seed_at_the_same_moment_do_not_collide(ledger_url):
    """Two services starting at once (two workers on one PostgreSQL ledger) both seed the
    same new mirrors: each seed waits for the other, none fails on a duplicate name."""
    import threading

    ledgers = [Ledger(ledger_url), Ledger(ledger_url)]
    try:
        for round_ in range(8):
            specs = {f"m{round_}-{i}": {**A, "name": f"m{round_}-{i}"} for i in range(3)}
            barrier, errors, changed = threading.Barrier(2), [], []

            def seed(led, barrier=barrier, specs=specs, changed=changed, errors=errors):
                barrier.wait()
                try:
                    changed.append(MirrorSpecs(led).seed(specs))
                except Exception as e:  # noqa: BLE001 - collected and asserted below
                    errors.append(e)

            threads = [threading.Thread(target=seed, args=(led,)) for led in ledgers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert errors == []
            first, second = sorted(changed, key=len)
            assert first == [] and set(specs) <= set(second)  # one seed made the change, the other saw it made
            assert names(ledgers[0]) == sorted(specs)  # (the file's mirrors of the round before are gone)
    finally:
        for led in ledgers:
            led.close()
