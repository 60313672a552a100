"""`cloudmirror demo`: a us-east-1 -> eu-west-1 mirror on the local cloud, end to end.

Starts the emulator (moto, or LocalStack with --localstack), creates the buckets, queue and
notification, runs cloudmirror in this process, writes small objects, a 50 MB multipart
object, awkward keys, an overwrite and a delete, shows progress live, prints the status
table, and stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cloudmirror.config import validate_config
from cloudmirror.events.sqs import create_queue, notify_bucket_to_queue
from cloudmirror.location import parse_location
from cloudmirror.service import Service, status, upgrade_db
from cloudmirror.stores import open_store
from cloudmirror.stores.base import ListOptions, PutOptions
from cloudmirror.stores.s3 import create_bucket

SOURCE, TARGET = "cloudmirror-demo-use1", "cloudmirror-demo-euw1"
KEYS = ["reports/q3 summary.pdf", "a+b=c.txt", "100% done.txt", "ünïcødé/日本語.txt", "photos/2026/11/cat.jpg"]
BIG = 50 * 1024 * 1024


async def _big_body(size: int, chunk: int = 1024 * 1024) -> AsyncIterator[bytes]:
    block = os.urandom(chunk)
    for off in range(0, size, chunk):
        yield block[: min(chunk, size - off)]


async def _listing(url: str) -> dict[str, int]:
    store = open_store(parse_location(url))
    try:
        return {m.key: m.size async for m in store.list(ListOptions())}
    finally:
        await store.close()


async def _demo(console: Console, endpoint: str, workdir: Path) -> bool:
    create_bucket(endpoint, "us-east-1", SOURCE, versioned=False)
    create_bucket(endpoint, "eu-west-1", TARGET)
    queue_url, queue_arn = create_queue(endpoint, "us-east-1", "cloudmirror-demo-events")
    notify_bucket_to_queue(endpoint, "us-east-1", SOURCE, queue_arn)
    src = f"s3://{SOURCE}?region=us-east-1&endpoint={endpoint}"
    dst = f"s3://{TARGET}?region=eu-west-1&endpoint={endpoint}"
    raw = {"ledger": f"sqlite:///{workdir / 'cloudmirror.db'}",
           "mirrors": [{"name": "demo", "source": src, "targets": [dst], "rpo_objective": "1m",
                        "events": [{"sqs": queue_url, "region": "us-east-1", "wait_time_s": 1}]}],
           "workers": {"poll_interval": "50ms", "multipart_threshold": 8 * 1024 * 1024, "part_size": 8 * 1024 * 1024}}
    (workdir / "cloudmirror.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    console.print(f"config written to {workdir / 'cloudmirror.yaml'}")
    cfg = validate_config(raw)
    upgrade_db(cfg)
    svc = Service(cfg)
    runner = asyncio.create_task(svc.run())
    source = open_store(parse_location(src))
    try:
        writes = [(f"small/object-{i:03}.txt", f"hello {i}".encode()) for i in range(40)]
        writes += [(k, k.encode()) for k in KEYS]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            wtask = progress.add_task("writing to us-east-1", total=len(writes) + 3)
            rtask = progress.add_task("replicated to eu-west-1", total=None)
            for key, body in writes:
                await source.put(key, body, PutOptions(content_type="text/plain", metadata={"demo": "yes"}))
                progress.advance(wtask)
            await source.put("big/50MB.bin", _big_body(BIG), PutOptions(size=BIG, part_size=8 * 1024 * 1024,
                                                                         content_type="application/octet-stream"))
            progress.advance(wtask)
            await source.put("small/object-000.txt", b"overwritten!", PutOptions(content_type="text/plain"))
            progress.advance(wtask)
            await source.delete("small/object-001.txt")
            progress.advance(wtask)
            deadline = time.monotonic() + 120
            while True:
                want, have = await _listing(src), await _listing(dst)
                progress.update(rtask, total=len(want), completed=sum(1 for k, s in want.items() if have.get(k) == s))
                if want == have and svc.ledger.backlog() == 0:
                    break
                if time.monotonic() > deadline:
                    console.print("[red]the target did not converge within 120 s[/red]")
                    return False
                await asyncio.sleep(0.1)
        from cloudmirror.cli import status_table

        console.print(status_table(status(cfg, svc.ledger)))
        console.print(f"[green]eu-west-1 holds exactly the {len(want)} objects of us-east-1[/green] "
                      f"(incl. a 50 MB multipart object, an overwrite and a delete)")
        return True
    finally:
        await source.close()
        svc.stop()
        await runner
        await svc.close()


def run_demo(console: Console, provider: str = "moto", keep: bool = False) -> bool:
    """Run the demo; returns True when the target converged."""

    workdir = Path(tempfile.mkdtemp(prefix="cloudmirror-demo-"))
    console.print(f"starting the local cloud ({provider}) ...")
    if provider == "localstack":
        from cloudmirror.local.localstack import start_localstack

        proc, endpoint = start_localstack(log_dir=workdir)
    else:
        from cloudmirror.local.moto import start_moto

        proc, endpoint = start_moto(log_dir=workdir)
    console.print(f"local cloud at {endpoint}")
    try:
        return asyncio.run(_demo(console, endpoint, workdir))
    finally:
        if keep:
            console.print(f"local cloud left running at {endpoint} (pid {proc.pid})")
        else:
            proc.stop()
            console.print("local cloud stopped")

