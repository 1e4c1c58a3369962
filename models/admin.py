"""Tenant model management, as functions that the CLI and the HTTP API call.

factories · set API key · add llm · delete llm · enable / disable · delete factory · my llms ·
list · rotate keys. The operations that test a key call the provider, so they open their own
short transactions around the call instead of holding one (and its locks) open across it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from conf.catalog import CatalogFactory, load_catalog
from conf.errors import InvalidRequest, NotFound
from models import crypto
from models.base_url import check_base_url
from models.db import session_scope
from models.dml import rowcount
from models.keycheck import KeyRejected, ProbeOutcome, by_probe_cost, check_until_accepted
from models.tables import tenant_llm
from models.tenants import (
    TenantModel,
    catalog_max_tokens,
    key_hint,
    list_tenant_models,
    parse_model_name,
    resolve_tenant,
    save_llm,
    set_llm_limits,
)
from providers.base import BaseModel, encode_credentials
from providers.registry import UnsupportedModel, get_provider_class, supported

# --------------------------------------------------------------------------- catalog views


def list_factories() -> list[dict[str, Any]]:
    """The catalog's factories with the types modelyard really serves (registered provider
    classes), the types it does not, the named credential fields, the internal flag, and the
    page where the provider issues keys (where known)."""
    have = supported()
    rows = []
    for f in sorted(load_catalog(), key=lambda f: (-f.rank, f.name)):
        catalog_types = sorted({t for m in f.models for t in m.model_types})
        types = have.get(f.name, [])
        classes = [get_provider_class(t, f.name) for t in types]
        fields = sorted({c.name for cls in classes for c in cls.credential_fields})
        rows.append(
            {
                "name": f.name,
                "models": len(f.models),
                "catalog_types": catalog_types,
                "supported_types": types,
                "unsupported_types": [t for t in catalog_types if t not in types],
                "credential_fields": fields,
                "internal": f.internal,
                "base_url": f.base_url or next((c.default_base_url for c in classes if c.default_base_url), ""),
                "key_url": f.key_url,
            }
        )
    return rows


def list_models(session: Session, tenant_id: str, model_type: str | None = None) -> list[dict[str, Any]]:
    """Every catalog model (one row per model type) with ``available``: supported, configured
    for this tenant, enabled, and its key not known to be invalid."""
    configured = {(m.factory, m.llm_name, m.model_type): m for m in list_tenant_models(session, tenant_id)}
    have = supported()
    rows = []
    for f in load_catalog():
        for m in f.models:
            for t in m.model_types:
                if model_type is not None and t != model_type:
                    continue
                tm = configured.get((f.name, m.name, t))
                is_supported = t in have.get(f.name, ())
                rows.append(
                    {
                        "model": m.full_name,
                        "factory": f.name,
                        "type": t,
                        "max_tokens": m.max_tokens,
                        "is_tools": m.is_tools,
                        "supported": is_supported,
                        "available": bool(is_supported and tm and tm.status == "enabled" and tm.key_state != "invalid"),
                    }
                )
    return rows


def my_llms(session: Session, tenant_id: str) -> dict[str, list[TenantModel]]:
    """The tenant's models grouped by factory."""
    grouped: dict[str, list[TenantModel]] = {}
    for m in list_tenant_models(session, tenant_id):
        grouped.setdefault(m.factory, []).append(m)
    return grouped


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeySaved:
    factory: str
    models: list[tuple[str, str]]  # (NAME@FACTORY, type) rows that now hold the key
    checked_with: ProbeOutcome | None  # the model that accepted it (None: saved unchecked)


