"""Reconciliation rows: a no-op reconcile (source and target already identical) against
`rclone check --one-way --fast-list` and `s5cmd sync --dry-run`, and a backfill (a mirror
with `backfill: true` copying the objects that exist at start) against `s5cmd cp`, all on
the same moto server in the same run.

No-op reconcile: N objects are written once to a us-east-1 bucket (no notifications, not
timed) and copied to a eu-west-1 bucket with `s5cmd cp` (server-side; not timed), then the
three tools compare the two buckets, one at a time, for `rounds` interleaved rounds:

- `cloudmirror reconcile bench -c CFG --json` (a fresh SQLite ledger, schema created before
  by `cloudmirror db upgrade`, untimed): the first round is kind `backfill` (the target was
  never reconciled), later rounds kind `reconcile`; both list the two buckets, merge-join them
  and compare size + MD5 from the listings (single-part objects: no HEADs), record nothing;
- `rclone check s3src:SRC s3src:DST --one-way --fast-list` (size + MD5 from the listings);
- `s5cmd --dry-run sync 's3://SRC/*' 's3://DST/'` (size + modification time; `--dry-run` is
  a global flag of s5cmd 2.3, placed before the command).

Wall is process start -> exit, client CPU the child's rusage. Requests are counted from moto's
own access log (werkzeug logs every request line), in the window of each run, for all three
tools alike; cloudmirror's Prometheus counters are dumped at exit by a wrapper and reported as
a cross-check.

Backfill: M objects written to another source bucket; `cloudmirror run -c CFG` on a mirror
with `backfill: true` and `events: []` (API on, for /metrics), timed from process start to the
last `completed_at` in its ledger; then `s5cmd cp 's3://SRC/*' 's3://PEER/'`. Both results are
checked (same keys, sizes and etags as the source)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import yaml

from bench.cloud import DST_REGION, SRC_REGION, Moto, check_replicas
from bench.mirror import MIRROR, CloudmirrorProcess, cloudmirror_bin, config_dict, counter_by, parse_metrics
from bench.procs import BenchError, Child
from bench.scenarios import STORAGE, Ctx, _timeout, s5cmd_bin
from bench.xprovider import rclone_bin, rclone_version

SIZE = 4096
RCLONE_CHECK_FLAGS = ["--one-way", "--fast-list"]

# `cloudmirror` with its Prometheus samples written to $BENCH_METRICS_OUT at exit (the
# counters live in the process; `reconcile` serves no API), and optionally a cProfile of the
# main thread (the event loop: listing, parsing, comparing) to $BENCH_CPROFILE_OUT.
WRAPPER = r"""
import atexit, os, sys
_prof = None
if os.environ.get("BENCH_CPROFILE_OUT"):
    import cProfile
    _prof = cProfile.Profile()
def _dump():
    if _prof is not None:
        _prof.disable()
        _prof.dump_stats(os.environ["BENCH_CPROFILE_OUT"])
    from prometheus_client import generate_latest
    with open(os.environ["BENCH_METRICS_OUT"], "wb") as f:
        f.write(generate_latest())
atexit.register(_dump)
if _prof is not None:
    _prof.enable()
from cloudmirror.cli import app
sys.argv[0] = "cloudmirror"
sys.exit(app())
"""


# ------------------------------------------------------------------ moto's access log
_REQUEST_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')


def request_kind(method: str, target: str) -> str:
    """S3 operation name of one request line of moto's log (path-style addressing)."""
    parts = urllib.parse.urlsplit(target)
    q = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    segments = [s for s in parts.path.split("/") if s]
    if parts.path.startswith("/moto-api"):
        return "moto-api"
    if len(segments) <= 1:  # the service or a bucket
        if method == "GET":
            if "list-type" in q:
                return "ListObjectsV2"
            if "versions" in q:
                return "ListObjectVersions"
            for sub in ("location", "versioning", "notification", "uploads", "policy", "acl", "tagging"):
                if sub in q:
                    return f"GetBucket {sub}"
            return "ListObjects" if segments else "ListBuckets"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket"}.get(method, f"{method} bucket")
    if method == "PUT":
        return "UploadPart" if "partNumber" in q else "PutObject/CopyObject"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject",
            "POST": "MultipartUpload"}.get(method, f"{method} object")


