"""Service functions for RPO figures and compliance reports, shared by the CLI and the REST
API (they stay thin: parse, call one of these, present the result).

- rpo_live: per target, mirror and group, now: RPO, backlog, latency percentiles over
  recent windows, objective met, and recent RPO history from the ledger.
- build_report / verify_report: the signed compliance report (JSON, CSV, PDF);
  report_public_key: the public key that verifies them (reports.keys).
- rpo_history: RPO over a period as a chart series (one mirror, or each of its targets).
- parse_when: the times users type (`24h`, `now`, ISO 8601, epoch seconds).

A failed replication keeps holding its target's RPO until a newer version of its key is
copied: its version is not on the target (`services.status.status` counts it too).
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Any

from cloudmirror.config import Config, Mirror, parse_duration
from cloudmirror.errors import InvalidInput, Unavailable
from cloudmirror.ledger import rpo as ledger_rpo
from cloudmirror.ledger.repo import Ledger
from cloudmirror.ledger.runs import Runs
from cloudmirror.replication import rpo
from cloudmirror.reports import FORMATS, Keys, PublicKey, ReportError, ReportKeyError, SigningKey, render_signed
from cloudmirror.reports import verify as verify_signed
from cloudmirror.reports.data import build_data, configured, iso, r3, resolve_scope
from cloudmirror.reports.keys import load_hmac_key, load_signing_key

LATENCY_WINDOWS = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}
REPORT_MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}
HISTORY_POINTS = 120


def _scope_mirrors(config: Config, mirror: str | None, group: str | None) -> tuple[list[Mirror], list]:
    """The mirrors and groups rpo_live reports on. Raises NotFoundError for unknown names."""
    if mirror and group:
        raise ReportError("name a mirror or a group, not both")
    if mirror:
        return [config.mirror(mirror)], []
    if group:
        _, _, ms, _ = resolve_scope(config, None, group)
        return ms, [config.group(group)]
    return list(config.mirrors), list(config.groups)


def _latency(ledger: Ledger, mirrors: list[str], now: float, target: str | None = None) -> dict:
    return {w: {k: (r3(v) if k != "count" else v) for k, v in
                ledger_rpo.latency_percentiles(ledger, mirrors, now - s, now, target=target).items()}
            for w, s in LATENCY_WINDOWS.items()}


def _period_rows(ledger: Ledger, mirrors: list[Mirror], since: float, until: float) -> list[dict]:
    """The replication rows of the configured targets of `mirrors` pending in [since, until)."""
    return configured(ledger_rpo.period_rows(ledger, [m.name for m in mirrors], since, until), mirrors)


def _steps(rows: list[dict], since: float, until: float) -> list[rpo.Step]:
    return rpo.rpo_steps([rpo.Interval(r["created_at"], r["end"], r["source_time"]) for r in rows], since, until)


def _history(ledger: Ledger, mirrors: list[Mirror], objective: float, now: float, window: float) -> dict:
    since = now - window
    steps = _steps(_period_rows(ledger, mirrors, since, now), since, now)
    worst, at = rpo.worst(steps, since)
    breaches = rpo.find_breaches(steps, objective, now)
    return dict(since=iso(since), worst_rpo_seconds=r3(worst), worst_rpo_at=iso(at), breaches=len(breaches),
                breach_seconds=r3(sum(b.duration for b in breaches)),
                series=[[r3(t), r3(v)] for t, v in rpo.series(steps, since, now, HISTORY_POINTS)])


def _rollup(members: list[dict], objective: float) -> dict:
    worst = max(members, key=lambda r: r["rpo_seconds"], default=None)
    rpo_s = worst["rpo_seconds"] if worst else 0.0
    return dict(rpo_seconds=rpo_s, rpo_objective_seconds=objective, objective_met=rpo_s <= objective,
                lagging=(f"{worst['mirror']} -> {worst['target']}" if worst and rpo_s > 0 else None),
                backlog_objects=sum(r["backlog_objects"] for r in members),
                backlog_bytes=sum(r["backlog_bytes"] for r in members),
                failed=sum(r["failed"] for r in members))


def rpo_live(config: Config, ledger: Ledger, mirror: str | None = None, group: str | None = None,
             now: float | None = None, *, history: float = 3600.0) -> dict:
    """Live RPO figures: {"now", "targets": [...], "mirrors": [...], "groups": [...]}.

    Per target: rpo_seconds, oldest_pending (ISO), backlog_objects, backlog_bytes, failed,
    missed_events, rpo_objective_seconds, objective_met, latency {5m,1h,24h: count, p50,
    p90, p99, max}. Per mirror and group: the worst target (`lagging`), summed backlog,
    latency over all its targets, and `history` (the last `history` seconds: worst RPO,
    breaches, an RPO series). `mirror` or `group` narrows the answer (a mirror: no groups).
    Raises NotFoundError for an unknown mirror or group. Read-only."""
    now = time.time() if now is None else now
    mirrors, groups = _scope_mirrors(config, mirror, group)
    names = [m.name for m in mirrors]
    backlog = {(r["mirror"], r["target"]): r for r in ledger_rpo.backlog(ledger, names)}
    missed = Runs(ledger).missed_events()
    targets: list[dict] = []
    for m in mirrors:
        for t in m.targets:
            b = backlog.get((m.name, t.name), {})
            oldest = b.get("oldest_open")
            rpo_s = r3(max(0.0, now - oldest)) if oldest is not None else 0.0
            targets.append(dict(mirror=m.name, target=t.name, rpo_seconds=rpo_s,
                                oldest_pending=iso(oldest) if oldest is not None else None,
                                backlog_objects=b.get("backlog_objects", 0), backlog_bytes=b.get("backlog_bytes", 0),
                                failed=b.get("failed", 0), missed_events=missed.get((m.name, t.name), 0),
                                rpo_objective_seconds=m.rpo_objective, objective_met=rpo_s <= m.rpo_objective,
                                latency=_latency(ledger, [m.name], now, t.name)))
    out_mirrors = []
    for m in mirrors:
        members = [r for r in targets if r["mirror"] == m.name]
        out_mirrors.append(dict(mirror=m.name, **_rollup(members, m.rpo_objective),
                                latency=_latency(ledger, [m.name], now),
                                history=_history(ledger, [m], m.rpo_objective, now, history)))
    out_groups = []
    for g in groups:
        members = [r for r in targets if r["mirror"] in g.mirrors]
        objective = min(config.mirror(n).rpo_objective for n in g.mirrors)
        out_groups.append(dict(group=g.name, mirrors=list(g.mirrors), **_rollup(members, objective),
                               latency=_latency(ledger, list(g.mirrors), now),
                               history=_history(ledger, [config.mirror(n) for n in g.mirrors], objective, now,
                                                history)))
    return dict(now=iso(now), targets=targets, mirrors=out_mirrors, groups=out_groups)


MAX_HISTORY_POINTS = 2000


def rpo_history(config: Config, ledger: Ledger, mirror: str, *, since: float, until: float,
                points: int = HISTORY_POINTS, target: str | None = None, by_target: bool = False) -> dict:
    """RPO over [since, until) (epoch seconds) of one mirror, for charts:

        {"mirror", "target", "objective_s", "since", "until", "worst_rpo_s", "worst_at",
         "series": [{"t": epoch, "rpo_s": seconds}, ...], "targets": [...] | None}

    `series` is the mirror's RPO (the worst of its targets' at each instant), or with
    `target` that one target's. Joining the points with straight lines draws the curve
    exactly (a jump is two points at one instant); beyond `points` points it is reduced to
    the worst RPO per time bin, so peaks are never lost (replication.rpo.series, as the
    PDF report's chart). With `by_target`, `targets` holds each target's own
    {"target", "worst_rpo_s", "worst_at", "series"}. Read-only. Raises NotFoundError
    (unknown mirror), InvalidInput (`query.target`: not a target of the mirror) and
    ReportError (empty period, or fewer than 2 points)."""
    m = config.mirror(mirror)
    if target is not None:
        try:
            m.target(target)
        except InvalidInput as e:
            raise InvalidInput("query.target", e.reason) from None
    if not until > since:
        raise ReportError("the period is empty: until must be after since")
    check_period(config, since, until)
    if not 2 <= points <= MAX_HISTORY_POINTS:
        raise ReportError(f"points must be within 2..{MAX_HISTORY_POINTS}")
    rows = _period_rows(ledger, [m], since, until)

    def curve(rs: list[dict]) -> dict:
        steps = _steps(rs, since, until)
        worst, at = rpo.worst(steps, since)
        return dict(worst_rpo_s=r3(worst), worst_at=r3(at),
                    series=[{"t": r3(t), "rpo_s": r3(v)} for t, v in rpo.series(steps, since, until, points)])

    main = curve([r for r in rows if r["target"] == target] if target is not None else rows)
    per_target = None
    if by_target:
        per_target = [dict(target=t.name, **curve([r for r in rows if r["target"] == t.name])) for t in m.targets
                      if target is None or t.name == target]
    return dict(mirror=m.name, target=target, objective_s=m.rpo_objective, since=r3(since), until=r3(until),
                **main, targets=per_target)


# the latest time parse_when accepts (9999-12-31T23:59:59Z): later ones cannot be shown as dates
MAX_EPOCH = 253402300799.0
_AGO = re.compile(r"\d+(\.\d+)?\s*(ms|s|m|h|d)")
_EPOCH = re.compile(r"\d+(\.\d+)?")


def parse_when(value: str, *, now: float) -> float:
    """A time as users type it -> epoch seconds: `now`; a duration ago (`24h`, `7d`, `90m`);
    an ISO 8601 date/time (UTC unless it says otherwise: `2024-05-01`, `2024-05-01T00:00Z`,
    `2024-05-01T02:00+02:00`); or, when it is not ISO 8601, a plain number of epoch seconds
    (`1714521600`). Raises ValueError naming the accepted forms, also for a time before
    1970 or after 9999. Shared by `cloudmirror report` and the REST API."""
    v = value.strip()
    if v.lower() == "now":
        t = now
    elif _AGO.fullmatch(v):
        t = now - parse_duration(v)
    else:
        try:
            dt = datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v)
            t = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            if not _EPOCH.fullmatch(v):
                raise ValueError(f"not a time: {value!r} (use an ISO date/time such as 2024-05-01T00:00Z, "
                                 "epoch seconds, a duration ago such as 24h or 7d, or now)") from None
            t = float(v)
    if not (math.isfinite(t) and 0 <= t <= MAX_EPOCH):
        raise ValueError(f"out of range: {value!r} (times run from 1970 to 9999)")
    return t


def duration_text(seconds: float) -> str:
    """400d, 36h, 90m, 45s or 1.5s: a duration as the config takes it."""
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


def check_period(config: Config, since: float, until: float, field: str | None = None) -> None:
    """Refuse a period longer than `api.max_report_period` (one request must not scan all
    history). Raises InvalidInput naming `field`, or ReportError without one."""
    limit = config.api.max_report_period
    if until - since > limit:
        reason = (f"the period ({duration_text(r3(until - since))}) is longer than the limit "
                  f"api.max_report_period ({duration_text(limit)}): ask for a shorter one")
        raise InvalidInput(field, reason) if field else ReportError(reason)


def parse_period(since: str | None, until: str | None, *, default_since: str, now: float,
                 field_prefix: str = "query.", config: Config | None = None) -> tuple[float, float]:
    """`since` / `until` as typed (parse_when; `until` defaults to now) -> epoch seconds.
    With `config`, a period longer than `api.max_report_period` is refused, and without
    `since` the default period is shortened to that limit. Raises InvalidInput naming
    `since` or `until` (with the prefix) when one is not a time, the period is empty or too
    long."""
    out = []
    for name, value in (("since", since or default_since), ("until", until or "now")):
        try:
            out.append(parse_when(value, now=now))
        except ValueError as e:
            raise InvalidInput(f"{field_prefix}{name}", str(e)) from None
    if config is not None and not since:
        out[0] = max(out[0], out[1] - config.api.max_report_period)
    if not out[1] > out[0]:
        raise InvalidInput(f"{field_prefix}until", "must be after since (the period is empty)")
    if config is not None:
        check_period(config, out[0], out[1], f"{field_prefix}since")
    return out[0], out[1]


def _epoch(t: float | datetime) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


def report_key(config: Config | None, *, create: bool = True) -> SigningKey:
    """The deployment's report signing key (see reports.keys). Raises ReportKeyError."""
    return load_signing_key(config.ledger if config else None, create=create)


def _usable_key(config: Config | None) -> SigningKey:
    try:
        return report_key(config, create=config is not None)
    except ReportKeyError as e:
        raise Unavailable(f"the report signing key is not usable: {e} (the operator must fix it)") from None


def report_public_key(config: Config | None) -> dict[str, str]:
    """{"algorithm": "ed25519", "key_id", "public_key_pem"}: what verifies this deployment's
    reports (the private key stays on the server). Raises Unavailable like build_report
    (without a config: no key file is created)."""
    key = _usable_key(config)
    return dict(algorithm="ed25519", key_id=key.id, public_key_pem=key.public.pem())


def build_report(config: Config, ledger: Ledger, *, mirror: str | None = None, group: str | None = None,
                 since: float | datetime, until: float | datetime, fmt: str, now: float | None = None,
                 key: SigningKey | None = None) -> bytes:
    """The signed compliance report of one mirror or group over [since, until) as file
    bytes in `fmt` (json, csv or pdf). Raises ReportError (bad format, period -- empty or
    longer than `api.max_report_period` --, or both or neither of mirror/group),
    NotFoundError (unknown mirror or group), Unavailable (no report signing key can be read
    or created). Read-only on the ledger; may create the key file (SQLite ledger only)."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown report format {fmt!r} (use json, csv or pdf)")
    check_period(config, _epoch(since), _epoch(until))
    data = report_data(config, ledger, mirror=mirror, group=group, since=since, until=until, now=now)
    return render_signed(data, fmt, key or _usable_key(config))


def report_data(config: Config, ledger: Ledger, *, mirror: str | None = None, group: str | None = None,
                since: float | datetime, until: float | datetime, now: float | None = None) -> dict[str, Any]:
    """The unsigned report data (the `data` of the JSON report). Raises like build_report."""
    return build_data(config, ledger, mirror=mirror, group=group, since=_epoch(since), until=_epoch(until), now=now)


def report_file(config: Config, ledger: Ledger, *, mirror: str | None, group: str | None, since: str | None,
                until: str | None, fmt: str, now: float | None = None) -> tuple[bytes, str, str]:
    """The signed report as a download: (bytes, file name, media type), for a request that
    names the scope and period as users type them. Raises InvalidInput (`query.mirror`,
    `query.group`, `query.since`, `query.until`), NotFoundError (unknown mirror or group),
    ReportError, Unavailable (no usable report key). Read-only on the ledger."""
    if mirror and group:
        raise InvalidInput("query.group", "name a mirror or a group, not both")
    if not mirror and not group:
        raise InvalidInput("query.mirror", "name a mirror (or a group with `group`)")
    now = time.time() if now is None else now
    t0, t1 = parse_period(since, until, default_since="24h", now=now, config=config)
    blob = build_report(config, ledger, mirror=mirror, group=group, since=t0, until=t1, fmt=fmt, now=now)
    return blob, report_filename(mirror or group, t0, t1, fmt), REPORT_MEDIA_TYPES[fmt]


def report_filename(scope: str, since: float, until: float, fmt: str) -> str:
    """rpo-report-photos-20261125T000000Z-20261126T000000Z.pdf (safe in any header or file system)."""
    def stamp(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", scope).strip("._")[:64] or "scope"
    return f"rpo-report-{safe}-{stamp(since)}-{stamp(until)}.{fmt}"


def verify_report(data: bytes, config: Config | None = None, *, public_keys: list[PublicKey] | None = None,
                  key: SigningKey | None = None) -> tuple[bool, str]:
    """(valid, one-line reason) for a signed report file of any format. A v2 (Ed25519) report
    is checked with `public_keys` when given (nothing private needed), else with the public
    half of `key` or of the deployment's signing key (never created here). An old v1 (HMAC)
    report is checked with the old HMAC key (env or file, reports.keys), and the reason says
    it is HMAC. Never raises for bad input."""
    ledger_url = config.ledger if config else None
    if public_keys is None:
        try:
            public_keys = [(key or report_key(config, create=False)).public]
        except ReportKeyError as e:
            no_key = str(e)
            public_keys = []
        else:
            no_key = None
    else:
        no_key = None
    v = verify_signed(data, Keys.of(public_keys, lambda: load_hmac_key(ledger_url)))
    if not v.ok and v.version == 2 and no_key and v.reason.startswith("signed by key"):
        return False, f"{no_key} (or give the public key: --public-key PEM)"
    return v.ok, v.reason
