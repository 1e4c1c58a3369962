"""DashScope (Tongyi-Qianwen) native text rerank: exact requests and answers in the shape of the
Model Studio text-rerank API reference through ``httpx.MockTransport``, batching of long document
lists, and DashScope's error bodies through ``classify()``."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from conf.catalog import load_catalog
from providers.base import estimate_tokens
from providers.dashscope import MAX_DOCUMENTS, DashScopeRerank, batches
from providers.errors import ErrorCode, ProviderError, classify
from providers.registry import get_provider_class
from tests.mock_http import Recorder, provider

KEY = "sk-1f2e3d4c5b6a79880a1b2c3d4e5f6a7b"
URL = "https://dashscope.aliyuncs.com/api/v1/services/rerank/text-rerank/text-rerank"
REQUEST_ID = "0c5a6b2e-5f1d-9e3b-8a47-2f6d3c1b0a9e"
QUERY = "什么是文本排序模型"
DOCUMENTS = [
    "文本排序模型广泛用于搜索引擎和推荐系统中，它们根据文本相关性对候选文本进行排序",
    "量子计算是计算科学的一个前沿领域",
    "预训练语言模型的发展给文本排序模型带来了新的进展",
]


def make(recorder: Recorder, model: str = "gte-rerank-v2", **kwargs: Any) -> Any:
    kwargs.setdefault("api_key", KEY)
    return provider("rerank", "Tongyi-Qianwen", recorder, model=model, **kwargs)


def answer(results: list[tuple[int, float]], total_tokens: int | None = 79) -> httpx.Response:
    body: dict[str, Any] = {
        "output": {"results": [{"index": i, "relevance_score": s} for i, s in results]},
        "request_id": REQUEST_ID,
    }
    if total_tokens is not None:
        body["usage"] = {"total_tokens": total_tokens}
    return httpx.Response(200, json=body)


def test_registered_for_rerank_only_under_the_catalog_spelling() -> None:
    assert "Tongyi-Qianwen" in {f.name for f in load_catalog()}
    assert get_provider_class("rerank", "Tongyi-Qianwen") is DashScopeRerank
    assert DashScopeRerank.factories == ("Tongyi-Qianwen",) and DashScopeRerank.needs_key


def test_rerank_request_and_scores_in_document_order() -> None:
    recorder = Recorder(answer([(0, 0.93), (2, 0.34), (1, 0.000101)]))

    result = make(recorder).similarity(QUERY, DOCUMENTS)

    request = recorder.last
    assert str(request.url) == URL and request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert recorder.json() == {
        "model": "gte-rerank-v2",
        "input": {"query": QUERY, "documents": DOCUMENTS},
        "parameters": {"return_documents": False, "top_n": 3},
    }
    assert result.scores.dtype == np.float32
    np.testing.assert_allclose(result.scores, [0.93, 0.000101, 0.34], rtol=1e-6)
    assert (result.usage.prompt_tokens, result.usage.total_tokens, result.usage.estimated) == (79, 79, False)


def test_missing_usage_is_estimated_and_left_out_documents_score_zero() -> None:
    recorder = Recorder(answer([(1, 0.5)], total_tokens=None))
    result = make(recorder, model="qwen3-rerank").similarity("q", ["a", "b"])
    np.testing.assert_array_equal(result.scores, np.array([0.0, 0.5], dtype=np.float32))
    assert result.usage.estimated
    assert result.usage.prompt_tokens == 2 * estimate_tokens("q") + estimate_tokens("a") + estimate_tokens("b")


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://dashscope.aliyuncs.com/compatible-mode/v1", URL),
        ("https://dashscope-intl.aliyuncs.com/api/v1/", "https://dashscope-intl.aliyuncs.com/api/v1/services/rerank/text-rerank/text-rerank"),
        ("https://dashscope-intl.aliyuncs.com/compatible-mode/v1/", "https://dashscope-intl.aliyuncs.com/api/v1/services/rerank/text-rerank/text-rerank"),
    ],
)  # fmt: skip
def test_base_urls(base_url: str, expected: str) -> None:
    recorder = Recorder(answer([(0, 0.9)]))
    make(recorder, base_url=base_url).similarity("q", ["a"])
    assert str(recorder.last.url) == expected


def test_more_than_500_documents_go_in_several_requests() -> None:
    assert MAX_DOCUMENTS == 500  # the documented limit of gte-rerank-v2 and qwen3-rerank
    texts = [f"doc {i}" for i in range(MAX_DOCUMENTS + 3)]
    recorder = Recorder(
        answer([(i, i / 1000) for i in range(MAX_DOCUMENTS)], total_tokens=4000),
        answer([(2, 0.77), (0, 0.5), (1, 0.25)], total_tokens=24),
    )

    result = make(recorder).similarity("which doc", texts)

    assert [len(recorder.json(i)["input"]["documents"]) for i in range(2)] == [MAX_DOCUMENTS, 3]
    assert recorder.json(1)["input"]["documents"] == texts[MAX_DOCUMENTS:]
    assert recorder.json(1)["parameters"] == {"return_documents": False, "top_n": 3}
    assert result.scores[499] == pytest.approx(0.499)
    np.testing.assert_allclose(result.scores[MAX_DOCUMENTS:], [0.5, 0.25, 0.77], rtol=1e-6)
    assert result.usage.total_tokens == 4024


def test_requests_stay_within_the_models_token_budget() -> None:
    # gte-rerank-v2 takes 30,000 tokens a request (query tokens x documents + document tokens).
    query = "q" * 40  # 10 estimated tokens
    texts = ["x" * 4000] * 30  # 1,000 estimated tokens each: 1,010 a document with the query
    assert list(batches(query, texts, 30_000)) == [(0, 23), (23, 30)]  # 23 x 1,010 <= 24,000 (80%)
    assert list(batches(query, texts, 120_000)) == [(0, 30)]
    assert list(batches(query, ["x" * 200_000, "y"], 30_000)) == [(0, 1), (1, 2)]  # too large alone: sent alone

    recorder = Recorder(answer([(i, 0.1) for i in range(23)]), answer([(i, 0.2) for i in range(7)]))
    result = make(recorder).similarity(query, texts)
    assert (
        len(recorder.requests) == 2
        and result.scores[22] == pytest.approx(0.1)
        and result.scores[23] == pytest.approx(0.2)
    )

    recorder = Recorder(answer([(i, 0.3) for i in range(30)]))
    make(recorder, model="qwen3-rerank").similarity(query, texts)
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"output": {}, "request_id": REQUEST_ID},
        {"output": {"results": [{"index": 3, "relevance_score": 0.5}]}},
        {"output": {"results": [{"index": -1, "relevance_score": 0.5}]}},
        {"output": {"results": [{"index": 0}]}},
    ],
)
def test_unexpected_answers_are_server_errors(body: dict[str, Any]) -> None:
    recorder = Recorder(httpx.Response(200, json=body))
    with pytest.raises(ProviderError) as info:
        make(recorder).similarity("q", ["a"])
    assert classify(info.value) is ErrorCode.SERVER


def test_no_documents_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least one text"):
        make(Recorder()).similarity("q", [])


# ----------------------------------------------------------------- errors


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "request_id": REQUEST_ID}, headers=headers)


ERROR_CASES = [
    (error(401, "InvalidApiKey", "Invalid API-key provided."), ErrorCode.AUTHENTICATION),
    (error(429, "Throttling", "Requests throttling triggered."), ErrorCode.RATE_LIMIT),
    (error(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."), ErrorCode.RATE_LIMIT),
    # Tokens per minute: a rate limit, although its message says "quota".
    (error(429, "Throttling.AllocationQuota", "Allocated quota exceeded, please increase your quota limit."), ErrorCode.RATE_LIMIT),
    (error(400, "Arrearage", "Access denied, plesase make sure your account is in good standing."), ErrorCode.QUOTA),
    (error(403, "AllocationQuota.FreeTierOnly", "The free tier of the model has been exhausted. If you wish to continue access the model on a paid basis, please disable the \"use free tier only\" mode in the management console."), ErrorCode.QUOTA),
    (error(400, "DataInspectionFailed", "Input or output data may contain inappropriate content."), ErrorCode.CONTENT_FILTER),
    (error(400, "InvalidParameter", "Required parameter(s) missing or invalid, please check the request parameters."), ErrorCode.INVALID_REQUEST),
    (error(403, "AccessDenied", "Access denied."), ErrorCode.AUTHENTICATION),
    (error(500, "InternalError", "An internal error has occured, please try again later or contact service support."), ErrorCode.SERVER),
    (error(500, "InternalError.Algo", "An internal error has occured during execution, please try again later or contact service support."), ErrorCode.SERVER),
]  # fmt: skip


@pytest.mark.parametrize(("response", "code"), ERROR_CASES, ids=[c[0].json()["code"] for c in ERROR_CASES])
def test_dashscope_errors_are_classified_by_their_code(response: httpx.Response, code: ErrorCode) -> None:
    recorder = Recorder(response)
    with pytest.raises(ProviderError) as info:
        make(recorder).similarity("q", ["a"])
    assert info.value.provider_code == response.json()["code"]
    assert info.value.status == response.status_code
    assert info.value.message == response.json()["message"]
    assert classify(info.value) is code


def test_throttling_keeps_retry_after_and_rate_limit_headers_and_scrubs_the_key() -> None:
    headers = {"Retry-After": "2", "X-RateLimit-Remaining-Requests": "0"}
    recorder = Recorder(error(429, "Throttling.RateQuota", f"Requests rate limit exceeded for key {KEY}.", headers))
    model = make(recorder)
    with pytest.raises(ProviderError) as info:
        model.similarity("q", ["a"])
    assert info.value.retry_after == 2.0
    assert info.value.rate_limits == {"retry-after": "2", "x-ratelimit-remaining-requests": "0"}
    assert model.rate_limits == info.value.rate_limits
    assert KEY not in info.value.message
    assert classify(info.value) is ErrorCode.RATE_LIMIT
