"""Azure Blob Storage events from Event Grid, as delivered into a Storage Queue.

Both delivery schemas are read (Microsoft's "Azure Blob Storage as an Event Grid source"):

Event Grid schema::

    {"topic": "/subscriptions/S/resourceGroups/G/providers/Microsoft.Storage/storageAccounts/ACCOUNT",
     "subject": "/blobServices/default/containers/CONTAINER/blobs/BLOB PATH",
     "eventType": "Microsoft.Storage.BlobCreated", "eventTime": "2017-06-26T18:41:00.9584103Z",
     "id": "...", "data": {...}, "dataVersion": "", "metadataVersion": "1"}

CloudEvents 1.0 schema::

    {"specversion": "1.0", "type": "Microsoft.Storage.BlobCreated", "source": <the topic>,
     "subject": <as above>, "id": "...", "time": "...", "data": {...}}

with ``data`` = {api, clientRequestId, requestId, eTag, contentType, contentLength, blobType,
url, sequencer, storageDiagnostics} (a BlobDeleted has no eTag / contentLength).

The queue message text is the event JSON, base64-encoded by Event Grid's storage-queue
handler; plain JSON text is accepted as well, and so is a JSON array of events.

Keys: the subject carries the blob name as it is (not percent-encoded); ``data.url`` is a
URL and is percent-encoded. The key is taken from the subject; the URL is used only when
the subject is not a blob subject (and for BlobRenamed, whose source is only a URL).

Normalisation: container_id ``az://ACCOUNT/CONTAINER`` (account from topic/source, else
from the URL's host), op put (BlobCreated) / delete (BlobDeleted), etag = eTag without
quotes, version_id = data.versionId when present, sequencer = data.sequencer (hex; compared
by ledger.repo.is_newer), size = contentLength, event_time = eventTime / time.
BlobRenamed (accounts with a hierarchical namespace) is a delete of the source plus a put of
the destination. Other Microsoft.Storage / Microsoft.EventGrid types (BlobTierChanged,
AsyncOperationInitiated, Directory*, policy reports, subscription validation) carry nothing
to copy: no events. Any other event type, or a blob event that cannot be read, raises
MalformedEvent with the reason.

This module only reads events. cloudmirror.local.eventgrid_fake produces exactly this wire
format, for tests and the local cloud (Event Grid has no emulator).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from cloudmirror.events.base import MalformedEvent, ObjectEvent
from cloudmirror.events.s3_events import parse_time

CREATED = "Microsoft.Storage.BlobCreated"
DELETED = "Microsoft.Storage.BlobDeleted"
RENAMED = "Microsoft.Storage.BlobRenamed"
_IGNORED_PREFIXES = ("Microsoft.Storage.", "Microsoft.EventGrid.")

_ACCOUNT_IN_TOPIC = re.compile(r"/providers/Microsoft\.Storage/storageAccounts/([^/]+)", re.IGNORECASE)
_BLOB_SUBJECT = re.compile(r"^/?blobServices/default/containers/([^/]+)/blobs/(.+)$", re.DOTALL)
_ACCOUNT_HOST = re.compile(r"^([a-z0-9]+)\.(?:blob|dfs)\.", re.IGNORECASE)


# ---------------------------------------------------------------------------------- decoding
def decode_queue_text(text: str | bytes) -> tuple[Any, str]:
    """(the JSON document, "text" | "base64") of one queue message. Raises MalformedEvent."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedEvent("message is not UTF-8 text") from None
    stripped = text.strip()
    if not stripped:
        raise MalformedEvent("message is empty")
    if stripped[0] in "{[":
        try:
            return json.loads(stripped), "text"
        except ValueError as e:
            raise MalformedEvent(f"message is not valid JSON: {e}") from None
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEvent("message is neither JSON nor base64-encoded JSON") from None
    try:
        return json.loads(raw.decode("utf-8")), "base64"
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedEvent(f"message is base64 but not base64-encoded JSON: {e}") from None


def parse_queue_message(text: str | bytes) -> list[ObjectEvent]:
    """All object events in one Storage Queue message. Raises MalformedEvent."""
    doc, _ = decode_queue_text(text)
    return parse_document(doc)


def parse_document(doc: Any) -> list[ObjectEvent]:
    """Events of a decoded message: one event object or a JSON array of them."""
    if isinstance(doc, list):
        out = []
        for i, ev in enumerate(doc):
            try:
                out.extend(parse_event(ev))
            except MalformedEvent as e:
                raise MalformedEvent(f"event [{i}]: {e}") from None
        return out
    return parse_event(doc)


