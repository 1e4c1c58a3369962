"""A chunk's side of the fleet-wide limiter: which limiter this process uses, what a chunk's
call will cost, and the wait before it (a short sleep, or back to the queue)."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError

from conf.errors import UserError
from conf.settings import Settings, get_settings
from models.bundle import LLMBundle
from models.db import session_scope
from models.jobs import ChunkWork
from models.tenants import TenantModel, list_tenant_models, resolve_tenant
from providers.base import Usage, estimate_tokens
from providers.ratelimits import parse_rate_limits
from tasks.limiter import Cost, Limiter, Limits, Settlement

STORE_ERRORS = (redis.RedisError, SQLAlchemyError, OSError)

log = logging.getLogger("modelyard.limits")


def make_limiter(settings: Settings) -> Limiter | None:
    """The limiter ``settings`` name: in Redis (``MODELYARD_LIMITS_URL``, else the broker's Redis),
    else in the database; None when it is turned off (``off``)."""
    url = settings.limiter_url
    if url == "off":
        return None
    if url == "database":
        from tasks.limiter_db import DatabaseLimiter

        return DatabaseLimiter()
    from tasks.limiter_redis import RedisLimiter

    return RedisLimiter(url)


def limits_of(tm: TenantModel) -> Limits:
    return Limits(rpm=tm.rpm_limit or None, tpm=tm.tpm_limit or None, concurrency=tm.max_concurrency or None)


def applies(bundle: LLMBundle) -> bool:
    """Whether calls with this bundle go through the limiter: not when it is turned off
    (``MODELYARD_LIMITS_URL=off``); local models that need no key (the Builtin model) only when
    the tenant set limits."""
    if get_settings().limiter_url == "off":
        return False
    return bool(type(bundle.provider).needs_key or limits_of(bundle.tenant_model) != Limits())


def estimate(work: ChunkWork, bundle: LLMBundle) -> Cost:
    """Requests and tokens a chunk's call will use, from its inputs (corrected after the call)."""
    if work.model_type == "embedding":
        texts = [item.text or "" for item in work.items]
        batch = max(1, bundle.provider.batch_size or len(texts))
        return Cost(max(1, math.ceil(len(texts) / batch)), sum(estimate_tokens(t) for t in texts))
    item = work.items[0]
    payload: Any = item.payload or {}
    tokens = estimate_tokens(item.text or "")
    if work.model_type == "chat":
        tokens += sum(
            estimate_tokens(str(m.get("content", ""))) for m in payload.get("messages", []) if isinstance(m, dict)
        )
        tokens += int((payload.get("gen_conf") or {}).get("max_tokens") or 0)
    elif work.model_type == "rerank":
        tokens += estimate_tokens(payload.get("query", "")) + sum(
            estimate_tokens(str(d)) for d in payload.get("documents", [])
        )
    elif work.model_type in ("image2text", "speech2text"):
        tokens += estimate_tokens(payload.get("prompt") or "") + 256
    return Cost(1, max(1, tokens))


def wait_for_budget(limiter: Limiter | None, bundle: LLMBundle, cost: Cost, holder: str) -> float | None:
    """Take the call's budget, sleeping while the wait is short; None when the call may go,
    else the countdown after which the chunk should come back (nothing was taken).
    A limiter store that cannot be reached lets the call go (limits are advice: a 429 is
    still retried), and says so in the log. With the limiter off (None) the call may go."""
    if limiter is None:
        return None
    settings = get_settings()
    limits, waited = limits_of(bundle.tenant_model), 0.0
    while True:
        try:
            grant = limiter.acquire(
                bundle.limit_bucket,
                limits,
                cost,
                holder,
                max_wait=max(0.0, settings.limit_max_wait - waited),
                slot_ttl=settings.limit_slot_ttl,
            )
        except STORE_ERRORS as exc:
            log.warning(
                "limits %s: the limiter's store did not answer (%s); calling without it",
                bundle.limit_bucket[:12],
                type(exc).__name__,
            )
            return None
        if grant.granted:
            time.sleep(grant.wait)
            return None
        if waited + grant.wait > settings.limit_max_wait:
            # Spread the chunks that come back, so that they do not all ask at the same moment.
            return grant.wait * (1.0 + 0.25 * random.random()) + 0.05
        time.sleep(grant.wait)
        waited += grant.wait


def rate_limit_wait(retry_after: float | None, headers: Mapping[str, str], *, fallback: float) -> float:
    """How long a 429 asks the fleet to pause: its Retry-After, else the reset its headers give,
    else ``fallback`` (the backoff)."""
    if retry_after is not None:
        return retry_after
    advertised = parse_rate_limits(headers, time.time())
    resets = [r for r in (advertised.reset_requests, advertised.reset_tokens) if r]
    return min(resets) if resets else fallback


def tenant_limits(tenant: str, limiter: Limiter | None) -> list[dict[str, Any]]:
    """Every configured model of a tenant with its key's limits and their state (for ``modelyard limits``).
    ``key`` is the start of the bucket's keyed hash: models that show the same one share a budget.
    ``limiter`` None: the limiter is turned off."""
    rows: list[dict[str, Any]] = []
    with session_scope() as session:
        tenant_id = resolve_tenant(session, tenant)
        for tm in list_tenant_models(session, tenant_id):
            row: dict[str, Any] = {"model": tm.full_name, "type": tm.model_type, "key": None}
            try:
                bundle = LLMBundle.open(session, tenant_id, tm.model_type, tm.full_name)
            except UserError as exc:
                rows.append({**row, "error": str(exc)})
                continue
            row["key"] = bundle.limit_bucket[:8]
            if limiter is None:
                rows.append({**row, "error": "the fleet-wide limiter is off (MODELYARD_LIMITS_URL=off)"})
            else:
                rows.append({**row, **limiter.status(bundle.limit_bucket, limits_of(tm))})
    return rows


def settle(
    limiter: Limiter | None,
    bundle: LLMBundle,
    cost: Cost,
    holder: str,
    *,
    usage: Usage | None = None,
    headers: Mapping[str, str] | None = None,
    pause: float | None = None,
) -> None:
    """After the call: free the slot, correct the tokens, learn from the headers, pause after a
    429. Never raises: the call's result (already paid for) must not be lost to the limiter."""
    if limiter is None:
        return
    advertised = parse_rate_limits(headers, time.time()) if headers else None
    delta = (usage.total_tokens - cost.tokens) if usage is not None and usage.total_tokens else 0
    reason = f"the provider answered 429 (rate limit); calls resume in {pause:.1f}s" if pause is not None else ""
    try:
        limiter.settle(
            bundle.limit_bucket,
            limits_of(bundle.tenant_model),
            holder,
            Settlement(tokens_delta=delta, advertised=advertised, pause=pause, reason=reason),
        )
    except STORE_ERRORS as exc:
        log.warning("limits %s: could not record the call (%s)", bundle.limit_bucket[:12], type(exc).__name__)
