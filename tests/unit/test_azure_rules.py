"""Azure store rules that need no emulator: metadata key encoding, block bodies and
re-chunking, credential and endpoint resolution (failures raised before any request),
request names for the metrics, and error classification. (The behaviour on Azurite is in
tests/stores/test_azure_store.py.)"""

from __future__ import annotations

import asyncio

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

from cloudmirror.location import parse_location
from cloudmirror.stores.azure import AzureStore
from cloudmirror.stores.azure.auth import operation_name, resolve_auth
from cloudmirror.stores.azure.errors import classify_error
from cloudmirror.stores.azure.mapping import decode_meta_key, encode_meta_key
from cloudmirror.stores.base import (
    AccessDenied,
    BucketNotFound,
    ChecksumMismatch,
    FatalError,
    NotFound,
    PreconditionFailed,
    RetryableError,
)

# ---------------------------------------------------------------- metadata keys
KEYS = {"cloudmirror-replica": "cloudmirror_x2D_replica", "a.b": "a_x2E_b", "x_y": "x_x5F_y",
        "日本": "_xE6__x97__xA5__xE6__x9C__xAC_", "2fa": "_x32_fa", "Owner": "owner"}


@pytest.mark.parametrize(("key", "encoded"), KEYS.items())
def test_metadata_key_encoding_is_a_csharp_identifier_and_reversible(key, encoded):
    assert encode_meta_key(key) == encoded
    assert encoded.isidentifier() and encoded.isascii()
    assert decode_meta_key(encoded) == key.lower()
    assert decode_meta_key(encoded.lower()) == key.lower()  # hex digits in either case


def test_names_written_by_other_tools_read_back_lower_cased():
    assert decode_meta_key("Plain_Name") == "plain_name"
    assert decode_meta_key("bad_xZZ_escape") == "bad_xzz_escape"
    assert decode_meta_key("_xFF_") == "_xff_"  # not UTF-8: left as it is


# ---------------------------------------------------------------- blocks
async def test_block_body_rewinds_for_retries():
    from cloudmirror.stores.azure.transfer import BlockBody
    from cloudmirror.stores.streams import rechunk

    data = bytes(range(256)) * 1000
    body = BlockBody(data)
    first = [p async for p in body]
    assert b"".join(first) == data and max(map(len, first)) == BlockBody.PIECE and body.tell() == len(data)
    assert body.seek(10) == 10 and body.read(5) == data[10:15]
    body.seek(0)
    assert b"".join([p async for p in body]) == data  # what a retry sends again

    whole = b"y" * 1000

    async def chunks():
        yield whole
        yield b"abc"

    blocks = [b async for b in rechunk([b"12", b"34"], chunks(), 4)]
    assert blocks[0] == b"1234" and blocks[-1] == b"abc" and b"".join(blocks[1:-1]) == whole
    same = [b async for b in rechunk([whole], None, 1000)]
    assert same[0] is whole  # a chunk of exactly one block is not copied


