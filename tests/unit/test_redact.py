"""cloudmirror.redact: what it removes from text (environment secrets, connection-string
fields, SAS / presigned parameters, Authorization and bearer values, API keys, URL passwords,
PEM keys), what it leaves alone, how it follows the environment, and the log records it
rewrites. The parsers that used to echo a connection string echo nothing of it now."""

from __future__ import annotations

import logging
import secrets
from urllib.parse import quote

import pytest

from cloudmirror.redact import (
    MARK,
    RedactingFilter,
    env_secret_names,
    error_text,
    install_log_redaction,
    redact,
    redact_obj,
    register_secret,
    scrub_record,
)


@pytest.fixture
def secret(monkeypatch) -> str:
    """A recognisable secret in AWS_SECRET_ACCESS_KEY."""
    value = f"S3CR3T-{secrets.token_hex(16)}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", value)
    return value


# ------------------------------------------------------------ the environment
def test_a_secret_variable_value_is_redacted_wherever_it_appears(secret):
    text = f"az://a/c: InvalidConnectionString: malformed segment {secret!r} (and again: {secret})"
    out = redact(text)
    assert secret not in out and out.count(MARK) == 2
    assert out.startswith("az://a/c: InvalidConnectionString: malformed segment ")


def test_a_secret_cut_short_or_escaped_is_redacted_too(monkeypatch):
    value = "S3CR3T/" + secrets.token_hex(20) + "+x=="  # '/' and '+' change under URL quoting
    monkeypatch.setenv("SERVICE_PASSWORD", value)
    for shown in (value[:40], value[:13], quote(value, safe=""), value.replace("/", "\\/")):
        assert value[:12] not in redact(f"segment '{shown}' is malformed"), shown
    assert redact(f"x {value[:11]} y") == f"x {value[:11]} y"  # under 12 characters: not evidence of the secret


def test_a_cloudmirror_variable_holding_a_connection_string_is_a_secret(monkeypatch):
    key = secrets.token_urlsafe(32) + "=="
    conn = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};EndpointSuffix=core.windows.net"
    monkeypatch.setenv("CLOUDMIRROR_AZ_DR", conn)  # the name says nothing; the value does
    assert "CLOUDMIRROR_AZ_DR" in env_secret_names()
    assert redact(f"cannot use {conn}") == f"cannot use {MARK}"
    assert redact(f"the key {key} alone") == f"the key {MARK} alone"
    # another connection string is not taken for this one: only its key field goes
    other = "DefaultEndpointsProtocol=https;AccountName=other;AccountKey=abc"
    assert redact(other) == f"DefaultEndpointsProtocol=https;AccountName=other;AccountKey={MARK}"


def test_every_cloudmirror_variable_but_its_own_settings_is_a_credential(monkeypatch):
    opaque = secrets.token_hex(12)
    monkeypatch.setenv("CLOUDMIRROR_DR_ACCOUNT", opaque)  # what a connection_string_env may name
    monkeypatch.setenv("CLOUDMIRROR_CONFIG", "cloudmirror-prod.yaml")
    monkeypatch.setenv("CLOUDMIRROR_STATE_DIR", "/var/lib/cloudmirror")
    monkeypatch.setenv("CLOUDMIRROR_PG", "postgresql://db.internal:5432/ledger")  # no password in it
    names = env_secret_names()
    assert "CLOUDMIRROR_DR_ACCOUNT" in names
    assert not {"CLOUDMIRROR_CONFIG", "CLOUDMIRROR_STATE_DIR", "CLOUDMIRROR_PG"} & set(names)
    text = "cloudmirror-prod.yaml /var/lib/cloudmirror postgresql://db.internal:5432/ledger"
    assert redact(f"{text} {opaque}") == f"{text} {MARK}"


