"""The security policy: which locations, endpoints and environment variables mirrors may use.

cloudmirror holds credentials to every bucket it mirrors. A location's `endpoint=` (or a
queue URL) receives its signed requests, access-key id, session token or SAS token; a
`file://` location reads or writes the host's disk; `connection_string_env=VAR` reads an
environment variable. The policy says which of these a mirror may name:

```yaml
security:
  locations: ["s3://*", "gs://*", "az://*"]      # globs over scheme://bucket/prefix (the default)
  endpoints: []                                   # non-provider endpoints, e.g. "http://127.0.0.1:4566"
  env_prefix: CLOUDMIRROR_                        # the variables connection_string_env may name
```

- A location pattern matches the location and everything under it: `s3://photos-*` allows
  every bucket named photos-..., `file:///srv/replicas` the directory and its sub-directories
  (never `/srv/replicas-other`); `*` matches any characters, `/` included.
- An endpoint (a location's `endpoint=`, an SQS queue URL, an Azure queue's `endpoint=`) is
  allowed when it is the provider's own over HTTPS (*.amazonaws.com for S3 and SQS,
  *.googleapis.com for GCS, *.core.windows.net and the sovereign Azure clouds for Azure), or
  when its origin matches a pattern of `endpoints` (`http://127.0.0.1:4566`, `http://localhost:*`;
  a pattern without a port means the scheme's default port). URLs with a user or password are
  refused.
- `connection_string_env` may name only variables starting with `env_prefix`, and never one of
  cloudmirror's own settings (CLOUDMIRROR_REPORT_*, CLOUDMIRROR_API_*, ...).
- `memory://` keeps objects in this process only: refused unless CLOUDMIRROR_ALLOW_MEMORY=1
  (set by the test suite and the local cloud).

Without a `security:` section the policy is the default above plus what the config file itself
names: its file:// locations and its endpoints (the file is the operator's own word). Mirrors
in the config file are checked at load; mirrors and feeds created or changed through the API
are checked when they arrive (422 naming the rule); the running service checks every location
and feed again before it opens a store or a queue, so nothing outside the policy is ever
touched, even by a mirror stored before the policy was tightened.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloudmirror.errors import InvalidInput
from cloudmirror.location import Location, LocationError, parse_location

DEFAULT_LOCATIONS = ("s3://*", "gs://*", "az://*")
DEFAULT_ENV_PREFIX = "CLOUDMIRROR_"
ALLOW_MEMORY_ENV = "CLOUDMIRROR_ALLOW_MEMORY"
# cloudmirror's own settings: never readable through connection_string_env
RESERVED_ENV = ("CLOUDMIRROR_REPORT_", "CLOUDMIRROR_API_", "CLOUDMIRROR_LEDGER", "CLOUDMIRROR_CONFIG",
                "CLOUDMIRROR_ALLOW_", "CLOUDMIRROR_STATE_DIR")
# the providers' own hosts, per the kind of endpoint (HTTPS only)
PROVIDER_HOSTS = {
    "s3": ("*.amazonaws.com", "*.amazonaws.com.cn"),
    "sqs": ("*.amazonaws.com", "*.amazonaws.com.cn"),
    "gs": ("*.googleapis.com",),
    "az": ("*.core.windows.net", "*.core.chinacloudapi.cn", "*.core.usgovcloudapi.net"),
}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)$")


class PolicyRefused(InvalidInput):
    """A location, endpoint or environment variable the security policy does not allow.
    `rule` names the policy setting that refused it (e.g. `security.locations`)."""

    code = "policy_refused"

    def __init__(self, field: str, rule: str, reason: str):
        super().__init__(field, f"refused by the security policy ({rule}): {reason}")
        self.rule = rule


def origin(url: str) -> str:
    """`scheme://host:port` of an endpoint URL (default port filled in). Raises ValueError
    for what is not an http(s) URL with a plain host, or carries a user or password."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("an endpoint is an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("an endpoint must not carry a user or password")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if not _HOST.match(host):
        raise ValueError("the endpoint's host is not a plain host name or address")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError("the endpoint's port is not a number") from None
    return f"{scheme}://{host}:{port}"


def _pattern_origin(pattern: str) -> str:
    """An endpoint pattern in origin form: a missing port means the scheme's default."""
    scheme, sep, rest = pattern.lower().partition("://")
    if not sep:
        return pattern.lower()
    rest = rest.rstrip("/")
    if not re.search(r":(\d+|\*)$", rest):
        rest += f":{_DEFAULT_PORTS.get(scheme, '*')}"
    return f"{scheme}://{rest}"


def _location_text(loc: Location) -> str:
    """The location without its parameters, as patterns see it (`s3://bucket/prefix`)."""
    return str(Location(loc.scheme, loc.bucket, loc.prefix, loc.account))


