"""The Jina family: Jina AI's embeddings (with a query mode on the models that have one) and rerank.

Wire format (api.jina.ai; plain ``httpx``, ``Authorization: Bearer``)::

    POST {base}/embeddings  {"model", "input": [...], "embedding_type": "float", "task"?}
        -> {"model", "object": "list", "data": [{"object": "embedding", "index", "embedding"}],
            "usage": {"total_tokens", "prompt_tokens"}}
    POST {base}/rerank      {"model", "query", "documents": [...], "top_n", "return_documents": false}
        -> {"model", "results": [{"index", "relevance_score"}], "usage": {"total_tokens"}}

``task`` picks a model's LoRA adapter: jina-embeddings-v3, v4, v5 and jina-clip-v2 embed
documents as ``retrieval.passage`` and queries as ``retrieval.query``; the code-embedding
models use ``nl2code.passage`` / ``nl2code.query``; the v2 models have no tasks, so none is
sent. An input list holds at most 2048 items (512 for jina-embeddings-v4); :attr:`batch_size`
stays well below that, since the key's tokens-per-minute limit (1M on a plain key) bounds a
request too. Errors are FastAPI's ``{"detail": ...}`` (a string, or a list of validation
errors) or ``{"code", "name", "message"}`` (e.g. 402 ``InsufficientBalanceError``), both read
by providers.http; the status decides the code.

:func:`embedding_result` reads the OpenAI-shaped embeddings that Voyage AI sends too, and
:func:`rerank_result` the ``[{"index", "relevance_score"}]`` rankings of Voyage AI and Cohere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from providers.base import (
    BaseModel,
    EmbeddingModel,
    EmbeddingResult,
    RerankModel,
    RerankResult,
    estimate_tokens,
)
from providers.errors import ErrorCode, ProviderError
from providers.registry import register
from providers.wire import (
    estimated,
    reading,
    reported_usage,
)

FACTORY = "Jina"

# Model-name prefix -> (query task, document task), for the models that take a task.
_TASKS: tuple[tuple[str, tuple[str, str]], ...] = (
    ("jina-embeddings-v3", ("retrieval.query", "retrieval.passage")),
    ("jina-embeddings-v4", ("retrieval.query", "retrieval.passage")),
    ("jina-embeddings-v5", ("retrieval.query", "retrieval.passage")),
    ("jina-clip-v2", ("retrieval.query", "retrieval.passage")),
    ("jina-code-embeddings", ("nl2code.query", "nl2code.passage")),
)


def _tasks(model: str) -> tuple[str, str] | None:
    return next((tasks for prefix, tasks in _TASKS if model.startswith(prefix)), None)


def embedding_result(data: dict[str, Any], texts: Sequence[str], path: str) -> EmbeddingResult:
    """Vectors in input order from ``data[{"index", "embedding"}]``, with ``usage`` as reported
    (``total_tokens`` alone counts as prompt tokens) or estimated."""
    with reading(path):
        rows = sorted(data["data"], key=lambda row: int(row["index"]))
        vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(texts):
        raise ProviderError(f"/{path} returned {len(vectors)} vectors for {len(texts)} texts", code=ErrorCode.SERVER)
    return EmbeddingResult(vectors, reported_usage(data.get("usage")) or estimated(sum(map(estimate_tokens, texts))))


def rerank_result(data: dict[str, Any], key: str, usage: Any, query: str, texts: Sequence[str]) -> RerankResult:
    """Scores in the documents' order from ``data[key]``, a best-first ``[{"index", "relevance_score"}]``
    (a document left out scores 0), with ``usage`` as reported or else estimated: what a
    cross-encoder reads, the query once beside every document."""
    scores = np.zeros(len(texts), dtype=np.float32)
    with reading("rerank"):
        for result in data[key]:
            index = int(result["index"])
            if not 0 <= index < len(texts):
                raise IndexError(f"result index {index} outside {len(texts)} documents")
            scores[index] = float(result["relevance_score"])
    estimate = sum(estimate_tokens(query) + estimate_tokens(t) for t in texts)
    return RerankResult(scores, reported_usage(usage) or estimated(estimate))


class _Jina(BaseModel):
    factories: ClassVar[tuple[str, ...]] = (FACTORY,)
    default_base_url: ClassVar[str] = "https://api.jina.ai/v1"
    needs_key: ClassVar[bool] = True


@register
class JinaEmbedding(_Jina, EmbeddingModel):
    batch_size = 128

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, query=False)

    def _encode_query_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, query=True)

    def _embed(self, texts: list[str], *, query: bool) -> EmbeddingResult:
        body: dict[str, Any] = {"model": self.model_name, "input": texts, "embedding_type": "float"}
        tasks = _tasks(self.model_name)
        if tasks:
            body["task"] = tasks[0] if query else tasks[1]
        return embedding_result(self.post_json("embeddings", json=body), texts, "embeddings")


@register
class JinaRerank(_Jina, RerankModel):
    def similarity(self, query: str, texts: Sequence[str]) -> RerankResult:
        """Scores in the documents' order; usage as reported (``total_tokens``) or estimated."""
        if not texts:
            raise ValueError("similarity needs at least one text")
        body = {
            "model": self.model_name,
            "query": query,
            "documents": list(texts),
            "top_n": len(texts),
            "return_documents": False,
        }
        data = self.post_json("rerank", json=body)
        return rerank_result(data, "results", data.get("usage"), query, texts)
