"""The Gemini API family: exact requests and answers in the shapes of Google's API reference,
through ``httpx.MockTransport``."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import pytest

from providers.base import estimate_tokens
from providers.errors import ErrorCode, ProviderError, classify
from providers.gemini import SKIP_SIGNATURE, GeminiChat, GeminiEmbedding, GeminiImage2Text
from providers.registry import get_provider_class
from tests.mock_http import Recorder, provider, sse

KEY = "AIzaSyD-Fake0123456789abcdefghijklmnopq"
BASE = "https://generativelanguage.googleapis.com/v1beta"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
            "additionalProperties": False,
        },
    },
}


def gemini(model_type: str, recorder: Recorder, model: str = "gemini-2.5-flash", **kwargs: Any) -> Any:
    return provider(model_type, "Gemini", recorder, model=model, api_key=KEY, **kwargs)


def answer(*parts: dict[str, Any], finish: str | None = "STOP", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A GenerateContentResponse as the API reference shows it."""
    candidate: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": "gemini-2.5-flash",
        "responseId": "mT2xaJ3nBMuBz7IPk4nZmQ4",
    }
    if usage is not None:
        body["usageMetadata"] = usage
    return body


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


def raised(body: Any, status: int, headers: dict[str, str] | None = None) -> ProviderError:
    recorder = Recorder(httpx.Response(status, json=body, headers=headers))
    with pytest.raises(ProviderError) as info:
        gemini("chat", recorder).chat(None, [{"role": "user", "content": "Hi"}])
    return info.value


# --------------------------------------------------------------------------- registration


def test_gemini_serves_chat_image2text_and_embedding() -> None:
    assert get_provider_class("chat", "Gemini") is GeminiChat
    assert get_provider_class("image2text", "Gemini") is GeminiImage2Text
    assert get_provider_class("embedding", "Gemini") is GeminiEmbedding
    for cls in (GeminiChat, GeminiImage2Text, GeminiEmbedding):
        assert cls.factories == ("Gemini",) and cls.needs_key and cls.default_base_url == BASE
    assert GeminiEmbedding.batch_size == 100


# --------------------------------------------------------------------------- chat


def test_chat_request_maps_system_images_tools_and_tool_results() -> None:
    recorder = Recorder(
        httpx.Response(
            200,
            json=answer(
                {"text": "It is sunny in Boston."},
                usage={
                    "promptTokenCount": 120,
                    "candidatesTokenCount": 7,
                    "totalTokenCount": 181,
                    "thoughtsTokenCount": 44,
                    "toolUsePromptTokenCount": 10,
                    "promptTokensDetails": [
                        {"modality": "TEXT", "tokenCount": 62},
                        {"modality": "IMAGE", "tokenCount": 58},
                    ],
                },
            ),
        )
    )
    png = base64.b64encode(b"\x89PNG-bytes").decode()
    messages = [
        {"role": "system", "content": "Answer in English."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Where is this, and what is the weather?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": '{"location": "Boston"}'},
                },
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"forecast": "sunny", "celsius": 24}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "10:42"},
    ]
    gen_conf = {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 256,
        "stop": "END",
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.2,
        "response_format": {"type": "json_object"},
    }
    model = gemini("chat", recorder)

    result = model.chat("You are terse.", messages, gen_conf, [WEATHER_TOOL])

    request = recorder.last
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == KEY
    assert KEY not in str(request.url) and "authorization" not in request.headers
    assert recorder.json() == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Where is this, and what is the weather?"},
                    {"inlineData": {"mimeType": "image/png", "data": png}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_current_weather", "args": {"location": "Boston"}},
                        "thoughtSignature": SKIP_SIGNATURE,
                    },
                    {"functionCall": {"name": "get_time", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "get_current_weather",
                            "response": {"forecast": "sunny", "celsius": 24},
                        }
                    },
                    {"functionResponse": {"name": "get_time", "response": {"result": "10:42"}}},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "You are terse.\n\nAnswer in English."}]},
        "generationConfig": {
            "temperature": 0.3,
            "topP": 0.9,
            "maxOutputTokens": 256,
            "seed": 7,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
        },
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_current_weather",
                        "description": "Get the current weather in a given location",
                        "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                    }
                ]
            }
        ],
    }
    assert result.text == "It is sunny in Boston."
    assert result.finish_reason == "stop" and result.tool_calls == []
    # thinking tokens are billed as output (candidates + thoughts), tool-use prompt tokens as input
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (130, 51, 181)
    assert not result.usage.estimated


