"""Tenants and their configured models (``tenant_llm``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conf.catalog import split_model_name
from conf.defaults import load_tenant_defaults
from conf.errors import Conflict, InvalidRequest, NotFound
from conf.settings import SettingsError
from models import crypto
from models.dml import rowcount
from models.tables import llm_factories, llms, tenant_llm, tenants
from providers.base import MODEL_TYPES
from providers.registry import UnsupportedModel, get_provider_class


def new_id() -> str:
    return secrets.token_hex(8)


def create_tenant(session: Session, name: str, *, defaults: bool = True) -> str:
    """A new tenant, with the default models of ``conf/tenant_defaults.toml`` unless ``defaults`` is False."""
    name = name.strip()
    if not name:
        raise InvalidRequest("tenant name must not be empty")
    tenant_id = new_id()
    try:
        with session.begin_nested():
            session.execute(tenants.insert().values(id=tenant_id, name=name))
    except IntegrityError:
        raise Conflict(f"a tenant named {name!r} already exists") from None
    if defaults:
        for default in load_tenant_defaults():
            try:
                needs_key = get_provider_class(default.model_type, parse_model_name(default.model)[1]).needs_key
            except (UnsupportedModel, InvalidRequest) as exc:
                raise SettingsError(
                    f"MODELYARD_TENANT_DEFAULTS: default {default.model} ({default.model_type}): {exc}"
                ) from None
            api_key = default.api_key()
            if api_key or not needs_key:
                save_llm(
                    session, tenant_id, default.model, default.model_type, api_key=api_key, api_base=default.base_url
                )
    return tenant_id


def resolve_tenant(session: Session, ref: str) -> str:
    """A tenant id from its id or its name."""
    row = session.execute(select(tenants.c.id).where((tenants.c.id == ref) | (tenants.c.name == ref))).first()
    if row is None:
        raise NotFound(f"no tenant {ref!r}")
    return row.id


@dataclass(frozen=True)
class TenantModel:
    id: int
    tenant_id: str
    factory: str
    llm_name: str
    model_type: str
    api_base: str
    max_tokens: int
    used_tokens: int
    status: str
    key_state: str
    key_checked_at: datetime | None
    key_error: str | None
    has_key: bool
    key_version: int
    key_hint: str | None = None
    rpm_limit: int | None = None  # the tenant's own limits for this model's key (tasks/limiter.py)
    tpm_limit: int | None = None
    max_concurrency: int | None = None

    @property
    def full_name(self) -> str:
        return f"{self.llm_name}@{self.factory}"


def _to_model(row: Row) -> TenantModel:
    return TenantModel(
        id=row.id,
        tenant_id=row.tenant_id,
        factory=row.factory,
        llm_name=row.llm_name,
        model_type=row.model_type,
        api_base=row.api_base,
        max_tokens=row.max_tokens,
        used_tokens=row.used_tokens,
        status=row.status,
        key_state=row.key_state,
        key_checked_at=row.key_checked_at,
        key_error=row.key_error,
        has_key=row.api_key_enc is not None,
        key_version=row.key_version,
        key_hint=row.key_hint,
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        max_concurrency=row.max_concurrency,
    )


def check_type(model_type: str) -> None:
    if model_type not in MODEL_TYPES:
        raise InvalidRequest(f"model type must be one of {', '.join(MODEL_TYPES)}; got {model_type!r}")


def key_hint(secret: str) -> str:
    """What people may see of a key: its last four characters (none of a short one)."""
    return secret[-4:] if len(secret) >= 12 else ""


def _where_model(tenant_id: str, factory: str, llm_name: str, model_type: str) -> ColumnElement[bool]:
    return (
        (tenant_llm.c.tenant_id == tenant_id)
        & (tenant_llm.c.factory == factory)
        & (tenant_llm.c.llm_name == llm_name)
        & (tenant_llm.c.model_type == model_type)
    )


def upsert_llm(
    session: Session, tenant_id: str, factory: str, llm_name: str, model_type: str, values: dict[str, Any]
) -> int:
    """Insert or update one ``tenant_llm`` row; a changed key bumps ``key_version`` (workers rebuild bundles)."""
    where = _where_model(tenant_id, factory, llm_name, model_type)
    existing = session.execute(select(tenant_llm.c.id).where(where)).first()
    if existing:
        session.execute(
            update(tenant_llm)
            .where(tenant_llm.c.id == existing.id)
            .values(**values, key_version=tenant_llm.c.key_version + 1)
        )
        return existing.id
    return session.execute(
        tenant_llm.insert()
        .values(tenant_id=tenant_id, factory=factory, llm_name=llm_name, model_type=model_type, **values)
        .returning(tenant_llm.c.id)
    ).scalar_one()


def catalog_max_tokens(session: Session, factory: str, llm_name: str, model_type: str) -> int:
    row = session.execute(
        select(llms.c.max_tokens).where(
            llms.c.factory == factory, llms.c.llm_name == llm_name, llms.c.model_type == model_type
        )
    ).first()
    return row.max_tokens if row else 0


def save_llm(
    session: Session,
    tenant_id: str,
    model: str,
    model_type: str,
    *,
    api_key: str | None = None,
    api_base: str = "",
    max_tokens: int | None = None,
    key_state: str = "unchecked",
    hint: str | None = None,
) -> TenantModel:
    """Store (or replace) one model's configuration, key encrypted, without testing the key.
    :func:`models.admin.add_llm` is the operation users call: it tests the key first."""
    check_type(model_type)
    llm_name, factory = parse_model_name(model)
    if session.execute(select(llm_factories.c.name).where(llm_factories.c.name == factory)).first() is None:
        raise NotFound(f"no factory {factory!r} in the catalog (see `modelyard factories`)")
    try:
        provider = get_provider_class(model_type, factory)
    except UnsupportedModel as exc:
        raise InvalidRequest(str(exc)) from None
    if provider.needs_key and not api_key:
        raise InvalidRequest(f"{factory} needs an API key (--api-key)")
    if max_tokens is None:
        max_tokens = catalog_max_tokens(session, factory, llm_name, model_type)
    values = {
        "api_key_enc": crypto.encrypt(api_key) if api_key else None,
        "key_hint": hint if hint is not None else (key_hint(api_key) if api_key else None),
        "api_base": api_base,
        "max_tokens": max_tokens,
        "status": "enabled",
        "key_state": key_state,
        "key_error": None,
        "key_checked_at": func.now() if key_state != "unchecked" else None,
    }
    upsert_llm(session, tenant_id, factory, llm_name, model_type, values)
    return get_tenant_model(session, tenant_id, model, model_type)


LIMIT_FIELDS = {"rpm": "rpm_limit", "tpm": "tpm_limit", "max_concurrency": "max_concurrency"}


def set_llm_limits(session: Session, tenant_id: str, model: str, model_type: str, **limits: int | None) -> TenantModel:
    """Set the tenant's own limits on a model (``rpm``, ``tpm``, ``max_concurrency``): None
    leaves one as it is, 0 clears it (the provider's advertised or learned limit applies)."""
    values: dict[str, int | None] = {}
    for name, value in limits.items():
        if name not in LIMIT_FIELDS:
            raise InvalidRequest(f"unknown limit {name!r}; known: {', '.join(LIMIT_FIELDS)}")
        if value is None:
            continue
        if not 0 <= value <= 2**31 - 1:  # an integer column
            raise InvalidRequest(
                f"--{name.replace('_', '-')} must be 0 (no limit of the tenant's own) up to {2**31 - 1:,}, got {value}"
            )
        values[LIMIT_FIELDS[name]] = value or None
    tm = get_tenant_model(session, tenant_id, model, model_type)
    if values:
        session.execute(update(tenant_llm).where(tenant_llm.c.id == tm.id).values(**values))
        tm = get_tenant_model(session, tenant_id, model, model_type)
    return tm


def parse_model_name(model: str) -> tuple[str, str]:
    """``NAME@FACTORY`` -> (name, factory), or a clear InvalidRequest."""
    try:
        return split_model_name(model)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def get_tenant_model(session: Session, tenant_id: str, model: str, model_type: str) -> TenantModel:
    llm_name, factory = parse_model_name(model)
    row = session.execute(select(tenant_llm).where(_where_model(tenant_id, factory, llm_name, model_type))).first()
    if row is None:
        raise NotFound(f"model {model} ({model_type}) is not configured for this tenant (see `modelyard llm add`)")
    return _to_model(row)


def set_llm_status(session: Session, tenant_id: str, model: str, model_type: str, *, enabled: bool) -> TenantModel:
    tm = get_tenant_model(session, tenant_id, model, model_type)
    session.execute(
        update(tenant_llm).where(tenant_llm.c.id == tm.id).values(status="enabled" if enabled else "disabled")
    )
    return get_tenant_model(session, tenant_id, model, model_type)


def delete_llm(session: Session, tenant_id: str, model: str, model_type: str) -> None:
    tm = get_tenant_model(session, tenant_id, model, model_type)
    session.execute(delete(tenant_llm).where(tenant_llm.c.id == tm.id))


def delete_factory(session: Session, tenant_id: str, factory: str) -> int:
    """Remove all of a tenant's models of one factory; returns how many."""
    removed = rowcount(
        session, delete(tenant_llm).where(tenant_llm.c.tenant_id == tenant_id, tenant_llm.c.factory == factory)
    )
    if not removed:
        raise NotFound(f"this tenant has no models of factory {factory!r}")
    return removed


def list_tenant_models(session: Session, tenant_id: str, factory: str | None = None) -> list[TenantModel]:
    query = select(tenant_llm).where(tenant_llm.c.tenant_id == tenant_id)
    if factory is not None:
        query = query.where(tenant_llm.c.factory == factory)
    rows = session.execute(query.order_by(tenant_llm.c.factory, tenant_llm.c.llm_name, tenant_llm.c.model_type))
    return [_to_model(r) for r in rows]


def load_key(session: Session, tenant_llm_id: int) -> tuple[str | None, int]:
    """The decrypted key and its version. Only workers (and key validation) call this."""
    row = session.execute(
        select(tenant_llm.c.api_key_enc, tenant_llm.c.key_version).where(tenant_llm.c.id == tenant_llm_id)
    ).one()
    return (crypto.decrypt(row.api_key_enc) if row.api_key_enc else None), row.key_version
