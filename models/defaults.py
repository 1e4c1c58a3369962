"""A tenant's default model per model type. A default counts only while it names one of the
tenant's enabled models of that type: deleting or disabling the model leaves a stale row that
every reader ignores, so no delete path has to know about defaults."""

from __future__ import annotations

from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from conf.errors import InvalidRequest
from models.tables import tenant_default_models, tenant_llm
from models.tenants import check_type, parse_model_name


def set_default_model(session: Session, tenant_id: str, model_type: str, model: str) -> None:
    """Make ``model`` (``NAME@FACTORY``) the tenant's default of ``model_type``; refused unless
    it is one of the tenant's enabled models of that type."""
    check_type(model_type)
    llm_name, factory = parse_model_name(model)
    enabled = session.execute(
        select(tenant_llm.c.id).where(
            tenant_llm.c.tenant_id == tenant_id,
            tenant_llm.c.factory == factory,
            tenant_llm.c.llm_name == llm_name,
            tenant_llm.c.model_type == model_type,
            tenant_llm.c.status == "enabled",
        )
    ).first()
    if enabled is None:
        raise InvalidRequest(f"{model} is not one of this tenant's enabled {model_type} models")
    values = {"tenant_id": tenant_id, "model_type": model_type, "llm_name": llm_name, "factory": factory}
    changed = {"llm_name": llm_name, "factory": factory, "updated_at": func.now()}
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(tenant_default_models)
        .values(**values)
        .on_conflict_do_update(index_elements=["tenant_id", "model_type"], set_=changed)
    )


def clear_default_model(session: Session, tenant_id: str, model_type: str) -> None:
    check_type(model_type)
    session.execute(
        delete(tenant_default_models).where(
            tenant_default_models.c.tenant_id == tenant_id, tenant_default_models.c.model_type == model_type
        )
    )


def default_models(session: Session, tenant_id: str) -> dict[str, str]:
    """The tenant's defaults that still name an enabled model: model type -> ``NAME@FACTORY``."""
    d, t = tenant_default_models, tenant_llm
    rows = session.execute(
        select(d.c.model_type, d.c.llm_name, d.c.factory)
        .join(
            t,
            and_(
                t.c.tenant_id == d.c.tenant_id,
                t.c.factory == d.c.factory,
                t.c.llm_name == d.c.llm_name,
                t.c.model_type == d.c.model_type,
            ),
        )
        .where(d.c.tenant_id == tenant_id, t.c.status == "enabled")
        .order_by(d.c.model_type)
    )
    return {r.model_type: f"{r.llm_name}@{r.factory}" for r in rows}
