"""The tenant's settings page on ``modelyard api``, under ``/web``: providers, keys, models, jobs
and usage, server-rendered from Jinja2 templates over the same functions the JSON API calls.
One static stylesheet and one static script ship with the package; nothing is fetched from
elsewhere, so the page works offline on a private network."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from conf.errors import UserError
from providers.errors import scrub
from workers.api.errors import ApiError, status_of
from workers.api.web.render import render_anonymous
from workers.api.web.session import PREFIX, SECURITY_HEADERS, CsrfRefused, SignInNeeded

STATIC = Path(__file__).parent / "static"
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def is_web(path: str) -> bool:
    return path == PREFIX or path.startswith(f"{PREFIX}/")


def _refusal(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, UserError):
        return status_of(exc), scrub(str(exc))
    return 422, "The form was incomplete or had a value out of range."


def install(app: FastAPI) -> None:
    """Add the page to ``app``; after ``workers.api.errors.install``, whose answers it keeps for the API's paths."""
    from workers.api.web import job_pages, pages

    app.include_router(pages.router)
    app.include_router(job_pages.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="web-static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, _: SignInNeeded) -> Response:
        if request.url.path.endswith(".json"):  # the progress poller: no page to send it to
            return Response(status_code=401)
        return RedirectResponse(f"{PREFIX}/sign-in", status_code=303)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _: CsrfRefused) -> HTMLResponse:
        return render_anonymous(
            request, "error.html", status=403, message="The form was not sent from this page (CSRF check failed)."
        )

    for exc_type in (ApiError, UserError, RequestValidationError):
        api_handler = app.exception_handlers[exc_type]

        async def _refused(request: Request, exc: Exception, api_handler: Handler = api_handler) -> Response:
            if not is_web(request.url.path):
                answer = api_handler(request, exc)
                return await answer if inspect.isawaitable(answer) else answer
            status, message = _refusal(exc)
            return render_anonymous(request, "error.html", status=status, message=message)

        app.add_exception_handler(exc_type, _refused)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if is_web(request.url.path):
            response.headers.update(SECURITY_HEADERS)
        return response
