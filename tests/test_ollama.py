"""The Ollama family: exact /api/chat and /api/embed requests, answers shaped as Ollama's API
reference shows them (docs/api.md, docs/openapi.yaml), NDJSON streams, and its errors."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest

from providers.base import estimate_tokens
from providers.errors import ErrorCode, ProviderError, classify
from providers.ollama import OllamaChat, OllamaEmbedding, OllamaImage2Text
from providers.registry import _REGISTRY, FAMILY_MODULES
from tests.mock_http import Recorder

CLASSES: dict[str, Any] = {"chat": OllamaChat, "embedding": OllamaEmbedding, "image2text": OllamaImage2Text}


def provider(model_type: str, factory: str, recorder: Recorder, model: str = "test-model", **kwargs: Any) -> Any:
    """Our class for the type (imported directly: the test does not depend on other families loading)."""
    assert factory == "Ollama"
    return CLASSES[model_type](model, client=recorder.client, **kwargs)


KEY = "ollama-cloud-key-5f3c9a1b2d4e6f80"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The location, e.g. San Francisco, CA"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "format"],
        },
    },
}


def answer(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A non-streamed /api/chat answer with every field Ollama sends."""
    return {
        "model": "llama3.2",
        "created_at": "2024-07-22T20:33:28.123648Z",
        "message": message,
        "done_reason": "stop",
        "done": True,
        "total_duration": 885095291,
        "load_duration": 3753500,
        "prompt_eval_count": 122,
        "prompt_eval_duration": 328493000,
        "eval_count": 33,
        "eval_duration": 552222000,
        **extra,
    }


def ndjson(*objects: dict[str, Any]) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objects).encode()


def piece(content: str, **message: Any) -> dict[str, Any]:
    return {
        "model": "llama3.2",
        "created_at": "2023-08-04T08:52:19.385406455-07:00",
        "message": {"role": "assistant", "content": content, **message},
        "done": False,
    }


FINAL = {
    "model": "llama3.2",
    "created_at": "2023-08-04T19:22:45.499127Z",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "stop",
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}


def stream_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "application/x-ndjson"}, content=body)


# --------------------------------------------------------------------------- registration


def test_registered_types_and_defaults() -> None:
    assert "providers.ollama" in FAMILY_MODULES
    for model_type, cls in CLASSES.items():
        assert _REGISTRY[(model_type, "Ollama")] is cls
        assert cls.factories == ("Ollama",) and cls.model_type == model_type
        assert cls.default_base_url == "http://localhost:11434"
        assert not cls.needs_key


# --------------------------------------------------------------------------- chat


def test_chat_request_and_tool_call_answer() -> None:
    reply = answer(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "function": {
                        "name": "get_current_weather",
                        "arguments": {"format": "celsius", "location": "Paris, FR"},
                    }
                },
                {"function": {"name": "get_current_weather", "arguments": {"format": "celsius", "location": "Oslo"}}},
            ],
        }
    )
    rec = Recorder(httpx.Response(200, json=reply))
    model = provider("chat", "Ollama", rec, model="llama3.2")
    messages = [{"role": "user", "content": "What is the weather today in Paris?"}]
    gen_conf = {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": "\n\n",
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "top_k": 3,  # not an OpenAI-style name: dropped
        "response_format": {"type": "json_object"},
    }

    result = model.chat("You are terse.", messages, gen_conf, [WEATHER_TOOL])

    request = rec.last
    assert str(request.url) == "http://localhost:11434/api/chat"
    assert request.method == "POST"
    assert "authorization" not in request.headers
    assert rec.json() == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "You are terse."}, *messages],
        "stream": False,
        "options": {
            "temperature": 0.2,
            "top_p": 0.9,
            "num_predict": 50,
            "stop": ["\n\n"],
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
        },
        "format": "json",
        "tools": [WEATHER_TOOL],
    }
    assert result.text == ""
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_0", "get_current_weather", {"format": "celsius", "location": "Paris, FR"}),
        ("call_1", "get_current_weather", {"format": "celsius", "location": "Oslo"}),
    ]
    assert result.finish_reason == "tool_calls"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (122, 33, 155)
    assert not result.usage.estimated


