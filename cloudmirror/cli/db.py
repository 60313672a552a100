"""`cloudmirror db upgrade`: create or migrate the ledger schema."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudmirror.cli.common import DEFAULT_CONFIG, ConfigOpt, config_or_exit, console, exit_on_errors

db_app = typer.Typer(help="Ledger database.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = DEFAULT_CONFIG,
               ledger: Annotated[str | None, typer.Option(help="Ledger URL (overrides the config).")] = None) -> None:
    """Create or migrate the ledger schema to the newest revision (idempotent)."""
    from cloudmirror.ledger.db import upgrade

    url = ledger or config_or_exit(config).ledger
    with exit_on_errors():
        upgrade(url)
    console.print("ledger schema is up to date")
