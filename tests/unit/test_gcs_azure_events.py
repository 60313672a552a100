"""GCS Pub/Sub notification and Azure Event Grid (Event Grid + CloudEvents schema) parsing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from cloudmirror.events.base import MalformedEvent
from cloudmirror.events.eventgrid import CREATED, DELETED, decode_queue_text, parse_queue_message
from cloudmirror.events.gcs_events import is_overwrite_half, message_body, parse_notification
from cloudmirror.ledger.repo import is_newer
from cloudmirror.local.eventgrid_fake import FakeEventGridPublisher, blob_event, encode_eventgrid_message

# ----------------------------------------------------------------------------- GCS
G1, G2 = 1795557999601464, 1795557999603482


def gcs_msg(event_type="OBJECT_FINALIZE", generation=G1, name="a b+c%/ü.txt", bucket="bkt", meta=None,
            payload=True, size="3", **extra_attrs):
    """A notification as fake-gcs-server / GCS send it: (attributes, data)."""
    attrs = {"eventType": event_type, "eventTime": "2026-11-24T22:06:39Z", "objectId": name, "bucketId": bucket,
             "objectGeneration": str(generation), "payloadFormat": "JSON_API_V1" if payload else "NONE",
             **extra_attrs}
    resource = {"kind": "storage#object", "id": f"{bucket}/{name}#{generation}", "name": name, "bucket": bucket,
                "generation": str(generation), "contentType": "text/plain", "size": size,
                "updated": "2026-11-24T22:06:39.601457Z", "md5Hash": "+XxdKZQb+xsv2rCHSQargg=="}
    if meta is not None:
        resource["metageneration"] = str(meta)
    return attrs, (json.dumps(resource).encode() if payload else b"")


def test_finalize_is_a_put_with_generation_version_etag_and_sequencer():
    [ev] = parse_notification(*gcs_msg())
    assert (ev.container_id, ev.key, ev.op, ev.size) == ("gs://bkt", "a b+c%/ü.txt", "put", 3)
    assert ev.version_id == str(G1)
    assert ev.etag == f"{G1}.1"
    assert ev.sequencer == f"{G1:016X}00000001" and len(ev.sequencer) == 24
    assert ev.event_time == datetime(2026, 11, 24, 22, 6, 39, tzinfo=UTC)
    assert ev.event_name == "OBJECT_FINALIZE"


def test_overwrite_pair_collapses_to_one_put():
    finalize = gcs_msg(generation=G2, size="4", overwroteGeneration=str(G1))
    delete_half = gcs_msg("OBJECT_DELETE", generation=G1, overwrittenByGeneration=str(G2))
    events = parse_notification(*finalize) + parse_notification(*delete_half)
    assert [(e.op, e.version_id, e.size) for e in events] == [("put", str(G2), 4)]
    assert is_overwrite_half(delete_half[0]) and not is_overwrite_half(finalize[0])
    # the archive half of an overwrite in a versioned bucket is skipped the same way
    assert parse_notification(*gcs_msg("OBJECT_ARCHIVE", generation=G1, overwrittenByGeneration=str(G2))) == []


def test_real_delete_and_archive_are_deletes_newer_than_any_put_of_the_generation():
    [d] = parse_notification(*gcs_msg("OBJECT_DELETE", generation=G2, size="0"))
    assert (d.op, d.version_id, d.size, d.sequencer) == ("delete", str(G2), None, f"{G2:016X}FFFFFFFF")
    assert d.etag is None
    [a] = parse_notification(*gcs_msg("OBJECT_ARCHIVE", generation=G2))
    assert a.op == "delete" and a.sequencer == d.sequencer
    [put] = parse_notification(*gcs_msg(generation=G2, meta=7))
    assert is_newer(d.sequencer, None, put.sequencer, None)
    assert not is_newer(put.sequencer, None, d.sequencer, None)
    # ...but a delete of the older generation loses against the newer write
    [old_delete] = parse_notification(*gcs_msg("OBJECT_DELETE", generation=G1))
    assert not is_newer(old_delete.sequencer, None, put.sequencer, None)


def test_metadata_update_is_a_put_ordered_after_its_write_with_a_distinct_etag():
    [fin] = parse_notification(*gcs_msg(generation=G2, meta=1))
    [upd] = parse_notification(*gcs_msg("OBJECT_METADATA_UPDATE", generation=G2, meta=2))
    [upd3] = parse_notification(*gcs_msg("OBJECT_METADATA_UPDATE", generation=G2, meta=3))
    [newer_gen] = parse_notification(*gcs_msg(generation=G2 + 1, meta=1))
    assert upd.op == "put" and upd.version_id == fin.version_id
    assert (fin.etag, upd.etag) == (f"{G2}.1", f"{G2}.2")
    assert is_newer(upd.sequencer, None, fin.sequencer, None)
    assert is_newer(upd3.sequencer, None, upd.sequencer, None)
    assert is_newer(newer_gen.sequencer, None, upd3.sequencer, None)  # generation dominates
    # metageneration absent (fake-gcs-server, payloadFormat NONE): an update still differs
    [upd_nometa] = parse_notification(*gcs_msg("OBJECT_METADATA_UPDATE", generation=G2))
    assert upd_nometa.etag == f"{G2}.2" and is_newer(upd_nometa.sequencer, None, fin.sequencer, None)


def test_version_tokens_keep_write_update_and_delete_of_one_generation_apart():
    from cloudmirror.replication.planner import version_token

    msgs = [gcs_msg(generation=G2), gcs_msg("OBJECT_METADATA_UPDATE", generation=G2, meta=2),
            gcs_msg("OBJECT_DELETE", generation=G2), gcs_msg("OBJECT_DELETE", generation=G2, meta=2),
            gcs_msg(generation=G2, payload=False), gcs_msg("OBJECT_DELETE", generation=G2, payload=False)]
    tokens = [version_token(parse_notification(*m)[0]) for m in msgs]
    fin, upd, dele, dele_meta2, fin_none, dele_none = tokens
    assert len({fin, upd, dele}) == 3
    assert dele == dele_meta2 == dele_none  # one removal of G, however announced
    assert fin == fin_none  # a redelivery with another payload format is still a duplicate
    assert version_token(parse_notification(*gcs_msg(generation=G2))[0]) == fin  # redelivery


def test_payload_format_none_uses_attributes_only():
    attrs, _ = gcs_msg(payload=False)
    [ev] = parse_notification(attrs, None)
    assert (ev.key, ev.version_id, ev.etag, ev.size) == ("a b+c%/ü.txt", str(G1), f"{G1}.1", None)
    # data is ignored with NONE even when it is not JSON
    assert parse_notification(attrs, b"not json")[0].version_id == str(G1)


def test_event_time_falls_back_to_the_payloads_updated():
    attrs, data = gcs_msg()
    del attrs["eventTime"]
    [ev] = parse_notification(attrs, data)
    assert ev.event_time == datetime(2026, 11, 24, 22, 6, 39, 601457, tzinfo=UTC)


@pytest.mark.parametrize("mutate,reason", [
    (lambda a, d: (dict(a, eventType=""), d), "no eventType"),
    (lambda a, d: ({k: v for k, v in a.items() if k != "bucketId"}, d), "names no bucketId"),
    (lambda a, d: ({k: v for k, v in a.items() if k != "objectId"}, d), "names no objectId"),
    (lambda a, d: (dict(a, eventType="OBJECT_RESTORED"), d), "unknown Cloud Storage eventType"),
    (lambda a, d: (a, b"{oops"), "not JSON"),
    (lambda a, d: (a, b"[1]"), "not an object"),
    (lambda a, d: (dict(a, objectGeneration="12abc"), d), "objectGeneration is not an integer"),
    (lambda a, d: (a, json.dumps({"name": "other", "bucket": "bkt"}).encode()), "differs from the objectId"),
    (lambda a, d: ({k: v for k, v in a.items() if k != "objectGeneration"}, b""), "carries no objectGeneration"),
])
def test_malformed_notifications_say_why(mutate, reason):
    attrs, data = mutate(*gcs_msg())
    with pytest.raises(MalformedEvent, match=reason):
        parse_notification(attrs, data)


def test_message_body_keeps_attributes_and_data_readable():
    attrs, data = gcs_msg()
    doc = json.loads(message_body(attrs, data))
    assert doc["attributes"]["objectId"] == "a b+c%/ü.txt" and json.loads(doc["data"])["size"] == "3"


# ----------------------------------------------------------------------------- Event Grid
ACCOUNT = "mystorageacct"
# The documented BlobCreated (Event Grid schema), verbatim apart from the ids
DOC_CREATED = {
    "topic": "/subscriptions/{subscription-id}/resourceGroups/Storage/providers/Microsoft.Storage"
             "/storageAccounts/my-storage-account",
    "subject": "/blobServices/default/containers/test-container/blobs/new-file.txt",
    "eventType": "Microsoft.Storage.BlobCreated",
    "eventTime": "2017-06-26T18:41:00.9584103Z",
    "id": "831e1650-001e-001b-66ab-eeb76e069631",
    "data": {"api": "PutBlockList", "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
             "requestId": "831e1650-001e-001b-66ab-eeb76e000000", "eTag": "\"0x8D4BCC2E4835CD0\"",
             "contentType": "text/plain", "contentLength": 524288, "blobType": "BlockBlob",
             "url": "https://my-storage-account.blob.core.windows.net/testcontainer/new-file.txt",
             "sequencer": "00000000000004420000000000028963",
             "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"}},
    "dataVersion": "", "metadataVersion": "1"}
DOC_DELETED_CE = {
    "source": "/subscriptions/{subscription-id}/resourceGroups/Storage/providers/Microsoft.Storage"
              "/storageAccounts/my-storage-account",
    "subject": "/blobServices/default/containers/testcontainer/blobs/file-to-delete.txt",
    "type": "Microsoft.Storage.BlobDeleted",
    "time": "2017-11-07T20:09:22.5674003Z",
    "id": "4c2359fe-001e-00ba-0e04-58586806d298",
    "data": {"api": "DeleteBlob", "requestId": "4c2359fe-001e-00ba-0e04-585868000000", "contentType": "text/plain",
             "blobType": "BlockBlob",
             "url": "https://my-storage-account.blob.core.windows.net/testcontainer/file-to-delete.txt",
             "sequencer": "0000000000000281000000000002F5CA",
             "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"}},
    "specversion": "1.0"}


def b64(doc) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_documented_blob_created_event_grid_schema():
    for text in (json.dumps(DOC_CREATED), b64(DOC_CREATED), json.dumps([DOC_CREATED]), b64([DOC_CREATED])):
        [ev] = parse_queue_message(text)
        assert (ev.container_id, ev.key, ev.op) == ("az://my-storage-account/test-container", "new-file.txt", "put")
        assert (ev.etag, ev.size, ev.sequencer) == ("0x8D4BCC2E4835CD0", 524288, "00000000000004420000000000028963")
        assert ev.event_time == datetime(2017, 6, 26, 18, 41, 0, 958410, tzinfo=UTC)
        assert ev.version_id is None and ev.event_name == CREATED


def test_documented_blob_deleted_cloudevents_schema():
    [ev] = parse_queue_message(b64(DOC_DELETED_CE))
    assert (ev.container_id, ev.key, ev.op, ev.etag, ev.size) == (
        "az://my-storage-account/testcontainer", "file-to-delete.txt", "delete", None, None)
    assert ev.sequencer == "0000000000000281000000000002F5CA" and ev.event_name == DELETED
    assert ev.event_time.year == 2017


def test_cloudevents_subject_without_leading_slash_and_version_id():
    doc = dict(DOC_DELETED_CE, type=CREATED, subject="blobServices/default/containers/c1/blobs/dir/x.bin",
               data=dict(DOC_DELETED_CE["data"], eTag="0x1", contentLength=5, versionId="2026-11-24T22:00:00.1234567Z"))
    [ev] = parse_queue_message(json.dumps(doc))
    assert (ev.container_id, ev.key, ev.etag, ev.size, ev.version_id) == (
        "az://my-storage-account/c1", "dir/x.bin", "0x1", 5, "2026-11-24T22:00:00.1234567Z")


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
@pytest.mark.parametrize("key", ["plain.txt", "with space/and+plus.txt", "per%cent%2F/ü €/日本.bin", "a/blobs/b",
                                 "trailing space "])
def test_fake_publisher_round_trips_awkward_keys(schema, key):
    sent = []
    pub = FakeEventGridPublisher(ACCOUNT, sent.append, schema=schema)
    pub.publish(pub.created_event("box", key, etag="0x8DEADBEEF", size=11))
    pub.publish(pub.deleted_event("box", key))
    put, delete = (parse_queue_message(t)[0] for t in sent)
    assert (put.container_id, put.key, put.op, put.etag, put.size) == (f"az://{ACCOUNT}/box", key, "put",
                                                                       "0x8DEADBEEF", 11)
    assert (delete.key, delete.op, delete.etag, delete.size) == (key, "delete", None, None)
    assert is_newer(delete.sequencer, None, put.sequencer, None)


def test_fake_publisher_writes_the_documented_shapes():
    eg = blob_event(CREATED, account=ACCOUNT, container="box", blob="a b%.txt", etag="0x8D1", content_length=3)
    assert list(eg) == list(DOC_CREATED)  # same top-level fields, same order
    assert list(eg["data"]) == list(DOC_CREATED["data"])
    assert eg["data"]["eTag"] == '"0x8D1"' and eg["dataVersion"] == "" and eg["metadataVersion"] == "1"
    assert eg["subject"] == "/blobServices/default/containers/box/blobs/a b%.txt"  # not encoded
    assert eg["data"]["url"] == f"https://{ACCOUNT}.blob.core.windows.net/box/a%20b%25.txt"  # encoded
    assert len(eg["eventTime"].split(".")[1]) == 8  # 7 digits + Z, like the service
    ce = blob_event(DELETED, account=ACCOUNT, container="box", blob="k", schema="cloudevents")
    assert list(ce) == list(DOC_DELETED_CE)
    assert list(ce["data"]) == list(DOC_DELETED_CE["data"])  # no eTag, contentLength, clientRequestId
    text = encode_eventgrid_message(ce)
    assert decode_queue_text(text) == (ce, "base64")
    assert decode_queue_text(encode_eventgrid_message(ce, base64_encode=False)) == (ce, "text")


def test_subject_is_taken_verbatim_even_when_it_looks_encoded():
    doc = dict(DOC_CREATED, subject="/blobServices/default/containers/c/blobs/a%20b+c")
    assert parse_queue_message(json.dumps(doc))[0].key == "a%20b+c"


def test_url_is_decoded_when_the_subject_is_not_a_blob_subject():
    doc = dict(DOC_CREATED, subject="something-else",
               data=dict(DOC_CREATED["data"], url="https://acct.blob.core.windows.net/c/a%20b%2Bc/%C3%BC"))
    [ev] = parse_queue_message(json.dumps(doc))
    assert (ev.container_id, ev.key) == ("az://my-storage-account/c", "a b+c/ü")
    # no account in the topic: from the URL's host
    doc["topic"] = "/weird"
    assert parse_queue_message(json.dumps(doc))[0].container_id == "az://acct/c"


def test_blob_renamed_is_delete_of_source_and_put_of_destination():
    doc = {"topic": DOC_CREATED["topic"], "subject": "/blobServices/default/containers/fs/blobs/new%/name.txt",
           "eventType": "Microsoft.Storage.BlobRenamed", "eventTime": "2022-04-25T19:13:00.1522383Z", "id": "x",
           "data": {"api": "RenameFile", "requestId": "r",
                    "destinationUrl": "https://my-storage-account.dfs.core.windows.net/fs/new%25/name.txt",
                    "sourceUrl": "https://my-storage-account.dfs.core.windows.net/fs/old%20name.txt",
                    "sequencer": "00000000000004420000000000028963"},
           "dataVersion": "1", "metadataVersion": "1"}
    src, dst = parse_queue_message(json.dumps(doc))
    assert (src.op, src.key, dst.op, dst.key) == ("delete", "old name.txt", "put", "new%/name.txt")
    assert src.container_id == dst.container_id == "az://my-storage-account/fs"


def test_other_storage_and_eventgrid_types_carry_nothing():
    for t in ("Microsoft.Storage.BlobTierChanged", "Microsoft.Storage.AsyncOperationInitiated",
              "Microsoft.Storage.DirectoryCreated", "Microsoft.EventGrid.SubscriptionValidationEvent"):
        assert parse_queue_message(json.dumps(dict(DOC_CREATED, eventType=t))) == []
    # an array mixing an ignored type with a real event keeps the real one
    events = parse_queue_message(b64([dict(DOC_CREATED, eventType="Microsoft.Storage.BlobTierChanged"), DOC_CREATED]))
    assert [e.op for e in events] == ["put"]
    assert parse_queue_message("[]") == []


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("%%% not base64", "neither JSON nor base64"),
    (base64.b64encode(b"hello").decode(), "not base64-encoded JSON"),
    ("{oops", "not valid JSON"),
    ('"a string"', "neither JSON nor base64"),
    (json.dumps({"hello": 1}), "neither an Event Grid event"),
    (json.dumps(dict(DOC_CREATED, eventType="Contoso.Items.ItemReceived")), "unexpected event type"),
    (json.dumps(dict(DOC_CREATED, data=None)), "has no data object"),
    (json.dumps(dict(DOC_CREATED, topic="/x", subject="/y", data={"url": "https://example.com/c/b"})),
     "no storage account"),
    (json.dumps(dict(DOC_CREATED, subject="/nope", data={})), "neither a blob subject nor a url"),
    (json.dumps(dict(DOC_DELETED_CE, specversion="0.1")), "unsupported CloudEvents specversion"),
    (json.dumps([DOC_CREATED, 5]), r"event \[1\]: expected a JSON object"),
])
def test_malformed_queue_messages_say_why(text, reason):
    with pytest.raises(MalformedEvent, match=reason):
        parse_queue_message(text)


def test_azure_sequencers_compare_under_is_newer():
    # documented sequencers: 32 and 48 hex digits, mixed case; standard string order
    a, b = "000000000000000000000000000089A4000000000018c6d7", "000000000000000000000000000089A4000000000018d6ea"
    assert is_newer(b, None, a, None) and not is_newer(a, None, b, None)
    assert is_newer("0000000000000442000000000002896A", None, "00000000000004420000000000028963", None)


@pytest.mark.parametrize("url,expect", [
    ("az://acct/q1?connection_string_env=CONN", ("acct", "q1", "https://acct.queue.core.windows.net")),
    ("az://acct/q1?endpoint=http://127.0.0.1:10001", ("acct", "q1", "http://127.0.0.1:10001/acct")),
    ("az://acct/q1?endpoint=https://queues.example.com/&credential=sas", ("acct", "q1", "https://queues.example.com")),
    ("az://acct/q1/extra", "names one queue"),
    ("az://acct/q1?region=x", "unknown parameter"),
    ("az://acct/q1?credential=magic", "credential must be one of"),
    ("az://acct/q1?connection_string_env=C&credential=key", "do not combine"),
    ("https://acct.queue.core.windows.net/q1", "az://ACCOUNT/QUEUE"),
])
def test_azure_queue_urls(url, expect):
    from cloudmirror.events.azure_queue import parse_queue_url

    if isinstance(expect, str):
        with pytest.raises(ValueError, match=expect):
            parse_queue_url(url)
    else:
        a = parse_queue_url(url)
        assert (a.account, a.queue, a.queue_endpoint) == expect


def test_pubsub_subscription_paths():
    from cloudmirror.events.pubsub import subscription_path

    assert subscription_path("projects/p-1/subscriptions/s-1") == "projects/p-1/subscriptions/s-1"
    for bad in ("projects/p/topics/t", "p/s", "projects//subscriptions/s"):
        with pytest.raises(ValueError, match="projects/PROJECT/subscriptions/NAME"):
            subscription_path(bad)
