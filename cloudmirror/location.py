"""Location URLs: where a bucket (optionally a prefix inside it) lives.

    s3://bucket[/prefix]?region=eu-west-1[&endpoint=http://127.0.0.1:4566]
    gs://bucket[/prefix][?endpoint=...]
    az://account/container[/prefix][?endpoint=...]
    file:///abs/path

Credentials never appear here: each SDK's standard chain supplies them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

SCHEMES = ("s3", "gs", "az", "file", "memory")
_ALLOWED_PARAMS = {
    "s3": {"region", "endpoint", "profile"},
    "gs": {"endpoint", "project"},
    "az": {"endpoint", "connection_string_env", "credential"},
    "file": {"mode"},  # the permission bits of the files written there (octal, default 0640)
    "memory": set(),
}


def is_path_style_host(host: str) -> bool:
    """Emulator hosts (an IP address or localhost) address accounts by path, not subdomain."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class LocationError(ValueError):
    """A location URL that cannot be used; the message says why."""


@dataclass(frozen=True)
class Location:
    """A parsed location URL. Immutable and hashable, so it can key caches."""

    scheme: str
    bucket: str  # bucket / container; for file:// the absolute root directory
    prefix: str = ""  # always "" or ending in "/"
    account: str = ""  # Azure storage account
    params: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def region(self) -> str | None:
        return self.param("region")

    @property
    def endpoint(self) -> str | None:
        return self.param("endpoint")

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    @property
    def container_id(self) -> str:
        """Identity of the bucket itself, without prefix (used to route events)."""
        if self.scheme == "az":
            return f"az://{self.account}/{self.bucket}"
        if self.scheme == "file":
            return f"file://{self.bucket}"
        return f"{self.scheme}://{self.bucket}"

    def full_key(self, rel_key: str) -> str:
        """The provider key for a key relative to this location's prefix."""
        return self.prefix + rel_key

    def rel_key(self, full_key: str) -> str | None:
        """The key relative to the prefix, or None when the key is outside it."""
        if not full_key.startswith(self.prefix):
            return None
        return full_key[len(self.prefix):]

    @property
    def display(self) -> str:
        """Short human form: the URL without endpoint/credential parameters."""
        base = str(Location(self.scheme, self.bucket, self.prefix, self.account))
        return f"{base} ({self.region})" if self.region else base

    def __str__(self) -> str:
        if self.scheme == "file":
            url = f"file://{self.bucket}" + ("/" + self.prefix.rstrip("/") if self.prefix else "")
        else:
            host = f"{self.account}/{self.bucket}" if self.scheme == "az" else self.bucket
            url = f"{self.scheme}://{host}"
            if self.prefix:
                url += "/" + self.prefix.rstrip("/")
        if self.params:
            url += "?" + "&".join(f"{k}={v}" for k, v in self.params)
        return url


def parse_location(url: str) -> Location:
    """Parse a location URL.

    Raises LocationError naming what is wrong (unknown scheme, missing bucket,
    unknown query parameter, relative file path).
    """
    if not isinstance(url, str) or "://" not in url:
        raise LocationError(f"not a location URL: {url!r} (expected e.g. s3://bucket/prefix?region=us-east-1)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise LocationError(f"unknown scheme {scheme!r} in {url!r}; use one of s3, gs, az, file")
    query = parse_qsl(parts.query, keep_blank_values=True)
    unknown = sorted({k for k, _ in query} - _ALLOWED_PARAMS[scheme])
    if unknown:
        raise LocationError(f"unknown parameter(s) {', '.join(unknown)} for {scheme}:// "
                            f"(allowed: {', '.join(sorted(_ALLOWED_PARAMS[scheme])) or 'none'})")
    for k, v in query:
        if not v:
            raise LocationError(f"parameter {k!r} is empty in {url!r}")
    params = tuple(sorted(query))
    if scheme == "file":
        path = unquote(parts.path)
        if parts.netloc:
            raise LocationError(f"file URLs take an absolute path: file:///abs/path, got {url!r}")
        if not path.startswith("/"):
            raise LocationError(f"file URL path must be absolute: {url!r}")
        if any(seg in (".", "..") for seg in path.split("/")):
            raise LocationError(f"file URL path must not contain . or .. segments: {url!r}")
        mode = dict(query).get("mode")
        if mode is not None and not re.fullmatch(r"0?[0-7]{3}", mode):
            raise LocationError(f"mode is octal permission bits such as 0640, got {mode!r}")
        return Location(scheme="file", bucket=path.rstrip("/") or "/", params=params)
    host = parts.netloc
    path = unquote(parts.path).lstrip("/")
    if scheme == "az":
        account = host
        container, _, prefix = path.partition("/")
        if not account or not container:
            raise LocationError(f"Azure locations are az://account/container[/prefix], got {url!r}")
        return Location(scheme, container, _norm_prefix(prefix), account=account, params=params)
    if not host:
        raise LocationError(f"missing bucket name in {url!r}")
    if scheme == "s3" and not (3 <= len(host) <= 63):
        raise LocationError(f"S3 bucket names are 3-63 characters: {host!r}")
    return Location(scheme, host, _norm_prefix(path), params=params)


def _norm_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return prefix + "/" if prefix else ""
