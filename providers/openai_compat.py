"""The OpenAI-compatible family: OpenAI itself and the servers that speak its wire format.

One implementation per model type speaks the wire format; :data:`FACTORIES` says which
factory serves which types, and from each row we declare and register one small subclass
per type that carries the factory's name, default base URL, ``needs_key`` and its
:class:`Factory` row (``factory_spec``). Adding a factory is adding a row: what a server
does differently (generation options it rejects or names otherwise, errors inside a 2xx
body, its own error codes, a query mode for embeddings, a default voice) is data in
that row, read by the one implementation -- never an ``if factory == ...`` in the code.

Wire format (plain ``httpx``, no SDK, so the transport seam stays ours)::

    POST {base}/chat/completions      {"model", "messages", "tools"?, "stream"?, ...}
    POST {base}/embeddings            {"model", "input": [...], "encoding_format": "float"}
    POST {base}/rerank                {"model", "query", "documents": [...], "top_n"}   (Jina style)
    POST {base}/audio/transcriptions  multipart: file, model
    POST {base}/audio/speech          {"model", "input", "voice", "response_format"} -> audio bytes

Every non-2xx answer becomes a ProviderError through :meth:`BaseModel.check` (refined with
the factory's error codes); a body we cannot read (bad JSON, missing fields) is a
ProviderError with code SERVER; timeouts and connection failures escape as httpx
exceptions, which ``classify()`` names.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import httpx
import numpy as np

from providers.base import (
    REFUSAL,
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
    TTSModel,
    estimate_tokens,
)
from providers.errors import ErrorCode, ProviderError, scrub
from providers.http import error_json
from providers.openai_factories import FACTORIES, GENERIC, Factory
from providers.registry import register
from providers.wire import (
    DEFAULT_IMAGE_PROMPT,
    ChatStreamState,
    chat_usage,
    estimated,
    function_call,
    reading,
    reported_usage,
    rerank_usage,
    sse_events,
    stream_error,
)

_AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


# --------------------------------------------------------------------------- generation options

# OpenAI's reasoning models (o1, o3, o4-mini, the gpt-5 family) take ``max_completion_tokens``
# and reject sampling parameters. Matched on the name after any "vendor/" prefix, so
# aggregators that pass OpenAI's models through ("openai/o3") get the same treatment.
_OPENAI_REASONING = re.compile(r"^(?:o[134](?:-|$)|gpt-5)")
_REASONING_DROPS = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty"})


def is_openai_reasoning_model(model_name: str) -> bool:
    return bool(_OPENAI_REASONING.match(model_name.lower().rsplit("/", 1)[-1]))


def clean_gen_conf(
    factory: Factory, model_name: str, gen_conf: Mapping[str, Any] | None, *, stream: bool = False
) -> dict[str, Any]:
    """The OpenAI-style options in ``gen_conf`` as this factory and model take them. Unknown or unsupported options are dropped (never
    send a parameter that fails the call), reasoning models get ``max_completion_tokens``
    and no sampling parameters, the factory's own names replace OpenAI's."""
    conf = {k: v for k, v in (gen_conf or {}).items() if k in factory.gen_conf_keys and v is not None}
    if is_openai_reasoning_model(model_name):
        conf = {k: v for k, v in conf.items() if k not in _REASONING_DROPS}
        if "max_tokens" in conf:
            conf["max_completion_tokens"] = conf.pop("max_tokens")
    conf = {factory.gen_conf_rename.get(k, k): v for k, v in conf.items()}
    if not stream:
        for fragment, extra in factory.non_stream_extra:
            if fragment in model_name.lower():
                conf.update(extra)
    return conf


# --------------------------------------------------------------------------- errors


def _body_error(factory: Factory, body: Any, secrets: Sequence[str | None]) -> ProviderError | None:
    """The error a 2xx body (or stream event) reports in the factory's ``body_status``, if any."""
    if factory.body_status is None:
        return None
    code, message = factory.body_status.read(body)
    if code is None:
        return None
    return ProviderError(
        scrub(message or f"error {code}", *secrets)[:2000], provider_code=code, code=factory.error_codes.get(code)
    )


