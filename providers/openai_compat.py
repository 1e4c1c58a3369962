"""The OpenAI-compatible family: OpenAI itself and the servers that speak its wire format.

One implementation per model type speaks the wire format; :data:`FACTORIES` says which
factory serves which types, and from each row we declare and register one small subclass
per type that carries the factory's name, default base URL and ``needs_key``. Adding a
factory is adding a row.

Wire format (plain ``httpx``, no SDK, so the transport seam stays ours)::

    POST {base}/chat/completions      {"model", "messages", "tools"?, "stream"?, ...}
    POST {base}/embeddings            {"model", "input": [...], "encoding_format": "float"}
    POST {base}/rerank                {"model", "query", "documents": [...], "top_n"}   (Jina style)
    POST {base}/audio/transcriptions  multipart: file, model
    POST {base}/audio/speech          {"model", "input", "voice", "response_format"} -> audio bytes

Every non-2xx answer becomes a ProviderError through :meth:`BaseModel.check`; a body we
cannot read (bad JSON, missing fields) is a ProviderError with code SERVER; timeouts and
connection failures escape as httpx exceptions, which ``classify()`` names.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import json_repair
import numpy as np

from providers.base import (
    AudioResult,
    BaseModel,
    ChatDelta,
    ChatModel,
    ChatResult,
    EmbeddingModel,
    EmbeddingResult,
    Image2TextModel,
    RerankModel,
    RerankResult,
    Speech2TextModel,
    TextResult,
    ToolCall,
    TTSModel,
    Usage,
    estimate_tokens,
)
from providers.errors import ErrorCode, ProviderError, scrub
from providers.http import json_body
from providers.registry import register

# The generation parameters that OpenAI's chat endpoint accepts; anything else is dropped.
GEN_CONF_KEYS = frozenset(
    {"temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "stop", "seed", "response_format"}
)
DEFAULT_IMAGE_PROMPT = "Describe this image in detail."
DEFAULT_VOICE = "alloy"
_AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


# --------------------------------------------------------------------------- HTTP plumbing


def _url(model: BaseModel, path: str) -> str:
    if not model.base_url.startswith(("http://", "https://")):
        factory = model.factories[0] if model.factories else type(model).__name__
        raise ProviderError(
            f"{factory} needs a base URL (http:// or https://); got {model.base_url!r}",
            code=ErrorCode.INVALID_REQUEST,
        )
    return f"{model.base_url}/{path}"


def _headers(model: BaseModel) -> dict[str, str]:
    return {"Authorization": f"Bearer {model.api_key}"} if model.api_key else {}


def _post(model: BaseModel, path: str, **kwargs: Any) -> httpx.Response:
    return model.check(model.client.post(_url(model, path), headers=_headers(model), **kwargs))


def _post_json(model: BaseModel, path: str, **kwargs: Any) -> dict[str, Any]:
    data = json_body(_post(model, path, **kwargs))
    if not isinstance(data, dict):
        raise ProviderError(f"/{path} answered with JSON that is not an object", code=ErrorCode.SERVER)
    return data


@contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn a response that lacks the fields we need into a ProviderError (SERVER)."""
    try:
        yield
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ProviderError(
            f"/{path} answered in an unexpected shape ({type(exc).__name__}: {exc})", code=ErrorCode.SERVER
        ) from None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _reported_usage(raw: Any) -> Usage | None:
    """Usage as the server reported it (prompt/completion or input/output names), None if it did not.
    Tokens reported only as a total count as prompt tokens."""
    if not isinstance(raw, dict):
        return None
    prompt = _count(raw.get("prompt_tokens")) or _count(raw.get("input_tokens"))
    completion = _count(raw.get("completion_tokens")) or _count(raw.get("output_tokens"))
    total = _count(raw.get("total_tokens")) or prompt + completion
    if not total:
        return None
    return Usage(prompt or (total - completion), completion, total)


def _estimated(prompt: int, completion: int = 0) -> Usage:
    return Usage(prompt, completion, prompt + completion, estimated=True)


# --------------------------------------------------------------------------- chat


