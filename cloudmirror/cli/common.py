"""What every `cloudmirror` sub-command module shares: the --config option, the consoles,
how bad input ends a command (one line on stderr, a non-zero exit), and the one mapping of
request and ledger errors to that exit."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from cloudmirror.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from cloudmirror.ledger.repo import Ledger

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="CLOUDMIRROR_CONFIG", help="Config file (YAML).")]
DEFAULT_CONFIG = Path("cloudmirror.yaml")
# output that is not a terminal (logs, pipes, CI) has no width to respect: do not squeeze tables
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: MESSAGE` (redacted) on stderr; raise the result to exit with `code`."""
    from rich.markup import escape

    from cloudmirror.redact import redact

    err.print(f"[red]error:[/red] {escape(redact(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def config_or_exit(path: Path) -> Config:
    """Load the config file, or exit 2 with the field named."""
    try:
        return load_config(path)
    except ConfigError as e:
        raise fail(str(e)) from None


@contextlib.contextmanager
def exit_on_errors(ledger_url: str | None = None, *, conflict_code: int = 2) -> Iterator[None]:
    """End the command with one line for what a service call may raise: a bad request 2 (a
    ConflictError `conflict_code`: 1 where it means "refused in this state", as for a
    failover), a failing store 1, bad config or a mirror spec in the ledger that no longer
    validates 2, and -- when `ledger_url` is given -- any trouble with the ledger
    (unreachable, no schema yet) 2, naming the ledger without its password."""
    from cloudmirror.errors import ConflictError, RequestError
    from cloudmirror.ledger.db import LedgerError, describe, redact
    from cloudmirror.stores.base import StoreError

    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except ConflictError as e:
        raise fail(e.message, conflict_code) from None
    except RequestError as e:
        raise fail(e.message) from None
    except StoreError as e:
        raise fail(f"{type(e).__name__}: {e}", 1) from None
    except (LedgerError, ConfigError) as e:
        raise fail(str(e)) from None
    except Exception as e:
        if ledger_url is None:
            raise
        raise fail(f"cannot use the ledger {redact(ledger_url)}: {describe(e)}") from None


@contextlib.contextmanager
def open_ledger(url: str) -> Iterator[Ledger]:
    """A ledger for one command (no pool), closed afterwards; errors as `exit_on_errors`."""
    from cloudmirror.ledger.repo import Ledger

    with exit_on_errors(url):
        ledger = Ledger(url, pool_size=0)
        try:
            yield ledger
        finally:
            ledger.close()
