"""What a worker counts for Prometheus: provider calls by outcome, their latency, 429 pauses,
retries, tokens and cost, cache hits, chunks and jobs finished.

Labels stay bounded: factories and model types are fixed sets, a model outside the catalog
(a tenant's own name on a self-hosted server) is counted as ``other``, tenants are tenant
ids; never a job id, a text or a key. In a prefork worker every pool process counts in
files under ``PROMETHEUS_MULTIPROC_DIR`` (set by the worker launcher before this module is
imported, see workers/metrics.py), which the worker's ``/metrics`` sums.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Histogram

from conf.catalog import find_model
from models.bundle import LLMBundle

CALLS = Counter(
    "modelyard_provider_calls",
    "Provider calls by outcome (OK or the error code)",
    ["factory", "model", "model_type", "code"],
)
LATENCY = Histogram(
    "modelyard_provider_call_seconds",
    "Provider call latency",
    ["factory", "model_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PAUSES = Counter("modelyard_rate_limit_pauses", "429 answers that paused a key for the fleet", ["factory", "model"])
PAUSE_SECONDS = Counter(
    "modelyard_rate_limit_pause_seconds", "Seconds of pause asked by 429 answers", ["factory", "model"]
)
RETRIES = Counter("modelyard_retries", "Chunks sent back to be retried, by error code", ["model_type", "code"])
TOKENS = Counter("modelyard_tokens", "Billed tokens", ["tenant", "model"])
COST = Counter("modelyard_cost_usd", "Cost in USD at the price of each call", ["tenant", "model"])
CACHE_HITS = Counter("modelyard_embedding_cache_hits", "Texts served by the embedding cache", ["tenant", "model"])
CHUNKS = Counter("modelyard_chunks", "Chunks finished, by status", ["model_type", "status"])
JOBS = Counter("modelyard_jobs_finished", "Jobs finished, by final status", ["model_type", "status"])

ALL = (CALLS, LATENCY, PAUSES, PAUSE_SECONDS, RETRIES, TOKENS, COST, CACHE_HITS, CHUNKS, JOBS)
FINAL = ("succeeded", "partial", "failed")


@functools.lru_cache(maxsize=4096)
def model_label(model: str) -> str:
    """The model's name if the catalog has it, else ``other`` (the label set stays bounded)."""
    try:
        return model if find_model(model) is not None else "other"
    except ValueError:
        return "other"


def provider_call(bundle: LLMBundle, code: str, seconds: float) -> None:
    tm = bundle.tenant_model
    CALLS.labels(tm.factory, model_label(tm.full_name), tm.model_type, code).inc()
    LATENCY.labels(tm.factory, tm.model_type).observe(seconds)


def paused(bundle: LLMBundle, seconds: float) -> None:
    labels = (bundle.tenant_model.factory, model_label(bundle.model))
    PAUSES.labels(*labels).inc()
    PAUSE_SECONDS.labels(*labels).inc(max(0.0, seconds))


def retried(model_type: str, code: str) -> None:
    RETRIES.labels(model_type, code).inc()


def spent(bundle: LLMBundle, tokens: int, cost: float | None) -> None:
    labels = (bundle.tenant_model.tenant_id, model_label(bundle.model))
    TOKENS.labels(*labels).inc(max(0, tokens))
    if cost:
        COST.labels(*labels).inc(cost)


def cache_served(bundle: LLMBundle, texts: int) -> None:
    CACHE_HITS.labels(bundle.tenant_model.tenant_id, model_label(bundle.model)).inc(texts)


def chunk_finished(model_type: str, status: str, job_status: str | None) -> None:
    CHUNKS.labels(model_type, status).inc()
    if job_status in FINAL:
        JOBS.labels(model_type, job_status).inc()
