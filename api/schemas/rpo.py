"""Live RPO and RPO history."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from api.schemas.common import Out


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


# ------------------------------------------------------------------ report signing
class ReportPublicKey(Out):
    """The public key that verifies this deployment's signed reports (`cloudmirror report verify
    FILE --public-key PEM`); the private key never leaves the server."""

    algorithm: str = Field(description="Always `ed25519`.")
    key_id: str = Field(description="The key's fingerprint: the first 16 hex digits of SHA-256 of the raw 32-byte "
                                    "public key; each report names the key id that signed it.")
    public_key_pem: str = Field(description="SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "algorithm": "ed25519", "key_id": "3f9a6c1d20b7e845",
        "public_key_pem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA0d8tRkVx3Q2mS8oJk0Vn4m3h1dG8b6yq0f6V2w0kWbA=\n"
                          "-----END PUBLIC KEY-----\n"}]})
