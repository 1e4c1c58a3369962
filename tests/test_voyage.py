"""The Voyage AI family: exact /v1/embeddings, /v1/multimodalembeddings and /v1/rerank requests
(document vs query input types, requests split by the model's token cap), answers shaped as
Voyage's API reference shows them, and its errors."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from providers.base import estimate_tokens
from providers.errors import ErrorCode, ProviderError, classify
from providers.registry import get_provider_class
from providers.voyage import VoyageEmbedding, VoyageRerank
from tests.mock_http import Recorder, provider

KEY = "pa-Qm3Xv8Lk2Rt6Yp9Wz4Nb7Hc1Jd5Fs0Ga"
BASE = "https://api.voyageai.com/v1"


def embeddings(vectors: list[list[float]], order: list[int] | None = None, tokens: int | None = 10) -> dict[str, Any]:
    order = order if order is not None else list(range(len(vectors)))
    answer: dict[str, Any] = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": vectors[i], "index": i} for i in order],
        "model": "voyage-3.5",
    }
    if tokens is not None:
        answer["usage"] = {"total_tokens": tokens}
    return answer


def embedder(recorder: Recorder, model: str) -> VoyageEmbedding:
    return provider("embedding", "Voyage AI", recorder, model=model, api_key=KEY)  # type: ignore[no-any-return]


def test_registered_classes_carry_the_factory() -> None:
    for model_type, cls in (("embedding", VoyageEmbedding), ("rerank", VoyageRerank)):
        assert get_provider_class(model_type, "Voyage AI") is cls
        assert cls.factories == ("Voyage AI",) and cls.default_base_url == BASE and cls.needs_key


def test_documents_and_queries_carry_their_input_type() -> None:
    recorder = Recorder(
        httpx.Response(200, json=embeddings([[0.1, 0.2], [0.3, 0.4]], order=[1, 0], tokens=11)),
        httpx.Response(200, json=embeddings([[1.0, 0.0]], tokens=3)),
    )
    model = embedder(recorder, "voyage-3.5")

    documents = model.encode(["Sample text 1", "Sample text 2"])
    query = model.encode_queries("sample query")

    assert recorder.requests[0].method == "POST" and str(recorder.requests[0].url) == f"{BASE}/embeddings"
    assert recorder.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert recorder.json(0) == {
        "input": ["Sample text 1", "Sample text 2"],
        "model": "voyage-3.5",
        "input_type": "document",
    }
    assert recorder.json(1) == {"input": ["sample query"], "model": "voyage-3.5", "input_type": "query"}
    assert documents.vectors.dtype == np.float32
    np.testing.assert_array_equal(documents.vectors, np.array([[0.1, 0.2], [0.3, 0.4]], "f4"))
    assert (documents.usage.prompt_tokens, documents.usage.total_tokens, documents.usage.estimated) == (11, 11, False)
    assert query.vectors.shape == (1, 2) and query.usage.total_tokens == 3


def test_multimodal_models_take_text_as_content() -> None:
    answer = embeddings([[0.5, 0.5]]) | {"usage": {"text_tokens": 5, "image_pixels": 0, "total_tokens": 5}}
    recorder = Recorder(httpx.Response(200, json=answer))

    result = embedder(recorder, "voyage-multimodal-3").encode_queries("This is a banana.")

    assert str(recorder.last.url) == f"{BASE}/multimodalembeddings"
    assert recorder.json() == {
        "inputs": [{"content": [{"type": "text", "text": "This is a banana."}]}],
        "model": "voyage-multimodal-3",
        "input_type": "query",
    }
    assert result.usage.total_tokens == 5


def test_batches_of_128_and_estimated_usage_when_missing() -> None:
    def answer(n: int) -> httpx.Response:
        return httpx.Response(200, json=embeddings([[float(i)] for i in range(n)], tokens=None))

    recorder = Recorder(answer(128), answer(1))
    texts = [f"passage {i}" for i in range(129)]

    result = embedder(recorder, "voyage-3.5").encode(texts)

    assert [len(recorder.json(i)["input"]) for i in range(2)] == [128, 1]
    assert result.vectors.shape == (129, 1)
    assert result.usage.estimated and result.usage.prompt_tokens == sum(estimate_tokens(t) for t in texts)


def test_a_batch_is_split_under_the_models_token_cap() -> None:
    # Three texts of ~25K estimated tokens: voyage-4-large takes 120K a request (60K by our
    # estimate's margin), so two requests; voyage-4-lite takes 1M, so one.
    texts = ["x" * 100_000, "y" * 100_000, "z" * 100_000]

    def answer(n: int) -> httpx.Response:
        return httpx.Response(200, json=embeddings([[float(i), 1.0] for i in range(n)], tokens=25_000 * n))

    large = Recorder(answer(2), answer(1))
    result = embedder(large, "voyage-4-large").encode(texts)
    assert [len(large.json(i)["input"]) for i in range(2)] == [2, 1]
    assert large.json(1)["input"] == ["z" * 100_000] and large.json(1)["input_type"] == "document"
    np.testing.assert_array_equal(result.vectors, np.array([[0, 1], [1, 1], [0, 1]], "f4"))
    assert result.usage.total_tokens == 75_000 and not result.usage.estimated

    lite = Recorder(answer(3))
    assert embedder(lite, "voyage-4-lite").encode(texts).vectors.shape == (3, 2)
    assert len(lite.requests) == 1

    # Exactly at the budget still fits: two texts of 30K estimated tokens make 60K.
    exact = Recorder(answer(2))
    embedder(exact, "voyage-4-large").encode(["a" * 120_000, "b" * 120_000])
    assert len(exact.requests) == 1


def test_count_mismatch_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, json=embeddings([[1.0]])))

    with pytest.raises(ProviderError) as info:
        embedder(recorder, "voyage-3.5").encode(["a", "b"])
    assert classify(info.value) is ErrorCode.SERVER


def test_rerank_request_scores_and_usage() -> None:
    answer = {
        "object": "list",
        "data": [{"relevance_score": 0.4375, "index": 2}, {"relevance_score": 0.3477, "index": 0}],
        "model": "rerank-2.5",
        "usage": {"total_tokens": 26},
    }
    recorder = Recorder(httpx.Response(200, json=answer))
    model = provider("rerank", "Voyage AI", recorder, model="rerank-2.5", api_key=KEY)
    documents = ["The Mediterranean diet emphasizes fish.", "Photosynthesis makes glucose.", "Apple's call is Aug 1."]

    result = model.similarity("When is Apple's conference call scheduled?", documents)

    assert str(recorder.last.url) == f"{BASE}/rerank"
    assert recorder.last.headers["authorization"] == f"Bearer {KEY}"
    assert recorder.json() == {
        "query": "When is Apple's conference call scheduled?",
        "documents": documents,
        "model": "rerank-2.5",
        "top_k": 3,
    }
    np.testing.assert_array_equal(result.scores, np.array([0.3477, 0.0, 0.4375], "f4"))
    assert (result.usage.prompt_tokens, result.usage.total_tokens, result.usage.estimated) == (26, 26, False)


def test_rerank_above_1000_documents_is_split_and_merged() -> None:
    """Voyage: "The number of documents cannot exceed 1,000." 2,500 documents go as 1,000 + 1,000 +
    500; each answer's (best-first, batch-relative) indexes land on the right documents."""
    documents = [f"document {i}" for i in range(2500)]

    def answer(start: int, n: int) -> httpx.Response:
        data = [{"relevance_score": (start + i) / 10_000, "index": i} for i in reversed(range(n))]
        return httpx.Response(
            200, json={"object": "list", "data": data, "model": "rerank-2.5", "usage": {"total_tokens": n}}
        )

    recorder = Recorder(answer(0, 1000), answer(1000, 1000), answer(2000, 500))
    result = provider("rerank", "Voyage AI", recorder, model="rerank-2.5", api_key=KEY).similarity("q", documents)

    assert [len(recorder.json(i)["documents"]) for i in range(3)] == [1000, 1000, 500]
    assert [recorder.json(i)["top_k"] for i in range(3)] == [1000, 1000, 500]
    assert recorder.json(2)["documents"][0] == "document 2000"
    np.testing.assert_allclose(result.scores, np.arange(2500) / 10_000, rtol=1e-6)
    assert (result.usage.total_tokens, result.usage.estimated) == (2500, False)


