"""A batch's output and error files, made from its job's items when read, in OpenAI's batch
output line format: ``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}``. Streamed a page of items at a time.

An embedding line's ``usage`` is its share of what the provider billed the job: providers
bill a call of many texts as a whole, so the job's tokens are shared out by word count; the
lines of a batch add up to the ledger exactly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from conf.errors import NotFound
from models.batches import get_batch, iter_item_rows
from models.db import session_scope
from workers.api.schemas import FileObject

ERROR_STATUS = {
    "RATE_LIMIT": 429,
    "QUOTA": 429,
    "MAX_RETRIES": 429,
    "AUTHENTICATION": 401,
    "INVALID_REQUEST": 400,
    "CONTENT_FILTER": 400,
    "MODEL": 404,
    "TIMEOUT": 504,
    "CONNECTION": 502,
    "SERVER": 502,
}


def file_ids(batch: dict[str, Any]) -> tuple[str | None, str | None]:
    """(output file id, error file id) once the batch has ended and has such lines."""
    if batch["finished_at"] is None:
        return None, None
    job_id = batch["job_id"]
    return (
        f"file-batch-{job_id}-output" if batch["items_succeeded"] else None,
        f"file-batch-{job_id}-errors" if batch["items_failed"] else None,
    )


def _batch_with_file(tenant_id: str, job_id: str, kind: str) -> dict[str, Any]:
    with session_scope() as session:
        batch = get_batch(session, tenant_id, job_id)
    output, errors = file_ids(batch)
    if (output if kind == "output" else errors) is None:
        raise NotFound(f"no file 'file-batch-{job_id}-{kind}'")
    return batch


def describe(tenant_id: str, job_id: str, kind: str, file_id: str) -> FileObject:
    batch = _batch_with_file(tenant_id, job_id, kind)
    count = batch["items_succeeded"] if kind == "output" else batch["items_failed"]
    return FileObject(
        id=file_id,
        bytes=0,
        created_at=int(batch["finished_at"].timestamp()),
        filename=f"batch_{job_id}_{kind}.jsonl",
        purpose="batch_output",
        status_details=f"{count} lines, made when read (bytes: 0, not known in advance)",
    )


def lines(tenant_id: str, job_id: str, kind: str) -> Iterator[bytes]:
    batch = _batch_with_file(tenant_id, job_id, kind)
    if kind == "errors":
        return _error_lines(job_id)
    if batch["endpoint"] == "/v1/embeddings":
        return _embedding_lines(batch)
    return _chat_lines(batch)


def _line(
    job_id: str, seq: int, custom_id: str, status: int, body: dict[str, Any], error: dict[str, Any] | None = None
) -> bytes:
    out = {
        "id": f"batch_req_{job_id}_{seq}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": f"{job_id}-{seq}", "body": body},
        "error": error,
    }
    return json.dumps(out, separators=(",", ":")).encode() + b"\n"


def _weight(text: str | None) -> int:
    return max(1, len((text or "").split()))


def _embedding_lines(batch: dict[str, Any]) -> Iterator[bytes]:
    job_id, total = batch["job_id"], batch["total_tokens"]
    with session_scope() as session:
        weight = sum(_weight(r.text) for r in iter_item_rows(session, job_id, ("succeeded",), with_output=False))
    done = 0
    billed = 0
    with session_scope() as session:
        for r in iter_item_rows(session, job_id, ("succeeded",)):
            done += _weight(r.text)
            share = round(total * done / weight) - billed
            billed += share
            vector = np.frombuffer(r.vector, dtype="<f4")
            embedding: Any = (
                base64.b64encode(vector.tobytes()).decode() if batch["encoding_format"] == "base64" else vector.tolist()
            )
            body = {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
                "model": batch["model"],
                "usage": {"prompt_tokens": share, "total_tokens": share},
            }
            yield _line(job_id, r.seq, r.custom_id, 200, body)


def _chat_lines(batch: dict[str, Any]) -> Iterator[bytes]:
    job_id, created = batch["job_id"], int(batch["finished_at"].timestamp())
    with session_scope() as session:
        for r in iter_item_rows(session, job_id, ("succeeded",)):
            result = r.result or {}
            message: dict[str, Any] = {"role": "assistant", "content": result.get("text")}
            calls = result.get("tool_calls") or []
            if calls:
                message["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                    }
                    for c in calls
                ]
            usage = result.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            body = {
                "id": f"chatcmpl-{job_id}-{r.seq}",
                "object": "chat.completion",
                "created": created,
                "model": batch["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": result.get("finish_reason") or "stop",
                    }
                ],
                "usage": usage,
            }
            yield _line(job_id, r.seq, r.custom_id, 200, body)


def _error_lines(job_id: str) -> Iterator[bytes]:
    with session_scope() as session:
        for r in iter_item_rows(session, job_id, ("failed",)):
            status = ERROR_STATUS.get(r.error_code or "", 500)
            error = {
                "message": r.error_message or r.error_code or "failed",
                "type": "provider_error",
                "param": None,
                "code": r.error_code,
            }
            yield _line(
                job_id,
                r.seq,
                r.custom_id,
                status,
                {"error": error},
                {"code": r.error_code, "message": error["message"]},
            )
