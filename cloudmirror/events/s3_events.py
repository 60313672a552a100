"""Parse S3 event notifications as they arrive in an SQS message body.

Accepted shapes (one message may carry several records):
- S3 -> SQS directly: ``{"Records": [{"eventSource": "aws:s3", ...}]}``, keys form-encoded;
- S3 -> SNS -> SQS, enveloped: ``{"Type": "Notification", "Message": "<the S3 JSON>"}``;
- S3 -> SNS -> SQS with raw delivery: the S3 JSON itself;
- S3 -> EventBridge -> SQS: ``{"source": "aws.s3", "detail-type": "Object Created", "detail": {...}}``;
  keys URL-encoded (LocalStack, and S3's own notifications) unless the feed says they are
  plain (moto).
``s3:TestEvent`` messages carry no events. Anything else raises MalformedEvent with the reason.

Every field is untrusted input: a value of the wrong type or beyond what S3 itself allows
(a key over 1024 bytes or with a NUL, a size that is not a byte count, a sequencer that is
not a short string) makes its record malformed, with the reason. `parse_message` keeps the
good records of a message whose other records are malformed (each rejected with its
reason); `parse_body` is the strict form.
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


S3_MAX_KEY_BYTES = 1024  # S3's own limit on an object key (UTF-8)
_MAX_SHORT = 128  # etag, sequencer: what the ledger's columns hold (S3's are far shorter)
_MAX_VERSION_ID = 1024
_MAX_SIZE = 2**63 - 1  # a byte count the ledger (BIGINT) can hold; S3 objects are at most 5 TiB


def parse_body(body: str, *, eventbridge_keys_encoded: bool = True) -> list[ObjectEvent]:
    """All object events in one SQS message body. Raises MalformedEvent (for the first
    malformed record too)."""
    events, rejected = parse_message(body, eventbridge_keys_encoded=eventbridge_keys_encoded)
    if rejected:
        raise MalformedEvent(rejected[0])
    return events


def parse_message(body: Any, *, eventbridge_keys_encoded: bool = True) -> tuple[list[ObjectEvent], list[str]]:
    """(the events of one message body, the reasons of its malformed records). A message
    with nothing usable (not JSON, not a notification, every record malformed) raises
    MalformedEvent with the reason. Never raises anything else."""
    try:
        doc = json.loads(body)
    except (ValueError, TypeError, RecursionError) as e:
        raise MalformedEvent(f"body is not JSON: {e}") from None
    try:
        events, rejected = _document(doc, eventbridge_keys_encoded, 0)
    except MalformedEvent:
        raise
    except Exception as e:  # noqa: BLE001 - a parser bug must classify the message, never stop the intake
        raise MalformedEvent(f"could not be parsed: {type(e).__name__}: {e}") from None
    if rejected and not events:
        raise MalformedEvent(rejected[0] if len(rejected) == 1 else "; ".join(rejected))
    return events, rejected


def parse_document(doc: Any, *, eventbridge_keys_encoded: bool = True) -> list[ObjectEvent]:
    """The events of a decoded notification (strict: MalformedEvent for any bad record)."""
    events, rejected = _document(doc, eventbridge_keys_encoded, 0)
    if rejected:
        raise MalformedEvent(rejected[0])
    return events


def _document(doc: Any, keys_encoded: bool, depth: int) -> tuple[list[ObjectEvent], list[str]]:
    if not isinstance(doc, dict):
        raise MalformedEvent(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("Type") == "Notification" and "Message" in doc:  # SNS envelope
        if depth:
            raise MalformedEvent("nested SNS envelopes")
        inner = doc["Message"]
        if not isinstance(inner, str):
            raise MalformedEvent("SNS Message is not a string")
        try:
            decoded = json.loads(inner)
        except (ValueError, RecursionError) as e:
            raise MalformedEvent(f"SNS Message is not JSON: {e}") from None
        return _document(decoded, keys_encoded, 1)
    if doc.get("Event") == "s3:TestEvent":
        return [], []
    if doc.get("source") == "aws.s3" and "detail" in doc:
        return _eventbridge(doc, keys_encoded), []
    records = doc.get("Records")
    if records is None:
        raise MalformedEvent("no Records in message (neither an S3, SNS nor EventBridge notification)")
    if not isinstance(records, list):
        raise MalformedEvent("Records is not a list")
    events, rejected = [], []
    for i, r in enumerate(records):
        try:
            ev = _record(r, i)
        except MalformedEvent as e:
            rejected.append(str(e))
            continue
        if ev is not None:
            events.append(ev)
    return events, rejected


def _record(r: Any, i: int) -> ObjectEvent | None:
    where = f"Records[{i}]"
    if not isinstance(r, dict):
        raise MalformedEvent(f"{where} is not an object")
    if r.get("eventSource") not in ("aws:s3", None):
        raise MalformedEvent(f"{where} is from {_show(r.get('eventSource'))}, not aws:s3")
    name = r.get("eventName")
    if name is not None and not isinstance(name, str):
        raise MalformedEvent(f"{where}.eventName is not a string: {_show(name)}")
    name = name or ""
    if name.startswith("s3:"):
        name = name[3:]
    if name.startswith(_PUT_PREFIXES):
        op = "put"
    elif name.startswith(_DELETE_PREFIXES):
        op = "delete"
    elif name:
        return None  # restore, ACL, lifecycle transition, replication: nothing to copy
    else:
        raise MalformedEvent(f"{where} has no eventName")
    s3 = r.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    bucket = bucket.get("name") if isinstance(bucket, dict) else None
    obj = s3.get("object") if isinstance(s3, dict) else None
    if not isinstance(obj, dict) or "key" not in obj or bucket is None:
        raise MalformedEvent(f"{where} lacks s3.bucket.name or s3.object.key")
    return _event(where, "s3.object.", bucket, obj, op, name, keys_encoded=True, time=r.get("eventTime"),
                  names=("key", "versionId", "eTag", "sequencer", "size"))


def _eventbridge(doc: dict, keys_encoded: bool) -> list[ObjectEvent]:
    kind = doc.get("detail-type")
    if not isinstance(kind, str):
        return []
    if kind in _EB_PUT:
        op = "put"
    elif kind in _EB_DELETE:
        op = "delete"
    else:
        return []
    d = doc["detail"]
    bucket = d.get("bucket") if isinstance(d, dict) else None
    bucket = bucket.get("name") if isinstance(bucket, dict) else None
    obj = d.get("object") if isinstance(d, dict) else None
    if not isinstance(obj, dict) or "key" not in obj or bucket is None:
        raise MalformedEvent("EventBridge detail lacks bucket.name or object.key")
    return [_event("EventBridge", "detail.object.", bucket, obj, op, kind, keys_encoded=keys_encoded,
                   time=doc.get("time"), names=("key", "version-id", "etag", "sequencer", "size"))]


def _event(where: str, path: str, bucket: Any, obj: dict, op: str, name: str, *, keys_encoded: bool, time: Any,
           names: tuple[str, str, str, str, str]) -> ObjectEvent:
    """One checked event. `names`: the object's fields (key, version id, etag, sequencer, size)."""
    k_key, k_vid, k_etag, k_seq, k_size = names
    if not isinstance(bucket, str) or not bucket:
        raise MalformedEvent(f"{where} has an empty or non-string bucket name: {_show(bucket)}")
    raw = obj.get(k_key)
    if not isinstance(raw, str):
        raise MalformedEvent(f"{where}: {path}{k_key} is not a string: {_show(raw)}")
    key = unquote_plus(raw) if keys_encoded else raw
    if not key:
        raise MalformedEvent(f"{where}: {path}{k_key} is empty")
    if "\x00" in key:
        raise MalformedEvent(f"{where}: {path}{k_key} contains a NUL character: {_show(key)}")
    try:
        size_b = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedEvent(f"{where}: {path}{k_key} is not valid Unicode: {_show(key)}") from None
    if size_b > S3_MAX_KEY_BYTES:
        raise MalformedEvent(f"{where}: {path}{k_key} is {size_b} bytes, more than S3's {S3_MAX_KEY_BYTES} bytes")
    version_id = _string(obj.get(k_vid), f"{where}: {path}{k_vid}", _MAX_VERSION_ID)
    etag = _string(obj.get(k_etag), f"{where}: {path}{k_etag}", _MAX_SHORT + 2)  # (with its quotes)
    etag = (etag.strip('"') or None) if etag else None
    if etag and len(etag) > _MAX_SHORT:
        raise MalformedEvent(f"{where}: {path}{k_etag} is {len(etag)} characters, more than {_MAX_SHORT}")
    sequencer = _string(obj.get(k_seq), f"{where}: {path}{k_seq}", _MAX_SHORT)
    return ObjectEvent(container_id=f"s3://{bucket}", key=key, op=op, event_time=parse_time(time),  # type: ignore[arg-type] - "put" | "delete"
                       version_id=version_id, etag=etag, sequencer=sequencer,
                       size=_size(obj.get(k_size), f"{where}: {path}{k_size}"), event_name=name)