def test_rerank_without_usage_is_estimated() -> None:
    recorder = Recorder(httpx.Response(200, json={"object": "list", "data": [{"relevance_score": 0.9, "index": 0}]}))
    model = provider("rerank", "Voyage AI", recorder, model="rerank-2.5-lite", api_key=KEY)

    result = model.similarity("query", ["document"])

    assert result.usage.estimated
    assert result.usage.prompt_tokens == estimate_tokens("query") + estimate_tokens("document")


# The no-payment-method tier's 429, verbatim as Voyage sends it in ``detail``.
REDUCED = (
    "You have not yet added your payment method in the billing page and will have reduced rate limits of 3 RPM "
    "and 10K TPM. To unlock our standard rate limits, please add a payment method in the billing page for the "
    "appropriate organization in the user dashboard (https://dashboard.voyageai.com/)."
)

ERRORS = [
    (
        400,
        "Request to model 'voyage-3.5' failed. The max allowed tokens per submitted batch is 320000.",
        ErrorCode.INVALID_REQUEST,
    ),
    (401, "Provided API key is invalid.", ErrorCode.AUTHENTICATION),
    (403, "Your IP address is not allowed.", ErrorCode.AUTHENTICATION),
    (429, REDUCED, ErrorCode.RATE_LIMIT),
    (429, "You have exceeded your rate limit. Please try again later.", ErrorCode.RATE_LIMIT),
    (500, "The server failed to process the request.", ErrorCode.SERVER),
    (503, "The server is overloaded or not ready yet.", ErrorCode.SERVER),
]


@pytest.mark.parametrize(("status", "detail", "code"), ERRORS)
def test_errors_are_classified(status: int, detail: str, code: ErrorCode) -> None:
    recorder = Recorder(httpx.Response(status, json={"detail": detail}))

    with pytest.raises(ProviderError) as info:
        embedder(recorder, "voyage-3.5").encode(["a"])

    assert info.value.status == status and info.value.message == detail
    assert classify(info.value) is code


def test_reduced_tier_429_keeps_retry_after_and_scrubs_the_key() -> None:
    headers = {"retry-after": "20", "x-ratelimit-remaining-requests": "0"}
    recorder = Recorder(httpx.Response(429, headers=headers, json={"detail": f"{REDUCED} (key {KEY})"}))
    model = provider("rerank", "Voyage AI", recorder, model="rerank-2.5", api_key=KEY)

    with pytest.raises(ProviderError) as info:
        model.similarity("q", ["d"])

    assert classify(info.value) is ErrorCode.RATE_LIMIT and classify(info.value).retryable
    assert info.value.retry_after == 20.0
    assert info.value.rate_limits == headers
    assert KEY not in str(info.value)
