"""The Anthropic family: exact Messages API requests and answers shaped like Anthropic's API
reference, through ``httpx.MockTransport``."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from providers import registry
from providers.anthropic import AnthropicChat, AnthropicImage2Text
from providers.base import estimate_tokens
from providers.errors import ErrorCode, ProviderError, classify
from tests.mock_http import Recorder, sse

KEY = "sk-ant-api03-Abc123Def456Ghi789Jkl012Mno"
URL = "https://api.anthropic.com/v1/messages"
PNG = b"\x89PNG\r\n\x1a\nfake-png-bytes"
PNG_B64 = base64.b64encode(PNG).decode()

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}
WEATHER_SCHEMA = WEATHER_TOOL["function"]["parameters"]


def chat(recorder: Recorder, model: str = "claude-sonnet-4-5-20250929", **kwargs: Any) -> AnthropicChat:
    kwargs.setdefault("api_key", KEY)
    return AnthropicChat(model, client=recorder.client, **kwargs)


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: int) -> dict[str, Any]:
    """A Messages API answer as the reference shows it."""
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 12, "output_tokens": 6},
    }


def answer(text: str = "Hello!", stop_reason: str = "end_turn") -> httpx.Response:
    return httpx.Response(200, json=message([{"type": "text", "text": text}], stop_reason))


def anthropic_error(kind: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind, "message": text, **extra},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


# --------------------------------------------------------------------------- registration


def test_registered_for_chat_and_image2text_under_the_catalog_name() -> None:
    assert "providers.anthropic" in registry.FAMILY_MODULES
    assert registry._REGISTRY[("chat", "Anthropic")] is AnthropicChat
    assert registry._REGISTRY[("image2text", "Anthropic")] is AnthropicImage2Text
    assert AnthropicChat.model_type == "chat" and AnthropicImage2Text.model_type == "image2text"
    assert AnthropicChat.default_base_url == "https://api.anthropic.com"
    assert AnthropicChat.needs_key and AnthropicImage2Text.needs_key


# --------------------------------------------------------------------------- chat request


def test_chat_request_maps_system_tools_tool_results_and_images() -> None:
    recorder = Recorder(answer("Both cities are sunny."))
    model = chat(recorder)
    messages = [
        {"role": "system", "content": "Answer in English."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris and Rome? See the maps."},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/map.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_01A",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                },
                {
                    "id": "toolu_01B",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": "24C, sunny"},
        {"role": "user", "content": "Summarise."},
    ]
    gen_conf = {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 512,
        "stop": ["\n\nHuman:"],
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "seed": 7,
        "response_format": {"type": "json_object"},
    }

    result = model.chat("You are a weather bot.", messages, gen_conf, [WEATHER_TOOL])

    request = recorder.last
    assert request.method == "POST" and str(request.url) == URL
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert recorder.json() == {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 512,
        "temperature": 0.3,
        "stop_sequences": ["\n\nHuman:"],
        "system": "You are a weather bot.\n\nAnswer in English.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather in Paris and Rome? See the maps."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/map.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"location": "Rome"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C, sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "24C, sunny"},
                    {"type": "text", "text": "Summarise."},
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "input_schema": WEATHER_SCHEMA,
            }
        ],
    }
    assert result.text == "Both cities are sunny." and result.finish_reason == "stop"


def test_tool_use_answer_and_usage_with_cache_tokens() -> None:
    content = [
        {"type": "text", "text": "I'll look that up."},
        {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {"location": "Paris"},
        },
        {"type": "text", "text": " One moment."},
    ]
    usage = {
        "input_tokens": 472,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "output_tokens": 89,
    }
    recorder = Recorder(httpx.Response(200, json=message(content, "tool_use", **usage)))

    result = chat(recorder).chat(None, [{"role": "user", "content": "Weather in Paris?"}], None, [WEATHER_TOOL])

    assert "system" not in recorder.json()
    assert result.text == "I'll look that up. One moment."
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {"location": "Paris"})
    ]
    assert result.finish_reason == "tool_calls"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (2572, 89, 2661)
    assert not result.usage.estimated


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "refusal"),
        ("pause_turn", "pause_turn"),  # no OpenAI name: passed through
    ],
)
def test_stop_reason_becomes_an_openai_finish_reason(stop_reason: str, finish: str) -> None:
    recorder = Recorder(answer("x", stop_reason))
    assert chat(recorder).chat(None, [{"role": "user", "content": "Hi"}]).finish_reason == finish


def test_max_tokens_default_and_the_models_limit() -> None:
    recorder = Recorder(answer(), answer(), answer(), answer(), answer())
    model = chat(recorder, model="claude-3-5-haiku-20241022")
    hi = [{"role": "user", "content": "Hi"}]

    model.chat(None, hi)  # required by the API: our default
    model.chat(None, hi, {"max_tokens": 50_000})  # above the model's 8192: clipped
    model.chat(None, hi, {"max_tokens": 300})
    chat(recorder, model="claude-opus-4-5-20251101").chat(None, hi, {"max_tokens": 100_000})  # not Opus 4's 32K
    chat(recorder, model="claude-opus-4-20250514").chat(None, hi, {"max_tokens": 100_000})

    assert [recorder.json(i)["max_tokens"] for i in range(5)] == [4096, 8192, 300, 64_000, 32_000]


def test_sampling_parameters_that_would_fail_are_left_out() -> None:
    recorder = Recorder(*(answer() for _ in range(5)))
    hi = [{"role": "user", "content": "Hi"}]

    chat(recorder).chat(None, hi, {"top_p": 0.8})  # top_p alone is kept
    chat(recorder).chat(None, hi, {"temperature": 1.6, "top_p": 0.8})  # OpenAI's 0..2 scale: clipped to 1
    chat(recorder, model="claude-opus-4-7").chat(None, hi, {"temperature": 0.2, "top_p": 0.8, "max_tokens": 64})
    chat(recorder, model="claude-opus-4-6").chat(None, hi, {"temperature": 0.2})
    chat(recorder, model="claude-opus-4-20250514").chat(None, hi, {"temperature": 0.4})  # a date, not version 4.20

    bodies = [recorder.json(i) for i in range(5)]
    assert bodies[0]["top_p"] == 0.8 and "temperature" not in bodies[0]
    assert bodies[1]["temperature"] == 1.0 and "top_p" not in bodies[1]
    assert "temperature" not in bodies[2] and "top_p" not in bodies[2] and bodies[2]["max_tokens"] == 64
    assert bodies[3]["temperature"] == 0.2
    assert bodies[4]["temperature"] == 0.4


def test_stop_string_and_base_url_with_or_without_v1() -> None:
    recorder = Recorder(answer(), answer())
    hi = [{"role": "user", "content": "Hi"}]

    chat(recorder, base_url="https://gateway.example/anthropic/").chat(None, hi, {"stop": "END"})
    chat(recorder, base_url="https://api.anthropic.com/v1").chat(None, hi)

    assert str(recorder.requests[0].url) == "https://gateway.example/anthropic/v1/messages"
    assert recorder.json(0)["stop_sequences"] == ["END"]
    assert str(recorder.requests[1].url) == URL


@pytest.mark.parametrize("usage", [None, {"input_tokens": 0, "output_tokens": 0}])
def test_answer_without_usage_is_estimated(usage: dict[str, int] | None) -> None:
    body = message([{"type": "text", "text": "Hello there"}])
    body["usage"] = usage
    recorder = Recorder(httpx.Response(200, json=body))

    result = chat(recorder).chat("Be brief.", [{"role": "user", "content": "Say hello"}])

    assert result.usage.estimated
    assert result.usage.completion_tokens == estimate_tokens("Hello there")
    assert result.usage.prompt_tokens == estimate_tokens("Be brief.\nSay hello")


def test_empty_text_is_left_out_and_native_blocks_pass_through() -> None:
    recorder = Recorder(answer())
    native_tool = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Look it up."}]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "toolu_9", "type": "function", "function": {"name": "lookup", "arguments": ""}}],
        },
        {"role": "tool", "tool_call_id": "toolu_9", "content": ""},
    ]

    chat(recorder).chat(None, messages, None, [native_tool])

    assert recorder.json()["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Look it up."}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]},
    ]
    assert recorder.json()["tools"] == [native_tool]


def test_answer_in_an_unexpected_shape_is_a_server_error() -> None:
    recorder = Recorder(
        httpx.Response(200, json={"id": "msg_1", "type": "message"}), httpx.Response(200, text="<html>")
    )
    model = chat(recorder)
    for _ in range(2):
        with pytest.raises(ProviderError) as info:
            model.chat(None, [{"role": "user", "content": "Hi"}])
        assert classify(info.value) is ErrorCode.SERVER


def test_requests_that_cannot_succeed_are_refused_without_a_call() -> None:
    recorder = Recorder()
    model = chat(recorder)

    def image(url: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]

    for messages in (
        image("data:image/bmp;base64,Qk0="),  # Anthropic takes JPEG, PNG, GIF and WebP only
        image("file:///tmp/photo.png"),
        [{"role": "system", "content": "only a system prompt"}],
    ):
        with pytest.raises(ProviderError) as info:
            model.chat(None, messages)
        assert classify(info.value) is ErrorCode.INVALID_REQUEST
    assert recorder.requests == []


def test_a_data_url_without_base64_is_encoded() -> None:
    recorder = Recorder(answer())
    url = "data:image/gif," + "".join(f"%{b:02X}" for b in b"GIF89a\x01")

    chat(recorder).chat(None, [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])

    source = recorder.json()["messages"][0]["content"][0]["source"]
    assert source == {"type": "base64", "media_type": "image/gif", "data": base64.b64encode(b"GIF89a\x01").decode()}


# --------------------------------------------------------------------------- streaming


def stream_body(*events: dict[str, Any]) -> bytes:
    """Anthropic's SSE: an ``event:`` line naming each event, whose data repeats the name as ``type``."""
    return sse(*events, event_names=[e["type"] for e in events])


