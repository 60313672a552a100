"""Where cloudmirror's CPU goes: one extra drain of n small objects (the throughput shape),
profiled with py-spy attached to the `cloudmirror run` child when py-spy is installed
(sampling, all threads, on-CPU only), else with cProfile in this process (every thread of
the default executor profiled too). The bench never requires py-spy."""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.cloud import DST_REGION, SRC_REGION
from bench.mirror import CloudmirrorProcess, write_config
from bench.procs import BenchError, Child

# (category, test on a frame's file path and function); the first match wins
_SQLITE_C = ("do_execute", "do_executemany", "do_commit", "do_rollback", "connect", "do_execute_no_params")


def _category(path: str, func: str) -> str:
    p = path.replace("\\", "/")
    if "sqlalchemy/" in p:
        return "SQLite C (via SQLAlchemy)" if p.endswith("engine/default.py") and func in _SQLITE_C else "SQLAlchemy"
    for needle, cat in (("aiobotocore/", "aiobotocore"), ("botocore/", "botocore"), ("aioboto3/", "aioboto3"),
                        ("boto3/", "boto3"), ("aiohttp/", "aiohttp"), ("yarl/", "aiohttp"), ("multidict/", "aiohttp"),
                        ("asyncio/", "asyncio"), ("selectors", "asyncio"), ("concurrent/", "threads/executor"),
                        ("threading", "threads/executor"), ("queue.py", "threads/executor"),
                        ("json/", "json"), ("xml/", "XML (S3 responses)"), ("ElementTree", "XML (S3 responses)"),
                        ("expat", "XML (S3 responses)"), ("email/", "http headers"), ("http/", "http headers"),
                        ("dateutil/", "dateutil"), ("datetime", "datetime"), ("hashlib", "hashing"),
                        ("hmac", "hashing"), ("prometheus_client/", "prometheus_client"),
                        ("uvicorn/", "API server"), ("starlette/", "API server"), ("fastapi/", "API server"),
                        ("pydantic", "pydantic"), ("alembic/", "startup (alembic, imports)"),
                        ("importlib", "startup (alembic, imports)"),
                        ("<frozen importlib", "startup (alembic, imports)"),
                        ("<frozen", "stdlib (frozen: os.path, ...)"),
                        ("logging/", "logging"), ("cloudmirror/", "cloudmirror"), ("api/", "cloudmirror"),
                        ("copy.py", "copy/deepcopy"), ("urllib/", "urllib"), ("ssl.py", "ssl"),
                        ("socket.py", "socket"), ("re/", "re"), ("enum.py", "enum"), ("typing.py", "typing")):
        if needle in p:
            return cat
    return "other: " + (p.rsplit("/", 1)[-1] or "?")


def _cm_area(path: str) -> str | None:
    """Which cloudmirror component a frame belongs to (for inclusive time)."""
    p = path.replace("\\", "/")
    for needle, area in (("cloudmirror/ledger/", "ledger (SQL)"), ("cloudmirror/stores/", "stores (S3 requests)"),
                         ("cloudmirror/events/", "events (SQS receive/ack)"),
                         ("cloudmirror/replication/intake", "intake"), ("cloudmirror/replication/planner", "planner"),
                         ("cloudmirror/replication/", "worker pool / transfer")):
        if needle in p:
            return area
    return None


# leaf frames that are waits py-spy's idle heuristic sometimes samples as on-CPU
_IDLE_LEAVES = (("_worker", "concurrent/futures/thread.py"), ("EpollSelector.select", "selectors.py"),
                ("Condition.wait", "threading.py"), ("Event.wait", "threading.py"), ("Thread._wait_for_tstate_lock",
                                                                                     "threading.py"))
_CONN = ("_sock_connect", "sock_connect", "_create_connection", "start_connection", "_real_close",
         "_call_connection_lost", "_create_connector")


