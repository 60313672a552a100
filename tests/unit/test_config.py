"""Config loading: good files load, bad ones are rejected with the field named."""

from __future__ import annotations

import pytest

from cloudmirror.config import ConfigError, load_config, parse_duration, validate_config
from cloudmirror.location import LocationError, parse_location

GOOD = """
ledger: sqlite:///cm.db
api: {listen: 127.0.0.1:8080}
mirrors:
  - name: photos
    source: s3://photos-use1/in?region=us-east-1&endpoint=http://127.0.0.1:5000
    targets:
      - s3://photos-euw1?region=eu-west-1
      - url: s3://photos-cold?region=eu-west-1
        storage_class: GLACIER_IR
        sse: aws:kms
        kms_key_id: alias/dr
    events:
      - sqs: https://sqs.us-east-1.amazonaws.com/123456789012/photos-events
    filter: {prefix: "", exclude_prefixes: [tmp/], suffixes: []}
    deletes: replicate
    rpo_objective: 15m
groups:
  - name: billing-dr
    mirrors: [photos]
"""


def test_good_config_loads(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    cfg = load_config(p)
    m = cfg.mirror("photos")
    assert m.rpo_objective == 900.0
    assert m.source_location.prefix == "in/" and m.source_location.endpoint == "http://127.0.0.1:5000"
    assert m.targets[1].storage_class == "GLACIER_IR" and m.targets[1].location.region == "eu-west-1"
    assert m.events[0].kind == "sqs"


@pytest.mark.parametrize("patch,field", [
    ({"ledger": "mysql://x"}, "ledger"),
    ({"mirrors": [{"name": "m", "source": "ftp://x", "targets": ["s3://abc"]}]}, "mirrors[0].source"),
    ({"mirrors": [{"name": "m", "source": "s3://abc", "targets": ["s3://abd", "gs://"]}]}, "mirrors[0].targets[1].url"),
    ({"mirrors": [{"name": "m", "source": "s3://abc", "targets": []}]}, "mirrors[0].targets"),
    ({"mirrors": [{"name": "m", "source": "s3://abc", "targets": ["s3://abc/x"]}]}, "mirrors[0]"),
    ({"mirrors": [{"name": "m", "source": "s3://abc", "targets": ["s3://abd"], "rpo_objective": "soon"}]},
     "mirrors[0].rpo_objective"),
    ({"mirrors": [{"name": "m", "source": "s3://abc", "targets": ["s3://abd"], "deletes": "maybe"}]},
     "mirrors[0].deletes"),
    ({"mirrors": [{"name": "m", "source": "s3://abc", "targets": ["s3://abd"], "events": [{"sqs": "q"}]}]},
     "mirrors[0].events[0]"),
    ({"mirrors": [{"name": "m", "source": "s3://abc", "targets": ["s3://abd"], "colour": 1}]}, "mirrors[0].colour"),
    ({"mirrors": [{"name": "m", "source": "gs://abc", "targets": ["s3://abd"], "events": [{"pubsub": "my-sub"}]}]},
     "mirrors[0].events[0]"),
    ({"mirrors": [{"name": "m", "source": "az://a/c", "targets": ["s3://abd"], "events": [{"azure_queue": "s3://q"}]}]},
     "mirrors[0].events[0]"),
    ({"mirrors": [{"name": "m", "source": "file:///d", "targets": ["s3://abd"], "events": [{"poll": "0s"}]}]},
     "mirrors[0].events[0].poll"),
    ({"mirrors": [{"name": "m", "source": "s3://abc", "targets": ["s3://abd"],
                   "events": [{"poll": "1m", "sqs": "https://q"}]}]}, "mirrors[0].events[0]"),
    ({"groups": [{"name": "g", "mirrors": ["nope"]}]}, "(top level)"),
    ({"api": {"listen": "8080"}}, "api.listen"),
])
def test_bad_config_names_the_field(patch, field):
    with pytest.raises(ConfigError) as e:
        validate_config(patch)
    assert str(e.value).startswith(field + ":"), str(e.value)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("mirrors: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_locations_and_durations():
    loc = parse_location("az://acct/cont/a/b?endpoint=http://x")
    assert (loc.account, loc.bucket, loc.prefix, loc.container_id) == ("acct", "cont", "a/b/", "az://acct/cont")
    assert parse_location("file:///srv/nas/").bucket == "/srv/nas"
    assert parse_location("s3://bucket/p?region=us-east-1").full_key("k") == "p/k"
    for bad in ("s3://b?colour=red", "file://relative/x", "az://acct", "nope"):
        with pytest.raises(LocationError):
            parse_location(bad)
    cases = {"250ms": 0.25, "6h": 21600.0, 3: 3.0, "1.5m": 90.0}
    parsed = {text: parse_duration(text) for text in cases}
    assert parsed == cases


def test_gcs_azure_and_file_feeds():
    cfg = validate_config({"mirrors": [
        {"name": "g", "source": "gs://photos", "targets": ["az://acct/dr"],
         "events": [{"pubsub": "projects/p/subscriptions/photos-events", "max_outstanding": 50}]},
        {"name": "a", "source": "az://acct/photos", "targets": ["file:///mnt/nas/photos"],
         "events": [{"azure_queue": "az://acct/photos-events?connection_string_env=CONN"}]},
        {"name": "f", "source": "file:///mnt/nas/in", "targets": ["gs://dr"]},
        {"name": "p", "source": "s3://no-notifications", "targets": ["gs://dr2"], "events": [{"poll": "5m"}]},
    ]})
    g, a, f, p = cfg.mirrors
    assert (g.events[0].kind, g.events[0].max_outstanding) == ("pubsub", 50)
    assert a.events[0].kind == "azure_queue" and a.events[0].address.startswith("az://acct/photos-events")
    # a disk has no notifications: it is polled (every minute unless told otherwise)
    assert [(e.kind, e.poll) for e in f.events] == [("poll", 60.0)]
    assert p.events[0].poll == 300.0 and p.events[0].address == "poll every 300s"