def test_chat_text_answer_with_key_and_json_schema() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    reply = answer({"role": "assistant", "content": '{"age": 22}'}, done_reason="length")
    rec = Recorder(httpx.Response(200, json=reply))
    model = provider("chat", "Ollama", rec, model="gpt-oss:120b", api_key=KEY, base_url="https://ollama.com/")

    result = model.chat(
        None,
        [{"role": "user", "content": "How old?"}],
        {"response_format": {"type": "json_schema", "json_schema": {"name": "age", "schema": schema}}},
    )

    assert str(rec.last.url) == "https://ollama.com/api/chat"
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"
    assert rec.json()["format"] == schema
    assert "options" not in rec.json()
    assert result.text == '{"age": 22}' and result.finish_reason == "length" and result.tool_calls == []


def test_base_url_with_api_or_v1_suffix() -> None:
    rec = Recorder(
        httpx.Response(200, json=answer({"role": "assistant", "content": "hi"})),
        httpx.Response(200, json=answer({"role": "assistant", "content": "hi"})),
    )
    for base in ("http://gpu-box:11434/v1", "http://gpu-box:11434/api/"):
        provider("chat", "Ollama", rec, base_url=base).chat(None, [{"role": "user", "content": "hi"}])
    assert [str(r.url) for r in rec.requests] == ["http://gpu-box:11434/api/chat"] * 2


def test_history_with_images_tool_calls_and_tool_results() -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    encoded = base64.b64encode(png).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {
                        "name": "get_current_weather",
                        "arguments": '{"location": "Paris", "format": "celsius"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "22°C"},
    ]
    rec = Recorder(httpx.Response(200, json=answer({"role": "assistant", "content": "A pig; 22°C in Paris."})))

    provider("chat", "Ollama", rec, model="llava").chat(None, messages)

    assert rec.json()["messages"] == [
        {"role": "user", "content": "What is in this image?", "images": [encoded]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_current_weather", "arguments": {"location": "Paris", "format": "celsius"}}}
            ],
        },
        {"role": "tool", "content": "22°C", "tool_name": "get_current_weather"},
    ]


def test_image_by_url_is_refused_before_a_call() -> None:
    rec = Recorder()
    model = provider("chat", "Ollama", rec, model="llava")
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]

    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "user", "content": content}])

    assert classify(info.value) is ErrorCode.INVALID_REQUEST and rec.requests == []


def test_missing_counts_are_estimated() -> None:
    reply = answer({"role": "assistant", "content": "Hello! How are you today?"})
    del reply["prompt_eval_count"]  # Ollama leaves it out when the whole prompt came from its cache
    rec = Recorder(httpx.Response(200, json=reply))

    result = provider("chat", "Ollama", rec).chat(None, [{"role": "user", "content": "Hello!"}])

    assert result.usage.estimated
    assert result.usage.prompt_tokens == estimate_tokens("Hello!") and result.usage.completion_tokens == 33


def test_error_body_on_a_200_is_a_provider_error() -> None:
    rec = Recorder(httpx.Response(200, json={"error": "an error was encountered while running the model"}))
    with pytest.raises(ProviderError) as info:
        provider("chat", "Ollama", rec).chat(None, [{"role": "user", "content": "hi"}])
    assert "error was encountered" in info.value.message and classify(info.value) is ErrorCode.SERVER


def test_answer_without_message_is_a_server_error() -> None:
    rec = Recorder(httpx.Response(200, json={"model": "llama3.2", "done": True}))
    with pytest.raises(ProviderError) as info:
        provider("chat", "Ollama", rec).chat(None, [{"role": "user", "content": "hi"}])
    assert classify(info.value) is ErrorCode.SERVER


# --------------------------------------------------------------------------- streaming (NDJSON)


def test_stream_text_then_usage() -> None:
    body = ndjson(piece("The"), piece(" sky"), piece(" is blue."), FINAL)
    rec = Recorder(stream_response(body))
    model = provider("chat", "Ollama", rec, model="llama3.2")

    deltas = list(model.chat_stream("sys", [{"role": "user", "content": "why is the sky blue?"}], {"max_tokens": 9}))

    assert rec.json() == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "why is the sky blue?"}],
        "stream": True,
        "options": {"num_predict": 9},
    }
    assert [d.text for d in deltas[:-1]] == ["The", " sky", " is blue."]
    last = deltas[-1]
    assert last.text == "" and last.tool_calls == [] and last.finish_reason == "stop"
    assert last.usage is not None and not last.usage.estimated
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (26, 282, 308)