def summarise_collapsed(lines: list[str]) -> dict:
    """py-spy raw output ("frame;frame;... count", frames "func (path:line)") -> shares of the
    steady-state samples (startup and mis-sampled waits are counted apart)."""
    self_cat: Counter = Counter()
    incl_area: Counter = Counter()
    incl_func: Counter = Counter()
    startup = idle = total = 0
    for line in lines:
        stack, _, n = line.rstrip().rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        total += n
        if not stack:
            self_cat["native (no Python frame)"] += n
            continue
        frames = []
        for f in stack.split(";"):
            func, _, loc = f.rpartition(" (")
            frames.append((func, loc.rstrip(")").rsplit(":", 1)[0]))
        if any(func in ("_find_and_load", "_call_with_frames_removed") or "alembic/" in path for func, path in frames):
            startup += n
            continue
        func, path = frames[-1]
        if any(func == f and path.endswith(p) for f, p in _IDLE_LEAVES):
            idle += n
            continue
        self_cat[_category(path, func)] += n
        areas = {a for _, p in frames if (a := _cm_area(p))}
        if any(f.rsplit(".", 1)[-1] in _CONN for f, _ in frames):
            areas.add("TCP connect/close (moto answers Connection: close)")
        if any("botocore/" in p for _, p in frames):
            areas.add("any botocore/aiobotocore frame")
        if any("sqlalchemy/" in p for _, p in frames):
            areas.add("any SQLAlchemy frame")
        for area in areas:
            incl_area[area] += n
        for key in {f"{f} ({p})" for f, p in frames
                    if "cloudmirror/" in p and not p.endswith(("cli.py", "service.py"))}:
            incl_func[key] += n
    return {"samples": total, "startup_samples": startup, "idle_samples": idle,
            "steady_samples": total - startup - idle, "self": dict(self_cat.most_common()),
            "inclusive_area": dict(incl_area.most_common()), "inclusive_func": dict(incl_func.most_common(15))}


def _builtin_category(func: str) -> str:
    """cProfile's C functions (file "~") by what they belong to."""
    for needle, cat in (("sqlite3", "SQLite C (via SQLAlchemy)"), ("select", "asyncio"), ("epoll", "asyncio"),
                        ("socket", "socket"), ("_ssl", "ssl"), ("hashlib", "hashing"), ("hmac", "hashing"),
                        ("pyexpat", "XML (S3 responses)"), ("xml", "XML (S3 responses)"), ("json", "json"),
                        ("_thread", "threads/executor"), ("lock", "threads/executor"), ("_asyncio", "asyncio"),
                        ("posix", "os calls"), ("io.", "os calls")):
        if needle in func:
            return cat
    return "Python builtins (isinstance, getattr, dict ...)"