class MotoLog:
    """Requests moto served between two marks, from its access log (one line per request,
    written after the response; `requests_since` waits a moment for the last lines)."""

    def __init__(self, moto: Moto):
        self.path = Path(moto.proc.log)

    def mark(self) -> int:
        return self.path.stat().st_size

    def requests_since(self, offset: int, settle: float = 0.3) -> dict[str, int]:
        time.sleep(settle)
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
        counts: Counter = Counter()
        for m in _REQUEST_LINE.finditer(text):
            kind = request_kind(m.group(1), m.group(2))
            if kind != "moto-api":
                counts[kind if m.group(3).startswith("2") else f"{kind} ({m.group(3)})"] += 1
        return dict(counts)


# ------------------------------------------------------------------ the tools
def _rclone_conf(workdir: Path, moto: Moto) -> Path:
    conf = workdir / "rclone-reconcile.conf"
    conf.write_text("[s3src]\ntype = s3\nprovider = Other\nenv_auth = false\naccess_key_id = testing\n"
                    f"secret_access_key = testing\nregion = {SRC_REGION}\nendpoint = {moto.endpoint}\n"
                    "force_path_style = true\n")
    return conf


def _timed(ctx: Ctx, mlog: MotoLog, name: str, argv: list[str], log: Path, env: dict[str, str],
           timeout: float) -> tuple[dict, Child]:
    """Run one child to completion: wall, rusage CPU, moto CPU and moto's requests in its window."""
    moto = ctx.moto
    off, m0 = mlog.mark(), moto.cpu()
    child = Child(name, argv, log, env=env)
    ru = child.wait(timeout=timeout)
    moto_cpu = moto.cpu() - m0
    return {"wall": ru.wall, "cpu": ru.cpu, "exit_code": ru.returncode, "moto_cpu": moto_cpu,
            "requests": mlog.requests_since(off)}, child


def _parse_json_rows(text: str) -> list | None:
    """The JSON array `cloudmirror reconcile --json` printed (the log may hold other lines)."""
    dec = json.JSONDecoder()
    for m in re.finditer(r"^\[", text, re.M):
        try:
            got, _ = dec.raw_decode(text[m.start():])
        except ValueError:
            continue
        if isinstance(got, list):
            return got
    return None


def _cloudmirror_reconcile(ctx: Ctx, mlog: MotoLog, cfg: Path, tag: str, n: int, *,
                           profile: Path | None = None) -> dict:
    metrics_out = ctx.workdir / f"{tag}.metrics"
    env = {**ctx.env, "BENCH_METRICS_OUT": str(metrics_out), "COLUMNS": "200"}
    if profile is not None:
        env["BENCH_CPROFILE_OUT"] = str(profile)
    argv = [sys.executable, "-c", WRAPPER, "reconcile", MIRROR, "-c", str(cfg), "--json"]
    out, child = _timed(ctx, mlog, f"cloudmirror reconcile ({tag})", argv, ctx.workdir / f"{tag}.log", env,
                        timeout=_timeout(n, 0) + 300)
    out["command"] = f"cloudmirror reconcile {MIRROR} -c {cfg.name} --json"
    text = child.log.read_text(errors="replace")
    rows = _parse_json_rows(text)
    out["result"] = rows[0] if rows else None
    if out["exit_code"] != 0 or not rows:
        out["error"] = f"exit {out['exit_code']}: {child.log_tail(8)}"
    try:
        out["storage_requests"] = counter_by(parse_metrics(metrics_out.read_text()), STORAGE, "operation")
    except OSError:
        out["storage_requests"] = None
    return out


def _check_reconcile(r: dict | None, n: int) -> str | None:
    """None when a no-op reconcile listed n objects and found and recorded nothing."""
    if not r:
        return "no JSON result"
    bad = {k: r.get(k) for k in ("missing", "stale", "extra", "recorded") if r.get(k)}
    if r.get("listed") != n or bad:
        return f"listed {r.get('listed')} of {n}" + (f", {bad}" if bad else "")
    return None


