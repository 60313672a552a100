"""`cloudmirror report`: the signed compliance RPO report, its keys, and `report verify FILE`.

    cloudmirror report MIRROR [--since 7d] [--until now] [--format json|csv|pdf] [-o FILE]
    cloudmirror report --group G ...
    cloudmirror report verify FILE [--public-key PEM]...
    cloudmirror report public-key [-o FILE]
    cloudmirror report keygen -o FILE

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
    FILE`, `report public-key` and `report keygen` run those (a mirror named `verify` is
    reported with `report create verify`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


report_app = typer.Typer(cls=_DefaultToCreate, no_args_is_help=True, add_completion=False,
                         pretty_exceptions_enable=False,
                         help="Signed compliance RPO reports (JSON, CSV, PDF): `report MIRROR`, "
                              "`report --group G`, `report verify FILE --public-key PEM`, "
                              "`report public-key`, `report keygen -o FILE`.")


def register(app: typer.Typer) -> None:
    """Add `report` (and `report verify`, `public-key`, `keygen`) to the main command line."""
    app.add_typer(report_app, name="report")


@report_app.command("create")
def create(mirror: Annotated[str | None, typer.Argument(help="The mirror to report on.")] = None,
           group: Annotated[str | None, typer.Option(
               "--group", "-g", help="A consistency group instead of a mirror.")] = None,
           since: Annotated[str | None, typer.Option(
               help="Start: ISO date/time (UTC), epoch seconds, or a duration ago (24h, 7d). "
                    "Default: 24h (at most api.max_report_period).")] = None,
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
    from cloudmirror.errors import InvalidInput
    from cloudmirror.reports import FORMATS
    from cloudmirror.services.rpo import build_report, parse_period

    if fmt is None:
        suffix = output.suffix.lower().lstrip(".") if output else ""
        fmt = suffix if suffix in FORMATS else "json"
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise _fail(f"unknown format {fmt!r}: use json, csv or pdf")
    if fmt == "pdf" and output is None and sys.stdout.isatty():
        raise _fail("a PDF report needs -o FILE")
    now = time.time()
    cfg = _config(config)
    try:
        t0, t1 = parse_period(since, until, default_since="24h", now=now, field_prefix="--", config=cfg)
    except InvalidInput as e:
        raise _fail(e.message) from None
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
           public_key: Annotated[list[Path] | None, typer.Option(
               "--public-key", "-k", help="PEM file of the public key (`report public-key -o FILE`; repeat it, or "
                                          "concatenate PEMs, to keep old keys for old reports).")] = None,
           config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Check a report's digest and signature (exit 0 valid, 1 invalid).

    With --public-key only that public key is used: an auditor needs nothing private. Without
    it, the deployment's signing key (never created here). An old v1 report is checked with
    the old HMAC key (CLOUDMIRROR_REPORT_KEY or its file) and said to be HMAC. The reason is
    printed in one line."""
    from cloudmirror.reports import ReportKeyError
    from cloudmirror.reports.keys import load_public_keys
    from cloudmirror.services.rpo import verify_report

    try:
        blob = file.read_bytes()
    except OSError as e:
        raise _fail(f"cannot read {file}: {e.strerror}") from None
    keys = None
    if public_key:
        try:
            keys = [k for p in public_key for k in load_public_keys(p)]
        except ReportKeyError as e:
            raise _fail(str(e)) from None
    cfg = _config(config) if config.exists() or config != DEFAULT_CONFIG else None
    ok, reason = verify_report(blob, cfg, public_keys=keys)
    if not ok:
        raise _fail(f"invalid: {reason}", 1)
    typer.echo(reason)


@report_app.command("public-key")
def public_key(output: Annotated[Path | None, typer.Option(
                   "--output", "-o", help="Write the PEM here (default: stdout).")] = None,
               config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Print the public key that verifies this deployment's reports (PEM), for auditors.

    It is the public half of the signing key (created first with a SQLite ledger if there is
    none, as when signing). Keep the old ones when you rotate: old reports name their key id."""
    from cloudmirror.cli.common import exit_on_errors
    from cloudmirror.services.rpo import report_public_key

    cfg = _config(config) if config.exists() or config != DEFAULT_CONFIG else None
    with exit_on_errors():
        pub = report_public_key(cfg)
    if output is None:
        typer.echo(pub["public_key_pem"], nl=False)
        return
    try:
        output.write_text(pub["public_key_pem"])
    except OSError as e:
        raise _fail(f"cannot write {output}: {e.strerror}") from None
    typer.echo(f"wrote the report public key {pub['key_id']} to {output}", err=True)


@report_app.command("keygen")
def keygen(output: Annotated[Path, typer.Option(
               "--output", "-o", help="The new private key file (PEM, mode 0600; never overwritten).")]) -> None:
    """Create an Ed25519 report signing key for the deployment.

    Give it to every worker and API replica (CLOUDMIRROR_REPORT_SIGNING_KEY_FILE, or the PEM
    in CLOUDMIRROR_REPORT_SIGNING_KEY) and publish its public key (`report public-key`)."""
    from cloudmirror.reports import ReportKeyError
    from cloudmirror.reports.keys import generate_key_file

    try:
        key = generate_key_file(output)
    except FileExistsError:
        raise _fail(f"{output} exists: refusing to overwrite a key (move it away first to replace it)") from None
    except ReportKeyError as e:
        raise _fail(str(e)) from None
    typer.echo(f"wrote an Ed25519 report signing key to {output} (mode 0600, key id {key.id}); "
               "publish its public key with `cloudmirror report public-key`")
