"""The mirrors the services run: kept in the ledger (table mirror_specs), seeded from the
config file, changed through the REST API. Service functions shared by the API and the CLI.

- `seed(config, ledger)`: the config file's mirrors come in at every start. The file wins
  where it changed since it last seeded a mirror; elsewhere the API's changes stand (see
  ledger.mirrors.MirrorSpecs.seed).
- `current_config(config, ledger)`: the config with the ledger's mirrors, each as it runs
  now (a failed-over mirror reads from its active location). Cached per revision: cheap to
  call on every request.
- create / update / delete / pause / resume validate a mirror exactly like the config file
  (the same pydantic models, with the whole config's cross-checks: unique names, groups) and
  raise errors.InvalidInput naming the field, MirrorNotFound or ConflictError.
Every running service polls the revision and restarts its pipelines when a mirror changed.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from cloudmirror.config import Config, ConfigError, Mirror, validate_config
from cloudmirror.errors import ConflictError, InvalidInput, MirrorNotFound, Unavailable
from cloudmirror.ledger.failovers import Failovers
from cloudmirror.ledger.mirrors import MirrorSpecs, RevisionMismatch, SpecExists, SpecMissing, SpecRow
from cloudmirror.ledger.repo import Ledger
from cloudmirror.paging import DEFAULT_LIMIT, Page, page_of


def spec_of(m: Mirror) -> dict[str, Any]:
    """A mirror as the ledger stores it (JSON; validate_config reads it back unchanged)."""
    return m.model_dump(mode="json")


def seed(config: Config, ledger: Ledger) -> list[str]:
    """Bring the config file's mirrors into the ledger. Returns the names changed. Idempotent."""
    return MirrorSpecs(ledger).seed({m.name: spec_of(m) for m in config.mirrors})


REVERSED_POLL_S = 60.0  # how often a new primary without feeds of its own is listed


def effective_mirror(m: Mirror, active: str | None, *, events: list | None = None,
                     old_is_target: bool = True) -> Mirror:
    """The mirror as it runs now. After a failover the active location is the source and
    the old source is the first target (so writes made there flow back), the other targets
    stay. `events` announce writes to the new primary (default: it is polled every
    REVERSED_POLL_S). With `old_is_target` false (a failover that left data at risk on the
    old primary) the old primary receives nothing until the failback has settled the
    conflicts: it is left out, or, when it is the only target, kept with copies paused.
    Backfill and scheduled reconciles are off in the reversed direction: a listing
    comparison there would delete the old primary's unreplicated writes, which only the
    failback may judge."""
    if not active or active == m.source:
        return m
    kept = [t.model_dump(mode="json") for t in m.targets if t.url != active]
    old = [{"url": m.source}] if old_is_target or not kept else []
    spec = spec_of(m)
    spec.update(source=active, targets=[*old, *kept], events=events or [{"poll": REVERSED_POLL_S}], backfill=False,
                reconcile_every=None, paused=m.paused or (not old_is_target and not kept))
    return Mirror.model_validate(spec)


# current_config's last answer per ledger: (the base config, the revision, the answer)
_cache: "weakref.WeakKeyDictionary[Ledger, tuple[Config, tuple[int, int], Config]]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def current_config(config: Config, ledger: Ledger) -> Config:
    """`config` with the ledger's live mirrors as they run now (see effective_mirror).
    Cached while the revision holds. Raises ConfigError when the ledger's mirrors and the
    file's groups disagree."""
    specs = MirrorSpecs(ledger)
    rev = specs.revision()
    with _cache_lock:
        hit = _cache.get(ledger)
        if hit and hit[0] is config and hit[1] == rev:
            return hit[2]
    rows = specs.all()
    data = config.model_dump(mode="json")
    data["mirrors"] = [r.spec for r in rows]
    base = validate_config(data)
    active = {r.name: r.active for r in rows}
    how = Failovers(ledger).reversals([n for n, a in active.items() if a])
    out = base.model_copy(update={"mirrors": [effective_mirror(m, active.get(m.name), **how.get(m.name, {}))
                                              for m in base.mirrors]})
    with _cache_lock:
        _cache[ledger] = (config, rev, out)
    return out


def serving_config(config: Config, ledger: Ledger) -> Config:
    """current_config for a server answering requests: Raises Unavailable when the ledger's
    mirrors no longer fit the config file's groups (a server misconfiguration, not the
    caller's)."""
    try:
        return current_config(config, ledger)
    except ConfigError as e:
        raise Unavailable(f"the mirrors in the ledger do not fit the config file: {e}") from None


# ---------------------------------------------------------------- reads
def mirror_view(row: SpecRow) -> dict[str, Any]:
    """What the API shows of a mirror: its spec, where applications write now, its revision."""
    return {**row.spec, "active": row.active or row.spec["source"], "revision": row.revision,
            "origin": row.origin, "created_at": row.created_at, "updated_at": row.updated_at}


def list_mirrors(ledger: Ledger) -> list[dict[str, Any]]:
    return [mirror_view(r) for r in MirrorSpecs(ledger).all()]


def mirrors_page(ledger: Ledger, *, after: str | None = None, limit: int = DEFAULT_LIMIT) -> Page[dict[str, Any]]:
    """The mirrors by name, after the name `after`, `limit` at a time."""
    rows = sorted((m for m in list_mirrors(ledger) if after is None or m["name"] > after), key=lambda m: m["name"])
    return page_of(rows[:limit + 1], limit, lambda m: m["name"])


