"""Bearer-token authentication and scopes, as FastAPI dependencies.

Every route but the health checks needs ``Authorization: Bearer <token>``. A missing, wrong
or revoked token is a 401; a token without the route's scope is a 403. Tenant routes take the
tenant from the token, never from the request: a tenant cannot name another one.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from models.db import session_scope
from models.tokens import Principal, authenticate
from workers.api.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="a modelyard API token (`modelyard token create`)")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def principal(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError(401, "no API token: send Authorization: Bearer <token>", "missing_api_key", headers=_CHALLENGE)
    return principal_of(credentials.credentials)


def principal_of(token: str) -> Principal:
    """The token's principal (the API's bearer token, the web page's cookie); 401 if it is wrong or revoked."""
    with session_scope() as session:
        found = authenticate(session, token)
    if found is None:
        raise ApiError(401, "the API token is wrong or revoked", "invalid_api_key", headers=_CHALLENGE)
    return found


def tenant_of(who: Principal, scope: str) -> str:
    """The principal's tenant id, if it holds ``scope``; 403 otherwise."""
    if who.tenant_id is None:
        raise ApiError(403, "an operator token belongs to no tenant; use a tenant's token", "no_tenant")
    if scope not in who.scopes:
        raise ApiError(403, f"the token lacks the {scope!r} scope", "insufficient_scope")
    return who.tenant_id


def tenant_with(scope: str) -> Callable[..., str]:
    """A dependency: the token's tenant id, if the token holds ``scope``."""

    def dependency(who: Principal = Depends(principal)) -> str:
        return tenant_of(who, scope)

    return dependency


def operator(who: Principal = Depends(principal)) -> Principal:
    if "admin" not in who.scopes:
        raise ApiError(403, "the token lacks the 'admin' scope", "insufficient_scope")
    return who


jobs_tenant = tenant_with("jobs")
models_tenant = tenant_with("models")
