"""Request and response bodies of the REST API (pydantic), with the examples shown in the
OpenAPI document. Times are ISO 8601 in UTC (the ledger keeps epoch seconds)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema

from cloudmirror.config import EventFeed, Filter, Target

T = TypeVar("T")


def _from_epoch(v: Any) -> Any:
    return datetime.fromtimestamp(v, UTC) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


Timestamp = Annotated[datetime, BeforeValidator(_from_epoch)]
RoleName = Literal["viewer", "operator", "admin"]
KEY_NAME = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"  # printable, not blank


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ------------------------------------------------------------------ errors
class FieldError(Out):
    field: str = Field(examples=["query.limit"])
    message: str = Field(examples=["Input should be less than or equal to 1000"])


class ErrorDetail(Out):
    code: str = Field(description="Machine-readable: unauthorized, forbidden, not_found, conflict, "
                                  "validation_error, ...", examples=["not_found"])
    message: str = Field(examples=["no mirror named 'photos'"])
    fields: list[FieldError] | None = Field(None, description="For validation errors: every bad field.")


class ErrorResponse(Out):
    error: ErrorDetail


# ------------------------------------------------------------------ pagination
class Page(Out, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page.")


# ------------------------------------------------------------------ health and status
class Health(Out):
    status: str = Field(examples=["ok"])


class TargetStatus(Out):
    model_config = ConfigDict(extra="allow")

    mirror: str
    target: str
    pending: int
    in_progress: int
    completed: int
    failed: int
    superseded: int
    skipped: int
    rpo_seconds: float = Field(description="Age of the oldest write not yet replicated (0 when none).")
    rpo_objective: float
    objective_met: bool
    missed_events: int = Field(description="Differences found by reconciles that no event announced.")


class GroupStatus(Out):
    model_config = ConfigDict(extra="allow")

    group: str
    mirrors: list[str]
    rpo_seconds: float
    recovery_point: float
    lagging: str | None
    pending: int
    rpo_objective: float
    objective_met: bool


class StatusOut(Out):
    targets: list[TargetStatus]
    groups: list[GroupStatus] = []

    model_config = ConfigDict(json_schema_extra={"examples": [{"targets": [{
        "mirror": "photos", "target": "s3://photos-euw1?region=eu-west-1", "pending": 3, "in_progress": 1,
        "completed": 1200, "failed": 0, "superseded": 4, "skipped": 0, "rpo_seconds": 2.5, "rpo_objective": 900.0,
        "objective_met": True, "missed_events": 0}], "groups": []}]})


# ------------------------------------------------------------------ jobs
class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"target": "s3://photos-euw1?region=eu-west-1", "dry_run": True}, {}]})

    target: str | None = Field(None, max_length=1024, description="Only this target (its URL as in the config); "
                                                                  "default: every target.")
    dry_run: bool = Field(False, description="Report the differences; change nothing, not even the ledger.")
    checksum: bool = Field(False, description="Read objects whose MD5 is unknown and compare their bytes.")


class JobProgress(Out):
    """A reconcile's counters so far (summed over its targets). Other kinds of job may add theirs."""

    model_config = ConfigDict(extra="allow")

    targets_total: int = 0
    targets_done: int = 0
    current_target: str | None = None
    listed: int = Field(0, description="Source objects listed.")
    differences: int = Field(0, description="missing + stale + extra.")
    missing: int = 0
    stale: int = 0
    extra: int = 0
    extra_kept: int = Field(0, description="Only on the target, kept because the mirror does not replicate deletes.")
    in_flight: int = Field(0, description="Differences already being repaired by a pending replication.")
    too_recent: int = Field(0, description="Written within reconcile_grace: left to their events.")
    enqueued: int = Field(0, description="Copies and deletes recorded as work so far.")
    copies_enqueued: int = Field(0, description="Copies recorded, counted as each target finishes.")
    deletes_enqueued: int = Field(0, description="Deletes recorded, counted as each target finishes.")
    missed_events: int = 0


class ReconcileTargetResult(Out):
    model_config = ConfigDict(extra="allow")

    target: str
    kind: str = Field(description="backfill | reconcile | dry-run")
    listed: int
    missing: int
    stale: int
    extra: int
    extra_kept: int
    in_flight: int
    recorded: int
    missed_events: int
    examples: list[str]
    run_id: int | None = None
    copies_enqueued: int = 0
    deletes_enqueued: int = 0


