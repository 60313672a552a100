"""Dead letters through the REST API: listed (paginated, by status and feed), shown with their
body, re-driven (parsed again with their feed's parser, versions recorded as the intake
records them) or discarded (kept for audit), counted in /v1/status and /metrics."""

from __future__ import annotations

import json

import pytest

from cloudmirror.config import validate_config
from cloudmirror.ledger.repo import DeadLetter
from cloudmirror.services import dead_letters as service
from tests.api.conftest import assert_error, mirror_config_data
from tests.conftest import unique_name

SQS = "https://sqs.eu-west-1.amazonaws.com/123456789012/photos-events"
PUBSUB = "projects/demo/subscriptions/docs-events"


def s3_body(bucket: str, key: str, etag: str = "9b2cf535f27731c974343645a3985328") -> str:
    return json.dumps({"Records": [{
        "eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "eventTime": "2026-11-26T10:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 5, "eTag": etag,
                                                      "sequencer": "0055AED6DCD90281E5"}}}]})


def gcs_body(bucket: str, key: str, generation: int = 1700000000000001) -> str:
    return json.dumps({"attributes": {"eventType": "OBJECT_FINALIZE", "bucketId": bucket, "objectId": key,
                                      "objectGeneration": str(generation), "payloadFormat": "NONE",
                                      "eventTime": "2026-11-26T10:00:00Z"}, "data": ""})


@pytest.fixture
def buckets():
    return unique_name("photos-src"), unique_name("docs-src")


@pytest.fixture
def api_config(ledger_url, buckets):
    data = mirror_config_data(ledger_url, source=f"s3://{buckets[0]}")
    data["mirrors"][1]["source"] = f"gs://{buckets[1]}"
    return validate_config(data)


def dead(ledger, feed: str, body: str, reason: str = "test", message_id: str | None = None) -> int:
    ledger.record([], [DeadLetter(feed=feed, body=body, reason=reason, message_id=message_id)])
    return max(d["id"] for d in ledger.dead_letters())


