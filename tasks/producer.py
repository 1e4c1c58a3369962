"""The producer API: submit a job, follow it, read its results, cancel it.

``submit_embedding`` streams its input: items are validated and inserted in batches inside
one transaction, so a bad item anywhere rolls the whole job back (nothing half-written) and
a 100,000-text job never sits in a Python list. Only the first chunks are released; the
rest follow as earlier ones finish (at most ``MODELYARD_JOB_MAX_INFLIGHT`` in flight).
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from conf.errors import BudgetSpent, InvalidRequest
from conf.settings import get_settings
from models import budgets
from models.db import session_scope
from models.jobs import (
    TERMINAL,
    ItemRow,
    cancel_job,
    failed_items,
    get_job,
    insert_chunks,
    insert_items,
    insert_job,
    iter_items,
    release_chunks,
)
from models.tenants import get_tenant_model, resolve_tenant
from providers.base import MODEL_TYPES
from providers.registry import UnsupportedModel, get_provider_class
from tasks.orchestrate import send_chunks

Input = str | dict[str, Any] | ItemRow
EMBEDDING_INPUT_TYPES = ("document", "query")


def submit_embedding(
    tenant: str,
    model: str,
    texts: Iterable[Input],
    *,
    idempotency_key: str | None = None,
    chunk_size: int | None = None,
    input_type: str = "document",
    cache: bool = True,
) -> str:
    """Submit a batch embedding job; returns its id at once.

    ``texts``: strings (custom ids "0", "1", ...) or ``{"custom_id": ..., "text": ...}`` dicts.
    ``input_type``: ``"document"`` (passages to index) or ``"query"`` (search queries: embedded
    with the provider's query mode where it has one -- Cohere's ``search_query``, Jina's
    ``retrieval.query``, Gemini's ``RETRIEVAL_QUERY``...).
    ``cache``: False to call the provider even for texts the embedding cache holds.
    """
    if isinstance(texts, (str, bytes)):  # iterating it would embed each character
        raise InvalidRequest("texts must be a list (or other iterable) of texts, not a single string")
    settings = get_settings()
    size = chunk_size or settings.embedding_chunk_size
    if size < 1:
        raise InvalidRequest("chunk size must be at least 1")
    if input_type not in EMBEDDING_INPUT_TYPES:
        raise InvalidRequest(f"input_type must be one of {', '.join(EMBEDDING_INPUT_TYPES)}; got {input_type!r}")
    return _submit(tenant, "embedding", model, (_embedding_row(i, t, settings.max_text_chars) for i, t in enumerate(texts)),
                   chunk_size=size, idempotency_key=idempotency_key,
                   options={"input_type": input_type, **({} if cache else {"cache": False})})


def submit(
    tenant: str,
    model_type: str,
    model: str,
    items: Iterable[ItemRow],
    *,
    idempotency_key: str | None = None,
) -> str:
    """Submit a job of any type; each non-embedding item is one provider call (one chunk).

    Item shapes (``ItemRow`` fields) per type:
    chat: ``payload={"messages": [...], "system"?: str, "gen_conf"?: {...}, "tools"?: [...]}``;
    rerank: ``payload={"query": str, "documents": [str, ...]}``;
    image2text: ``blob=<image bytes>, payload={"prompt"?: str, "mime_type"?: "image/png"}``;
    speech2text: ``blob=<audio bytes>, payload={"filename"?: "audio.wav"}``;
    tts: ``text=str, payload={"voice"?: str, "format"?: "mp3"}``.
    """
    if model_type == "embedding":
        return submit_embedding(tenant, model, items, idempotency_key=idempotency_key)
    if model_type not in MODEL_TYPES:
        raise InvalidRequest(f"model type must be one of {', '.join(MODEL_TYPES)}; got {model_type!r}")
    max_chars = get_settings().max_text_chars
    rows = (_checked(model_type, i, row, max_chars) for i, row in enumerate(items))
    return _submit(tenant, model_type, model, rows, chunk_size=1, idempotency_key=idempotency_key)


def _checked(model_type: str, index: int, row: ItemRow, max_chars: int) -> ItemRow:
    """Validate one non-embedding item; the message names the item."""
    if not isinstance(row, ItemRow):
        raise InvalidRequest(f"item {index}: expected an ItemRow, got {type(row).__name__}")
    where = f"item {row.custom_id!r}"
    p = row.payload if isinstance(row.payload, dict) else {}
    if row.payload is not None and not isinstance(row.payload, dict):
        raise InvalidRequest(f"{where}: payload must be an object")
    if model_type == "chat":
        msgs = p.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise InvalidRequest(f'{where}: chat needs "messages", a non-empty list of {{"role", "content"}} objects')
    elif model_type == "rerank":
        docs = p.get("documents")
        if not isinstance(p.get("query"), str) or not p["query"].strip():
            raise InvalidRequest(f'{where}: rerank needs a non-empty "query"')
        if not isinstance(docs, list) or not docs or not all(isinstance(d, str) for d in docs):
            raise InvalidRequest(f'{where}: rerank needs "documents", a non-empty list of strings')
    elif model_type in ("image2text", "speech2text"):
        if not row.blob:
            raise InvalidRequest(f"{where}: {model_type} needs the {'image' if model_type == 'image2text' else 'audio'} bytes")
    elif model_type == "tts":
        if not isinstance(row.text, str) or not row.text.strip():
            raise InvalidRequest(f"{where}: tts needs a non-empty text")
    if isinstance(row.text, str) and len(row.text) > max_chars:
        raise InvalidRequest(f"{where}: text is {len(row.text):,} characters; the limit is {max_chars:,}")
    return row


def _embedding_row(index: int, item: Input, max_chars: int) -> ItemRow:
    if isinstance(item, ItemRow):
        row = item
    elif isinstance(item, str):
        row = ItemRow(custom_id=str(index), text=item)
    elif isinstance(item, dict):
        custom_id = item.get("custom_id", str(index))
        row = ItemRow(custom_id=str(custom_id), text=item.get("text"))
    else:
        raise InvalidRequest(f"item {index}: expected a string or an object with \"text\", got {type(item).__name__}")
    if not isinstance(row.text, str):
        raise InvalidRequest(f"item {row.custom_id!r}: \"text\" must be a string")
    if not row.text.strip():
        raise InvalidRequest(f"item {row.custom_id!r}: text is empty")
    if len(row.text) > max_chars:
        raise InvalidRequest(
            f"item {row.custom_id!r}: text is {len(row.text):,} characters; the limit is {max_chars:,} (MODELYARD_MAX_TEXT_CHARS)"
        )
    if not row.custom_id or len(row.custom_id) > 256:
        raise InvalidRequest(f"item {index}: custom_id must be 1 to 256 characters")
    return row


def _capped(rows: Iterator[ItemRow], limit: int) -> Iterator[ItemRow]:
    for n, row in enumerate(rows):
        if n >= limit:
            raise InvalidRequest(f"a job may hold at most {limit:,} items (MODELYARD_MAX_JOB_ITEMS)")
        yield row


def _submit(tenant: str, model_type: str, model: str, rows: Iterator[ItemRow], *, chunk_size: int,
            idempotency_key: str | None, options: dict[str, Any] | None = None) -> str:
    settings = get_settings()
    job_id = secrets.token_hex(8)
    with session_scope() as session:
        tenant_id = resolve_tenant(session, tenant)
        tm = get_tenant_model(session, tenant_id, model, model_type)
        if tm.status != "enabled":
            raise InvalidRequest(f"model {model} ({model_type}) is disabled for this tenant")
        if tm.key_state == "invalid":
            raise InvalidRequest(f"the API key for {model} is invalid: {tm.key_error or 'rejected by the provider'}")
        try:
            get_provider_class(model_type, tm.factory)
        except UnsupportedModel as exc:
            raise InvalidRequest(str(exc)) from None
        spent = budgets.refusal(session, tenant_id, tm.full_name)
        if spent:
            raise BudgetSpent(f"job refused: {spent}")
        existing = insert_job(session, job_id=job_id, tenant_id=tenant_id, tenant_llm_id=tm.id, model_type=model_type,
                              model=tm.full_name, options={"chunk_size": chunk_size, **(options or {})},
                              idempotency_key=idempotency_key)
        if existing:
            return existing
        n_items = insert_items(session, job_id, _capped(rows, settings.max_job_items))
        if n_items == 0:
            raise InvalidRequest("a job needs at least one input")
        insert_chunks(session, job_id, n_items, chunk_size)
        released = release_chunks(session, job_id, settings.job_max_inflight_chunks, settings.stall_seconds)
    send_chunks(model_type, released)
    return job_id


def status(job_id: str, *, max_errors: int = 1000) -> dict[str, Any]:
    """The job with its status, item counts and the failed items' codes and messages."""
    with session_scope() as session:
        job = get_job(session, job_id)
        errors, n_errors = failed_items(session, job_id, max_errors) if job["items_failed"] else ([], 0)
    pending = job["items_total"] - job["items_succeeded"] - job["items_failed"]
    return {
        "id": job["id"],
        "tenant_id": job["tenant_id"],
        "model": job["model"],
        "model_type": job["model_type"],
        "status": job["status"],
        "items": {"total": job["items_total"], "succeeded": job["items_succeeded"], "failed": job["items_failed"],
                  "pending": pending},
        "chunks": {"total": job["chunks_total"], "done": job["chunks_done"]},
        "total_tokens": job["total_tokens"],
        "created_at": _iso(job["created_at"]),
        "started_at": _iso(job["started_at"]),
        "finished_at": _iso(job["finished_at"]),
        "errors": errors,
        "errors_total": n_errors,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class ItemResult:
    seq: int
    custom_id: str
    status: str
    vector: np.ndarray | None
    result: Any
    result_blob: bytes | None
    error_code: str | None
    error_message: str | None


def iter_results(job_id: str) -> Iterator[ItemResult]:
    """Every item's outcome in item order, streamed from the database."""
    with session_scope() as session:
        get_job(session, job_id)
        for r in iter_items(session, job_id):
            yield ItemResult(
                r.seq, r.custom_id, r.status,
                np.frombuffer(r.vector, dtype="<f4") if r.vector is not None else None,
                r.result, r.result_blob, r.error_code, r.error_message,
            )


@dataclass
class EmbeddingResults:
    """Vectors in item order (a row of NaN where an item has no vector), ids and errors."""

    vectors: np.ndarray
    custom_ids: list[str]
    errors: dict[str, tuple[str, str]]  # custom_id -> (code, message)


def results(job_id: str) -> EmbeddingResults:
    with session_scope() as session:
        job = get_job(session, job_id)
    n = job["items_total"]
    vectors: np.ndarray | None = None
    custom_ids: list[str] = []
    errors: dict[str, tuple[str, str]] = {}
    for item in iter_results(job_id):
        custom_ids.append(item.custom_id)
        if item.vector is not None:
            if vectors is None:
                vectors = np.full((n, item.vector.shape[0]), np.nan, dtype=np.float32)
            vectors[item.seq] = item.vector
        elif item.error_code:
            errors[item.custom_id] = (item.error_code, item.error_message or "")
    return EmbeddingResults(vectors if vectors is not None else np.empty((n, 0), np.float32), custom_ids, errors)


def cancel(job_id: str) -> str:
    with session_scope() as session:
        return cancel_job(session, job_id)


def wait(job_id: str, *, timeout: float | None = None, poll: float = 0.5,
         on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Poll until the job ends (or ``timeout`` seconds pass: TimeoutError); returns the final status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        st = status(job_id)
        if on_progress is not None:
            on_progress(st)
        if st["status"] in TERMINAL:
            return st
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is still {st['status']} after {timeout:.0f}s")
        time.sleep(poll)
