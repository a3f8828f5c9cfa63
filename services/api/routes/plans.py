"""Plans: immutable prices; a new price is a new plan."""

import uuid

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from services.api import schemas
from services.api.dependencies import (
    ADMIN_ONLY,
    AUTHORIZED,
    CurrentPrincipal,
    CurrentRuntime,
    DatabaseSession,
    ReadSession,
    read,
)
from services.api.fast import fast_path
from services.api.idempotency import Idempotent
from services.api.pagination import Cursor, Limit, paginate
from services.api.reads import SingleRow
from services.api.routes import error_responses
from services.billing import catalog
from services.billing.models import Plan

router = APIRouter(
    prefix="/v1/plans",
    tags=["plans"],
    dependencies=AUTHORIZED,
    responses=error_responses(),
)
# Also served by services/api/fast.py, without FastAPI, when the request is sound.
PLAN = SingleRow(Plan, schemas.Plan, resource="plan")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=schemas.Plan, **ADMIN_ONLY)
def create_plan(
    body: schemas.PlanCreate, session: DatabaseSession, idempotency: Idempotent
) -> Response:
    plan = catalog.create_plan(
        session,
        name=body.name,
        amount=body.amount,
        currency=body.currency,
        interval=body.interval,
        trial_days=body.trial_days,
    )
    return idempotency.respond(schemas.Plan.model_validate(plan), status=201)


@router.get("")
async def list_plans(
    session: ReadSession, limit: Limit = 20, cursor: Cursor = None
) -> schemas.Page[schemas.Plan]:
    return await read(
        session,
        lambda s: paginate(s, select(Plan), Plan.id, schemas.Plan, limit=limit, cursor=cursor),
    )


@router.get("/{plan_id}")
@fast_path(PLAN)
async def get_plan(
    plan_id: uuid.UUID, runtime: CurrentRuntime, principal: CurrentPrincipal
) -> schemas.Plan:
    return await runtime.rows.one(PLAN, principal.tenant_id, plan_id)
