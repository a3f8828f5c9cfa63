"""Subscriptions: start, change plan with proration, cancel, pause and resume."""

import uuid

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from services.api import schemas
from services.api.dependencies import (
    AUTHORIZED,
    CurrentRuntime,
    DatabaseSession,
    ReadSession,
    read,
)
from services.api.idempotency import Idempotent
from services.api.pagination import Cursor, Limit, paginate
from services.api.routes import body_references, error_responses
from services.billing import subscriptions
from services.billing.models import Subscription, SubscriptionStatus

router = APIRouter(
    prefix="/v1/subscriptions",
    tags=["subscriptions"],
    dependencies=AUTHORIZED,
    responses=error_responses(),
)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=schemas.Subscription)
def create_subscription(
    body: schemas.SubscriptionCreate,
    session: DatabaseSession,
    runtime: CurrentRuntime,
    idempotency: Idempotent,
) -> Response:
    with body_references(customer_not_found="customer_id", plan_not_found="plan_id"):
        subscription = subscriptions.start_subscription(
            session, customer_id=body.customer_id, plan_id=body.plan_id, now=runtime.clock()
        )
    return idempotency.respond(schemas.Subscription.model_validate(subscription), status=201)


@router.get("")
async def list_subscriptions(
    session: ReadSession,
    customer_id: uuid.UUID | None = None,
    status: SubscriptionStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> schemas.Page[schemas.Subscription]:
    query = select(Subscription)
    if customer_id is not None:
        query = query.where(Subscription.customer_id == customer_id)
    if status is not None:
        query = query.where(Subscription.status == status)
    return await read(
        session,
        lambda s: paginate(
            s, query, Subscription.id, schemas.Subscription, limit=limit, cursor=cursor
        ),
    )


@router.get("/{subscription_id}")
async def get_subscription(
    subscription_id: uuid.UUID, session: ReadSession
) -> schemas.Subscription:
    return await read(
        session,
        lambda s: schemas.Subscription.model_validate(
            subscriptions.get_subscription(s, subscription_id)
        ),
    )


@router.post("/{subscription_id}/change-plan", response_model=schemas.PlanChangeResult)
def change_plan(
    subscription_id: uuid.UUID,
    body: schemas.PlanChange,
    session: DatabaseSession,
    runtime: CurrentRuntime,
    idempotency: Idempotent,
) -> Response:
    with body_references(plan_not_found="plan_id"):
        subscription, invoice = subscriptions.change_plan(
            session, subscription_id, plan_id=body.plan_id, now=runtime.clock()
        )
    return idempotency.respond(
        schemas.PlanChangeResult(
            subscription=schemas.Subscription.model_validate(subscription),
            invoice=schemas.Invoice.model_validate(invoice) if invoice is not None else None,
        )
    )


@router.post("/{subscription_id}/cancel", response_model=schemas.Subscription)
def cancel_subscription(
    subscription_id: uuid.UUID,
    body: schemas.Cancellation,
    session: DatabaseSession,
    runtime: CurrentRuntime,
    idempotency: Idempotent,
) -> Response:
    subscription = subscriptions.cancel(
        session, subscription_id, at_period_end=body.at_period_end, now=runtime.clock()
    )
    return idempotency.respond(schemas.Subscription.model_validate(subscription))


@router.post("/{subscription_id}/pause", response_model=schemas.Subscription)
def pause_subscription(
    subscription_id: uuid.UUID,
    session: DatabaseSession,
    runtime: CurrentRuntime,
    idempotency: Idempotent,
) -> Response:
    subscription = subscriptions.pause(session, subscription_id, now=runtime.clock())
    return idempotency.respond(schemas.Subscription.model_validate(subscription))


@router.post("/{subscription_id}/resume", response_model=schemas.Subscription)
def resume_subscription(
    subscription_id: uuid.UUID,
    session: DatabaseSession,
    runtime: CurrentRuntime,
    idempotency: Idempotent,
) -> Response:
    subscription = subscriptions.resume(session, subscription_id, now=runtime.clock())
    return idempotency.respond(schemas.Subscription.model_validate(subscription))
