"""The `cloudmirror` command line (typer + rich): one module per group of sub-commands, each
wired into the app here by its `register(app)`. Thin: every command parses, calls the service
functions that the REST API calls too, and prints. Bad input exits non-zero with a one-line
reason on stderr. `run`, `worker` and `api` (serve.py) are the composition root: they build
the service and, for the API, the FastAPI app beside it."""

from __future__ import annotations

import typer

from cloudmirror.cli import db, dead_letters, dr, keys, local, reconcile, report, serve, status

app = typer.Typer(help="Near-real-time mirrors of object storage across regions and providers.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

for _module in (serve, status, reconcile, db, local, keys, report, dr, dead_letters):
    _module.register(app)


def main() -> None:  # pragma: no cover
    app()