def test_gemini_2_0_gets_no_thought_signature() -> None:
    recorder = Recorder(httpx.Response(200, json=answer({"text": "ok"})))
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "function": {"name": "get_current_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "[1, 2]"},
    ]

    gemini("chat", recorder, model="gemini-2.0-flash").chat(None, messages)

    contents = recorder.json()["contents"]
    assert contents[1]["parts"] == [{"functionCall": {"name": "get_current_weather", "args": {}}}]
    assert contents[2]["parts"][0]["functionResponse"]["response"] == {"result": [1, 2]}


def test_function_call_answer_becomes_tool_calls() -> None:
    recorder = Recorder(
        httpx.Response(
            200,
            json=answer(
                {"text": "**Planning** The user wants the weather; call the tool.", "thought": True},
                {"text": "Checking."},
                {
                    "functionCall": {"name": "get_current_weather", "args": {"location": "Boston, MA"}},
                    "thoughtSignature": "CiQBjz1rX8s0mQ==",
                },
                {"functionCall": {"id": "fc-77", "name": "get_time", "args": {}}},
                usage={"promptTokenCount": 80, "candidatesTokenCount": 20, "totalTokenCount": 100},
            ),
        )
    )

    result = gemini("chat", recorder).chat(None, [{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL])

    assert result.text == "Checking."
    assert result.finish_reason == "tool_calls"
    first, second = result.tool_calls
    assert (first.name, first.arguments) == ("get_current_weather", {"location": "Boston, MA"})
    assert first.id.startswith("call_") and len(first.id) > 10  # generated: Gemini sent none
    assert (second.id, second.name, second.arguments) == ("fc-77", "get_time", {})
    assert result.usage.total_tokens == 100


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("OTHER", "other")],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    recorder = Recorder(httpx.Response(200, json=answer({"text": "Part of an answer"}, finish=reason)))

    result = gemini("chat", recorder).chat(None, [{"role": "user", "content": "Hi"}])

    assert result.finish_reason == expected and result.text == "Part of an answer"


def test_blocked_prompt_is_a_content_filter_error() -> None:
    body = {
        "promptFeedback": {
            "blockReason": "PROHIBITED_CONTENT",
            "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}],
        },
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
        "modelVersion": "gemini-2.5-flash",
    }
    recorder = Recorder(httpx.Response(200, json=body))

    with pytest.raises(ProviderError) as info:
        gemini("chat", recorder).chat(None, [{"role": "user", "content": "something bad"}])

    assert classify(info.value) is ErrorCode.CONTENT_FILTER
    assert info.value.provider_code == "PROHIBITED_CONTENT"


def test_candidate_withheld_for_safety_is_a_content_filter_error() -> None:
    body = {
        "candidates": [
            {
                "finishReason": "SAFETY",
                "index": 0,
                "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}],
            }
        ],
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
    }
    recorder = Recorder(httpx.Response(200, json=body))

    with pytest.raises(ProviderError) as info:
        gemini("chat", recorder).chat(None, [{"role": "user", "content": "Hi"}])
    assert classify(info.value) is ErrorCode.CONTENT_FILTER and info.value.provider_code == "SAFETY"


def test_answer_without_usage_metadata_is_estimated() -> None:
    recorder = Recorder(httpx.Response(200, json=answer({"text": "Hello there"})))

    result = gemini("chat", recorder).chat("Be kind.", [{"role": "user", "content": "Hi"}])

    assert result.usage.estimated
    assert result.usage.prompt_tokens == estimate_tokens("Be kind.\nHi")
    assert result.usage.completion_tokens == estimate_tokens("Hello there")


def test_malformed_answer_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, json=answer({"functionCall": {"args": {}}})))  # no name

    with pytest.raises(ProviderError) as info:
        gemini("chat", recorder).chat(None, [{"role": "user", "content": "Hi"}])
    assert classify(info.value) is ErrorCode.SERVER


def test_image_urls_must_be_data_urls_and_unknown_tool_ids_are_refused() -> None:
    recorder = Recorder()
    model = gemini("chat", recorder)
    web_image = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]

    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "user", "content": web_image}])
    assert classify(info.value) is ErrorCode.INVALID_REQUEST
    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "tool", "tool_call_id": "nowhere", "content": "x"}])
    assert classify(info.value) is ErrorCode.INVALID_REQUEST
    assert recorder.requests == []