def assemble_key(
    cls: type[BaseModel], api_key: str | None, fields: Mapping[str, str] | None
) -> tuple[str | None, str | None]:
    """The one string to store for a provider's credential, and the hint people may see.

    A plain-key provider takes ``api_key``; a multi-part one takes its named ``fields`` (and
    ``api_key`` fills its field named ``api_key``, where it has one)."""
    factory = cls.factories[0]
    named = {f.name: f for f in cls.credential_fields}
    fields = {k: v for k, v in (fields or {}).items() if v is not None}
    if not named:
        if fields:
            raise InvalidRequest(
                f"{factory} takes one API key (--api-key), not named fields ({', '.join(sorted(fields))})"
            )
        return api_key or None, (key_hint(api_key) if api_key else None)
    expected = ", ".join(f"{f.name}{'' if f.required else '?'}" for f in cls.credential_fields)
    if api_key:
        if "api_key" not in named or "api_key" in fields:
            raise InvalidRequest(f"{factory} takes named credentials, not --api-key: --field NAME=VALUE for {expected}")
        fields["api_key"] = api_key
    unknown = sorted(set(fields) - set(named))
    if unknown:
        raise InvalidRequest(f"{factory} has no credential field {', '.join(unknown)}; it takes {expected}")
    missing = [f.name for f in cls.credential_fields if f.required and not fields.get(f.name)]
    if missing:
        raise InvalidRequest(f"{factory} needs --field {', '.join(missing)} (it takes {expected})")
    first_secret = next((fields[f.name] for f in cls.credential_fields if f.secret and fields.get(f.name)), "")
    return encode_credentials(fields), key_hint(first_secret)


def _catalog_factory(factory: str) -> CatalogFactory:
    found = next((f for f in load_catalog() if f.name == factory), None)
    if found is None:
        raise NotFound(f"no factory {factory!r} in the catalog (see `modelyard factories`)")
    return found


def _key_values(token: str | None, hint: str | None, api_base: str, checked: bool) -> dict[str, Any]:
    return {
        "api_key_enc": token,
        "key_hint": hint,
        "api_base": api_base,
        "key_error": None,
        "key_state": "valid" if checked else "unchecked",
        "key_checked_at": func.now() if checked else None,
    }


def set_api_key(
    tenant: str,
    factory: str,
    api_key: str | None = None,
    *,
    fields: Mapping[str, str] | None = None,
    base_url: str = "",
    check: bool = True,
) -> KeySaved:
    """Test the key on the factory's catalog models (cheapest type first, stopping at the first
    that passes) and, if one passes, save it -- encrypted once -- for all of the factory's
    catalog models and the tenant's other models of that factory. If none passes nothing is
    saved and :class:`KeyRejected` lists every model's classified error."""
    catalog = _catalog_factory(factory)
    have = set(supported().get(factory, ()))
    candidates = by_probe_cost([(m.name, t) for m in catalog.models for t in m.model_types if t in have])
    if not candidates:
        raise InvalidRequest(
            f"{factory} has no catalog models that modelyard supports; configure one with `modelyard llm add`"
        )
    key, hint = assemble_key(get_provider_class(candidates[0][1], factory), api_key, fields)
    if not key:
        raise InvalidRequest(f"{factory}: give the key with --api-key (or its --field values)")
    base_url = check_base_url(base_url)
    with session_scope() as session:
        tenant_id = resolve_tenant(session, tenant)
    accepted = None
    if check:
        outcomes = check_until_accepted(factory, candidates, key, base_url)
        accepted = next((o for o in outcomes if o.ok), None)
        if accepted is None:
            raise KeyRejected(f"no {factory} model accepted it", outcomes)
    values = _key_values(crypto.encrypt(key), hint, base_url, checked=check)
    with session_scope() as session:
        existing = {(m.llm_name, m.model_type) for m in list_tenant_models(session, tenant_id, factory)}
        session.execute(
            update(tenant_llm)
            .where(tenant_llm.c.tenant_id == tenant_id, tenant_llm.c.factory == factory)
            .values(**values, key_version=tenant_llm.c.key_version + 1)
        )
        for llm_name, model_type in candidates:
            if (llm_name, model_type) not in existing:
                session.execute(
                    tenant_llm.insert().values(
                        tenant_id=tenant_id,
                        factory=factory,
                        llm_name=llm_name,
                        model_type=model_type,
                        status="enabled",
                        max_tokens=catalog_max_tokens(session, factory, llm_name, model_type),
                        **values,
                    )
                )
        saved = sorted({(f"{n}@{factory}", t) for n, t in existing | set(candidates)})
    return KeySaved(factory, saved, accepted)