def _string(v: Any, what: str, limit: int) -> str | None:
    """An optional short string field: None when absent or empty, else checked."""
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise MalformedEvent(f"{what} is not a string: {_show(v)}")
    if len(v) > limit:
        raise MalformedEvent(f"{what} is {len(v)} characters, more than {limit}")
    if "\x00" in v or not v.isprintable():
        raise MalformedEvent(f"{what} has control or invalid characters: {_show(v)}")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedEvent(f"{what} is not valid Unicode: {_show(v)}") from None
    return v


def _size(v: Any, what: str) -> int | None:
    """A byte count: an integer (or a string or float of one) in 0 .. 2**63-1."""
    if v is None or v == "":
        return None
    n: int | None = None
    if isinstance(v, bool):
        n = None
    elif isinstance(v, int):
        n = v
    elif isinstance(v, float) and v.is_integer():
        n = int(v)
    elif isinstance(v, str) and v.isascii() and v.strip().isdigit() and len(v) <= 20:
        n = int(v)
    if n is None or not 0 <= n <= _MAX_SIZE:
        raise MalformedEvent(f"{what} is not a byte count: {_show(v)}")
    return n


def _show(v: Any, limit: int = 80) -> str:
    """A value in a reason: its repr (escapes NULs and surrogates), cut short."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