def test_short_numeric_and_file_valued_variables_are_left_alone(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")  # 7 characters: the test suite's own
    monkeypatch.setenv("CM_TOKEN_TTL", "86400000")
    monkeypatch.setenv("CLOUDMIRROR_REPORT_KEY_FILE", "/etc/cloudmirror/report.key")
    text = "testing 86400000: key file /etc/cloudmirror/report.key is group-readable"
    assert redact(text) == text
    assert "CLOUDMIRROR_REPORT_KEY_FILE" not in env_secret_names()


def test_a_changed_value_is_followed_even_when_the_environment_keeps_its_size(monkeypatch):
    first, second = (f"S3CR3T-{secrets.token_hex(16)}" for _ in range(2))
    monkeypatch.setenv("AWS_SESSION_TOKEN", first)
    assert redact(first) == MARK
    monkeypatch.setenv("AWS_SESSION_TOKEN", second)  # same name, same size of os.environ
    assert redact(second) == MARK and redact(first) == first
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    assert redact(second) == second


def test_a_registered_secret_is_redacted():
    value = f"file-secret-{secrets.token_hex(8)}"
    register_secret(value)
    assert redact(f"key {value}.") == f"key {MARK}."


# ------------------------------------------------------------ fixed patterns
@pytest.mark.parametrize(("text", "gone", "kept"), [
    ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=Zm9vYmFy+/x==;BlobEndpoint=http://h",
     "Zm9vYmFy", "AccountName=a;AccountKey=[redacted];BlobEndpoint=http://h"),
    ("BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2022&ss=b&sig=AbC%2Bd",
     "AbC", "SharedAccessSignature=[redacted]"),
    ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=QmFy0123==",
     "QmFy0123", "SharedAccessKeyName=root;SharedAccessKey=[redacted]"),
    ("GET https://a.blob.core.windows.net/c/k?sv=2022-11-02&se=2030-01-01&sp=r&sig=q0N3%2FfakeSig%3D: 403",
     "q0N3", "sp=r&sig=[redacted]: 403"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20240101"
     "&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE&X-Amz-Signature=0123456789abcdef", "AKIAEXAMPLE",
     "X-Amz-Credential=[redacted]&X-Amz-Security-Token=[redacted]&X-Amz-Signature=[redacted]"),
    ("https://storage.googleapis.com/b/k?X-Goog-Credential=sa%40p.iam&X-Goog-Signature=abcdef0123",
     "abcdef0123", "X-Goog-Signature=[redacted]"),
    ("https://login.example.com/cb?state=1&code=4/0AbCdEf&token=eyJhbGciOi", "0AbCdEf", "state=1&code=[redacted]"),
    ("{'Authorization': 'AWS4-HMAC-SHA256 Credential=AKIAEX/2024, Signature=deadbeef', 'Host': 'h'}",
     "deadbeef", "{'Authorization': '[redacted]', 'Host': 'h'}"),
    ("Authorization: SharedKey acct:c2VjcmV0c2lnbmF0dXJl", "c2VjcmV0", "Authorization: [redacted]"),
    ("sent Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig to the API", "eyJhbGci", "sent Bearer [redacted] to the API"),
    ("key cm_AbCdEfG1234567890abcdefghijklmnopqrstuvwxy is revoked", "1234567890", "key cm_AbCdEfG[redacted]"),
    ("postgresql+psycopg://cm:hunter2-pw@db:5432/ledger", "hunter2", "postgresql+psycopg://cm:[redacted]@db:5432"),
    ("clone https://ghp_0123456789abcdefABCDEF@github.com/x", "ghp_0123", "https://[redacted]@github.com/x"),
    ('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEv\\n-----END PRIVATE '
     'KEY-----\\n", "client_email": "a@p.iam"}', "MIIEv", '"client_email": "a@p.iam"'),
    ("key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nafter",
     "MIIEpAIBAAKCAQEA", "\nafter"),
    ("cut: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg", "MHcCAQEEIBkg", "cut: -----BEGIN PRIVATE KEY-----"),
    ("Auth(account='a', kind='key', account_key='Zm9vYmFyYmF6', sas_token=None)", "Zm9vYmFyYmF6",
     "account_key='[redacted]', sas_token=None"),
])
def test_fixed_patterns(text, gone, kept):
    out = redact(text)
    assert gone not in out, out
    assert kept in out, out