def message_start(**usage: int) -> dict[str, Any]:
    start = message([], "end_turn", **(usage or {"input_tokens": 25, "output_tokens": 1}))
    start["stop_reason"] = None
    return {"type": "message_start", "message": start}


def test_stream_text_then_tool_use_with_partial_json() -> None:
    events = [
        message_start(input_tokens=472, cache_read_input_tokens=30, output_tokens=2),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay, let me"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " check."}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {},
            },
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"locat'}},
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": 'ion": "Paris"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
        {"type": "message_stop"},
    ]
    recorder = Recorder(
        httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream_body(*events))
    )

    deltas = list(
        chat(recorder).chat_stream("sys", [{"role": "user", "content": "Weather?"}], {"seed": 1}, [WEATHER_TOOL])
    )

    body = recorder.json()
    assert body["stream"] is True and body["system"] == "sys" and "seed" not in body
    assert str(recorder.last.url) == URL and recorder.last.headers["x-api-key"] == KEY
    assert [d.text for d in deltas[:-1]] == ["Okay, let me", " check."]
    last = deltas[-1]
    assert last.text == ""
    assert [(c.id, c.name, c.arguments) for c in last.tool_calls] == [
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {"location": "Paris"})
    ]
    assert last.finish_reason == "tool_calls"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (502, 89, 591)
    assert not last.usage.estimated