def _chat_body(
    model: BaseModel,
    system: str | None,
    messages: list[dict[str, Any]],
    gen_conf: dict[str, Any] | None,
    tools: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    head = [{"role": "system", "content": system}] if system else []
    body: dict[str, Any] = {"model": model.model_name, "messages": head + list(messages)}
    body.update({k: v for k, v in (gen_conf or {}).items() if k in GEN_CONF_KEYS and v is not None})
    if tools:
        body["tools"] = tools
    return body


def _message_text(messages: Iterable[dict[str, Any]]) -> str:
    """The text inside chat messages (string contents and text parts), for estimates."""
    parts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(parts)


def _chat_usage(raw: Any, body: dict[str, Any], answer: str) -> Usage:
    return _reported_usage(raw) or _estimated(estimate_tokens(_message_text(body["messages"])), estimate_tokens(answer))


def parse_arguments(raw: Any) -> dict[str, Any]:
    """A tool call's ``arguments``: a JSON object in a string, repaired when a model botched it."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = json_repair.loads(raw)
    return parsed if isinstance(parsed, dict) else {}


def _tool_call(raw: dict[str, Any]) -> ToolCall:
    function = raw["function"]
    return ToolCall(id=raw.get("id") or "", name=function["name"], arguments=parse_arguments(function.get("arguments")))


def _complete(model: BaseModel, body: dict[str, Any]) -> ChatResult:
    data = _post_json(model, "chat/completions", json=body)
    with _reading("chat/completions"):
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        tool_calls = [_tool_call(call) for call in message.get("tool_calls") or []]
    return ChatResult(text, _chat_usage(data.get("usage"), body, text), tool_calls, choice.get("finish_reason"))


def _sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined), up to ``[DONE]``."""
    buffer: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            buffer.append(line[5:].removeprefix(" "))
        elif not line.strip() and buffer:
            data, buffer = "\n".join(buffer), []
            if data.strip() == "[DONE]":
                return
            yield data
    if buffer and "\n".join(buffer).strip() != "[DONE]":
        yield "\n".join(buffer)


def _stream_error(error: Any, api_key: str | None) -> ProviderError:
    """An ``{"error": ...}`` event sent after a 200 had already started the stream."""
    if not isinstance(error, dict):
        return ProviderError(scrub(str(error), api_key))
    code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
    return ProviderError(scrub(str(error.get("message") or error), api_key), provider_code=code or None)


@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _StreamState:
    """What a stream has said so far: text, tool-call fragments by index, the end."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _PendingCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None

    def add_tool_fragment(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index")
        if index is None:  # a server that leaves it out: a new id opens a call, anything else continues the last
            index = len(self.calls) if fragment.get("id") or not self.calls else max(self.calls)
        call = self.calls.setdefault(int(index), _PendingCall())
        call.id = fragment.get("id") or call.id
        function = fragment.get("function") or {}
        call.name = function.get("name") or call.name
        if function.get("arguments"):
            call.arguments.append(function["arguments"])

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(c.id, c.name, parse_arguments("".join(c.arguments))) for _, c in sorted(self.calls.items())]


def _read_chunk(state: _StreamState, chunk: dict[str, Any], api_key: str | None) -> str:
    """Fold one ``chat.completion.chunk`` into ``state``; return its new text."""
    if "error" in chunk:
        raise _stream_error(chunk["error"], api_key)
    if chunk.get("usage"):
        state.usage = chunk["usage"]
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        text += delta.get("content") or ""
        for fragment in delta.get("tool_calls") or []:
            state.add_tool_fragment(fragment)
        state.finish_reason = choice.get("finish_reason") or state.finish_reason
    state.text.append(text)
    return text


def _stream_deltas(lines: Iterable[str], body: dict[str, Any], api_key: str | None) -> Iterator[ChatDelta]:
    state = _StreamState()
    for data in _sse_data(lines):
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProviderError(f"malformed stream event ({len(data)} bytes)", code=ErrorCode.SERVER) from None
        with _reading("chat/completions"):
            text = _read_chunk(state, chunk, api_key)
        if text:
            yield ChatDelta(text=text)
    usage = _chat_usage(state.usage, body, "".join(state.text))
    yield ChatDelta(tool_calls=state.tool_calls(), usage=usage, finish_reason=state.finish_reason)


class OpenAICompatChat(ChatModel):
    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        return _complete(self, _chat_body(self, system, messages, gen_conf, tools))

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        """Text deltas as they arrive, then one last delta with tool calls, usage and finish reason."""
        body = _chat_body(self, system, messages, gen_conf, tools)
        body.update(stream=True, stream_options={"include_usage": True})
        url = _url(self, "chat/completions")
        with self.client.stream("POST", url, headers=_headers(self), json=body) as response:
            self.check(response)
            yield from _stream_deltas(response.iter_lines(), body, self.api_key)


class OpenAICompatImage2Text(Image2TextModel):
    def describe_with_prompt(self, image: bytes, prompt: str | None, mime_type: str = "image/png") -> TextResult:
        data_url = f"data:{mime_type};base64,{base64.b64encode(image).decode('ascii')}"
        content = [
            {"type": "text", "text": prompt or DEFAULT_IMAGE_PROMPT},
            {"type": "image_url", "image_url": {"url": data_url}},
        ]
        result = _complete(self, _chat_body(self, None, [{"role": "user", "content": content}], None, None))
        return TextResult(result.text, result.usage)


# --------------------------------------------------------------------------- embeddings


class OpenAICompatEmbedding(EmbeddingModel):
    batch_size = 64

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        body = {"model": self.model_name, "input": texts, "encoding_format": "float"}
        data = _post_json(self, "embeddings", json=body)
        with _reading("embeddings"):
            rows = sorted(data["data"], key=lambda row: int(row["index"]))
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ProviderError(
                f"/embeddings returned {len(vectors)} vectors for {len(texts)} texts", code=ErrorCode.SERVER
            )
        usage = _reported_usage(data.get("usage")) or _estimated(sum(estimate_tokens(t) for t in texts))
        return EmbeddingResult(vectors, usage)


# --------------------------------------------------------------------------- rerank


def _rerank_usage(data: dict[str, Any], query: str, texts: Sequence[str]) -> Usage:
    """``usage`` (vLLM, Jina), ``meta.tokens`` (Xinference), else an estimate of what a
    cross-encoder reads: the query once beside every document."""
    meta = data.get("meta")
    return (
        _reported_usage(data.get("usage"))
        or _reported_usage(meta.get("tokens") if isinstance(meta, dict) else None)
        or _estimated(sum(estimate_tokens(query) + estimate_tokens(t) for t in texts))
    )


class OpenAICompatRerank(RerankModel):
    def similarity(self, query: str, texts: Sequence[str]) -> RerankResult:
        """Scores in the documents' order (a document the server leaves out scores 0)."""
        if not texts:
            raise ValueError("similarity needs at least one text")
        body = {"model": self.model_name, "query": query, "documents": list(texts), "top_n": len(texts)}
        data = _post_json(self, "rerank", json=body)
        scores = np.zeros(len(texts), dtype=np.float32)
        with _reading("rerank"):
            for result in data["results"]:
                index = int(result["index"])
                if not 0 <= index < len(texts):
                    raise IndexError(f"result index {index} outside {len(texts)} documents")
                scores[index] = float(result["relevance_score"])
        return RerankResult(scores, _rerank_usage(data, query, texts))


# --------------------------------------------------------------------------- audio


class OpenAICompatSpeech2Text(Speech2TextModel):
    def transcription(self, audio: bytes, filename: str = "audio.wav") -> TextResult:
        mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        files = {"file": (filename, audio, mime)}
        data = _post_json(self, "audio/transcriptions", files=files, data={"model": self.model_name})
        with _reading("audio/transcriptions"):
            text = str(data["text"])
        # Token-billed models report ``{"type": "tokens", ...}``; whisper-1 reports only seconds.
        return TextResult(text, _reported_usage(data.get("usage")) or _estimated(0, estimate_tokens(text)))


class OpenAICompatTTS(TTSModel):
    def tts(self, text: str, voice: str | None = None, audio_format: str = "mp3") -> AudioResult:
        voice = voice or DEFAULT_VOICE
        body = {"model": self.model_name, "input": text, "voice": voice, "response_format": audio_format}
        response = _post(self, "audio/speech", json=body)
        fallback = _AUDIO_TYPES.get(audio_format, "application/octet-stream")
        content_type = response.headers.get("content-type") or fallback
        return AudioResult(response.content, content_type, _estimated(estimate_tokens(text)))


# --------------------------------------------------------------------------- the factories

IMPLEMENTATIONS: dict[str, type[BaseModel]] = {
    "chat": OpenAICompatChat,
    "embedding": OpenAICompatEmbedding,
    "rerank": OpenAICompatRerank,
    "image2text": OpenAICompatImage2Text,
    "speech2text": OpenAICompatSpeech2Text,
    "tts": OpenAICompatTTS,
}


@dataclass(frozen=True)
class Factory:
    """One OpenAI-compatible factory: its catalog name, default base URL ("" = the tenant
    must give one, as for local servers), the model types it serves, whether it needs a key."""

    name: str
    default_base_url: str
    model_types: tuple[str, ...]
    needs_key: bool = False


FACTORIES: tuple[Factory, ...] = (
    Factory(
        "OpenAI", "https://api.openai.com/v1", ("chat", "embedding", "image2text", "speech2text", "tts"), needs_key=True
    ),
    Factory("DeepSeek", "https://api.deepseek.com/v1", ("chat",), needs_key=True),
    Factory("OpenAI-API-Compatible", "", ("chat", "embedding", "rerank", "image2text", "speech2text", "tts")),
    Factory("VLLM", "", ("chat", "embedding", "rerank", "image2text")),
    Factory("LM-Studio", "", ("chat", "embedding", "image2text")),
    Factory("LocalAI", "", ("chat", "embedding", "rerank", "image2text", "speech2text", "tts")),
    Factory("Xinference", "", ("chat", "embedding", "rerank", "image2text", "speech2text", "tts")),
)


def _declare(factory: Factory, model_type: str) -> type[BaseModel]:
    """The registered class for one (factory, model type): the family's implementation with the factory's facts."""
    implementation = IMPLEMENTATIONS[model_type]
    prefix = "".join(ch for ch in factory.name if ch.isalnum())
    name = prefix + implementation.__name__.removeprefix("OpenAICompat")
    attributes = {
        "factories": (factory.name,),
        "default_base_url": factory.default_base_url,
        "needs_key": factory.needs_key,
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"{implementation.__name__} for {factory.name}.",
    }
    return register(type(name, (implementation,), attributes))


PROVIDER_CLASSES: dict[tuple[str, str], type[BaseModel]] = {
    (model_type, factory.name): _declare(factory, model_type)
    for factory in FACTORIES
    for model_type in factory.model_types
}