# --------------------------------------------------------------------------- streaming


def test_stream_request_and_assembly() -> None:
    events = sse(
        answer({"text": "The weather"}, finish=None, usage={"promptTokenCount": 30, "totalTokenCount": 30}),
        answer(
            {"text": " is fine."},
            finish=None,
            usage={"promptTokenCount": 30, "candidatesTokenCount": 5, "totalTokenCount": 35},
        ),
        answer(
            {"functionCall": {"name": "get_current_weather", "args": {"location": "Oslo"}}},
            finish="STOP",
            usage={"promptTokenCount": 30, "candidatesTokenCount": 12, "thoughtsTokenCount": 40, "totalTokenCount": 82},
        ),
    ).replace(b"\n", b"\r\n")  # Google ends SSE lines with CRLF
    recorder = Recorder(httpx.Response(200, headers={"content-type": "text/event-stream"}, content=events))

    model = gemini("chat", recorder)
    deltas = list(model.chat_stream("sys", [{"role": "user", "content": "Oslo?"}], {"max_tokens": 99}, [WEATHER_TOOL]))

    request = recorder.last
    assert str(request.url) == f"{BASE}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert request.headers["x-goog-api-key"] == KEY
    body = recorder.json()
    assert body["generationConfig"] == {"maxOutputTokens": 99}
    assert body["systemInstruction"] == {"parts": [{"text": "sys"}]} and "stream" not in body
    assert [d.text for d in deltas[:-1]] == ["The weather", " is fine."]
    last = deltas[-1]
    assert [(c.name, c.arguments) for c in last.tool_calls] == [("get_current_weather", {"location": "Oslo"})]
    assert last.finish_reason == "tool_calls"
    assert last.usage is not None and not last.usage.estimated
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (30, 52, 82)


def test_stream_blocked_prompt_and_error_event() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4},
    }
    recorder = Recorder(httpx.Response(200, content=sse(blocked)))
    with pytest.raises(ProviderError) as info:
        list(gemini("chat", recorder).chat_stream(None, [{"role": "user", "content": "x"}]))
    assert classify(info.value) is ErrorCode.CONTENT_FILTER

    overloaded = google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
    recorder = Recorder(httpx.Response(200, content=sse(answer({"text": "Hel"}, finish=None), overloaded)))
    with pytest.raises(ProviderError) as info:
        list(gemini("chat", recorder).chat_stream(None, [{"role": "user", "content": "x"}]))
    assert classify(info.value) is ErrorCode.SERVER and info.value.status == 503


def test_stream_http_error_comes_as_a_list() -> None:
    body = [google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")]
    recorder = Recorder(httpx.Response(429, json=body))

    with pytest.raises(ProviderError) as info:
        list(gemini("chat", recorder).chat_stream(None, [{"role": "user", "content": "x"}]))

    assert info.value.status == 429 and info.value.provider_code == "RESOURCE_EXHAUSTED"
    assert classify(info.value) is ErrorCode.RATE_LIMIT


# --------------------------------------------------------------------------- image2text


def test_image2text_sends_inline_data() -> None:
    usage = {"promptTokenCount": 265, "candidatesTokenCount": 6, "totalTokenCount": 271}
    body = answer({"text": "A cat on a sofa."}, usage=usage)
    recorder = Recorder(httpx.Response(200, json=body), httpx.Response(200, json=body))
    model = gemini("image2text", recorder)
    image = b"\xff\xd8\xff\xe0fake-jpeg"

    result = model.describe(image)
    model.describe_with_prompt(image, "What animal?", "image/jpeg")

    assert str(recorder.requests[0].url) == f"{BASE}/models/gemini-2.5-flash:generateContent"
    assert recorder.requests[0].headers["x-goog-api-key"] == KEY
    encoded = base64.b64encode(image).decode()
    assert recorder.json(0) == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Describe this image in detail."},
                    {"inlineData": {"mimeType": "image/png", "data": encoded}},
                ],
            }
        ]
    }
    parts = recorder.json(1)["contents"][0]["parts"]
    assert parts[0] == {"text": "What animal?"} and parts[1]["inlineData"]["mimeType"] == "image/jpeg"
    assert result.text == "A cat on a sofa." and result.usage.total_tokens == 271


# --------------------------------------------------------------------------- embeddings