def _rclone_check(ctx: Ctx, mlog: MotoLog, conf: Path, src: str, dst: str, tag: str, n: int) -> dict:
    env = {k: v for k, v in ctx.env.items() if k != "RCLONE_CONFIG"}
    argv = [rclone_bin(), "--config", str(conf), "check", f"s3src:{src}", f"s3src:{dst}", *RCLONE_CHECK_FLAGS]
    out, child = _timed(ctx, mlog, f"rclone check ({tag})", argv, ctx.workdir / f"{tag}.log", env,
                        timeout=_timeout(n, 0) + 300)
    out["command"] = f"rclone check s3src:SRC s3src:DST {' '.join(RCLONE_CHECK_FLAGS)}"
    text = child.log.read_text(errors="replace")
    diff = re.search(r"(\d+) differences found", text)
    match = re.search(r"(\d+) matching files", text)
    out["differences"] = int(diff.group(1)) if diff else None
    out["matching"] = int(match.group(1)) if match else None
    if out["exit_code"] != 0 or out["differences"] != 0 or out["matching"] != n:
        out["error"] = (f"exit {out['exit_code']}, {out['differences']} differences, {out['matching']} matching "
                        f"of {n}: {child.log_tail(4)}")
    return out


def _s5cmd_sync(ctx: Ctx, mlog: MotoLog, src: str, dst: str, tag: str, n: int) -> dict:
    # --dry-run is one of s5cmd's global flags (before the command)
    argv = [s5cmd_bin(), "--endpoint-url", ctx.moto.endpoint, "--dry-run", "sync", f"s3://{src}/*", f"s3://{dst}/"]
    out, child = _timed(ctx, mlog, f"s5cmd sync ({tag})", argv, ctx.workdir / f"{tag}.log", ctx.env,
                        timeout=_timeout(n, 0) + 300)
    out["command"] = "s5cmd --endpoint-url URL --dry-run sync 's3://SRC/*' 's3://DST/'"
    text = child.log.read_text(errors="replace")
    out["would_copy"] = sum(1 for line in text.splitlines() if "DRY-RUN" in line or line.startswith("cp "))
    if out["exit_code"] != 0 or out["would_copy"]:
        out["error"] = f"exit {out['exit_code']}, {out['would_copy']} copies planned: {child.log_tail(4)}"
    return out


def _startup_floor(ctx: Ctx) -> dict:
    """`cloudmirror --help` and the imports `reconcile` needs: Python's part of every run's wall."""
    argv = [sys.executable, "-c", "import cloudmirror.cli, cloudmirror.services.runtime, cloudmirror.stores.s3"]
    child = Child("cloudmirror imports", argv, ctx.workdir / "reconcile-imports.log", env=ctx.env)
    ru = child.wait(timeout=120)
    return {"wall": ru.wall, "cpu": ru.cpu, "exit_code": ru.returncode}


