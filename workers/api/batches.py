"""``/v1/batches``: a batch is a modelyard job, submitted through the producer API from the
uploaded input file (read as a stream), with its OpenAI fields in ``api_batches``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from conf.errors import Conflict, InvalidRequest, NotFound
from models import files as store
from models.batches import get_batch, insert_batch, list_batches
from models.db import session_scope
from tasks import producer
from workers.api.auth import jobs_tenant
from workers.api.batch_files import file_ids
from workers.api.batch_lines import MODEL_TYPES, read_batch
from workers.api.errors import ERROR_RESPONSES
from workers.api.schemas import Batch, BatchCreate, BatchList, BatchStatus, RequestCounts

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=ERROR_RESPONSES)
STATUS: dict[str, BatchStatus] = {
    "queued": "in_progress",
    "running": "in_progress",
    "succeeded": "completed",
    "partial": "completed",
    "failed": "completed",
    "cancelled": "cancelled",
}


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def batch_object(b: dict[str, Any]) -> Batch:
    status = STATUS.get(b["status"], "in_progress")
    output, errors = file_ids(b)
    finished = _ts(b["finished_at"])
    return Batch(
        id=f"batch_{b['job_id']}",
        endpoint=b["endpoint"],
        model=b["model"],
        input_file_id=b["input_file_id"],
        completion_window=b["completion_window"],
        status=status,
        output_file_id=output,
        error_file_id=errors,
        created_at=int(b["created_at"].timestamp()),
        in_progress_at=_ts(b["started_at"]),
        expires_at=_ts(b["created_at"] + timedelta(hours=24)),
        finalizing_at=finished if status == "completed" else None,
        completed_at=finished if status == "completed" else None,
        cancelling_at=finished if status == "cancelled" else None,
        cancelled_at=finished if status == "cancelled" else None,
        request_counts=RequestCounts(total=b["items_total"], completed=b["items_succeeded"], failed=b["items_failed"]),
        metadata=b["metadata"],
    )


def job_id_of(batch_id: str) -> str:
    if not batch_id.startswith("batch_"):
        raise NotFound(f"no batch {batch_id[:80]!r}")
    return batch_id[len("batch_") :]


@router.post("", response_model=Batch, summary="Create a batch (one modelyard job) from an uploaded JSONL file")
def create_batch(req: BatchCreate, tenant_id: str = Depends(jobs_tenant)) -> Batch:
    with session_scope() as session:
        row = store.get_file(session, tenant_id, req.input_file_id)
    if row["purpose"] != "batch":
        raise InvalidRequest(f"file {req.input_file_id} has purpose {row['purpose']!r}, not 'batch'")
    model_type = MODEL_TYPES[req.endpoint]
    with store.open_file(tenant_id, req.input_file_id) as fh:
        parsed = read_batch(fh, req.endpoint)

        def batch_row(session: Session, job_id: str) -> None:  # in the job's transaction: both or neither
            insert_batch(
                session,
                job_id=job_id,
                tenant_id=tenant_id,
                endpoint=req.endpoint,
                input_file_id=req.input_file_id,
                completion_window=req.completion_window,
                metadata=req.metadata,
                encoding_format=parsed.encoding_format,
            )

        try:
            if model_type == "embedding":
                job_id = producer.submit_embedding(tenant_id, parsed.model, parsed.items, with_job=batch_row)
            else:
                job_id = producer.submit(tenant_id, model_type, parsed.model, parsed.items, with_job=batch_row)
        except (NotFound, Conflict) as exc:  # a model, a repeated custom_id: faults in the file
            raise InvalidRequest(str(exc)) from None
    with session_scope() as session:
        return batch_object(get_batch(session, tenant_id, job_id))


@router.get("/{batch_id}", response_model=Batch)
def retrieve_batch(batch_id: str, tenant_id: str = Depends(jobs_tenant)) -> Batch:
    with session_scope() as session:
        return batch_object(get_batch(session, tenant_id, job_id_of(batch_id)))


@router.get("", response_model=BatchList)
def list_all(
    after: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=20, ge=1, le=100),
    tenant_id: str = Depends(jobs_tenant),
) -> BatchList:
    with session_scope() as session:
        rows = list_batches(session, tenant_id, after=job_id_of(after) if after else None, limit=limit + 1)
    data = [batch_object(r) for r in rows[:limit]]
    return BatchList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=len(rows) > limit,
    )


@router.post("/{batch_id}/cancel", response_model=Batch)
def cancel_batch(batch_id: str, tenant_id: str = Depends(jobs_tenant)) -> Batch:
    job_id = job_id_of(batch_id)
    with session_scope() as session:
        get_batch(session, tenant_id, job_id)
    producer.cancel(job_id)
    with session_scope() as session:
        return batch_object(get_batch(session, tenant_id, job_id))
