"""Ledger tables (SQLAlchemy Core). Times are UNIX epoch seconds (float, UTC) so SQLite and
PostgreSQL compare them the same way.

- versions: every version of every key seen on a mirror's source (deduplicated by token).
- key_heads: the newest version known per (mirror, key), to order late/duplicate events.
- replications: one version x one target, with its status, attempts, lease and timings.
- dead_letters: messages that could not be understood, with the raw body and the reason, and
  what an operator did with them (re-driven or discarded, when and by whom).
- reconcile_runs: each listing comparison of a source with a target (backfill, reconcile,
  dry run), its resume position and what it found.
- api_keys: bearer keys of the REST API (SHA-256 of the token, never the token), with a role.
- audit_log: every mutating API call and key change: who, what, on which target, the outcome.
- jobs: background work started through the API (a reconcile), its progress and result.
- mirror_specs: the mirrors as the running services see them (seeded from the config file,
  changed through the REST API), with where applications write now (`active`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BigInteger ids autoincrement on PostgreSQL; SQLite only autoincrements INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")

STATUSES = ("pending", "in_progress", "completed", "failed", "superseded", "skipped")
OPEN_STATUSES = ("pending", "in_progress")

versions = Table(
    "versions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("mirror", String(64), nullable=False),
    Column("key", Text, nullable=False),
    Column("token", String(512), nullable=False),  # identity used to drop duplicate events
    Column("op", String(8), nullable=False),  # put | delete
    Column("version_id", String(1024)),
    Column("etag", String(128)),
    Column("sequencer", String(128)),
    Column("size", BigInteger),
    Column("source_time", Double, nullable=False),  # when the write happened on the source
    Column("seen_at", Double, nullable=False),
    Column("origin", String(16), nullable=False, server_default="event"),  # event | poll | backfill | reconcile
    Column("duplicates", Integer, nullable=False, server_default="0"),
    Index("ix_versions_identity", "mirror", "key", "token", unique=True),
)

key_heads = Table(
    "key_heads",
    metadata,
    Column("mirror", String(64), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("version_pk", BigInteger, nullable=False),
    Column("sequencer", String(128)),
    Column("source_time", Double),
)

replications = Table(
    "replications",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("version_pk", BigInteger, ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
    Column("mirror", String(64), nullable=False),
    Column("target", String(1024), nullable=False),
    Column("key", Text, nullable=False),
    Column("lock", String(40), nullable=False),  # sha1(mirror, target, key): per-key order guard
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Double, nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", Double),
    # +1 on every claim: the fencing token of the current lease (a lapsed holder's is stale)
    Column("lease_token", Integer, nullable=False, server_default="0"),
    Column("created_at", Double, nullable=False),
    Column("started_at", Double),
    Column("completed_at", Double),
    Column("last_error", Text),
    Column("detail", Text),  # why skipped / superseded
    Column("upload_id", String(1024)),  # an unfinished multipart upload on the target
    Column("copied_etag", String(128)),  # the source etag actually shipped
    Column("copied_version_id", String(1024)),
    Column("target_etag", String(128)),
    Column("target_version_id", String(1024)),
    Column("bytes", BigInteger),
    Index("ix_replications_claim", "mirror", "target", "status", "next_attempt_at"),
    Index("ix_replications_lock", "lock", "status"),
    Index("ix_replications_version", "version_pk"),
    Index("ix_replications_lease", "status", "lease_expires_at"),
    # Invariant 4: two versions of one key are never in flight to one target at once.
    Index(
        "uq_replications_inflight_lock",
        "lock",
        unique=True,
        sqlite_where=text("status = 'in_progress'"),
        postgresql_where=text("status = 'in_progress'"),
    ),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("feed", String(1024), nullable=False),
    Column("message_id", String(256)),
    Column("body", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("received_at", Double, nullable=False),
    # pending until an operator re-drives it (its versions recorded) or discards it (kept for audit)
    Column("status", String(16), nullable=False, server_default="pending"),  # pending | redriven | discarded
    Column("resolved_at", Double),
    Column("resolved_by", String(256)),  # the API key's name, or `cli:USER`
    Index("ix_dead_letters_status", "status", "id"),
)

reconcile_runs = Table(
    "reconcile_runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("mirror", String(64), nullable=False),
    Column("target", String(1024), nullable=False),
    Column("kind", String(16), nullable=False),  # backfill | reconcile | dry-run
    Column("status", String(16), nullable=False),  # running | finished | failed
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("position", Text),  # the last source key whose differences are recorded (resume point)
    Column("listed", BigInteger, nullable=False, server_default="0"),  # source objects listed
    Column("missing", BigInteger, nullable=False, server_default="0"),
    Column("stale", BigInteger, nullable=False, server_default="0"),
    Column("extra", BigInteger, nullable=False, server_default="0"),
    Column("missed_events", BigInteger, nullable=False, server_default="0"),
    Column("error", Text),
    Index("ix_reconcile_runs_mirror", "mirror", "target", "started_at"),
)

ROLES = ("viewer", "operator", "admin")  # each includes the rights of the ones before it

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),  # viewer | operator | admin
    Column("prefix", String(16), nullable=False),  # the token's first characters, for display
    Column("token_hash", String(64), nullable=False),  # hex SHA-256 of the token
    Column("created_at", Double, nullable=False),
    Column("revoked_at", Double),
    Column("last_used_at", Double),
    Index("uq_api_keys_token_hash", "token_hash", unique=True),
    # one active key per name; a revoked key's name can be given again
    Index(
        "uq_api_keys_active_name",
        "name",
        unique=True,
        sqlite_where=text("revoked_at IS NULL"),
        postgresql_where=text("revoked_at IS NULL"),
    ),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),
    Column("actor", String(160), nullable=False),  # the key's name, "cli", or "anonymous"
    Column("key_id", BigInteger),  # the API key used, when there was a valid one
    Column("action", String(300), nullable=False),  # "POST /v1/mirrors/{name}/reconcile", "keys create"
    Column("target", Text),  # the concrete path or the object acted on
    Column("status", Integer, nullable=False),  # the HTTP status answered (CLI: 200 or 4xx alike)
    Column("detail", Text),
    Column("client", String(64)),  # the caller's address
    Index("ix_audit_log_at", "at"),
)

JOB_STATUSES = ("queued", "running", "finished", "failed")

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # reconcile
    Column("mirror", String(64), nullable=False),
    Column("target", String(1024)),  # None: every target of the mirror
    Column("params", JSON, nullable=False),  # what was asked (dry_run, checksum, ...)
    Column("status", String(16), nullable=False),  # queued | running | finished | failed
    Column("created_by", String(160), nullable=False),
    Column("owner", String(160), nullable=False),  # the process running it (host-pid)
    Column("created_at", Double, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    Column("heartbeat_at", Double, nullable=False),  # a job whose heartbeat stops was abandoned
    Column("progress", JSON, nullable=False),  # counters so far
    Column("result", JSON),  # per target findings, when finished
    Column("error", Text),
    Column("dry_run", Boolean, nullable=False),  # changes nothing (also in params)
    Index("ix_jobs_status", "status", "kind", "mirror"),
)

mirror_specs = Table(
    "mirror_specs",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("spec", JSON, nullable=False),  # the validated mirror (config.Mirror, dumped as JSON)
    Column("seeded_spec", JSON),  # the config file's spec when it last seeded this mirror
    Column("origin", String(8), nullable=False),  # file | api: who created it
    Column("active", Text),  # where applications write now (a failover moved it); None = the source
    Column("revision", Integer, nullable=False),  # +1 on every change (optimistic concurrency)
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("deleted_at", Double),  # a tombstone: the file does not bring a deleted mirror back
)

# ---- failovers, failbacks and drills (cloudmirror/failover.py, ledger/failovers.py)
# failovers: one switch of a mirror's active location (kind planned | forced) or the way back
# (failback), with its outcome; failover_objects: what a switch left behind (at_risk), what a
# failback found written on both sides (conflict) or brought back from the old primary
# (restored); drills: non-disruptive rehearsals with their findings per target.
failovers = Table(
    "failovers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("mirror", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # planned | forced | failback
    Column("status", String(16), nullable=False),  # running | completed | aborted | failed
    Column("from_location", Text, nullable=False),  # primary before
    Column("to_location", Text, nullable=False),  # primary after
    Column("requested_by", String(160), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),
    Column("switched_at", Double),
    Column("finished_at", Double),
    Column("fence", Boolean, nullable=False, server_default=text("false")),
    Column("fenced_at", Double),
    Column("drain_timeout_s", Double),
    Column("drained", Boolean),
    Column("policy", String(16)),  # failback: newest_wins | primary_wins | keep_both
    Column("of_failover", BigInteger),  # failback: the failover it ends
    Column("old_is_target", Boolean),  # while failed over: the old primary receives the new one's writes
    Column("reverse_events", JSON),  # feeds announcing writes to the new primary (default: poll)
    Column("rpo_seconds", Double),  # data not carried over at the switch (0 = nothing at risk)
    Column("at_risk_objects", BigInteger, nullable=False, server_default="0"),
    Column("at_risk_bytes", BigInteger, nullable=False, server_default="0"),
    Column("conflicts", BigInteger, nullable=False, server_default="0"),
    Column("restored", BigInteger, nullable=False, server_default="0"),
    Column("copied", BigInteger, nullable=False, server_default="0"),
    Column("deleted", BigInteger, nullable=False, server_default="0"),
    Column("detail", JSON),  # progress and findings (rounds, backlog seen, ...)
    Column("error", Text),
    Index("ix_failovers_mirror", "mirror", "started_at"),
    Index("uq_failovers_running_mirror", "mirror", unique=True, sqlite_where=text("status = 'running'"),
          postgresql_where=text("status = 'running'")),
)

failover_objects = Table(
    "failover_objects",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("failover_id", BigInteger, ForeignKey("failovers.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # at_risk | conflict | restored
    Column("key", Text, nullable=False),
    Column("op", String(8)),  # put | delete
    Column("size", BigInteger),
    Column("source_time", Double),  # at_risk: the source write; conflict: the old primary's write
    Column("target", Text),  # at_risk: the target it had not reached
    Column("version_pk", BigInteger),
    Column("other_time", Double),  # conflict: the current primary's write (or delete)
    Column("resolution", String(16)),  # conflict: primary | old_primary | kept_both
    Column("detail", Text),
    Index("ix_failover_objects_failover", "failover_id", "kind", "id"),
)

drills = Table(
    "drills",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("mirror", String(64), nullable=False),
    Column("requested_by", String(160), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("outcome", String(16), nullable=False),  # running | passed | failed | error
    Column("rpo_seconds", Double),  # worst target: what a forced failover would lose now
    Column("rto_seconds", Double),  # worst target: how long a planned failover would take now
    Column("results", JSON),  # per target findings
    Column("error", Text),
    Index("ix_drills_mirror", "mirror", "started_at"),
)
