"""`cloudmirror dead-letters list|show|redrive|discard`: messages the intake could not use.
Re-driving and discarding are written to the audit log (actor `cli`, the OS user named in
the detail and as `resolved_by`). A refusal (still unparseable, not pending) exits 1, an
unknown id 2."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cloudmirror.cli.common import DEFAULT_CONFIG, ConfigOpt, config_or_exit, console, exit_on_errors, open_ledger


def register(app: typer.Typer) -> None:
    app.add_typer(dead_letters_app, name="dead-letters")


dead_letters_app = typer.Typer(help="Messages the intake could not use: list, show, re-drive or discard them.",
                               no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _time(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") if t is not None else "-"


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name (containers)
        return "cli"


@dead_letters_app.command("list")
def list_(config: ConfigOpt = DEFAULT_CONFIG,
          status: Annotated[str, typer.Option("--status", help="pending | redriven | discarded | all")] = "pending",
          feed: Annotated[str | None, typer.Option("--feed", help="Only this feed's (its address).")] = None,
          limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 100,
          as_json: JsonOpt = False) -> None:
    """Dead letters, newest first (the pending ones unless --status says otherwise)."""
    from cloudmirror.services import dead_letters as service

    cfg = config_or_exit(config)
    with open_ledger(cfg.ledger) as ledger:
        rows = service.list_dead_letters(ledger, status=status, feed=feed, limit=limit).items
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title=f"dead letters ({status})", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("id", "received (UTC)", "feed", "status", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r["id"]), _time(r["received_at"]), escape(r["feed"]), r["status"], escape(r["reason"]))
    console.print(table)


@dead_letters_app.command("show")
def show(dead_letter_id: Annotated[int, typer.Argument(min=1, help="The dead letter's id.")],
         config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """One dead letter with its body."""
    from cloudmirror.services import dead_letters as service

    cfg = config_or_exit(config)
    with open_ledger(cfg.ledger) as ledger:
        row = service.get_dead_letter(ledger, dead_letter_id)
    if as_json:
        console.print_json(json.dumps(row, default=str))
        return
    for k in ("id", "feed", "message_id", "reason", "status", "resolved_by"):
        console.print(f"[bold]{k}:[/bold] {escape(str(row[k]))}", highlight=False, soft_wrap=True)
    console.print(f"[bold]received:[/bold] {_time(row['received_at'])}  [bold]resolved:[/bold] "
                  f"{_time(row['resolved_at'])}", highlight=False)
    console.print(escape(row["body"]), highlight=False, soft_wrap=True)


@dead_letters_app.command("redrive")
def redrive(dead_letter_id: Annotated[int, typer.Argument(min=1, help="The dead letter's id.")],
            config: ConfigOpt = DEFAULT_CONFIG, as_json: JsonOpt = False) -> None:
    """Parse a dead letter again and record its versions for the mirrors as they run now;
    exits 1 with the reason when it still cannot be used (it stays pending)."""
    from cloudmirror.services import dead_letters as service
    from cloudmirror.services.status import running_config

    cfg = config_or_exit(config)
    with open_ledger(cfg.ledger) as ledger:
        running = running_config(cfg, ledger)
        row = _audited(ledger, "redrive", dead_letter_id,
                       lambda: service.redrive(running, ledger, dead_letter_id, by=_by()))
    if as_json:
        console.print_json(json.dumps(row, default=str))
        return
    console.print(f"dead letter {row['id']} re-driven: {row['recorded']} new version(s) recorded for "
                  f"{', '.join(row['mirrors'])}", highlight=False)


@dead_letters_app.command("discard")
def discard(dead_letter_id: Annotated[int, typer.Argument(min=1, help="The dead letter's id.")],
            config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Mark a dead letter discarded (it stays listed under --status discarded)."""
    from cloudmirror.services import dead_letters as service

    cfg = config_or_exit(config)
    with open_ledger(cfg.ledger) as ledger:
        row = _audited(ledger, "discard", dead_letter_id, lambda: service.discard(ledger, dead_letter_id, by=_by()))
    console.print(f"dead letter {row['id']} discarded", highlight=False)


def _audited(ledger, action: str, dead_letter_id: int, fn) -> dict:
    """Run fn() and write the audit entry (actor `cli`) whatever its outcome; a refusal exits
    1 (conflict) or 2 (unknown id) with its reason."""
    from cloudmirror.errors import ConflictError, NotFoundError, RequestError
    from cloudmirror.services import access

    target = f"dead-letters/{dead_letter_id}"
    with exit_on_errors(ledger.url, conflict_code=1):
        try:
            row = fn()
        except RequestError as e:
            status = 404 if isinstance(e, NotFoundError) else 409 if isinstance(e, ConflictError) else 422
            access.audit(ledger, actor="cli", action=f"dead-letters {action}", target=target, status=status,
                         detail=f"{e.code}: {e.message} ({_by()})")
            raise
        detail = f"{row.get('recorded', 0)} version(s) recorded" if action == "redrive" else "discarded"
        access.audit(ledger, actor="cli", action=f"dead-letters {action}", target=target, status=200,
                     detail=f"{detail} ({_by()})")
    return row