def embeddings(*vectors: list[float]) -> httpx.Response:
    return httpx.Response(200, json={"embeddings": [{"values": v} for v in vectors]})


def test_documents_and_queries_use_their_task_types() -> None:
    recorder = Recorder(embeddings([0.1, -0.2, 0.3], [0.0, 1.0, 0.5]), embeddings([1.0, 0.0, 0.0]))
    model = gemini("embedding", recorder, model="gemini-embedding-001")

    docs = model.encode(["first text", "second"])
    query = model.encode_queries("what is first?")

    assert str(recorder.requests[0].url) == f"{BASE}/models/gemini-embedding-001:batchEmbedContents"
    assert recorder.requests[0].headers["x-goog-api-key"] == KEY

    def embed_request(text: str, task_type: str) -> dict[str, Any]:
        return {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": text}]}, "taskType": task_type}

    assert recorder.json(0) == {
        "requests": [embed_request("first text", "RETRIEVAL_DOCUMENT"), embed_request("second", "RETRIEVAL_DOCUMENT")]
    }
    assert recorder.json(1) == {"requests": [embed_request("what is first?", "RETRIEVAL_QUERY")]}
    assert docs.vectors.dtype == np.float32
    np.testing.assert_array_equal(docs.vectors, np.array([[0.1, -0.2, 0.3], [0.0, 1.0, 0.5]], "f4"))
    np.testing.assert_array_equal(query.vectors, np.array([[1.0, 0.0, 0.0]], "f4"))
    # Gemini reports no usage for embeddings
    assert docs.usage.estimated and docs.usage.prompt_tokens == estimate_tokens("first text") + estimate_tokens(
        "second"
    )
    assert query.usage.estimated


def test_embedding_usage_is_read_from_usage_metadata_when_reported() -> None:
    """gemini-embedding-2 reports ``usageMetadata.promptTokenCount`` beside the embeddings; an
    answer without it (gemini-embedding-001) is estimated."""
    reported = httpx.Response(
        200,
        json={
            "embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}],
            "usageMetadata": {"promptTokenCount": 11},
        },
    )
    recorder = Recorder(reported, embeddings([1.0, 0.0]))
    model = gemini("embedding", recorder, model="gemini-embedding-2")
    usage = model.encode(["first text", "second"]).usage
    assert (usage.prompt_tokens, usage.total_tokens, usage.estimated) == (11, 11, False)
    assert model.encode(["x"]).usage.estimated


def test_embedding_batches_of_100_and_count_mismatch() -> None:
    recorder = Recorder(embeddings(*[[float(i)] for i in range(100)]), embeddings([100.0], [101.0]))
    model = gemini("embedding", recorder, model="models/gemini-embedding-001")

    result = model.encode([f"t{i}" for i in range(102)])

    assert [len(recorder.json(i)["requests"]) for i in range(2)] == [100, 2]
    assert str(recorder.requests[0].url) == f"{BASE}/models/gemini-embedding-001:batchEmbedContents"
    assert result.vectors.shape == (102, 1) and result.vectors[101, 0] == 101.0

    short = Recorder(embeddings([1.0]))
    with pytest.raises(ProviderError) as info:
        gemini("embedding", short, model="gemini-embedding-001").encode(["a", "b"])
    assert classify(info.value) is ErrorCode.SERVER


# --------------------------------------------------------------------------- errors

HELP = {
    "@type": "type.googleapis.com/google.rpc.Help",
    "links": [
        {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }
    ],
}
QUOTA_TEXT = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)


def violation(quota_id: str, value: str = "250000") -> dict[str, Any]:
    return {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
        "quotaValue": value,
    }


def test_per_minute_limit_is_a_rate_limit_with_retry_info() -> None:
    body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        QUOTA_TEXT,  # says "quota" and "billing" even for a per-minute limit
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [violation("GenerateContentInputTokensPerModelPerMinute-FreeTier")],
        },
        HELP,
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"},
    )

    error = raised(body, 429)

    assert classify(error) is ErrorCode.RATE_LIMIT
    assert error.retry_after == 26.0 and error.status == 429 and error.provider_code == "RESOURCE_EXHAUSTED"
    assert "GenerateContentInputTokensPerModelPerMinute-FreeTier" in error.message


