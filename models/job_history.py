"""Jobs over time: listing them, a retry's lineage, and deleting what a job no longer needs.

Retention: a finished job's items (its inputs and results -- a 1,536-dimension vector is
6 KB) and chunks are deleted in batches of ``batch`` rows, one short transaction each, so
no lock is held for long and other jobs keep finishing meanwhile. The job's row stays (its
counts and tokens, marked ``purged_at``) and the usage ledger is never touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.orm import Session

from conf.errors import Conflict
from models.db import session_scope
from models.dml import rowcount
from models.jobs import TERMINAL, get_job, item_pages, utcnow
from models.tables import api_batches, job_chunks, job_items, jobs, tenants, usage_events

LIST_COLUMNS = (
    jobs.c.id,
    jobs.c.tenant_id,
    tenants.c.name.label("tenant"),
    jobs.c.model,
    jobs.c.model_type,
    jobs.c.status,
    jobs.c.items_total,
    jobs.c.items_succeeded,
    jobs.c.items_failed,
    jobs.c.total_tokens,
    jobs.c.created_at,
    jobs.c.finished_at,
    jobs.c.retry_of,
    jobs.c.purged_at,
)


def list_jobs(
    session: Session,
    *,
    tenant_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Jobs newest first, with their counts and tokens."""
    query = select(*LIST_COLUMNS).join(tenants, tenants.c.id == jobs.c.tenant_id)
    if tenant_id is not None:
        query = query.where(jobs.c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(jobs.c.status == status)
    if since is not None:
        query = query.where(jobs.c.created_at >= since)
    rows = session.execute(query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]


def lineage(session: Session, job_id: str) -> list[str]:
    """The job and the jobs it retries, oldest first: ``[original, retry, retry of the retry, ...]``."""
    chain = [job_id]
    while (parent := session.scalar(select(jobs.c.retry_of).where(jobs.c.id == chain[0]))) is not None:
        if parent in chain:  # cannot happen through the API; never loop on a hand-edited row
            break
        chain.insert(0, parent)
    return chain


def active_retry(session: Session, job_id: str) -> str | None:
    """A retry of ``job_id`` that has not ended yet, if any."""
    return session.scalar(select(jobs.c.id).where(jobs.c.retry_of == job_id, jobs.c.status.not_in(TERMINAL)).limit(1))


def iter_failed_inputs(session: Session, job_id: str, *, batch: int = 2000) -> Iterator[Any]:
    """A job's failed (or never run) items with their inputs, in order, a page at a time."""
    columns = (job_items.c.seq, job_items.c.custom_id, job_items.c.text, job_items.c.payload, job_items.c.blob)
    return item_pages(session, job_id, columns, job_items.c.status.in_(("failed", "cancelled", "pending")), batch=batch)


def purge_batch(session: Session, job_id: str, table: Table, first_seq: int, batch: int) -> int:
    """Delete the job's rows of ``table`` (``job_items`` or ``job_chunks``) with ``seq`` in
    ``[first_seq, first_seq + batch)``: a range of the ``(job_id, seq)`` index, so a batch never
    walks past the index entries of rows an earlier batch deleted. The caller commits after each."""
    return rowcount(
        session,
        delete(table).where(table.c.job_id == job_id, table.c.seq >= first_seq, table.c.seq < first_seq + batch),
    )


def mark_purged(session: Session, job_id: str) -> None:
    session.execute(update(jobs).where(jobs.c.id == job_id).values(purged_at=utcnow()))


def expired_jobs(session: Session, retention: timedelta, limit: int = 100) -> list[str]:
    """Finished jobs past their retention whose items are not purged yet, oldest first."""
    cutoff = utcnow() - retention
    return list(
        session.scalars(
            select(jobs.c.id)
            .where(jobs.c.purged_at.is_(None), jobs.c.finished_at < cutoff, jobs.c.status.in_(TERMINAL))
            .order_by(jobs.c.finished_at)
            .limit(limit)
        )
    )


def deletable(session: Session, job_id: str, tenant_id: str | None = None) -> dict[str, Any]:
    """The job, if it may be deleted: it has ended (cancel a running job first)."""
    job = get_job(session, job_id, tenant_id)
    if job["status"] not in TERMINAL:
        raise Conflict(f"job {job_id} is {job['status']}; cancel it first (modelyard job cancel {job_id})")
    return job


def delete_job_row(session: Session, job_id: str) -> None:
    """The job's row, once its items and chunks are gone; the usage ledger keeps its rows
    (their ``job_id`` is set to NULL by the foreign key, or here where SQLite does not enforce it)."""
    session.execute(delete(api_batches).where(api_batches.c.job_id == job_id))
    session.execute(update(usage_events).where(usage_events.c.job_id == job_id).values(job_id=None))
    session.execute(update(jobs).where(jobs.c.retry_of == job_id).values(retry_of=None))
    session.execute(delete(jobs).where(jobs.c.id == job_id))


def purge_job(job_id: str, *, batch: int = 5000, delete_row: bool = False, deadline: float | None = None) -> int:
    """Delete the job's items, then its chunks, ``batch`` rows per transaction; then mark the job
    purged (or, with ``delete_row``, delete it). Returns the number of rows deleted. Past
    ``deadline`` (``time.monotonic()``) it stops between batches; the next call goes on."""
    total = 0
    for table in (job_items, job_chunks):
        with session_scope() as session:
            low, high = session.execute(
                select(func.min(table.c.seq), func.max(table.c.seq)).where(table.c.job_id == job_id)
            ).one()
        for first in range(low, high + 1, batch) if low is not None else ():
            if deadline is not None and time.monotonic() > deadline:
                return total
            with session_scope() as session:
                total += purge_batch(session, job_id, table, first, batch)
    with session_scope() as session:
        (delete_job_row if delete_row else mark_purged)(session, job_id)
    return total


def vector_dimension(session: Session, job_ids: list[str]) -> int:
    """The length of the first stored vector among these jobs' items (0: none)."""
    for job_id in job_ids:
        vector = session.scalar(
            select(job_items.c.vector).where(job_items.c.job_id == job_id, job_items.c.vector.is_not(None)).limit(1)
        )
        if vector is not None:
            return len(vector) // 4
    return 0
