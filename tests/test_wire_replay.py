"""Replay of real recorded traffic: ``../shared/wire_fixtures`` (see its SOURCES.md), bodies that
other projects recorded from the live APIs or that the real servers emitted. They are not copied
into this repository; this module reads them where the folder exists (beside the repository, as
in CI, or at /work/shared) and is skipped with the reason otherwise.

Each body goes through the provider's real reading path over ``httpx.MockTransport``: JSON bodies
as they are, SSE files as they are, vercel/ai's ``.chunks.txt`` (one JSON payload a line)
re-framed as the provider's wire format -- ``data:`` lines (with ``event:`` lines for Anthropic)
or AWS event-stream frames for Bedrock -- as vercel/ai's own tests do.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from providers.base import ChatDelta, ChatResult, encode_credentials
from providers.errors import ErrorCode, ProviderError, classify
from tests.mock_http import Recorder, provider

_CANDIDATES = (
    Path(__file__).resolve().parents[1].parent / "shared" / "wire_fixtures",
    Path("/work/shared/wire_fixtures"),
)
FIXTURES = next((p for p in _CANDIDATES if p.is_dir()), None)
pytestmark = pytest.mark.skipif(FIXTURES is None, reason="../shared/wire_fixtures is not present beside the repository")

KEY = "sk-replay-0123456789abcdef"
USER = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}


def fixture(name: str) -> bytes:
    assert FIXTURES is not None
    return (FIXTURES / name).read_bytes()


def payloads(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in fixture(name).decode().splitlines() if line.strip()]


def sse_body(name: str, *, named: bool = False) -> bytes:
    """A ``.chunks.txt`` as server-sent events (with ``event: {type}`` lines when ``named``)."""
    events = []
    for payload in payloads(name):
        head = f"event: {payload['type']}\n" if named else ""
        events.append(f"{head}data: {json.dumps(payload)}\n\n")
    return "".join(events).encode()


def eventstream_body(name: str) -> bytes:
    """A Bedrock ``.chunks.txt`` (``{eventName: payload}`` a line) as AWS event-stream frames."""
    out = b""
    for line in payloads(name):
        ((kind, data),) = line.items()
        headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
        raw = b"".join(
            bytes([len(k)]) + k.encode() + b"\x07" + len(v).to_bytes(2, "big") + v.encode() for k, v in headers.items()
        )
        body = json.dumps(data).encode()
        prelude = struct.pack(">II", 12 + len(raw) + len(body) + 4, len(raw))
        message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + body
        out += message + struct.pack(">I", zlib.crc32(message))
    return out


def replay(body: bytes, content_type: str = "application/json") -> Recorder:
    return Recorder(httpx.Response(200, headers={"content-type": content_type}, content=body))


def streamed(model: Any, tools: list[dict[str, Any]] | None = None) -> tuple[str, ChatDelta]:
    deltas = list(model.chat_stream(None, USER, None, tools))
    return "".join(d.text for d in deltas), deltas[-1]


def bedrock(model_type: str, recorder: Recorder, model: str) -> Any:
    key = encode_credentials(
        {
            "access_key": "AKIAIOSFODNN7EXAMPLE",
            "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "region": "us-east-1",
        }
    )
    return provider(model_type, "Bedrock", recorder, model=model, api_key=key)


# --------------------------------------------------------------------------- OpenAI and its family


def test_openai_stream_text() -> None:
    text, last = streamed(provider("chat", "OpenAI", replay(fixture("openai_stream_text.sse")), api_key=KEY))
    assert text and last.finish_reason == "stop" and last.refusal is None and last.usage is not None


def test_openai_stream_parallel_tool_calls() -> None:
    model = provider("chat", "OpenAI", replay(fixture("openai_stream_parallel_tools.sse")), api_key=KEY)
    _, last = streamed(model, [WEATHER])
    assert len(last.tool_calls) >= 2 and all(c.id and c.name and c.arguments for c in last.tool_calls)
    assert last.finish_reason == "tool_calls"


def test_openai_stream_strict_tool() -> None:
    _, last = streamed(
        provider("chat", "OpenAI", replay(fixture("openai_stream_strict_tool.sse")), api_key=KEY), [WEATHER]
    )
    (call,) = last.tool_calls
    assert call.name and isinstance(call.arguments, dict) and call.arguments


def test_openai_stream_refusal_is_a_refusal() -> None:
    text, last = streamed(provider("chat", "OpenAI", replay(fixture("openai_stream_refusal.sse")), api_key=KEY))
    assert text == "" and last.finish_reason == "refusal"
    assert last.refusal and last.refusal.startswith("I'm sorry")
    assert last.usage is not None and (last.usage.total_tokens, last.usage.estimated) == (90, False)


def test_openai_embedding() -> None:
    body = json.loads(fixture("vercel-openai-embedding.json"))
    n = len(body["data"])
    result = provider("embedding", "OpenAI", replay(fixture("vercel-openai-embedding.json")), api_key=KEY).encode(
        [f"text {i}" for i in range(n)]
    )
    assert result.vectors.shape[0] == n and not result.usage.estimated


def test_openai_legacy_parameter_error_is_an_invalid_request() -> None:
    recorder = Recorder(httpx.Response(400, content=fixture("vercel-reasoning-model-legacy-parameter-error.json")))
    with pytest.raises(ProviderError) as info:
        provider("chat", "OpenAI", recorder, api_key=KEY).chat(None, USER)
    assert info.value.provider_code == "unsupported_parameter" and classify(info.value) is ErrorCode.INVALID_REQUEST


def test_azure_model_router_stream() -> None:
    model = provider(
        "chat",
        "Azure-OpenAI",
        replay(sse_body("vercel-azure-model-router.1.chunks.txt")),
        model="model-router",
        api_key=KEY,
        base_url="https://example.openai.azure.com",
    )
    text, last = streamed(model)
    assert text and last.finish_reason == "stop"


@pytest.mark.parametrize(
    ("name", "factory"),
    [
        ("vercel-mistral-tool-call.chunks.txt", "Mistral"),
        ("vercel-xai-tool-call.chunks.txt", "xAI"),
        ("vercel-deepseek-tool-call.chunks.txt", "DeepSeek"),
    ],
)
def test_tool_call_streams_of_openai_compatible_servers(name: str, factory: str) -> None:
    _, last = streamed(provider("chat", factory, replay(sse_body(name)), api_key=KEY), [WEATHER])
    assert last.tool_calls and all(c.name for c in last.tool_calls)
    assert last.finish_reason == "tool_calls"


def test_togetherai_rerank() -> None:
    body = json.loads(fixture("vercel-togetherai-reranking.1.json"))
    n = 1 + max(r["index"] for r in body["results"])
    result = provider(
        "rerank", "TogetherAI", replay(fixture("vercel-togetherai-reranking.1.json")), api_key=KEY
    ).similarity("q", [f"d{i}" for i in range(n)])
    for r in body["results"]:
        assert result.scores[r["index"]] == pytest.approx(r["relevance_score"], rel=1e-6)
    assert not result.usage.estimated


# --------------------------------------------------------------------------- Anthropic


@pytest.mark.parametrize(
    ("name", "finish"),
    [
        ("anthropic_stream_basic.sse", "stop"),
        ("anthropic_stream_tool_use.sse", "tool_calls"),
        ("anthropic_stream_max_tokens_partial_tool.sse", "length"),
        ("anthropic_stream_refusal.sse", "refusal"),
    ],
)
def test_anthropic_sdk_streams(name: str, finish: str) -> None:
    _, last = streamed(provider("chat", "Anthropic", replay(fixture(name)), api_key=KEY))
    assert last.finish_reason == finish
    assert (last.refusal is not None) == (finish == "refusal")
    assert last.usage is not None and not last.usage.estimated


def test_anthropic_refusal_body() -> None:
    result = provider("chat", "Anthropic", replay(fixture("vercel-anthropic-refusal.json")), api_key=KEY).chat(
        None, USER
    )
    assert result.finish_reason == "refusal" and "Usage Policy" in (result.refusal or "")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (18, 5)


@pytest.mark.parametrize("name", ["vercel-anthropic-text.json", "vercel-anthropic-tool-no-args.json"])
def test_anthropic_bodies(name: str) -> None:
    result: ChatResult = provider("chat", "Anthropic", replay(fixture(name)), api_key=KEY).chat(None, USER)
    assert result.text or result.tool_calls
    assert all(isinstance(c.arguments, dict) for c in result.tool_calls)


@pytest.mark.parametrize(
    "name",
    [
        "vercel-anthropic-text.chunks.txt",
        "vercel-anthropic-tool-no-args.chunks.txt",
        "vercel-anthropic-message-delta-input-tokens.chunks.txt",
    ],
)
def test_anthropic_streams(name: str) -> None:
    text, last = streamed(provider("chat", "Anthropic", replay(sse_body(name, named=True)), api_key=KEY))
    assert text or last.tool_calls
    assert last.usage is not None and not last.usage.estimated


# --------------------------------------------------------------------------- Gemini


@pytest.mark.parametrize("name", ["vercel-google-text.json", "vercel-google-tool-call.json"])
def test_gemini_bodies(name: str) -> None:
    result = provider("chat", "Gemini", replay(fixture(name)), model="gemini-2.5-flash", api_key=KEY).chat(None, USER)
    assert (result.text or result.tool_calls) and not result.usage.estimated


@pytest.mark.parametrize("name", ["vercel-google-text.chunks.txt", "vercel-google-tool-call.chunks.txt"])
def test_gemini_streams(name: str) -> None:
    model = provider("chat", "Gemini", replay(sse_body(name)), model="gemini-2.5-flash", api_key=KEY)
    text, last = streamed(model)
    assert (text or last.tool_calls) and last.usage is not None and not last.usage.estimated


# --------------------------------------------------------------------------- Cohere, Voyage, TEI


@pytest.mark.parametrize(
    "name",
    [
        "vercel-cohere-text.json",
        "vercel-cohere-tool-call.json",
        "vercel-cohere-reasoning.json",
        "vercel-cohere-max-tokens.json",
    ],
)
def test_cohere_bodies(name: str) -> None:
    result = provider("chat", "Cohere", replay(fixture(name)), model="command-a-03-2025", api_key=KEY).chat(None, USER)
    assert (result.text or result.tool_calls) and result.finish_reason in {"stop", "tool_calls", "length"}


@pytest.mark.parametrize(
    "name",
    ["vercel-cohere-text.chunks.txt", "vercel-cohere-tool-call.chunks.txt", "vercel-cohere-reasoning.chunks.txt"],
)
def test_cohere_streams(name: str) -> None:
    text, last = streamed(provider("chat", "Cohere", replay(sse_body(name)), model="command-a-03-2025", api_key=KEY))
    assert text or last.tool_calls
    assert last.usage is not None and not last.usage.estimated


def test_cohere_embedding_and_rerank() -> None:
    body = json.loads(fixture("vercel-cohere-embedding.json"))
    embedding = provider("embedding", "Cohere", replay(fixture("vercel-cohere-embedding.json")), api_key=KEY)
    vectors = embedding.encode(body["texts"]).vectors
    np.testing.assert_allclose(vectors, np.asarray(body["embeddings"]["float"], dtype=np.float32))
    ranked = json.loads(fixture("vercel-cohere-reranking.1.json"))
    rerank = provider("rerank", "Cohere", replay(fixture("vercel-cohere-reranking.1.json")), api_key=KEY)
    scores = rerank.similarity("q", ["d0", "d1"]).scores
    for r in ranked["results"]:
        assert scores[r["index"]] == pytest.approx(r["relevance_score"], rel=1e-6)


def test_voyage_embedding_and_rerank() -> None:
    body = json.loads(fixture("vercel-voyage-embedding.json"))
    embedding = provider(
        "embedding", "Voyage AI", replay(fixture("vercel-voyage-embedding.json")), model="voyage-3.5", api_key=KEY
    )
    result = embedding.encode([f"t{i}" for i in range(len(body["data"]))])
    assert result.vectors.shape[0] == len(body["data"]) and not result.usage.estimated
    rerank = provider(
        "rerank", "Voyage AI", replay(fixture("vercel-voyage-reranking.1.json")), model="rerank-2.5", api_key=KEY
    ).similarity("q", ["d0", "d1"])
    assert rerank.scores[1] == pytest.approx(0.5703125) and rerank.usage.total_tokens == 12


def test_tei_embed_batch() -> None:
    """TEI's insta snapshot of its ``/embed`` answer (YAML of the JSON array it sends)."""
    vectors = yaml.safe_load(fixture("tei_mrl_embeddings_batch.snap").decode().split("---", 2)[2])
    model = provider("embedding", "HuggingFace", replay(json.dumps(vectors).encode()), base_url="http://tei:8080")
    result = model.encode([f"t{i}" for i in range(len(vectors))])
    np.testing.assert_allclose(result.vectors, np.asarray(vectors, dtype=np.float32))