def noop_reconcile(ctx: Ctx, n: int, *, rounds: int = 2, profile: bool = True) -> dict:
    moto = ctx.moto
    mlog = MotoLog(moto)
    src = moto.bucket("rc-src", SRC_REGION)
    dst = moto.bucket("rc-dst", DST_REGION)
    out: dict = {"objects": n, "size": SIZE, "rounds": []}
    block = os.urandom(SIZE)
    m0 = moto.cpu()
    ctx.log(f"[reconcile] writing {n} x {SIZE} B to s3://{src} ...")
    wall = moto.put_many(src, [f"obj/{i:06d}" for i in range(n)], lambda i: i.to_bytes(8, "big") + block[8:],
                         threads=8)
    out["write"] = {"wall": wall, "moto_cpu": moto.cpu() - m0}
    ctx.log(f"[reconcile] s5cmd cp to s3://{dst} (the target, identical; not timed) ...")
    seed, child = _timed(ctx, mlog, "s5cmd cp (reconcile seed)",
                         [s5cmd_bin(), "--endpoint-url", moto.endpoint, "cp", f"s3://{src}/*", f"s3://{dst}/"],
                         ctx.workdir / "reconcile-seed.log", ctx.env, timeout=_timeout(n, SIZE))
    if seed["exit_code"] != 0:
        raise BenchError(f"s5cmd cp (seeding the target) exited with {seed['exit_code']}:\n{child.log_tail()}")
    out["seed"] = seed
    if (bad := check_replicas(moto, src, dst, n)) is not None:
        raise BenchError(f"the reconcile target is not identical to the source: {bad}")

    cfg_path = ctx.workdir / "reconcile-cloudmirror.yaml"
    cfg = config_dict(ledger=str(ctx.workdir / "reconcile-cloudmirror.db"), listen="127.0.0.1:0",
                      source=moto.url(src, SRC_REGION), target=moto.url(dst, DST_REGION), queue_url=None)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    up = Child("cloudmirror db upgrade", [cloudmirror_bin(), "db", "upgrade", "-c", str(cfg_path)],
               ctx.workdir / "reconcile-upgrade.log", env=ctx.env)
    if up.wait(timeout=120).returncode != 0:
        raise BenchError(f"cloudmirror db upgrade failed:\n{up.log_tail()}")
    out["startup_floor"] = _startup_floor(ctx)
    conf = _rclone_conf(ctx.workdir, moto)

    for i in range(rounds):
        rnd: dict = {}
        ctx.log(f"[reconcile] round {i + 1}/{rounds}: cloudmirror reconcile ({n} objects) ...")
        rnd["cloudmirror"] = _cloudmirror_reconcile(ctx, mlog, cfg_path, f"reconcile-cm-{i}", n)
        rnd["cloudmirror"]["verify"] = (rnd["cloudmirror"].get("error")
                                        or _check_reconcile(rnd["cloudmirror"]["result"], n))
        ctx.log(f"[reconcile] round {i + 1}/{rounds}: rclone check ...")
        rnd["rclone"] = _rclone_check(ctx, mlog, conf, src, dst, f"reconcile-rclone-{i}", n)
        ctx.log(f"[reconcile] round {i + 1}/{rounds}: s5cmd sync --dry-run ...")
        rnd["s5cmd"] = _s5cmd_sync(ctx, mlog, src, dst, f"reconcile-s5cmd-{i}", n)
        out["rounds"].append(rnd)
        ctx.log("[reconcile] walls: " + ", ".join(f"{k} {v['wall']:.2f} s" for k, v in rnd.items()))
    if profile:
        ctx.log("[reconcile] one more cloudmirror reconcile under cProfile (untimed) ...")
        prof = ctx.workdir / "reconcile-cm.prof"
        p = _cloudmirror_reconcile(ctx, mlog, cfg_path, "reconcile-cm-profiled", n, profile=prof)
        out["profile"] = {"wall": p["wall"], "cpu": p["cpu"], **summarize_profile(prof)} if prof.exists() else None
    return out


def _builtin(func: str) -> str:
    """A short name for a C function in a cProfile dump ("<method 'poll' of 'select.epoll' objects>")."""
    m = re.match(r"<(?:built-in method|method) '?([\w.]+)'?(?: of '([\w.]+)' objects)?>", func)
    if not m:
        return func[:40]
    name = f"{m.group(2)}.{m.group(1)}" if m.group(2) else m.group(1)
    return "epoll wait (idle)" if "epoll" in name or "select" in name else name


def summarize_profile(path: Path, top: int = 12) -> dict:
    """Self time by library and the cloudmirror functions' inclusive time, from a cProfile dump."""
    import pstats

    from bench.profile import _category

    st = pstats.Stats(str(path))
    by_lib: Counter = Counter()
    funcs = []
    total = 0.0
    for (file, _line, func), (_cc, _nc, tt, ct, _callers) in st.stats.items():
        total += tt
        by_lib[_category(file, func) if file != "~" else f"C: {_builtin(func)}"] += tt
        if "cloudmirror/" in file.replace("\\", "/"):
            funcs.append((f"{func} ({file.split('cloudmirror/', 1)[-1]})", ct))
    funcs.sort(key=lambda kv: -kv[1])
    return {"seconds": total, "self": dict(by_lib.most_common(top)), "inclusive_func": dict(funcs[:top])}


# ------------------------------------------------------------------ backfill
def _enable_backfill(cm: CloudmirrorProcess) -> None:
    cm.config["mirrors"][0]["backfill"] = True
    cm.config_path.write_text(yaml.safe_dump(cm.config, sort_keys=False))


