"""The embedding cache: a vector stored under a hash of everything that decides it -- the
factory, the model, the endpoint, the input type (document or query), the dimensions, the
tenant's input truncation, and the text -- in a scope: the tenant's id (the default, so one
tenant's texts never answer another's) or ``*`` when an operator shares it between tenants.

Bounded: each scope keeps at most ``max_entries`` vectors; eviction drops the least recently
used (``used_at`` is refreshed at most once an hour per entry, so reading stays a read).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models.dml import rowcount
from models.jobs import utcnow
from models.tables import embedding_cache

SHARED = "*"
_TOUCH_EVERY = timedelta(hours=1)
_LOOKUP_BATCH = 500


def model_fingerprint(
    factory: str, llm_name: str, api_base: str, input_type: str, dimensions: int | None, max_tokens: int
) -> bytes:
    """What, besides the text, decides a vector (hashed with each text by :func:`cache_key`)."""
    return json.dumps([factory, llm_name, api_base, input_type, dimensions, max_tokens]).encode("utf-8")


def cache_key(fingerprint: bytes, text: str) -> bytes:
    h = hashlib.sha256(fingerprint)
    h.update(b"\0")
    h.update(text.encode("utf-8"))
    return h.digest()


# Postgres, on every embedding chunk: one statement with the keys as one array parameter
# (not a bind parameter per key), so that the worker's CPU is not spent building SQL.
_LOOKUP_PG = text("SELECT key, vector, tokens, used_at FROM embedding_cache WHERE scope = :scope AND key = ANY(:keys)")
_STORE_PG = text(
    "INSERT INTO embedding_cache (scope, key, vector, tokens, used_at)"
    " SELECT :scope, k, v, t, :now FROM unnest(CAST(:keys AS bytea[]), CAST(:vectors AS bytea[]), CAST(:tokens AS int[]))"
    " AS e(k, v, t) ORDER BY k ON CONFLICT (scope, key) DO NOTHING"
)


def _select(session: Session, scope: str, keys: list[bytes]) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return session.execute(_LOOKUP_PG, {"scope": scope, "keys": keys})
    return session.execute(
        select(
            embedding_cache.c.key, embedding_cache.c.vector, embedding_cache.c.tokens, embedding_cache.c.used_at
        ).where(embedding_cache.c.scope == scope, embedding_cache.c.key.in_(keys))
    )


def lookup(session: Session, scope: str, keys: Sequence[bytes]) -> dict[bytes, tuple[bytes, int]]:
    """The stored (vector, tokens) of the keys the cache holds."""
    found: dict[bytes, tuple[bytes, int]] = {}
    stale: list[bytes] = []
    cutoff = utcnow() - _TOUCH_EVERY
    unique = list(dict.fromkeys(keys))
    for i in range(0, len(unique), _LOOKUP_BATCH):
        for r in _select(session, scope, unique[i : i + _LOOKUP_BATCH]):
            found[bytes(r.key)] = (bytes(r.vector), int(r.tokens))
            used = r.used_at if r.used_at.tzinfo else r.used_at.replace(tzinfo=cutoff.tzinfo)
            if used < cutoff:
                stale.append(bytes(r.key))
    if stale:
        session.execute(
            update(embedding_cache)
            .where(embedding_cache.c.scope == scope, embedding_cache.c.key.in_(stale))
            .values(used_at=utcnow())
        )
    return found


def store(session: Session, scope: str, entries: Sequence[tuple[bytes, bytes, int]]) -> int:
    """Add (key, vector, tokens) entries; keys already present keep their vector."""
    if not entries:
        return 0
    now = utcnow()
    unique = {k: (v, t) for k, v, t in entries}
    if session.get_bind().dialect.name == "postgresql":  # keys in order: concurrent stores cannot deadlock
        session.execute(
            _STORE_PG,
            {
                "scope": scope,
                "now": now,
                "keys": list(unique),
                "vectors": [v for v, _ in unique.values()],
                "tokens": [t for _, t in unique.values()],
            },
        )
        return len(unique)
    rows = [
        {"scope": scope, "key": k, "vector": v, "tokens": t, "used_at": now} for k, (v, t) in sorted(unique.items())
    ]
    session.execute(sqlite_insert(embedding_cache).on_conflict_do_nothing(index_elements=["scope", "key"]), rows)
    return len(unique)


def evict(session: Session, scope: str, max_entries: int) -> int:
    """Drop the least recently used entries beyond ``max_entries``; how many were dropped."""
    keep = (
        select(embedding_cache.c.key)
        .where(embedding_cache.c.scope == scope)
        .order_by(embedding_cache.c.used_at.desc())
        .offset(max_entries)
    )
    return rowcount(
        session, delete(embedding_cache).where(embedding_cache.c.scope == scope, embedding_cache.c.key.in_(keep))
    )


def clear(session: Session, scope: str | None = None) -> int:
    query = delete(embedding_cache)
    if scope is not None:
        query = query.where(embedding_cache.c.scope == scope)
    return rowcount(session, query)
