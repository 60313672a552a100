"""Keyset pagination for every list the ledger serves: one page of a query ordered by an id
column, continuing after (ascending) or before (descending) a position, with one row more
than asked so that the caller (paging.page_of) knows whether there is a next page."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Engine


def keyset(q: Select, column: Any, *, limit: int, after: Any = None, before: Any = None,
           where: dict[Any, Any] | None = None) -> Select:
    """`q` (already ordered by `column`) narrowed to one page: rows past `after` and/or
    below `before`, plus a `column == value` filter for each value of `where` that is not
    None. Returns up to limit + 1 rows when executed."""
    for col, value in (where or {}).items():
        if value is not None:
            q = q.where(col == value)
    if before is not None:
        q = q.where(column < before)
    if after is not None:
        q = q.where(column > after)
    return q.limit(limit + 1)


def newest_first(q: Select, column: Any, *, limit: int, before: Any = None,
                 where: dict[Any, Any] | None = None) -> Select:
    """A page of `q`, newest (highest `column`) first, below `before`."""
    return keyset(q.order_by(column.desc()), column, limit=limit, before=before, where=where)


def oldest_first(q: Select, column: Any, *, limit: int, after: Any = None,
                 where: dict[Any, Any] | None = None) -> Select:
    """A page of `q`, oldest (lowest `column`) first, after `after`."""
    return keyset(q.order_by(column), column, limit=limit, after=after, where=where)


def read_rows(engine: Engine, q: Select) -> list[dict]:
    """Run a read and return its rows as dicts."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
