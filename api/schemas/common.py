"""What every schema shares: the base of answers, timestamps, errors and pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

T = TypeVar("T")


def _from_epoch(v: Any) -> Any:
    return datetime.fromtimestamp(v, UTC) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


Timestamp = Annotated[datetime, BeforeValidator(_from_epoch)]
RoleName = Literal["viewer", "operator", "admin"]
KEY_NAME = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"  # printable, not blank


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ------------------------------------------------------------------ errors
class FieldError(Out):
    field: str = Field(examples=["query.limit"])
    message: str = Field(examples=["Input should be less than or equal to 1000"])


class ErrorDetail(Out):
    code: str = Field(description="Machine-readable: unauthorized, forbidden, not_found, conflict, "
                                  "validation_error, ...", examples=["not_found"])
    message: str = Field(examples=["no mirror named 'photos'"])
    fields: list[FieldError] | None = Field(None, description="For validation errors: every bad field.")


class ErrorResponse(Out):
    error: ErrorDetail


# ------------------------------------------------------------------ pagination
class Page(Out, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page.")
