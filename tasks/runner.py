"""Running one chunk: the path every model type's task shares.

1. claim the chunk (models.jobs.claim_chunk): a message of a superseded release, or of a
   release another execution is running, or for a chunk that is done or cancelled, is dropped
   without calling the provider; the claim is a lease that tasks.lease renews while we run;
2. resolve the tenant's LLMBundle; serve what the embedding cache holds (tasks.embed_cache);
   reserve the rest's estimated spend on the tenant's budgets (tasks.spend: a spent budget
   fails the items ``BUDGET`` without a call); take the call's budget from the fleet-wide
   limiter (tasks.limits): a short wait is slept, a longer one sends the chunk back to the
   queue with a countdown -- a wait, not a try;
3. call the provider through the type's handler;
4. success: one transaction writes results, the priced usage event (the budget reservation
   settled to it), counters, and releases the job's next chunk; failure: classify, then
   either ``self.retry(countdown=...)`` (the policy in tasks.retry) or fail the chunk's items
   with the code and a scrubbed message (the reservation given back either way).

``tries`` (in the message) counts the provider's real answers to this chunk: only they
count against ``LLM_MAX_RETRIES``. The tasks are declared with Celery's ``max_retries=None``
(no limit of Celery's own), so a wait or a retry never raises ``MaxRetriesExceededError``.
``release`` (in the message) is which release of the chunk it is; a message sent back to the
queue keeps it, and gives up the lease until it is taken again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from celery import Celery, Task
from sqlalchemy.orm import Session

from conf.errors import UserError
from conf.settings import get_settings
from models.budgets import Reservation
from models.bundle import LLMBundle, Recorded
from models.crypto import SecretKeyError
from models.db import session_scope
from models.jobs import SKIPPED, ChunkError, ChunkWork, ItemOutcome, claim_chunk, finish_chunk, postpone_chunk
from providers.base import Usage
from providers.errors import ErrorCode, ProviderError, classify, scrub
from tasks import embed_cache, lease, limits, metrics, spend
from tasks.orchestrate import send_chunks
from tasks.retry import retry_countdown
from tasks.runtime import runtime_of

log = logging.getLogger("modelyard.tasks")


@dataclass
class HandlerResult:
    outcomes: list[ItemOutcome]
    usage: Usage


Handler = Callable[[LLMBundle, ChunkWork], HandlerResult]


def run_chunk(task: Task, chunk_id: int, handler: Handler, *, tries: int = 0, release: int | None = None) -> str:
    settings = get_settings()
    with session_scope() as session:
        work = claim_chunk(session, chunk_id, release, settings.chunk_lease_seconds)
        if isinstance(work, str):
            if work != SKIPPED:
                log.info("chunk %s: message of release %s dropped without a provider call: %s", chunk_id, release, work)
            return work
        bundle, refused = _open_bundle(session, work)
    with lease.holding(work.chunk_id, work.release, settings.chunk_lease_seconds):
        if bundle is None:
            return _fail(task.app, work, ErrorCode.MODEL, refused or "model unavailable", settings.stall_seconds)
        return _call(task, work, bundle, handler, tries)


def _call(task: Task, work: ChunkWork, bundle: LLMBundle, handler: Handler, tries: int) -> str:
    settings = get_settings()
    attempt = f"{task.request.id}:{task.request.retries}"
    served = embed_cache.serve(bundle, work)  # what the embedding cache holds is not asked for again
    asked = served.rest if served is not None else work
    if not asked.items:
        return _finish(task.app, work, bundle, HandlerResult([], Usage()), attempt, served, Reservation(), None)
    estimate = limits.estimate(asked, bundle)
    held = spend.reserve(bundle, estimate.tokens)  # the tenant's budgets, before the call (atomic)
    if isinstance(held, str):
        log.info("chunk %s: %s is spent; its items fail BUDGET without a call", work.chunk_id, held)
        message = f"{held} is spent; the call was not made"
        if served is not None and served.outcomes:  # what the cache served is still had, free
            refused = [
                ItemOutcome(item.id, error_code=ErrorCode.BUDGET.value, error_message=message) for item in asked.items
            ]
            return _finish(
                task.app, work, bundle, HandlerResult(refused, Usage()), attempt, served, Reservation(), None
            )
        return _fail(task.app, work, ErrorCode.BUDGET, message, settings.stall_seconds)
    try:
        cost = estimate if limits.applies(bundle) else None
        if cost is not None:
            countdown = limits.wait_for_budget(runtime_of(task.app).limiter, bundle, cost, attempt)
            if countdown is not None:
                log.info("chunk %s waits %.1fs for its key's rate budget", work.chunk_id, countdown)
                _requeue(task, work, countdown, tries)

        started = time.perf_counter()
        try:
            result = handler(bundle, asked)
        except Exception as exc:  # noqa: BLE001 - every provider failure is classified below
            return _on_error(
                task, work, bundle, exc, tries=tries, cost=cost, holder=attempt, seconds=time.perf_counter() - started
            )
        seconds = time.perf_counter() - started
        metrics.provider_call(bundle, "OK", seconds)
        if cost is not None:
            limits.settle(
                runtime_of(task.app).limiter,
                bundle,
                cost,
                attempt,
                usage=result.usage,
                headers=bundle.provider.rate_limits,
            )
        if served is not None:
            embed_cache.remember(served, result.outcomes, result.usage)
        return _finish(task.app, work, bundle, result, attempt, served, held, seconds * 1000.0)
    finally:
        spend.release(held)  # unless the usage event settled it


def _finish(
    app: Celery,
    work: ChunkWork,
    bundle: LLMBundle,
    result: HandlerResult,
    attempt: str,
    served: embed_cache.Served | None,
    held: Reservation,
    latency_ms: float | None,
) -> str:
    """One transaction: the results (with what the cache served), the usage events, the counters."""
    settings = get_settings()
    from_cache = served.outcomes if served is not None else []
    outcomes = from_cache + result.outcomes
    hits = bool(from_cache)
    recorded: list[Recorded | None] = []

    def record_usage() -> bool:
        if latency_ms is not None:  # the provider was called
            recorded.append(
                spend.record(
                    session, bundle, held, result.usage, task_attempt=attempt, job_id=work.job_id, latency_ms=latency_ms
                )
            )
        if hits:  # what the cache served: zero billed tokens, and what it saved
            bundle.record_usage(
                session,
                Usage(),
                task_attempt=f"{attempt}:cached",
                job_id=work.job_id,
                cached=True,
                cached_tokens=served.cached_tokens if served is not None else 0,
            )
        return latency_ms is not None or hits

    with session_scope() as session:
        # tokens spent are counted once per attempt: if the chunk is applied or was cancelled meanwhile
        done = finish_chunk(
            session,
            work,
            outcomes,
            tokens=result.usage.total_tokens,
            stall_seconds=settings.stall_seconds,
            record_usage=record_usage,
        )
    for event in recorded:
        if event is not None:
            metrics.spent(bundle, event.tokens, event.cost)
    if hits:
        metrics.cache_served(bundle, len(from_cache))
    if not done.applied:
        log.info(
            "chunk %s was finished or cancelled meanwhile; results of attempt %s discarded", work.chunk_id, attempt
        )
        return "discarded"
    metrics.chunk_finished(
        work.model_type, "partial" if any(o.error_code for o in outcomes) else "succeeded", done.job_status
    )
    send_chunks(app, work.model_type, done.released)
    return "done"


def _open_bundle(session: Session, work: ChunkWork) -> tuple[LLMBundle | None, str | None]:
    """The tenant's bundle, or the reason it cannot be had (deleted or disabled since submit)."""
    try:
        return LLMBundle.open(session, work.tenant_id, work.model_type, work.model), None
    except SecretKeyError:
        # A deployment fault, not the tenant's: the chunk stays queued and the sweeper retries it.
        log.error("chunk %s: cannot decrypt the tenant's key; check MODELYARD_SECRET_KEY", work.chunk_id)
        raise
    except UserError as exc:
        return None, str(exc)