def test_stream_plain_text_ends_with_stop() -> None:
    events = [
        message_start(),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
        {"type": "message_stop"},
    ]
    recorder = Recorder(httpx.Response(200, content=stream_body(*events)))

    deltas = list(chat(recorder).chat_stream(None, [{"role": "user", "content": "Hi"}]))

    assert "".join(d.text for d in deltas) == "Hello!"
    assert deltas[-1].finish_reason == "stop" and deltas[-1].tool_calls == []
    assert deltas[-1].usage is not None and (deltas[-1].usage.prompt_tokens, deltas[-1].usage.completion_tokens) == (
        25,
        15,
    )


def test_stream_without_usage_is_estimated() -> None:
    start = message_start()
    del start["message"]["usage"]
    events = [
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello there"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}},
        {"type": "message_stop"},
    ]
    recorder = Recorder(httpx.Response(200, content=stream_body(*events)))

    last = list(chat(recorder).chat_stream(None, [{"role": "user", "content": "Say hello"}]))[-1]

    assert last.usage is not None and last.usage.estimated
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        estimate_tokens("Say hello"),
        estimate_tokens("Hello there"),
    )


def test_error_event_mid_stream_is_an_overloaded_provider_error() -> None:
    events = [
        message_start(),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ]
    recorder = Recorder(httpx.Response(200, content=stream_body(*events)))

    seen: list[str] = []
    stream = chat(recorder).chat_stream(None, [{"role": "user", "content": "Hi"}])
    with pytest.raises(ProviderError) as info:
        seen.extend(delta.text for delta in stream)

    assert seen == ["Hel"]
    assert info.value.provider_code == "overloaded_error" and info.value.message == "Overloaded"
    assert classify(info.value) is ErrorCode.SERVER


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("overloaded_error", ErrorCode.SERVER),
        ("api_error", ErrorCode.SERVER),
        ("rate_limit_error", ErrorCode.RATE_LIMIT),
        ("billing_error", ErrorCode.QUOTA),
        ("invalid_request_error", ErrorCode.INVALID_REQUEST),
    ],
)
def test_error_event_types_without_an_http_status(kind: str, expected: ErrorCode) -> None:
    events = [message_start(), {"type": "error", "error": {"type": kind, "message": "Something went wrong."}}]
    recorder = Recorder(httpx.Response(200, content=stream_body(*events)))

    with pytest.raises(ProviderError) as info:
        list(chat(recorder).chat_stream(None, [{"role": "user", "content": "Hi"}]))
    assert info.value.status is None and info.value.provider_code == kind
    assert classify(info.value) is expected