@contextlib.contextmanager
def _existing(name: str) -> Iterator[None]:
    """Turn the ledger's "no such spec" into the service's MirrorNotFound."""
    try:
        yield
    except SpecMissing:
        raise MirrorNotFound(name) from None


def spec_row(ledger: Ledger, name: str) -> SpecRow:
    """The ledger's row of a mirror (its spec as configured, not reversed). Raises MirrorNotFound."""
    with _existing(name):
        return MirrorSpecs(ledger).get(name)


def get_mirror(ledger: Ledger, name: str) -> dict[str, Any]:
    """Raises MirrorNotFound."""
    return mirror_view(spec_row(ledger, name))


# ---------------------------------------------------------------- changes
def _validated(config: Config, ledger: Ledger, spec: dict[str, Any], *, replacing: str | None = None,
               check_policy: bool = True) -> dict:
    """Validate one mirror spec like the config file does, among the other live mirrors, and
    check its locations and feeds against the config file's security policy. Raises
    InvalidInput naming the field (relative to the mirror), PolicyRefused naming the rule."""
    others = [r.spec for r in MirrorSpecs(ledger).all() if r.name not in (replacing, spec.get("name"))]
    data = config.model_dump(mode="json")
    data["mirrors"] = [spec, *others]
    try:
        cfg = validate_config(data)
    except ConfigError as e:
        field, _, msg = str(e).partition(": ")
        if field.startswith("mirrors[0]"):
            raise InvalidInput(field.removeprefix("mirrors[0]").lstrip(".") or "(mirror)", msg) from None
        raise InvalidInput("(mirror)", str(e)) from None
    if check_policy:
        cfg.security.check_mirror(cfg.mirrors[0])  # PolicyRefused (an InvalidInput) naming the field and rule
    valid = spec_of(cfg.mirrors[0])
    _check_storable(valid)
    return valid


LOCATION_FIELDS = frozenset({"source", "targets", "events"})


def _check_storable(value: Any, field: str = "") -> None:
    """Refuse what the ledger cannot hold or a service cannot run with: NUL characters (not
    in PostgreSQL text) and numbers that are not finite (not JSON). Raises InvalidInput."""
    if isinstance(value, str) and "\x00" in value:
        raise InvalidInput(field or "(mirror)", "must not contain NUL characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(field or "(mirror)", "must be a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_storable(v, f"{field}.{k}" if field else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_storable(v, f"{field}[{i}]")


def create_mirror(config: Config, ledger: Ledger, spec: dict[str, Any]) -> dict[str, Any]:
    """Raises InvalidInput, ConflictError (the name is taken)."""
    valid = _validated(config, ledger, spec)
    try:
        return mirror_view(MirrorSpecs(ledger).create(valid["name"], valid))
    except SpecExists:
        raise ConflictError(f"a mirror named {valid['name']!r} exists") from None


def update_mirror(config: Config, ledger: Ledger, name: str, changes: dict[str, Any], *,
                  expect_revision: int | None = None) -> dict[str, Any]:
    """Apply `changes` (top-level fields; a field given replaces the old value). Raises
    MirrorNotFound, InvalidInput, ConflictError (the revision moved on)."""
    if not changes:
        raise InvalidInput("body", "name at least one field to change")
    current = get_mirror(ledger, name)
    if "name" in changes and changes["name"] != name:
        raise InvalidInput("name", "a mirror cannot be renamed; create a new one")
    spec = {k: v for k, v in current.items() if k in Mirror.model_fields}
    spec.update(changes)
    # where it reads, writes and listens is checked when it changes (a pause of a mirror that
    # a since tightened policy refuses stays possible; the service does not run it anyway)
    valid = _validated(config, ledger, spec, replacing=name, check_policy=bool(LOCATION_FIELDS & changes.keys()))
    try:
        with _existing(name):
            return mirror_view(MirrorSpecs(ledger).update(name, valid, expect_revision=expect_revision))
    except RevisionMismatch as e:
        raise ConflictError(str(e)) from None


def delete_mirror(config: Config, ledger: Ledger, name: str) -> None:
    """Stop mirroring (history stays in the ledger). Raises MirrorNotFound, ConflictError
    (a consistency group of the config file names it)."""
    groups = [g.name for g in config.groups if name in g.mirrors]
    if groups:
        raise ConflictError(f"mirror {name!r} belongs to group(s) {', '.join(groups)} of the config file")
    with _existing(name):
        MirrorSpecs(ledger).delete(name)


def set_paused(config: Config, ledger: Ledger, name: str, paused: bool) -> dict[str, Any]:
    """Pause (no new copies start; events are still recorded) or resume. Idempotent: a
    mirror already in that state is returned unchanged (same revision; nothing restarts).
    Raises MirrorNotFound."""
    current = get_mirror(ledger, name)
    if bool(current.get("paused")) == paused:
        return current
    return update_mirror(config, ledger, name, {"paused": paused})


def set_active(ledger: Ledger, name: str, active: str | None) -> dict[str, Any]:
    """Record where applications write now (a failover or failback). Raises MirrorNotFound."""
    with _existing(name):
        return mirror_view(MirrorSpecs(ledger).update(name, active=active, clear_active=active is None))