# ---------------------------------------------------------------- authentication
@pytest.mark.parametrize(("url", "env_var", "error"), [
    ("az://acct/c?connection_string_env=CM_TEST_UNSET_VAR", "CM_TEST_UNSET_VAR", AccessDenied),
    ("az://acct/c?credential=key", "AZURE_STORAGE_KEY", AccessDenied),
    ("az://acct/c?credential=sas", "AZURE_STORAGE_SAS_TOKEN", AccessDenied),
])
async def test_missing_credentials_name_the_environment_variable(monkeypatch, url, env_var, error):
    for var in ("CM_TEST_UNSET_VAR", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    store = AzureStore(parse_location(url))
    with pytest.raises(error) as e:
        await store.head("k")
    assert env_var in str(e.value) and e.value.code == "NoCredentials"
    await store.close()


@pytest.mark.parametrize(("url", "env", "code"), [
    ("az://acct/c?credential=password", {}, "InvalidLocation"),
    ("az://acct/c?connection_string_env=CM_TEST_CS", {"CM_TEST_CS": "AccountName=other;AccountKey=a2V5"},
     "AccountMismatch"),
    ("az://acct/c?connection_string_env=CM_TEST_CS", {"CM_TEST_CS": "garbage"}, "InvalidConnectionString"),
    ("az://acct/c?connection_string_env=CM_TEST_CS", {"CM_TEST_CS": "AccountName=acct"}, "InvalidConnectionString"),
])
async def test_bad_configuration_is_a_clear_fatal_error(monkeypatch, url, env, code):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    store = AzureStore(parse_location(url))
    with pytest.raises(FatalError) as e:
        await store.put("k", b"x")
    assert e.value.code == code
    await store.close()


def test_default_endpoint_and_credential(monkeypatch):
    auth = resolve_auth(parse_location("az://acct/c"))
    assert (auth.account_url, auth.kind) == ("https://acct.blob.core.windows.net", "default")
    monkeypatch.setenv("AZURE_STORAGE_KEY", "a2V5")
    auth = resolve_auth(parse_location("az://acct/c?credential=key&endpoint=http://127.0.0.1:10000"))
    assert (auth.account_url, auth.kind, auth.account_key) == ("http://127.0.0.1:10000/acct", "key", "a2V5")
    monkeypatch.setenv("CM_TEST_DEV", "UseDevelopmentStorage=true")
    dev = resolve_auth(parse_location("az://devstoreaccount1/c?connection_string_env=CM_TEST_DEV"))
    assert dev.account_url == "http://127.0.0.1:10000/devstoreaccount1" and dev.kind == "key"


# ---------------------------------------------------------------- request names and errors
@pytest.mark.parametrize(("method", "url", "headers", "op"), [
    ("GET", "http://h/a/c?restype=container&comp=list&maxresults=2", {}, "list"),
    ("PUT", "http://h/a/c/k?comp=block&blockid=x", {}, "stage_block"),
    ("PUT", "http://h/a/c/k?comp=blocklist", {}, "commit_block_list"),
    ("PUT", "http://h/a/c/k", {"X-MS-Copy-Source": "http://s"}, "copy"),
    ("PUT", "http://h/a/c/k", {}, "put"),
    ("HEAD", "http://h/a/c/k", {}, "head"),
    ("GET", "http://h/a/c/k?comp=tags", {}, "get_tags"),
    ("PUT", "http://h/a/c?restype=container", {}, "create_container"),
])
def test_operation_names(method, url, headers, op):
    from azure.core.utils import CaseInsensitiveDict

    assert operation_name(method, url, CaseInsensitiveDict(headers)) == op


class _Response:
    def __init__(self, status: int, code: str | None):
        self.status_code, self.reason, self.request = status, "reason", None
        self.headers = {"x-ms-error-code": code} if code else {}

    def text(self, *a, **k) -> str:
        return ""

    def body(self) -> bytes:
        return b""


def _http_error(status: int, code: str | None) -> HttpResponseError:
    e = HttpResponseError(message="The thing happened.\nRequestId:1", response=_Response(status, code))
    e.error_code = code
    return e


@pytest.mark.parametrize(("exc", "expected"), [
    (_http_error(404, "BlobNotFound"), NotFound),
    (_http_error(404, "ContainerNotFound"), BucketNotFound),
    (_http_error(403, "AuthenticationFailed"), AccessDenied),
    (_http_error(403, "CannotVerifyCopySource"), AccessDenied),
    (_http_error(404, "CannotVerifyCopySource"), NotFound),
    (_http_error(412, "ConditionNotMet"), PreconditionFailed),
    (_http_error(412, "SourceConditionNotMet"), PreconditionFailed),
    (_http_error(400, "Md5Mismatch"), ChecksumMismatch),
    (_http_error(503, "ServerBusy"), RetryableError),
    (_http_error(500, "InternalError"), RetryableError),
    (_http_error(429, None), RetryableError),
    (_http_error(400, "InvalidMetadata"), FatalError),
    (ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token"), AccessDenied),
    (ServiceRequestError("connection refused"), RetryableError),
    (asyncio.TimeoutError(), RetryableError),
    (ValueError("odd"), FatalError),
])
def test_error_classification(exc, expected):
    err = classify_error(exc, "acct", "cont", "key")
    assert type(err) is expected
    assert "az://acct/cont/key" in str(err) and "\n" not in str(err)
    if expected is BucketNotFound:
        assert err.code == "NoSuchBucket" and "cont" in str(err)
