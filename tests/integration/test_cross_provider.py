"""Cross-provider copies: bounded memory for a 512 MiB object (measured by the worker
process's own counters) and end-to-end checksum verification."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloudmirror.stores.base import HeadOptions, NotFound, PutOptions
from tests.integration.harness import FAST_WORKERS, config, eventually, running
from tests.integration.providers import Provider
from tests.integration.test_any_to_any import big_body

MiB = 1024 * 1024


def _proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.mark.timeout(300)
async def test_512_mib_cross_provider_copy_stays_within_200_mb(tmp_path, moto_endpoint, azurite, sqlite_url):
    """S3 -> Azure, streamed: the worker's peak RSS (VmHWM, reset after start-up) stays under
    200 MB above its RSS before the copy."""
    ctx = {"s3": moto_endpoint, "azurite": azurite}
    s3, az = Provider("s3", ctx, tmp_path), Provider("azure", ctx, tmp_path)
    src, dst = s3.new_location(), az.new_location()
    workers = {**FAST_WORKERS, "part_size": 16 * MiB, "multipart_threshold": 16 * MiB, "max_buffers": 4}
    cfg_path = tmp_path / "cloudmirror.yaml"
    cfg_path.write_text(yaml.safe_dump({"ledger": sqlite_url, "workers": workers, "mirrors": [
        {"name": "big", "source": src, "targets": [dst], "events": [s3.feed_for(src)]}]}))
    proc = subprocess.Popen([sys.executable, "-m", "cloudmirror.cli", "run", "--no-api", "-c", str(cfg_path)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115 - handed to the child
                            env={**os.environ})
    try:
        size = 512 * MiB
        await s3.put(src, "warm-up", b"x")  # the process has imported and opened everything
        await eventually(lambda: _exists(az, dst, "warm-up"), timeout=60, message="warm-up object not copied")
        baseline = _proc_kib(proc.pid, "VmRSS")
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        await s3.put(src, "huge.bin", big_body(size, 8 * MiB), PutOptions(size=size, part_size=64 * MiB))
        await eventually(lambda: _exists(az, dst, "huge.bin", size), timeout=240, interval=0.5,
                         message="the 512 MiB object was not copied")
        peak = _proc_kib(proc.pid, "VmHWM")
        grew_mb = (peak - baseline) * 1024 / 1e6
        print(f"baseline RSS {baseline / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, grew {grew_mb:.0f} MB")
        assert grew_mb < 200, f"peak RSS grew {grew_mb:.0f} MB while copying 512 MiB"
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
        await s3.close()
        await az.close()


async def _exists(p: Provider, url: str, key: str, size: int | None = None) -> bool:
    from cloudmirror.location import parse_location

    loc = parse_location(url)
    try:
        meta = await p.store(url).head(loc.full_key(key))
    except NotFound:
        return False
    return size is None or meta.size == size


@pytest.mark.parametrize("target_kind", ["gcs", "azure"])
async def test_corrupted_stream_is_caught_and_never_completed(target_kind, tmp_path, request, moto_endpoint,
                                                              sqlite_url):
    """One byte flipped between the source GET and the target PUT: the target store's MD5
    check refuses to commit, the job retries and ends `failed` with the reason; the target
    never holds the object."""
    ctx = {"s3": moto_endpoint}
    if target_kind == "gcs":
        ctx["gcs"] = request.getfixturevalue("gcs_with_events")
    else:
        ctx["azurite"] = request.getfixturevalue("azurite")
    s3, other = Provider("s3", ctx, tmp_path), Provider(target_kind, ctx, tmp_path)
    src, dst = s3.new_location(), other.new_location()
    cfg = config(sqlite_url, [{"name": "m", "source": src, "targets": [dst], "events": [s3.feed_for(src)]}])
    try:
        async with running(cfg) as r:
            store = r.service.endpoint(src).store
            real_get = store.get

            async def corrupting_get(key, opts=None):
                got = await real_get(key, opts)
                body = got.body

                async def flipped():
                    first = True
                    async for chunk in body:
                        if first and chunk:
                            chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                            first = False
                        yield chunk
                got.body = flipped()
                return got

            store.get = corrupting_get
            data = os.urandom(300_000)
            await s3.put(src, "victim.bin", data)
            await eventually(lambda: r.ledger.count(mirror="m", status="failed") == 1, timeout=60,
                             message="the corrupted copy did not end failed")
            rows = r.ledger.replications_for("m", "victim.bin")
            assert [row["status"] for row in rows] == ["failed"]
            assert rows[0]["attempts"] == FAST_WORKERS["max_attempts"]
            assert "MD5" in rows[0]["last_error"] or "BadDigest" in rows[0]["last_error"]
            assert r.ledger.count(mirror="m", status="completed") == 0
            assert not await _exists(other, dst, "victim.bin")
            # the same object copies fine once the stream is honest again
            store.get = real_get
            await s3.put(src, "victim.bin", data + b"!")
            await eventually(lambda: _exists(other, dst, "victim.bin", len(data) + 1), timeout=60)
            from cloudmirror.location import parse_location

            head = await other.store(dst).head(parse_location(dst).full_key("victim.bin"), HeadOptions())
            assert head.md5 in (None, hashlib.md5(data + b"!").hexdigest())  # noqa: S324 - MD5 as a content checksum, not for security
    finally:
        await s3.close()
        await other.close()
