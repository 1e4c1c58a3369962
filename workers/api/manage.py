"""Native model management (the CLI's ``factories``, ``keys set``, ``llm ...``, ``my-llms``,
``usage``) and the operator's tenants. The operations are ``models.admin`` / ``models.tenants``;
this module reads requests and answers. A key is never answered: at most its last four characters."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from models import admin
from models.db import session_scope
from models.tables import tenants
from models.tenants import create_tenant, delete_factory, delete_llm, set_llm_status
from models.tokens import Principal
from models.usage import parse_moment, usage_report, usage_summary
from providers.base import ModelType
from workers.api.auth import models_tenant, operator
from workers.api.errors import ERROR_RESPONSES
from workers.llm_commands import model_json

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)


class KeySet(BaseModel):
    api_key: str | None = Field(default=None, min_length=1, max_length=20_000)
    fields: dict[str, str] | None = Field(default=None, description="multi-part credentials by name")
    base_url: str = Field(default="", max_length=1024)
    skip_check: bool = False


class LlmAdd(KeySet):
    model: str = Field(min_length=1, max_length=400, description="NAME@FACTORY")
    type: ModelType
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)


class LlmRef(BaseModel):
    model: str = Field(min_length=1, max_length=400)
    type: ModelType


class TenantCreate(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    defaults: bool = True


class TenantModel(BaseModel):
    model: str
    factory: str
    type: str
    status: str
    used_tokens: int
    api_base: str
    max_tokens: int
    has_key: bool
    key_hint: str | None
    key_state: str
    key_checked_at: Any = None
    key_error: str | None


@router.get("/factories", tags=["models"], summary="The catalog's factories and the types modelyard serves")
def factories(_: str = Depends(models_tenant)) -> list[dict[str, Any]]:
    return admin.list_factories()


@router.put("/keys/{factory}", tags=["models"], summary="Test a key on the factory's models, then save it")
def keys_set(factory: str, req: KeySet, tenant_id: str = Depends(models_tenant)) -> dict[str, Any]:
    saved = admin.set_api_key(
        tenant_id, factory, req.api_key, fields=req.fields, base_url=req.base_url, check=not req.skip_check
    )
    checked = saved.checked_with.model if saved.checked_with else None
    return {
        "factory": saved.factory,
        "checked_with": checked,
        "key_state": "valid" if checked else "unchecked",
        "models": [{"model": m, "type": t} for m, t in saved.models],
    }


@router.post("/llms", tags=["models"], response_model=TenantModel, summary="Test a model's key, then configure it")
def llm_add(req: LlmAdd, tenant_id: str = Depends(models_tenant)) -> dict[str, Any]:
    tm = admin.add_llm(
        tenant_id,
        req.model,
        req.type,
        req.api_key,
        fields=req.fields,
        base_url=req.base_url,
        max_tokens=req.max_tokens,
        check=not req.skip_check,
    )
    return model_json(tm)


@router.post("/llms/{action}", tags=["models"], response_model=TenantModel)
def llm_change(
    action: Literal["enable", "disable"], req: LlmRef, tenant_id: str = Depends(models_tenant)
) -> dict[str, Any]:
    with session_scope() as session:
        return model_json(set_llm_status(session, tenant_id, req.model, req.type, enabled=action == "enable"))


@router.delete("/llms", tags=["models"], summary="Remove one of the tenant's models")
def llm_delete(
    model: str = Query(min_length=1, max_length=400), type: ModelType = Query(), tenant_id: str = Depends(models_tenant)
) -> dict[str, Any]:
    with session_scope() as session:
        delete_llm(session, tenant_id, model, type)
    return {"model": model, "type": type, "deleted": True}


@router.delete("/factories/{factory}", tags=["models"], summary="Remove all of the tenant's models of a factory")
def llm_delete_factory(factory: str, tenant_id: str = Depends(models_tenant)) -> dict[str, Any]:
    with session_scope() as session:
        return {"factory": factory, "deleted": delete_factory(session, tenant_id, factory)}


@router.get("/llms", tags=["models"], summary="Every catalog model, and whether it is available to the tenant")
def llm_list(type: ModelType | None = None, tenant_id: str = Depends(models_tenant)) -> list[dict[str, Any]]:
    with session_scope() as session:
        return admin.list_models(session, tenant_id, type)


@router.get("/my-llms", tags=["models"], response_model=dict[str, list[TenantModel]])
def my_llms(tenant_id: str = Depends(models_tenant)) -> dict[str, list[dict[str, Any]]]:
    with session_scope() as session:
        grouped = admin.my_llms(session, tenant_id)
    return {factory: [model_json(m) for m in models] for factory, models in grouped.items()}


@router.get("/usage", tags=["models"], summary="The tenant's calls, tokens and cost per model, day or job")
def usage(
    by: Literal["model", "day", "job"] | None = None,
    since: str | None = Query(default=None, max_length=40),
    until: str | None = Query(default=None, max_length=40),
    tenant_id: str = Depends(models_tenant),
) -> list[dict[str, Any]]:
    start, end = parse_moment(since, "since"), parse_moment(until, "until")
    with session_scope() as session:
        if by is None and start is None and end is None:
            return usage_summary(session, tenant_id)
        return usage_report(session, tenant_id, by=by or "model", since=start, until=end)


@router.post("/tenants", tags=["tenants"], summary="Create a tenant (operator tokens: scope admin)")
def tenant_create(req: TenantCreate, _: Principal = Depends(operator)) -> dict[str, str]:
    with session_scope() as session:
        tenant_id = create_tenant(session, req.name, defaults=req.defaults)
    return {"id": tenant_id, "name": req.name.strip()}


@router.get("/tenants", tags=["tenants"])
def tenant_list(_: Principal = Depends(operator)) -> list[dict[str, Any]]:
    with session_scope() as session:
        rows = session.execute(tenants.select().order_by(tenants.c.created_at))
        return [{"id": r.id, "name": r.name, "created_at": r.created_at.isoformat()} for r in rows]
