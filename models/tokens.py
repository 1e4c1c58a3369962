"""Tenant API tokens for the HTTP API.

A token reads ``my_<id>_<secret>``: the id finds the row, and the secret is compared -- as a
sha256 digest, in constant time -- with the only thing stored about it. The whole token is
shown once, when it is made; afterwards people see its name and its last four characters.

Scopes: ``jobs`` (submit and read jobs, files, batches, embeddings), ``models`` (manage the
tenant's models and keys, read usage), ``admin`` (an operator's: create and list tenants).
A token made without a tenant is an operator token and may only hold ``admin``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from conf.errors import InvalidRequest, NotFound
from models.tables import api_tokens

SCOPES = ("jobs", "models", "admin")
TENANT_SCOPES = ("jobs", "models")
PREFIX = "my_"
_TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often per token


@dataclass(frozen=True)
class Principal:
    """Who a request is: a token's tenant (None for an operator token) and its scopes."""

    token_id: str
    tenant_id: str | None
    scopes: frozenset[str]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _check_scopes(scopes: list[str] | None, tenant_id: str | None) -> list[str]:
    chosen = list(dict.fromkeys(scopes or (TENANT_SCOPES if tenant_id else ("admin",))))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise InvalidRequest(f"unknown scope {', '.join(unknown)}; scopes are {', '.join(SCOPES)}")
    if tenant_id is None and chosen != ["admin"]:
        raise InvalidRequest("a token without --tenant is an operator token: its only scope is admin")
    return chosen


def create_token(
    session: Session, tenant_id: str | None, name: str | None = None, scopes: list[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """A new token: (the token, shown this once; its row as :func:`list_tokens` shows it)."""
    chosen = _check_scopes(scopes, tenant_id)
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = f"{PREFIX}{token_id}_{secret}"
    name = (name or "").strip() or f"token-{token_id}"
    if len(name) > 256:
        raise InvalidRequest("a token name is at most 256 characters")
    session.execute(
        api_tokens.insert().values(
            id=token_id, tenant_id=tenant_id, name=name, secret_hash=_digest(secret), hint=token[-4:], scopes=chosen
        )
    )
    return token, _row(session.execute(select(api_tokens).where(api_tokens.c.id == token_id)).one())


def _row(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "tenant_id": r.tenant_id,
        "scopes": list(r.scopes),
        "hint": r.hint,
        "created_at": r.created_at,
        "last_used_at": r.last_used_at,
        "revoked": r.revoked_at is not None,
    }


def list_tokens(session: Session, tenant_id: str | None = None) -> list[dict[str, Any]]:
    query = select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.id)
    if tenant_id is not None:
        query = query.where(api_tokens.c.tenant_id == tenant_id)
    return [_row(r) for r in session.execute(query)]


def revoke_token(session: Session, ref: str, tenant_id: str | None = None) -> dict[str, Any]:
    """Revoke a token by its id or (with a tenant) its name; revoking twice is not an error."""
    cond = api_tokens.c.id == ref
    if tenant_id is not None:
        cond = (api_tokens.c.tenant_id == tenant_id) & or_(cond, api_tokens.c.name == ref)
    rows = session.execute(select(api_tokens).where(cond)).all()
    if not rows:
        raise NotFound(f"no token {ref!r}")
    if len(rows) > 1:
        raise InvalidRequest(f"{len(rows)} tokens are named {ref!r}; revoke one by its id (see `modelyard token list`)")
    session.execute(
        update(api_tokens)
        .where(api_tokens.c.id == rows[0].id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return _row(session.execute(select(api_tokens).where(api_tokens.c.id == rows[0].id)).one())


def authenticate(session: Session, token: str) -> Principal | None:
    """The token's principal, or None for a malformed, unknown, wrong or revoked token."""
    if not token.startswith(PREFIX):
        return None
    token_id, sep, secret = token[len(PREFIX) :].partition("_")
    if not sep or not secret or len(token_id) > 32:
        return None
    row = session.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(secret)) or row.revoked_at is not None:
        return None
    now = datetime.now(UTC)
    last = row.last_used_at
    if last is None or (last.replace(tzinfo=last.tzinfo or UTC) < now - _TOUCH_EVERY):
        session.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=now))
    return Principal(token_id=row.id, tenant_id=row.tenant_id, scopes=frozenset(row.scopes))