def test_http_error_before_the_stream() -> None:
    body = anthropic_error("overloaded_error", "Overloaded")
    recorder = Recorder(httpx.Response(529, json=body, headers={"retry-after": "3"}))

    with pytest.raises(ProviderError) as info:
        list(chat(recorder).chat_stream(None, [{"role": "user", "content": "Hi"}]))

    assert info.value.status == 529 and info.value.retry_after == 3.0
    assert classify(info.value) is ErrorCode.SERVER


# --------------------------------------------------------------------------- errors

RATE_LIMIT_TEXT = (
    "This request would exceed the rate limit for your organization (0dccdde6) of 20,000 input tokens per minute. "
    "For details, refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for "
    "current usage. Please reduce the prompt length or the maximum tokens requested, or try again later."
)
CREDIT_TEXT = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or "
    "purchase credits."
)

ERROR_CASES: list[tuple[str, int, dict[str, Any], ErrorCode]] = [
    ("rate-limit", 429, anthropic_error("rate_limit_error", RATE_LIMIT_TEXT), ErrorCode.RATE_LIMIT),
    (
        "monthly-spend-cap",
        429,
        anthropic_error(
            "rate_limit_error",
            "Your organization has reached its monthly usage limit.",
            details={"error_code": "enforced_spend_limit_reached"},
        ),
        ErrorCode.QUOTA,
    ),
    ("overloaded", 529, anthropic_error("overloaded_error", "Overloaded"), ErrorCode.SERVER),
    ("api-error", 500, anthropic_error("api_error", "Internal server error"), ErrorCode.SERVER),
    ("authentication", 401, anthropic_error("authentication_error", "invalid x-api-key"), ErrorCode.AUTHENTICATION),
    (
        "permission",
        403,
        anthropic_error("permission_error", "Your API key does not have permission to use the specified resource."),
        ErrorCode.AUTHENTICATION,
    ),
    ("not-found", 404, anthropic_error("not_found_error", "model: claude-9"), ErrorCode.MODEL),
    (
        "too-large",
        413,
        anthropic_error("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        ErrorCode.INVALID_REQUEST,
    ),
    (
        "invalid-request",
        400,
        anthropic_error("invalid_request_error", "`temperature` and `top_p` cannot both be specified for this model."),
        ErrorCode.INVALID_REQUEST,
    ),
    ("credit-balance", 400, anthropic_error("invalid_request_error", CREDIT_TEXT), ErrorCode.QUOTA),
    (
        "own-spend-limit",
        400,
        anthropic_error(
            "invalid_request_error",
            "You have reached your specified API usage limits. You will regain access on 2025-09-01 at 00:00 UTC.",
        ),
        ErrorCode.QUOTA,
    ),
    ("billing", 402, anthropic_error("billing_error", "There is an issue with your payment method."), ErrorCode.QUOTA),
]


@pytest.mark.parametrize(("status", "body", "expected"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_error_bodies_are_classified(status: int, body: dict[str, Any], expected: ErrorCode) -> None:
    recorder = Recorder(httpx.Response(status, json=body))

    with pytest.raises(ProviderError) as info:
        chat(recorder).chat(None, [{"role": "user", "content": "Hi"}])

    error = info.value
    assert error.status == status
    assert error.message == body["error"]["message"]
    assert error.provider_code == body["error"].get("details", {}).get("error_code", body["error"]["type"])
    assert classify(error) is expected
    assert classify(error).retryable is (expected in (ErrorCode.RATE_LIMIT, ErrorCode.SERVER))


RATE_HEADERS = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "0",
    "anthropic-ratelimit-requests-reset": "2025-01-01T00:00:30Z",
    "anthropic-ratelimit-input-tokens-limit": "20000",
    "anthropic-ratelimit-input-tokens-remaining": "0",
    "request-id": "req_011CSHoEeqs5C35K2UUqR7Fy",
}


def test_rate_limit_headers_and_retry_after_are_kept() -> None:
    ok = httpx.Response(200, json=message([{"type": "text", "text": "Hi"}]), headers=RATE_HEADERS)
    limited = httpx.Response(
        429, json=anthropic_error("rate_limit_error", RATE_LIMIT_TEXT), headers={**RATE_HEADERS, "retry-after": "27"}
    )
    recorder = Recorder(ok, limited)
    model = chat(recorder)

    model.chat(None, [{"role": "user", "content": "Hi"}])
    assert model.rate_limits == {k: v for k, v in RATE_HEADERS.items() if k.startswith("anthropic-ratelimit-")}

    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "user", "content": "Hi"}])
    assert info.value.retry_after == 27.0
    assert info.value.rate_limits["anthropic-ratelimit-input-tokens-remaining"] == "0"
    assert info.value.rate_limits["retry-after"] == "27"
    assert model.rate_limits["retry-after"] == "27"