def _refined(
    factory: Factory, exc: ProviderError, response: httpx.Response, secrets: Sequence[str | None]
) -> ProviderError:
    """``exc`` (from the shared error reader) with what this factory's error body says beyond it:
    a ``reason`` name where the code is only a number (Novita-style gateways), the code and
    message of its ``body_status``, and its own code table."""
    body = error_json(response)
    provider_code, message = exc.provider_code, exc.message
    if isinstance(body, dict):
        reason = body.get("reason")
        if isinstance(reason, str) and reason and (not provider_code or provider_code.isdigit()):
            provider_code = reason
        status_error = _body_error(factory, body, secrets)
        if status_error is not None:
            provider_code, message = status_error.provider_code, status_error.message
    known = factory.error_codes.get(provider_code or "")
    if known is None and (provider_code, message) == (exc.provider_code, exc.message):
        return exc
    return ProviderError(
        message,
        status=exc.status,
        provider_code=provider_code,
        retry_after=exc.retry_after,
        code=known or exc.code,
        rate_limits=exc.rate_limits,
    )


class _FactoryBound(BaseModel):
    """What every class of the family shares: its :class:`Factory` row, and errors read through it."""

    factory_spec: ClassVar[Factory] = GENERIC

    def check(self, response: httpx.Response) -> httpx.Response:
        try:
            return super().check(response)
        except ProviderError as exc:
            refined = _refined(self.factory_spec, exc, response, self.secrets)
            if refined is exc:
                raise
            raise refined from None

    @property
    def wire_model(self) -> str:
        """The model name as the provider's API wants it."""
        return self.factory_spec.model_aliases.get(self.model_name, self.model_name)

    def post_json(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """The base class's, and an error reported inside the 2xx body raised."""
        data = super().post_json(path, **kwargs)
        error = _body_error(self.factory_spec, data, self.secrets)
        if error is not None:
            raise error
        return data


# --------------------------------------------------------------------------- chat


def _chat_body(
    model: _FactoryBound,
    system: str | None,
    messages: list[dict[str, Any]],
    gen_conf: dict[str, Any] | None,
    tools: list[dict[str, Any]] | None,
    *,
    stream: bool = False,
) -> dict[str, Any]:
    head = [{"role": "system", "content": system}] if system else []
    body: dict[str, Any] = {"model": model.wire_model, "messages": head + list(messages)}
    body.update(clean_gen_conf(model.factory_spec, model.model_name, gen_conf, stream=stream))
    if tools:
        body["tools"] = tools
    return body


def _refusal(text: str | None) -> str | None:
    """OpenAI's ``refusal`` (a string beside or instead of ``content``), None when there is none."""
    return text if isinstance(text, str) and text.strip() else None


def _complete(model: _FactoryBound, body: dict[str, Any]) -> ChatResult:
    data = model.post_json("chat/completions", json=body)
    with reading("chat/completions"):
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        tool_calls = [function_call(call) for call in message.get("tool_calls") or []]
        refusal = _refusal(message.get("refusal"))
    usage = chat_usage(data.get("usage"), body["messages"], text or refusal or "")
    finish = REFUSAL if refusal else choice.get("finish_reason")
    return ChatResult(text, usage, tool_calls, finish, refusal)


def _read_chunk(
    state: ChatStreamState, chunk: dict[str, Any], secrets: Sequence[str | None], factory: Factory = GENERIC
) -> str:
    """Fold one ``chat.completion.chunk`` into ``state``; return its new text."""
    if "error" in chunk:
        raise stream_error(chunk["error"], *secrets)
    error = _body_error(factory, chunk, secrets)
    if error is not None:
        raise error
    if chunk.get("usage"):
        state.usage = chunk["usage"]
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        text += delta.get("content") or ""
        state.refusal.append(delta.get("refusal") or "")
        for fragment in delta.get("tool_calls") or []:
            state.add_tool_fragment(fragment)
        state.finish_reason = choice.get("finish_reason") or state.finish_reason
    state.text.append(text)
    return text


def _stream_deltas(
    lines: Iterable[str], body: dict[str, Any], secrets: Sequence[str | None], factory: Factory = GENERIC
) -> Iterator[ChatDelta]:
    state = ChatStreamState()
    for chunk in sse_events(lines):
        with reading("chat/completions"):
            text = _read_chunk(state, chunk, secrets, factory)
        if text:
            yield ChatDelta(text=text)
    answer, refusal = "".join(state.text), _refusal("".join(state.refusal))
    usage = chat_usage(state.usage, body["messages"], answer or refusal or "")
    finish = REFUSAL if refusal else state.finish_reason
    yield ChatDelta(tool_calls=state.tool_calls(), usage=usage, finish_reason=finish, refusal=refusal)


class OpenAICompatChat(_FactoryBound, ChatModel):
    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        """The answer; a refusal (``message.refusal``) comes back as ``refusal`` with finish reason ``refusal``."""
        return _complete(self, _chat_body(self, system, messages, gen_conf, tools))

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        """Text deltas as they arrive, then one last delta with tool calls, usage, finish reason
        and the refusal (``delta.refusal`` pieces joined), if the model refused."""
        body = _chat_body(self, system, messages, gen_conf, tools, stream=True)
        body["stream"] = True
        if self.factory_spec.stream_usage_option:
            body["stream_options"] = {"include_usage": True}
        with self.post_stream("chat/completions", json=body) as response:
            yield from _stream_deltas(response.iter_lines(), body, self.secrets, self.factory_spec)


class OpenAICompatImage2Text(_FactoryBound, Image2TextModel):
    def describe_with_prompt(self, image: bytes, prompt: str | None, mime_type: str = "image/png") -> TextResult:
        data_url = f"data:{mime_type};base64,{base64.b64encode(image).decode('ascii')}"
        content = [
            {"type": "text", "text": prompt or DEFAULT_IMAGE_PROMPT},
            {"type": "image_url", "image_url": {"url": data_url}},
        ]
        result = _complete(self, _chat_body(self, None, [{"role": "user", "content": content}], None, None))
        return TextResult(result.text, result.usage)


# --------------------------------------------------------------------------- embeddings


def _vector(raw: Any, encoding: str) -> np.ndarray:
    """One embedding as float32: a JSON list, or Perplexity's base64 of signed int8 values."""
    if encoding == "base64_int8":
        return np.frombuffer(base64.b64decode(raw), dtype=np.int8).astype(np.float32)
    return np.asarray(raw, dtype=np.float32)


class OpenAICompatEmbedding(_FactoryBound, EmbeddingModel):
    batch_size = 64

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, query=False)

    def _encode_query_batch(self, texts: list[str]) -> EmbeddingResult:
        """Search queries in the provider's query mode, where it has one."""
        return self._embed(texts, query=True)

    def _embedding_model(self, query: bool) -> str:
        name = self.wire_model
        if self.factory_spec.query_model is not None:
            document_part, query_part = self.factory_spec.query_model
            name = name.replace(document_part, query_part) if query else name.replace(query_part, document_part)
        return name

    def _embed(self, texts: list[str], *, query: bool) -> EmbeddingResult:
        spec = self.factory_spec
        body = {"model": self._embedding_model(query), "input": texts, "encoding_format": spec.embedding_format}
        body.update(spec.embed_query_extra if query else spec.embed_document_extra)
        data = self.post_json("embeddings", json=body)
        with reading("embeddings"):
            rows = sorted(enumerate(data["data"]), key=lambda pair: int(pair[1].get("index", pair[0])))
            vectors = np.stack([_vector(row["embedding"], spec.embedding_format) for _, row in rows])
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ProviderError(
                f"/embeddings returned {len(vectors)} vectors for {len(texts)} texts", code=ErrorCode.SERVER
            )
        usage = reported_usage(data.get("usage")) or estimated(sum(estimate_tokens(t) for t in texts))
        return EmbeddingResult(vectors, usage)