class Job(Out):
    id: int
    kind: str = Field(examples=["reconcile"])
    status: Literal["queued", "running", "finished", "failed"]
    mirror: str
    target: str | None = Field(description="null: every target of the mirror")
    params: dict[str, Any]
    created_by: str
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    progress: JobProgress
    result: list[ReconcileTargetResult] | None = Field(description="Per target, once finished (as the CLI's --json).")
    error: str | None


class JobEnvelope(Out):
    job: Job

    model_config = ConfigDict(json_schema_extra={"examples": [{"job": {
        "id": 7, "kind": "reconcile", "status": "finished", "mirror": "photos", "target": None,
        "params": {"dry_run": False, "checksum": False, "targets": ["s3://photos-euw1?region=eu-west-1"]},
        "created_by": "ops-bot", "created_at": "2026-11-26T10:00:00Z", "started_at": "2026-11-26T10:00:00Z",
        "finished_at": "2026-11-26T10:00:04Z",
        "progress": {"targets_total": 1, "targets_done": 1, "current_target": None, "listed": 1300,
                     "differences": 3, "missing": 2, "stale": 1, "extra": 0, "extra_kept": 0, "in_flight": 0,
                     "too_recent": 0, "enqueued": 3, "copies_enqueued": 3, "deletes_enqueued": 0,
                     "missed_events": 2},
        "result": [{"target": "s3://photos-euw1?region=eu-west-1", "kind": "reconcile", "listed": 1300,
                    "missing": 2, "stale": 1, "extra": 0, "extra_kept": 0, "in_flight": 0, "recorded": 3,
                    "missed_events": 2, "examples": ["missing: 2026/a.jpg"], "run_id": 12,
                    "copies_enqueued": 3, "deletes_enqueued": 0}],
        "error": None}}]})


# ------------------------------------------------------------------ failures and objects
class Failure(Out):
    id: int = Field(description="The replication's id (retry with POST /v1/failures/{id}/retry).")
    mirror: str
    target: str
    key: str
    status: str
    attempts: int
    last_error: str | None
    created_at: Timestamp
    failed_at: Timestamp | None = Field(validation_alias="completed_at")
    version_pk: int
    op: str
    version_id: str | None
    etag: str | None
    size: int | None
    source_time: Timestamp

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 4411, "mirror": "photos", "target": "az://drstore/photos", "key": "2026/a.jpg", "status": "failed",
        "attempts": 8, "last_error": "UnmappableTags: tag 'a&b' of 2026/a.jpg", "created_at": "2026-11-26T10:00:00Z",
        "failed_at": "2026-11-26T10:05:00Z", "version_pk": 901, "op": "put", "version_id": None,
        "etag": "9b2cf535f27731c974343645a3985328", "size": 5120, "source_time": "2026-11-26T09:59:59Z"}]})


class ReplicationState(Out):
    id: int
    target: str
    status: str
    attempts: int
    detail: str | None
    last_error: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    completed_at: Timestamp | None
    copied_etag: str | None
    target_etag: str | None
    target_version_id: str | None
    bytes: int | None


class ObjectVersion(Out):
    id: int
    op: str = Field(examples=["put"], description="put | delete")
    version_id: str | None
    etag: str | None
    sequencer: str | None
    size: int | None
    source_time: Timestamp
    seen_at: Timestamp
    origin: str = Field(description="event | poll | backfill | reconcile")
    duplicates: int
    replications: list[ReplicationState]


class ObjectHistory(Page[ObjectVersion]):
    mirror: str
    key: str


# ------------------------------------------------------------------ mirrors
# A mirror's body is the config file's mirror entry (cloudmirror.config.Mirror): the same
# fields, the same nested models, validated by the same code (a field the file refuses is a
# 422 naming it). Durations take seconds or a string such as 90s, 15m, 6h, 1d.
MirrorNameField = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", examples=["photos"],
                                       description="Unique; letters, digits, `_`, `.`, `-` (at most 63).")]


