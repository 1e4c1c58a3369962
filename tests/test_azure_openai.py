"""Azure OpenAI: deployment URLs with api-version, the api-key header, Azure's answers and errors
(content filter, its 429 text), through ``httpx.MockTransport``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from providers.azure_openai import DEFAULT_API_VERSION
from providers.base import encode_credentials
from providers.errors import ErrorCode, ProviderError, classify
from providers.registry import get_provider_class
from tests.fakeprovider import parse_multipart
from tests.mock_http import Recorder, provider, sse

KEY = "0f3c9a1b2d4e5f60718293a4b5c6d7e8"  # Azure keys are 32 hex characters: no pattern scrubs them
ENDPOINT = "https://contoso.openai.azure.com"
CREDENTIALS = encode_credentials({"api_key": KEY, "api_version": "2024-10-21"})


def azure(model_type: str, recorder: Recorder, model: str = "gpt-4o-mini", **kwargs: Any) -> Any:
    kwargs.setdefault("api_key", CREDENTIALS)
    kwargs.setdefault("base_url", ENDPOINT + "/")
    return provider(model_type, "Azure-OpenAI", recorder, model=model, **kwargs)


def completion(message: dict[str, Any], finish_reason: str = "stop") -> dict[str, Any]:
    """A chat completion as Azure sends it: OpenAI's, plus the content-filter annotations."""
    safe = {"filtered": False, "severity": "safe"}
    categories = ("hate", "self_harm", "sexual", "violence")
    return {
        "id": "chatcmpl-9x8y7z",
        "object": "chat.completion",
        "created": 1727000000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_878413d04d",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": dict.fromkeys(categories, safe)}],
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "logprobs": None,
                "message": message,
                "content_filter_results": dict.fromkeys(categories, safe),
            }
        ],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
    }


def test_declares_the_credential_fields() -> None:
    cls = get_provider_class("chat", "Azure-OpenAI")
    fields = {f.name: f for f in cls.credential_fields}
    assert set(fields) == {"api_key", "api_version"}
    assert fields["api_key"].secret and fields["api_key"].required
    assert not fields["api_version"].secret and not fields["api_version"].required
    for model_type in ("chat", "embedding", "image2text", "speech2text", "tts"):
        assert get_provider_class(model_type, "Azure-OpenAI").factories == ("Azure-OpenAI",)


def test_chat_goes_to_the_deployment_with_api_version_and_api_key() -> None:
    recorder = Recorder(httpx.Response(200, json=completion({"role": "assistant", "content": "Bonjour !"})))
    model = azure("chat", recorder, api_key=encode_credentials({"api_key": KEY, "api_version": "2024-06-01"}))

    result = model.chat("Answer in French.", [{"role": "user", "content": "Hello"}], {"temperature": 0.2})

    request = recorder.last
    assert request.method == "POST"
    assert str(request.url) == f"{ENDPOINT}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-06-01"
    assert request.headers["api-key"] == KEY
    assert "authorization" not in request.headers
    assert recorder.json() == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}],
        "temperature": 0.2,
    }
    assert result.text == "Bonjour !"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (19, 10, 29)
    assert not result.usage.estimated and result.finish_reason == "stop"