@pytest.mark.parametrize("text", [
    "replication 12 of photos/a.jpg to s3://dr?region=eu-west-1&endpoint=http://127.0.0.1:4566: attempt 2 "
    "failed (s3://dr/a.jpg: SlowDown: Please reduce your request rate); retry in 0.40s",
    "replication 7 stopped: lease token=5 is stale",
    "az://acct/c?connection_string_env=CLOUDMIRROR_AZ_DR: NoCredentials: environment variable "
    "CLOUDMIRROR_AZ_DR (named by connection_string_env) is not set or empty",
    "the key prefix cm_AbCdEfG names key 3; bearer API keys have roles",
    "NoSuchKey: 'photos/2024/signature=ok.txt' is gone",
    "exit code 2, error code=InvalidLocation",
])
def test_ordinary_text_is_left_alone(text, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert redact(text) == text


def test_redact_takes_none_and_json_values(secret):
    assert redact(None) is None
    value = {"rows": [{"target": "t", "error": f"boom {secret}"}], "n": 3, "ok": None, "t": (secret,)}
    out = redact_obj(value)
    assert out == {"rows": [{"target": "t", "error": f"boom {MARK}"}], "n": 3, "ok": None, "t": (MARK,)}
    assert value["rows"][0]["error"].endswith(secret)  # a copy: the caller's value is not changed


def test_error_text_keeps_the_type_and_cuts_after_redacting(secret):
    e = ValueError(f"bad {secret} " + "x" * 3000)
    out = error_text(e, 100)
    assert out.startswith(f"ValueError: bad {MARK} x") and len(out) == 100


# ------------------------------------------------------------ the parsers that echoed
def test_a_non_connection_string_is_not_echoed_by_the_blob_parser(secret):
    from cloudmirror.location import parse_location
    from cloudmirror.stores.azure.auth import resolve_auth
    from cloudmirror.stores.base import FatalError

    with pytest.raises(FatalError) as info:
        resolve_auth(parse_location("az://acct/c?connection_string_env=AWS_SECRET_ACCESS_KEY"))
    assert info.value.code == "InvalidConnectionString"
    assert "segment 1 of 1 is not Key=Value" in str(info.value)
    assert secret[:8] not in str(info.value)


def test_a_non_connection_string_is_not_echoed_by_the_queue_feed(monkeypatch):
    from cloudmirror.events.azure_queue import open_queue_client

    value = f"S3CR3T-{secrets.token_hex(16)}"
    monkeypatch.setenv("SOME_VAR", value)  # a name that says nothing: only the parser can leak it
    with pytest.raises(ValueError, match="SOME_VAR: segment 1 of 1 is not Key=Value") as info:
        open_queue_client("az://acct/q?connection_string_env=SOME_VAR")
    assert value[:8] not in str(info.value)


# ------------------------------------------------------------ log records
def test_log_records_are_redacted_when_they_are_made(secret, caplog):
    install_log_redaction()
    log = logging.getLogger("cloudmirror.test_redact")
    with caplog.at_level(logging.DEBUG):
        log.debug("plain %s and %d", "text", 3)
        log.warning("copy failed: %s", RuntimeError(f"denied for {secret}"))
        try:
            raise ValueError(f"connection string {secret!r}")
        except ValueError:
            log.exception("job failed")
        logging.getLogger("botocore.endpoint").debug("headers %r", {"Authorization": f"AWS4 Signature={secret}"})
    assert secret not in caplog.text
    plain, warned, failed, headers = caplog.records
    assert plain.args == ("text", 3)  # nothing to hide: the record is untouched
    assert warned.getMessage() == f"copy failed: denied for {MARK}" and warned.args == ()
    assert failed.exc_info is None and MARK in failed.exc_text and "ValueError" in failed.exc_text
    assert secret not in headers.getMessage()


def test_the_filter_redacts_records_made_elsewhere(secret):
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "bad %s %s", (secret, 7), None)
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == f"bad {MARK} 7"
    broken = logging.LogRecord("x", logging.ERROR, __file__, 1, "bad %d", (secret,), None)
    scrub_record(broken)  # a format that fails: the parts a handler prints are redacted
    assert secret not in str(broken.msg) and secret not in str(broken.args)


def test_the_cli_log_setup_installs_the_filter():
    from cloudmirror.cli.serve import _logging

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    for h in before:
        root.removeHandler(h)
    try:
        _logging(False)
        [handler] = root.handlers
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
        assert getattr(logging.getLogRecordFactory(), "_cm_redacting", False)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in before:
            root.addHandler(h)
        root.setLevel(level)
