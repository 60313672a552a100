"""The file store never follows a symbolic link (reads, listings, polls, writes, deletes) and
writes replicas with the location's mode; real files under tmp_path."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from contextlib import contextmanager

import pytest

from cloudmirror.location import parse_location
from cloudmirror.replication.poller import PollFeed
from cloudmirror.stores import open_store
from cloudmirror.stores.base import BucketNotFound, FatalError, NotFound, PutOptions
from cloudmirror.stores.file import safepath

SECRET = b"outside-secret-bytes"


@pytest.fixture
def dirs(tmp_path):
    """(root, outside): the store's root and a directory beside it holding a secret file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    return root, outside


def store_at(root, query: str = ""):
    return open_store(parse_location(f"file://{root}{query}"))


def tree(path) -> dict[str, bytes]:
    """Every file under path (links listed as 'link'), to compare before and after."""
    out = {}
    for d, subdirs, files in os.walk(path):
        for n in files + [s for s in subdirs if os.path.islink(os.path.join(d, s))]:
            p = os.path.join(d, n)
            out[os.path.relpath(p, path)] = b"link" if os.path.islink(p) else open(p, "rb").read()
    return out


async def keys(store) -> list[str]:
    return [m.key for m in [m async for m in store.list()]]


async def read(store, key: str) -> bytes:
    res = await store.get(key)
    return b"".join([c async for c in res.body])


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# ---------------------------------------------------------------- reads, listings, polls
async def test_links_in_a_source_are_not_objects_and_their_bytes_never_leave(dirs):
    root, outside = dirs
    store = store_at(root)
    await store.put("real.txt", b"mine")
    await store.put("sub/inner.txt", b"inner")
    os.symlink(outside / "secret.txt", root / "leak.txt")
    os.symlink(outside, root / "leakdir")
    os.symlink(outside / "secret.txt", root / "sub" / "leak2.txt")
    os.mkfifo(root / "pipe")  # not a regular file: neither listed nor opened (it would block)
    assert await keys(store) == ["real.txt", "sub/inner.txt"]
    for key in ("leak.txt", "leakdir/secret.txt", "sub/leak2.txt", "pipe"):
        with pytest.raises(NotFound):
            await store.head(key)
        with pytest.raises(NotFound):
            await store.get(key)
    assert await read(store, "real.txt") == b"mine"


async def test_the_poller_of_a_file_source_never_announces_a_link(dirs):
    root, outside = dirs
    loc = parse_location(f"file://{root}")
    store = open_store(loc)
    await store.put("a", b"1")
    os.symlink(outside / "secret.txt", root / "b")
    os.symlink(outside, root / "c")
    feed = PollFeed(store, loc, every=0.001, batch=10, stale_after=60)
    msgs = []
    while got := await feed.receive():
        msgs += got
    assert sorted(e.key for m in msgs for e in m.events) == ["a"]


async def test_a_directory_swapped_for_a_link_between_operations_is_not_followed(dirs):
    root, outside = dirs
    store = store_at(root)
    await store.put("d/a", b"inside")
    os.rename(root / "d", root / "d.old")
    os.symlink(outside, root / "d")
    (outside / "a").write_bytes(SECRET)
    before = tree(outside)
    with pytest.raises(NotFound):
        await store.get("d/a")
    with pytest.raises(NotFound):
        await store.head("d/a")
    with pytest.raises(FatalError) as e:
        await store.put("d/b", b"x")
    assert e.value.code == "SymlinkRefused"
    with pytest.raises(FatalError):
        await store.delete("d/a")
    assert tree(outside) == before
    assert await keys(store) == ["d.old/a"]


async def test_a_directory_swapped_for_a_link_during_a_put_is_not_followed(dirs):
    """The put holds its parent directory's fd: the swap cannot move the write outside."""
    root, outside = dirs
    store = store_at(root)
    await store.put("d/first", b"1")
    before = tree(outside)

    async def body() -> AsyncIterator[bytes]:
        yield b"part one,"
        os.rename(root / "d", root / "d.old")
        os.symlink(outside, root / "d")
        yield b"part two"

    await store.put("d/second", body())
    assert tree(outside) == before
    assert (root / "d.old" / "second").read_bytes() == b"part one,part two"
    assert await keys(store) == ["d.old/first", "d.old/second"]


# ---------------------------------------------------------------- writes and deletes
async def test_a_put_through_a_linked_directory_is_refused_and_writes_nothing_outside(dirs):
    root, outside = dirs
    store = store_at(root)
    os.symlink(outside, root / "link")
    before = tree(outside)
    for key in ("link/new.txt", "link/secret.txt", "link/deeper/new.txt"):
        with pytest.raises(FatalError) as e:
            await store.put(key, b"overwrite")
        assert e.value.code == "SymlinkRefused" and "link" in str(e.value)
    assert tree(outside) == before
    assert sorted(os.listdir(root)) == ["link"]


