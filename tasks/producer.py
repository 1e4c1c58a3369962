"""The producer API: submit a job, follow it, read its results, cancel it.

``submit_embedding`` streams its input: items are validated and inserted in batches inside
one transaction, so a bad item anywhere rolls the whole job back (nothing half-written) and
a 100,000-text job never sits in a Python list. Only the first chunks are released; the
rest follow as earlier ones finish (at most ``MODELYARD_JOB_MAX_INFLIGHT`` in flight).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.orm import Session

from conf.errors import BudgetSpent, Conflict, InvalidRequest
from conf.settings import get_settings
from models import budgets, job_history
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
    items_by_custom_id,
    iter_items,
    release_chunks,
    set_request_hash,
)
from models.tenants import get_tenant_model, resolve_tenant
from providers.base import MODEL_TYPES
from providers.registry import UnsupportedModel, get_provider_class
from tasks import validation
from tasks.orchestrate import send_chunks
from tasks.request_hash import RequestHash
from tasks.runtime import current
from tasks.validation import Limits

Input = str | dict[str, Any] | ItemRow
WithJob = Callable[[Session, str], None]  # the caller's rows about a job, in the job's transaction
EMBEDDING_INPUT_TYPES = ("document", "query")
log = logging.getLogger("modelyard.producer")


class JobId(str):
    """A submitted job's id. ``unsent``: how many of its chunk messages the broker did not take
    (it was down). The job is saved all the same and the sweeper sends them when the broker is
    back: do not submit it again."""

    unsent: int = 0
    existing: bool = False  # the idempotency key's job, submitted before with this same request


def submit_embedding(
    tenant: str,
    model: str,
    texts: Iterable[Input],
    *,
    idempotency_key: str | None = None,
    chunk_size: int | None = None,
    input_type: str = "document",
    with_job: WithJob | None = None,
    cache: bool = True,
) -> JobId:
    """Submit a batch embedding job; returns its id at once.

    ``texts``: strings (custom ids "0", "1", ...) or ``{"custom_id": ..., "text": ...}`` dicts.
    ``input_type``: ``"document"`` (passages to index) or ``"query"`` (search queries: embedded
    with the provider's query mode where it has one -- Cohere's ``search_query``, Jina's
    ``retrieval.query``, Gemini's ``RETRIEVAL_QUERY``...).
    ``with_job(session, job_id)``: the caller's own rows about the job (the HTTP API's batch),
    written in the job's transaction: both are saved, or neither.
    ``cache``: False to call the provider even for texts the embedding cache holds.
    """
    settings = get_settings()
    size = settings.embedding_chunk_size if chunk_size is None else chunk_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidRequest(f"chunk size must be a whole number of at least 1; got {size!r}"[:200])
    if input_type not in EMBEDDING_INPUT_TYPES:
        raise InvalidRequest(f"input_type must be one of {', '.join(EMBEDDING_INPUT_TYPES)}; got {input_type!r}"[:200])
    limits = Limits.of(settings)
    rows = (_embedding_row(i, t, limits) for i, t in enumerate(_items(texts, "texts")))
    return _submit(
        tenant,
        "embedding",
        model,
        rows,
        chunk_size=size,
        idempotency_key=idempotency_key,
        options={"input_type": input_type, **({} if cache else {"cache": False})},
        with_job=with_job,
    )


def submit(
    tenant: str,
    model_type: str,
    model: str,
    items: Iterable[ItemRow],
    *,
    idempotency_key: str | None = None,
    with_job: WithJob | None = None,
) -> JobId:
    """Submit a job of any type; each non-embedding item is one provider call (one chunk).

    Item shapes (``ItemRow`` fields) per type:
    chat: ``payload={"messages": [...], "system"?: str, "gen_conf"?: {...}, "tools"?: [...]}``;
    rerank: ``payload={"query": str, "documents": [str, ...]}``;
    image2text: ``blob=<image bytes>, payload={"prompt"?: str, "mime_type"?: "image/png"}``;
    speech2text: ``blob=<audio bytes>, payload={"filename"?: "audio.wav"}``;
    tts: ``text=str, payload={"voice"?: str, "format"?: "mp3"}``.
    """
    if model_type == "embedding":
        return submit_embedding(tenant, model, items, idempotency_key=idempotency_key, with_job=with_job)
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise InvalidRequest(f"model type must be one of {', '.join(MODEL_TYPES)}; got {model_type!r}"[:200])
    limits = Limits.of(get_settings())
    rows = (_checked(model_type, i, row, limits) for i, row in enumerate(_items(items, "items")))
    return _submit(tenant, model_type, model, rows, chunk_size=1, idempotency_key=idempotency_key, with_job=with_job)


def _items(values: Any, what: str) -> Iterator[Any]:
    if isinstance(values, (str, bytes, bytearray, dict)):  # iterating it would embed each character (or key)
        raise InvalidRequest(f"{what} must be a list (or other iterable) of items, not a single string or object")
    try:
        return iter(values)
    except TypeError:
        raise InvalidRequest(
            f"{what} must be a list (or other iterable) of items, got {type(values).__name__}"
        ) from None


def _checked(model_type: str, index: int, row: ItemRow, limits: Limits) -> ItemRow:
    """Validate one non-embedding item; the message names the item."""
    if not isinstance(row, ItemRow):
        raise InvalidRequest(f"item {index}: expected an ItemRow, got {type(row).__name__}")
    where = f"item {validation.custom_id(row.custom_id, f'item {index}', limits)!r}"
    if model_type == "tts" and (not isinstance(row.text, str) or not row.text.strip()):
        raise InvalidRequest(f"{where}: tts needs a non-empty text")
    if row.text is not None:
        validation.text(row.text, where, limits)
    validation.payload(row.payload, where, limits, extra_bytes=len(row.text.encode("utf-8")) if row.text else 0)
    p = row.payload or {}
    if model_type == "chat":
        msgs = p.get("messages")
        if (
            not isinstance(msgs, list)
            or not msgs
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in msgs)
        ):
            raise InvalidRequest(f'{where}: chat needs "messages", a non-empty list of {{"role", "content"}} objects')
        if len(msgs) > limits.chat_messages:
            raise InvalidRequest(
                f"{where}: chat has {len(msgs):,} messages; the limit is {limits.chat_messages:,} "
                "(MODELYARD_MAX_CHAT_MESSAGES)"
            )
    elif model_type == "rerank":
        docs = p.get("documents")
        if not isinstance(p.get("query"), str) or not p["query"].strip():
            raise InvalidRequest(f'{where}: rerank needs a non-empty "query"')
        if not isinstance(docs, list) or not docs or not all(isinstance(d, str) for d in docs):
            raise InvalidRequest(f'{where}: rerank needs "documents", a non-empty list of strings')
    elif model_type in ("image2text", "speech2text"):
        blob = validation.blob(row.blob, where, limits, model_type, "image" if model_type == "image2text" else "audio")
        return ItemRow(row.custom_id, row.text, row.payload, blob)
    if row.blob is not None:
        raise InvalidRequest(f"{where}: {model_type} takes no binary input (blob)")
    return row


def _embedding_row(index: int, item: Input, limits: Limits) -> ItemRow:
    if isinstance(item, ItemRow):
        custom_id, value = item.custom_id, item.text
    elif isinstance(item, str):
        custom_id, value = str(index), item
    elif isinstance(item, dict):
        custom_id, value = item.get("custom_id", str(index)), item.get("text")
    else:
        raise InvalidRequest(f'item {index}: expected a string or an object with "text", got {type(item).__name__}')
    where = f"item {validation.custom_id(custom_id, f'item {index}', limits)!r}"
    return ItemRow(custom_id=custom_id, text=validation.text(value, where, limits))


def _capped(rows: Iterator[ItemRow], limit: int) -> Iterator[ItemRow]:
    for n, row in enumerate(rows):
        if n >= limit:
            raise InvalidRequest(f"a job may hold at most {limit:,} items (MODELYARD_MAX_JOB_ITEMS)")
        yield row


RowSource = Callable[[Session], Iterator[ItemRow]]


def _submit(
    tenant: str,
    model_type: str,
    model: str,
    rows: Iterator[ItemRow] | RowSource,
    *,
    chunk_size: int,
    idempotency_key: str | None,
    options: dict[str, Any] | None = None,
    retry_of: str | None = None,
    with_job: WithJob | None = None,
) -> JobId:
    """Write the job, its items and chunks in one transaction, then send its first chunks.

    ``rows``: the items, or a function of the session that yields them (a retry reads its
    original's failed items in the transaction that writes the new job). With an idempotency
    key already taken, the request is hashed and compared with the one the key was first used
    for: the same returns that job; a different one is a :class:`Conflict` (nothing written,
    nothing sent). ``with_job(session, job_id)``: the caller's own rows about the new job, in its
    transaction."""
    settings = get_settings()
    validation.name(tenant, "tenant")
    validation.name(model, "model", max_chars=400)
    if idempotency_key is not None:
        validation.name(idempotency_key, "idempotency key")
    job_id = secrets.token_hex(8)
    options = {"chunk_size": chunk_size, **(options or {})}
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
        items = rows(session) if callable(rows) else rows
        digest = RequestHash(model_type, tm.full_name, {k: v for k, v in options.items() if k != "chunk_size"})
        existing = insert_job(
            session,
            job_id=job_id,
            tenant_id=tenant_id,
            tenant_llm_id=tm.id,
            model_type=model_type,
            model=tm.full_name,
            options=options,
            idempotency_key=idempotency_key,
            retry_of=retry_of,
        )
        if existing:
            _same_request(session, existing, idempotency_key or "", digest, _capped(items, settings.max_job_items))
            found = JobId(existing)
            found.existing = True
            return found
        n_items = insert_items(session, job_id, digest.feed(_capped(items, settings.max_job_items)))
        if n_items == 0:
            raise InvalidRequest("a job needs at least one input")
        set_request_hash(session, job_id, digest.hexdigest())
        insert_chunks(session, job_id, n_items, chunk_size)
        if with_job is not None:
            with_job(session, job_id)
        released = release_chunks(session, job_id, settings.job_max_inflight_chunks, settings.stall_seconds)
    submitted = JobId(job_id)
    submitted.unsent = len(send_chunks(current().celery, model_type, released))
    if submitted.unsent:
        log.warning(
            "job %s is saved, but the broker did not take its %d chunk message(s); the sweeper sends them "
            "when the broker is back",
            job_id,
            submitted.unsent,
        )
    return submitted


def _same_request(session: Session, job_id: str, key: str, digest: RequestHash, items: Iterator[ItemRow]) -> None:
    """The key was used before: hash this request (every item is still validated) and refuse
    it unless it is the one the key was first used for. A job from before request hashes were
    kept (``request_hash`` NULL) is taken as the same."""
    for _ in digest.feed(items):
        pass
    stored = get_job(session, job_id)["request_hash"]
    if stored is not None and stored != digest.hexdigest():
        raise Conflict(
            f"idempotency key {key!r} was used for job {job_id} with a different request (other inputs, "
            "model or options); nothing was submitted: use a new key for a new request"
        )


def retry(job_id: str, *, tenant_id: str | None = None) -> JobId:
    """A new job of ``job_id``'s failed (or cancelled) items, with their custom ids, linked to
    it (``retry_of``): read the results of both together with ``iter_results(new, lineage=True)``.
    The original must have ended, still hold its inputs, and have no retry still running."""
    with session_scope() as session:
        job = get_job(session, job_id, tenant_id)
        if job["status"] not in TERMINAL:
            raise Conflict(f"job {job_id} is {job['status']}; a job is retried once it has ended")
        if job["purged_at"] is not None:
            raise Conflict(f"job {job_id}'s inputs were purged (MODELYARD_JOB_RETENTION); submit them again")
        if job["items_succeeded"] >= job["items_total"]:
            raise InvalidRequest(f"job {job_id} has no failed items to retry")
        running = job_history.active_retry(session, job_id)
        if running:
            raise Conflict(
                f"job {running} is already retrying job {job_id}; wait for it (modelyard job wait {running})"
            )
        tenant = job["tenant_id"]
    model_type, options = job["model_type"], dict(job["options"] or {})

    def failed(session: Session) -> Iterator[ItemRow]:
        for r in job_history.iter_failed_inputs(session, job_id):
            yield ItemRow(r.custom_id, r.text, r.payload, r.blob)

    return _submit(
        tenant,
        model_type,
        job["model"],
        failed,
        chunk_size=int(options.pop("chunk_size", 1)),
        idempotency_key=None,
        options=options,
        retry_of=job_id,
    )


def delete(job_id: str, *, tenant_id: str | None = None) -> int:
    """Delete an ended job, its items and chunks (in batches); the usage ledger keeps its rows.
    Returns the number of item and chunk rows deleted."""
    with session_scope() as session:
        job_history.deletable(session, job_id, tenant_id)
    return job_history.purge_job(job_id, delete_row=True)


def list_jobs(
    *, tenant: str | None = None, status: str | None = None, since: datetime | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Jobs newest first with their counts and tokens (``tenant``: an id or a name)."""
    with session_scope() as session:
        tenant_id = resolve_tenant(session, tenant) if tenant is not None else None
        rows = job_history.list_jobs(session, tenant_id=tenant_id, status=status, since=since, limit=limit)
    for r in rows:
        for key in ("created_at", "finished_at", "purged_at"):
            r[key] = _iso(r[key])
    return rows


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
        "items": {
            "total": job["items_total"],
            "succeeded": job["items_succeeded"],
            "failed": job["items_failed"],
            "pending": pending,
        },
        "chunks": {"total": job["chunks_total"], "done": job["chunks_done"]},
        "total_tokens": job["total_tokens"],
        "created_at": _iso(job["created_at"]),
        "started_at": _iso(job["started_at"]),
        "finished_at": _iso(job["finished_at"]),
        "retry_of": job["retry_of"],
        "purged_at": _iso(job["purged_at"]),
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
    job_id: str | None = None  # the job whose outcome this is (a retry's, with lineage=True)


def iter_results(job_id: str, *, lineage: bool = False) -> Iterator[ItemResult]:
    """Every item's outcome in item order, streamed from the database.

    ``lineage``: for a retry (``job retry``), the original job's items in their order, each
    with its newest outcome along the chain of retries up to ``job_id``: what succeeded the
    first time and what a retry made of what had failed, read together."""
    with session_scope() as session:
        get_job(session, job_id)
        chain = job_history.lineage(session, job_id) if lineage else [job_id]
        for page in pages(iter_items(session, chain[0])):
            newer = _newer_outcomes(session, chain[1:], [r.custom_id for r in page if r.status != "succeeded"])
            for first in page:
                # the original's order (``first.seq``), whichever job's outcome it is
                owner, r = newer.get(first.custom_id, (chain[0], first))
                yield ItemResult(
                    first.seq,
                    r.custom_id,
                    r.status,
                    np.frombuffer(r.vector, dtype="<f4") if r.vector is not None else None,
                    r.result,
                    r.result_blob,
                    r.error_code,
                    r.error_message,
                    owner,
                )


def results_shape(job_id: str) -> tuple[int, int]:
    """(items, vector dimension) of ``iter_results(job_id, lineage=True)``; dimension 0 if no
    item has a vector."""
    with session_scope() as session:
        chain = job_history.lineage(session, job_id)
        n = get_job(session, chain[0])["items_total"]
        return n, job_history.vector_dimension(session, chain)


T = TypeVar("T")


def pages(rows: Iterable[T], size: int = 2000) -> Iterator[list[T]]:
    """``rows`` in lists of ``size`` (the last may be shorter), read as they are needed."""
    page: list[T] = []
    for row in rows:
        page.append(row)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def _newer_outcomes(session: Session, retries: list[str], custom_ids: list[str]) -> dict[str, tuple[str, Any]]:
    """custom_id -> (job, item row) of the newest retry in ``retries`` (oldest first) that holds it."""
    found: dict[str, tuple[str, Any]] = {}
    for retry_id in retries:  # a later retry's outcome replaces an earlier one's
        for r in items_by_custom_id(session, retry_id, custom_ids):
            found[r.custom_id] = (retry_id, r)
    return found


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


def wait(
    job_id: str,
    *,
    timeout: float | None = None,
    poll: float = 0.5,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
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
