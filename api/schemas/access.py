"""API keys and the audit log."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import KEY_NAME, Out, RoleName, Timestamp


# ------------------------------------------------------------------ keys and audit
class ApiKey(Out):
    id: int
    name: str
    role: RoleName
    prefix: str = Field(description="The token's first characters, to recognise it.", examples=["cm_Xk3v9aQ"])
    created_at: Timestamp
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "prometheus",
                                                                               "role": "viewer"}]})

    name: str = Field(min_length=1, max_length=128, pattern=KEY_NAME,
                      description="What the key is for; printable, unique among active keys.")
    role: RoleName


class ApiKeyCreated(Out):
    key: ApiKey
    token: str = Field(description="The bearer token. Shown once: only its SHA-256 is stored.",
                       examples=["cm_Xk3v9aQ8mWJ0c3TqkS1oZlq2mB1d6u3y0VwXH9sYJtE"])


class AuditEntry(Out):
    id: int
    at: Timestamp
    actor: str = Field(description="The API key's name, `cli`, or `anonymous`.")
    key_id: int | None
    action: str = Field(examples=["POST /v1/mirrors/{name}/reconcile"])
    target: str | None = Field(examples=["/v1/mirrors/photos/reconcile"])
    status: int = Field(description="The HTTP status answered.")
    detail: str | None
    client: str | None
