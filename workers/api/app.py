"""The ASGI app: routers, OpenAI-shaped errors, and the health checks."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from tasks.runtime import Runtime
from workers.api import errors


def create_app(runtime: Runtime) -> FastAPI:
    """The app for ``runtime`` (kept in ``app.state.runtime``), which must be the process's active one:
    the handlers reach the database and settings through it."""
    from workers.api import batches, embeddings, files, jobs, manage, money, web

    app = FastAPI(
        title="modelyard",
        version="0.1.0",
        description="AI model jobs for many tenants: OpenAI-compatible files, batches and embeddings "
        "under /v1; jobs of every model type, model management and usage under /api; the tenant's "
        "settings page under /web.",
    )
    app.state.runtime = runtime
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
    def readyz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        checks = {"database": _check_database(runtime), "broker": _check_broker(runtime)}
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)

    return app


def _check_database(runtime: Runtime) -> str:
    try:
        with runtime.database.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"error: {type(exc).__name__}"


def _check_broker(runtime: Runtime) -> str:
    try:
        with runtime.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"
