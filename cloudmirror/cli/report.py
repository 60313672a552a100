"""`cloudmirror report`: the signed compliance RPO report, and `report verify FILE`.

    cloudmirror report MIRROR [--since 7d] [--until now] [--format json|csv|pdf] [-o FILE]
    cloudmirror report --group G ...
    cloudmirror report verify FILE

Wired into the main app with `register(app)`. Thin: it parses, calls rpo_service, writes.
Bad input exits 2 with a one-line reason; an invalid report exits 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from cloudmirror.cli.common import DEFAULT_CONFIG, ConfigOpt, open_ledger
from cloudmirror.cli.common import config_or_exit as _config
from cloudmirror.cli.common import fail as _fail


class _DefaultToCreate(TyperGroup):
    """`report MIRROR ...` and `report --group G ...` run `report create`; `report verify
    FILE` runs verify (a mirror named `verify` is reported with `report create verify`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


report_app = typer.Typer(cls=_DefaultToCreate, no_args_is_help=True, add_completion=False,
                         pretty_exceptions_enable=False,
                         help="Signed compliance RPO reports (JSON, CSV, PDF): `report MIRROR`, "
                              "`report --group G`, `report verify FILE`.")


def register(app: typer.Typer) -> None:
    """Add `report` (and `report verify`) to the main command line."""
    app.add_typer(report_app, name="report")


@report_app.command("create")
def create(mirror: Annotated[str | None, typer.Argument(help="The mirror to report on.")] = None,
           group: Annotated[str | None, typer.Option(
               "--group", "-g", help="A consistency group instead of a mirror.")] = None,
           since: Annotated[str, typer.Option(
               help="Start: ISO date/time (UTC), epoch seconds, or a duration ago (24h, 7d).")] = "24h",
           until: Annotated[str, typer.Option(
               help="End: ISO date/time (UTC), epoch seconds, a duration ago, or now.")] = "now",
           fmt: Annotated[str | None, typer.Option(
               "--format", "-f", help="json, csv or pdf (default: from -o's suffix, else json).")] = None,
           output: Annotated[Path | None, typer.Option(
               "--output", "-o", help="Write here (default: stdout; a PDF needs -o).")] = None,
           config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Write the signed RPO report of a mirror or a group.

    It states the period, scope and objective, the % of versions replicated within it, the
    worst RPO, every breach with the objects affected, failovers and drills, and (PDF) a
    chart of RPO over time."""
    from cloudmirror.reports import FORMATS
    from cloudmirror.services.rpo import build_report, parse_when

    if fmt is None:
        suffix = output.suffix.lower().lstrip(".") if output else ""
        fmt = suffix if suffix in FORMATS else "json"
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise _fail(f"unknown format {fmt!r}: use json, csv or pdf")
    if fmt == "pdf" and output is None and sys.stdout.isatty():
        raise _fail("a PDF report needs -o FILE")
    now = time.time()
    try:
        t0, t1 = parse_when(since, now=now), parse_when(until, now=now)
    except ValueError as e:
        raise _fail(str(e)) from None
    cfg = _config(config)
    with open_ledger(cfg.ledger) as ledger:
        blob = build_report(cfg, ledger, mirror=mirror, group=group, since=t0, until=t1, fmt=fmt, now=now)
    if output is None:
        sys.stdout.buffer.write(blob)
        sys.stdout.flush()
        return
    try:
        output.write_bytes(blob)
    except OSError as e:
        raise _fail(f"cannot write {output}: {e.strerror}") from None
    typer.echo(f"wrote {fmt} report to {output} ({len(blob)} bytes, signed)", err=True)


@report_app.command("verify")
def verify(file: Annotated[Path, typer.Argument(help="A report written by `cloudmirror report`.")],
           config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Check a report's digest and signature (exit 0 valid, 1 invalid).

    The server's report key is used (never created here); the reason is printed in one line."""
    from cloudmirror.services.rpo import verify_report

    try:
        blob = file.read_bytes()
    except OSError as e:
        raise _fail(f"cannot read {file}: {e.strerror}") from None
    cfg = _config(config) if config.exists() or config != DEFAULT_CONFIG else None
    ok, reason = verify_report(blob, cfg)
    if not ok:
        raise _fail(f"invalid: {reason}", 1)
    typer.echo(reason)
