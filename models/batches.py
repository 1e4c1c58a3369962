"""OpenAI batches made through the HTTP API: one ``api_batches`` row per job, holding the
request's own fields (endpoint, input file, window, metadata); and the pages of a job's
items that its output and error files are made from."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conf.errors import NotFound
from models.jobs import item_pages
from models.tables import api_batches, job_items, jobs


def insert_batch(
    session: Session,
    *,
    job_id: str,
    tenant_id: str,
    endpoint: str,
    input_file_id: str,
    completion_window: str,
    metadata: dict[str, str] | None,
    encoding_format: str | None,
) -> None:
    session.execute(
        api_batches.insert().values(
            job_id=job_id,
            tenant_id=tenant_id,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            metadata=metadata,
            encoding_format=encoding_format,
        )
    )


_COLUMNS = (
    api_batches.c.job_id,
    api_batches.c.endpoint,
    api_batches.c.input_file_id,
    api_batches.c.completion_window,
    api_batches.c.metadata,
    api_batches.c.encoding_format,
    jobs.c.model,
    jobs.c.status,
    jobs.c.items_total,
    jobs.c.items_succeeded,
    jobs.c.items_failed,
    jobs.c.total_tokens,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.finished_at,
)


def get_batch(session: Session, tenant_id: str, job_id: str) -> dict[str, Any]:
    """The batch with its job's state; another tenant's batch is not found."""
    row = session.execute(
        select(*_COLUMNS)
        .join(jobs, jobs.c.id == api_batches.c.job_id)
        .where(api_batches.c.job_id == job_id, api_batches.c.tenant_id == tenant_id)
    ).first()
    if row is None:
        raise NotFound(f"no batch {job_id!r}")
    return dict(row._mapping)


def list_batches(session: Session, tenant_id: str, *, after: str | None, limit: int) -> list[dict[str, Any]]:
    """Newest first; ``after`` (a job id) continues a listing."""
    query = (
        select(*_COLUMNS)
        .join(jobs, jobs.c.id == api_batches.c.job_id)
        .where(api_batches.c.tenant_id == tenant_id)
        .order_by(api_batches.c.created_at.desc(), api_batches.c.job_id.desc())
    )
    if after:
        cursor = session.execute(
            select(api_batches.c.created_at, api_batches.c.job_id).where(
                api_batches.c.job_id == after, api_batches.c.tenant_id == tenant_id
            )
        ).first()
        if cursor is None:
            raise NotFound(f"no batch {after!r}")
        query = query.where(
            (api_batches.c.created_at < cursor.created_at)
            | ((api_batches.c.created_at == cursor.created_at) & (api_batches.c.job_id < cursor.job_id))
        )
    return [dict(r._mapping) for r in session.execute(query.limit(limit))]


def iter_item_rows(
    session: Session, job_id: str, statuses: tuple[str, ...], *, with_output: bool = True, batch: int = 1000
) -> Iterator[Any]:
    """The job's items in these statuses, in order, in pages by seq (constant memory): with
    their text and outputs, or (``with_output=False``) their text only."""
    cols = [job_items.c.seq, job_items.c.custom_id, job_items.c.status, job_items.c.text]
    if with_output:
        cols += [job_items.c.vector, job_items.c.result, job_items.c.error_code, job_items.c.error_message]
    return item_pages(session, job_id, cols, job_items.c.status.in_(statuses), batch=batch)