def _duration_input(v: Any) -> float | str:
    """Seconds or a duration string; its value is checked with the rest of the mirror (so
    that a 422 names the field the way the config file's errors do)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError("must be a number of seconds or a duration such as 90s, 15m, 6h")
    try:
        return float(v) if isinstance(v, int) else v
    except OverflowError:
        raise ValueError("too large a number of seconds") from None


Duration = Annotated[float | str, PlainValidator(_duration_input), WithJsonSchema({
    "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "maxLength": 32}],
    "description": "Seconds, or a duration such as `90s`, `15m`, `6h`, `1d`.", "examples": ["15m"]})]
SourceField = Annotated[str, Field(max_length=4096, description="Where applications write: `s3://BUCKET[/PREFIX]"
                                   "?region=R`, `gs://...`, `az://ACCOUNT/CONTAINER`, `file:///path`, `memory://...`.",
                                   examples=["s3://photos-use1?region=us-east-1"])]
TargetsField = Annotated[list[str | Target], Field(min_length=1, max_length=64, description=(
    "Where copies go: location URLs, or objects `{url, storage_class, sse, kms_key_id}`."))]
EventsField = Annotated[list[EventFeed], Field(max_length=16, description=(
    "Feeds announcing source writes, each naming exactly one of `sqs`, `pubsub`, `azure_queue`, `poll` "
    "(a duration: list the source that often). None: a `file://` source is polled, others rely on reconciles."))]
DeletesField = Annotated[Literal["replicate", "ignore"], Field(description="`ignore` protects replicas from deletes.")]
VersionsField = Annotated[Literal["latest", "all"], Field(description=(
    "`latest`: targets hold each key's current version; `all`: every source version is copied (versioned "
    "buckets only)."))]

_MIRROR_EXAMPLE = {
    "name": "photos", "source": "s3://photos-use1?region=us-east-1",
    "targets": ["s3://photos-euw1?region=eu-west-1", {"url": "gs://photos-dr", "storage_class": "NEARLINE"}],
    "events": [{"sqs": "https://sqs.us-east-1.amazonaws.com/123456789012/photos-events"}],
    "filter": {"prefix": "", "exclude_prefixes": ["tmp/"], "suffixes": []},
    "deletes": "replicate", "rpo_objective": "15m"}


class MirrorCreate(BaseModel):
    """A new mirror: exactly a mirror entry of the config file."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_MIRROR_EXAMPLE, {
        "name": "docs", "source": "file:///srv/docs", "targets": ["memory://docs-copy"]}]})

    name: MirrorNameField
    source: SourceField
    targets: TargetsField
    events: EventsField = []
    filter: Filter = Field(default_factory=Filter, description="Which keys are mirrored.")
    deletes: DeletesField = "replicate"
    rpo_objective: Duration = Field(900.0, description="The RPO objective (reports and `objective_met`).")
    paused: bool = Field(False, description="Record events but start no copies.")
    backfill: bool = Field(False, description="Copy the objects already there (once, for a target never reconciled).")
    reconcile_every: Duration | None = Field(None, description="Compare source and targets by listing this often.")
    reconcile_grace: Duration = Field(60.0, description="A reconcile leaves writes this recent to their events.")
    versions: VersionsField = "latest"

    def spec(self) -> dict[str, Any]:
        """The fields given, as the config file would have them."""
        return self.model_dump(mode="json", exclude_unset=True)