def test_stream_with_tool_calls() -> None:
    call = {"function": {"name": "get_current_weather", "arguments": {"location": "New York", "format": "celsius"}}}
    london = {"function": {"name": "get_current_weather", "arguments": {"location": "London", "format": "celsius"}}}
    later = {"id": "call_xyz", "function": {"index": 2, "name": "get_time", "arguments": {}}}
    chunks = [piece("Checking."), piece("", tool_calls=[call]), piece("", tool_calls=[london, later]), FINAL]
    rec = Recorder(stream_response(ndjson(*chunks)))
    model = provider("chat", "Ollama", rec, model="gpt-oss:120b", api_key=KEY, base_url="https://ollama.com")

    deltas = list(model.chat_stream(None, [{"role": "user", "content": "weather?"}], None, [WEATHER_TOOL]))

    assert str(rec.last.url) == "https://ollama.com/api/chat"
    assert rec.last.headers["authorization"] == f"Bearer {KEY}"
    assert rec.json()["tools"] == [WEATHER_TOOL] and rec.json()["stream"] is True
    assert [d.text for d in deltas[:-1]] == ["Checking."]
    last = deltas[-1]
    assert [(c.id, c.name, c.arguments) for c in last.tool_calls] == [
        ("call_0", "get_current_weather", {"location": "New York", "format": "celsius"}),
        ("call_1", "get_current_weather", {"location": "London", "format": "celsius"}),
        ("call_xyz", "get_time", {}),
    ]
    assert last.finish_reason == "tool_calls"


def test_error_line_inside_a_stream() -> None:
    body = ndjson(piece(" Yes"), {"error": "an error was encountered while running the model"})
    model = provider("chat", "Ollama", Recorder(stream_response(body)))

    stream = model.chat_stream(None, [{"role": "user", "content": "hi"}])
    assert next(stream).text == " Yes"  # the text before the error still arrives
    with pytest.raises(ProviderError) as info:
        next(stream)

    assert "error was encountered" in info.value.message
    assert classify(info.value) is ErrorCode.SERVER


def test_stream_cut_before_done_is_a_server_error() -> None:
    model = provider("chat", "Ollama", Recorder(stream_response(ndjson(piece("Hel")))))
    with pytest.raises(ProviderError) as info:
        list(model.chat_stream(None, [{"role": "user", "content": "hi"}]))
    assert classify(info.value) is ErrorCode.SERVER


def test_malformed_stream_line_is_a_server_error() -> None:
    model = provider("chat", "Ollama", Recorder(stream_response(b'{"model": "x", "mess\n')))
    with pytest.raises(ProviderError) as info:
        list(model.chat_stream(None, [{"role": "user", "content": "hi"}]))
    assert classify(info.value) is ErrorCode.SERVER


def test_stream_http_error_before_the_stream() -> None:
    rec = Recorder(httpx.Response(404, json={"error": 'model "llama9" not found, try pulling it first'}))
    with pytest.raises(ProviderError) as info:
        list(provider("chat", "Ollama", rec, model="llama9").chat_stream(None, [{"role": "user", "content": "hi"}]))
    assert info.value.status == 404 and classify(info.value) is ErrorCode.MODEL
    assert "not found" in info.value.message


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (404, 'model "llama3" not found, try pulling it first', ErrorCode.MODEL),
        (400, "registry.ollama.ai/library/gemma:2b does not support tools", ErrorCode.INVALID_REQUEST),
        (401, "unauthorized", ErrorCode.AUTHENTICATION),
        (500, "llama runner process has terminated: exit status 2", ErrorCode.SERVER),
        (502, "upstream error", ErrorCode.SERVER),
        (429, "you've reached your hourly usage limit, please wait or upgrade to continue", ErrorCode.RATE_LIMIT),
        (429, "you (bob) have reached your weekly usage limit, upgrade for higher limits", ErrorCode.QUOTA),
    ],
)
def test_error_bodies_are_classified(status: int, error: str, code: ErrorCode) -> None:
    rec = Recorder(httpx.Response(status, json={"error": error}, headers={"retry-after": "30"}))
    with pytest.raises(ProviderError) as info:
        provider("chat", "Ollama", rec, api_key=KEY).chat(None, [{"role": "user", "content": "hi"}])
    assert info.value.status == status and info.value.message == error
    assert classify(info.value) is code
    assert info.value.retry_after == 30.0 and info.value.rate_limits == {"retry-after": "30"}


