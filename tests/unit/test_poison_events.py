"""Poison S3 events (issue 12): every malformed record is classified (versions or a dead
letter with its reason), never raises out of the parser or the planner, and what the
planner hands the ledger is always storable (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmirror.config import validate_config
from cloudmirror.events.base import FeedMessage, MalformedEvent, ObjectEvent
from cloudmirror.events.s3_events import parse_body, parse_message
from cloudmirror.replication.planner import MAX_KEY_BYTES, Router, plan_messages, version_token

CFG = validate_config({"mirrors": [
    {"name": "m", "source": "s3://src?region=us-east-1", "targets": ["s3://dst?region=eu-west-1"]}]})


def record(key="k.txt", name="ObjectCreated:Put", bucket="src", **obj):
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2026-11-24T10:00:00.123456Z",
            "eventName": name, "s3": {"bucket": {"name": bucket},
                                      "object": {"key": key, "size": 3, "eTag": "abc", "sequencer": "0A", **obj}}}


def message(body: str, mid: str = "1", receive_count: int | None = None) -> FeedMessage:
    fm = FeedMessage(message_id=mid, body=body, receipt="r", receive_count=receive_count)
    try:
        fm.events, fm.rejected = parse_message(body)
    except MalformedEvent as e:
        fm.error = str(e)
    return fm


def sns(doc: dict) -> str:
    return json.dumps({"Type": "Notification", "TopicArn": "arn:aws:sns:x", "Message": json.dumps(doc)})


def eventbridge(key="k.txt", **obj) -> dict:
    return {"version": "0", "source": "aws.s3", "detail-type": "Object Created", "time": "2026-11-24T10:00:00Z",
            "detail": {"bucket": {"name": "src"}, "object": {"key": key, "size": 5, "etag": "e", **obj}}}


# each bad kind the issue names, as an S3 notification; (record, words of the reason)
BAD_RECORDS = {
    "numeric key": (record(key=12345), "key is not a string"),
    "numeric eventName": (record(name=42), "eventName is not a string"),
    "numeric eTag": (record(eTag=7), "eTag is not a string"),
    "object sequencer": (record(sequencer={"a": 1}), "sequencer is not a string"),
    "huge size": (record(size=1e30), "size"),
    "NUL in key": (record(key="a%00b"), "NUL"),
    "long key": (record(key="k" * 2800), "1024 bytes"),
}


@pytest.mark.parametrize("kind", BAD_RECORDS)
def test_each_bad_kind_is_malformed_with_a_reason(kind):
    rec, words = BAD_RECORDS[kind]
    with pytest.raises(MalformedEvent, match=words):
        parse_body(json.dumps({"Records": [rec]}))
    with pytest.raises(MalformedEvent, match=words):  # the same through SNS
        parse_body(sns({"Records": [rec]}))


@pytest.mark.parametrize("obj,words", [
    ({"key": 5}, "key is not a string"), ({"etag": 5}, "etag is not a string"),
    ({"sequencer": [1]}, "sequencer is not a string"), ({"size": 1e30}, "size"),
    ({"key": "a%00b"}, "NUL"), ({"key": "x" * 3000}, "1024 bytes"), ({"version-id": 3}, "version-id is not"),
])
def test_bad_eventbridge_objects_are_malformed(obj, words):
    with pytest.raises(MalformedEvent, match=words):
        parse_body(json.dumps(eventbridge(**obj)))
    eb = eventbridge(**obj)
    eb["detail-type"] = 17  # not one of the kinds: nothing to copy, never an exception
    assert parse_body(json.dumps(eb)) == []


def test_a_bad_record_does_not_take_the_good_records_of_its_message_with_it():
    body = json.dumps({"Records": [record(key="good"), record(key=5), record(key="also-good")]})
    fm = message(body)
    assert [e.key for e in fm.events] == ["good", "also-good"] and fm.error is None
    assert len(fm.rejected) == 1 and "Records[1]" in fm.rejected[0]
    batch = plan_messages(Router(CFG.mirrors), "q", [fm])
    assert sorted(v.key for v in batch.versions) == ["also-good", "good"]
    assert [d.reason for d in batch.dead] == fm.rejected


def test_the_planner_refuses_what_the_ledger_cannot_hold():
    """Events from any feed (not only S3's parser) pass the ledger's limits or are dead-lettered."""
    good = ObjectEvent("s3://src", "ok", "put", etag="e", size=1)
    bad = {
        "a NUL in the key": ObjectEvent("s3://src", "a\x00b", "put"),
        "a lone surrogate": ObjectEvent("s3://src", "a\ud800b", "put"),
        "a key too long": ObjectEvent("s3://src", "é" * MAX_KEY_BYTES, "put"),
        "a size beyond BIGINT": ObjectEvent("s3://src", "k", "put", size=2**63),
        "a negative size": ObjectEvent("s3://src", "k", "put", size=-1),
        "an object sequencer": ObjectEvent("s3://src", "k", "put", sequencer={"a": 1}),  # type: ignore[arg-type]
        "a long etag": ObjectEvent("s3://src", "k", "put", etag="e" * 129),
        "a long version id": ObjectEvent("s3://src", "k", "put", version_id="v" * 1025),
    }
    msgs = [FeedMessage(message_id=str(i), body=f"body {i}", receipt="r", events=[ev])
            for i, ev in enumerate([good, *bad.values()])]
    batch = plan_messages(Router(CFG.mirrors), "q", msgs)
    assert [v.key for v in batch.versions] == ["ok"]
    assert sorted(d.message_id for d in batch.dead) == [str(i) for i in range(1, len(bad) + 1)]
    assert all(d.reason.startswith("event for ") for d in batch.dead)


def test_a_message_received_too_often_is_dead_lettered_without_its_events():
    body = json.dumps({"Records": [record()]})
    router = Router(CFG.mirrors)
    assert len(plan_messages(router, "q", [message(body, receive_count=10)], max_receives=10).versions) == 1
    batch = plan_messages(router, "q", [message(body, receive_count=11)], max_receives=10)
    assert batch.versions == [] and [d.reason for d in batch.dead] == ["received 11 times (max_receives 10)"]


def test_the_version_token_stays_within_its_column_in_bytes():
    ev = ObjectEvent("s3://src", "k", "put", version_id="ü" * 400)  # 400 chars, 800 bytes
    assert len(version_token(ev).encode()) <= 500


def test_the_ledger_records_every_planned_batch_of_bad_and_good(ledger):
    """The bad kinds of the issue, with good events, in ONE batch: the ledger takes it
    (PostgreSQL refused NULs, long keys, huge sizes and objects as sequencers)."""
    bodies = [json.dumps({"Records": [record(key=f"good-{i}")]}) for i in range(9)]
    bodies += [json.dumps({"Records": [rec]}) for rec, _ in BAD_RECORDS.values()]
    bodies += [sns({"Records": [record(key=7)]}), json.dumps(eventbridge(key="x%00y"))]
    # the longest key and token the planner lets through, in characters that do not compress
    longest = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(MAX_KEY_BYTES // 3))
    bodies.append(json.dumps({"Records": [record(key=longest.encode().hex()[:1024])]}))
    msgs = [message(b, mid=str(i)) for i, b in enumerate(bodies)]
    extra = FeedMessage(message_id="x", body="x", receipt="r",
                        events=[ObjectEvent("s3://src", longest, "put", version_id="ü" * 1000)])
    batch = plan_messages(Router(CFG.mirrors), "q", [*msgs, extra])
    assert len(batch.versions) == 11 and len(batch.dead) == len(BAD_RECORDS) + 2
    out = ledger.record(batch.versions, batch.dead)
    assert out.new == 11
    assert len(ledger.dead_letters()) == len(BAD_RECORDS) + 2


# ------------------------------------------------------------------ fuzz
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
                     st.sampled_from(["ObjectCreated:Put", "ObjectRemoved:Delete", "s3:ObjectCreated:Copy",
                                      "a%00b", "%ZZ", "\ud800", "0A", "", "Object Created", "aws.s3", "aws:s3"]))
_json = st.recursive(_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=12), kids, max_size=5)), max_leaves=25)
_key = st.text(min_size=1, max_size=40)  # any text: also %-escapes, NULs, surrogates
_S3_FIELDS = [("eventSource",), ("eventName",), ("eventTime",), ("s3",), ("s3", "bucket"), ("s3", "bucket", "name"),
              ("s3", "object"), ("s3", "object", "key"), ("s3", "object", "eTag"), ("s3", "object", "size"),
              ("s3", "object", "sequencer"), ("s3", "object", "versionId")]
_EB_FIELDS = [("source",), ("detail-type",), ("time",), ("detail",), ("detail", "bucket"),
              ("detail", "bucket", "name"), ("detail", "object"), ("detail", "object", "key"),
              ("detail", "object", "etag"), ("detail", "object", "size"), ("detail", "object", "sequencer"),
              ("detail", "object", "version-id")]
_DELETE = object()


@st.composite
def _mutated(draw, base, paths):
    """A valid notification with 0-3 of its fields replaced by arbitrary JSON or removed."""
    doc = json.loads(json.dumps(base))
    doc_obj = doc["Records"][0] if "Records" in doc else doc
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(paths))
        node = doc_obj
        for p in path[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        value = draw(st.one_of(st.just(_DELETE), _key, _json))
        if value is _DELETE:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    if "Records" in doc:
        doc["Records"] = [doc_obj] * draw(st.integers(1, 3))
    return doc


_doc = st.one_of(_json, _mutated({"Records": [record(sequencer="0A", versionId="v1")]}, _S3_FIELDS),
                 _mutated(eventbridge(sequencer="0B", **{"version-id": "v2"}), _EB_FIELDS),
                 st.builds(lambda r: {"Records": r}, st.lists(_json, max_size=3)))


def _wrap(draw_doc, how: str) -> str:
    text = json.dumps(draw_doc)
    if how == "sns":
        return json.dumps({"Type": "Notification", "Message": text})
    if how == "sns-base64":  # an SNS Message that is base64, not JSON: malformed, said so
        return json.dumps({"Type": "Notification", "Message": base64.b64encode(text.encode()).decode()})
    if how == "base64":
        return base64.b64encode(text.encode()).decode()
    return text


EXAMPLES = {"n": 0}
CLASSIFIED = {"versions": 0, "dead": 0}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_doc, how=st.sampled_from(["plain", "plain", "sns", "sns", "sns-base64", "base64"]),
       raw=st.one_of(st.none(), st.none(), st.none(), st.text(max_size=40)))
def test_fuzz_every_body_is_classified_and_nothing_escapes(doc, how, raw):
    EXAMPLES["n"] += 1
    body = raw if raw is not None else _wrap(doc, how)
    for encoded in (True, False):
        try:
            events, rejected = parse_message(body, eventbridge_keys_encoded=encoded)
        except MalformedEvent as e:
            assert str(e)  # a reason
            continue
        assert all(isinstance(r, str) and r for r in rejected)
    fm = message(body)
    batch = plan_messages(Router(CFG.mirrors), "q", [fm], max_receives=10)
    assert all(d.reason and d.message_id == "1" for d in batch.dead)
    if fm.error:  # the whole message: one dead letter, its reason
        assert [d.reason for d in batch.dead] == [fm.error] and not batch.versions
    else:  # each event a version, ignored (no mirror reads its bucket) or dead-lettered; each rejected record dead
        reasons = [d.reason for d in batch.dead]
        assert all(r in reasons for r in fm.rejected)
        unstorable = [r for r in reasons if r.startswith("event for ")]
        assert len(batch.versions) + batch.ignored + len(unstorable) == len(fm.events)
    if batch.versions or batch.dead:
        CLASSIFIED["versions" if batch.versions else "dead"] += 1
    for v in batch.versions:
        assert isinstance(v.key, str) and "\x00" not in v.key and len(v.key.encode()) <= MAX_KEY_BYTES
        assert v.size is None or 0 <= v.size < 2**63
        assert all(x is None or (isinstance(x, str) and len(x) <= 128) for x in (v.etag, v.sequencer))