# --------------------------------------------------------------------------- Bedrock


@pytest.mark.parametrize("name", ["vercel-amazon-bedrock-text.json", "vercel-amazon-bedrock-reasoning.json"])
def test_bedrock_converse_bodies(name: str) -> None:
    model = bedrock("chat", replay(fixture(name)), "anthropic.claude-3-7-sonnet-20250219-v1:0")
    result = model.chat(None, USER)
    assert result.text and result.finish_reason == "stop" and not result.usage.estimated


@pytest.mark.parametrize(
    "name", ["vercel-amazon-bedrock-text.chunks.txt", "vercel-amazon-bedrock-reasoning.chunks.txt"]
)
def test_bedrock_converse_streams(name: str) -> None:
    recorder = replay(eventstream_body(name), "application/vnd.amazon.eventstream")
    text, last = streamed(bedrock("chat", recorder, "anthropic.claude-3-7-sonnet-20250219-v1:0"))
    assert text and last.finish_reason == "stop" and last.usage is not None and not last.usage.estimated


def _files() -> Iterator[str]:
    yield from (p.name for p in sorted(FIXTURES.iterdir())) if FIXTURES is not None else ()


def test_every_fixture_is_replayed() -> None:
    """A fixture added to the folder without a replay here fails this test."""
    source = Path(__file__).read_text(encoding="utf-8")
    missing = [name for name in _files() if name != "SOURCES.md" and name not in source]
    assert missing == []
