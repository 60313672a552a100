"""Keyset pagination shared by the service functions: a ledger query returns up to
limit + 1 rows; the extra row only says that there is a next page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_after: Any = None  # the position to continue after (the last item's id), None at the end


def page_of(rows: Sequence[T], limit: int, position: Callable[[T], Any] = lambda r: r["id"]) -> Page[T]:
    """The first `limit` rows, and the position to continue after when more rows came back."""
    items = list(rows[:limit])
    return Page(items, position(items[-1]) if len(rows) > limit and items else None)