def test_key_in_an_error_is_scrubbed() -> None:
    rec = Recorder(httpx.Response(401, json={"error": f"invalid key {KEY}"}))
    with pytest.raises(ProviderError) as info:
        provider("embedding", "Ollama", rec, api_key=KEY).encode(["a"])
    assert KEY not in str(info.value) and classify(info.value) is ErrorCode.AUTHENTICATION


# --------------------------------------------------------------------------- image2text


def test_image2text_sends_bare_base64_images() -> None:
    image = b"\xff\xd8\xff\xe0jpeg-bytes"
    reply = answer({"role": "assistant", "content": " The image features a cute, little pig.", "images": None})
    rec = Recorder(httpx.Response(200, json=reply), httpx.Response(200, json=reply))
    model = provider("image2text", "Ollama", rec, model="llava")

    result = model.describe_with_prompt(image, "What is in this picture?", "image/jpeg")
    model.describe(image)

    assert str(rec.requests[0].url) == "http://localhost:11434/api/chat"
    assert rec.json(0) == {
        "model": "llava",
        "messages": [
            {"role": "user", "content": "What is in this picture?", "images": [base64.b64encode(image).decode()]}
        ],
        "stream": False,
    }
    assert rec.json(1)["messages"][0]["content"] == "Describe this image in detail."
    assert result.text == " The image features a cute, little pig." and result.usage.total_tokens == 155


# --------------------------------------------------------------------------- embeddings


def test_embed_request_and_response() -> None:
    reply = {
        "model": "all-minilm",
        "embeddings": [
            [0.010071029, -0.0017594862, 0.05007221],
            [-0.0098027075, 0.06042469, 0.025257962],
        ],
        "total_duration": 14143917,
        "load_duration": 1019500,
        "prompt_eval_count": 16,
    }
    rec = Recorder(httpx.Response(200, json=reply))
    model = provider("embedding", "Ollama", rec, model="all-minilm")

    result = model.encode(["Why is the sky blue?", "Why is the grass green?"])

    assert str(rec.last.url) == "http://localhost:11434/api/embed"
    assert rec.json() == {
        "model": "all-minilm",
        "input": ["Why is the sky blue?", "Why is the grass green?"],
        "truncate": True,
    }
    assert result.vectors.dtype == np.float32
    np.testing.assert_array_equal(result.vectors, np.array(reply["embeddings"], dtype=np.float32))
    assert (result.usage.prompt_tokens, result.usage.total_tokens, result.usage.estimated) == (16, 16, False)


def test_embed_queries_and_batches() -> None:
    def reply(n: int) -> httpx.Response:
        return httpx.Response(200, json={"model": "m", "embeddings": [[float(i)] for i in range(n)]})

    rec = Recorder(reply(16), reply(4), reply(1))
    model = provider("embedding", "Ollama", rec, model="nomic-embed-text")

    documents = model.encode([f"doc {i}" for i in range(20)])
    query = model.encode_queries("a query")

    assert [len(rec.json(i)["input"]) for i in range(3)] == [16, 4, 1]
    assert rec.json(2) == {"model": "nomic-embed-text", "input": ["a query"], "truncate": True}
    assert documents.vectors.shape == (20, 1) and query.vectors.shape == (1, 1)
    assert query.usage.estimated and query.usage.prompt_tokens == estimate_tokens("a query")


def test_embed_count_mismatch_is_a_server_error() -> None:
    rec = Recorder(httpx.Response(200, json={"model": "m", "embeddings": [[1.0]]}))
    with pytest.raises(ProviderError) as info:
        provider("embedding", "Ollama", rec).encode(["a", "b"])
    assert classify(info.value) is ErrorCode.SERVER
