"""`cloudmirror keys create|list|revoke`: API keys of the REST API. Creating and revoking are
written to the audit log (actor `cli`). Bad input exits non-zero with a one-line reason."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from cloudmirror.cli.common import DEFAULT_CONFIG, ConfigOpt, console, err, open_ledger
from cloudmirror.cli.common import fail as _fail


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


keys_app = typer.Typer(help="API keys of the REST API (bearer tokens with a role: viewer, operator, admin).",
                       no_args_is_help=True)

LedgerOpt = Annotated[str | None, typer.Option("--ledger", help="Ledger URL (overrides the config).")]


def _ledger_url(config: Path, ledger: str | None) -> str:
    from cloudmirror.config import ConfigError, load_config

    if ledger:
        return ledger
    try:
        return load_config(config).ledger
    except ConfigError as e:
        raise _fail(str(e)) from None


def _run(url: str, fn):
    """Call fn(ledger); ledger trouble and bad requests become one-line errors."""
    with open_ledger(url) as ledger:
        return fn(ledger)


def _who() -> str:
    try:
        return f"by OS user {getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name (containers): say nothing
        return "by an unknown OS user"


def _audited(ledger, action: str, target: str, fn):
    """Run fn() and write the audit entry (actor `cli`) whatever its outcome."""
    from cloudmirror.errors import ConflictError, NotFoundError, RequestError
    from cloudmirror.services import access

    try:
        result, status, detail = fn()
    except RequestError as e:
        status = 404 if isinstance(e, NotFoundError) else 409 if isinstance(e, ConflictError) else 422
        access.audit(ledger, actor="cli", action=action, target=target, status=status, detail=f"{e.code}: {e.message}")
        raise
    access.audit(ledger, actor="cli", action=action, target=target, status=status, detail=f"{detail} ({_who()})")
    return result


def _time(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") if t is not None else "-"


@keys_app.command("create")
def create(name: Annotated[str, typer.Option("--name", help="What the key is for (e.g. prometheus, ci).")],
           role: Annotated[str, typer.Option("--role", help="viewer | operator | admin")],
           config: ConfigOpt = DEFAULT_CONFIG, ledger: LedgerOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Create a key and print its token. The token is shown once: only its SHA-256 is kept."""
    from cloudmirror.services import access

    def make(led):
        def call():
            token, key = access.create_key(led, name, role)
            return (token, key), 201, f"key {key['id']} ({key['name']}) role={key['role']}"
        return _audited(led, "keys create", f"key {name}", call)

    token, key = _run(_ledger_url(config, ledger), make)
    if as_json:
        console.print_json(json.dumps({"key": key, "token": token}))
        return
    err.print(f"created key {key['id']} [bold]{key['name']}[/bold] ({key['role']}). Its token, shown only now:",
                  highlight=False)
    typer.echo(token)


@keys_app.command("list")
def list_(config: ConfigOpt = DEFAULT_CONFIG, ledger: LedgerOpt = None,
          all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The keys: id, name, role, token prefix, created, last used (never the tokens)."""
    from cloudmirror.services import access

    def fetch(led):
        out, after = [], None
        while True:
            page = access.list_keys(led, after=after, limit=1000, include_revoked=all_)
            out.extend(page.items)
            if page.next_after is None:
                return out
            after = page.next_after

    keys = _run(_ledger_url(config, ledger), fetch)
    if as_json:
        console.print_json(json.dumps(keys))
        return
    table = Table(title="API keys", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("id", "name", "role", "prefix", "created (UTC)", "last used", "revoked"):
        table.add_column(col, justify="right" if col == "id" else "left")
    for k in keys:
        table.add_row(str(k["id"]), k["name"], k["role"], k["prefix"] + "...", _time(k["created_at"]),
                      _time(k["last_used_at"]), _time(k["revoked_at"]))
    console.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[int, typer.Argument(help="The key's id (see `keys list`).", min=1)],
           config: ConfigOpt = DEFAULT_CONFIG, ledger: LedgerOpt = None) -> None:
    """Revoke a key: it stops working at once. Idempotent."""
    from cloudmirror.services import access

    def revoke_(led):
        def call():
            key, changed = access.revoke_key(led, key_id)
            return (key, changed), 200, f"key {key_id} ({key['name']}) " + ("revoked" if changed else
                                                                            "was already revoked")
        return _audited(led, "keys revoke", f"key {key_id}", call)

    key, changed = _run(_ledger_url(config, ledger), revoke_)
    console.print(f"key {key['id']} {key['name']} " + ("revoked" if changed else "was already revoked"),
                  highlight=False)
