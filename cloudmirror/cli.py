"""The `cloudmirror` command line (typer + rich). Thin: every command calls service functions.

Bad input exits non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from cloudmirror import cli_failover, cli_report
from cloudmirror.cli_common import DEFAULT_CONFIG, ConfigOpt, console, err, fail
from cloudmirror.cli_common import config_or_exit as _config
from cloudmirror.cli_keys import keys_app
from cloudmirror.config import Config, ConfigError
from cloudmirror.location import parse_location

app = typer.Typer(help="Near-real-time mirrors of object storage across regions and providers.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Ledger database.", no_args_is_help=True)
local_app = typer.Typer(help="The local emulator cloud: moto (or LocalStack), fake-gcs-server + the Pub/Sub emulator, "
                             "and Azurite.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(local_app, name="local")
app.add_typer(keys_app, name="keys")
cli_report.register(app)
cli_failover.register(app)


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format='{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":%(message)r}')


def _serve(config: Config, *, intake: bool, workers: bool, api: bool) -> None:
    from cloudmirror.ledger.db import LedgerError
    from cloudmirror.service import Service, ServiceError, upgrade_db

    async def main() -> None:
        svc = Service(config)
        svc.install_signal_handlers()
        try:
            await svc.run(intake=intake, workers=workers, api=api)
        finally:
            await svc.close()

    try:
        upgrade_db(config)
        asyncio.run(main())
    except (ServiceError, LedgerError) as e:
        raise fail(str(e)) from None


@app.command()
def run(config: ConfigOpt = DEFAULT_CONFIG, no_api: Annotated[bool, typer.Option(help="Do not serve the REST API.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Intake + workers + API in one process (SIGTERM drains in-flight copies, then exits)."""
    _logging(verbose)
    _serve(_config(config), intake=True, workers=True, api=not no_api)


