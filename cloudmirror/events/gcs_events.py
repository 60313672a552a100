"""Parse Cloud Storage (GCS) Pub/Sub notifications into ObjectEvents.

A notification is one Pub/Sub message: the facts are in its attributes
(``eventType``, ``bucketId``, ``objectId``, ``objectGeneration``, ``eventTime``,
``payloadFormat``, ``overwroteGeneration`` / ``overwrittenByGeneration``) and, with
``payloadFormat=JSON_API_V1``, the data is the object resource as JSON
(``generation``, ``metageneration``, ``size``, ``updated``, ... numbers as strings).
``payloadFormat=NONE`` sends attributes only.

Normalisation (the contract shared with the planner and the ledger):

- container_id ``gs://<bucketId>``, key = objectId exactly (GCS does not encode it);
- OBJECT_FINALIZE, OBJECT_METADATA_UPDATE -> put; OBJECT_DELETE, OBJECT_ARCHIVE -> delete
  (ARCHIVE: the live object of a versioned bucket became noncurrent);
- a DELETE / ARCHIVE carrying ``overwrittenByGeneration`` is the old half of an overwrite,
  whose FINALIZE arrives separately: it yields no event (see `is_overwrite_half`);
- version_id = generation, etag = ``"<generation>.<metageneration>"`` for puts; deletes
  carry no etag (like S3 and Azure deletes): the version token is ``v:<version_id>[|<etag>]``,
  so a delete of generation G with the etag of G's write would be taken for a redelivery
  of that write and dropped;
- sequencer = 16 hex digits of the generation + 8 of the metageneration for puts,
  ``FFFFFFFF`` in place of the metageneration for deletes, so that under
  ``ledger.repo.is_newer`` a later generation beats an earlier one, a metadata update beats
  the write it updates, and the delete of generation G beats every put/update of G.

The metageneration is read from the payload. Without one (``payloadFormat=NONE``, or
fake-gcs-server, which never sends it) it is 1, except for OBJECT_METADATA_UPDATE where it
is at least 2 (a metadata update always raises it from the write's 1): that keeps an
update's etag, sequencer and version token apart from the write it updates.

Anything unusable raises MalformedEvent with the reason (dead-lettered by the intake).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cloudmirror.events.base import MalformedEvent, ObjectEvent
from cloudmirror.events.s3_events import parse_time

PUT_TYPES = frozenset({"OBJECT_FINALIZE", "OBJECT_METADATA_UPDATE"})
DELETE_TYPES = frozenset({"OBJECT_DELETE", "OBJECT_ARCHIVE"})
DELETE_METAGENERATION = 0xFFFFFFFF
_MAX_GENERATION = 16 ** 16 - 1


def is_overwrite_half(attributes: Mapping[str, str]) -> bool:
    """The DELETE/ARCHIVE half of an overwrite (its FINALIZE announces the new generation)."""
    return attributes.get("eventType") in DELETE_TYPES and bool(attributes.get("overwrittenByGeneration"))


def sequencer_for(generation: int, metageneration: int, op: str) -> str:
    """Comparable sequencer: upper-case hex, generation first, then metageneration."""
    meta = DELETE_METAGENERATION if op == "delete" else metageneration
    return f"{generation:016X}{meta:08X}"


def parse_notification(attributes: Mapping[str, str], data: bytes | str | None) -> list[ObjectEvent]:
    """The events of one GCS notification (zero or one). Raises MalformedEvent."""
    if not isinstance(attributes, Mapping):
        raise MalformedEvent("the message has no attributes (not a Cloud Storage notification)")
    event_type = attributes.get("eventType")
    if not event_type:
        raise MalformedEvent("no eventType attribute (not a Cloud Storage notification)")
    bucket = attributes.get("bucketId")
    name = attributes.get("objectId")
    if not bucket or name is None or name == "":
        raise MalformedEvent(f"{event_type} names no {'bucketId' if not bucket else 'objectId'}")
    if event_type in PUT_TYPES:
        op = "put"
    elif event_type in DELETE_TYPES:
        op = "delete"
    else:
        raise MalformedEvent(f"unknown Cloud Storage eventType {event_type!r}")

    resource = _payload(attributes, data)
    if is_overwrite_half(attributes):
        return []

    generation = _count(attributes.get("objectGeneration"), "objectGeneration")
    if generation is None:
        generation = _count(resource.get("generation"), "generation")
    if generation is None:
        raise MalformedEvent(f"{event_type} for gs://{bucket}/{name} carries no objectGeneration")
    if generation > _MAX_GENERATION:
        raise MalformedEvent(f"objectGeneration {generation} is out of range")
    meta = _count(resource.get("metageneration"), "metageneration")
    if meta is None:
        meta = 2 if event_type == "OBJECT_METADATA_UPDATE" else 1
    elif meta >= DELETE_METAGENERATION:
        raise MalformedEvent(f"metageneration {meta} is out of range")

    return [ObjectEvent(
        container_id=f"gs://{bucket}",
        key=name,
        op=op,
        event_time=parse_time(attributes.get("eventTime")) or parse_time(resource.get("updated")),
        version_id=str(generation),
        etag=f"{generation}.{meta}" if op == "put" else None,
        sequencer=sequencer_for(generation, meta, op),
        size=_count(resource.get("size"), "size") if op == "put" else None,
        event_name=event_type,
    )]


def _payload(attributes: Mapping[str, str], data: bytes | str | None) -> dict:
    """The JSON object resource for JSON_API_V1, else {} (NONE or no data)."""
    fmt = attributes.get("payloadFormat") or "NONE"
    if fmt != "JSON_API_V1" or not data:
        return {}
    try:
        doc = json.loads(data)
    except (ValueError, TypeError) as e:
        raise MalformedEvent(f"payloadFormat JSON_API_V1 but the data is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise MalformedEvent(f"payloadFormat JSON_API_V1 but the data is a JSON {type(doc).__name__}, not an object")
    for field, attr in (("name", "objectId"), ("bucket", "bucketId")):
        if field in doc and doc[field] != attributes.get(attr):
            raise MalformedEvent(f"the payload's {field} {doc[field]!r} differs from the {attr} attribute "
                                 f"{attributes.get(attr)!r}")
    return doc


def _count(value: Any, what: str) -> int | None:
    """A non-negative integer sent as a string (JSON API) or number; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MalformedEvent(f"{what} is not an integer: {value!r}")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise MalformedEvent(f"{what} is not an integer: {value!r}") from None
    if n < 0:
        raise MalformedEvent(f"{what} is negative: {n}")
    return n


def message_body(attributes: Mapping[str, str], data: bytes | None) -> str:
    """A readable, self-contained text of one Pub/Sub message (kept with dead letters)."""
    text = (data or b"").decode("utf-8", errors="replace")
    return json.dumps({"attributes": dict(attributes), "data": text}, ensure_ascii=False, sort_keys=True)