def test_default_api_version_and_tool_calls() -> None:
    call = {"id": "call_abc", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Oslo"}'}}
    recorder = Recorder(
        httpx.Response(200, json=completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"))
    )
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    model = azure("chat", recorder, api_key=encode_credentials({"api_key": KEY}), model="my gpt")

    result = model.chat(None, [{"role": "user", "content": "Weather?"}], tools=[tool])

    assert DEFAULT_API_VERSION == "2024-10-21"
    assert str(recorder.last.url) == f"{ENDPOINT}/openai/deployments/my%20gpt/chat/completions?api-version=2024-10-21"
    assert recorder.json()["tools"] == [tool]
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [("call_abc", "lookup", {"city": "Oslo"})]
    assert result.finish_reason == "tool_calls"


def test_a_plain_key_is_the_api_key() -> None:
    recorder = Recorder(httpx.Response(200, json=completion({"role": "assistant", "content": "ok"})))
    model = azure("chat", recorder, api_key=KEY)

    model.chat(None, [{"role": "user", "content": "hi"}])

    assert recorder.last.headers["api-key"] == KEY
    assert str(recorder.last.url).endswith(f"?api-version={DEFAULT_API_VERSION}")


def test_chat_stream_skips_the_prompt_filter_chunk() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1727000000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "content_filter_results": {}}],
        }
        if usage:
            body["choices"], body["usage"] = [], usage
        return body

    prompt_filter = {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": []}
    body = sse(
        prompt_filter,
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        chunk({}, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
        "[DONE]",
    )
    recorder = Recorder(httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))
    model = azure("chat", recorder)

    deltas = list(model.chat_stream(None, [{"role": "user", "content": "hi"}]))

    assert str(recorder.last.url) == (
        f"{ENDPOINT}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
    )
    assert recorder.last.headers["api-key"] == KEY and "authorization" not in recorder.last.headers
    assert recorder.json()["stream"] is True
    assert [d.text for d in deltas[:-1]] == ["Hel", "lo"]
    assert deltas[-1].usage.total_tokens == 7 and deltas[-1].finish_reason == "stop"


def test_embeddings_in_batches_on_the_deployment() -> None:
    def answer(n: int) -> httpx.Response:
        data = [{"object": "embedding", "index": i, "embedding": [float(i), 0.5]} for i in range(n)]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": n, "total_tokens": n},
            },
        )

    recorder = Recorder(answer(64), answer(4))
    model = azure("embedding", recorder, model="text-embedding-3-small")

    result = model.encode([f"text {i}" for i in range(68)])

    assert str(recorder.requests[0].url) == (
        f"{ENDPOINT}/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
    )
    assert recorder.requests[0].headers["api-key"] == KEY
    assert [len(recorder.json(i)["input"]) for i in range(2)] == [64, 4]
    assert recorder.json(0)["encoding_format"] == "float"
    assert result.vectors.shape == (68, 2) and result.vectors.dtype == np.float32
    assert result.usage.total_tokens == 68


def test_image2text_on_a_vision_deployment() -> None:
    recorder = Recorder(httpx.Response(200, json=completion({"role": "assistant", "content": "A red square."})))
    model = azure("image2text", recorder, model="gpt-4o")

    result = model.describe_with_prompt(b"\x89PNG", "What is it?")

    assert str(recorder.last.url) == f"{ENDPOINT}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    content = recorder.json()["messages"][0]["content"]
    assert content[1]["image_url"]["url"] == "data:image/png;base64,iVBORw=="
    assert result.text == "A red square."


def test_transcription_multipart_on_the_deployment() -> None:
    recorder = Recorder(httpx.Response(200, json={"text": "Hello there."}))
    model = azure("speech2text", recorder, model="whisper-1")

    result = model.transcription(b"RIFFxxxxWAVE", "clip.wav")

    request = recorder.last
    assert str(request.url) == f"{ENDPOINT}/openai/deployments/whisper-1/audio/transcriptions?api-version=2024-10-21"
    assert request.headers["api-key"] == KEY
    parts = parse_multipart(request.headers["content-type"], request.content)
    assert parts["model"] == (None, b"whisper-1")
    assert parts["file"] == ("clip.wav", b"RIFFxxxxWAVE")
    assert result.text == "Hello there."


def test_tts_on_the_deployment() -> None:
    recorder = Recorder(httpx.Response(200, content=b"ID3audio", headers={"content-type": "audio/mpeg"}))
    model = azure(
        "tts", recorder, model="tts", api_key=encode_credentials({"api_key": KEY, "api_version": "2024-05-01-preview"})
    )

    result = model.tts("Hi", voice="nova")

    assert str(recorder.last.url) == f"{ENDPOINT}/openai/deployments/tts/audio/speech?api-version=2024-05-01-preview"
    assert recorder.last.headers["api-key"] == KEY
    assert recorder.json() == {"model": "tts", "input": "Hi", "voice": "nova", "response_format": "mp3"}
    assert result.audio == b"ID3audio" and result.content_type == "audio/mpeg"