# --------------------------------------------------------------------------- rerank


class OpenAICompatRerank(_FactoryBound, RerankModel):
    def similarity(self, query: str, texts: Sequence[str]) -> RerankResult:
        """Scores in the documents' order (a document the server leaves out scores 0)."""
        if not texts:
            raise ValueError("similarity needs at least one text")
        body = {"model": self.wire_model, "query": query, "documents": list(texts), "top_n": len(texts)}
        data = self.post_json("rerank", json=body)
        scores = np.zeros(len(texts), dtype=np.float32)
        with reading("rerank"):
            for result in data["results"]:
                index = int(result["index"])
                if not 0 <= index < len(texts):
                    raise IndexError(f"result index {index} outside {len(texts)} documents")
                scores[index] = float(result["relevance_score"])
        return RerankResult(scores, rerank_usage(data, query, texts))


# --------------------------------------------------------------------------- audio


class OpenAICompatSpeech2Text(_FactoryBound, Speech2TextModel):
    def transcription(self, audio: bytes, filename: str = "audio.wav") -> TextResult:
        mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        files = {"file": (filename, audio, mime)}
        data = self.post_json("audio/transcriptions", files=files, data={"model": self.wire_model})
        with reading("audio/transcriptions"):
            text = str(data["text"])
        # Token-billed models report ``{"type": "tokens", ...}``; whisper-1 reports only seconds.
        return TextResult(text, reported_usage(data.get("usage")) or estimated(0, estimate_tokens(text)))


