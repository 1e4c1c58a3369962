"""The HuggingFace family (text-embeddings-inference): exact /embed and /rerank requests,
answers and headers as TEI's router sends them, and its typed error bodies."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from providers.base import estimate_tokens
from providers.errors import ErrorCode, ProviderError, classify
from providers.huggingface import HuggingFaceEmbedding, HuggingFaceRerank
from providers.registry import _REGISTRY, FAMILY_MODULES
from tests.mock_http import Recorder

CLASSES: dict[str, Any] = {"embedding": HuggingFaceEmbedding, "rerank": HuggingFaceRerank}


def provider(model_type: str, factory: str, recorder: Recorder, model: str = "test-model", **kwargs: Any) -> Any:
    """Our class for the type (imported directly: the test does not depend on other families loading)."""
    assert factory == "HuggingFace"
    return CLASSES[model_type](model, client=recorder.client, **kwargs)


KEY = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"
BASE = "http://tei:8080"


def tei_headers(tokens: int | None, chars: int = 40) -> dict[str, str]:
    """The metadata headers TEI puts on every successful answer."""
    headers = {
        "content-type": "application/json",
        "x-compute-type": "gpu+optimized",
        "x-compute-time": "12",
        "x-compute-characters": str(chars),
        "x-total-time": "12",
        "x-tokenization-time": "0",
        "x-queue-time": "1",
        "x-inference-time": "10",
    }
    if tokens is not None:
        headers["x-compute-tokens"] = str(tokens)
    return headers


def ok(body: Any, tokens: int | None = None) -> httpx.Response:
    return httpx.Response(200, headers=tei_headers(tokens), json=body)


def test_registered_types_and_defaults() -> None:
    assert "providers.huggingface" in FAMILY_MODULES
    for model_type, cls in CLASSES.items():
        assert _REGISTRY[(model_type, "HuggingFace")] is cls
        assert cls.factories == ("HuggingFace",) and cls.model_type == model_type
        assert cls.default_base_url == "" and not cls.needs_key


# --------------------------------------------------------------------------- embeddings


def test_embed_request_and_usage_from_header() -> None:
    rec = Recorder(ok([[0.0, 1.0, 2.0], [0.5, -0.25, 0.125]], tokens=14))
    model = provider("embedding", "HuggingFace", rec, model="BAAI/bge-base-en-v1.5", base_url=BASE + "/")

    result = model.encode(["What is Deep Learning?", "Deep Learning is ..."])

    request = rec.last
    assert str(request.url) == "http://tei:8080/embed" and request.method == "POST"
    assert "authorization" not in request.headers
    assert rec.json() == {
        "inputs": ["What is Deep Learning?", "Deep Learning is ..."],
        "truncate": True,
        "normalize": True,
    }
    assert result.vectors.dtype == np.float32
    np.testing.assert_array_equal(result.vectors, np.array([[0, 1, 2], [0.5, -0.25, 0.125]], dtype=np.float32))
    assert (result.usage.prompt_tokens, result.usage.total_tokens, result.usage.estimated) == (14, 14, False)


def test_embed_with_key_and_without_the_header_estimates() -> None:
    rec = Recorder(ok([[1.0, 0.0]]))
    model = provider(
        "embedding", "HuggingFace", rec, api_key=KEY, base_url="https://xyz.us-east-1.aws.endpoints.huggingface.cloud"
    )

    result = model.encode_queries("some words here")

    assert str(rec.last.url) == "https://xyz.us-east-1.aws.endpoints.huggingface.cloud/embed"
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"
    assert rec.json()["inputs"] == ["some words here"]
    assert result.usage.estimated and result.usage.prompt_tokens == estimate_tokens("some words here")


def test_embed_batches_of_32() -> None:
    def reply(n: int) -> httpx.Response:
        return ok([[float(i)] for i in range(n)], tokens=n * 3)

    rec = Recorder(reply(32), reply(32), reply(6))
    model = provider("embedding", "HuggingFace", rec, base_url=BASE)

    result = model.encode([f"text {i}" for i in range(70)])

    assert [len(rec.json(i)["inputs"]) for i in range(3)] == [32, 32, 6]
    assert result.vectors.shape == (70, 1) and result.usage.total_tokens == 210 and not result.usage.estimated


def test_missing_base_url_is_an_invalid_request_without_a_call() -> None:
    rec = Recorder()
    with pytest.raises(ProviderError) as info:
        provider("embedding", "HuggingFace", rec).encode(["a"])
    assert classify(info.value) is ErrorCode.INVALID_REQUEST
    assert "HuggingFace" in str(info.value) and "base URL" in str(info.value)
    assert rec.requests == []


def test_embed_count_mismatch_or_bad_shape_is_a_server_error() -> None:
    rec = Recorder(ok([[1.0]]), ok({"embeddings": [[1.0]]}))
    model = provider("embedding", "HuggingFace", rec, base_url=BASE)
    for texts in (["a", "b"], ["a"]):
        with pytest.raises(ProviderError) as info:
            model.encode(texts)
        assert classify(info.value) is ErrorCode.SERVER


# --------------------------------------------------------------------------- rerank


def test_rerank_request_and_scores_in_document_order() -> None:
    ranks = [  # best first, as TEI sorts them
        {"index": 2, "score": 0.9977},
        {"index": 0, "score": 0.0012},
        {"index": 1, "score": 0.00003},
    ]
    rec = Recorder(ok(ranks, tokens=57))
    model = provider("rerank", "HuggingFace", rec, model="BAAI/bge-reranker-large", base_url=BASE)

    result = model.similarity("What is Deep Learning?", ["Cheese is made from milk.", "Paris", "Deep Learning is ..."])

    assert str(rec.last.url) == "http://tei:8080/rerank"
    assert rec.json() == {
        "query": "What is Deep Learning?",
        "texts": ["Cheese is made from milk.", "Paris", "Deep Learning is ..."],
        "truncate": True,
        "raw_scores": False,
    }
    np.testing.assert_array_equal(result.scores, np.array([0.0012, 0.00003, 0.9977], dtype=np.float32))
    assert result.usage.total_tokens == 57 and not result.usage.estimated


def test_rerank_batches_of_32_keep_document_order() -> None:
    texts = [f"doc {i}" for i in range(40)]

    def reply(n: int, offset: int) -> httpx.Response:
        return ok([{"index": i, "score": (offset + i) / 100} for i in reversed(range(n))])

    rec = Recorder(reply(32, 0), reply(8, 32))
    model = provider("rerank", "HuggingFace", rec, base_url=BASE)

    result = model.similarity("q", texts)

    assert [rec.json(i)["texts"] for i in range(2)] == [texts[:32], texts[32:]]
    np.testing.assert_allclose(result.scores, np.arange(40, dtype=np.float32) / 100)
    assert result.usage.estimated
    assert result.usage.total_tokens == sum(estimate_tokens("q") + estimate_tokens(t) for t in texts)


def test_rerank_index_outside_its_batch_is_a_server_error() -> None:
    # Index 35 exists among the 40 documents, but not in the first batch of 32 that was sent.
    rec = Recorder(ok([{"index": 35, "score": 0.5}]))
    with pytest.raises(ProviderError) as info:
        provider("rerank", "HuggingFace", rec, base_url=BASE).similarity("q", [f"d{i}" for i in range(40)])
    assert classify(info.value) is ErrorCode.SERVER and len(rec.requests) == 1


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "error", "error_type", "code"),
    [
        (413, "batch size 64 > maximum allowed batch size 32", "Validation", ErrorCode.INVALID_REQUEST),
        (422, "Tokenization error", "Tokenizer", ErrorCode.INVALID_REQUEST),
        (424, "Inference failed", "Backend", ErrorCode.SERVER),
        (424, "model is not a re-ranker model", "Backend", ErrorCode.MODEL),
        (429, "Model is overloaded", "Overloaded", ErrorCode.RATE_LIMIT),
        (503, "unhealthy", "Unhealthy", ErrorCode.SERVER),
        (400, "`inputs` cannot be empty", "empty", ErrorCode.INVALID_REQUEST),
    ],
)
def test_tei_errors_are_classified_by_type(status: int, error: str, error_type: str, code: ErrorCode) -> None:
    rec = Recorder(
        httpx.Response(status, json={"error": error, "error_type": error_type}, headers={"retry-after": "2"})
    )
    with pytest.raises(ProviderError) as info:
        provider("rerank", "HuggingFace", rec, base_url=BASE, api_key=KEY).similarity("q", ["a"])
    err = info.value
    assert (err.status, err.message, err.provider_code) == (status, error, error_type)
    assert classify(err) is code
    assert err.retry_after == 2.0 and err.rate_limits == {"retry-after": "2"}


def test_embed_on_a_server_that_runs_no_embedding_model_is_not_retried() -> None:
    """TEI's /embed on a re-ranker or classifier: 424 ``{"error": "Model is not an embedding model",
    "error_type": "Backend"}`` (router/src/http/server.rs). A Backend error is otherwise SERVER
    (retried), but no retry changes the model the server runs."""
    rec = Recorder(httpx.Response(424, json={"error": "Model is not an embedding model", "error_type": "Backend"}))
    with pytest.raises(ProviderError) as info:
        provider("embedding", "HuggingFace", rec, base_url=BASE).encode(["a"])
    assert classify(info.value) is ErrorCode.MODEL and not classify(info.value).retryable


def test_non_tei_error_bodies_fall_back_to_the_common_shapes() -> None:
    rec = Recorder(
        httpx.Response(401, json={"error": "Authorization header is correct, but the token seems invalid"}),
        httpx.Response(502, text="<html>Bad Gateway</html>"),
    )
    model = provider("embedding", "HuggingFace", rec, base_url=BASE, api_key=KEY)
    codes = []
    for _ in range(2):
        with pytest.raises(ProviderError) as info:
            model.encode(["a"])
        codes.append((info.value.status, classify(info.value)))
    assert codes == [(401, ErrorCode.AUTHENTICATION), (502, ErrorCode.SERVER)]


def test_key_in_an_error_is_scrubbed_and_rate_limits_kept_on_success() -> None:
    rec = Recorder(
        httpx.Response(200, headers={**tei_headers(3), "x-ratelimit-remaining-requests": "99"}, json=[[1.0]]),
        httpx.Response(422, json={"error": f"bad input from {KEY}", "error_type": "Validation"}),
    )
    model = provider("embedding", "HuggingFace", rec, base_url=BASE, api_key=KEY)

    model.encode(["a"])
    assert model.rate_limits == {"x-ratelimit-remaining-requests": "99"}
    with pytest.raises(ProviderError) as info:
        model.encode(["a"])
    assert KEY not in str(info.value) and "***" in info.value.message