def summarise_pstats(stats: pstats.Stats) -> dict:
    self_cat: Counter = Counter()
    incl_func: Counter = Counter()
    incl_area: Counter = Counter()
    total = 0.0
    for (path, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
        total += tt
        self_cat[_builtin_category(func) if path == "~" else _category(path, func)] += tt
        if "cloudmirror/" in path:
            incl_func[f"{func} ({path.split('cloudmirror/', 1)[1]})"] += ct
    # cumulative time of a component: its outermost entry points (ct double-counts recursion)
    for key, ct in incl_func.items():
        func, _, path = key.partition(" (")
        if func.rsplit(".", 1)[-1] in _ENTRY and (area := _cm_area("cloudmirror/" + path)):
            incl_area[area] += ct
    return {"seconds": total, "self": {k: v for k, v in self_cat.most_common()},
            "inclusive_func": dict(incl_func.most_common(15)), "inclusive_area": dict(incl_area.most_common())}


# outermost entry points per component (cProfile's cumulative time double-counts nesting)
_ENTRY = {"record", "claim", "jobs", "complete", "finish_other", "last_copied", "renew_leases", "reclaim_expired",
          "head", "copy", "receive", "ack"}


def py_spy_bin() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


def profile_drain(ctx, n: int, *, mode: str = "auto", size: int = 4096) -> dict:
    """Write n objects, then drain them with cloudmirror under a profiler. mode: auto|py-spy|cprofile."""
    moto = ctx.moto
    src, dst = moto.bucket("bench-prof-src", SRC_REGION), moto.bucket("bench-prof-dst", DST_REGION)
    queue = moto.notified_queue(src)
    block = os.urandom(size)
    moto.put_many(src, [f"obj/{i:06d}" for i in range(n)], lambda i: i.to_bytes(8, "big") + block[8:])
    moto.wait_queue_depth(queue, n)
    spy = py_spy_bin() if mode in ("auto", "py-spy") else None
    if mode == "py-spy" and not spy:
        raise BenchError("py-spy not installed (pip install py-spy), or use --profile cprofile")
    source, target = moto.url(src, SRC_REGION), moto.url(dst, DST_REGION)
    ctx.log(f"[profile] draining {n} objects under {'py-spy' if spy else 'cProfile'} ...")
    if spy:
        return _with_py_spy(ctx, spy, n, source, target, queue)
    return _with_cprofile(ctx, n, source, target, queue)


def _with_py_spy(ctx, spy: str, n: int, source: str, target: str, queue: str) -> dict:
    cm = CloudmirrorProcess(ctx.workdir, source=source, target=target, queue_url=queue, env=ctx.env,
                            tag="profile-cloudmirror")
    raw = ctx.workdir / "profile-py-spy.txt"
    rate = 250
    sampler = Child("py-spy", [spy, "record", "--pid", str(cm.pid), "--rate", str(rate), "--gil", "--nonblocking",
                               "--format", "raw", "-o", str(raw)], ctx.workdir / "py-spy.log", env=ctx.env)
    try:
        cm.wait_done(n, timeout=300)
        t = cm.ledger.timings()
    finally:
        ru = cm.stop()
        sampler.wait(timeout=60)  # py-spy stops when the process exits, then writes the file
    if not raw.exists():
        raise BenchError(f"py-spy wrote no profile:\n{sampler.log_tail()}")
    out = summarise_collapsed(raw.read_text().splitlines())
    out.update(tool=f"py-spy record --gil --nonblocking --rate {rate} (samples of whichever thread holds the GIL, "
                    "i.e. Python CPU; time in C with the GIL released, such as SQLite's own work, is not seen)",
               cpu_total=ru.cpu, wall=t["last_completed"] - cm.child.epoch0, objects=n)
    return out


def _with_cprofile(ctx, n: int, source: str, target: str, queue: str) -> dict:
    from bench.mirror import Ledger
    from cloudmirror.config import load_config
    from cloudmirror.services.runtime import Service, upgrade_db

    path, db = ctx.workdir / "profile-inproc.yaml", ctx.workdir / "profile-inproc.db"
    write_config(path, ledger=db, port=0, source=source, target=target, queue_url=queue)
    cfg = load_config(path)
    upgrade_db(cfg)
    probe = Ledger(db)
    profilers: list[cProfile.Profile] = []

    def per_thread() -> None:
        p = cProfile.Profile(time.thread_time)
        profilers.append(p)
        p.enable()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4), initializer=per_thread)
        loop.set_default_executor(executor)
        svc = Service(cfg)
        t0 = time.perf_counter()
        task = asyncio.create_task(svc.run())
        deadline = time.monotonic() + 300
        while sum(v for k, v in probe.counts().items() if k not in ("pending", "in_progress")) < n:
            if task.done() or time.monotonic() > deadline:
                raise BenchError("in-process cloudmirror did not finish under cProfile")
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - t0
        svc.stop()
        await asyncio.wait_for(task, 60)
        await svc.close()
        return wall

    main_prof = cProfile.Profile(time.thread_time)  # CPU time per thread, not wall
    cpu0 = time.process_time()
    main_prof.enable()
    try:
        wall = asyncio.run(main())  # asyncio.run shuts the executor (and its threads) down
    finally:
        main_prof.disable()
        probe.close()
    cpu = time.process_time() - cpu0
    stats = pstats.Stats(main_prof)
    for p in profilers:
        stats.add(p)
    stats.dump_stats(str(ctx.workdir / "profile.pstats"))
    out = summarise_pstats(stats)
    out.update(tool="cProfile in-process, timer time.thread_time (CPU per thread; main thread + every executor thread; "
                    "deterministic, so call-heavy Python code is inflated)",
               cpu_total=cpu, wall=wall, objects=n)
    return out

