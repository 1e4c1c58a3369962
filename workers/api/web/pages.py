"""Sign-in, providers, keys and the tenant's models. Each change calls the function the JSON
API's route calls (``models.admin``, ``models.tenants``); this module reads forms and renders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from conf.catalog import load_catalog
from conf.errors import NotFound, UserError
from models import admin
from models.db import session_scope
from models.defaults import clear_default_model, default_models, set_default_model
from models.keycheck import KeyRejected
from models.tenants import delete_factory, delete_llm, list_tenant_models, set_llm_status
from providers.base import MODEL_TYPES, CredentialField
from providers.errors import scrub
from providers.registry import get_provider_class
from workers.api.auth import principal_of
from workers.api.errors import ApiError
from workers.api.web.render import render, render_anonymous
from workers.api.web.session import PREFIX, Session, check_csrf, needs, sign_in, sign_out, signed_in, tenant_of_any

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _see(path: str, notice: str | None = None) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}{path}" + (f"?notice={notice}" if notice else ""), status_code=303)


@router.get("/")
def home(session: Session = Depends(signed_in)) -> RedirectResponse:
    return _see("/models" if session.can("models") else "/jobs")


# --------------------------------------------------------------------------- signing in and out


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request) -> HTMLResponse:
    return render_anonymous(request, "sign_in.html")


@router.post("/sign-in", dependencies=[Depends(check_csrf)])
def sign_in_post(request: Request, token: str = Form(default="", max_length=1000)) -> Response:
    try:
        tenant_of_any(principal_of(token.strip()))
    except ApiError as exc:
        return render_anonymous(request, "sign_in.html", status=401, error=exc.message)
    response = _see("/")
    sign_in(response, request, token.strip())
    return response


@router.post("/sign-out", dependencies=[Depends(check_csrf)])
def sign_out_post() -> RedirectResponse:
    response = _see("/sign-in", "signed-out")
    sign_out(response)
    return response


# --------------------------------------------------------------------------- providers and keys


@router.get("/providers", response_class=HTMLResponse)
def providers(request: Request, name: str = "", type: str = "", session: Session = Depends(signed_in)) -> HTMLResponse:
    needs(session, "models")
    rows = admin.list_factories()
    wanted = name.strip().lower()
    shown = [
        f
        for f in rows
        if wanted in f["name"].lower() and (not type or type in f["supported_types"] or type in f["catalog_types"])
    ]
    return render(
        request, session, "providers.html", factories=shown, total=len(rows), name=name, type=type, types=MODEL_TYPES
    )


def _factory(name: str) -> dict[str, Any]:
    found = next((f for f in admin.list_factories() if f["name"] == name), None)
    if found is None:
        raise NotFound(f"no factory {name!r} in the catalog")
    return found


def credential_fields(factory: dict[str, Any]) -> list[CredentialField]:
    """The factory's named credential fields (none: one plain API key)."""
    fields: dict[str, CredentialField] = {}
    for t in factory["supported_types"]:
        for f in get_provider_class(t, factory["name"]).credential_fields:
            fields.setdefault(f.name, f)
    return list(fields.values())


