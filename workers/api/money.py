"""Budgets through the API (a tenant's ``models`` scope), and ``/metrics`` (operator tokens)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from models import budgets
from models.db import session_scope
from models.tokens import Principal
from workers.api.auth import models_tenant, operator
from workers.api.errors import ERROR_RESPONSES

router = APIRouter(responses=ERROR_RESPONSES)


class BudgetSet(BaseModel):
    period: Literal["day", "month"]
    tokens: int | None = Field(default=None, ge=0, le=budgets.MAX_TOKENS, description="token limit per period")
    cost: float | None = Field(
        default=None, ge=0, le=budgets.MAX_COST, allow_inf_nan=False, description="cost limit in USD per period"
    )
    model: str | None = Field(default=None, max_length=400, description="NAME@FACTORY; omit for all models")


@router.get("/api/budgets", tags=["budgets"], summary="The tenant's budgets: limit, spent, remaining, period end")
def budget_show(tenant_id: str = Depends(models_tenant)) -> list[dict[str, Any]]:
    with session_scope() as session:
        return budgets.show_budgets(session, tenant_id)


@router.put("/api/budgets", tags=["budgets"], summary="Set (or replace) a budget")
def budget_set(req: BudgetSet, tenant_id: str = Depends(models_tenant)) -> dict[str, Any]:
    with session_scope() as session:
        return budgets.set_budget(
            session, tenant_id, period=req.period, tokens=req.tokens, cost=req.cost, model=req.model or ""
        )


@router.delete("/api/budgets", tags=["budgets"], summary="Clear a budget")
def budget_clear(
    model: str | None = Query(default=None, max_length=400), tenant_id: str = Depends(models_tenant)
) -> dict[str, Any]:
    with session_scope() as session:
        budgets.clear_budget(session, tenant_id, model or "")
    return {"cleared": True, "model": model}


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics (operator tokens)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(_: Principal = Depends(operator)) -> Response:
    from workers.metrics import exposition

    body, content_type = exposition()
    return Response(body, media_type=content_type)