def _safe(url: str) -> str:
    """A URL fit for an error message: no user, password, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparseable URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class SecurityPolicy(BaseModel):
    """The `security:` section of the config (see the module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    locations: Annotated[list[str], Field(max_length=1000)] = Field(default_factory=lambda: list(DEFAULT_LOCATIONS))
    endpoints: Annotated[list[str], Field(max_length=1000)] = Field(default_factory=list)
    env_prefix: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = DEFAULT_ENV_PREFIX

    @field_validator("locations")
    @classmethod
    def _locations(cls, v: list[str]) -> list[str]:
        for p in v:
            if "://" not in p or p.split("://", 1)[0] not in ("s3", "gs", "az", "file", "memory", "*"):
                raise ValueError(f"a location pattern is scheme://bucket[/prefix] with * globs, got {p!r}")
        return v

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        for p in v:
            if not re.match(r"^https?://[^/@?#]+/?$", p):
                raise ValueError(f"an endpoint pattern is http(s)://HOST[:PORT] with * globs, got {p!r}")
        return v

    # ------------------------------------------------------------------ checks
    def check_location(self, loc: Location, field: str) -> None:
        """Raises PolicyRefused naming `field` and the rule when `loc` (with its endpoint
        and connection_string_env) is not allowed."""
        text = _location_text(loc)
        if loc.scheme == "memory":
            if os.environ.get(ALLOW_MEMORY_ENV) != "1":
                raise PolicyRefused(field, ALLOW_MEMORY_ENV, f"{text} keeps objects in this process only; memory:// "
                                                             "is for tests and the local cloud")
        elif not any(fnmatch.fnmatchcase(text, p) or fnmatch.fnmatchcase(text, p.rstrip("/") + "/*")
                     for p in self.locations):
            raise PolicyRefused(field, "security.locations",
                                f"{text} matches none of {', '.join(self.locations) or '(no patterns)'}")
        if loc.endpoint is not None:
            self.check_endpoint(loc.endpoint, loc.scheme, field)
        if (var := loc.param("connection_string_env")) is not None:
            self.check_env(var, field)

    def check_endpoint(self, url: str, kind: str, field: str) -> None:
        """Raises PolicyRefused unless `url` is the provider's own (HTTPS) for `kind`
        (s3, sqs, gs, az) or matches security.endpoints."""
        try:
            got = origin(url)
        except ValueError as e:
            raise PolicyRefused(field, "security.endpoints", f"{_safe(url)}: {e}") from None
        scheme, host_port = got.split("://")
        host = host_port.rsplit(":", 1)[0]
        if scheme == "https" and host_port.endswith(":443") and any(
                fnmatch.fnmatchcase(host, p) for p in PROVIDER_HOSTS.get(kind, ())):
            return
        if any(fnmatch.fnmatchcase(got, _pattern_origin(p)) for p in self.endpoints):
            return
        raise PolicyRefused(field, "security.endpoints",
                            f"endpoint {got} is not a {kind} provider endpoint and matches none of "
                            f"{', '.join(self.endpoints) or '(no patterns)'}")

    def check_env(self, name: str, field: str) -> None:
        """Raises PolicyRefused unless the variable may be read through an indirection."""
        if not name.startswith(self.env_prefix):
            raise PolicyRefused(field, "security.env_prefix",
                                f"environment variable {name} does not start with {self.env_prefix}")
        if name.startswith(RESERVED_ENV):
            raise PolicyRefused(field, "security.env_prefix",
                                f"environment variable {name} is one of cloudmirror's own settings")

    def check_feed(self, feed: Any, field: str) -> None:
        """A mirror's event feed (config.EventFeed): the queue's endpoint and variables."""
        if feed.sqs:
            self.check_endpoint(feed.sqs, "sqs", f"{field}.sqs")
        elif feed.azure_queue:
            self._check_queue(feed.azure_queue, f"{field}.azure_queue")

    def _check_queue(self, url: str, field: str) -> None:
        try:
            loc = parse_location(url)
        except LocationError as e:
            raise InvalidInput(field, str(e)) from None
        if loc.endpoint is not None:
            self.check_endpoint(loc.endpoint, "az", field)
        if (var := loc.param("connection_string_env")) is not None:
            self.check_env(var, field)

    def check_mirror(self, mirror: Any, field: str = "") -> None:
        """Every location and feed of a mirror (config.Mirror). Raises PolicyRefused whose
        field is relative to `field` (e.g. `mirrors[0].targets[1].url`)."""
        at = f"{field}." if field else ""
        self.check_location(mirror.source_location, f"{at}source")
        for i, t in enumerate(mirror.targets):
            self.check_location(t.location, f"{at}targets[{i}].url")
        for i, f in enumerate(mirror.events):
            self.check_feed(f, f"{at}events[{i}]")


def derived_policy(locations: Iterable[Location], endpoints: Iterable[str]) -> SecurityPolicy:
    """The policy of a config file without a `security:` section: the default, plus the
    file:// locations and the endpoints the file names."""
    files = sorted({_location_text(loc) for loc in locations if loc.scheme == "file"})
    origins = set()
    for url in endpoints:
        try:
            origins.add(origin(url))
        except ValueError:
            continue  # refused when checked
    return SecurityPolicy(locations=[*DEFAULT_LOCATIONS, *files], endpoints=sorted(origins))