async def test_a_put_over_a_link_is_refused_and_the_link_target_is_untouched(dirs):
    root, outside = dirs
    store = store_at(root)
    os.symlink(outside / "secret.txt", root / "f")
    with pytest.raises(FatalError) as e:
        await store.put("f", b"overwrite")
    assert e.value.code == "SymlinkRefused"
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert os.path.islink(root / "f")
    assert [n for n in os.listdir(root) if n.startswith(".cloudmirror-tmp")] == []


async def test_a_linked_metadata_directory_gets_no_sidecar_written_through_it(dirs):
    root, outside = dirs
    store = store_at(root)
    os.symlink(outside, root / ".cloudmirror-meta")
    before = tree(outside)
    with pytest.raises(FatalError):
        await store.put("k", b"data")
    assert tree(outside) == before


async def test_a_delete_through_a_link_removes_nothing_outside(dirs):
    root, outside = dirs
    store = store_at(root)
    (outside / "sub").mkdir()
    (outside / "sub" / "x").write_bytes(b"x")
    os.symlink(outside, root / "link")
    os.symlink(outside / "secret.txt", root / "f")
    before = tree(outside)
    for key in ("link/secret.txt", "link/sub/x", "f"):
        with pytest.raises(FatalError) as e:
            await store.delete(key)
        assert e.value.code == "SymlinkRefused"
    assert tree(outside) == before
    assert os.path.islink(root / "link") and os.path.islink(root / "f")
    await store.delete("missing/key")  # still idempotent for what is simply absent


async def test_a_root_that_is_or_passes_through_a_link_is_refused(dirs, tmp_path):
    root, _ = dirs
    os.symlink(root, tmp_path / "alias")
    os.symlink(tmp_path, tmp_path / "parent-alias")
    await store_at(root).put("k", b"v")
    for path in (tmp_path / "alias", tmp_path / "parent-alias" / "root"):
        store = store_at(path)
        for call in (lambda s: keys(s), lambda s: s.put("n", b"x"), lambda s: s.head("k"),
                     lambda s: s.delete("k")):
            with pytest.raises(FatalError) as e:
                await call(store)
            assert e.value.code == "SymlinkRoot" and str(root) in str(e.value)  # names the real path
    assert await keys(store_at(root)) == ["k"]
    with pytest.raises(BucketNotFound):
        await keys(store_at(tmp_path / "missing"))


# ---------------------------------------------------------------- modes
@pytest.mark.parametrize("mask", [0o000, 0o077])
async def test_replicas_are_0640_and_directories_0750_whatever_the_umask(tmp_path, mask):
    root = tmp_path / "root"
    root.mkdir()
    with umask(mask):
        await store_at(root).put("a/b/c.txt", b"x", PutOptions(metadata={"k": "v"}))
    assert mode_of(root / "a/b/c.txt") == 0o640
    assert mode_of(root / ".cloudmirror-meta/a/b/c.txt.json") == 0o640  # metadata and tags
    for d in ("a", "a/b", ".cloudmirror-meta", ".cloudmirror-meta/a", ".cloudmirror-meta/a/b"):
        assert mode_of(root / d) == 0o750, d


@pytest.mark.parametrize(("query", "expected", "dirs_mode"),
                         [("?mode=0600", 0o600, 0o700), ("?mode=644", 0o644, 0o755), ("?mode=0660", 0o660, 0o750)])
async def test_the_location_mode_is_applied(tmp_path, query, expected, dirs_mode):
    root = tmp_path / "root"
    root.mkdir()
    root_mode = mode_of(root)
    store = store_at(root, query)
    with umask(0o022):
        await store.put("d/k", b"1")
        await store.put("d/k", b"2")  # an overwrite gets the mode too
    assert mode_of(root / "d/k") == expected
    assert mode_of(root / ".cloudmirror-meta/d/k.json") == expected
    assert mode_of(root / "d") == dirs_mode and mode_of(root / ".cloudmirror-meta/d") == dirs_mode
    assert mode_of(root) == root_mode  # the root is the operator's: never changed
    assert await read(store, "d/k") == b"2"


async def test_checksums_work_where_md5_for_security_is_refused(tmp_path, fips_md5):
    """On a FIPS host hashlib.md5() raises unless usedforsecurity=False."""
    real = fips_md5
    root = tmp_path / "root"
    root.mkdir()
    res = await store_at(root).put("k", b"abc")
    assert res.md5 == real(b"abc").hexdigest()


# ---------------------------------------------------------------- the primitives
def test_a_walk_holds_the_directory_it_checked(dirs):
    root, outside = dirs
    (root / "d").mkdir()
    root_fd = safepath.open_root(str(root))
    try:
        with safepath.walk(root_fd, ["d"]) as chain:
            os.rename(root / "d", root / "d.old")
            os.symlink(outside, root / "d")
            fd, name = safepath.create_temp(chain.fd, "t-", 0o640)
            os.close(fd)
        assert os.listdir(root / "d.old") == [name]
        with pytest.raises(safepath.SymlinkFound):
            safepath.walk(root_fd, ["d"])
    finally:
        os.close(root_fd)
    assert sorted(os.listdir(outside)) == ["secret.txt"]
