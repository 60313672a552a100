"""Credentials and endpoints for az:// locations (see the module docstring of
cloudmirror.stores.azure.store for the rules), and the SDK client configuration. The Azure
queue feed (cloudmirror.events.azure_queue) resolves its credentials here too.

Resolution only reads the environment; it never sends a request. Problems are StoreErrors
naming what to fix (the environment variable, the parameter).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cloudmirror import metrics
from cloudmirror.location import Location, is_path_style_host
from cloudmirror.stores.base import AccessDenied, FatalError

KEY_ENV = "AZURE_STORAGE_KEY"
SAS_ENV = "AZURE_STORAGE_SAS_TOKEN"
CREDENTIALS = ("key", "sas", "default")
# Azurite's documented development account (UseDevelopmentStorage=true); not a secret.
_DEV_ACCOUNT = "devstoreaccount1"
_DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class Auth:
    """How to reach and authorize one storage account's blob service."""

    account: str
    account_url: str  # the account's blob endpoint, without a trailing '/'
    kind: str  # "key" | "sas" | "default"
    account_key: str | None = None
    sas_token: str | None = None  # without the leading '?'
    origin: str = ""  # where the credential came from, for messages

    @property
    def service_id(self) -> tuple[str, str, int | None]:
        return service_id(self.account_url, self.account)


def auth_cache_key(location: Location) -> tuple[Any, ...]:
    """Locations with equal keys share one client (same account, endpoint and credential)."""
    return (location.account, location.endpoint, location.param("connection_string_env"), location.param("credential"))


def resolve_auth(location: Location) -> Auth:
    """The endpoint and credential for an az:// location.

    Raises AccessDenied (code NoCredentials) naming the environment variable that is
    unset, FatalError for a malformed connection string or an unknown `credential`."""
    where = f"az://{location.account}/{location.bucket}"
    env = location.param("connection_string_env")
    if env:
        if location.param("credential") or location.endpoint:
            raise FatalError(f"{where}: InvalidLocation: connection_string_env excludes the endpoint and "
                             "credential parameters (the connection string carries both)", code="InvalidLocation")
        value = os.environ.get(env)
        if not value:
            raise AccessDenied(f"{where}: NoCredentials: environment variable {env} (named by "
                               f"connection_string_env) is not set or empty", code="NoCredentials")
        return _from_connection_string(location, value, f"connection string from ${env}")
    return credential_auth(location.account, endpoint_url(location), location.param("credential"), where)


def credential_auth(account: str, account_url: str, kind: str | None, where: str) -> Auth:
    """The Auth for credential `kind` at an account endpoint (of any service: blob, queue):
    ``key`` -- the account key from $AZURE_STORAGE_KEY; ``sas`` -- a SAS token from
    $AZURE_STORAGE_SAS_TOKEN; ``default`` (also None) -- DefaultAzureCredential. Only reads
    the environment. Raises AccessDenied (code NoCredentials) naming the variable that is
    unset, FatalError (code InvalidLocation) for an unknown kind. `where` starts messages."""
    kind = kind or "default"
    if kind not in CREDENTIALS:
        raise FatalError(f"{where}: InvalidLocation: credential={kind!r}; use one of {', '.join(CREDENTIALS)}",
                         code="InvalidLocation")
    if kind == "key":
        key = os.environ.get(KEY_ENV)
        if not key:
            raise AccessDenied(f"{where}: NoCredentials: credential=key needs the account key in environment "
                               f"variable {KEY_ENV}, which is not set", code="NoCredentials")
        return Auth(account, account_url, "key", account_key=key, origin=f"account key from ${KEY_ENV}")
    if kind == "sas":
        token = os.environ.get(SAS_ENV)
        if not token:
            raise AccessDenied(f"{where}: NoCredentials: credential=sas needs a SAS token in environment "
                               f"variable {SAS_ENV}, which is not set", code="NoCredentials")
        return Auth(account, account_url, "sas", sas_token=token.lstrip("?"), origin=f"SAS token from ${SAS_ENV}")
    return Auth(account, account_url, "default", origin="DefaultAzureCredential")


def endpoint_url(location: Location) -> str:
    """The account's blob endpoint: the `endpoint` parameter, else the public cloud's
    https://{account}.blob.core.windows.net. An endpoint of an emulator host without a path
    (an IP address or localhost, e.g. http://127.0.0.1:10000) gets /{account} appended
    (path-style addressing)."""
    ep = location.endpoint
    if not ep:
        return f"https://{location.account}.blob.core.windows.net"
    parts = urlsplit(ep)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FatalError(f"az://{location.account}/{location.bucket}: InvalidLocation: endpoint {ep!r} is not an "
                         "http(s) URL", code="InvalidLocation")
    url = ep.rstrip("/")
    if not parts.path.strip("/") and is_path_style_host(parts.hostname):
        url += f"/{location.account}"
    return url


def service_id(account_url: str, account: str) -> tuple[str, str, int | None]:
    """Identity of the blob service an account endpoint belongs to: (scheme, host, port),
    with a leading '{account}.' label removed, so every account of one cloud
    (x.blob.core.windows.net) or of one emulator (127.0.0.1:10000/x) compares equal."""
    parts = urlsplit(account_url)
    host = (parts.hostname or "").lower()
    prefix = account.lower() + "."
    if host.startswith(prefix):
        host = host[len(prefix):]
    return parts.scheme.lower(), host, parts.port


