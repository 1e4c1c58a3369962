"""Alibaba DashScope (Model Studio) native text rerank, for the Tongyi-Qianwen factory.

Tongyi-Qianwen's chat, embedding and image2text speak the OpenAI-compatible mode
(``/compatible-mode/v1``) and are registered by ``providers.openai_compat``; rerank has its own
native endpoint::

    POST {base}/services/rerank/text-rerank/text-rerank       Authorization: Bearer KEY
         {"model": "gte-rerank-v2", "input": {"query", "documents": [...]},
          "parameters": {"return_documents": false, "top_n": N}}
      -> {"output": {"results": [{"index", "relevance_score"}]}, "usage": {"total_tokens"}, "request_id"}

A request takes at most 500 documents and ``query tokens x documents + document tokens`` of
30,000 tokens (gte-rerank-v2) or 120,000 (qwen3-rerank); longer lists are sent in several
requests, cut by our token estimate with a margin (a cross-encoder scores each document on its
own, so the cut does not change the scores).

Errors: ``{"code", "message", "request_id"}`` (read by ``providers.http``). DashScope's
``Throttling.*`` codes are rate limits -- ``Throttling.AllocationQuota`` is its tokens-per-minute
limit, despite the word "quota" in its message -- so they are marked RATE_LIMIT here; money
trouble has its own code (``Arrearage``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from providers.base import RerankModel, RerankResult, Usage, estimate_tokens
from providers.errors import ErrorCode, ProviderError
from providers.registry import register
from providers.wire import reading, rerank_usage

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"
RERANK_PATH = "services/rerank/text-rerank/text-rerank"
MAX_DOCUMENTS = 500
# Tokens one request may carry: query tokens x documents + document tokens.
REQUEST_TOKEN_LIMITS = {"gte-rerank-v2": 30_000, "qwen3-rerank": 120_000}
DEFAULT_REQUEST_TOKENS = 30_000
# Our estimate is about four bytes a token; stay this far below the documented limit.
BUDGET_SHARE = 0.8
_COMPATIBLE_MODE = "/compatible-mode/v1"


def batches(query: str, texts: Sequence[str], token_limit: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of each request: at most MAX_DOCUMENTS, within the token budget (a document
    too large for any budget goes alone)."""
    budget = int(token_limit * BUDGET_SHARE)
    query_tokens = estimate_tokens(query)
    start, used = 0, 0
    for i, text in enumerate(texts):
        cost = query_tokens + estimate_tokens(text)
        if i > start and (i - start >= MAX_DOCUMENTS or used + cost > budget):
            yield start, i
            start, used = i, 0
        used += cost
    yield start, len(texts)


@register
class DashScopeRerank(RerankModel):
    factories = ("Tongyi-Qianwen",)
    default_base_url = DEFAULT_BASE_URL
    needs_key = True

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(model_name, **kwargs)
        # A tenant may have given the factory's OpenAI-compatible URL; the native API is beside it.
        if self.base_url.endswith(_COMPATIBLE_MODE):
            self.base_url = self.base_url.removesuffix(_COMPATIBLE_MODE) + "/api/v1"

    def similarity(self, query: str, texts: Sequence[str]) -> RerankResult:
        """Scores in the documents' order (a document the server leaves out scores 0)."""
        if not texts:
            raise ValueError("similarity needs at least one text")
        limit = REQUEST_TOKEN_LIMITS.get(self.model_name, DEFAULT_REQUEST_TOKENS)
        scores = np.zeros(len(texts), dtype=np.float32)
        usage = Usage()
        for start, stop in batches(query, texts, limit):
            documents = list(texts[start:stop])
            data = self._rerank(query, documents)
            with reading(RERANK_PATH):
                for result in data["output"]["results"]:
                    index = int(result["index"])
                    if not 0 <= index < len(documents):
                        raise IndexError(f"result index {index} outside {len(documents)} documents")
                    scores[start + index] = float(result["relevance_score"])
            usage = usage + rerank_usage(data, query, documents)
        return RerankResult(scores, usage)

    def _rerank(self, query: str, documents: list[str]) -> dict[str, Any]:
        body = {
            "model": self.model_name,
            "input": {"query": query, "documents": documents},
            "parameters": {"return_documents": False, "top_n": len(documents)},
        }
        try:
            return self.post_json(RERANK_PATH, json=body)
        except ProviderError as exc:
            if exc.code is None and (exc.provider_code or "").startswith("Throttling"):
                exc.code = ErrorCode.RATE_LIMIT
            raise
