"""The Voyage AI family: Voyage's embeddings (documents and queries told apart) and rerank.

Wire format (docs.voyageai.com/reference; plain ``httpx``, ``Authorization: Bearer``)::

    POST {base}/embeddings            {"input": [...], "model", "input_type": "document" | "query"}
    POST {base}/multimodalembeddings  {"inputs": [{"content": [{"type": "text", "text"}]}], "model", "input_type"}
        -> {"object": "list", "data": [{"object": "embedding", "embedding", "index"}], "model",
            "usage": {"total_tokens"}}
    POST {base}/rerank                {"query", "documents": [...], "model", "top_k"}
        -> {"object": "list", "data": [{"relevance_score", "index"}], "model", "usage": {"total_tokens"}}

With ``input_type`` Voyage prepends a retrieval prompt for the document or the query. The
voyage-multimodal models are served only by ``/multimodalembeddings``; text goes there as text
content. A request holds at most 1,000 texts and a documented number of tokens in all: 1M for
the lite models, 320K for voyage-4, voyage-3.5, voyage-3, voyage-2 and voyage-multimodal-3,
120K for the rest (voyage-4-large, voyage-3-large, voyage-code-3, voyage-finance-2,
voyage-law-2, ...). Slicing by :attr:`batch_size` cannot know how long the texts are, so a batch
is split further when its estimated tokens would pass half the model's cap (the estimate is
bytes/4; Voyage's tokenizer counts code and CJK text denser than that).

Errors are ``{"detail": "..."}``, read by providers.http. One 429 says more than its words: an
organisation without a payment method gets "reduced rate limits of 3 RPM and 10K TPM"; the
text speaks of billing, which would read as QUOTA, but it is a rate limit that waiting serves,
so it stays RATE_LIMIT (retried, ``Retry-After`` kept).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
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
from providers.errors import ErrorCode, ProviderError
from providers.jina import embedding_result, rerank_result
from providers.registry import register

FACTORY = "Voyage AI"

# Tokens a request may hold in all, by model (docs: "The total number of tokens in the list ...").
_REQUEST_TOKENS = {
    "voyage-4-lite": 1_000_000,
    "voyage-3.5-lite": 1_000_000,
    "voyage-3-lite": 1_000_000,
    "voyage-4": 320_000,
    "voyage-3.5": 320_000,
    "voyage-3": 320_000,
    "voyage-2": 320_000,
    "voyage-multimodal-3": 320_000,
}
_DEFAULT_REQUEST_TOKENS = 120_000
_ESTIMATE_SHARE = 0.5  # of the cap, for our bytes/4 estimate

MAX_RERANK_DOCUMENTS = 1_000  # "The number of documents cannot exceed 1,000."
_REDUCED_LIMITS = re.compile(r"reduced rate limit", re.IGNORECASE)


class _Voyage(BaseModel):
    factories: ClassVar[tuple[str, ...]] = (FACTORY,)
    default_base_url: ClassVar[str] = "https://api.voyageai.com/v1"
    needs_key: ClassVar[bool] = True

    def check(self, response: httpx.Response) -> httpx.Response:
        try:
            return super().check(response)
        except ProviderError as exc:
            if exc.status == 429 and _REDUCED_LIMITS.search(exc.message):
                exc.code = ErrorCode.RATE_LIMIT  # the no-payment-method tier: slow, not out of money
            raise


def _token_groups(texts: Sequence[str], budget: int) -> Iterator[list[str]]:
    """Consecutive texts in groups whose estimated tokens stay within ``budget`` (a longer text alone)."""
    group: list[str] = []
    used = 0
    for text in texts:
        cost = estimate_tokens(text)
        if group and used + cost > budget:
            yield group
            group, used = [], 0
        group.append(text)
        used += cost
    if group:
        yield group


@register
class VoyageEmbedding(_Voyage, EmbeddingModel):
    batch_size = 128

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, "document")

    def _encode_query_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, "query")

    def _embed(self, texts: list[str], input_type: str) -> EmbeddingResult:
        budget = int(_REQUEST_TOKENS.get(self.model_name, _DEFAULT_REQUEST_TOKENS) * _ESTIMATE_SHARE)
        results = [self._request(group, input_type) for group in _token_groups(texts, budget)]
        usage = sum((r.usage for r in results), Usage())
        return EmbeddingResult(np.concatenate([r.vectors for r in results], axis=0), usage)

    def _request(self, texts: list[str], input_type: str) -> EmbeddingResult:
        body: dict[str, Any]
        if "multimodal" in self.model_name:
            path = "multimodalembeddings"
            inputs = [{"content": [{"type": "text", "text": t}]} for t in texts]
            body = {"inputs": inputs, "model": self.model_name, "input_type": input_type}
        else:
            path = "embeddings"
            body = {"input": texts, "model": self.model_name, "input_type": input_type}
        return embedding_result(self.post_json(path, json=body), texts, path)


@register
class VoyageRerank(_Voyage, RerankModel):
    def similarity(self, query: str, texts: Sequence[str]) -> RerankResult:
        """Scores in the documents' order; usage as reported (``total_tokens``) or estimated. Voyage
        takes at most :data:`MAX_RERANK_DOCUMENTS` documents a request: more are split and merged."""
        return self.in_batches(query, texts, MAX_RERANK_DOCUMENTS, self._rerank)

    def _rerank(self, query: str, texts: list[str]) -> RerankResult:
        body = {"query": query, "documents": texts, "model": self.model_name, "top_k": len(texts)}
        data = self.post_json("rerank", json=body)
        return rerank_result(data, "data", data.get("usage"), query, texts)
