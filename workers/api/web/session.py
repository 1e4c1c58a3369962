"""The web page's session: the tenant's API token in an HTTP-only cookie, a CSRF token checked on
every POST, and the security headers every page carries.

The token is checked on every request by the same function as the API's bearer tokens, so a
revoked token signs the page out at once. The CSRF token is a random value in a second cookie
that the server also writes into each form; a POST whose field does not match it is refused.
Both cookies are SameSite=Strict, HTTP-only, and Secure when the page is served over https.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request, Response

from models.tokens import Principal
from workers.api.auth import principal_of, tenant_of
from workers.api.errors import ApiError

TOKEN_COOKIE = "modelyard_token"
CSRF_COOKIE = "modelyard_csrf"
CSRF_FIELD = "csrf"
PREFIX = "/web"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cache-Control": "no-store",
}


class SignInNeeded(Exception):
    """No session, or its token is wrong or revoked: the page sends the browser to sign in."""


class CsrfRefused(Exception):
    """A POST without the session's CSRF token."""


@dataclass(frozen=True)
class Session:
    tenant_id: str
    scopes: frozenset[str]
    csrf: str

    def can(self, scope: str) -> bool:
        return scope in self.scopes


def signed_in(request: Request) -> Session:
    """A dependency: the session of a signed-in tenant token (else :class:`SignInNeeded`)."""
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        raise SignInNeeded
    try:
        who = principal_of(token)
        tenant_id = tenant_of_any(who)
    except ApiError:
        raise SignInNeeded from None
    return Session(tenant_id, who.scopes, request.cookies.get(CSRF_COOKIE, ""))


def tenant_of_any(who: Principal) -> str:
    """The tenant of a token that may use the page (a tenant token with ``models`` or ``jobs``)."""
    scope = "models" if "models" in who.scopes else "jobs"
    return tenant_of(who, scope)


def needs(session: Session, scope: str) -> str:
    """The session's tenant id if its token holds ``scope`` (403 otherwise, as the API answers)."""
    if not session.can(scope):
        raise ApiError(403, f"the token lacks the {scope!r} scope", "insufficient_scope")
    return session.tenant_id


async def check_csrf(request: Request) -> None:
    """A dependency of every POST: the form's CSRF field must equal the CSRF cookie."""
    form = await request.form()
    sent, expected = str(form.get(CSRF_FIELD, "")), request.cookies.get(CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused


def csrf_for(request: Request) -> str:
    """The CSRF token of this browser (a new one when it has none yet; set it with :func:`keep_csrf`)."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


def _cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="strict", secure=request.url.scheme == "https", path=PREFIX
    )


def keep_csrf(response: Response, request: Request, csrf: str) -> None:
    if request.cookies.get(CSRF_COOKIE) != csrf:
        _cookie(response, request, CSRF_COOKIE, csrf)


def sign_in(response: Response, request: Request, token: str) -> None:
    """Keep the token in its cookie and start a new CSRF token (the one used before signing in is dropped)."""
    _cookie(response, request, TOKEN_COOKIE, token)
    _cookie(response, request, CSRF_COOKIE, secrets.token_urlsafe(32))


def sign_out(response: Response) -> None:
    for name in (TOKEN_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path=PREFIX)