def test_daily_quota_is_not_retried() -> None:
    body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        QUOTA_TEXT,
        HELP,
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                violation("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "250"),
                violation("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "10"),
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "47s"},
    )

    error = raised(body, 429)

    assert classify(error) is ErrorCode.QUOTA and not classify(error).retryable


def test_zero_limit_and_depleted_credits_are_quota() -> None:
    zero = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Generate Content API requests per minute' and limit 'GenerateContent "
        "request limit per minute for a region' of service 'generativelanguage.googleapis.com'",
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {
                "service": "generativelanguage.googleapis.com",
                "quota_limit": "GenerateContentRequestsPerMinutePerProjectPerRegion",
                "quota_limit_value": "0",
            },
        },
    )
    assert classify(raised(zero, 429)) is ErrorCode.QUOTA

    depleted = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Your prepayment credits are depleted. Please go to AI Studio to manage your billing.",
    )
    assert classify(raised(depleted, 429)) is ErrorCode.QUOTA


def test_bare_resource_exhausted_is_a_rate_limit_with_retry_after_header() -> None:
    body = google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")

    error = raised(body, 429, headers={"retry-after": "3"})

    assert classify(error) is ErrorCode.RATE_LIMIT and error.retry_after == 3.0
    assert error.rate_limits == {"retry-after": "3"}


# The Gemini API's spent-plan 429, as a reporter pasted it (gke-labs/gemini-for-kubernetes-development
# issue 1215: "resource_exhausted is sticky and only resets midnight"): no QuotaFailure, only a Help link.
PLAN_QUOTA_429 = google_error(
    429,
    "RESOURCE_EXHAUSTED",
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: "
    "https://ai.dev/rate-limit. ",
    {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [
            {
                "description": "Learn more about Gemini API quotas",
                "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
            }
        ],
    },
)


def test_resource_exhausted_without_quota_failure_is_decided_by_body_and_headers() -> None:
    """No QuotaFailure: the spent-plan text with no wait is QUOTA (it lasts until the daily reset);
    the same text with a Retry-After, or with RetryInfo, is RATE_LIMIT (Google said when to come
    back); Vertex's bare "Resource exhausted. Please try again later." stays RATE_LIMIT."""
    assert classify(raised(PLAN_QUOTA_429, 429)) is ErrorCode.QUOTA
    assert classify(raised(PLAN_QUOTA_429, 429, headers={"retry-after": "20"})) is ErrorCode.RATE_LIMIT
    with_retry_info = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        PLAN_QUOTA_429["error"]["message"],
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"},
    )
    assert classify(raised(with_retry_info, 429)) is ErrorCode.RATE_LIMIT
    vertex = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Resource exhausted. Please try again later. Please refer to "
        "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
    )
    assert classify(raised(vertex, 429)) is ErrorCode.RATE_LIMIT


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            google_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": "API key not valid. Please pass a valid API key.",
                },
            ),
            ErrorCode.AUTHENTICATION,
        ),
        (503, google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), ErrorCode.SERVER),
        (
            500,
            google_error(
                500,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting",
            ),
            ErrorCode.SERVER,
        ),
        (
            404,
            google_error(
                404,
                "NOT_FOUND",
                "models/gemini-9-ultra is not found for API version v1beta, or is not supported for generateContent.",
            ),
            ErrorCode.MODEL,
        ),
        (
            400,
            google_error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified\n"),
            ErrorCode.INVALID_REQUEST,
        ),
        (
            403,
            google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
            ErrorCode.AUTHENTICATION,
        ),
        (
            504,
            google_error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
            ErrorCode.TIMEOUT,
        ),
    ],
)
def test_error_bodies_are_classified(status: int, body: dict[str, Any], expected: ErrorCode) -> None:
    error = raised(body, status)

    assert error.status == status and classify(error) is expected


def test_error_reason_is_the_provider_code_and_the_key_is_scrubbed() -> None:
    body = google_error(
        400,
        "INVALID_ARGUMENT",
        f"API key not valid: {KEY}",
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"},
    )

    error = raised(body, 400)

    assert error.provider_code == "API_KEY_INVALID"
    assert KEY not in str(error) and "***" in error.message


def test_non_json_error_falls_back_to_text() -> None:
    recorder = Recorder(httpx.Response(502, text="<html>Bad Gateway</html>"))

    with pytest.raises(ProviderError) as info:
        gemini("embedding", recorder).encode(["a"])
    assert info.value.status == 502 and classify(info.value) is ErrorCode.SERVER
