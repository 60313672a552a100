"""`python -m bench.run`: benchmark cloudmirror against s5cmd on a moto server it starts, in
one run, and write docs/benchmarks.md. See the usage at the top of that file."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench import procs, report
from bench.cloud import Moto
from bench.profile import profile_drain
from bench.reconcile_bench import reconcile_scenario
from bench.scenarios import Ctx, copy_scenario, latency_scenario, s5cmd_bin
from bench.xprovider import TARGETS, rclone_version, xprovider_scenario

SCENARIOS = ("small", "big", "latency", "profile", "xprovider", "reconcile")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--objects", type=int, default=2000, help="small (4 KiB) objects (default 2000)")
    p.add_argument("--big", type=int, default=16, help="32 MiB objects (default 16)")
    p.add_argument("--rate", default="100",
                   help="latency scenario: objects per second (default 100); a comma-separated "
                   "list runs one latency scenario per rate, the first one is judged against the goal")
    p.add_argument("--rate-seconds", type=float, default=20.0, help="latency scenario: seconds of writing (default 20)")
    p.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    p.add_argument("--profile", choices=("auto", "py-spy", "cprofile", "off"), default="auto",
                   help="profiler for the extra profiled drain (auto: py-spy when installed, else cProfile)")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help=f"xprovider scenario: comma-separated subset of {','.join(TARGETS)} (default all)")
    p.add_argument("--no-peer-requests", action="store_true",
                   help="xprovider scenario: skip the untimed `rclone --dump headers` run "
                   "that counts rclone's requests")
    p.add_argument("--reconcile-objects", type=int, default=20000,
                   help="reconcile scenario: objects in the no-op reconcile (default 20000)")
    p.add_argument("--backfill-objects", type=int, default=2000,
                   help="reconcile scenario: objects in the backfill (default 2000)")
    p.add_argument("--reconcile-rounds", type=int, default=2,
                   help="reconcile scenario: interleaved rounds of the three no-op tools "
                   "(default 2; the best wall counts)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"),
                   help="report to write (default docs/benchmarks.md)")
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work dir (configs, ledgers, logs)")
    p.add_argument("--from-json", type=Path, default=None, help="only render --out from figures saved by --json")
    a = p.parse_args(argv)
    a.only = [s.strip() for s in a.only.split(",") if s.strip()]
    try:
        a.rates = [float(r) for r in a.rate.split(",") if r.strip()]
    except ValueError:
        p.error(f"--rate must be a number or a comma-separated list of numbers, got {a.rate!r}")
    bad = [s for s in a.only if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s): {', '.join(bad)}")
    a.targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    if not a.targets or any(t not in TARGETS for t in a.targets):
        p.error(f"--targets must be a subset of {','.join(TARGETS)}")
    if a.profile == "off" and "profile" in a.only:
        a.only.remove("profile")
    if min(a.reconcile_objects, a.backfill_objects, a.reconcile_rounds) < 1:
        p.error("--reconcile-objects, --backfill-objects and --reconcile-rounds must be positive")
    if min(a.objects, a.big) < 1 or not a.rates or min(a.rates) <= 0 or a.rate_seconds <= 0:
        p.error("--objects, --big, --rate and --rate-seconds must be positive")
    return a


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_meta(argv: list[str]) -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        s5 = subprocess.run([s5cmd_bin(), "version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - any failure means the version is unknown
        s5 = "unknown"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cloudmirror", "api"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        rev = f"{rev}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "nproc": os.cpu_count(), "cpu_model": cpu,
            "mem_gib": mem, "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "python": platform.python_version(), "moto": _version("moto"), "s5cmd": s5, "boto3": _version("boto3"),
            "aioboto3": _version("aioboto3"), "sqlalchemy": _version("SQLAlchemy"),
            "cloudmirror": f"{_version('cloudmirror')} (git {rev})",
            "command": "python -m bench.run " + shlex.join(argv)}


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.from_json:
        report.write(args.out, json.loads(args.from_json.read_text()))
        print(f"wrote {args.out} from {args.from_json}", file=sys.stderr)
        return 0
    log = lambda msg: print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)  # noqa: E731 - a one-line lambda reads better here
    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(procs.cleanup)
    workdir = Path(tempfile.mkdtemp(prefix="cloudmirror-bench-"))
    results: dict = {"meta": machine_meta(argv)}
    if "xprovider" in args.only or "reconcile" in args.only:
        results["meta"]["rclone"] = rclone_version()
    t0 = time.perf_counter()
    moto = None
    ok = False
    try:
        moto = Moto.start(workdir)
        log(f"moto at {moto.endpoint} (pid {moto.pid}); work dir {workdir}")
        ctx = Ctx(moto, workdir, log)
        for name in args.only:
            if name == "small":
                results["small"] = copy_scenario(ctx, "small", args.objects, 4096, ledger_fed=True)
            elif name == "big":
                results["big"] = copy_scenario(ctx, "big", args.big, 32 * 1024 * 1024, writer_threads=4)
            elif name == "latency":
                results["latency"] = []
                for rate in args.rates:
                    results["latency"].append(latency_scenario(ctx, rate=rate, seconds=args.rate_seconds))
                    moto.reset()
            elif name == "profile":
                results["profile"] = profile_drain(ctx, args.objects, mode=args.profile)
            elif name == "xprovider":
                results["xprovider"] = xprovider_scenario(ctx, args.objects, args.big, targets=args.targets,
                                                          count_peer=not args.no_peer_requests)
            elif name == "reconcile":
                results["reconcile"] = reconcile_scenario(ctx, args.reconcile_objects, args.backfill_objects,
                                                          rounds=args.reconcile_rounds, profile=args.profile != "off")
            moto.reset()  # free the emulator's memory; the next scenario starts from nothing
            log(f"{name}: done")
        ok = True
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
    except Exception as e:  # noqa: BLE001 - report, clean up, exit non-zero
        log(f"benchmark failed: {e}")
        traceback.print_exc()
    finally:
        procs.cleanup()
        if moto is not None:
            moto.stop()
    results["meta"]["elapsed_s"] = time.perf_counter() - t0
    results["meta"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if not ok:
        log(f"no report written; logs kept in {workdir}")
        return 1
    report.write(args.out, results)
    log(f"wrote {args.out}")
    if args.keep:
        log(f"work dir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