def add_llm(
    tenant: str,
    model: str,
    model_type: str,
    api_key: str | None = None,
    *,
    fields: Mapping[str, str] | None = None,
    base_url: str = "",
    max_tokens: int | None = None,
    check: bool = True,
    limits: Mapping[str, int | None] | None = None,
) -> TenantModel:
    """Configure one model, its key tested with a real call first (unless ``check`` is False);
    ``limits`` are the tenant's own (``rpm``, ``tpm``, ``max_concurrency``; see tenants.set_llm_limits)."""
    llm_name, factory = parse_model_name(model)
    _catalog_factory(factory)
    try:
        cls = get_provider_class(model_type, factory)
    except UnsupportedModel as exc:
        raise InvalidRequest(str(exc)) from None
    key, hint = assemble_key(cls, api_key, fields)
    if cls.needs_key and not key:  # before a call that could only be refused
        raise InvalidRequest(f"{factory} needs an API key (--api-key)")
    base_url = check_base_url(base_url)
    with session_scope() as session:
        tenant_id = resolve_tenant(session, tenant)
    if check:
        outcome = check_until_accepted(factory, [(llm_name, model_type)], key, base_url)[0]
        if not outcome.ok:
            raise KeyRejected(f"{model} did not accept it", [outcome])
    with session_scope() as session:
        save_llm(
            session,
            tenant_id,
            model,
            model_type,
            api_key=key,
            api_base=base_url,
            max_tokens=max_tokens,
            key_state="valid" if check else "unchecked",
            hint=hint,
        )
        return set_llm_limits(session, tenant_id, model, model_type, **(limits or {}))


# --------------------------------------------------------------------------- rotation


@dataclass(frozen=True)
class RotationReport:
    rotated: int  # rows re-encrypted under the newest key
    current: int  # rows already under it


def rotate_keys(batch: int = 200) -> RotationReport:
    """Re-encrypt every stored key under the newest ``MODELYARD_SECRET_KEY``, a batch per
    transaction, without downtime: workers holding the old and new keys read both forms.
    The plaintext does not change, so ``key_version`` does not either (no bundle rebuilds)."""
    rotated = current = bad = 0
    produced: set[str] = set()  # new tokens: rows sharing a key share its token and are rotated together
    last_id = 0
    while True:
        with session_scope() as session:
            rows = session.execute(
                select(tenant_llm.c.id, tenant_llm.c.tenant_id, tenant_llm.c.factory, tenant_llm.c.api_key_enc)
                .where(tenant_llm.c.id > last_id, tenant_llm.c.api_key_enc.is_not(None))
                .order_by(tenant_llm.c.id)
                .limit(batch)
            ).all()
            if not rows:
                break
            last_id = rows[-1].id
            for row in rows:
                if row.api_key_enc in produced:
                    continue
                if crypto.is_current(row.api_key_enc):
                    current += 1
                    continue
                try:
                    token = crypto.rotate(row.api_key_enc)
                except crypto.SecretKeyError:
                    bad += 1
                    continue
                # Rows sharing a token are one tenant's models of one factory (``keys set``): found through
                # the (tenant, factory, ...) index, and only while unchanged (a key saved meanwhile is current).
                rotated += rowcount(
                    session,
                    update(tenant_llm)
                    .where(
                        tenant_llm.c.tenant_id == row.tenant_id,
                        tenant_llm.c.factory == row.factory,
                        tenant_llm.c.api_key_enc == row.api_key_enc,
                    )
                    .values(api_key_enc=token),
                )
                produced.add(token)
    if bad:
        raise crypto.SecretKeyError(
            f"{bad} stored key(s) cannot be decrypted with any key in MODELYARD_SECRET_KEY and were left as they are "
            f"({rotated} re-encrypted, {current} already current); add the key they were encrypted with"
        )
    return RotationReport(rotated, current)
