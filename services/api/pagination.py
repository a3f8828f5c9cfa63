"""Keyset pagination over time-ordered ids: stable while rows are being added."""

import uuid
from typing import Annotated, Any, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import Session

from services.api.schemas import Page

Limit = Annotated[int, Query(ge=1, le=100, description="Items per page")]
Cursor = Annotated[uuid.UUID | None, Query(description="The next_cursor of the previous page")]
Item = TypeVar("Item", bound=BaseModel)


def paginate(
    session: Session,
    query: Select[Any],
    id_column: Any,
    schema: type[Item],
    *,
    limit: int,
    cursor: uuid.UUID | None,
) -> Page[Item]:
    if cursor is not None:
        query = query.where(id_column > cursor)
    rows = session.scalars(query.order_by(id_column).limit(limit + 1)).all()
    has_more = len(rows) > limit
    items = [schema.model_validate(row) for row in rows[:limit]]
    return Page[Item](
        data=items,
        has_more=has_more,
        next_cursor=rows[limit - 1].id if has_more else None,
    )
