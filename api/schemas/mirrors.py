"""A mirror as the API takes and shows it (the config file's mirror entry)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from api.schemas.common import Out, Timestamp
from cloudmirror.config import EventFeed, Filter, Target

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
DeletesField = Annotated[Literal["replicate", "replicate_all", "ignore"], Field(description=(
    "`replicate`: a source delete removes the key where cloudmirror wrote it; `replicate_all`: also objects it "
    "never wrote (a reconcile makes targets equal the source); `ignore` protects replicas from deletes."))]
MaxDeletesField = Annotated[int | str, Field(description=(
    "The most deletes one reconcile or failback makes on a target without `force`: a count, or a percent of "
    "the target's objects such as `10%`."), examples=["10%", 500])]
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
    max_deletes: MaxDeletesField = "10%"
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
    max_deletes: MaxDeletesField | None = None
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
    deletes: Literal["replicate", "replicate_all", "ignore"]
    max_deletes: int | str
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
        "max_deletes": "10%", "rpo_objective": 900.0, "paused": False, "backfill": False, "reconcile_every": None,
        "reconcile_grace": 60.0,
        "versions": "latest", "active": "s3://photos-use1?region=us-east-1", "revision": 3, "origin": "file",
        "created_at": "2026-11-20T09:00:00Z", "updated_at": "2026-11-26T10:00:00Z"}]})