def backfill(ctx: Ctx, n: int) -> dict:
    moto = ctx.moto
    mlog = MotoLog(moto)
    src = moto.bucket("bf-src", SRC_REGION)
    dst = moto.bucket("bf-dst", DST_REGION)
    peer = moto.bucket("bf-peer", DST_REGION)
    block = os.urandom(SIZE)
    out: dict = {"objects": n, "size": SIZE}
    m0 = moto.cpu()
    ctx.log(f"[backfill] writing {n} x {SIZE} B to s3://{src} ...")
    wall = moto.put_many(src, [f"obj/{i:06d}" for i in range(n)], lambda i: i.to_bytes(8, "big") + block[8:],
                         threads=8)
    out["write"] = {"wall": wall, "moto_cpu": moto.cpu() - m0}

    ctx.log(f"[backfill] cloudmirror run, backfill: true ({n} objects) ...")
    off, m0 = mlog.mark(), moto.cpu()
    cm = CloudmirrorProcess(ctx.workdir, source=moto.url(src, SRC_REGION), target=moto.url(dst, DST_REGION),
                            queue_url=None, env=ctx.env, tag="backfill-cloudmirror", before_start=_enable_backfill)
    try:
        counts = cm.wait_done(n, timeout=_timeout(n, SIZE))
        cpu_done = cm.cpu()
        moto_cpu = moto.cpu() - m0
        t = cm.ledger.timings()
        runs = cm.ledger._q("SELECT kind, status, started_at, finished_at, listed, missing, stale, extra "
                            "FROM reconcile_runs ORDER BY id")
        samples = parse_metrics(cm.metrics())
    finally:
        ru = cm.stop()
    requests = mlog.requests_since(off)
    c = {"command": cm.command + "  (mirror: backfill: true, events: [])", "statuses": counts,
         "wall": t["last_completed"] - cm.child.epoch0,
         "wall_replicating": t["last_completed"] - t["first_started"],
         "first_copy_s": t["first_started"] - cm.child.epoch0,
         "cpu_at_done": cpu_done, "cpu_total": ru.cpu, "exit_code": ru.returncode, "moto_cpu": moto_cpu,
         "storage_requests": counter_by(samples, STORAGE, "operation"), "requests": requests,
         "runs": [dict(zip(("kind", "status", "started_at", "finished_at", "listed", "missing", "stale", "extra"), r,
                           strict=True))
                  for r in runs]}
    if c["runs"] and c["runs"][0]["finished_at"]:
        c["listing_done_s"] = c["runs"][0]["finished_at"] - cm.child.epoch0
    c["verify"] = check_replicas(moto, src, dst, n)
    if counts.get("completed", 0) != n:
        c["verify"] = f"ledger {counts}; " + (c["verify"] or "replicas ok")
    out["cloudmirror"] = c

    ctx.log("[backfill] s5cmd cp ...")
    argv = [s5cmd_bin(), "--endpoint-url", moto.endpoint, "cp", f"s3://{src}/*", f"s3://{peer}/"]
    p, child = _timed(ctx, mlog, "s5cmd cp (backfill)", argv, ctx.workdir / "backfill-s5cmd.log", ctx.env,
                      timeout=_timeout(n, SIZE))
    p["command"] = "s5cmd --endpoint-url URL cp 's3://SRC/*' 's3://PEER/'"
    p["verify"] = check_replicas(moto, src, peer, n)
    if p["exit_code"] != 0:
        p["verify"] = f"exit {p['exit_code']}: {child.log_tail(4)}"
    out["s5cmd"] = p
    return out


def reconcile_scenario(ctx: Ctx, n_reconcile: int, n_backfill: int, *, rounds: int = 2, profile: bool = True) -> dict:
    out: dict = {"rclone": rclone_version(), "rclone_flags": " ".join(RCLONE_CHECK_FLAGS)}
    out["noop"] = noop_reconcile(ctx, n_reconcile, rounds=rounds, profile=profile)
    ctx.moto.reset()  # free the emulator's memory before the backfill
    out["backfill"] = backfill(ctx, n_backfill)
    return out
