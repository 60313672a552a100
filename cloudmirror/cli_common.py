"""What every `cloudmirror` sub-command module shares: the --config option, the consoles,
and how bad input ends a command (one line on stderr, a non-zero exit)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cloudmirror.config import Config, ConfigError, load_config

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="CLOUDMIRROR_CONFIG", help="Config file (YAML).")]
DEFAULT_CONFIG = Path("cloudmirror.yaml")
# output that is not a terminal (logs, pipes, CI) has no width to respect: do not squeeze tables
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: MESSAGE` on stderr; raise the result to exit with `code`."""
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def config_or_exit(path: Path) -> Config:
    """Load the config file, or exit 2 with the field named."""
    try:
        return load_config(path)
    except ConfigError as e:
        raise fail(str(e)) from None
