"""The OpenAI-compatible family: exact requests and OpenAI-shaped answers through
``httpx.MockTransport``, then the real thing over loopback against the fake provider."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from providers.base import BaseModel, estimate_tokens
from providers.errors import ErrorCode, ProviderError, classify
from providers.openai_compat import PROVIDER_CLASSES
from providers.openai_factories import FACTORIES
from tests.fakeprovider import FakeProvider, fake_audio, fake_tokens, fake_vector, parse_multipart
from tests.mock_http import Recorder, sse

KEY = "sk-proj-Abc123Def456Ghi789Jkl"
Handler = Callable[[httpx.Request], httpx.Response]


def make(model_type: str, factory: str, recorder: Handler, **kwargs: Any) -> Any:
    cls = PROVIDER_CLASSES[(model_type, factory)]
    return cls(
        kwargs.pop("model", "test-model"), client=httpx.Client(transport=httpx.MockTransport(recorder)), **kwargs
    )


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


# --------------------------------------------------------------------------- the factory table


def test_factory_table_declares_the_expected_types() -> None:
    served = {f.name: set(f.model_types) for f in FACTORIES}
    assert len(served) == len(FACTORIES)  # one row per factory
    assert {name for name, types in served.items() if "rerank" in types} == {
        "VLLM",
        "Xinference",
        "OpenAI-API-Compatible",
        "LocalAI",
        "New API",
        "GPUStack",
        "SILICONFLOW",
        "siliconflow_intl",
        "TogetherAI",
        "GreenPT",
        "NovitaAI",
        "GiteeAI",
        "302.AI",
        "Jiekou.AI",
    }
    assert {name for name, types in served.items() if "tts" in types} == {
        "OpenAI",
        "OpenAI-API-Compatible",
        "LocalAI",
        "Xinference",
        "New API",
        "GPUStack",
        "SILICONFLOW",
        "siliconflow_intl",
        "StepFun",
        "DeepInfra",
        "CometAPI",
        "DeerAPI",
    }
    assert served["Tongyi-Qianwen"] == {"chat", "embedding", "image2text"}  # its rerank is native DashScope
    assert served["XunFei Spark"] == {"chat"}
    assert served["Perplexity"] == {"embedding"}  # the only Perplexity models the catalog lists
    assert all("chat" in types for name, types in served.items() if name != "Perplexity")
    # Multi-part credentials and other wire formats belong to other families.
    others = {"Azure-OpenAI", "VolcEngine", "Tencent Hunyuan", "BaiduYiyan", "Anthropic", "Gemini", "Ollama"}
    others |= {"Cohere", "Jina", "Voyage AI", "HuggingFace", "Bedrock", "Replicate"}
    assert not served.keys() & others


def test_each_registered_class_carries_its_factory() -> None:
    for (model_type, factory), cls in PROVIDER_CLASSES.items():
        assert issubclass(cls, BaseModel)
        assert cls.model_type == model_type
        assert cls.factories == (factory,)
    assert PROVIDER_CLASSES[("chat", "OpenAI")].default_base_url == "https://api.openai.com/v1"
    assert PROVIDER_CLASSES[("chat", "DeepSeek")].default_base_url == "https://api.deepseek.com/v1"
    assert PROVIDER_CLASSES[("chat", "OpenAI")].needs_key
    assert PROVIDER_CLASSES[("embedding", "VLLM")].default_base_url == ""
    assert not PROVIDER_CLASSES[("embedding", "VLLM")].needs_key


# --------------------------------------------------------------------------- embeddings


def test_embedding_request_and_response() -> None:
    recorder = Recorder(
        httpx.Response(
            200,
            json={
                "object": "list",
                "data": [  # out of order on purpose: the index decides
                    {"object": "embedding", "embedding": [0.0, 1.0, 0.5], "index": 1},
                    {"object": "embedding", "embedding": [0.0023064255, -0.009327292, 0.25], "index": 0},
                ],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 8, "total_tokens": 8},
            },
        )
    )
    model = make("embedding", "OpenAI", recorder, model="text-embedding-3-small", api_key=KEY)

    result = model.encode(["first text", "second"])

    assert str(recorder.last.url) == "https://api.openai.com/v1/embeddings"
    assert recorder.last.method == "POST"
    assert recorder.last.headers["authorization"] == f"Bearer {KEY}"
    assert recorder.json() == {
        "model": "text-embedding-3-small",
        "input": ["first text", "second"],
        "encoding_format": "float",
    }
    assert result.vectors.dtype == np.float32
    np.testing.assert_array_equal(result.vectors, np.array([[0.0023064255, -0.009327292, 0.25], [0, 1, 0.5]], "f4"))
    assert result.usage.prompt_tokens == 8 and result.usage.total_tokens == 8 and not result.usage.estimated


def test_embedding_usage_is_estimated_when_missing_and_no_key_means_no_auth_header() -> None:
    body = {"object": "list", "data": [{"object": "embedding", "embedding": [1.0, 0.0], "index": 0}], "model": "m"}
    recorder = Recorder(httpx.Response(200, json=body))
    model = make("embedding", "VLLM", recorder, base_url="http://gpu-box:8000/v1/")

    result = model.encode(["some words here"])

    assert str(recorder.last.url) == "http://gpu-box:8000/v1/embeddings"
    assert "authorization" not in recorder.last.headers
    assert result.usage.estimated
    assert result.usage.prompt_tokens == result.usage.total_tokens == estimate_tokens("some words here")


def test_embedding_batches_of_64() -> None:
    def answer(n: int) -> httpx.Response:
        data = [{"object": "embedding", "embedding": [float(i)], "index": i} for i in range(n)]
        return httpx.Response(200, json={"data": data, "usage": {"prompt_tokens": n, "total_tokens": n}})

    recorder = Recorder(answer(64), answer(64), answer(2))
    model = make("embedding", "LocalAI", recorder, base_url="http://localai:8080/v1")

    result = model.encode([f"t{i}" for i in range(130)])

    assert [len(recorder.json(i)["input"]) for i in range(3)] == [64, 64, 2]
    assert result.vectors.shape == (130, 1) and result.usage.total_tokens == 130


def test_embedding_count_mismatch_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, json={"data": [{"embedding": [1.0], "index": 0}]}))
    model = make("embedding", "OpenAI", recorder, api_key=KEY)

    with pytest.raises(ProviderError) as info:
        model.encode(["a", "b"])
    assert classify(info.value) is ErrorCode.SERVER


def test_missing_base_url_is_an_invalid_request_without_a_call() -> None:
    recorder = Recorder()
    model = make("embedding", "VLLM", recorder)

    with pytest.raises(ProviderError) as info:
        model.encode(["a"])

    assert classify(info.value) is ErrorCode.INVALID_REQUEST
    assert "VLLM" in str(info.value) and "base URL" in str(info.value)
    assert recorder.requests == []


def test_unexpected_shape_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, json={"object": "list"}))
    model = make("embedding", "OpenAI", recorder, api_key=KEY)

    with pytest.raises(ProviderError) as info:
        model.encode(["a"])
    assert classify(info.value) is ErrorCode.SERVER


# --------------------------------------------------------------------------- chat

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


def test_chat_request_and_tool_call_response() -> None:
    recorder = Recorder(
        httpx.Response(
            200,
            json={
                "id": "chatcmpl-abc123",
                "object": "chat.completion",
                "created": 1699896916,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": "call_abc123",
                                    "type": "function",
                                    "function": {
                                        "name": "get_current_weather",
                                        "arguments": '{\n"location": "Boston, MA"\n}',
                                    },
                                },
                                {  # a model that forgot to close its JSON: repaired
                                    "id": "call_def456",
                                    "type": "function",
                                    "function": {"name": "get_current_weather", "arguments": '{"location": "Paris'},
                                },
                            ],
                        },
                        "logprobs": None,
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99},
            },
        )
    )
    model = make("chat", "DeepSeek", recorder, model="deepseek-chat", api_key=KEY)
    messages = [{"role": "user", "content": "What's the weather like in Boston today?"}]

    result = model.chat("You are terse.", messages, {"temperature": 0.2, "max_tokens": 50, "top_k": 3}, [WEATHER_TOOL])

    assert str(recorder.last.url) == "https://api.deepseek.com/v1/chat/completions"
    assert recorder.last.headers["authorization"] == f"Bearer {KEY}"
    assert recorder.json() == {
        "model": "deepseek-chat",
        "messages": [{"role": "system", "content": "You are terse."}, *messages],
        "temperature": 0.2,
        "max_tokens": 50,
        "tools": [WEATHER_TOOL],
    }
    assert result.text == ""
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_abc123", "get_current_weather", {"location": "Boston, MA"}),
        ("call_def456", "get_current_weather", {"location": "Paris"}),
    ]
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (82, 17, 99)


def test_chat_text_answer_without_usage_is_estimated() -> None:
    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there!"}, "finish_reason": "stop"}]
    }
    recorder = Recorder(httpx.Response(200, json=answer))
    model = make("chat", "LM-Studio", recorder, base_url="http://localhost:1234/v1")

    result = model.chat(None, [{"role": "user", "content": "Hello"}])

    assert recorder.json()["messages"] == [{"role": "user", "content": "Hello"}]
    assert result.text == "Hi there!" and result.finish_reason == "stop" and result.tool_calls == []
    assert result.usage.estimated
    assert result.usage.prompt_tokens == estimate_tokens("Hello")
    assert result.usage.completion_tokens == estimate_tokens("Hi there!")


def test_chat_stream_assembles_text_tool_calls_and_usage() -> None:
    stream = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_current_weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"loca'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'tion": "Boston"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
        {**chunk({}), "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}},
        "[DONE]",
    )
    recorder = Recorder(httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream))
    model = make("chat", "OpenAI", recorder, model="gpt-4o-mini", api_key=KEY)

    deltas = list(model.chat_stream("sys", [{"role": "user", "content": "weather?"}], {"seed": 7}, [WEATHER_TOOL]))

    body = recorder.json()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["seed"] == 7 and body["tools"] == [WEATHER_TOOL]
    assert [d.text for d in deltas[:-1]] == ["Let me ", "check."]
    last = deltas[-1]
    assert [(c.id, c.name, c.arguments) for c in last.tool_calls] == [
        ("call_1", "get_current_weather", {"location": "Boston"}),
        ("call_2", "get_time", {}),
    ]
    assert last.finish_reason == "tool_calls"
    assert last.usage is not None and last.usage.total_tokens == 29 and not last.usage.estimated


def test_chat_stream_tool_fragments_without_index() -> None:
    def call(call_id: str | None, arguments: str, name: str | None = None) -> dict[str, Any]:
        function = {"arguments": arguments} | ({"name": name} if name else {})
        return chunk({"tool_calls": [{"function": function} | ({"id": call_id} if call_id else {})]})

    stream = sse(call("a", '{"x":', "f"), call(None, " 1}"), call("b", "{}", "g"), chunk({}, "tool_calls"), "[DONE]")
    model = make("chat", "LocalAI", Recorder(httpx.Response(200, content=stream)), base_url="http://localai:8080/v1")

    last = list(model.chat_stream(None, [{"role": "user", "content": "Hi"}]))[-1]

    assert [(c.id, c.name, c.arguments) for c in last.tool_calls] == [("a", "f", {"x": 1}), ("b", "g", {})]


def test_chat_stream_without_usage_chunk_is_estimated() -> None:
    stream = sse(chunk({"content": "Hello"}), chunk({}, "stop"), "[DONE]")
    recorder = Recorder(httpx.Response(200, content=stream))
    model = make("chat", "VLLM", recorder, base_url="http://vllm:8000/v1")

    deltas = list(model.chat_stream(None, [{"role": "user", "content": "Hi"}]))

    assert deltas[-1].usage is not None and deltas[-1].usage.estimated
    assert deltas[-1].usage.completion_tokens == estimate_tokens("Hello")


def test_error_event_inside_a_stream_is_a_provider_error() -> None:
    error = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    recorder = Recorder(httpx.Response(200, content=sse(chunk({"content": "Hel"}), error)))
    model = make("chat", "OpenAI", recorder, api_key=KEY)

    with pytest.raises(ProviderError) as info:
        list(model.chat_stream(None, [{"role": "user", "content": "Hi"}]))
    assert classify(info.value) is ErrorCode.RATE_LIMIT


def test_chat_http_error_before_the_stream() -> None:
    body = {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}}
    recorder = Recorder(httpx.Response(500, json=body))
    model = make("chat", "OpenAI", recorder, api_key=KEY)

    with pytest.raises(ProviderError) as info:
        list(model.chat_stream(None, [{"role": "user", "content": "Hi"}]))
    assert info.value.status == 500 and classify(info.value) is ErrorCode.SERVER


# --------------------------------------------------------------------------- image2text


def test_image2text_sends_a_data_url() -> None:
    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "A cat."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 3, "total_tokens": 123},
    }
    recorder = Recorder(httpx.Response(200, json=answer), httpx.Response(200, json=answer))
    model = make("image2text", "OpenAI", recorder, model="gpt-4o", api_key=KEY)
    image = b"\x89PNG\r\n\x1a\nfake-image"

    result = model.describe(image)
    model.describe_with_prompt(image, "What animal?", "image/jpeg")

    assert str(recorder.requests[0].url) == "https://api.openai.com/v1/chat/completions"
    encoded = base64.b64encode(image).decode()
    assert recorder.json(0) == {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this image in detail."},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}},
                ],
            }
        ],
    }
    content = recorder.json(1)["messages"][0]["content"]
    assert content[0]["text"] == "What animal?"
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert result.text == "A cat." and result.usage.total_tokens == 123


# --------------------------------------------------------------------------- audio


def test_speech2text_multipart() -> None:
    answer = {
        "text": "Imagine the wildest idea that you've ever had.",
        "usage": {
            "type": "tokens",
            "input_tokens": 14,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
            "output_tokens": 45,
            "total_tokens": 59,
        },
    }
    recorder = Recorder(httpx.Response(200, json=answer))
    model = make("speech2text", "OpenAI", recorder, model="gpt-4o-transcribe", api_key=KEY)

    result = model.transcription(b"ID3-audio-bytes", "speech.mp3")

    request = recorder.last
    assert str(request.url) == "https://api.openai.com/v1/audio/transcriptions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    fields = parse_multipart(request.headers["content-type"], request.content)
    assert fields["file"] == ("speech.mp3", b"ID3-audio-bytes")
    assert fields["model"][1] == b"gpt-4o-transcribe"
    assert b"Content-Type: audio/mpeg" in request.content
    assert result.text == answer["text"]
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (14, 45, 59)


def test_speech2text_duration_usage_is_estimated() -> None:
    recorder = Recorder(httpx.Response(200, json={"text": "Hello world", "usage": {"type": "duration", "seconds": 3}}))
    model = make("speech2text", "Xinference", recorder, model="whisper-1", base_url="http://xinf:9997/v1")

    result = model.transcription(b"RIFF....WAVE")

    assert str(recorder.last.url) == "http://xinf:9997/v1/audio/transcriptions"
    assert result.usage.estimated and result.usage.total_tokens == estimate_tokens("Hello world")


def test_tts_request_and_bytes() -> None:
    recorder = Recorder(httpx.Response(200, headers={"content-type": "audio/mpeg"}, content=b"ID3\x04mp3-bytes"))
    model = make("tts", "OpenAI", recorder, model="gpt-4o-mini-tts", api_key=KEY)

    result = model.tts("Today is a wonderful day.", voice="coral")

    assert str(recorder.last.url) == "https://api.openai.com/v1/audio/speech"
    assert recorder.json() == {
        "model": "gpt-4o-mini-tts",
        "input": "Today is a wonderful day.",
        "voice": "coral",
        "response_format": "mp3",
    }
    assert result.audio == b"ID3\x04mp3-bytes" and result.content_type == "audio/mpeg"
    assert result.usage.estimated and result.usage.prompt_tokens == estimate_tokens("Today is a wonderful day.")


def test_tts_default_voice_and_format() -> None:
    recorder = Recorder(httpx.Response(200, content=b"RIFF"))
    model = make("tts", "LocalAI", recorder, base_url="http://localai:8080/v1")

    result = model.tts("hi", audio_format="wav")

    assert recorder.json()["voice"] == "alloy" and recorder.json()["response_format"] == "wav"
    assert result.content_type == "audio/wav"


# --------------------------------------------------------------------------- rerank


def test_rerank_request_and_scores_in_document_order() -> None:
    answer = {
        "id": "rerank-abc",
        "model": "BAAI/bge-reranker-v2-m3",
        "usage": {"total_tokens": 56},
        "results": [  # best first, as servers send them
            {"index": 2, "document": {"text": "c"}, "relevance_score": 0.98},
            {"index": 0, "document": {"text": "a"}, "relevance_score": 0.5},
            {"index": 1, "document": {"text": "b"}, "relevance_score": 0.01},
        ],
    }
    recorder = Recorder(httpx.Response(200, json=answer))
    model = make("rerank", "VLLM", recorder, model="BAAI/bge-reranker-v2-m3", base_url="http://vllm:8000/v1")

    result = model.similarity("what is panda?", ["a", "b", "c"])

    assert str(recorder.last.url) == "http://vllm:8000/v1/rerank"
    assert recorder.json() == {
        "model": "BAAI/bge-reranker-v2-m3",
        "query": "what is panda?",
        "documents": ["a", "b", "c"],
        "top_n": 3,
    }
    np.testing.assert_array_equal(result.scores, np.array([0.5, 0.01, 0.98], dtype=np.float32))
    assert result.usage.total_tokens == 56 and not result.usage.estimated


def test_rerank_usage_from_xinference_meta_or_estimated() -> None:
    results = [{"index": 0, "relevance_score": 0.7, "document": None}]
    xinference = {
        "id": "x",
        "results": results,
        "meta": {
            "api_version": None,
            "billed_units": None,
            "tokens": {"input_tokens": 12, "output_tokens": 0},
            "warnings": None,
        },
    }
    recorder = Recorder(httpx.Response(200, json=xinference), httpx.Response(200, json={"results": results}))
    model = make("rerank", "Xinference", recorder, base_url="http://xinf:9997/v1")

    reported = model.similarity("query", ["doc"])
    estimated = model.similarity("query", ["doc"])

    assert reported.usage.total_tokens == 12 and not reported.usage.estimated
    assert estimated.usage.estimated
    assert estimated.usage.total_tokens == estimate_tokens("query") + estimate_tokens("doc")


def test_rerank_index_out_of_range_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, json={"results": [{"index": 5, "relevance_score": 0.1}]}))
    model = make("rerank", "LocalAI", recorder, base_url="http://localai:8080/v1")

    with pytest.raises(ProviderError) as info:
        model.similarity("q", ["a"])
    assert classify(info.value) is ErrorCode.SERVER


# --------------------------------------------------------------------------- over loopback, against the fake


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(keys={KEY}, dim=8) as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


def live(model_type: str, factory: str, fake: FakeProvider, client: httpx.Client, key: str | None = KEY) -> Any:
    """A provider instance pointed at the fake."""
    cls = PROVIDER_CLASSES[(model_type, factory)]
    return cls(f"fake-{model_type}", api_key=key, base_url=fake.base_url, client=client)


def embedder(fake: FakeProvider, client: httpx.Client, key: str | None = KEY) -> Any:
    return live("embedding", "OpenAI-API-Compatible", fake, client, key)


def test_embedding_round_trip(fake: FakeProvider, client: httpx.Client) -> None:
    texts = [f"text number {i}" for i in range(70)]

    result = embedder(fake, client).encode(texts)

    assert result.vectors.shape == (70, 8)
    for text, vector in zip(texts, result.vectors, strict=True):
        np.testing.assert_array_equal(vector, fake_vector(text, 8))
    assert result.usage.prompt_tokens == fake_tokens(texts) and not result.usage.estimated
    assert [c.n_inputs for c in fake.calls] == [64, 6]
    assert all(c.key == KEY and c.status == 200 for c in fake.calls)


def test_wrong_key_is_authentication(fake: FakeProvider, client: httpx.Client) -> None:
    with pytest.raises(ProviderError) as info:
        embedder(fake, client, key="sk-wrong-key-0123456789").encode(["a"])

    assert info.value.status == 401 and info.value.provider_code == "invalid_api_key"
    assert classify(info.value) is ErrorCode.AUTHENTICATION
    assert "sk-wrong-key-0123456789" not in str(info.value)


def test_missing_key_is_authentication(fake: FakeProvider, client: httpx.Client) -> None:
    with pytest.raises(ProviderError) as info:
        embedder(fake, client, key=None).encode(["a"])
    assert info.value.status == 401 and classify(info.value) is ErrorCode.AUTHENTICATION


def test_rate_limit_then_retry_after_the_wait(fake: FakeProvider, client: httpx.Client) -> None:
    fake.rate_limit(retry_after=0.4, path="embeddings")
    model = embedder(fake, client)

    with pytest.raises(ProviderError) as info:
        model.encode(["a"])
    error = info.value
    assert error.status == 429 and error.provider_code == "rate_limit_exceeded"
    assert error.retry_after == pytest.approx(0.4)
    assert classify(error) is ErrorCode.RATE_LIMIT and classify(error).retryable

    time.sleep(0.4)
    assert model.encode(["a"]).vectors.shape == (1, 8)
    first, second = fake.calls
    assert (first.status, first.behaviour, second.status) == (429, "rate_limit", 200)
    assert second.time - first.time >= 0.4


def test_retry_after_ms_header(fake: FakeProvider, client: httpx.Client) -> None:
    fake.rate_limit(retry_after=None, retry_after_ms=644)
    with pytest.raises(ProviderError) as info:
        embedder(fake, client).encode(["a"])
    assert info.value.retry_after == pytest.approx(0.644)


def test_scripted_path_leaves_other_routes_alone(fake: FakeProvider, client: httpx.Client) -> None:
    fake.server_error(503, path="rerank")
    embedder(fake, client).encode(["a"])
    assert fake.count("embeddings") == 1 and fake.count("/v1/rerank") == 0


def test_quota_is_not_retryable(fake: FakeProvider, client: httpx.Client) -> None:
    fake.quota()
    with pytest.raises(ProviderError) as info:
        embedder(fake, client).encode(["a"])
    assert info.value.status == 429 and info.value.provider_code == "insufficient_quota"
    assert classify(info.value) is ErrorCode.QUOTA and not classify(info.value).retryable


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(fake: FakeProvider, client: httpx.Client, status: int) -> None:
    fake.server_error(status, times=2)
    model = embedder(fake, client)
    for _ in range(2):
        with pytest.raises(ProviderError) as info:
            model.encode(["a"])
        assert info.value.status == status and classify(info.value) is ErrorCode.SERVER
    assert model.encode(["a"]).vectors.shape == (1, 8)


def test_malformed_json_is_server(fake: FakeProvider, client: httpx.Client) -> None:
    fake.malformed_json()
    with pytest.raises(ProviderError) as info:
        embedder(fake, client).encode(["a"])
    assert classify(info.value) is ErrorCode.SERVER


def test_hang_times_out(fake: FakeProvider) -> None:
    fake.hang(3.0)
    with httpx.Client(timeout=0.3) as short, pytest.raises(httpx.TimeoutException) as info:
        embedder(fake, short).encode(["a"])
    assert classify(info.value) is ErrorCode.TIMEOUT


def test_connection_refused_is_connection(client: httpx.Client) -> None:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model: Any = PROVIDER_CLASSES[("embedding", "VLLM")]("m", base_url=f"http://127.0.0.1:{port}/v1", client=client)
    with pytest.raises(httpx.ConnectError) as info:
        model.encode(["a"])
    assert classify(info.value) is ErrorCode.CONNECTION


def test_key_echoed_in_an_error_is_scrubbed(fake: FakeProvider, client: httpx.Client) -> None:
    fake.echo_key_in_error()
    with pytest.raises(ProviderError) as info:
        embedder(fake, client).encode(["a"])
    assert KEY not in info.value.message and KEY not in str(info.value)
    assert "***" in info.value.message
    assert classify(info.value) is ErrorCode.INVALID_REQUEST


def test_chat_stream_over_loopback_with_a_tool_call(fake: FakeProvider, client: httpx.Client) -> None:
    model = live("chat", "OpenAI", fake, client)

    text = "".join(d.text for d in model.chat_stream(None, [{"role": "user", "content": "hello there"}]))
    deltas = list(model.chat_stream(None, [{"role": "user", "content": "find cats"}], None, [WEATHER_TOOL]))

    assert text == "You said: hello there"
    last = deltas[-1]
    assert [(c.name, c.arguments) for c in last.tool_calls] == [("get_current_weather", {"query": "find cats"})]
    assert last.finish_reason == "tool_calls" and last.usage is not None and not last.usage.estimated


def test_audio_round_trip_over_loopback(fake: FakeProvider, client: httpx.Client) -> None:
    speech = live("tts", "OpenAI-API-Compatible", fake, client).tts("read me aloud")
    text = live("speech2text", "LocalAI", fake, client).transcription(speech.audio, "speech.mp3")
    assert speech.audio == fake_audio("read me aloud") and speech.content_type == "audio/mpeg"
    assert text.text == "read me aloud" and not text.usage.estimated
    assert [(c.route, c.model) for c in fake.calls] == [
        ("audio/speech", "fake-tts"),
        ("audio/transcriptions", "fake-speech2text"),
    ]


# --------------------------------------------------------------------------- refusals


def test_a_refusal_is_the_answer_with_finish_reason_refusal() -> None:
    """OpenAI refuses in ``message.refusal`` (``content`` null, finish reason ``stop``): that is a
    refusal, not an empty success. Usage as reported."""
    body = {
        "id": "chatcmpl-9nYAG9LPNonX8DAyrkwYfemr3C8HC",
        "object": "chat.completion",
        "created": 1721596428,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": "I'm sorry, I can't assist with that request.",
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 81, "completion_tokens": 11, "total_tokens": 92},
        "system_fingerprint": "fp_3407719c7f",
    }
    model = make("chat", "OpenAI", Recorder(httpx.Response(200, json=body)), api_key=KEY)
    result = model.chat(None, [{"role": "user", "content": "how do I pick a lock"}])
    assert (result.text, result.finish_reason) == ("", "refusal")
    assert result.refusal == "I'm sorry, I can't assist with that request."
    assert (result.usage.total_tokens, result.usage.estimated) == (92, False)


def test_a_streamed_refusal_is_joined_from_its_delta_pieces() -> None:
    """Streamed, the refusal comes as ``delta.refusal`` pieces (the first one empty), then finish
    reason ``stop`` and the usage chunk: no text deltas, one refusal on the last delta."""
    events = [
        chunk({"role": "assistant", "content": None, "refusal": ""}),
        *(chunk({"refusal": piece}) for piece in ["I'm", " sorry", ",", " I", " can't", " help", "."]),
        chunk({}, "stop"),
        {**chunk({}), "choices": [], "usage": {"prompt_tokens": 79, "completion_tokens": 11, "total_tokens": 90}},
        "[DONE]",
    ]
    model = make("chat", "OpenAI", Recorder(httpx.Response(200, content=sse(*events))), api_key=KEY)
    deltas = list(model.chat_stream(None, [{"role": "user", "content": "how do I pick a lock"}]))
    assert len(deltas) == 1
    (last,) = deltas
    assert (last.text, last.finish_reason, last.refusal) == ("", "refusal", "I'm sorry, I can't help.")
    assert last.usage is not None and last.usage.total_tokens == 90