# ---------------------------------------------------------------------------------- one event
def parse_event(ev: Any) -> list[ObjectEvent]:
    """The object events of one Event Grid / CloudEvents event (0, 1 or, for a rename, 2)."""
    if not isinstance(ev, dict):
        raise MalformedEvent(f"expected a JSON object, got {type(ev).__name__}")
    if "specversion" in ev:
        if not str(ev["specversion"]).startswith("1."):
            raise MalformedEvent(f"unsupported CloudEvents specversion {ev['specversion']!r}")
        etype, topic, when = ev.get("type"), ev.get("source"), ev.get("time")
        data = ev.get("data")
        if data is None and "data_base64" in ev:
            try:
                data = json.loads(base64.b64decode(ev["data_base64"]))
            except (binascii.Error, ValueError, TypeError) as e:
                raise MalformedEvent(f"data_base64 is not base64 JSON: {e}") from None
    elif "eventType" in ev:
        etype, topic, when, data = ev.get("eventType"), ev.get("topic"), ev.get("eventTime"), ev.get("data")
    else:
        raise MalformedEvent("neither an Event Grid event (eventType) nor a CloudEvent (specversion)")
    if not isinstance(etype, str) or not etype:
        raise MalformedEvent("the event has no type")
    if etype not in (CREATED, DELETED, RENAMED):
        if etype.startswith(_IGNORED_PREFIXES):
            return []  # tier changes, directories, policy runs, validation: nothing to copy
        raise MalformedEvent(f"unexpected event type {etype!r} (not a Blob Storage event)")
    if not isinstance(data, dict):
        raise MalformedEvent(f"{etype} has no data object")

    account = _account(topic, data)
    event_time = parse_time(when)
    common = dict(event_time=event_time, sequencer=_str(data.get("sequencer")),
                  version_id=_str(data.get("versionId")), event_name=etype)
    if etype == RENAMED:
        src = _url_blob(data.get("sourceUrl"), account, "sourceUrl")
        dst = _subject_blob(ev.get("subject")) or _url_blob(data.get("destinationUrl"), account, "destinationUrl")
        return [ObjectEvent(container_id=f"az://{account}/{src[0]}", key=src[1], op="delete", **common),
                ObjectEvent(container_id=f"az://{account}/{dst[0]}", key=dst[1], op="put", **common)]
    container, key = _subject_blob(ev.get("subject")) or _url_blob(data.get("url"), account, "url")
    created = etype == CREATED
    return [ObjectEvent(
        container_id=f"az://{account}/{container}",
        key=key,
        op="put" if created else "delete",
        etag=(_str(data.get("eTag")) or "").strip('"') or None,
        size=_size(data.get("contentLength")) if created else None,
        **common,
    )]


def _account(topic: Any, data: dict) -> str:
    m = _ACCOUNT_IN_TOPIC.search(topic) if isinstance(topic, str) else None
    if m:
        return m.group(1)
    url = data.get("url") or data.get("destinationUrl")
    host = urlsplit(url).hostname if isinstance(url, str) else None
    m = _ACCOUNT_HOST.match(host or "")
    if m:
        return m.group(1).lower()
    raise MalformedEvent(f"no storage account in topic/source {topic!r} nor in the blob URL")


def _subject_blob(subject: Any) -> tuple[str, str] | None:
    """(container, blob name) of a blob subject; the subject is not percent-encoded."""
    m = _BLOB_SUBJECT.match(subject) if isinstance(subject, str) else None
    return (m.group(1), m.group(2)) if m else None


def _url_blob(url: Any, account: str, what: str) -> tuple[str, str]:
    """(container, blob name) of a blob URL (percent-encoded): virtual-host style
    ``https://ACCOUNT.blob.core.windows.net/C/B`` or path style ``http://host:port/ACCOUNT/C/B``."""
    if not isinstance(url, str) or not url:
        raise MalformedEvent(f"the event has neither a blob subject nor a {what}")
    parts = urlsplit(url)
    segments = parts.path.lstrip("/").split("/")
    if not _ACCOUNT_HOST.match(parts.hostname or "") and segments and unquote(segments[0]) == account:
        segments = segments[1:]
    if len(segments) < 2 or not segments[0] or not "/".join(segments[1:]):
        raise MalformedEvent(f"{what} {url!r} names no container and blob")
    return unquote(segments[0]), unquote("/".join(segments[1:]))


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _size(v: Any) -> int | None:
    try:
        return int(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None
