"""The ASGI app: routers, OpenAI-shaped errors, and the health checks."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from models.db import get_engine
from workers.api import errors


def create_app() -> FastAPI:
    from workers import web
    from workers.api import batches, embeddings, files, jobs, manage, money

    app = FastAPI(
        title="modelyard",
        version="0.1.0",
        description="AI model jobs for many tenants: OpenAI-compatible files, batches and embeddings "
        "under /v1; jobs of every model type, model management and usage under /api; the tenant's "
        "settings page under /web.",
    )
    errors.install(app)
    for module in (files, batches, embeddings, jobs, manage, money):
        app.include_router(module.router)
    web.install(app)

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="The database and the broker answer",
        responses={503: {"description": "a dependency does not answer"}},
    )
    def readyz() -> JSONResponse:
        checks = {"database": _check_database(), "broker": _check_broker()}
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)

    return app


def _check_database() -> str:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"error: {type(exc).__name__}"


def _check_broker() -> str:
    from tasks.app import app as celery_app

    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"
