"""The security policy (cloudmirror.policy): which locations, endpoints and environment
variables a mirror may name, checked at config load."""

from __future__ import annotations

import pytest

from cloudmirror.config import ConfigError, load_config, validate_config
from cloudmirror.location import parse_location
from cloudmirror.policy import PolicyRefused, SecurityPolicy


def refused(policy: SecurityPolicy, url: str) -> PolicyRefused:
    with pytest.raises(PolicyRefused) as e:
        policy.check_location(parse_location(url), "targets[0].url")
    return e.value


DEFAULT = SecurityPolicy()


@pytest.mark.parametrize("url", [
    "s3://photos-euw1?region=eu-west-1",
    "s3://photos?endpoint=https://s3.eu-west-1.amazonaws.com",
    "s3://photos?endpoint=https://bucket.vpce-1a2b.s3.us-east-1.vpce.amazonaws.com",
    "gs://dr?endpoint=https://storage.googleapis.com",
    "az://acct/c?endpoint=https://acct.blob.core.windows.net",
    "az://acct/c?credential=sas&endpoint=https://acct.blob.core.usgovcloudapi.net",
    "az://acct/c?connection_string_env=CLOUDMIRROR_PROD_CONN",
])
def test_the_default_allows_the_providers_own_endpoints(url):
    DEFAULT.check_location(parse_location(url), "source")


@pytest.mark.parametrize("url, rule, says", [
    ("file:///etc/cron.d", "security.locations", "file:///etc/cron.d matches none of s3://*, gs://*, az://*"),
    ("file:///", "security.locations", "file:///"),
    ("memory://x", "CLOUDMIRROR_ALLOW_MEMORY", "for tests"),
    ("s3://photos?endpoint=http://169.254.169.254/latest", "security.endpoints", "http://169.254.169.254:80 is not"),
    ("s3://photos?endpoint=https://evil.example.com", "security.endpoints", "https://evil.example.com:443"),
    ("s3://photos?endpoint=http://s3.amazonaws.com", "security.endpoints", "not a s3 provider"),  # plain HTTP
    ("s3://photos?endpoint=https://s3.amazonaws.com:8443", "security.endpoints", ":8443"),
    ("s3://photos?endpoint=https://storage.googleapis.com", "security.endpoints", "not a s3 provider"),
    ("s3://photos?endpoint=https://amazonaws.com.evil.io", "security.endpoints", "evil.io"),
    ("s3://photos?endpoint=http://user:pw@127.0.0.1:4566", "security.endpoints", "user or password"),
    ("az://acct/c?credential=sas&endpoint=http://127.0.0.1:9", "security.endpoints", "127.0.0.1:9"),
    ("az://acct/c?connection_string_env=AWS_SECRET_ACCESS_KEY", "security.env_prefix", "does not start with"),
    ("az://acct/c?connection_string_env=CLOUDMIRROR_REPORT_KEY", "security.env_prefix", "cloudmirror's own"),
])
def test_the_default_refuses_and_names_the_rule(monkeypatch, url, rule, says):
    monkeypatch.delenv("CLOUDMIRROR_ALLOW_MEMORY")
    e = refused(DEFAULT, url)
    assert e.rule == rule and e.field == "targets[0].url" and says in e.reason, e.reason
    assert "pw" not in str(e)  # a password in an endpoint is never repeated


def test_patterns_match_the_location_and_what_is_under_it_never_a_sibling():
    policy = SecurityPolicy(locations=["s3://photos-*", "file:///srv/replicas", "az://drstore/*"],
                            endpoints=["http://127.0.0.1:4566", "http://localhost:*"])
    for ok in ("s3://photos-euw1", "s3://photos-x/deep/prefix", "file:///srv/replicas", "file:///srv/replicas/a/b",
               "az://drstore/c", "s3://photos-x?endpoint=http://127.0.0.1:4566",
               "s3://photos-x?endpoint=http://localhost:9000"):
        policy.check_location(parse_location(ok), "source")
    for bad, rule in [("s3://videos", "security.locations"), ("file:///srv/replicas-other", "security.locations"),
                      ("file:///srv", "security.locations"), ("gs://photos-a", "security.locations"),
                      ("az://other/c", "security.locations"),
                      ("s3://photos-x?endpoint=http://127.0.0.1:4567", "security.endpoints")]:
        assert refused(policy, bad).rule == rule, bad


def test_file_paths_with_dot_segments_are_not_locations():
    with pytest.raises(ValueError, match=r"\.\."):
        parse_location("file:///srv/replicas/../../etc")


def test_without_a_security_section_the_file_grants_what_it_names_and_no_more():
    cfg = validate_config({"mirrors": [{
        "name": "m", "source": "file:///srv/data", "targets": ["s3://bkt?endpoint=http://127.0.0.1:4566"],
        "events": [{"poll": "30s"}]}]})
    assert cfg.security.locations == ["s3://*", "gs://*", "az://*", "file:///srv/data"]
    assert cfg.security.endpoints == ["http://127.0.0.1:4566"]
    cfg.check_policy()
    # kept through a dump (how the API validates a new mirror): mirrors added later never widen it
    again = validate_config({**cfg.model_dump(mode="json"), "mirrors": [
        {"name": "n", "source": "file:///etc", "targets": ["s3://bkt?endpoint=http://127.0.0.1:9"]}]})
    assert again.security == cfg.security
    with pytest.raises(ConfigError, match=r"mirrors\[0\]\.source: refused by the security policy"):
        again.check_policy()


def test_config_load_checks_every_mirror_and_names_field_and_rule(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("security: {locations: ['s3://prod-*'], endpoints: []}\n"
                    "mirrors:\n"
                    "  - {name: a, source: s3://prod-a, targets: [s3://prod-b]}\n"
                    "  - name: b\n"
                    "    source: s3://prod-c\n"
                    "    targets: [s3://prod-d]\n"
                    "    events: [{sqs: 'http://127.0.0.1:4566/000000000000/q'}]\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith("mirrors[1].events[0].sqs: refused by the security policy (security.endpoints)")
    path.write_text("mirrors: [{name: a, source: s3://prod-a, targets: "
                    "['az://acct/c?connection_string_env=AWS_SECRET_ACCESS_KEY']}]\n")
    with pytest.raises(ConfigError, match=r"mirrors\[0\]\.targets\[0\]\.url: .*security\.env_prefix"):
        load_config(path)


@pytest.mark.parametrize("bad, says", [
    ({"locations": ["photos"]}, "scheme://bucket"),
    ({"endpoints": ["127.0.0.1:4566"]}, "http(s)://HOST"),
    ({"endpoints": ["http://h/path"]}, "http(s)://HOST"),
    ({"env_prefix": "BAD-PREFIX"}, "env_prefix"),
    ({"allow": []}, "security.allow"),
])
def test_a_bad_security_section_names_the_field(bad, says):
    with pytest.raises(ConfigError) as e:
        validate_config({"security": bad})
    assert str(e.value).startswith("security.") and says in str(e.value), str(e.value)
