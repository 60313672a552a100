"""`cloudmirror status`, and the status tables that the demo prints too."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cloudmirror.cli.common import DEFAULT_CONFIG, ConfigOpt, config_or_exit, console, open_ledger
from cloudmirror.location import parse_location


def register(app: typer.Typer) -> None:
    app.command()(status)


def status(config: ConfigOpt = DEFAULT_CONFIG,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """Per mirror and target: pending, failed, completed, and the RPO (oldest pending age);
    the dead letters awaiting an operator. --json prints the list of target rows, or
    {"targets", "groups", "dead_letters"} when there are groups or pending dead letters."""
    from cloudmirror.services.dead_letters import counts
    from cloudmirror.services.status import group_status, running_config
    from cloudmirror.services.status import status as status_rows

    cfg = config_or_exit(config)
    with open_ledger(cfg.ledger) as ledger:
        cfg = running_config(cfg, ledger)
        rows = status_rows(cfg, ledger)
        dead = counts(ledger)
    groups = group_status(cfg, rows)
    if as_json:
        whole = {"targets": rows, "groups": groups, "dead_letters": dead}
        console.print_json(json.dumps(whole if groups or dead["pending"] else rows, default=str))
        return
    console.print(status_table(rows))
    if groups:
        console.print(group_table(groups))
    if dead["pending"]:
        feeds = ", ".join(f"{escape(f)}: {n}" for f, n in dead["feeds"].items())
        console.print(f"[red]dead letters: {dead['pending']} pending[/red] ({feeds}) -- "
                      "see `cloudmirror dead-letters list`", highlight=False, soft_wrap=True)


def group_table(groups: list[dict]) -> Table:
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