class OpenAICompatTTS(_FactoryBound, TTSModel):
    def tts(self, text: str, voice: str | None = None, audio_format: str = "mp3") -> AudioResult:
        voice = voice or self.factory_spec.default_voice.format(model=self.wire_model)
        body = {"model": self.wire_model, "input": text, "voice": voice, "response_format": audio_format}
        response = self.post("audio/speech", json=body)
        fallback = _AUDIO_TYPES.get(audio_format, "application/octet-stream")
        content_type = response.headers.get("content-type") or fallback
        return AudioResult(response.content, content_type, estimated(estimate_tokens(text)))


# --------------------------------------------------------------------------- the factories

IMPLEMENTATIONS: dict[str, type[BaseModel]] = {
    "chat": OpenAICompatChat,
    "embedding": OpenAICompatEmbedding,
    "rerank": OpenAICompatRerank,
    "image2text": OpenAICompatImage2Text,
    "speech2text": OpenAICompatSpeech2Text,
    "tts": OpenAICompatTTS,
}


def _declare(factory: Factory, model_type: str) -> type[BaseModel]:
    """The registered class for one (factory, model type): the family's implementation with the factory's facts."""
    implementation = IMPLEMENTATIONS[model_type]
    prefix = "".join(ch for ch in factory.name if ch.isalnum())
    name = prefix + implementation.__name__.removeprefix("OpenAICompat")
    attributes: dict[str, Any] = {
        "factories": (factory.name,),
        "default_base_url": factory.default_base_url,
        "needs_key": factory.needs_key,
        "factory_spec": factory,
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"{implementation.__name__} for {factory.name}.",
    }
    if model_type == "embedding":
        attributes["batch_size"] = factory.embedding_batch_size
    return register(type(name, (implementation,), attributes))


PROVIDER_CLASSES: dict[tuple[str, str], type[BaseModel]] = {
    (model_type, factory.name): _declare(factory, model_type)
    for factory in FACTORIES
    for model_type in factory.model_types
}