def _requeue(task: Task, work: ChunkWork, countdown: float, tries: int) -> None:
    """Send the chunk back to its queue to run in ``countdown`` seconds (raises Celery's Retry)."""
    with session_scope() as session:
        postpone_chunk(session, work.chunk_id, work.release, countdown + get_settings().stall_seconds)
    raise task.retry(countdown=countdown, kwargs={"tries": tries, "release": work.release})


def _on_error(
    task: Task,
    work: ChunkWork,
    bundle: LLMBundle,
    exc: Exception,
    *,
    tries: int,
    cost: limits.Cost | None,
    holder: str,
    seconds: float,
) -> str:
    settings = get_settings()
    code = classify(exc)
    metrics.provider_call(bundle, code.value, seconds)
    retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
    countdown = retry_countdown(
        code,
        tries,
        retry_after,
        max_retries=settings.llm_max_retries,
        base_delay=settings.llm_base_delay,
        max_delay=settings.llm_max_delay,
    )
    if cost is not None:  # free the slot; a 429 pauses the key for every worker
        headers = exc.rate_limits if isinstance(exc, ProviderError) else {}
        pause = None
        if code is ErrorCode.RATE_LIMIT:
            wait = limits.rate_limit_wait(retry_after, headers, fallback=countdown or settings.llm_base_delay)
            pause = min(wait, settings.llm_max_delay)
            metrics.paused(bundle, pause)
        limits.settle(runtime_of(task.app).limiter, bundle, cost, holder, headers=headers, pause=pause)
    message = scrub(str(exc) or type(exc).__name__, *bundle.secrets)
    if countdown is not None:
        log.warning(
            "chunk %s: %s (%s); retry %d of %d in %.1fs",
            work.chunk_id,
            code.value,
            message,
            tries + 1,
            settings.llm_max_retries,
            countdown,
        )
        metrics.retried(work.model_type, code.value)
        _requeue(task, work, countdown, tries + 1)
    if code.retryable:  # out of retries
        message = f"gave up after {tries + 1} tries: {code.value}: {message}"
        code = ErrorCode.MAX_RETRIES
    log.warning("chunk %s failed: %s: %s", work.chunk_id, code.value, message)
    return _fail(task.app, work, code, message, settings.stall_seconds)


def _fail(app: Celery, work: ChunkWork, code: ErrorCode, message: str, stall_seconds: float) -> str:
    with session_scope() as session:
        done = finish_chunk(
            session, work, ChunkError(code.value, message[:2000]), tokens=0, stall_seconds=stall_seconds
        )
    if done.applied:
        metrics.chunk_finished(work.model_type, "failed", done.job_status)
        send_chunks(app, work.model_type, done.released)
    return "failed"
