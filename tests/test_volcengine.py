"""VolcEngine Ark: the endpoint id as the request's model, the Bearer Ark key, Ark's answers and
its error codes, through ``httpx.MockTransport``."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from providers.base import encode_credentials
from providers.errors import ErrorCode, ProviderError, classify
from providers.registry import get_provider_class
from tests.mock_http import Recorder, provider, sse

ARK_KEY = "3f6b2c1e-9a7d-4e21-8c55-0b1d2e3f4a5b"  # Ark keys are UUIDs: no key pattern scrubs them
ENDPOINT_ID = "ep-20240604123456-abcde"
BASE = "https://ark.cn-beijing.volces.com/api/v3"


def ark(model_type: str, recorder: Recorder, *, endpoint_id: str | None = ENDPOINT_ID, **kwargs: Any) -> Any:
    fields = {"ark_api_key": ARK_KEY} | ({"endpoint_id": endpoint_id} if endpoint_id else {})
    kwargs.setdefault("api_key", encode_credentials(fields))
    return provider(model_type, "VolcEngine", recorder, model=kwargs.pop("model", "doubao-1-5-pro-32k"), **kwargs)


def completion(content: str | None, **message: Any) -> dict[str, Any]:
    """An Ark chat completion (its documented response example)."""
    return {
        "id": "021718067849899d92fcbe0865fdffdde",
        "object": "chat.completion",
        "created": 1718067849,
        "model": "doubao-1-5-pro-32k-250115",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": content, **message},
            }
        ],
        "usage": {
            "prompt_tokens": 14,
            "completion_tokens": 8,
            "total_tokens": 22,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def test_declares_the_credential_fields() -> None:
    cls = get_provider_class("chat", "VolcEngine")
    fields = {f.name: f for f in cls.credential_fields}
    assert set(fields) == {"ark_api_key", "endpoint_id"}
    assert fields["ark_api_key"].secret and fields["ark_api_key"].required
    assert not fields["endpoint_id"].secret and not fields["endpoint_id"].required
    assert cls.default_base_url == BASE
    for model_type in ("chat", "embedding", "image2text"):
        assert get_provider_class(model_type, "VolcEngine").factories == ("VolcEngine",)


def test_chat_sends_the_endpoint_id_as_model_with_the_ark_key() -> None:
    recorder = Recorder(httpx.Response(200, json=completion("你好！")))
    model = ark("chat", recorder)

    result = model.chat("You are Doubao.", [{"role": "user", "content": "你好"}], {"top_p": 0.7, "seed": 3})

    request = recorder.last
    assert str(request.url) == f"{BASE}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {ARK_KEY}"
    assert recorder.json() == {
        "model": ENDPOINT_ID,
        "messages": [{"role": "system", "content": "You are Doubao."}, {"role": "user", "content": "你好"}],
        "top_p": 0.7,
        "seed": 3,
    }
    assert result.text == "你好！" and result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (14, 8, 22)


def test_without_an_endpoint_id_the_model_name_is_sent() -> None:
    recorder = Recorder(httpx.Response(200, json=completion("ok")))
    model = ark("chat", recorder, endpoint_id=None, model="doubao-seed-1-6-250615")

    model.chat(None, [{"role": "user", "content": "hi"}])

    assert recorder.json()["model"] == "doubao-seed-1-6-250615"


def test_a_plain_key_is_the_ark_key() -> None:
    recorder = Recorder(httpx.Response(200, json=completion("ok")))
    model = ark("chat", recorder, api_key=ARK_KEY, model="doubao-pro-4k")

    model.chat(None, [{"role": "user", "content": "hi"}])

    assert recorder.last.headers["authorization"] == f"Bearer {ARK_KEY}"
    assert recorder.json()["model"] == "doubao-pro-4k"


def test_tool_calls() -> None:
    call = {"id": "call_p1x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"北京"}'}}
    recorder = Recorder(httpx.Response(200, json=completion("", tool_calls=[call])))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}

    result = ark("chat", recorder).chat(None, [{"role": "user", "content": "天气"}], tools=[tool])

    assert recorder.json()["tools"] == [tool]
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [("call_p1x", "get_weather", {"city": "北京"})]


def test_chat_stream_with_usage() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "0217",
            "object": "chat.completion.chunk",
            "created": 1718067849,
            "model": "doubao-1-5-pro-32k-250115",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    usage = {
        "id": "0217",
        "object": "chat.completion.chunk",
        "created": 1718067849,
        "model": "doubao",
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    body = sse(
        chunk({"role": "assistant", "content": "天"}), chunk({"content": "很蓝"}), chunk({}, "stop"), usage, "[DONE]"
    )
    recorder = Recorder(httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))

    deltas = list(ark("chat", recorder).chat_stream(None, [{"role": "user", "content": "天"}]))

    assert recorder.last.headers["authorization"] == f"Bearer {ARK_KEY}"
    sent = recorder.json()
    assert sent["model"] == ENDPOINT_ID and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert "".join(d.text for d in deltas) == "天很蓝"
    assert deltas[-1].usage.total_tokens == 12 and deltas[-1].finish_reason == "stop"


def test_embeddings_on_the_endpoint() -> None:
    body = {
        "id": "021718049470528d92fcbe0865fdffdde",
        "model": "doubao-embedding-text-240515",
        "created": 1718049470,
        "object": "list",
        "data": [
            {"index": 1, "embedding": [0.5, 0.25], "object": "embedding"},
            {"index": 0, "embedding": [0.01131823007017374, -0.03317729011178017], "object": "embedding"},
        ],
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
    }
    recorder = Recorder(httpx.Response(200, json=body))
    model = ark("embedding", recorder, endpoint_id="ep-202406040001-embed", model="doubao-embedding")

    result = model.encode(["天很蓝", "海很深"])

    assert str(recorder.last.url) == f"{BASE}/embeddings"
    assert recorder.last.headers["authorization"] == f"Bearer {ARK_KEY}"
    assert recorder.json() == {
        "model": "ep-202406040001-embed",
        "input": ["天很蓝", "海很深"],
        "encoding_format": "float",
    }
    np.testing.assert_allclose(result.vectors, [[0.01131823007017374, -0.03317729011178017], [0.5, 0.25]], rtol=1e-6)
    assert result.usage.total_tokens == 6 and not result.usage.estimated


def test_embeddings_batch_16() -> None:
    def answer(n: int) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "data": [{"index": i, "embedding": [1.0]} for i in range(n)],
                "usage": {"prompt_tokens": n, "total_tokens": n},
            },
        )

    recorder = Recorder(answer(16), answer(1))
    ark("embedding", recorder).encode([str(i) for i in range(17)])
    assert [len(recorder.json(i)["input"]) for i in range(2)] == [16, 1]


def test_image2text_on_a_vision_endpoint() -> None:
    recorder = Recorder(httpx.Response(200, json=completion("一只猫")))
    result = ark("image2text", recorder, endpoint_id="ep-vision").describe_with_prompt(
        b"\xff\xd8", "这是什么？", "image/jpeg"
    )
    sent = recorder.json()
    assert sent["model"] == "ep-vision"
    assert sent["messages"][0]["content"][1]["image_url"]["url"] == "data:image/jpeg;base64,/9g="
    assert result.text == "一只猫"


# --------------------------------------------------------------------------- errors


def ark_error(code: str, message: str, type_: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": f"{message} Request id: 0217180678498", "param": "", "type": type_}}


@pytest.mark.parametrize(
    ("status", "code", "message", "type_", "expected"),
    [
        (
            401,
            "AuthenticationError",
            "The API key or AK/SK in the request is missing or invalid.",
            "Unauthorized",
            ErrorCode.AUTHENTICATION,
        ),
        (
            429,
            "RateLimitExceeded.EndpointRPMExceeded",
            ("The Requests Per Minute (RPM) limit of the associated endpoint for your account has been exceeded."),
            "TooManyRequests",
            ErrorCode.RATE_LIMIT,
        ),
        (
            429,
            "ModelAccountTpmRateLimitExceeded",
            ("The Tokens Per Minute (TPM) limit of the model for your account has been exceeded."),
            "TooManyRequests",
            ErrorCode.RATE_LIMIT,
        ),
        (
            429,
            "ServerOverloaded",
            ("The service is currently unable to handle additional requests due to server overload."),
            "TooManyRequests",
            ErrorCode.SERVER,
        ),
        (
            429,
            "QuotaExceeded",
            "The free trial quota for your account has been exhausted.",
            "TooManyRequests",
            ErrorCode.QUOTA,
        ),
        (
            429,
            "SetLimitExceeded",
            "Your account has reached its set inference limit.",
            "TooManyRequests",
            ErrorCode.QUOTA,
        ),
        (
            403,
            "AccountOverdueError",
            "The request failed because your account has an overdue balance.",
            "Forbidden",
            ErrorCode.QUOTA,
        ),
        (
            404,
            "InvalidEndpointOrModel.NotFound",
            ("The model or endpoint ep-x does not exist or you do not have access to it."),
            "NotFound",
            ErrorCode.MODEL,
        ),
        (
            400,
            "SensitiveContentDetected",
            ("The request failed because the input text may contain sensitive information."),
            "BadRequest",
            ErrorCode.CONTENT_FILTER,
        ),
        (
            500,
            "InternalServiceError",
            "The service encountered an unexpected internal error.",
            "InternalServerError",
            ErrorCode.SERVER,
        ),
    ],
)
def test_ark_errors_are_classified(status: int, code: str, message: str, type_: str, expected: ErrorCode) -> None:
    recorder = Recorder(httpx.Response(status, json=ark_error(code, message, type_)))

    with pytest.raises(ProviderError) as info:
        ark("chat", recorder).chat(None, [{"role": "user", "content": "hi"}])

    assert info.value.status == status and info.value.provider_code == code
    assert classify(info.value) is expected


def test_rate_limit_retry_after_is_kept() -> None:
    error = ark_error(
        "RateLimitExceeded.EndpointTPMExceeded",
        "The Tokens Per Minute (TPM) limit of the associated endpoint for your account has been exceeded.",
        "TooManyRequests",
    )
    recorder = Recorder(httpx.Response(429, json=error, headers={"retry-after": "20", "x-request-id": "0217"}))

    with pytest.raises(ProviderError) as info:
        ark("embedding", recorder).encode(["a"])

    assert info.value.retry_after == 20.0 and info.value.rate_limits == {"retry-after": "20"}
    assert classify(info.value) is ErrorCode.RATE_LIMIT


def test_an_echoed_key_is_scrubbed() -> None:
    error = ark_error("AuthenticationError", f"The API key {ARK_KEY} is invalid.", "Unauthorized")
    recorder = Recorder(httpx.Response(401, json=error))

    with pytest.raises(ProviderError) as info:
        ark("chat", recorder).chat(None, [{"role": "user", "content": "hi"}])

    assert ARK_KEY not in str(info.value)
    assert ENDPOINT_ID not in ark("chat", Recorder()).secrets  # the endpoint id is not a secret


def test_an_echoed_key_in_a_stream_error_is_scrubbed() -> None:
    body = sse({"error": {"code": "InternalServiceError", "message": f"key {ARK_KEY} failed", "type": "x"}})
    recorder = Recorder(httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))

    with pytest.raises(ProviderError) as info:
        list(ark("chat", recorder).chat_stream(None, [{"role": "user", "content": "hi"}]))

    assert ARK_KEY not in str(info.value) and classify(info.value) is ErrorCode.SERVER