class MirrorUpdate(BaseModel):
    """Changes to a mirror: each field given replaces the old value whole (a list or object
    included); fields left out stay. `expect_revision`: only if the mirror is still at that
    revision (409 otherwise), so two clients cannot overwrite each other's changes unseen."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"rpo_objective": "5m", "expect_revision": 3},
        {"targets": ["s3://photos-euw1?region=eu-west-1", "az://drstore/photos"]}]})

    expect_revision: int | None = Field(None, ge=1, le=2**63 - 1, description=(
        "The `revision` you read; the change is refused with 409 when the mirror moved on since."))
    name: MirrorNameField | None = Field(None, description="If given, the mirror's own name: mirrors are not renamed.")
    source: SourceField | None = None
    targets: TargetsField | None = None
    events: EventsField | None = None
    filter: Filter | None = None
    deletes: DeletesField | None = None
    rpo_objective: Duration | None = None
    paused: bool | None = None
    backfill: bool | None = None
    reconcile_every: Duration | None = None
    reconcile_grace: Duration | None = None
    versions: VersionsField | None = None

    def changes(self) -> dict[str, Any]:
        """The fields given (an explicit null included), without expect_revision."""
        return self.model_dump(mode="json", exclude_unset=True, exclude={"expect_revision"})


class MirrorOut(Out):
    """A mirror as it is kept (durations in seconds), with where applications write now."""

    name: str
    source: str = Field(description="As configured (after a failover, `active` differs).")
    targets: list[Target]
    events: list[EventFeed]
    filter: Filter
    deletes: Literal["replicate", "ignore"]
    rpo_objective: float
    paused: bool
    backfill: bool
    reconcile_every: float | None
    reconcile_grace: float
    versions: Literal["latest", "all"]
    active: str = Field(description="Where applications write now: `source`, or a target after a failover.")
    revision: int = Field(description="Grows with every change; send it as `expect_revision` to PATCH.")
    origin: Literal["file", "api"] = Field(description="Who made it: the config file (seeded at start) or the API.")
    created_at: Timestamp
    updated_at: Timestamp

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "photos", "source": "s3://photos-use1?region=us-east-1",
        "targets": [{"url": "s3://photos-euw1?region=eu-west-1", "storage_class": None, "sse": None,
                     "kms_key_id": None}],
        "events": [{"sqs": "https://sqs.us-east-1.amazonaws.com/123456789012/photos-events", "pubsub": None,
                    "azure_queue": None, "poll": None, "max_outstanding": 1000, "region": None, "receivers": 4,
                    "eventbridge_keys": "encoded", "wait_time_s": 10, "visibility_timeout_s": 60}],
        "filter": {"prefix": "", "exclude_prefixes": [], "suffixes": []}, "deletes": "replicate",
        "rpo_objective": 900.0, "paused": False, "backfill": False, "reconcile_every": None, "reconcile_grace": 60.0,
        "versions": "latest", "active": "s3://photos-use1?region=us-east-1", "revision": 3, "origin": "file",
        "created_at": "2026-11-20T09:00:00Z", "updated_at": "2026-11-26T10:00:00Z"}]})


# ------------------------------------------------------------------ RPO
class Latency(Out):
    """Source write to replica completed, over the replications completed in the window (seconds)."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


LatencyWindows = Annotated[dict[str, Latency], Field(description="Per window: `5m`, `1h`, `24h`.")]


class TargetRpo(Out):
    mirror: str
    target: str
    rpo_seconds: float = Field(description="Age of the oldest write not yet on the target (0 when none).")
    oldest_pending: str | None = Field(description="Source write time of that write (ISO 8601 UTC).")
    backlog_objects: int = Field(description="Replications pending or in progress.")
    backlog_bytes: int
    failed: int = Field(description="Replications that gave up (they hold the RPO until retried or superseded).")
    missed_events: int
    rpo_objective_seconds: float
    objective_met: bool
    latency: LatencyWindows


class RpoRecent(Out):
    """The last hour: worst RPO, breaches of the objective, and the RPO as [epoch, seconds] points."""

    since: str
    worst_rpo_seconds: float
    worst_rpo_at: str
    breaches: int
    breach_seconds: float
    series: list[list[float]]


class MirrorRpo(Out):
    mirror: str
    rpo_seconds: float = Field(description="The worst of its targets'.")
    rpo_objective_seconds: float
    objective_met: bool
    lagging: str | None = Field(description="`mirror -> target` setting the RPO (null when it is 0).")
    backlog_objects: int
    backlog_bytes: int
    failed: int
    latency: LatencyWindows
    history: RpoRecent


class GroupRpo(Out):
    group: str
    mirrors: list[str]
    rpo_seconds: float = Field(description="The worst of its mirrors' targets'.")
    rpo_objective_seconds: float = Field(description="The strictest of its mirrors'.")
    objective_met: bool
    lagging: str | None
    backlog_objects: int
    backlog_bytes: int
    failed: int
    latency: LatencyWindows
    history: RpoRecent


