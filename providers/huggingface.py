"""The HuggingFace family: a text-embeddings-inference (TEI) server, self-hosted or behind a
Hugging Face Inference Endpoint, serving one embedding or one re-ranker model.

Wire format (huggingface/text-embeddings-inference, router/src/http/server.rs and docs/openapi.json)::

    POST {base}/embed   {"inputs": [...], "truncate": true, "normalize": true}  -> [[float, ...], ...]
    POST {base}/rerank  {"query", "texts": [...], "truncate": true, "raw_scores": false}
                        -> [{"index", "score"}, ...]  (best first)

The server serves the model it was started with, so the model name is not sent. It reports no
usage in the body; the ``x-compute-tokens`` response header carries the tokens it computed
(for /rerank: every query+text pair), and we estimate when the header is missing. Errors are
``{"error": "...", "error_type": "Validation" | "Tokenizer" | "Backend" | "Overloaded" |
"Unhealthy"}`` (413/422/424/429/503); the type decides the code, not the status (424 is a
backend failure, not a bad request). More than ``--max-client-batch-size`` inputs (32 by
default) is a 413, so both calls slice by :attr:`batch_size`.

There is no default base URL: the tenant gives the server's. A key, when given (Inference
Endpoints, or TEI started with ``--api-key``), is sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import httpx
import numpy as np

from providers.base import (
    BaseModel,
    EmbeddingModel,
    EmbeddingResult,
    RerankModel,
    RerankResult,
    Usage,
    estimate_tokens,
)
from providers.errors import ErrorCode, ProviderError, scrub
from providers.http import error_from_response, error_json, json_body, parse_retry_after, rate_limit_headers
from providers.registry import register
from providers.wire import (
    estimated,
    reading,
)

FACTORY = "HuggingFace"

# TEI's ErrorType, serialized by name ("Backend"); its OpenAPI examples spell them lower-case.
_ERROR_TYPES: dict[str, ErrorCode] = {
    "validation": ErrorCode.INVALID_REQUEST,  # 413: batch too large, input too long, empty inputs
    "tokenizer": ErrorCode.INVALID_REQUEST,  # 422
    "empty": ErrorCode.INVALID_REQUEST,
    "backend": ErrorCode.SERVER,  # 424: inference failed
    "overloaded": ErrorCode.RATE_LIMIT,  # 429: the server's queue is full
    "unhealthy": ErrorCode.SERVER,  # 503
}


def _tei_error(response: httpx.Response, secrets: tuple[str, ...]) -> ProviderError:
    """A ProviderError from TEI's ``{"error", "error_type"}`` body, or the common shapes otherwise
    (a proxy's or the Inference Endpoint's own errors)."""
    body = error_json(response)
    if not (isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("error_type"), str)):
        return error_from_response(response, *secrets)
    message, error_type = body["error"], body["error_type"]
    code = _ERROR_TYPES.get(error_type.lower())
    # "Model is not an embedding model" (/embed), "model is not a re-ranker model" (/rerank): the
    # server runs the wrong kind of model, which no retry changes.
    if code is ErrorCode.SERVER and "model is not a" in message.lower():
        code = ErrorCode.MODEL
    return ProviderError(
        scrub(message, *secrets)[:2000],
        status=response.status_code,
        provider_code=error_type,
        code=code,
        retry_after=parse_retry_after(response.headers),
        rate_limits=rate_limit_headers(response.headers),
    )


class _TEIBase(BaseModel):
    factories: ClassVar[tuple[str, ...]] = (FACTORY,)
    needs_key: ClassVar[bool] = False
    default_base_url: ClassVar[str] = ""
    batch_size = 32  # TEI's default --max-client-batch-size

    def check(self, response: httpx.Response) -> httpx.Response:
        self.rate_limits = rate_limit_headers(response.headers)
        if response.is_success:
            return response
        raise _tei_error(response, self.secrets)

    def _post(self, path: str, body: dict[str, Any]) -> tuple[Any, int | None]:
        """The JSON answer and the ``x-compute-tokens`` count (None when absent)."""
        response = self.post(path, json=body)
        tokens = response.headers.get("x-compute-tokens", "")
        return json_body(response), int(tokens) if tokens.isdigit() and int(tokens) > 0 else None


@register
class HuggingFaceEmbedding(_TEIBase, EmbeddingModel):
    """TEI has no query mode of its own (``prompt_name`` works only for models whose
    sentence-transformers config defines that prompt), so queries are embedded as documents are."""

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        data, tokens = self._post("embed", {"inputs": texts, "truncate": True, "normalize": True})
        with reading("embed"):
            vectors = np.asarray(data, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ProviderError(f"/embed returned {len(vectors)} vectors for {len(texts)} texts", code=ErrorCode.SERVER)
        usage = Usage(tokens, 0, tokens) if tokens else estimated(sum(estimate_tokens(t) for t in texts))
        return EmbeddingResult(vectors, usage)


@register
class HuggingFaceRerank(_TEIBase, RerankModel):
    def similarity(self, query: str, texts: Sequence[str]) -> RerankResult:
        """Scores in the documents' order (0..1: ``raw_scores`` false applies the model's sigmoid)."""
        if not texts:
            raise ValueError("similarity needs at least one text")
        scores = np.zeros(len(texts), dtype=np.float32)
        usage = Usage()
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            body = {"query": query, "texts": batch, "truncate": True, "raw_scores": False}
            data, tokens = self._post("rerank", body)
            with reading("rerank"):
                for rank in data:
                    index = int(rank["index"])
                    if not 0 <= index < len(batch):
                        raise IndexError(f"rank index {index} outside {len(batch)} texts")
                    scores[start + index] = float(rank["score"])
            # A cross-encoder reads the query once beside every text.
            estimate = sum(estimate_tokens(query) + estimate_tokens(t) for t in batch)
            usage = usage + (Usage(tokens, 0, tokens) if tokens else estimated(estimate))
        return RerankResult(scores, usage)
