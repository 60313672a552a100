"""`cloudmirror reconcile MIRROR`: compare listings, record the differences as work."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from cloudmirror.cli.common import DEFAULT_CONFIG, ConfigOpt, config_or_exit, console, err, exit_on_errors, fail
from cloudmirror.location import parse_location


def register(app: typer.Typer) -> None:
    app.command()(reconcile)


def reconcile(mirror: Annotated[str, typer.Argument(help="The mirror to reconcile.")],
              config: ConfigOpt = DEFAULT_CONFIG,
              target: Annotated[str | None, typer.Option(
                  "--target", "-t", help="Only this target (URL as in the config).")] = None,
              dry_run: Annotated[bool, typer.Option(
                  "--dry-run", help="Report the differences; change nothing.")] = False,
              checksum: Annotated[bool, typer.Option(
                  "--checksum", help="Read objects whose MD5 is unknown and compare their bytes.")] = False,
              force: Annotated[bool, typer.Option(
                  "--force", help="Make the deletes even when a target would lose more objects than the mirror's "
                  "max_deletes.")] = False,
              as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False) -> None:
    """Compare a mirror's source with its targets by listing both; record every difference as
    work for the workers (copies; deletes when the mirror replicates deletes, of objects
    cloudmirror wrote unless it says deletes: replicate_all). A target that would lose more
    objects than the mirror's max_deletes loses none: the count and a sample are printed and
    the command exits 1 (the copies are recorded all the same); --force makes the deletes."""
    from rich.progress import Progress as Bar
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    from cloudmirror.ledger.runs import Runs
    from cloudmirror.services.jobs import reconcile_summary
    from cloudmirror.services.runtime import Service
    from cloudmirror.stores.base import StoreError

    cfg = config_or_exit(config)
    with exit_on_errors():
        m = cfg.mirror(mirror)
        targets = [m.target(target)] if target else list(m.targets)
    svc = Service(cfg)
    results = []

    async def main() -> None:
        with Bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                 TextColumn("{task.fields[stats]}"), console=err, transient=as_json) as bar:
            for t in targets:
                before = [r for r in Runs(svc.ledger).list(m.name)
                          if r["target"] == t.name and r["status"] == "finished"]
                expected = before[0]["listed"] if before else None
                task = bar.add_task(f"{m.name} -> {parse_location(t.url).display}", stats="")

                def show(p, task=task, expected=expected) -> None:
                    eta = (f", ETA {max(expected - p.listed, 0) / p.rate:.0f}s" if expected and p.rate else "")
                    bar.update(task, stats=f"{p.listed} listed, {p.differences} differences, {p.rate:.0f}/s{eta}")
                results.extend(await svc.reconcile(m.name, t.name, dry_run=dry_run, checksum=checksum,
                                                   force=force, on_progress=show))
        await svc.close()

    try:
        asyncio.run(main())
    except StoreError as e:
        raise fail(f"reconcile failed: {e}", 1) from None
    rows = [reconcile_summary(t.name, p) for t, p in zip(targets, results, strict=True)]
    refused = [r for r in rows if r["deletes_refused"]]
    if as_json:
        console.print_json(json.dumps(rows))
    else:
        table = Table(title=f"reconcile {m.name}" + (" (dry run: nothing changed)" if dry_run else ""),
                      box=box.SIMPLE_HEAD)
        for col in ("target", "kind", "listed", "missing", "stale", "extra", "kept", "deletes", "max deletes",
                    "recorded", "missed events"):
            table.add_column(col, justify="left" if col in ("target", "kind") else "right")
        for r in rows:
            table.add_row(parse_location(r["target"]).display, r["kind"], *(str(r[k]) for k in (
                "listed", "missing", "stale", "extra", "extra_kept", "deletes", "delete_limit", "recorded",
                "missed_events")))
        console.print(table)
        for r in refused:
            err.print(f"{parse_location(r['target']).display}: {r['refusal']}", markup=False, highlight=False,
                      soft_wrap=True)
    if refused and not dry_run:
        raise fail(f"deletes refused on {len(refused)} target(s): more than max_deletes (--force deletes them)", 1)
