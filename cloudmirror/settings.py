"""The process settings of the config file (`api:`, `workers:`) and the value parsers the
config models share. Nothing runs at import time."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """'15m' -> 900.0, '250ms' -> 0.25, 30 -> 30.0 (seconds). Raises ValueError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("durations cannot be negative")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 6h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def positive_duration(value: Any, name: str, example: str) -> float | None:
    """A duration that must be above zero (None stays None). Raises ValueError naming `name`."""
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{name} must be a positive duration such as {example}")
    return seconds


def parse_delete_limit(value: Any) -> tuple[int | float, int | str]:
    """max_deletes: 100 -> (100, 100); "10%" -> (0.1, "10%"). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("max_deletes is a count (e.g. 500) or a percent of the target (e.g. 10%)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("max_deletes cannot be negative")
        return value, value
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$", str(value))
    if not m or float(m.group(1)) > 100:
        raise ValueError(f"max_deletes is a count (e.g. 500) or a percent 0-100% of the target, got {value!r}")
    return float(m.group(1)) / 100, f"{m.group(1)}%"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiSettings(StrictModel):
    listen: str = "127.0.0.1:8080"
    # TLS: both a PEM certificate (chain) and its private key, or neither (plain HTTP)
    tls_cert: str | None = None
    tls_key: str | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = 1024 * 1024  # larger bodies get 413
    # failed authentications one client address may make per minute before it gets 429
    auth_failures_per_minute: Annotated[int, Field(ge=1, le=100000)] = 30
    max_report_period: float = 400 * 86400.0  # the longest since..until one report may cover

    @field_validator("max_report_period", mode="before")
    @classmethod
    def _period(cls, v: Any) -> float | None:
        return positive_duration(v, "max_report_period", "400d")

    @model_validator(mode="after")
    def _tls(self) -> "ApiSettings":
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: give both (PEM files) or neither")
        return self

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not (0 <= int(port) < 65536):
            raise ValueError(f"listen must be HOST:PORT, got {v!r}")
        return v


class WorkerSettings(StrictModel):
    """How the worker pool behaves. Defaults suit production; tests shorten the delays."""

    concurrency_per_target: Annotated[int, Field(ge=1, le=1024)] = 32
    claim_batch: Annotated[int, Field(ge=1, le=1000)] = 64
    poll_interval: float = 0.2
    lease: float = 60.0
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    retry_base_delay: float = 1.0
    retry_max_delay: float = 300.0
    multipart_threshold: Annotated[int, Field(ge=5 * 1024 * 1024)] = 16 * 1024 * 1024
    part_size: Annotated[int, Field(ge=5 * 1024 * 1024)] = 16 * 1024 * 1024
    max_buffers: Annotated[int, Field(ge=1, le=64)] = 4
    drain_timeout: float = 30.0

    @field_validator("poll_interval", "lease", "retry_base_delay", "retry_max_delay", "drain_timeout", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> float:
        return parse_duration(v)