def test_no_endpoint_is_an_invalid_request_without_a_call() -> None:
    recorder = Recorder()
    model = azure("chat", recorder, base_url=None)

    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "user", "content": "hi"}])

    assert classify(info.value) is ErrorCode.INVALID_REQUEST and recorder.requests == []


# --------------------------------------------------------------------------- errors

CONTENT_FILTER = {
    "error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
        "Please modify your prompt and retry. To learn more about our content filtering policies please read our "
        "documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {
                "hate": {"filtered": False, "severity": "safe"},
                "jailbreak": {"filtered": False, "detected": False},
                "self_harm": {"filtered": False, "severity": "safe"},
                "sexual": {"filtered": False, "severity": "safe"},
                "violence": {"filtered": True, "severity": "medium"},
            },
        },
    }
}
TOKEN_RATE_LIMIT = {
    "error": {
        "code": "429",
        "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have "
        "exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go "
        "here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
    }
}
BAD_KEY = {
    "error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
        "valid key for an active subscription and use a correct regional API endpoint for your resource.",
    }
}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, CONTENT_FILTER, ErrorCode.CONTENT_FILTER),
        (429, TOKEN_RATE_LIMIT, ErrorCode.RATE_LIMIT),
        (401, BAD_KEY, ErrorCode.AUTHENTICATION),
        (
            404,
            {
                "error": {
                    "code": "DeploymentNotFound",
                    "message": "The API deployment for this resource does not exist.",
                }
            },
            ErrorCode.MODEL,
        ),
        (500, {"error": {"code": "InternalServerError", "message": "The server had an error."}}, ErrorCode.SERVER),
    ],
)
def test_errors_are_classified(status: int, body: dict[str, Any], expected: ErrorCode) -> None:
    recorder = Recorder(httpx.Response(status, json=body))
    model = azure("chat", recorder)

    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "user", "content": "hi"}])

    assert info.value.status == status
    assert classify(info.value) is expected
    assert info.value.message == body["error"]["message"]


def test_content_filter_error_keeps_azure_code() -> None:
    recorder = Recorder(httpx.Response(400, json=CONTENT_FILTER))
    with pytest.raises(ProviderError) as info:
        azure("chat", recorder).chat(None, [{"role": "user", "content": "..."}])
    assert info.value.provider_code == "content_filter"
    assert not classify(info.value).retryable


def test_rate_limit_headers_and_retry_after_are_kept() -> None:
    headers = {
        "retry-after": "6",
        "retry-after-ms": "5400",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "1200",
        "apim-request-id": "6f2a",
    }
    recorder = Recorder(httpx.Response(429, json=TOKEN_RATE_LIMIT, headers=headers))
    model = azure("embedding", recorder, model="text-embedding-3-small")

    with pytest.raises(ProviderError) as info:
        model.encode(["a"])

    assert info.value.retry_after == pytest.approx(5.4)
    assert info.value.rate_limits == {
        "retry-after": "6",
        "retry-after-ms": "5400",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "1200",
    }
    assert model.rate_limits["x-ratelimit-remaining-tokens"] == "1200"


def test_an_echoed_key_is_scrubbed() -> None:
    body = {"error": {"code": "401", "message": f"Access denied: key {KEY} is not valid for this resource."}}
    recorder = Recorder(httpx.Response(401, json=body))

    with pytest.raises(ProviderError) as info:
        azure("chat", recorder).chat(None, [{"role": "user", "content": "hi"}])

    assert KEY not in str(info.value) and "***" in info.value.message


def test_an_echoed_key_in_a_stream_error_is_scrubbed() -> None:
    body = sse({"error": {"code": "server_error", "message": f"upstream rejected {KEY}"}})
    recorder = Recorder(httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))

    with pytest.raises(ProviderError) as info:
        list(azure("chat", recorder).chat_stream(None, [{"role": "user", "content": "hi"}]))

    assert KEY not in str(info.value)
    assert classify(info.value) is ErrorCode.SERVER


def test_secrets_are_the_key_not_the_version() -> None:
    model = azure("chat", Recorder())
    assert KEY in model.secrets
    assert "2024-10-21" not in model.secrets
    assert json.loads(CREDENTIALS)["api_key"] == KEY
