"""The `cloudmirror` command line (typer + rich): one module per group of sub-commands, each
wired into the app by its `register(app)`. Thin: every command parses, calls the service
functions that the REST API calls too, and prints. Bad input exits non-zero with a one-line
reason on stderr. `run`, `worker` and `api` are the composition root: they build the service
and, for the API, the FastAPI app beside it."""

from cloudmirror.cli.app import app, main

__all__ = ["app", "main"]
