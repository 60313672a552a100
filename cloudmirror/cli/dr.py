"""`cloudmirror failover|failback|drill`: thin commands over cloudmirror.dr.failover and
cloudmirror.dr.drills (the same functions the REST API calls).

    cloudmirror failover MIRROR --to TARGET [--force] [--drain-timeout 5m] [--fence] [--poll 60s]
    cloudmirror failback MIRROR [--policy newest_wins|primary_wins|keep_both] [--timeout 10m] [--force]
    cloudmirror drill MIRROR [--sample 20]

Wired into the main app with `register(app)`. Bad input exits 2 with a one-line reason; a
failover that could not happen (aborted, refused) exits 1, as does a drill that did not pass.
Running services pick up a switch within a second (they poll the ledger's mirrors).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from cloudmirror.cli.common import DEFAULT_CONFIG, ConfigOpt, exit_on_errors, open_ledger
from cloudmirror.cli.common import config_or_exit as _config
from cloudmirror.cli.common import fail as _fail
from cloudmirror.config import Config, parse_duration

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the record as JSON.")]


def register(app: typer.Typer) -> None:
    """Add `failover`, `failback` and `drill` to the main command line."""
    app.command("failover")(failover_cmd)
    app.command("failback")(failback_cmd)
    app.command("drill")(drill_cmd)


def _seconds(option: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise _fail(f"{option}: {e}") from None


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"


def _run(config: Config, call: Callable[[Any], Awaitable[dict]]) -> dict:
    """Seed the ledger's mirrors from the file (as a service start does), run `call(service)`,
    and turn request errors into one-line exits (2: bad input or unknown; 1: refused)."""
    from cloudmirror.services import mirrors
    from cloudmirror.services.runtime import Service

    async def main() -> dict:
        svc = Service(config)
        try:
            await asyncio.to_thread(mirrors.seed, config, svc.ledger)
            return await call(svc)
        finally:
            await svc.close()

    with exit_on_errors(conflict_code=1):
        return asyncio.run(main())


def _print(rec: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(rec, indent=2, sort_keys=True, default=str))
    else:
        for line in lines:
            typer.echo(line)


def failover_cmd(mirror: Annotated[str, typer.Argument(help="The mirror to fail over.")],
                 to: Annotated[str, typer.Option(
                     "--to", help="The target that becomes the primary (URL as in the config).")],
                 force: Annotated[bool, typer.Option(
                     "--force", help="Switch now; record what was not replicated as data at risk.")] = False,
                 drain_timeout: Annotated[str, typer.Option(
                     "--drain-timeout", help="Planned: how long to wait for the backlog (e.g. 5m).")] = "5m",
                 fence: Annotated[bool, typer.Option(
                     "--fence", help="Planned: fence the old primary (S3: a bucket policy denies other identities' "
                     "writes; elsewhere a recorded intent).")] = False,
                 poll: Annotated[str | None, typer.Option(
                     "--poll", help="List the new primary this often for writes (default 60s).")] = None,
                 as_json: JsonOpt = False, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Make a target the mirror's primary. Planned (default): drain the backlog first, then
    switch with nothing at risk (RPO 0), or abort and change nothing. --force: switch now."""
    from cloudmirror.dr import failover

    cfg = _config(config)
    timeout = _seconds("--drain-timeout", drain_timeout)
    events = [{"poll": _seconds("--poll", poll)}] if poll else None
    typer.echo(f"{'forced' if force else 'planned'} failover of {mirror} to {to}"
               f"{'' if force else f' (draining, at most {timeout:g}s)'} ...", err=True)
    rec = _run(cfg, lambda svc: failover.failover(
        svc, mirror, to=to, mode="forced" if force else "planned", drain_timeout_s=timeout, fence=fence,
        events=events, requested_by="cli",
        on_progress=lambda b: typer.echo(f"  backlog: {b['objects']} object(s), {b['bytes']} bytes", err=True)
        if b["objects"] else None))
    lines = [f"failover #{rec['id']} ({rec['kind']}): {mirror} now writes to {rec['to_location']} "
             f"(switched {_when(rec['switched_at'])})",
             f"RPO at the switch: {rec['rpo_seconds'] or 0:.3f}s; data at risk: {rec['at_risk_objects']} object(s), "
             f"{rec['at_risk_bytes']} bytes"]
    if rec["at_risk_objects"]:
        at_risk = _objects(cfg, rec["id"], "at_risk")
        lines += [f"  {o['op']:6} {o['key']}  {o['size'] or 0} bytes  written {_when(o['source_time'])}"
                  for o in at_risk]
        if rec["at_risk_objects"] > len(at_risk):
            lines.append(f"  ... (all of them: GET /v1/failovers/{rec['id']}/objects?kind=at_risk)")
    _print(rec, as_json, lines)