async def test_dead_letters_are_listed_shown_redriven_and_discarded(api, buckets):
    photos_bucket, docs_bucket = buckets
    good = dead(api.ledger, SQS, s3_body(photos_bucket, "2026/a.jpg"), "no mirror reads from s3://...", "m-1")
    broken = dead(api.ledger, SQS, "{not json", "body is not JSON", "m-2")
    elsewhere = dead(api.ledger, SQS, s3_body("nobody-reads-this", "x"), "no mirror reads from s3://nobody")
    gcs = dead(api.ledger, PUBSUB, gcs_body(docs_bucket, "notes/b.txt"), "AttributeError: ...", "m-4")

    r = await api.viewer.get("/v1/dead-letters")
    assert r.status_code == 200, r.text
    page = r.json()
    assert [d["id"] for d in page["items"]] == [gcs, elsewhere, broken, good] and page["next_cursor"] is None
    assert page["items"][-1]["message_id"] == "m-1" and page["items"][-1]["status"] == "pending"
    assert "body" not in page["items"][0]  # bodies only one at a time
    r = await api.viewer.get("/v1/dead-letters", params={"feed": PUBSUB})
    assert [d["id"] for d in r.json()["items"]] == [gcs]

    seen, cursor = [], None  # one at a time
    while True:
        r = await api.viewer.get("/v1/dead-letters", params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        seen += [d["id"] for d in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [gcs, elsewhere, broken, good]

    r = await api.viewer.get(f"/v1/dead-letters/{broken}")
    assert r.status_code == 200 and r.json()["body"] == "{not json" and r.json()["reason"] == "body is not JSON"

    status = (await api.viewer.get("/v1/status")).json()["dead_letters"]
    assert status == {"pending": 4, "redriven": 0, "discarded": 0, "feeds": {SQS: 3, PUBSUB: 1}}
    metrics = (await api.viewer.get("/metrics")).text
    assert f'cloudmirror_dead_letters_pending{{feed="{SQS}"}} 3.0' in metrics

    # re-drive: the S3 event is for the photos mirror's bucket -> one version, pending on both targets
    assert_error(await api.viewer.post(f"/v1/dead-letters/{good}/redrive"), 403, "forbidden")
    r = await api.operator.post(f"/v1/dead-letters/{good}/redrive")
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["status"] == "redriven" and got["resolved_by"] == "test-operator" and got["resolved_at"]
    assert got["recorded"] == 1 and got["mirrors"] == ["photos"]
    assert api.ledger.count(mirror="photos", status="pending") == 2
    err = assert_error(await api.operator.post(f"/v1/dead-letters/{good}/redrive"), 409, "conflict")
    assert "redriven already" in err["message"]
    assert api.ledger.count(mirror="photos") == 2  # recorded once

    # a Pub/Sub notification goes through the GCS parser
    r = await api.operator.post(f"/v1/dead-letters/{gcs}/redrive")
    assert r.status_code == 200, r.text
    assert r.json()["mirrors"] == ["docs"] and api.ledger.count(mirror="docs", status="pending") == 1

    # still unusable: 409 with the reason, and it stays pending
    err = assert_error(await api.operator.post(f"/v1/dead-letters/{broken}/redrive"), 409, "conflict")
    assert "still cannot be parsed" in err["message"] and "not JSON" in err["message"]
    err = assert_error(await api.operator.post(f"/v1/dead-letters/{elsewhere}/redrive"), 409, "conflict")
    assert "s3://nobody-reads-this" in err["message"]
    assert (await api.viewer.get(f"/v1/dead-letters/{broken}")).json()["status"] == "pending"

    r = await api.operator.post(f"/v1/dead-letters/{broken}/discard")
    assert r.status_code == 200 and r.json()["status"] == "discarded" and r.json()["resolved_by"] == "test-operator"
    assert_error(await api.operator.post(f"/v1/dead-letters/{broken}/discard"), 409, "conflict")
    assert_error(await api.operator.post(f"/v1/dead-letters/{broken}/redrive"), 409, "conflict")

    assert [d["id"] for d in (await api.viewer.get("/v1/dead-letters")).json()["items"]] == [elsewhere]
    r = await api.viewer.get("/v1/dead-letters", params={"status": "discarded"})
    assert [d["id"] for d in r.json()["items"]] == [broken]
    r = await api.viewer.get("/v1/dead-letters", params={"status": "redriven"})
    assert [d["id"] for d in r.json()["items"]] == [gcs, good]
    r = await api.viewer.get("/v1/dead-letters", params={"status": "all"})
    assert [d["id"] for d in r.json()["items"]] == [gcs, elsewhere, broken, good]

    status = (await api.viewer.get("/v1/status")).json()["dead_letters"]
    assert status == {"pending": 1, "redriven": 2, "discarded": 1, "feeds": {SQS: 1}}
    metrics = (await api.viewer.get("/metrics")).text
    assert f'cloudmirror_dead_letters_pending{{feed="{SQS}"}} 1.0' in metrics
    assert f'cloudmirror_dead_letters_pending{{feed="{PUBSUB}"}} 0.0' in metrics

    from cloudmirror.services import access

    actions = [(e["action"], e["status"]) for e in access.list_audit(api.ledger, limit=50).items]
    assert ("POST /v1/dead-letters/{dead_letter_id}/redrive", 200) in actions
    assert ("POST /v1/dead-letters/{dead_letter_id}/redrive", 409) in actions
    assert ("POST /v1/dead-letters/{dead_letter_id}/discard", 200) in actions


async def test_bad_requests_get_our_json_errors(api):
    assert_error(await api.viewer.get("/v1/dead-letters", params={"status": "bogus"}), 422, "validation_error",
                 field="query.status")
    assert_error(await api.viewer.get("/v1/dead-letters", params={"cursor": "abc"}), 422, "validation_error")
    assert_error(await api.viewer.get("/v1/dead-letters/987654"), 404, "not_found")
    assert_error(await api.operator.post("/v1/dead-letters/987654/redrive"), 404, "not_found")
    assert_error(await api.operator.post("/v1/dead-letters/987654/discard"), 404, "not_found")
    assert_error(await api.operator.post("/v1/dead-letters/0/discard"), 422, "validation_error",
                 field="path.dead_letter_id")
    assert_error(await api.anonymous.get("/v1/dead-letters"), 401, "unauthorized")


def test_stored_bodies_of_every_feed_kind_parse_again(api_config):
    """The Azure queue's stored JSON (Event Grid schema) and an unknown feed address."""
    body = json.dumps([{"topic": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct",
                        "subject": "/blobServices/default/containers/photos/blobs/a/b.txt",
                        "eventType": "Microsoft.Storage.BlobCreated", "eventTime": "2026-11-26T10:00:00Z",
                        "id": "1", "data": {"eTag": "0x8D", "contentLength": 3, "sequencer": "00000001",
                                            "url": "https://acct.blob.core.windows.net/photos/a/b.txt"}}])
    [ev] = service.parse(api_config, "az://acct/events", body)
    assert ev.key == "a/b.txt" and ev.op == "put"
    with pytest.raises(Exception, match="cannot tell which kind of feed"):
        service.parse(api_config, "mystery", body)


async def test_a_mirror_created_for_the_bucket_later_makes_the_redrive_work(api):
    bucket = unique_name("late")
    d = dead(api.ledger, SQS, s3_body(bucket, "k"), f"no mirror reads from s3://{bucket}")
    assert_error(await api.operator.post(f"/v1/dead-letters/{d}/redrive"), 409, "conflict")
    r = await api.admin.post("/v1/mirrors", json={"name": "late", "source": f"s3://{bucket}",
                                                  "targets": [f"memory://{unique_name('dst')}"]})
    assert r.status_code in (200, 201), r.text
    r = await api.operator.post(f"/v1/dead-letters/{d}/redrive")
    assert r.status_code == 200, r.text
    assert r.json()["mirrors"] == ["late"] and api.ledger.count(mirror="late", status="pending") == 1


async def test_a_body_the_ledger_refuses_is_a_conflict_not_a_server_error(api, buckets):
    """What the intake once failed on inside Ledger.record (a size of 1e30): re-driving it
    answers 409 with the reason and keeps the dead letter (whether the parser or the ledger
    refuses it)."""
    doc = json.loads(s3_body(buckets[0], "k"))
    doc["Records"][0]["s3"]["object"]["size"] = 1e30
    d = dead(api.ledger, SQS, json.dumps(doc), "poison")
    err = assert_error(await api.operator.post(f"/v1/dead-letters/{d}/redrive"), 409, "conflict")
    assert str(d) in err["message"], err
    assert (await api.viewer.get(f"/v1/dead-letters/{d}")).json()["status"] == "pending"
    assert api.ledger.count(mirror="photos") == 0


@pytest.mark.parametrize("change", ["huge-size", "nul-in-key"])
async def test_a_notification_the_ledger_refuses_is_a_conflict(api, buckets, change, ledger_url):
    """Versions the parser lets through but the database cannot hold (a size past BIGINT; a NUL,
    which PostgreSQL text refuses and SQLite keeps): 409 with the reason, the dead letter kept."""
    body = json.loads(gcs_body(buckets[1], "k"))
    if change == "huge-size":
        body["attributes"]["payloadFormat"] = "JSON_API_V1"
        body["data"] = json.dumps({"bucket": buckets[1], "name": "k", "size": str(10**30)})
    else:
        if ledger_url.startswith("sqlite"):
            pytest.skip("SQLite holds a NUL in text")
        body["attributes"]["objectId"] = "bad\x00key"
    d = dead(api.ledger, PUBSUB, json.dumps(body), "poison")
    err = assert_error(await api.operator.post(f"/v1/dead-letters/{d}/redrive"), 409, "conflict")
    # (refused by the ledger today; a parser that learns to refuse it first answers the same)
    assert any(f"dead letter {d} {why}" in err["message"]
               for why in ("announces versions the ledger cannot hold", "still cannot be parsed")), err
    assert (await api.viewer.get(f"/v1/dead-letters/{d}")).json()["status"] == "pending"
    assert api.ledger.count(mirror="docs") == 0
