"""A stand-in for Event Grid (which has no emulator): Azure Blob Storage events exactly as
Event Grid delivers them into a Storage Queue, in its own schema or as CloudEvents 1.0 (the
wire format cloudmirror.events.eventgrid reads and documents), for tests and the local cloud.

`blob_event` builds one BlobCreated / BlobDeleted event, `encode_eventgrid_message` the queue
message text, `FakeEventGridPublisher` turns blob writes into messages sent by a callable, and
`publish_blob_event` sends one event into an az:// queue.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from cloudmirror.events.azure_queue import open_queue_client
from cloudmirror.events.eventgrid import CREATED, DELETED

Schema = Literal["eventgrid", "cloudevents"]

_SEQ = itertools.count(1)
_SEQ_LOCK = threading.Lock()


def next_sequencer() -> str:
    """A sequencer like Azure's (32 hex digits), increasing within this process."""
    with _SEQ_LOCK:
        n = next(_SEQ)
    return f"{time.time_ns() // 1000:016x}{n:016x}".upper()


def topic_for(account: str, *, subscription_id: str = "00000000-0000-0000-0000-000000000000",
              resource_group: str = "cloudmirror-local") -> str:
    return (f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.Storage/storageAccounts/{account}")


def blob_url(account: str, container: str, blob: str, *, blob_endpoint: str | None = None) -> str:
    """The blob URL as Event Grid writes it: percent-encoded path, public endpoint by default."""
    base = (blob_endpoint or f"https://{account}.blob.core.windows.net").rstrip("/")
    return f"{base}/{container}/{quote(blob, safe='/')}"


def _event_time_text(when: datetime | None) -> str:
    when = when or datetime.now(UTC)
    when = when.astimezone(UTC)
    # Event Grid writes 7 fractional digits (100 ns ticks)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}0Z"


def blob_event(event_type: str, *, account: str, container: str, blob: str, schema: Schema = "eventgrid",
               etag: str | None = None, content_length: int | None = None,
               content_type: str = "application/octet-stream", blob_type: str = "BlockBlob",
               api: str | None = None, sequencer: str | None = None, version_id: str | None = None,
               event_time: datetime | None = None, event_id: str | None = None,
               subscription_id: str = "00000000-0000-0000-0000-000000000000",
               resource_group: str = "cloudmirror-local", blob_endpoint: str | None = None) -> dict:
    """One Blob Storage event exactly as Event Grid delivers it (BlobCreated or BlobDeleted).

    ``etag`` may be given with or without quotes; it is written quoted, as the service does.
    """
    if event_type not in (CREATED, DELETED):
        raise ValueError(f"blob_event makes {CREATED} or {DELETED}, not {event_type!r}")
    created = event_type == CREATED
    request_id = str(uuid.uuid4())
    data: dict[str, Any] = {"api": api or ("PutBlob" if created else "DeleteBlob")}
    if created:
        data["clientRequestId"] = str(uuid.uuid4())
    data["requestId"] = request_id
    if created:
        if etag is None:
            raise ValueError("a BlobCreated event needs the blob's etag")
        data["eTag"] = '"' + etag.strip('"') + '"'
    data["contentType"] = content_type
    if created:
        data["contentLength"] = int(content_length or 0)
    data["blobType"] = blob_type
    data["url"] = blob_url(account, container, blob, blob_endpoint=blob_endpoint)
    data["sequencer"] = sequencer or next_sequencer()
    if version_id:
        data["versionId"] = version_id
    data["storageDiagnostics"] = {"batchId": str(uuid.uuid4())}
    topic = topic_for(account, subscription_id=subscription_id, resource_group=resource_group)
    subject = f"/blobServices/default/containers/{container}/blobs/{blob}"
    when = _event_time_text(event_time)
    eid = event_id or request_id
    if schema == "cloudevents":
        return {"source": topic, "subject": subject, "type": event_type, "time": when, "id": eid, "data": data,
                "specversion": "1.0"}
    if schema != "eventgrid":
        raise ValueError(f"schema is 'eventgrid' or 'cloudevents', not {schema!r}")
    return {"topic": topic, "subject": subject, "eventType": event_type, "eventTime": when, "id": eid, "data": data,
            "dataVersion": "", "metadataVersion": "1"}


def encode_eventgrid_message(events: dict | list[dict], *, base64_encode: bool = True) -> str:
    """The Storage Queue message text for one event (or an array): base64 of the UTF-8 JSON,
    as Event Grid's storage-queue handler writes it, or the JSON itself."""
    text = json.dumps(events, ensure_ascii=False, separators=(",", ":"))
    return base64.b64encode(text.encode("utf-8")).decode("ascii") if base64_encode else text


class FakeEventGridPublisher:
    """Stands in for Event Grid: turns blob writes / deletes into queue messages.

    ``send`` takes the message text (e.g. a sync ``QueueClient.send_message``; an async one
    works with the ``a``-prefixed methods). Sequencers increase per publisher call.
    """

    def __init__(self, account: str, send: Callable[[str], Any], *, schema: Schema = "eventgrid",
                 base64_encode: bool = True, **event_kw: Any):
        self.account = account
        self.send = send
        self.schema = schema
        self.base64_encode = base64_encode
        self.event_kw = event_kw
        self.sent: list[dict] = []

    def created_event(self, container: str, blob: str, *, etag: str, size: int, **kw: Any) -> dict:
        return blob_event(CREATED, account=self.account, container=container, blob=blob, schema=self.schema,
                          etag=etag, content_length=size, **{**self.event_kw, **kw})

    def deleted_event(self, container: str, blob: str, **kw: Any) -> dict:
        return blob_event(DELETED, account=self.account, container=container, blob=blob, schema=self.schema,
                          **{**self.event_kw, **kw})

    def created_from_properties(self, props: Any, **kw: Any) -> dict:
        """BlobCreated for an azure-storage-blob BlobProperties (after an upload)."""
        settings = getattr(props, "content_settings", None)
        return self.created_event(props.container, props.name, etag=props.etag, size=props.size,
                                  content_type=getattr(settings, "content_type", None) or "application/octet-stream",
                                  version_id=getattr(props, "version_id", None), **kw)

    def encode(self, events: dict | Iterable[dict]) -> str:
        payload = events if isinstance(events, dict) else list(events)
        return encode_eventgrid_message(payload, base64_encode=self.base64_encode)

    def publish(self, events: dict | Iterable[dict]) -> Any:
        payload = events if isinstance(events, dict) else list(events)
        self.sent.extend([payload] if isinstance(payload, dict) else payload)
        return self.send(self.encode(payload))

    async def apublish(self, events: dict | Iterable[dict]) -> Any:
        return await self.publish(events)


async def publish_blob_event(queue_url: str, loc: Any, key: str, op: Literal["put", "delete"], meta: Any = None, *,
                             schema: Schema = "eventgrid", base64_encode: bool = True,
                             sequencer: str | None = None) -> dict:
    """Send what Event Grid would deliver for one write / delete of `key` (the full blob
    name) in the az:// Location `loc` into the az:// queue `queue_url`. `meta` is the
    store's ObjectMeta after a put (etag, size, content_type, version_id). Returns the event."""
    if op == "put":
        if meta is None:
            raise ValueError("a put needs the blob's ObjectMeta (etag, size)")
        event = blob_event(CREATED, account=loc.account, container=loc.bucket, blob=key, schema=schema,
                           etag=meta.etag or "", content_length=meta.size,
                           content_type=meta.content_type or "application/octet-stream",
                           version_id=meta.version_id, sequencer=sequencer)
    elif op == "delete":
        event = blob_event(DELETED, account=loc.account, container=loc.bucket, blob=key, schema=schema,
                           sequencer=sequencer)
    else:
        raise ValueError(f"op is put or delete, not {op!r}")
    client, cred = open_queue_client(queue_url, aio=True)
    try:
        await client.send_message(encode_eventgrid_message(event, base64_encode=base64_encode))
    finally:
        await client.close()
        if cred is not None:
            await cred.close()
    return event
