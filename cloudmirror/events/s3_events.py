"""Parse S3 event notifications as they arrive in an SQS message body.

Accepted shapes (one message may carry several records):
- S3 -> SQS directly: ``{"Records": [{"eventSource": "aws:s3", ...}]}``, keys form-encoded;
- S3 -> SNS -> SQS, enveloped: ``{"Type": "Notification", "Message": "<the S3 JSON>"}``;
- S3 -> SNS -> SQS with raw delivery: the S3 JSON itself;
- S3 -> EventBridge -> SQS: ``{"source": "aws.s3", "detail-type": "Object Created", "detail": {...}}``;
  keys URL-encoded (LocalStack, and S3's own notifications) unless the feed says they are
  plain (moto).
``s3:TestEvent`` messages carry no events. Anything else raises MalformedEvent with the reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from cloudmirror.events.base import MalformedEvent, ObjectEvent

_PUT_PREFIXES = ("ObjectCreated:", "ObjectTagging:")  # a tag change re-copies (tags converge)
_DELETE_PREFIXES = ("ObjectRemoved:", "LifecycleExpiration:")
_EB_PUT = {"Object Created", "Object Tags Added", "Object Tags Deleted"}
_EB_DELETE = {"Object Deleted"}


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 with or without 'Z' / offset; naive times are UTC (moto sends naive)."""
    if not value or not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_body(body: str, *, eventbridge_keys_encoded: bool = True) -> list[ObjectEvent]:
    """All object events in one SQS message body. Raises MalformedEvent."""
    try:
        doc = json.loads(body)
    except (ValueError, TypeError) as e:
        raise MalformedEvent(f"body is not JSON: {e}") from None
    return parse_document(doc, eventbridge_keys_encoded=eventbridge_keys_encoded)


def parse_document(doc: Any, *, eventbridge_keys_encoded: bool = True, _depth: int = 0) -> list[ObjectEvent]:
    if not isinstance(doc, dict):
        raise MalformedEvent(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("Type") == "Notification" and "Message" in doc:  # SNS envelope
        if _depth:
            raise MalformedEvent("nested SNS envelopes")
        inner = doc["Message"]
        if not isinstance(inner, str):
            raise MalformedEvent("SNS Message is not a string")
        try:
            return parse_document(json.loads(inner), eventbridge_keys_encoded=eventbridge_keys_encoded, _depth=1)
        except ValueError as e:
            raise MalformedEvent(f"SNS Message is not JSON: {e}") from None
    if doc.get("Event") == "s3:TestEvent":
        return []
    if doc.get("source") == "aws.s3" and "detail" in doc:
        return _eventbridge(doc, eventbridge_keys_encoded)
    records = doc.get("Records")
    if records is None:
        raise MalformedEvent("no Records in message (neither an S3, SNS nor EventBridge notification)")
    if not isinstance(records, list):
        raise MalformedEvent("Records is not a list")
    return [ev for i, r in enumerate(records) if (ev := _record(r, i)) is not None]


def _record(r: Any, i: int) -> ObjectEvent | None:
    if not isinstance(r, dict):
        raise MalformedEvent(f"Records[{i}] is not an object")
    if r.get("eventSource") not in ("aws:s3", None):
        raise MalformedEvent(f"Records[{i}] is from {r.get('eventSource')!r}, not aws:s3")
    name = r.get("eventName") or ""
    if name.startswith("s3:"):
        name = name[3:]
    if name.startswith(_PUT_PREFIXES):
        op = "put"
    elif name.startswith(_DELETE_PREFIXES):
        op = "delete"
    elif name:
        return None  # restore, ACL, lifecycle transition, replication: nothing to copy
    else:
        raise MalformedEvent(f"Records[{i}] has no eventName")
    try:
        s3 = r["s3"]
        bucket = s3["bucket"]["name"]
        obj = s3["object"]
        key = unquote_plus(obj["key"])
    except (KeyError, TypeError):
        raise MalformedEvent(f"Records[{i}] lacks s3.bucket.name or s3.object.key") from None
    if not isinstance(bucket, str) or not bucket:
        raise MalformedEvent(f"Records[{i}] has an empty bucket name")
    return ObjectEvent(
        container_id=f"s3://{bucket}",
        key=key,
        op=op,
        event_time=parse_time(r.get("eventTime")),
        version_id=obj.get("versionId") or None,
        etag=(obj.get("eTag") or "").strip('"') or None,
        sequencer=obj.get("sequencer") or None,
        size=_int(obj.get("size")),
        event_name=name,
    )


def _eventbridge(doc: dict, keys_encoded: bool) -> list[ObjectEvent]:
    kind = doc.get("detail-type")
    if kind in _EB_PUT:
        op = "put"
    elif kind in _EB_DELETE:
        op = "delete"
    else:
        return []
    d = doc["detail"]
    try:
        bucket = d["bucket"]["name"]
        obj = d["object"]
        key = unquote_plus(obj["key"]) if keys_encoded else obj["key"]
    except (KeyError, TypeError):
        raise MalformedEvent("EventBridge detail lacks bucket.name or object.key") from None
    return [ObjectEvent(
        container_id=f"s3://{bucket}",
        key=key,
        op=op,
        event_time=parse_time(doc.get("time")),
        version_id=obj.get("version-id") or None,
        etag=(obj.get("etag") or "").strip('"') or None,
        sequencer=obj.get("sequencer") or None,
        size=_int(obj.get("size")),
        event_name=str(kind),
    )]


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None
