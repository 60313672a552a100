"""Dead letters: messages of a feed the intake could not use, and what was done with them."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from api.schemas.common import Out, Timestamp

DeadLetterStatus = Literal["pending", "redriven", "discarded"]


class DeadLetter(Out):
    id: int = Field(description="Re-drive with POST /v1/dead-letters/{id}/redrive, discard with .../discard.")
    feed: str = Field(description="The feed's address as recorded (queue URL, subscription path, az://ACCOUNT/QUEUE).")
    message_id: str | None
    reason: str = Field(description="Why the intake could not use it.")
    received_at: Timestamp
    status: DeadLetterStatus = Field(description="pending until re-driven or discarded (both kept for audit).")
    resolved_at: Timestamp | None
    resolved_by: str | None = Field(description="The API key's name (or `cli:USER`) that re-drove or discarded it.")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 17, "feed": "https://sqs.eu-west-1.amazonaws.com/123456789012/photos-events", "message_id": "8f2c-...",
        "reason": "no mirror reads from s3://photos-new", "received_at": "2026-11-26T10:00:00Z", "status": "pending",
        "resolved_at": None, "resolved_by": None}]})


class DeadLetterDetail(DeadLetter):
    body: str = Field(description="The message as received (secrets redacted).")


class DeadLetterRedriven(DeadLetterDetail):
    recorded: int = Field(description="Versions recorded now (versions the ledger had seen already are not counted).")
    mirrors: list[str] = Field(description="The mirrors it announced versions for.")


class DeadLetterCounts(Out):
    pending: int = Field(description="Awaiting an operator (re-drive or discard).")
    redriven: int
    discarded: int
    feeds: dict[str, int] = Field(default_factory=dict, description="Pending dead letters per feed.")
