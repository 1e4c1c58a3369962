"""Native ``/api/jobs``: jobs of every model type -- submit, status with per-item errors,
results (JSON lines, or ``.npy`` for embeddings), cancel. The same producer API as the CLI."""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from conf.errors import InvalidRequest
from models.db import session_scope
from models.jobs import ItemRow, get_job
from providers.base import ModelType
from tasks import producer
from workers.api.auth import jobs_tenant
from workers.api.errors import ERROR_RESPONSES
from workers.commands import result_row

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=ERROR_RESPONSES)


class JobItem(BaseModel):
    custom_id: str | None = Field(default=None, min_length=1, max_length=256)
    text: str | None = Field(default=None, description="embedding and tts input")
    payload: dict[str, Any] | None = Field(default=None, description="chat / rerank / image2text / speech2text fields")
    blob_base64: str | None = Field(default=None, description="image2text / speech2text input bytes, base64")


class JobSubmit(BaseModel):
    model_type: ModelType
    model: str = Field(min_length=1, max_length=400, description="NAME@FACTORY")
    items: list[JobItem] = Field(min_length=1, max_length=100_000)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    input_type: Literal["document", "query"] = "document"


class JobCreated(BaseModel):
    job_id: str


class ItemError(BaseModel):
    custom_id: str
    code: str | None
    message: str | None


class JobStatus(BaseModel):
    id: str
    model: str
    model_type: str
    status: Literal["queued", "running", "succeeded", "partial", "failed", "cancelled"]
    items: dict[str, int]
    chunks: dict[str, int]
    total_tokens: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    errors: list[ItemError]
    errors_total: int


def _rows(req: JobSubmit) -> Iterator[ItemRow]:
    for i, item in enumerate(req.items):
        blob = None
        if item.blob_base64 is not None:
            try:
                blob = base64.b64decode(item.blob_base64, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest(f"item {i}: blob_base64 is not valid base64") from None
        yield ItemRow(custom_id=item.custom_id or str(i), text=item.text, payload=item.payload, blob=blob)


def owned_status(tenant_id: str, job_id: str) -> dict[str, Any]:
    with session_scope() as session:
        get_job(session, job_id, tenant_id)  # another tenant's job: not found
    return producer.status(job_id)


@router.post("", response_model=JobCreated, summary="Submit a job of any model type")
def submit(req: JobSubmit, tenant_id: str = Depends(jobs_tenant)) -> JobCreated:
    if req.model_type == "embedding":
        texts = ({"custom_id": r.custom_id, "text": r.text} for r in _rows(req))
        job_id = producer.submit_embedding(
            tenant_id, req.model, texts, idempotency_key=req.idempotency_key, input_type=req.input_type
        )
    else:
        job_id = producer.submit(tenant_id, req.model_type, req.model, _rows(req), idempotency_key=req.idempotency_key)
    return JobCreated(job_id=job_id)


@router.get("/{job_id}", response_model=JobStatus, summary="A job's status, counts and failed items")
def status(job_id: str, tenant_id: str = Depends(jobs_tenant)) -> dict[str, Any]:
    return owned_status(tenant_id, job_id)


@router.post("/{job_id}/cancel", response_model=JobStatus)
def cancel(job_id: str, tenant_id: str = Depends(jobs_tenant)) -> dict[str, Any]:
    owned_status(tenant_id, job_id)
    producer.cancel(job_id)
    return producer.status(job_id)


@router.get(
    "/{job_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "JSON lines (one per item), or an .npy array of the vectors",
            "content": {
                "application/jsonl": {"schema": {"type": "string"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
def results(
    job_id: str, format: Literal["jsonl", "npy"] = Query(default="jsonl"), tenant_id: str = Depends(jobs_tenant)
) -> StreamingResponse:
    st = owned_status(tenant_id, job_id)
    if format == "npy":
        if st["model_type"] != "embedding":
            raise InvalidRequest("format=npy is for embedding jobs")
        return StreamingResponse(
            _npy(job_id, st["items"]["total"]),
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{job_id}.npy"'},
        )
    lines = (json.dumps(result_row(item), default=str).encode() + b"\n" for item in producer.iter_results(job_id))
    return StreamingResponse(lines, media_type="application/jsonl")


def _npy(job_id: str, n: int) -> Iterator[bytes]:
    """The vectors as one ``(items, dim)`` float32 array, written row by row (NaN: no vector)."""
    dim = next((item.vector.shape[0] for item in producer.iter_results(job_id) if item.vector is not None), 0)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
    yield header.getvalue()
    missing = np.full(dim, np.nan, dtype="<f4").tobytes()
    for item in producer.iter_results(job_id):
        yield item.vector.astype("<f4").tobytes() if item.vector is not None else missing
