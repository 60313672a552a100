"""`cloudmirror demo`: the local cloud, end to end, across providers.

Starts the emulators (moto or LocalStack, fake-gcs-server + the Pub/Sub emulator, Azurite),
creates the buckets, containers, queue, subscription and notifications, and runs cloudmirror
in this process with two mirrors:

- `demo`: s3 us-east-1 -> s3 eu-west-1, a GCS bucket and an Azure container (SQS events);
- `gcs-to-azure`: a GCS bucket -> a container in a second Azure account (Pub/Sub events).

It writes small objects, a 50 MB multipart object, awkward keys, overwrites and deletes,
shows progress live, prints the status table, checks every target against its source, and
stops everything it started.
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

from cloudmirror.cli.status import status_table
from cloudmirror.config import validate_config
from cloudmirror.local.provision import create_s3_bucket as create_bucket
from cloudmirror.local.provision import create_sqs_queue as create_queue
from cloudmirror.local.provision import notify_bucket_to_queue
from cloudmirror.location import parse_location
from cloudmirror.services.runtime import Service, upgrade_db
from cloudmirror.services.status import status
from cloudmirror.stores import open_store
from cloudmirror.stores.base import ListOptions, PutOptions

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


SOURCE_GCS, TARGET_GCS, TARGET_AZ, TARGET_AZ2 = ("cloudmirror-demo-gcs-src", "cloudmirror-demo-dr",
                                              "cloudmirror-demo-dr", "cloudmirror-demo-from-gcs")


def _setup(state: dict, workdir: Path) -> tuple[dict, list[tuple[str, str]]]:
    """Create the buckets, containers and feeds; returns (config, [(source, target) to check])."""
    from cloudmirror.local.cloud import azure_env_var
    from cloudmirror.local.gcp import ensure_subscription
    from cloudmirror.local.provision import create_azure_container as create_container
    from cloudmirror.local.provision import create_gcs_bucket

    endpoint = state["endpoint"]
    create_bucket(endpoint, "us-east-1", SOURCE, versioned=False)
    create_bucket(endpoint, "eu-west-1", TARGET)
    queue_url, queue_arn = create_queue(endpoint, "us-east-1", "cloudmirror-demo-events")
    notify_bucket_to_queue(endpoint, "us-east-1", SOURCE, queue_arn)
    src = f"s3://{SOURCE}?region=us-east-1&endpoint={endpoint}"
    dst = f"s3://{TARGET}?region=eu-west-1&endpoint={endpoint}"
    gcs = lambda b: f"gs://{b}?endpoint={state['gcs_endpoint']}&project={state['gcp_project']}"  # noqa: E731 - a one-line lambda reads better here
    accounts = list(state["azure_connection_strings"])
    az = lambda a, c: f"az://{a}/{c}?connection_string_env={azure_env_var(a)}"  # noqa: E731 - a one-line lambda reads better here
    gcs_src, gcs_dst = gcs(SOURCE_GCS), gcs(TARGET_GCS)
    az_dst, az_dst2 = az(accounts[0], TARGET_AZ), az(accounts[1], TARGET_AZ2)
    for url in (gcs_src, gcs_dst):
        create_gcs_bucket(parse_location(url))
    for url in (az_dst, az_dst2):
        create_container(parse_location(url))
    if state.get("pubsub_host"):
        sub = ensure_subscription(state["pubsub_host"], state["gcp_project"], state["gcs_topic"], "cloudmirror-demo",
                                  filter_=f'attributes.bucketId = "{SOURCE_GCS}"')
        gcs_feed = {"pubsub": sub, "wait_time_s": 1}
    else:
        gcs_feed = {"poll": "1s"}  # no Pub/Sub emulator here: list the bucket instead
    raw = {"ledger": f"sqlite:///{workdir / 'cloudmirror.db'}",
           "mirrors": [{"name": "demo", "source": src, "targets": [dst, gcs_dst, az_dst], "rpo_objective": "1m",
                        "events": [{"sqs": queue_url, "region": "us-east-1", "wait_time_s": 1}]},
                       {"name": "gcs-to-azure", "source": gcs_src, "targets": [az_dst2], "rpo_objective": "1m",
                        "events": [gcs_feed]}],
           "workers": {"poll_interval": "50ms", "multipart_threshold": 8 * 1024 * 1024, "part_size": 8 * 1024 * 1024}}
    return raw, [(src, dst), (src, gcs_dst), (src, az_dst), (gcs_src, az_dst2)]


async def _demo(console: Console, state: dict, workdir: Path) -> bool:
    raw, pairs = _setup(state, workdir)
    (workdir / "cloudmirror.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    console.print(f"config written to {workdir / 'cloudmirror.yaml'}")
    cfg = validate_config(raw)
    upgrade_db(cfg)
    svc = Service(cfg)
    runner = asyncio.create_task(svc.run())
    src, gcs_src = raw["mirrors"][0]["source"], raw["mirrors"][1]["source"]
    source, gsource = open_store(parse_location(src)), open_store(parse_location(gcs_src))
    try:
        writes = [(f"small/object-{i:03}.txt", f"hello {i}".encode()) for i in range(40)]
        writes += [(k, k.encode()) for k in KEYS]
        gwrites = [(f"gcs/object-{i:02}.txt", f"from gcs {i}".encode()) for i in range(10)] + [(KEYS[3], b"gcs")]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            wtask = progress.add_task("writing to s3 us-east-1 and gcs", total=len(writes) + len(gwrites) + 5)
            rtask = progress.add_task("objects in place on 4 targets", total=None)
            opts = PutOptions(content_type="text/plain", cache_control="max-age=60", metadata={"demo": "yes"},
                              tags={"team": "blue"})
            for key, body in writes:
                await source.put(key, body, opts)
                progress.advance(wtask)
            for key, body in gwrites:
                await gsource.put(key, body, opts)
                progress.advance(wtask)
            await source.put("big/50MB.bin", _big_body(BIG), PutOptions(size=BIG, part_size=8 * 1024 * 1024,
                                                                         content_type="application/octet-stream"))
            progress.advance(wtask)
            await source.put("small/object-000.txt", b"overwritten!", PutOptions(content_type="text/plain"))
            await gsource.put("gcs/object-00.txt", b"overwritten in gcs", PutOptions(content_type="text/plain"))
            progress.advance(wtask, 2)
            await source.delete("small/object-001.txt")
            await gsource.delete("gcs/object-01.txt")
            progress.advance(wtask, 2)
            deadline = time.monotonic() + 180
            while True:
                listings = [(await _listing(a), await _listing(b)) for a, b in pairs]
                progress.update(rtask, total=sum(len(w) for w, _ in listings),
                                completed=sum(sum(1 for k, s in w.items() if h.get(k) == s) for w, h in listings))
                if all(w == h for w, h in listings) and svc.ledger.backlog() == 0:
                    break
                if time.monotonic() > deadline:
                    console.print("[red]the targets did not converge within 180 s[/red]")
                    return False
                await asyncio.sleep(0.2)
        console.print(status_table(status(cfg, svc.ledger)))
        for (a, b), (w, _) in zip(pairs, listings, strict=True):
            console.print(f"[green]{parse_location(b).display} holds exactly the {len(w)} objects of "
                          f"{parse_location(a).display}[/green]")
        console.print("(incl. a 50 MB multipart object streamed to GCS and Azure, overwrites and deletes)")
        return True
    finally:
        await source.close()
        await gsource.close()
        svc.stop()
        await runner
        await svc.close()


def run_demo(console: Console, provider: str = "moto", keep: bool = False) -> bool:
    """Run the demo; returns True when the target converged."""

    from cloudmirror.local.cloud import LocalCloudError, export_env, start_all

    workdir = Path(tempfile.mkdtemp(prefix="cloudmirror-demo-"))
    console.print(f"starting the local cloud ({provider}, fake-gcs-server + Pub/Sub emulator, Azurite) ...")
    try:
        state, started = start_all(provider, port=None if provider == "moto" else 4566, log_dir=workdir,
                                   gcs_event_bucket=SOURCE_GCS)
    except LocalCloudError as e:
        raise RuntimeError(str(e)) from None
    for note in state["notes"]:
        console.print(f"[yellow]{note}[/yellow]")
    export_env(state)
    console.print(f"local cloud at {state['endpoint']} (s3), {state['gcs_endpoint']} (gcs), "
                  f"Azurite blob port {state['azure_blob_port']}")
    try:
        return asyncio.run(_demo(console, state, workdir))
    finally:
        if keep:
            console.print(f"local cloud left running (pids {', '.join(str(p.pid) for p in started)})")
        else:
            for p in reversed(started):
                p.stop()
            console.print("local cloud stopped")