@app.command()
def worker(config: ConfigOpt = DEFAULT_CONFIG, no_intake: Annotated[bool, typer.Option(help="Only copy; do not read event feeds.")] = False,
           verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Intake and workers without the API; start several on PostgreSQL to share the work."""
    _logging(verbose)
    cfg = _config(config)
    _serve(cfg, intake=not no_intake, workers=True, api=False)


@app.command()
def api(config: ConfigOpt = DEFAULT_CONFIG, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Serve only the REST API."""
    _logging(verbose)
    _serve(_config(config), intake=False, workers=False, api=True)


@app.command()
def status(config: ConfigOpt = DEFAULT_CONFIG,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """Per mirror and target: pending, failed, completed, and the RPO (oldest pending age)."""
    from cloudmirror.ledger.db import LedgerError, describe, redact
    from cloudmirror.ledger.mirrors import MirrorSpecs
    from cloudmirror.ledger.repo import Ledger
    from cloudmirror.mirrors import current_config
    from cloudmirror.service import group_status
    from cloudmirror.service import status as status_rows

    cfg = _config(config)
    ledger = Ledger(cfg.ledger, pool_size=0)
    try:
        if MirrorSpecs(ledger).revision()[1]:  # seeded by a start: the mirrors as they run now (API changes too)
            cfg = current_config(cfg, ledger)
        rows = status_rows(cfg, ledger)
    except ConfigError as e:
        raise fail(f"the mirrors in the ledger do not fit {config}: {e}") from None
    except LedgerError as e:
        raise fail(str(e)) from None
    except Exception as e:  # noqa: BLE001 - unreachable, or no schema yet: one line saying which
        raise fail(f"cannot read the ledger {redact(cfg.ledger)}: {describe(e)}") from None
    finally:
        ledger.close()
    groups = group_status(cfg, rows)
    if as_json:
        console.print_json(json.dumps({"targets": rows, "groups": groups} if groups else rows, default=str))
        return
    console.print(status_table(rows))
    if groups:
        console.print(group_table(groups))


def group_table(groups: list[dict]) -> Table:
    from datetime import UTC, datetime

    table = Table(title="consistency groups", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("group", "mirrors", "recovery point (UTC)", "RPO", "objective", "lagging"):
        table.add_column(col)
    for g in groups:
        rpo = f"{g['rpo_seconds']:.1f}s"
        table.add_row(g["group"], ", ".join(g["mirrors"]),
                      datetime.fromtimestamp(g["recovery_point"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
                      rpo if g["objective_met"] else f"[red]{rpo}[/red]", f"{g['rpo_objective']:g}s",
                      g["lagging"] or "-")
    return table


def status_table(rows: list[dict]) -> Table:
    table = Table(title="cloudmirror status", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("mirror", no_wrap=True)
    table.add_column("target", min_width=16, overflow="fold")
    for col in ("pending", "active", "done", "failed", "superseded", "skipped", "RPO"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        rpo = f"{r['rpo_seconds']:.1f}s"
        rpo = rpo if r.get("objective_met", True) else f"[red]{rpo}[/red]"
        table.add_row(r["mirror"], parse_location(r["target"]).display, str(r["pending"]), str(r["in_progress"]),
                      str(r["completed"]), f"[red]{r['failed']}[/red]" if r["failed"] else "0", str(r["superseded"]),
                      str(r["skipped"]), rpo)
    return table


@app.command()
def reconcile(mirror: Annotated[str, typer.Argument(help="The mirror to reconcile.")],
              config: ConfigOpt = DEFAULT_CONFIG,
              target: Annotated[str | None, typer.Option("--target", "-t", help="Only this target (URL as in the config).")] = None,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="Report the differences; change nothing.")] = False,
              checksum: Annotated[bool, typer.Option("--checksum", help="Read objects whose MD5 is unknown and compare their bytes.")] = False,
              as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False) -> None:
    """Compare a mirror's source with its targets by listing both; record every difference as
    work for the workers (copies; deletes when the mirror replicates deletes)."""
    from rich.progress import Progress as Bar
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    from cloudmirror.ledger.runs import Runs
    from cloudmirror.service import Service
    from cloudmirror.stores.base import StoreError

    cfg = _config(config)
    try:
        m = cfg.mirror(mirror)
        targets = [m.target(target)] if target else list(m.targets)
    except KeyError as e:
        raise fail(f"unknown mirror or target: {e.args[0]}") from None
    svc = Service(cfg)
    results = []

    async def main() -> None:
        with Bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                 TextColumn("{task.fields[stats]}"), console=err, transient=as_json) as bar:
            for t in targets:
                before = [r for r in Runs(svc.ledger).list(m.name) if r["target"] == t.name and r["status"] == "finished"]
                expected = before[0]["listed"] if before else None
                task = bar.add_task(f"{m.name} -> {parse_location(t.url).display}", stats="")

                def show(p, task=task, expected=expected) -> None:
                    eta = (f", ETA {max(expected - p.listed, 0) / p.rate:.0f}s" if expected and p.rate else "")
                    bar.update(task, stats=f"{p.listed} listed, {p.differences} differences, {p.rate:.0f}/s{eta}")
                results.extend(await svc.reconcile(m.name, t.name, dry_run=dry_run, checksum=checksum,
                                                   on_progress=show))
        await svc.close()

    try:
        asyncio.run(main())
    except StoreError as e:
        raise fail(f"reconcile failed: {e}", 1) from None
    rows = [dict(target=t.name, kind=p.kind, listed=p.listed, missing=p.missing, stale=p.stale, extra=p.extra,
                 extra_kept=p.extra_kept, in_flight=p.in_flight, recorded=p.recorded, missed_events=p.missed_events,
                 examples=p.examples) for t, p in zip(targets, results, strict=True)]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title=f"reconcile {m.name}" + (" (dry run: nothing changed)" if dry_run else ""), box=box.SIMPLE_HEAD)
    for col in ("target", "kind", "listed", "missing", "stale", "extra", "recorded", "missed events"):
        table.add_column(col, justify="left" if col in ("target", "kind") else "right")
    for r in rows:
        table.add_row(parse_location(r["target"]).display, r["kind"], *(str(r[k]) for k in (
            "listed", "missing", "stale", "extra", "recorded", "missed_events")))
    console.print(table)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = DEFAULT_CONFIG,
               ledger: Annotated[str | None, typer.Option(help="Ledger URL (overrides the config).")] = None) -> None:
    """Create or migrate the ledger schema to the newest revision (idempotent)."""
    from cloudmirror.ledger.db import LedgerError, upgrade

    url = ledger or _config(config).ledger
    try:
        upgrade(url)
    except LedgerError as e:
        raise fail(str(e)) from None
    console.print("ledger schema is up to date")


@local_app.command("up")
def local_up(localstack: Annotated[bool, typer.Option("--localstack", help="LocalStack (host mode) instead of moto.")] = False,
             port: Annotated[int | None, typer.Option(help="Port (default: 5000 moto, 4566 LocalStack).")] = None) -> None:
    """Start the local emulator cloud in the background and print its environment."""
    from cloudmirror.local import cloud

    try:
        state = cloud.up(provider="localstack" if localstack else "moto", port=port)
    except cloud.LocalCloudError as e:
        raise fail(str(e)) from None
    console.print(f"local cloud up: {state['provider']} at {state['endpoint']}")
    if state.get("gcs_endpoint"):
        pubsub = f", notifications to Pub/Sub emulator {state['pubsub_host']}" if state.get("pubsub_host") else ""
        console.print(f"  fake-gcs-server at {state['gcs_endpoint']}{pubsub}")
    if state.get("azure_blob_port"):
        console.print(f"  Azurite blob :{state['azure_blob_port']} queue :{state['azure_queue_port']} "
                      f"(accounts {', '.join(state['azure_connection_strings'])})")
    for note in state.get("notes", []):
        console.print(f"[yellow]{note}[/yellow]")
    console.print(cloud.env_lines(state), highlight=False)


@local_app.command("down")
def local_down() -> None:
    """Stop everything `local up` started."""
    from cloudmirror.local import cloud

    stopped = cloud.down()
    console.print("local cloud stopped" if stopped else "local cloud was not running")


@local_app.command("env")
def local_env() -> None:
    """Print `export` lines for the running local cloud (eval "$(cloudmirror local env)")."""
    from cloudmirror.local import cloud

    state = cloud.read_state()
    if not state:
        raise fail("the local cloud is not running: cloudmirror local up")
    typer.echo(cloud.env_lines(state))


@app.command()
def demo(localstack: Annotated[bool, typer.Option("--localstack", help="Run the demo on LocalStack instead of moto.")] = False,
         keep: Annotated[bool, typer.Option(help="Leave the local cloud running afterwards.")] = False) -> None:
    """Start the local cloud, mirror us-east-1 -> eu-west-1, write objects, show progress and status."""
    from cloudmirror.local.demo import run_demo

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        ok = run_demo(console, provider="localstack" if localstack else "moto", keep=keep)
    except Exception as e:  # noqa: BLE001 - one line, not a trace
        raise fail(f"demo failed: {e}", 1) from None
    if not ok:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
