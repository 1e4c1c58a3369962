"""Rendering a page: the templates, and what every page needs (the tenant, its scopes, the CSRF token)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from models.db import session_scope
from models.tables import tenants
from workers.api.web.session import CSRF_FIELD, Session, csrf_for, keep_csrf

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

# What a redirect after a change may say (?notice=NAME); fixed texts, so a link cannot make the page say anything.
NOTICES = {
    "enabled": "The model is enabled.",
    "disabled": "The model is disabled.",
    "deleted": "The model is deleted.",
    "provider-deleted": "The provider's models are deleted.",
    "default-saved": "The default model is saved.",
    "cancelled": "The job is cancelled.",
    "signed-out": "You are signed out.",
}


def _when(value: datetime | str | None) -> str:
    """A moment as ``2026-12-07 11:20 UTC`` (datetimes and ISO strings alike; naive ones are UTC)."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["when"] = _when


def render(request: Request, session: Session, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    with session_scope() as db:
        tenant_name = db.scalar(select(tenants.c.name).where(tenants.c.id == session.tenant_id))
    return _render(request, template, status, tenant=tenant_name, scopes=session.scopes, **context)


def render_anonymous(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    return _render(request, template, status, tenant=None, scopes=frozenset(), **context)


def _render(request: Request, template: str, status: int, **context: Any) -> HTMLResponse:
    csrf = csrf_for(request)
    notice = NOTICES.get(request.query_params.get("notice", ""))
    response = templates.TemplateResponse(
        request,
        template,
        {"csrf": csrf, "csrf_field": CSRF_FIELD, "notice": notice, "path": request.url.path, **context},
        status_code=status,
    )
    keep_csrf(response, request, csrf)
    return response
