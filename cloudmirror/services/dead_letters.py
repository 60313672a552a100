"""Dead letters: messages of a feed that the intake could not use (malformed, or for a bucket
no mirror reads from), kept in the ledger with their body and reason. Operators list them,
re-drive one (parse its body again with its feed's parser and record what it announces for
the mirrors as they run now, through the intake's own Ledger.record) or discard it (kept for
audit). The REST API and the CLI both call these functions."""

from __future__ import annotations

import json

from cloudmirror.config import Config, EventFeed
from cloudmirror.errors import ConflictError, InvalidInput, NotFoundError
from cloudmirror.events.base import MalformedEvent, ObjectEvent
from cloudmirror.ledger.dead_letters import DEAD_LETTER_STATUSES, DeadLetters, VersionsRefused
from cloudmirror.ledger.repo import Ledger
from cloudmirror.paging import DEFAULT_LIMIT, Page, page_of
from cloudmirror.replication.planner import Router, unstorable

STATUS_FILTERS = (*DEAD_LETTER_STATUSES, "all")


def list_dead_letters(ledger: Ledger, *, status: str = "pending", feed: str | None = None,
                      before: int | None = None, limit: int = DEFAULT_LIMIT) -> Page[dict]:
    """Dead letters, newest first: the pending ones by default, or those of `status`
    (pending | redriven | discarded | all), of one feed when `feed` is given (its address as
    recorded). Without their bodies (get one for that)."""
    if status not in STATUS_FILTERS:
        raise InvalidInput("status", f"one of {', '.join(STATUS_FILTERS)}, got {status!r}")
    rows = DeadLetters(ledger).list(status=None if status == "all" else status, feed=feed, before=before,
                                    limit=limit)
    return page_of(rows, limit)


def get_dead_letter(ledger: Ledger, dead_letter_id: int) -> dict:
    """One dead letter with its body. Raises NotFoundError."""
    row = DeadLetters(ledger).get(dead_letter_id)
    if row is None:
        raise NotFoundError(f"no dead letter with id {dead_letter_id}")
    return row


def counts(ledger: Ledger) -> dict:
    """{"pending", "redriven", "discarded": how many, "feeds": {feed: pending}} (feeds with
    pending dead letters only)."""
    out: dict = {s: 0 for s in DEAD_LETTER_STATUSES}
    feeds: dict[str, int] = {}
    for (feed, status), n in DeadLetters(ledger).counts().items():
        out[status] = out.get(status, 0) + n
        if status == "pending":
            feeds[feed] = n
    out["feeds"] = dict(sorted(feeds.items()))
    return out


def redrive(config: Config, ledger: Ledger, dead_letter_id: int, *, by: str) -> dict:
    """Parse a pending dead letter's body again with its feed's parser; when it now
    announces versions for mirrors of `config` (the mirrors as they run now), record them as
    the intake does (Ledger.record: duplicates of versions already seen are dropped) and mark
    the dead letter redriven by `by`. Returns the dead letter with `recorded` (new versions)
    and `mirrors`. Raises NotFoundError, ConflictError (not pending; still unparseable, or
    nothing in it for any mirror: the dead letter stays pending)."""
    row = _pending(ledger, dead_letter_id, "re-driven")
    try:
        events = parse(config, row["feed"], row["body"])
    except MalformedEvent as e:
        raise ConflictError(f"dead letter {dead_letter_id} still cannot be parsed: {e}") from None
    except Exception as e:  # noqa: BLE001 - a parser's bug on stored input is a refusal, never a crash
        raise ConflictError(f"dead letter {dead_letter_id} still cannot be parsed: "
                            f"{type(e).__name__}: {e}") from None
    router = Router(config.mirrors)
    versions = [v for ev in events if router.knows(ev.container_id) for v in router.plan(ev)]
    if not versions:
        buckets = sorted({ev.container_id for ev in events})
        why = (f"no mirror reads {', '.join(buckets)} (or none holds its keys)" if buckets
               else "it announces no object writes or deletes")
        raise ConflictError(f"dead letter {dead_letter_id} has nothing to record: {why}")
    problems = [p for v in versions if (p := unstorable(v))]
    if problems:  # the intake's own check of what the ledger can hold
        raise ConflictError(f"dead letter {dead_letter_id} announces versions the ledger cannot hold: {problems[0]}")
    try:
        outcome = DeadLetters(ledger).record(versions)
    except VersionsRefused as e:
        raise ConflictError(f"dead letter {dead_letter_id} announces versions the ledger cannot hold: {e}") from None
    if not DeadLetters(ledger).resolve(dead_letter_id, "redriven", by):
        # recorded by both; Ledger.record dropped the second copy of each version
        raise ConflictError(f"dead letter {dead_letter_id} was resolved by someone else meanwhile")
    return dict(get_dead_letter(ledger, dead_letter_id), recorded=outcome.new,
                mirrors=sorted({v.mirror for v in versions}))


