"""Health, status, reconcile jobs, failures and the versions of an object."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Out, Page, Timestamp
from api.schemas.dead_letters import DeadLetterCounts


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
    dead_letters: DeadLetterCounts | None = Field(None, description="Messages the intake could not use "
                                                                    "(GET /v1/dead-letters).")

    model_config = ConfigDict(json_schema_extra={"examples": [{"targets": [{
        "mirror": "photos", "target": "s3://photos-euw1?region=eu-west-1", "pending": 3, "in_progress": 1,
        "completed": 1200, "failed": 0, "superseded": 4, "skipped": 0, "rpo_seconds": 2.5, "rpo_objective": 900.0,
        "objective_met": True, "missed_events": 0}], "groups": [],
        "dead_letters": {"pending": 1, "redriven": 0, "discarded": 2, "feeds": {"projects/p/subscriptions/s": 1}}}]})


# ------------------------------------------------------------------ jobs
class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"target": "s3://photos-euw1?region=eu-west-1", "dry_run": True}, {}]})

    target: str | None = Field(None, max_length=1024, description="Only this target (its URL as in the config); "
                                                                  "default: every target.")
    dry_run: bool = Field(False, description="Report the differences; change nothing, not even the ledger.")
    checksum: bool = Field(False, description="Read objects whose MD5 is unknown and compare their bytes.")
    force: bool = Field(False, description="Make the deletes even when a target would lose more objects than the "
                                           "mirror's max_deletes (without it, such a reconcile deletes nothing there "
                                           "and the job fails saying how many and which).")


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
    extra_kept: int = Field(0, description="Only on the target and left in place: the mirror does not replicate "
                                           "deletes, or cloudmirror did not write the object.")
    foreign: int = Field(0, description="Of extra_kept: objects cloudmirror did not write (kept unless the mirror "
                                        "says deletes: replicate_all).")
    deletes: int = Field(0, description="Deletes found (a dry run: that it would make).")
    deletes_refused: int = Field(0, description="Targets whose deletes were refused: more than max_deletes.")
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
    foreign: int = Field(0, description="Objects only on the target that cloudmirror did not write: kept.")
    deletes: int = Field(0, description="Deletes of objects cloudmirror wrote (a dry run: that it would make).")
    delete_limit: int = Field(0, description="The mirror's max_deletes for this target (a percent is of the "
                                             "objects the target listing found).")
    deletes_refused: bool = Field(False, description="deletes > delete_limit and not forced: none was made (a dry "
                                                     "run: none would be).")
    delete_sample: list[str] = Field(default_factory=list, description="Up to 20 keys it deletes (or would).")
    refusal: str | None = Field(None, description="Why the deletes were refused, in one line.")
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
