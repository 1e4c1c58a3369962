"""The Cohere family (API v2): exact /v2/chat, /v2/embed and /v2/rerank requests, answers and
stream events shaped as Cohere's API reference shows them, and its errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from providers.base import estimate_tokens
from providers.cohere import CohereChat, CohereEmbedding, CohereRerank
from providers.errors import ErrorCode, ProviderError, classify
from providers.registry import get_provider_class
from tests.mock_http import Recorder, provider, sse

KEY = "co-Zx81bTq4Lm2Vn7Rp5Wd3Hj9Ks6Fg0Ac"
BASE = "https://api.cohere.com/v2"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "gets the weather of a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "the location to get weather"}},
            "required": ["location"],
        },
    },
}


def chat(recorder: Recorder, model: str = "command-a-03-2025") -> CohereChat:
    return provider("chat", "Cohere", recorder, model=model, api_key=KEY)  # type: ignore[no-any-return]


def usage(billed: tuple[int, int], tokens: tuple[int, int]) -> dict[str, Any]:
    return {
        "billed_units": {"input_tokens": billed[0], "output_tokens": billed[1]},
        "tokens": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
    }


def text_answer(text: str, finish: str = "COMPLETE") -> dict[str, Any]:
    return {
        "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
        "finish_reason": finish,
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "usage": usage((5, 418), (71, 418)),
    }


# --------------------------------------------------------------------------- registry


def test_registered_classes_carry_the_factory_and_the_v2_base_url() -> None:
    for model_type, cls in (("chat", CohereChat), ("embedding", CohereEmbedding), ("rerank", CohereRerank)):
        assert get_provider_class(model_type, "Cohere") is cls
        assert cls.factories == ("Cohere",)
        assert cls.default_base_url == BASE
        assert cls.needs_key


# --------------------------------------------------------------------------- chat


def test_chat_request_maps_messages_tools_and_generation_settings() -> None:
    recorder = Recorder(httpx.Response(200, json=text_answer("It is 24 degrees in Toronto.")))
    messages = [
        {"role": "user", "content": "What's the weather in Toronto?"},
        {
            "role": "assistant",
            "content": "I will look up the weather in Toronto.",
            "tool_calls": [
                {
                    "id": "get_weather_1byjy32y4hvq",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Toronto"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "get_weather_1byjy32y4hvq", "content": '{"temperature": 24}'},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And what is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
            ],
        },
    ]
    gen_conf = {
        "temperature": 1.7,  # OpenAI allows up to 2; Cohere answers 400 above 1
        "top_p": 1.0,
        "max_tokens": 512,
        "stop": ["a", "b", "c", "d", "e", "f"],
        "presence_penalty": -0.5,
        "frequency_penalty": 1.5,
        "seed": 42,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "logprobs": True,
        "n": 2,
    }

    result = chat(recorder).chat("You are a weather bot.", messages, gen_conf, tools=[WEATHER_TOOL])

    request = recorder.last
    assert request.method == "POST" and str(request.url) == f"{BASE}/chat"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert recorder.json() == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "What's the weather in Toronto?"},
            {
                "role": "assistant",
                "tool_plan": "I will look up the weather in Toronto.",
                "tool_calls": [
                    {
                        "id": "get_weather_1byjy32y4hvq",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Toronto"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "get_weather_1byjy32y4hvq", "content": '{"temperature": 24}'},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And what is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            },
        ],
        "temperature": 1.0,
        "p": 0.99,
        "max_tokens": 512,
        "stop_sequences": ["a", "b", "c", "d", "e"],
        "presence_penalty": 0.0,
        "frequency_penalty": 1.0,
        "seed": 42,
        "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
        "tools": [WEATHER_TOOL],
    }
    assert result.text == "It is 24 degrees in Toronto."


def test_chat_settings_within_range_pass_unchanged_and_a_string_stop_is_a_list() -> None:
    recorder = Recorder(httpx.Response(200, json=text_answer("ok")))
    gen_conf = {"temperature": 0.3, "top_p": 0.75, "stop": "\n\n", "response_format": {"type": "json_object"}}

    chat(recorder).chat(None, [{"role": "user", "content": "hi"}], gen_conf)

    body = recorder.json()
    assert body == {
        "model": "command-a-03-2025",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "p": 0.75,
        "stop_sequences": ["\n\n"],
        "response_format": {"type": "json_object"},
    }


def test_assistant_text_without_tool_calls_is_content() -> None:
    recorder = Recorder(httpx.Response(200, json=text_answer("ok")))
    messages = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi, how can I help you today?"}]},
        {"role": "user", "content": "Tell me a joke"},
    ]

    chat(recorder).chat(None, messages)

    assert recorder.json()["messages"][1] == {"role": "assistant", "content": "Hi, how can I help you today?"}


def test_chat_text_answer_counts_billed_units() -> None:
    answer = {
        "id": "5a50480a-cf52-46f0-af01-53d18539bd31",
        "finish_reason": "COMPLETE",
        "message": {
            "role": "assistant",
            "content": [  # a reasoning model's thoughts come first, as their own part
                {"type": "thinking", "thinking": "The user wants a catchy title."},
                {"type": "text", "text": "The Art of API Design: "},
                {"type": "text", "text": "Crafting Elegant and Powerful Interfaces"},
            ],
        },
        "usage": usage((17, 12), (215, 12)),
    }
    recorder = Recorder(httpx.Response(200, json=answer))

    result = chat(recorder).chat(None, [{"role": "user", "content": "Suggest a title"}])

    assert result.text == "The Art of API Design: Crafting Elegant and Powerful Interfaces"
    assert result.finish_reason == "stop"
    assert result.tool_calls == []
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (17, 12, 29)
    assert not result.usage.estimated


def test_chat_tool_call_answer() -> None:
    answer = {
        "id": "a3b3a1d8-5f4b-4a4b-8e1f-0c1d2e3f4a5b",
        "finish_reason": "TOOL_CALL",
        "message": {
            "role": "assistant",
            "tool_plan": "I will search for the weather in Toronto.",
            "tool_calls": [
                {
                    "id": "get_weather_1byjy32y4hvq",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Toronto"}'},
                }
            ],
        },
        "usage": {
            "billed_units": {"input_tokens": 37, "output_tokens": 28},
            "tokens": {"input_tokens": 1187, "output_tokens": 61},
        },
    }
    recorder = Recorder(httpx.Response(200, json=answer))

    result = chat(recorder).chat(None, [{"role": "user", "content": "Weather in Toronto?"}], tools=[WEATHER_TOOL])

    assert result.text == ""
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("get_weather_1byjy32y4hvq", "get_weather", {"location": "Toronto"})
    ]
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (37, 28)


@pytest.mark.parametrize(("finish", "expected"), [("MAX_TOKENS", "length"), ("STOP_SEQUENCE", "stop")])
def test_finish_reasons_are_named_as_openai_names_them(finish: str, expected: str) -> None:
    recorder = Recorder(httpx.Response(200, json=text_answer("cut", finish)))

    assert chat(recorder).chat(None, [{"role": "user", "content": "go"}]).finish_reason == expected


def test_usage_counts_tokens_when_nothing_is_billed_and_is_estimated_when_absent() -> None:
    counted = text_answer("ok") | {"usage": {"tokens": {"input_tokens": 9, "output_tokens": 2}}}
    bare = {k: v for k, v in text_answer("four words right here").items() if k != "usage"}
    recorder = Recorder(httpx.Response(200, json=counted), httpx.Response(200, json=bare))
    model = chat(recorder)

    first = model.chat(None, [{"role": "user", "content": "hi"}])
    second = model.chat("Be brief.", [{"role": "user", "content": "Say four words"}])

    assert (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.estimated) == (9, 2, False)
    assert second.usage.estimated
    assert second.usage.prompt_tokens == estimate_tokens("Be brief.\nSay four words")
    assert second.usage.completion_tokens == estimate_tokens("four words right here")


@pytest.mark.parametrize(("finish", "code"), [("ERROR", ErrorCode.SERVER), ("TIMEOUT", ErrorCode.TIMEOUT)])
def test_a_failed_generation_raises(finish: str, code: ErrorCode) -> None:
    recorder = Recorder(httpx.Response(200, json=text_answer("", finish)))

    with pytest.raises(ProviderError) as info:
        chat(recorder).chat(None, [{"role": "user", "content": "go"}])

    assert classify(info.value) is code
    assert info.value.provider_code == finish


def test_answer_without_message_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, json={"id": "x", "finish_reason": "COMPLETE"}))

    with pytest.raises(ProviderError) as info:
        chat(recorder).chat(None, [{"role": "user", "content": "go"}])
    assert classify(info.value) is ErrorCode.SERVER


# --------------------------------------------------------------------------- streaming

TEXT_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message-start",
        "id": "29f14a5a-11de-4cae-9800-25e4747408ea",
        "delta": {"message": {"role": "assistant", "content": []}},
    },
    {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "A large"}}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": " language model"}}}},
    {"type": "content-end", "index": 0},
    {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": usage((21, 124), (186, 124))}},
]


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_chat_stream_text() -> None:
    recorder = Recorder(
        httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=sse(*TEXT_EVENTS, event_names=names(TEXT_EVENTS)),
        )
    )

    deltas = list(chat(recorder).chat_stream(None, [{"role": "user", "content": "What is an LLM?"}], {"top_p": 0.5}))

    assert str(recorder.last.url) == f"{BASE}/chat"
    assert recorder.json() == {
        "model": "command-a-03-2025",
        "messages": [{"role": "user", "content": "What is an LLM?"}],
        "p": 0.5,
        "stream": True,
    }
    assert [d.text for d in deltas[:-1]] == ["A large", " language model"]
    final = deltas[-1]
    assert final.text == "" and final.tool_calls == [] and final.finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.estimated) == (21, 124, False)


def test_chat_stream_tool_calls() -> None:
    events: list[dict[str, Any]] = [
        {"type": "message-start", "id": "run_1", "delta": {"message": {"role": "assistant", "content": []}}},
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will check both."}}},
        {
            "type": "tool-call-start",
            "index": 0,
            "delta": {
                "message": {
                    "tool_calls": {
                        "id": "get_weather_nsz5zm3w56q3",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                }
            },
        },
        {
            "type": "tool-call-delta",
            "index": 0,
            "delta": {"message": {"tool_calls": {"function": {"arguments": '{\n    "'}}}},
        },
        {
            "type": "tool-call-delta",
            "index": 0,
            "delta": {"message": {"tool_calls": {"function": {"arguments": 'location":"Paris"}'}}}},
        },
        {"type": "tool-call-end", "index": 0},
        {
            "type": "tool-call-start",
            "index": 1,
            "delta": {
                "message": {
                    "tool_calls": {
                        "id": "get_time_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    }
                }
            },
        },
        {
            "type": "tool-call-delta",
            "index": 1,
            "delta": {"message": {"tool_calls": {"function": {"arguments": "{}"}}}},
        },
        {"type": "tool-call-end", "index": 1},
        {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": usage((10, 20), (12, 25))}},
    ]
    recorder = Recorder(httpx.Response(200, content=sse(*events, event_names=names(events))))

    deltas = list(
        chat(recorder).chat_stream(None, [{"role": "user", "content": "Weather and time?"}], tools=[WEATHER_TOOL])
    )

    assert len(deltas) == 1  # the plan is not answer text
    final = deltas[0]
    assert [(c.id, c.name, c.arguments) for c in final.tool_calls] == [
        ("get_weather_nsz5zm3w56q3", "get_weather", {"location": "Paris"}),
        ("get_time_b", "get_time", {}),
    ]
    assert final.finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.total_tokens == 30
    assert recorder.json()["tools"] == [WEATHER_TOOL]


def test_chat_stream_without_usage_is_estimated() -> None:
    events = [*TEXT_EVENTS[:-1], {"type": "message-end", "delta": {"finish_reason": "COMPLETE"}}]
    recorder = Recorder(httpx.Response(200, content=sse(*events)))

    final = list(chat(recorder).chat_stream(None, [{"role": "user", "content": "What is an LLM?"}]))[-1]

    assert final.usage is not None and final.usage.estimated
    assert final.usage.completion_tokens == estimate_tokens("A large language model")


def test_chat_stream_that_ends_in_error_raises_after_its_text() -> None:
    events = [*TEXT_EVENTS[:-1], {"type": "message-end", "delta": {"finish_reason": "ERROR"}}]
    recorder = Recorder(httpx.Response(200, content=sse(*events)))
    stream = chat(recorder).chat_stream(None, [{"role": "user", "content": "go"}])

    assert next(stream).text == "A large"
    assert next(stream).text == " language model"
    with pytest.raises(ProviderError) as info:
        next(stream)
    assert classify(info.value) is ErrorCode.SERVER


def test_malformed_stream_event_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, content=b'data: {"type": "content-delta", "delta":\n\n'))

    with pytest.raises(ProviderError) as info:
        list(chat(recorder).chat_stream(None, [{"role": "user", "content": "go"}]))
    assert classify(info.value) is ErrorCode.SERVER


def test_chat_stream_http_error_before_the_stream() -> None:
    recorder = Recorder(
        httpx.Response(
            429,
            headers={"retry-after": "7"},
            json={
                "id": "c0a8e5f1",
                "message": "You are past the per minute request limit, please wait and try again later.",
            },
        )
    )

    with pytest.raises(ProviderError) as info:
        list(chat(recorder).chat_stream(None, [{"role": "user", "content": "go"}]))

    assert classify(info.value) is ErrorCode.RATE_LIMIT
    assert info.value.retry_after == 7.0
    assert info.value.rate_limits == {"retry-after": "7"}


# --------------------------------------------------------------------------- embeddings


def embed_answer(vectors: list[list[float]], texts: list[str], billed: int | None = 3) -> dict[str, Any]:
    meta: dict[str, Any] = {"api_version": {"version": "2"}}
    if billed is not None:
        meta["billed_units"] = {"input_tokens": billed}
    return {
        "id": "da6e531f-54c6-4a73-bf92-f60566d8d753",
        "embeddings": {"float": vectors},
        "texts": texts,
        "meta": meta,
        "response_type": "embeddings_by_type",
    }


def test_embed_documents_and_queries() -> None:
    recorder = Recorder(
        httpx.Response(
            200, json=embed_answer([[0.016296387, -0.008354187], [0.5, 0.25]], ["hello", "goodbye"], billed=2)
        ),
        httpx.Response(200, json=embed_answer([[1.0, 0.0]], ["where?"], billed=1)),
    )
    model = provider("embedding", "Cohere", recorder, model="embed-v4.0", api_key=KEY)

    documents = model.encode(["hello", "goodbye"])
    query = model.encode_queries("where?")

    assert str(recorder.requests[0].url) == f"{BASE}/embed"
    assert recorder.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert recorder.json(0) == {
        "model": "embed-v4.0",
        "texts": ["hello", "goodbye"],
        "input_type": "search_document",
        "embedding_types": ["float"],
    }
    assert recorder.json(1) == {
        "model": "embed-v4.0",
        "texts": ["where?"],
        "input_type": "search_query",
        "embedding_types": ["float"],
    }
    assert documents.vectors.dtype == np.float32
    np.testing.assert_array_equal(documents.vectors, np.array([[0.016296387, -0.008354187], [0.5, 0.25]], "f4"))
    assert (documents.usage.prompt_tokens, documents.usage.total_tokens, documents.usage.estimated) == (2, 2, False)
    assert query.vectors.shape == (1, 2) and query.usage.total_tokens == 1


def test_embed_batches_of_96_and_estimates_missing_usage() -> None:
    def answer(n: int) -> httpx.Response:
        return httpx.Response(200, json=embed_answer([[float(i)] for i in range(n)], ["t"] * n, billed=None))

    recorder = Recorder(answer(96), answer(2))
    model = provider("embedding", "Cohere", recorder, model="embed-english-v3.0", api_key=KEY)

    result = model.encode([f"text {i}" for i in range(98)])

    assert [len(recorder.json(i)["texts"]) for i in range(2)] == [96, 2]
    assert result.vectors.shape == (98, 1)
    assert result.usage.estimated
    assert result.usage.prompt_tokens == sum(estimate_tokens(f"text {i}") for i in range(98))


def test_embed_count_mismatch_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, json=embed_answer([[1.0]], ["a"])))
    model = provider("embedding", "Cohere", recorder, api_key=KEY)

    with pytest.raises(ProviderError) as info:
        model.encode(["a", "b"])
    assert classify(info.value) is ErrorCode.SERVER


# --------------------------------------------------------------------------- rerank


def test_rerank_request_scores_and_estimated_usage() -> None:
    answer = {
        "id": "07734bd2-2473-4f07-94e1-0d9f0e6843cf",
        "results": [{"index": 2, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.08}],
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
    }
    recorder = Recorder(httpx.Response(200, json=answer))
    model = provider("rerank", "Cohere", recorder, model="rerank-v3.5", api_key=KEY)
    documents = ["Carson City is the capital of Nevada.", "Paris is in France.", "Washington, D.C. is the capital."]

    result = model.similarity("What is the capital of the United States?", documents)

    assert str(recorder.last.url) == f"{BASE}/rerank"
    assert recorder.last.headers["authorization"] == f"Bearer {KEY}"
    assert recorder.json() == {
        "model": "rerank-v3.5",
        "query": "What is the capital of the United States?",
        "documents": documents,
        "top_n": 3,
    }
    np.testing.assert_array_equal(result.scores, np.array([0.08, 0.0, 0.9], "f4"))
    assert result.usage.estimated  # search units are not tokens
    query_tokens = estimate_tokens("What is the capital of the United States?")
    assert result.usage.prompt_tokens == sum(query_tokens + estimate_tokens(d) for d in documents)


def test_rerank_above_1000_documents_is_split_and_merged() -> None:
    documents = [f"passage {i}" for i in range(1001)]

    def answer(start: int, n: int) -> httpx.Response:
        results = [{"index": i, "relevance_score": 1 - (start + i) / 2000} for i in range(n)]
        return httpx.Response(200, json={"id": "x", "results": results, "meta": {"billed_units": {"search_units": 1}}})

    recorder = Recorder(answer(0, 1000), answer(1000, 1))
    result = provider("rerank", "Cohere", recorder, model="rerank-v3.5", api_key=KEY).similarity("q", documents)

    assert [recorder.json(i)["documents"] for i in range(2)] == [documents[:1000], documents[1000:]]
    assert [recorder.json(i)["top_n"] for i in range(2)] == [1000, 1]
    np.testing.assert_allclose(result.scores, 1 - np.arange(1001) / 2000, rtol=1e-6)
    query_tokens = estimate_tokens("q")
    assert result.usage.prompt_tokens == sum(query_tokens + estimate_tokens(d) for d in documents)


def test_rerank_usage_from_meta_tokens_when_sent() -> None:
    answer = {
        "id": "1b5a3c2d",
        "results": [{"index": 0, "relevance_score": 0.7}],
        "meta": {"billed_units": {"search_units": 1}, "tokens": {"input_tokens": 42, "output_tokens": 0}},
    }
    recorder = Recorder(httpx.Response(200, json=answer))
    model = provider("rerank", "Cohere", recorder, model="rerank-v3.5", api_key=KEY)

    result = model.similarity("q", ["d"])

    assert (result.usage.prompt_tokens, result.usage.total_tokens, result.usage.estimated) == (42, 42, False)


# --------------------------------------------------------------------------- errors

# Messages from Cohere's error reference (docs.cohere.com/reference/errors), except the monthly one:
# the docs state the trial key's 1,000-calls-a-month allowance but list only per-minute 429 texts.
ERRORS = [
    (
        400,
        "too many tokens: total number of tokens in the prompt cannot exceed 4081 - received 4292.",
        ErrorCode.INVALID_REQUEST,
    ),
    (401, "invalid api token", ErrorCode.AUTHENTICATION),
    (
        402,
        "Please add or update your payment method at https://dashboard.cohere.com/billing?tab=payment to continue",
        ErrorCode.QUOTA,
    ),
    (
        404,
        "model 'xyz' not found, make sure the correct model ID was used and that you have access to the model.",
        ErrorCode.MODEL,
    ),
    (429, "You are past the per minute request limit, please wait and try again later.", ErrorCode.RATE_LIMIT),
    (
        429,
        (
            "You are using a Trial key, which is limited to 40 API calls / minute. You can continue to use "
            "the Trial key for free or upgrade to a Production key with higher rate limits at "
            "'https://dashboard.cohere.com/api-keys'."
        ),
        ErrorCode.RATE_LIMIT,
    ),
    (429, "trial token rate limit exceeded, limit is 100000 tokens per minute", ErrorCode.RATE_LIMIT),
    (
        429,
        (
            "You are using a Trial key, which is limited to 1000 API calls / month. You can continue to use "
            "the Trial key for free or upgrade to a Production key with higher rate limits at "
            "'https://dashboard.cohere.com/api-keys'."
        ),
        ErrorCode.QUOTA,
    ),
    (499, "request cancelled", ErrorCode.SERVER),
    (500, "internal server error", ErrorCode.SERVER),
]


@pytest.mark.parametrize(("status", "message", "code"), ERRORS)
def test_errors_are_classified(status: int, message: str, code: ErrorCode) -> None:
    recorder = Recorder(httpx.Response(status, json={"id": "6d3a1d5e-1a2b-4c3d-9e8f-0a1b2c3d4e5f", "message": message}))
    model = provider("embedding", "Cohere", recorder, api_key=KEY)

    with pytest.raises(ProviderError) as info:
        model.encode(["a"])

    assert info.value.status == status
    assert info.value.message == message
    assert classify(info.value) is code
    assert classify(info.value).retryable is (code in (ErrorCode.RATE_LIMIT, ErrorCode.SERVER))


def test_rate_limit_keeps_retry_after_and_rate_limit_headers_and_scrubs_the_key() -> None:
    headers = {"retry-after": "12", "x-ratelimit-remaining": "0"}
    body = {"message": f"You are past the per minute request limit for key {KEY}, please wait and try again later."}
    recorder = Recorder(httpx.Response(429, headers=headers, json=body))
    model = provider("rerank", "Cohere", recorder, model="rerank-v3.5", api_key=KEY)

    with pytest.raises(ProviderError) as info:
        model.similarity("q", ["d"])

    assert classify(info.value) is ErrorCode.RATE_LIMIT
    assert info.value.retry_after == 12.0
    assert info.value.rate_limits == {"retry-after": "12", "x-ratelimit-remaining": "0"}
    assert model.rate_limits == info.value.rate_limits
    assert KEY not in str(info.value)


def test_chat_errors_go_through_the_same_classification() -> None:
    recorder = Recorder(httpx.Response(499, json={"message": "failed to get rerank inference: request cancelled"}))

    with pytest.raises(ProviderError) as info:
        chat(recorder).chat(None, [{"role": "user", "content": "go"}])
    assert classify(info.value) is ErrorCode.SERVER


def test_request_carries_json_not_form() -> None:
    recorder = Recorder(httpx.Response(200, json=text_answer("ok")))

    chat(recorder).chat(None, [{"role": "user", "content": "hi"}])

    assert recorder.last.headers["content-type"] == "application/json"
    assert json.loads(recorder.last.content)["model"] == "command-a-03-2025"