def _objects(cfg: Config, failover_id: int, kind: str) -> list[dict]:
    """The first 20 objects of a kind on a record."""
    from cloudmirror.dr import failover

    with open_ledger(cfg.ledger) as ledger:
        return failover.failover_objects(ledger, failover_id, kind=kind, limit=20).items


def failback_cmd(mirror: Annotated[str, typer.Argument(help="The failed-over mirror.")],
                 policy: Annotated[str, typer.Option(
                     "--policy", help="newest_wins, primary_wins or keep_both: how a key written on both sides "
                     "is settled.")] = "newest_wins",
                 timeout: Annotated[str, typer.Option(
                     "--timeout", help="How long the two locations may take to converge.")] = "10m",
                 force: Annotated[bool, typer.Option(
                     "--force", help="Make the deletes even when a location would lose more objects than the "
                     "mirror's max_deletes.")] = False,
                 as_json: JsonOpt = False, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Reconcile the current primary with the old one (conflicts settled by --policy, the old
    primary's unreplicated writes restored), then switch back to the mirror's source. A
    location that would lose more objects than the mirror's max_deletes stops it before any
    delete (exit 1, with the count and a sample); --force makes them."""
    from cloudmirror.dr import failover

    cfg = _config(config)
    seconds = _seconds("--timeout", timeout)
    rec = _run(cfg, lambda svc: failover.failback(svc, mirror, policy=policy, timeout_s=seconds,
                                                 requested_by="cli", force=force))
    lines = [f"failback #{rec['id']}: {mirror} writes to {rec['to_location']} again",
             failover.summary(rec)]
    if rec["conflicts"]:
        for c in _objects(cfg, rec["id"], "conflict"):
            lines.append(f"  conflict {c['key']}: kept {c['resolution']}"
                         + (f" ({c['detail']})" if c["detail"] else ""))
    _print(rec, as_json, lines)


def drill_cmd(mirror: Annotated[str, typer.Argument(help="The mirror to rehearse a failover of.")],
              sample: Annotated[int, typer.Option(
                  "--sample", min=0, max=1000, help="Objects per target whose bytes are compared.")] = 20,
              as_json: JsonOpt = False, config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Rehearse a failover without making one: a reconcile dry run and checksums on a sample
    per target, the RPO and RTO a failover would have now. Changes nothing; the drill is
    recorded and appears in the RPO reports. Exits 1 unless it passed."""
    from cloudmirror.dr import drills

    cfg = _config(config)
    rec = _run(cfg, lambda svc: drills.drill(svc, mirror, sample=sample, requested_by="cli"))
    lines = [f"drill #{rec['id']} of {mirror}: {rec['outcome']}" + (f" ({rec['error']})" if rec["error"] else "")]
    for t in rec["results"] or []:
        rto = "unknown (nothing completed lately)" if t["rto_seconds"] is None else f"{t['rto_seconds']:.1f}s"
        c = t["checksums"]
        lines.append(f"  {t['target']}: {t['outcome']}; RPO {t['rpo_seconds']:.1f}s, RTO {rto} (forced "
                     f"{t['rto_forced_seconds']:.1f}s); {t['missing']} missing, {t['stale']} stale, {t['extra']} extra "
                     f"({t['unexplained_differences']} unexplained); checksums {c['matched']}/{c['sampled']} match")
        lines += [f"    - {r}" for r in t["reasons"]]
    _print(rec, as_json, lines)
    if rec["outcome"] != "passed":
        raise typer.Exit(1)
