"""Errors in OpenAI's body shape, ``{"error": {"message", "type", "param", "code"}}``, for
every failure the API answers: our UserErrors, request validation, auth, unknown routes."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from conf.errors import BudgetSpent, Conflict, NotFound, UserError
from conf.settings import SettingsError
from models.files import TooLarge
from providers.errors import scrub

log = logging.getLogger("modelyard.api")

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    500: "server_error",
    502: "provider_error",
    504: "timeout_error",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """A refusal with its HTTP status (and OpenAI's ``code`` where it has one)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Bad request"),
        (401, "Missing, wrong or revoked token"),
        (403, "The token lacks the scope"),
        (404, "Not found (or another tenant's)"),
        (409, "Conflict"),
        (413, "Too large"),
        (415, "Wrong content type"),
        (422, "Invalid parameters"),
    )
}


def error_response(
    status: int, message: str, code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param, "code": code}
    }
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(exc: UserError) -> int:
    if isinstance(exc, BudgetSpent):
        return 429
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, SettingsError):
        return 500
    return 400  # InvalidRequest, and any other user error


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(UserError)
    async def _user(_: Request, exc: UserError) -> JSONResponse:
        return error_response(status_of(exc), scrub(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
        return error_response(422, message, "invalid_value", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s: %s", type(exc).__name__, scrub(str(exc)))
        return error_response(500, "internal error; the server log has the details")