def test_key_is_scrubbed_from_error_messages() -> None:
    body = anthropic_error("authentication_error", f"invalid x-api-key {KEY}")
    recorder = Recorder(httpx.Response(401, json=body))

    with pytest.raises(ProviderError) as info:
        chat(recorder).chat(None, [{"role": "user", "content": "Hi"}])
    assert KEY not in str(info.value)


# --------------------------------------------------------------------------- image2text


def test_image2text_sends_one_user_turn_with_the_image_and_prompt() -> None:
    reply = message([{"type": "text", "text": "A red square."}], input_tokens=1590, output_tokens=7)
    recorder = Recorder(httpx.Response(200, json=reply))
    model = AnthropicImage2Text("claude-haiku-4-5-20251001", api_key=KEY, client=recorder.client)

    result = model.describe_with_prompt(PNG, "What is in this picture?", "image/jpg")

    assert str(recorder.last.url) == URL and recorder.last.headers["x-api-key"] == KEY
    assert recorder.json() == {
        "model": "claude-haiku-4-5-20251001",
        "max_tokens": 4096,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG_B64}},
                    {"type": "text", "text": "What is in this picture?"},
                ],
            }
        ],
    }
    assert result.text == "A red square."
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (1590, 7) and not result.usage.estimated


def test_describe_without_prompt_uses_the_default_prompt() -> None:
    recorder = Recorder(answer("A cat."))
    model = AnthropicImage2Text("claude-sonnet-4-6", api_key=KEY, client=recorder.client)

    assert model.describe(PNG).text == "A cat."
    content = recorder.json()["messages"][0]["content"]
    assert content[0]["source"]["media_type"] == "image/png"
    assert content[1]["type"] == "text" and content[1]["text"]
    assert json.dumps(recorder.json()).count(PNG_B64) == 1


# --------------------------------------------------------------------------- refusals


REFUSAL_DETAILS = {"type": "refusal", "category": "cyber", "explanation": "This request was refused due to policy."}


def test_a_refusal_carries_its_explanation_and_finish_reason_refusal() -> None:
    """``stop_reason: "refusal"`` with ``stop_details`` (empty content): a refusal, usage as reported."""
    body = {**message([], "refusal", input_tokens=18, output_tokens=5), "stop_details": REFUSAL_DETAILS}
    result = chat(Recorder(httpx.Response(200, json=body))).chat(None, [{"role": "user", "content": "hi"}])
    assert (result.text, result.finish_reason) == ("", "refusal")
    assert result.refusal == "This request was refused due to policy. (category: cyber)"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (18, 5)


def test_a_streamed_refusal_arrives_in_message_delta() -> None:
    events = [
        {"type": "message_start", "message": {**message([], None, input_tokens=20, output_tokens=1)}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "refusal", "stop_sequence": None, "stop_details": REFUSAL_DETAILS},
            "usage": {"output_tokens": 0},
        },
        {"type": "message_stop"},
    ]
    names = [e["type"] for e in events]
    recorder = Recorder(httpx.Response(200, content=sse(*events, event_names=names)))
    (last,) = list(chat(recorder).chat_stream(None, [{"role": "user", "content": "hi"}]))
    assert (last.finish_reason, last.refusal) == (
        "refusal",
        "This request was refused due to policy. (category: cyber)",
    )


def test_a_refusal_without_details_still_says_so() -> None:
    result = chat(Recorder(httpx.Response(200, json=message([], "refusal")))).chat(
        None, [{"role": "user", "content": "hi"}]
    )
    assert result.finish_reason == "refusal" and result.refusal == "Claude refused to answer"
