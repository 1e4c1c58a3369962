"""Maintenance tasks (the ``maintenance`` queue, driven by celery beat). Each is a plain function
(callable in-process); :func:`register` adds them to a runtime's app."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import Celery, Task

from conf.settings import get_settings
from models import job_history
from models.crypto import SecretKeyError
from models.db import session_scope
from models.jobs import Sent, lost_chunks, stalled_chunks
from models.keycheck import keys_to_revalidate, revalidate
from tasks.app import PURGE_TASK, REVALIDATE_ALL_TASK, REVALIDATE_TASK, SWEEP_TASK
from tasks.orchestrate import send_chunks

log = logging.getLogger("modelyard.maintenance")


def register(app: Celery) -> None:
    """Add the maintenance tasks to ``app`` (and to no other: ``shared=False``)."""

    @app.task(name=SWEEP_TASK, bind=True, shared=False)
    def sweep(task: Task, lost: bool = False) -> int:
        return sweep_stalled(task.app, lost)

    @app.task(name=REVALIDATE_ALL_TASK, bind=True, shared=False)
    def revalidate_all(task: Task) -> int:
        return revalidate_keys(task.app)

    app.task(name=REVALIDATE_TASK, shared=False)(revalidate_key)
    app.task(name=PURGE_TASK, shared=False)(purge_expired)


def sweep_stalled(app: Celery, lost: bool = False) -> int:
    """Re-send chunks whose messages were lost (a killed worker, a broker restarted empty).

    The database is the source of truth: a chunk still ``queued`` after its deadline, or
    ``running`` after its lease, gets a message for a new release; a worker that takes the
    old release's message (still waiting in the queue) drops it without calling the provider.
    ``lost``: the broker is known to have lost its messages (tasks.broker_epoch), so every
    ``queued`` chunk is re-sent at once instead of at its deadline."""
    stall = get_settings().stall_seconds
    stalled: list[tuple[Sent, str]] = []
    while lost:  # first: their new deadlines keep them out of the usual sweep below
        with session_scope() as session:
            batch = lost_chunks(session, stall, after_id=stalled[-1][0].chunk_id if stalled else 0)
        stalled += batch
        lost = bool(batch)
    with session_scope() as session:
        stalled += stalled_chunks(session, stall)
    for sent, model_type in stalled:
        send_chunks(app, model_type, [sent])
    if stalled:
        log.warning("re-released %d chunks", len(stalled))
    return len(stalled)


def revalidate_keys(app: Celery) -> int:
    """Enqueue one revalidation per stored key (tenant, factory, key), spread evenly over
    ``MODELYARD_KEY_REVALIDATE_SPREAD_SECONDS`` so that many tenants do not burst a provider.
    The spread stays below the broker's visibility timeout (a waiting countdown is never redelivered)."""
    settings = get_settings()
    keys = keys_to_revalidate()
    spread = min(
        settings.key_revalidate_spread_seconds, settings.key_revalidate_seconds, settings.broker_visibility_timeout / 2
    )
    for n, (_tenant_id, _factory, tenant_llm_id) in enumerate(keys):
        app.send_task(REVALIDATE_TASK, args=(tenant_llm_id,), countdown=spread * n / len(keys))
    log.info("revalidating %d stored keys over %.0fs", len(keys), spread)
    return len(keys)


def revalidate_key(tenant_llm_id: int) -> str:
    """Test one stored key with the cheapest real call and record its state (see models.keycheck)."""
    try:
        outcome = revalidate(tenant_llm_id)
    except SecretKeyError as exc:
        # The deployment's fault, not the tenant's: the key keeps its state.
        log.error("cannot revalidate key of tenant_llm %s: %s", tenant_llm_id, exc)
        return "secret-key-error"
    if outcome is None:
        return "gone"
    return "valid" if outcome.ok else str(outcome.code)


def purge_expired(max_seconds: float = 300.0) -> int:
    """Delete the items and chunks of jobs that ended more than ``MODELYARD_JOB_RETENTION`` ago,
    ``MODELYARD_PURGE_BATCH_ROWS`` rows per transaction (no long lock: other jobs keep
    finishing). The job rows stay, marked purged, and so does the usage ledger. Stops after
    ``max_seconds``; the next run (every 10 minutes) goes on. Returns the rows deleted."""
    settings = get_settings()
    if settings.job_retention_seconds <= 0:
        return 0
    deadline = time.monotonic() + max_seconds
    total = 0
    with session_scope() as session:
        expired = job_history.expired_jobs(session, timedelta(seconds=settings.job_retention_seconds))
    for job_id in expired:
        if time.monotonic() > deadline:
            break
        total += job_history.purge_job(job_id, batch=settings.purge_batch_rows, deadline=deadline)
    if expired:
        log.info("purged %d rows of %d jobs past MODELYARD_JOB_RETENTION", total, len(expired))
    return total
