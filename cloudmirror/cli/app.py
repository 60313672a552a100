"""The root `cloudmirror` app: every sub-command module registers itself here."""

from __future__ import annotations

import typer

from cloudmirror.cli import db, dr, keys, local, reconcile, report, serve, status

app = typer.Typer(help="Near-real-time mirrors of object storage across regions and providers.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

for _module in (serve, status, reconcile, db, local, keys, report, dr):
    _module.register(app)


def main() -> None:  # pragma: no cover
    app()