def discard(ledger: Ledger, dead_letter_id: int, *, by: str) -> dict:
    """Mark a pending dead letter discarded by `by` (the row stays, for audit). Raises
    NotFoundError, ConflictError (not pending)."""
    _pending(ledger, dead_letter_id, "discarded")
    if not DeadLetters(ledger).resolve(dead_letter_id, "discarded", by):
        raise ConflictError(f"dead letter {dead_letter_id} was resolved by someone else meanwhile")
    return get_dead_letter(ledger, dead_letter_id)


def _pending(ledger: Ledger, dead_letter_id: int, what: str) -> dict:
    row = get_dead_letter(ledger, dead_letter_id)
    if row["status"] != "pending":
        raise ConflictError(f"dead letter {dead_letter_id} is {row['status']} already: only pending ones are {what}")
    return row


# ------------------------------------------------------------------ parsing a stored body
def feed_kind(config: Config, feed: str) -> tuple[str, EventFeed | None]:
    """The kind of the feed at `feed` (an address as the intake recorded it), and its config
    entry when a mirror still reads from it. Raises ConflictError for an address of no kind."""
    for m in config.mirrors:
        for f in m.events:
            address = {"sqs": f.sqs, "pubsub": f.pubsub and f.pubsub.removeprefix("pubsub://").strip("/"),
                       "azure_queue": f.azure_queue}
            for kind, value in address.items():
                if value and value == feed:
                    return kind, f
    if feed.startswith(("https://", "http://")):
        return "sqs", None
    if feed.startswith(("projects/", "pubsub://")):
        return "pubsub", None
    if feed.startswith("az://"):
        return "azure_queue", None
    raise ConflictError(f"cannot tell which kind of feed {feed!r} is: its dead letters cannot be re-driven")


def parse(config: Config, feed: str, body: str) -> list[ObjectEvent]:
    """The events in a dead letter's body, parsed as its feed parses a message. Raises
    MalformedEvent (or ConflictError for a feed of unknown kind)."""
    kind, entry = feed_kind(config, feed)
    if kind == "sqs":
        from cloudmirror.events.s3_events import parse_body

        return parse_body(body, eventbridge_keys_encoded=entry is None or entry.eventbridge_keys == "encoded")
    if kind == "pubsub":
        from cloudmirror.events.gcs_events import parse_notification

        try:  # gcs_events.message_body: {"attributes": {...}, "data": "..."}
            doc = json.loads(body)
        except ValueError as e:
            raise MalformedEvent(f"the stored Pub/Sub message is not JSON: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("attributes"), dict):
            raise MalformedEvent("the stored Pub/Sub message has no attributes object")
        data = doc.get("data")
        return parse_notification({str(k): str(v) for k, v in doc["attributes"].items()},
                                  data.encode() if isinstance(data, str) else None)
    from cloudmirror.events.eventgrid import decode_queue_text, parse_document

    return parse_document(decode_queue_text(body)[0])