class RpoLive(Out):
    """Live RPO per target, mirror and consistency group (only the ones asked for)."""

    now: str = Field(description="When the figures were taken (ISO 8601 UTC).")
    targets: list[TargetRpo]
    mirrors: list[MirrorRpo]
    groups: list[GroupRpo]

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "now": "2026-11-26T10:00:00.000Z",
        "targets": [{"mirror": "photos", "target": "s3://photos-euw1?region=eu-west-1", "rpo_seconds": 2.5,
                     "oldest_pending": "2026-11-26T09:59:57.500Z", "backlog_objects": 3, "backlog_bytes": 15360,
                     "failed": 0, "missed_events": 0, "rpo_objective_seconds": 900.0, "objective_met": True,
                     "latency": {"5m": {"count": 120, "p50": 0.8, "p90": 1.9, "p99": 3.2, "max": 4.0}}}],
        "mirrors": [{"mirror": "photos", "rpo_seconds": 2.5, "rpo_objective_seconds": 900.0, "objective_met": True,
                     "lagging": "photos -> s3://photos-euw1?region=eu-west-1", "backlog_objects": 3,
                     "backlog_bytes": 15360, "failed": 0,
                     "latency": {"5m": {"count": 120, "p50": 0.8, "p90": 1.9, "p99": 3.2, "max": 4.0}},
                     "history": {"since": "2026-11-26T09:00:00.000Z", "worst_rpo_seconds": 41.0,
                                 "worst_rpo_at": "2026-11-26T09:31:12.000Z", "breaches": 0, "breach_seconds": 0.0,
                                 "series": [[1795597200.0, 0.0], [1795600800.0, 2.5]]}}],
        "groups": []}]})


class RpoPoint(Out):
    t: float = Field(description="Epoch seconds.")
    rpo_s: float = Field(description="The RPO at `t` (seconds).")


class RpoTargetSeries(Out):
    target: str
    worst_rpo_s: float
    worst_at: float
    series: list[RpoPoint]


class RpoHistory(Out):
    """RPO over time for a chart. Join the points with straight lines: between them the RPO
    grows with slope 1 or stays 0, and a drop is two points at one instant. Long periods are
    reduced to the worst RPO per time bin (at most `points` points), so peaks are kept."""

    mirror: str
    target: str | None = Field(description="The one target asked for; null: the mirror (worst target at each instant).")
    objective_s: float = Field(description="The mirror's RPO objective (draw it as a line).")
    since: float = Field(description="Epoch seconds.")
    until: float = Field(description="Epoch seconds.")
    worst_rpo_s: float
    worst_at: float = Field(description="When the worst RPO was reached (epoch seconds).")
    series: list[RpoPoint]
    targets: list[RpoTargetSeries] | None = Field(None, description="With `by_target=true`: each target's own curve.")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "mirror": "photos", "target": None, "objective_s": 900.0, "since": 1795597200.0, "until": 1795600800.0,
        "worst_rpo_s": 41.1, "worst_at": 1795599072.0,
        "series": [{"t": 1795597200.0, "rpo_s": 0.0}, {"t": 1795599031.0, "rpo_s": 0.0},
                   {"t": 1795599031.0, "rpo_s": 0.1}, {"t": 1795599072.0, "rpo_s": 41.1},
                   {"t": 1795599072.0, "rpo_s": 0.0}, {"t": 1795600800.0, "rpo_s": 0.0}],
        "targets": None}]})


# ------------------------------------------------------------------ keys and audit
class ApiKey(Out):
    id: int
    name: str
    role: RoleName
    prefix: str = Field(description="The token's first characters, to recognise it.", examples=["cm_Xk3v9aQ"])
    created_at: Timestamp
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "prometheus",
                                                                               "role": "viewer"}]})

    name: str = Field(min_length=1, max_length=128, pattern=KEY_NAME,
                      description="What the key is for; printable, unique among active keys.")
    role: RoleName


class ApiKeyCreated(Out):
    key: ApiKey
    token: str = Field(description="The bearer token. Shown once: only its SHA-256 is stored.",
                       examples=["cm_Xk3v9aQ8mWJ0c3TqkS1oZlq2mB1d6u3y0VwXH9sYJtE"])


class AuditEntry(Out):
    id: int
    at: Timestamp
    actor: str = Field(description="The API key's name, `cli`, or `anonymous`.")
    key_id: int | None
    action: str = Field(examples=["POST /v1/mirrors/{name}/reconcile"])
    target: str | None = Field(examples=["/v1/mirrors/photos/reconcile"])
    status: int = Field(description="The HTTP status answered.")
    detail: str | None
    client: str | None
