"""The Jina family: exact /v1/embeddings and /v1/rerank requests (task by model and by documents
vs queries), answers shaped as Jina's API shows them, and its errors."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from providers.base import estimate_tokens
from providers.errors import ErrorCode, ProviderError, classify
from providers.jina import JinaEmbedding, JinaRerank
from providers.registry import get_provider_class
from tests.mock_http import Recorder, provider

KEY = "jina_275aefb6495643408d4c499fce548080w5rYjijHfHVBi"
BASE = "https://api.jina.ai/v1"


def embeddings(vectors: list[list[float]], order: list[int] | None = None, tokens: int | None = 12) -> dict[str, Any]:
    order = order if order is not None else list(range(len(vectors)))
    answer: dict[str, Any] = {
        "model": "jina-embeddings-v3",
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vectors[i]} for i in order],
    }
    if tokens is not None:
        answer["usage"] = {"total_tokens": tokens, "prompt_tokens": tokens}
    return answer


def embedder(recorder: Recorder, model: str) -> JinaEmbedding:
    return provider("embedding", "Jina", recorder, model=model, api_key=KEY)  # type: ignore[no-any-return]


def test_registered_classes_carry_the_factory() -> None:
    for model_type, cls in (("embedding", JinaEmbedding), ("rerank", JinaRerank)):
        assert get_provider_class(model_type, "Jina") is cls
        assert cls.factories == ("Jina",) and cls.default_base_url == BASE and cls.needs_key


def test_v3_embeds_documents_as_passages_and_queries_as_queries() -> None:
    recorder = Recorder(
        httpx.Response(200, json=embeddings([[0.1, 0.2], [0.3, 0.4]], order=[1, 0], tokens=17)),
        httpx.Response(200, json=embeddings([[1.0, 0.0]], tokens=4)),
    )
    model = embedder(recorder, "jina-embeddings-v3")

    documents = model.encode(["Organic skincare for sensitive skin", "Bio-Hautpflege"])
    query = model.encode_queries("skincare")

    assert recorder.requests[0].method == "POST" and str(recorder.requests[0].url) == f"{BASE}/embeddings"
    assert recorder.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert recorder.json(0) == {
        "model": "jina-embeddings-v3",
        "input": ["Organic skincare for sensitive skin", "Bio-Hautpflege"],
        "embedding_type": "float",
        "task": "retrieval.passage",
    }
    assert recorder.json(1) == {
        "model": "jina-embeddings-v3",
        "input": ["skincare"],
        "embedding_type": "float",
        "task": "retrieval.query",
    }
    assert documents.vectors.dtype == np.float32
    np.testing.assert_array_equal(documents.vectors, np.array([[0.1, 0.2], [0.3, 0.4]], "f4"))  # by index
    assert (documents.usage.prompt_tokens, documents.usage.total_tokens, documents.usage.estimated) == (17, 17, False)
    assert query.vectors.shape == (1, 2) and query.usage.total_tokens == 4


@pytest.mark.parametrize(
    ("model", "tasks"),
    [
        ("jina-embeddings-v4", ("retrieval.passage", "retrieval.query")),
        ("jina-embeddings-v5-text-small", ("retrieval.passage", "retrieval.query")),
        ("jina-code-embeddings-1.5b", ("nl2code.passage", "nl2code.query")),
        ("jina-embeddings-v2-base-en", (None, None)),
        ("jina-embeddings-v2-base-code", (None, None)),
    ],
)
def test_task_by_model(model: str, tasks: tuple[str | None, str | None]) -> None:
    recorder = Recorder(httpx.Response(200, json=embeddings([[1.0]])), httpx.Response(200, json=embeddings([[1.0]])))
    embed = embedder(recorder, model)

    embed.encode(["a document"])
    embed.encode_queries("a query")

    assert (recorder.json(0).get("task"), recorder.json(1).get("task")) == tasks
    assert recorder.json(0)["model"] == model and recorder.json(0)["embedding_type"] == "float"


def test_batches_of_128_and_estimated_usage_when_missing() -> None:
    def answer(n: int) -> httpx.Response:
        return httpx.Response(200, json=embeddings([[float(i)] for i in range(n)], tokens=None))

    recorder = Recorder(answer(128), answer(2))
    texts = [f"chunk {i}" for i in range(130)]

    result = embedder(recorder, "jina-embeddings-v3").encode(texts)

    assert [len(recorder.json(i)["input"]) for i in range(2)] == [128, 2]
    assert result.vectors.shape == (130, 1)
    assert result.usage.estimated and result.usage.prompt_tokens == sum(estimate_tokens(t) for t in texts)


def test_count_mismatch_and_missing_data_are_server_errors() -> None:
    recorder = Recorder(httpx.Response(200, json=embeddings([[1.0]])), httpx.Response(200, json={"detail": "ok?"}))
    model = embedder(recorder, "jina-embeddings-v3")

    for texts in (["a", "b"], ["a"]):
        with pytest.raises(ProviderError) as info:
            model.encode(texts)
        assert classify(info.value) is ErrorCode.SERVER


def test_rerank_request_scores_and_usage() -> None:
    answer = {
        "model": "jina-reranker-v2-base-multilingual",
        "usage": {"total_tokens": 38},
        "results": [{"index": 1, "relevance_score": 0.82}, {"index": 0, "relevance_score": 0.11}],
    }
    recorder = Recorder(httpx.Response(200, json=answer))
    model = provider("rerank", "Jina", recorder, model="jina-reranker-v2-base-multilingual", api_key=KEY)

    result = model.similarity("organic skincare", ["Cheap shoes", "Aloe vera cream for sensitive skin", "Tax forms"])

    assert str(recorder.last.url) == f"{BASE}/rerank"
    assert recorder.last.headers["authorization"] == f"Bearer {KEY}"
    assert recorder.json() == {
        "model": "jina-reranker-v2-base-multilingual",
        "query": "organic skincare",
        "documents": ["Cheap shoes", "Aloe vera cream for sensitive skin", "Tax forms"],
        "top_n": 3,
        "return_documents": False,
    }
    np.testing.assert_array_equal(result.scores, np.array([0.11, 0.82, 0.0], "f4"))
    assert (result.usage.prompt_tokens, result.usage.total_tokens, result.usage.estimated) == (38, 38, False)


def test_rerank_without_usage_is_estimated_and_a_bad_index_is_a_server_error() -> None:
    recorder = Recorder(
        httpx.Response(200, json={"results": [{"index": 0, "relevance_score": 0.5}]}),
        httpx.Response(200, json={"results": [{"index": 3, "relevance_score": 0.5}]}),
        httpx.Response(200, json={"results": [{"index": -1, "relevance_score": 0.5}]}),
    )
    model = provider("rerank", "Jina", recorder, model="jina-colbert-v1-en", api_key=KEY)

    result = model.similarity("q", ["doc one"])
    assert result.usage.estimated and result.usage.prompt_tokens == estimate_tokens("q") + estimate_tokens("doc one")

    for _ in range(2):  # past the end, and negative
        with pytest.raises(ProviderError) as info:
            model.similarity("q", ["doc one"])
        assert classify(info.value) is ErrorCode.SERVER


ERRORS: list[tuple[int, Any, ErrorCode]] = [
    (401, {"detail": "Unauthorized: invalid API key"}, ErrorCode.AUTHENTICATION),
    (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "input"],
                    "msg": "Each input list can contain at most 512 items.",
                    "type": "value_error",
                }
            ]
        },
        ErrorCode.INVALID_REQUEST,
    ),
    (
        402,
        {
            "data": None,
            "code": 402,
            "name": "InsufficientBalanceError",
            "status": 40203,
            "message": "Account balance not enough to run this query, please recharge.",
            "readableMessage": "InsufficientBalanceError: Account balance not enough to run this query, please recharge.",
        },
        ErrorCode.QUOTA,
    ),
    (429, {"detail": "Rate limit exceeded: 500 requests per minute"}, ErrorCode.RATE_LIMIT),
    (503, {"detail": "Service temporarily unavailable"}, ErrorCode.SERVER),
]


@pytest.mark.parametrize(("status", "body", "code"), ERRORS)
def test_errors_are_classified(status: int, body: Any, code: ErrorCode) -> None:
    recorder = Recorder(httpx.Response(status, json=body))

    with pytest.raises(ProviderError) as info:
        embedder(recorder, "jina-embeddings-v3").encode(["a"])

    assert info.value.status == status
    assert classify(info.value) is code
    text = body.get("detail") if isinstance(body.get("detail"), str) else body.get("message")
    if text:
        assert info.value.message == text
    else:
        assert "at most 512 items" in info.value.message


def test_rate_limit_keeps_retry_after_and_scrubs_the_key() -> None:
    headers = {"retry-after": "30", "x-ratelimit-limit": "500"}
    recorder = Recorder(httpx.Response(429, headers=headers, json={"detail": f"Rate limit exceeded for {KEY}"}))
    model = provider("rerank", "Jina", recorder, model="jina-reranker-v2-base-multilingual", api_key=KEY)

    with pytest.raises(ProviderError) as info:
        model.similarity("q", ["d"])

    assert classify(info.value) is ErrorCode.RATE_LIMIT
    assert info.value.retry_after == 30.0
    assert info.value.rate_limits == {"retry-after": "30", "x-ratelimit-limit": "500"}
    assert KEY not in str(info.value)