def parse_connection_string(value: str) -> dict[str, str]:
    """`Key=Value;...` -> {lower-case key: value} (values may contain '='). Raises ValueError
    naming the malformed segment by its position only: the text may be a secret (a variable
    that holds something else than a connection string), so no part of it is echoed."""
    out: dict[str, str] = {}
    parts = value.split(";")
    for n, part in enumerate(parts, 1):
        part = part.strip()
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"segment {n} of {len(parts)} is not Key=Value (it is not a connection string)")
        out[k.strip().lower()] = v.strip()
    return out


def _from_connection_string(location: Location, value: str, origin: str) -> Auth:
    where = f"az://{location.account}/{location.bucket}"
    try:
        cs = parse_connection_string(value)
    except ValueError as e:
        raise FatalError(f"{where}: InvalidConnectionString: {origin}: {e}", code="InvalidConnectionString") from None
    if cs.get("usedevelopmentstorage", "").lower() == "true":
        cs.setdefault("accountname", _DEV_ACCOUNT)
        cs.setdefault("accountkey", _DEV_KEY)
        cs.setdefault("blobendpoint", f"http://127.0.0.1:10000/{_DEV_ACCOUNT}")
    name = cs.get("accountname")
    if name and name != location.account:
        raise FatalError(f"{where}: AccountMismatch: {origin} is for account {name!r}, the location names "
                         f"{location.account!r}", code="AccountMismatch")
    account_url = cs.get("blobendpoint")
    if not account_url:
        if not name:
            raise FatalError(f"{where}: InvalidConnectionString: {origin} has neither BlobEndpoint nor AccountName",
                             code="InvalidConnectionString")
        proto = cs.get("defaultendpointsprotocol", "https")
        suffix = cs.get("endpointsuffix", "core.windows.net")
        account_url = f"{proto}://{name}.blob.{suffix}"
    account_url = account_url.rstrip("/")
    if cs.get("accountkey"):
        return Auth(location.account, account_url, "key", account_key=cs["accountkey"], origin=origin)
    if cs.get("sharedaccesssignature"):
        return Auth(location.account, account_url, "sas", sas_token=cs["sharedaccesssignature"].lstrip("?"),
                    origin=origin)
    raise FatalError(f"{where}: InvalidConnectionString: {origin} has neither AccountKey nor SharedAccessSignature",
                     code="InvalidConnectionString")


# ---------------------------------------------------------------- clients
SINGLE_PUT_MAX = 256 * 1024 * 1024  # our single-request upload limit (the SDK is told the same)


def client_kwargs(*, aio: bool = True) -> dict[str, Any]:
    """SDK configuration shared by every client: 3 retries with a short exponential
    backoff, bounded timeouts, every HTTP request counted."""
    if aio:
        from azure.storage.blob.aio import ExponentialRetry
    else:
        from azure.storage.blob import ExponentialRetry  # type: ignore[assignment]

    return {
        "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1),
        "connection_timeout": 10,
        "read_timeout": 120,
        "max_single_put_size": SINGLE_PUT_MAX,
        "raw_request_hook": count_request,
    }


def make_credential(auth: Auth, *, aio: bool) -> Any:
    """The SDK credential object for auth (the async or the sync identity flavour)."""
    if auth.kind == "key":
        from azure.core.credentials import AzureNamedKeyCredential

        return AzureNamedKeyCredential(auth.account, auth.account_key or "")
    if auth.kind == "sas":
        from azure.core.credentials import AzureSasCredential

        return AzureSasCredential(auth.sas_token or "")
    if aio:
        from azure.identity.aio import DefaultAzureCredential as AioDefault

        return AioDefault()
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


# ---------------------------------------------------------------- request counting
_COMP_OPS = {"list": "list", "tags": "tags", "block": "stage_block", "blocklist": "block_list",
             "metadata": "metadata", "properties": "set_http_headers", "tier": "set_tier",
             "copy": "abort_copy", "userdelegationkey": "get_user_delegation_key"}


def operation_name(method: str, url: str, headers: Any) -> str:
    """A short operation name for a Blob REST request (the metrics label)."""
    from urllib.parse import parse_qs

    q = parse_qs(urlsplit(url).query)
    comp = (q.get("comp") or [""])[0].lower()
    restype = (q.get("restype") or [""])[0].lower()
    method = method.upper()
    if comp == "list":
        return "list"
    if comp in ("tags", "metadata"):
        return ("get_" if method in ("GET", "HEAD") else "set_") + comp
    if comp == "blocklist":
        return "commit_block_list" if method == "PUT" else "get_block_list"
    if comp in _COMP_OPS:
        return _COMP_OPS[comp]
    if restype == "container":
        return {"PUT": "create_container", "DELETE": "delete_container"}.get(method, "get_container_properties")
    if comp:
        return f"{method.lower()}_{comp}"
    if method == "PUT":
        return "copy" if "x-ms-copy-source" in headers else "put"
    return {"GET": "get", "HEAD": "head", "DELETE": "delete"}.get(method, method.lower())


def count_request(request: Any) -> None:
    """raw_request_hook: one count per HTTP request sent (retries included)."""
    http = request.http_request
    metrics.storage_request("azure", operation_name(http.method, http.url, http.headers))
