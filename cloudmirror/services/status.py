"""Status per mirror and target, and per consistency group, as `cloudmirror status` and
the API show them. Read-only."""

from __future__ import annotations

import time

from cloudmirror.config import Config, ConfigError
from cloudmirror.ledger import rpo as ledger_rpo
from cloudmirror.ledger.mirrors import MirrorSpecs
from cloudmirror.ledger.repo import Ledger
from cloudmirror.ledger.runs import Runs
from cloudmirror.services.mirrors import current_config


def running_config(config: Config, ledger: Ledger) -> Config:
    """The mirrors as they run now: the ledger's (API changes and failovers too) once a
    service start has seeded them, else the config file's. Raises ConfigError when the
    ledger's mirrors no longer fit the file (its groups)."""
    if not MirrorSpecs(ledger).revision()[1]:
        return config
    try:
        return current_config(config, ledger)
    except ConfigError as e:
        raise ConfigError(f"the mirrors in the ledger do not fit the config file: {e}") from None


def status(config: Config, ledger: Ledger, *, now: float | None = None) -> list[dict]:
    """Per mirror and target: counts by status and the RPO: the age of the oldest source
    write not yet on the target (pending, in progress, or failed and not made moot by a newer
    copy of its key -- the same rule as the live RPO, /metrics and the reports). Targets with
    no replications yet appear with zeros."""
    now = time.time() if now is None else now
    rows = {(r["mirror"], r["target"]): r for r in ledger.status(now=now)}
    for b in ledger_rpo.backlog(ledger):
        r = rows.get((b["mirror"], b["target"]))
        if r is not None and b["oldest_open"] is not None:
            r["rpo_seconds"] = max(r["rpo_seconds"], now - b["oldest_open"])
    missed = Runs(ledger).missed_events()
    out = []
    for m in config.mirrors:
        for t in m.targets:
            r = rows.get((m.name, t.name)) or dict(mirror=m.name, target=t.name, pending=0, in_progress=0,
                                                   completed=0, failed=0, superseded=0, skipped=0,
                                                   rpo_seconds=0.0)
            r["rpo_objective"] = m.rpo_objective
            r["objective_met"] = r["rpo_seconds"] <= m.rpo_objective
            r["missed_events"] = missed.get((m.name, t.name), 0)
            out.append(r)
    return out


def group_status(config: Config, rows: list[dict], *, now: float | None = None) -> list[dict]:
    """Per consistency group: its recovery point is the earliest source write time still
    pending on any target of any of its mirrors (now when nothing is pending); its RPO is
    the worst of its targets'; `lagging` names the mirror and target that set it."""
    now = time.time() if now is None else now
    out = []
    for g in config.groups:
        members = [r for r in rows if r["mirror"] in g.mirrors]
        worst = max(members, key=lambda r: r["rpo_seconds"], default=None)
        rpo = worst["rpo_seconds"] if worst else 0.0
        objective = min((config.mirror(m).rpo_objective for m in g.mirrors), default=0.0)
        out.append(dict(group=g.name, mirrors=list(g.mirrors), rpo_seconds=rpo, recovery_point=now - rpo,
                        lagging=(f"{worst['mirror']} -> {worst['target']}" if worst and rpo > 0 else None),
                        pending=sum(r["pending"] + r["in_progress"] for r in members),
                        rpo_objective=objective, objective_met=rpo <= objective))
    return out