def _provider_page(request: Request, session: Session, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    tenant_id = needs(session, "models")
    factory = _factory(name)
    catalog = next(f for f in load_catalog() if f.name == name)
    models = [(m.name, t) for m in catalog.models for t in m.model_types if t in factory["supported_types"]]
    with session_scope() as db:
        mine = list_tenant_models(db, tenant_id, name)
    return render(
        request,
        session,
        "provider.html",
        status=status,
        factory=factory,
        fields=credential_fields(factory),
        models=models,
        mine=mine,
        **context,
    )


@router.get("/providers/{name}", response_class=HTMLResponse)
def provider(request: Request, name: str, session: Session = Depends(signed_in)) -> HTMLResponse:
    return _provider_page(request, session, name)


@dataclass(frozen=True)
class Credentials:
    """A form's key (or named fields) and base URL, as ``models.admin`` takes them."""

    api_key: str | None
    fields: dict[str, str] | None
    base_url: str

    def secrets(self, factory: dict[str, Any]) -> list[str]:
        secret = {f.name for f in credential_fields(factory) if f.secret}
        return [v for v in (self.api_key, *(v for k, v in (self.fields or {}).items() if k in secret)) if v]


async def _credentials(request: Request) -> Credentials:
    form = await request.form()
    fields = {k.removeprefix("field_"): str(v) for k, v in form.items() if k.startswith("field_") and str(v)}
    return Credentials(
        str(form.get("api_key", "")).strip() or None, fields or None, str(form.get("base_url", "")).strip()
    )


def _refused(request: Request, session: Session, name: str, exc: UserError, sent: Credentials) -> HTMLResponse:
    """The provider page again with why nothing was saved (each model's classified error if the key was refused)."""
    outcomes = exc.outcomes if isinstance(exc, KeyRejected) else []
    error = scrub(str(exc), *sent.secrets(_factory(name)))
    return _provider_page(request, session, name, status=400, error=error, outcomes=outcomes)


def _set_key(request: Request, session: Session, name: str, sent: Credentials) -> HTMLResponse:
    tenant_id = needs(session, "models")
    try:
        saved = admin.set_api_key(tenant_id, name, sent.api_key, fields=sent.fields, base_url=sent.base_url)
    except UserError as exc:
        return _refused(request, session, name, exc, sent)
    return _provider_page(request, session, name, saved=saved)


def _add_model(request: Request, session: Session, name: str, choice: str, sent: Credentials) -> HTMLResponse:
    tenant_id = needs(session, "models")
    model_type, _, llm_name = choice.partition("|")
    try:
        added = admin.add_llm(
            tenant_id, f"{llm_name}@{name}", model_type, sent.api_key, fields=sent.fields, base_url=sent.base_url
        )
    except UserError as exc:
        return _refused(request, session, name, exc, sent)
    return _provider_page(request, session, name, added=added)


# The form's field names vary by provider, so these read the form themselves; the key check is a
# provider call, made in the thread pool so that it does not hold up the server's event loop.
@router.post("/providers/{name}/key", response_class=HTMLResponse, dependencies=[Depends(check_csrf)])
async def provider_key(request: Request, name: str, session: Session = Depends(signed_in)) -> HTMLResponse:
    return await run_in_threadpool(_set_key, request, session, name, await _credentials(request))


@router.post("/providers/{name}/models", response_class=HTMLResponse, dependencies=[Depends(check_csrf)])
async def provider_model(
    request: Request, name: str, choice: str = Form(max_length=500), session: Session = Depends(signed_in)
) -> HTMLResponse:
    return await run_in_threadpool(_add_model, request, session, name, choice, await _credentials(request))


# --------------------------------------------------------------------------- the tenant's models


@router.get("/models", response_class=HTMLResponse)
def my_models(request: Request, session: Session = Depends(signed_in)) -> HTMLResponse:
    tenant_id = needs(session, "models")
    with session_scope() as db:
        grouped = admin.my_llms(db, tenant_id)
        defaults = default_models(db, tenant_id)
    choices: dict[str, list[str]] = {}  # model type -> the tenant's enabled models of it
    for models in grouped.values():
        for m in models:
            if m.status == "enabled":
                choices.setdefault(m.model_type, []).append(m.full_name)
    return render(
        request, session, "models.html", grouped=grouped, defaults=defaults, choices=dict(sorted(choices.items()))
    )


@router.post("/models/default", dependencies=[Depends(check_csrf)])
def model_default(
    type: str = Form(max_length=32),
    model: str = Form(default="", max_length=400),
    session: Session = Depends(signed_in),
) -> RedirectResponse:
    """Set the tenant's default of a type; an empty choice clears it."""
    tenant_id = needs(session, "models")
    with session_scope() as db:
        if model:
            set_default_model(db, tenant_id, type, model)
        else:
            clear_default_model(db, tenant_id, type)
    return _see("/models", "default-saved")


@router.post("/models/status", dependencies=[Depends(check_csrf)])
def model_status(
    model: str = Form(max_length=400),
    type: str = Form(max_length=32),
    action: str = Form(pattern="^(enable|disable)$"),
    session: Session = Depends(signed_in),
) -> RedirectResponse:
    tenant_id = needs(session, "models")
    with session_scope() as db:
        set_llm_status(db, tenant_id, model, type, enabled=action == "enable")
    return _see("/models", f"{action}d")


@router.post("/models/delete", dependencies=[Depends(check_csrf)])
def model_delete(
    model: str = Form(max_length=400), type: str = Form(max_length=32), session: Session = Depends(signed_in)
) -> RedirectResponse:
    tenant_id = needs(session, "models")
    with session_scope() as db:
        delete_llm(db, tenant_id, model, type)
    return _see("/models", "deleted")


@router.post("/providers/{name}/delete", dependencies=[Depends(check_csrf)])
def provider_delete(name: str, session: Session = Depends(signed_in)) -> RedirectResponse:
    tenant_id = needs(session, "models")
    with session_scope() as db:
        delete_factory(db, tenant_id, name)
    return _see("/models", "provider-deleted")
