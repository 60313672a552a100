"""Configuration: pydantic models for cloudmirror.yaml, and loading.

Nothing runs at import time. `load_config(path)` raises ConfigError whose message names the
offending field (e.g. ``mirrors[0].targets[1]: unknown scheme 'ftp'``).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from cloudmirror.errors import InvalidInput, MirrorNotFound, NotFoundError
from cloudmirror.location import Location, LocationError, parse_location
from cloudmirror.policy import PolicyRefused, SecurityPolicy, derived_policy
from cloudmirror.settings import ApiSettings, WorkerSettings, parse_delete_limit, parse_duration, positive_duration
from cloudmirror.settings import StrictModel as _Strict

__all__ = ["ApiSettings", "Config", "ConfigError", "EventFeed", "Filter", "Group", "Mirror", "Target",
           "WorkerSettings", "load_config", "parse_duration", "validate_config"]


class ConfigError(ValueError):
    """Bad configuration. The message names the field."""


def _location(value: Any) -> Location:
    if isinstance(value, Location):
        return value
    try:
        return parse_location(value)
    except LocationError as e:
        raise ValueError(str(e)) from None


class Target(_Strict):
    """One target location with its per-target write options."""

    url: str
    storage_class: str | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        _location(v)
        return v

    @model_validator(mode="after")
    def _kms(self) -> "Target":
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id needs sse: aws:kms")
        return self

    @property
    def location(self) -> Location:
        return _location(self.url)

    @property
    def name(self) -> str:
        return self.url


FEED_KINDS = ("sqs", "pubsub", "azure_queue", "poll")
DEFAULT_FILE_POLL_S = 60.0


class EventFeed(_Strict):
    """One event feed; exactly one of the fields is set."""

    sqs: str | None = None
    pubsub: str | None = None  # projects/PROJECT/subscriptions/SUBSCRIPTION
    azure_queue: str | None = None  # az://ACCOUNT/QUEUE[?connection_string_env=VAR|endpoint=URL]
    # no notifications (file:// sources, or buckets whose events cannot be wired): list the
    # source every `poll` and announce what changed since the last listing
    poll: float | None = None
    # pubsub: the most messages leased at once (streaming-pull flow control)
    max_outstanding: Annotated[int, Field(ge=1, le=100000)] = 1000
    # sqs: the queue's region when the URL does not say (emulators). Every queue feed: how
    # long one receive waits for messages, and how long a received message stays hidden
    # (leased) until it is recorded and acked
    region: str | None = None
    receivers: Annotated[int, Field(ge=1, le=64)] = 4  # concurrent receive loops on this queue
    # EventBridge object keys: URL-encoded like S3 notifications (LocalStack) or plain (moto)
    eventbridge_keys: Literal["encoded", "plain"] = "encoded"
    wait_time_s: Annotated[int, Field(ge=0, le=20)] = 10
    visibility_timeout_s: Annotated[int, Field(ge=5, le=43200)] = 60
    # sqs: a message handed out more often than this is dead-lettered ("received N times")
    max_receives: Annotated[int, Field(ge=1, le=1000)] = 10

    @field_validator("poll", mode="before")
    @classmethod
    def _poll(cls, v: Any) -> float | None:
        return positive_duration(v, "poll", "30s or 5m")

    @model_validator(mode="after")
    def _one(self) -> "EventFeed":
        set_ = [k for k in FEED_KINDS if getattr(self, k)]
        if len(set_) != 1:
            raise ValueError("an event feed names exactly one of sqs, pubsub, azure_queue, poll")
        if self.sqs and not re.match(r"^https?://", self.sqs):
            raise ValueError("sqs must be a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME), "
                             f"got {self.sqs!r}")
        if self.pubsub and not re.match(r"^projects/[^/\s]+/subscriptions/[^/\s]+$", self.pubsub):
            raise ValueError("pubsub must be a subscription path projects/PROJECT/subscriptions/NAME, "
                             f"got {self.pubsub!r}")
        if self.azure_queue:
            loc = _location(self.azure_queue)
            if loc.scheme != "az" or not loc.bucket or loc.prefix:
                raise ValueError(f"azure_queue must be az://ACCOUNT/QUEUE, got {self.azure_queue!r}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in FEED_KINDS if getattr(self, k))

    @property
    def address(self) -> str:
        return f"poll every {self.poll:g}s" if self.kind == "poll" else getattr(self, self.kind)


class Filter(_Strict):
    prefix: str = ""
    exclude_prefixes: list[str] = Field(default_factory=list)
    suffixes: list[str] = Field(default_factory=list)

    def matches(self, rel_key: str) -> bool:
        if not rel_key.startswith(self.prefix):
            return False
        if any(rel_key.startswith(p) for p in self.exclude_prefixes):
            return False
        return not self.suffixes or any(rel_key.endswith(s) for s in self.suffixes)


# stores that keep a version history (S3 and Azure with versioning enabled, GCS with object
# versioning); a disk has none
VERSIONED_SCHEMES = frozenset({"s3", "gs", "az", "memory"})


class Mirror(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    source: str
    targets: Annotated[list[Target], Field(min_length=1)]
    events: list[EventFeed] = Field(default_factory=list)
    filter: Filter = Field(default_factory=Filter)
    # replicate: a delete on the source removes the key on targets where cloudmirror wrote it
    # (the ledger records its copies); replicate_all: also objects it never wrote (a reconcile
    # makes the target equal the source); ignore: targets keep everything
    deletes: Literal["replicate", "replicate_all", "ignore"] = "replicate"
    # a reconcile or failback that would delete more than this on one target (a count, or a
    # percent of the target's objects) stops before deleting and needs --force
    max_deletes: int | str = "10%"
    rpo_objective: float = 900.0
    paused: bool = False
    # compare source and targets by listing: once at start for targets never reconciled
    # (a backfill of existing objects), and every `reconcile_every` (finds missed events)
    backfill: bool = False
    reconcile_every: float | None = None
    # a reconcile leaves objects written this recently to their events (not yet judged missed)
    reconcile_grace: float = 60.0
    # latest: targets hold each key's current version; all: every source version is copied,
    # oldest first, to versioned targets (their version history follows the source's)
    versions: Literal["latest", "all"] = "latest"

    @field_validator("source")
    @classmethod
    def _check_source(cls, v: str) -> str:
        _location(v)
        return v

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"url": t} if isinstance(t, str) else t for t in v]
        return v

    @field_validator("max_deletes")
    @classmethod
    def _max_deletes(cls, v: int | str) -> int | str:
        return parse_delete_limit(v)[1]

    def delete_limit(self, target_objects: int) -> int:
        """The most objects one reconcile or failback may delete on a target holding
        `target_objects` objects without --force. A percent rounds up (10 % of 3 objects
        allows 1), so a small target's single delete goes through; 0 % allows none."""
        count, _ = parse_delete_limit(self.max_deletes)
        if isinstance(count, int):
            return count
        return math.ceil(target_objects * count - 1e-9)

    @field_validator("rpo_objective", mode="before")
    @classmethod
    def _rpo(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("reconcile_grace", mode="before")
    @classmethod
    def _grace(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("reconcile_every", mode="before")
    @classmethod
    def _reconcile_every(cls, v: Any) -> float | None:
        return positive_duration(v, "reconcile_every", "6h")

    @model_validator(mode="after")
    def _distinct(self) -> "Mirror":
        src = self.source_location
        seen: set[str] = set()
        for i, t in enumerate(self.targets):
            loc = t.location
            if loc.container_id == src.container_id and (loc.prefix.startswith(src.prefix)
                                                         or src.prefix.startswith(loc.prefix)):
                raise ValueError(f"targets[{i}] overlaps the source {self.source}")
            if t.url in seen:
                raise ValueError(f"targets[{i}] is listed twice: {t.url}")
            seen.add(t.url)
        if self.versions == "all":
            for where, loc in [("source", src)] + [(f"targets[{i}]", t.location) for i, t in enumerate(self.targets)]:
                if loc.scheme not in VERSIONED_SCHEMES:
                    raise ValueError(f"versions: all needs versioned buckets, and {where} ({loc.scheme}://) "
                                     "has no version history")
        return self

    @model_validator(mode="before")
    @classmethod
    def _poll_file_sources(cls, data: Any) -> Any:
        """A disk has no event notifications: a file:// source without feeds is polled."""
        if isinstance(data, dict) and not data.get("events") and str(data.get("source", "")).startswith("file://"):
            data = {**data, "events": [{"poll": DEFAULT_FILE_POLL_S}]}
        return data

    @property
    def source_location(self) -> Location:
        return _location(self.source)

    @property
    def polled(self) -> bool:
        """A poll feed's first listing announces every object: such a mirror needs no backfill."""
        return any(f.kind == "poll" for f in self.events)

    def target(self, name: str) -> Target:
        """The target named `name` (its URL as configured). Raises InvalidInput (field
        `target`) when it is not one of this mirror's."""
        for t in self.targets:
            if t.name == name:
                return t
        raise InvalidInput("target", f"{name!r} is not a target of mirror {self.name!r} (its targets: "
                                     f"{', '.join(t.name for t in self.targets)})")


class Group(_Strict):
    name: str
    mirrors: Annotated[list[str], Field(min_length=1)]


class Config(_Strict):
    ledger: str = "sqlite:///cloudmirror.db"
    api: ApiSettings = Field(default_factory=ApiSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    mirrors: list[Mirror] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list)
    # which locations, endpoints and environment variables mirrors may use (cloudmirror.policy);
    # without this section: the default plus the file:// locations and endpoints the file names
    security: SecurityPolicy = Field(default_factory=SecurityPolicy)

    @field_validator("ledger")
    @classmethod
    def _ledger(cls, v: str) -> str:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", v):
            raise ValueError(f"ledger must be a sqlite:/// or postgresql+psycopg:// URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _refs(self) -> "Config":
        names = [m.name for m in self.mirrors]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"mirror names must be unique: {', '.join(dup)}")
        for g in self.groups:
            missing = [m for m in g.mirrors if m not in names]
            if missing:
                raise ValueError(f"group {g.name!r} names unknown mirror(s): {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _derive_policy(self) -> "Config":
        """No `security:` section: derive the policy from what the file names. Kept from then
        on (a dump carries it), so mirrors added through the API never widen it."""
        if "security" not in self.model_fields_set:
            locations, endpoints = [], []
            for m in self.mirrors:
                for loc in (m.source_location, *(t.location for t in m.targets)):
                    locations.append(loc)
                    endpoints.append(loc.endpoint or "")
                for f in m.events:
                    endpoints.append(f.sqs or (f.azure_queue and _location(f.azure_queue).endpoint) or "")
            object.__setattr__(self, "security", derived_policy(locations, filter(None, endpoints)))
        return self

    def check_policy(self) -> None:
        """Every mirror against the security policy. Raises ConfigError naming the field and
        the rule."""
        for i, m in enumerate(self.mirrors):
            try:
                self.security.check_mirror(m, f"mirrors[{i}]")
            except PolicyRefused as e:
                raise ConfigError(str(e)) from None

    def mirror(self, name: str) -> Mirror:
        """The mirror named `name`. Raises MirrorNotFound."""
        for m in self.mirrors:
            if m.name == name:
                return m
        raise MirrorNotFound(name)

    def group(self, name: str) -> Group:
        """The consistency group named `name`. Raises NotFoundError."""
        for g in self.groups:
            if g.name == name:
                return g
        raise NotFoundError(f"no group named {name!r}")


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith("function-"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def validate_config(data: Any) -> Config:
    """Validate a parsed config mapping. Raises ConfigError naming the first bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping (ledger:, mirrors:, ...)")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{_field_path(err['loc'])}: {msg}") from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load and validate a YAML config file, its mirrors checked against its security
    policy. Raises ConfigError."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p} is not valid YAML{where}: {problem}") from None
    config = validate_config(data)
    config.check_policy()
    return config
