"""S3 notification parsing (direct, SNS enveloped/raw, EventBridge) and event planning."""

from __future__ import annotations

import json

import pytest

from cloudmirror.config import validate_config
from cloudmirror.events.base import FeedMessage, MalformedEvent, ObjectEvent
from cloudmirror.events.s3_events import parse_body
from cloudmirror.replication.planner import Router, plan_messages, version_token


def s3_record(key="a+b%2F%C3%BC.txt", name="ObjectCreated:Put", bucket="src", **obj):
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2026-11-24T10:00:00.123456",
            "eventName": name,
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 3, "eTag": "abc", **obj}}}


def test_direct_record_decodes_form_encoded_keys():
    [ev] = parse_body(json.dumps({"Records": [s3_record()]}))
    assert (ev.container_id, ev.key, ev.op, ev.etag, ev.size) == ("s3://src", "a b/ü.txt", "put", "abc", 3)
    assert ev.event_time.tzinfo is not None and ev.event_time.microsecond == 123456


def test_sns_envelope_and_raw_delivery_and_eventbridge():
    inner = json.dumps({"Records": [s3_record(name="ObjectRemoved:DeleteMarkerCreated", versionId="v1",
                                              sequencer="0A")]})
    [ev] = parse_body(json.dumps({"Type": "Notification", "TopicArn": "arn:aws:sns:x", "Message": inner}))
    assert (ev.op, ev.version_id, ev.sequencer) == ("delete", "v1", "0A")
    assert parse_body(inner)[0].op == "delete"  # raw SNS delivery is the S3 JSON itself
    eb = {"version": "0", "source": "aws.s3", "detail-type": "Object Created", "time": "2026-11-24T10:00:00Z",
          "detail": {"bucket": {"name": "src"}, "object": {"key": "a+b c", "size": 5, "etag": "e", "sequencer": "01"}}}
    [ev] = parse_body(json.dumps(eb), eventbridge_keys_encoded=False)
    assert (ev.key, ev.op, ev.sequencer) == ("a+b c", "put", "01")  # moto: plain keys
    eb["detail"]["object"]["key"] = "a%2Bb%20c"
    assert parse_body(json.dumps(eb))[0].key == "a+b c"  # LocalStack / encoded keys


def test_test_event_carries_nothing_and_other_kinds_are_ignored():
    assert parse_body(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "src"})) == []
    assert parse_body(json.dumps({"Records": [s3_record(name="ObjectRestore:Completed")]})) == []


@pytest.mark.parametrize("body,reason", [
    ("not json", "not JSON"),
    ("[1,2]", "expected a JSON object"),
    ('{"hello": 1}', "no Records"),
    ('{"Records": {}}', "not a list"),
    ('{"Records": [{"eventName": "ObjectCreated:Put"}]}', "lacks s3.bucket.name"),
    ('{"Type": "Notification", "Message": "{oops"}', "SNS Message is not JSON"),
])
def test_malformed_bodies_say_why(body, reason):
    with pytest.raises(MalformedEvent, match=reason):
        parse_body(body)


CFG = validate_config({"mirrors": [
    {"name": "m", "source": "s3://src/data?region=us-east-1", "targets": ["s3://dst?region=eu-west-1", "s3://dst2"],
     "filter": {"exclude_prefixes": ["tmp/"]}, "deletes": "ignore"}]})


def msg(*records, body=None):
    b = body or json.dumps({"Records": list(records)})
    fm = FeedMessage(message_id="1", body=b, receipt="r")
    try:
        fm.events = parse_body(b)
    except MalformedEvent as e:
        fm.error = str(e)
    return fm


def test_planning_routes_filters_and_dead_letters():
    router = Router(CFG.mirrors)
    batch = plan_messages(router, "q", [
        msg(s3_record(key="data/x.txt")),
        msg(s3_record(key="data/tmp/y")),
        msg(s3_record(key="data/z", name="ObjectRemoved:Delete")),
        msg(s3_record(key="outside-prefix")),
        msg(s3_record(bucket="nobody")),
        msg(body="{bad"),
    ])
    plans = {v.key: [(t.status, t.detail) for t in v.targets] for v in batch.versions}
    assert plans == {"x.txt": [("pending", None)] * 2, "tmp/y": [("skipped", "filtered out")] * 2,
                     "z": [("skipped", "deletes: ignore")] * 2}
    assert batch.ignored == 2  # outside the prefix, and the unknown bucket's event
    assert sorted(d.reason.split(":")[0] for d in batch.dead) == ["body is not JSON", "no mirror reads from s3"]


def test_version_token_distinguishes_writes_not_deliveries():
    a, b = parse_body(json.dumps({"Records": [s3_record(), s3_record()]}))
    assert version_token(a) == version_token(b)
    c = parse_body(json.dumps({"Records": [dict(s3_record(), eventTime="2026-11-24T10:00:01")]}))[0]
    assert version_token(c) != version_token(a)
    assert version_token(parse_body(json.dumps({"Records": [s3_record(versionId="v9")]}))[0]) == "v:v9|abc"
    # a GCS metadata update keeps the generation (version id) but changes the etag: a new write
    from dataclasses import replace

    gen = ObjectEvent("gs://b", "k", "put", version_id="17", etag="17.1")
    assert version_token(gen) != version_token(replace(gen, etag="17.2"))
    assert version_token(gen) == version_token(replace(gen))
