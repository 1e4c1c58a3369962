"""The Ollama family: a local (or proxied, or ollama.com cloud) Ollama server's native API.

Wire format (https://github.com/ollama/ollama/blob/main/docs/api.md, docs/openapi.yaml)::

    POST {base}/api/chat   {"model", "messages", "stream", "options"?, "tools"?, "format"?}
                           -> {"model", "created_at", "message": {"role", "content", "tool_calls"?},
                               "done", "done_reason", "prompt_eval_count", "eval_count", ...durations}
                           streamed as NDJSON (one such object a line, the last with "done": true)
    POST {base}/api/embed  {"model", "input": [...], "truncate": true}
                           -> {"model", "embeddings": [[...]], "prompt_eval_count", ...durations}

Ollama's messages carry ``content`` as a string, images as a list of bare base64 strings
(``images``), tool calls as ``{"function": {"name", "arguments": <object>}}`` and tool results as
``{"role": "tool", "content", "tool_name"}``; we convert from and to the OpenAI shapes here.
Generation parameters go inside ``options`` (``max_tokens`` is ``num_predict``; ``stop`` must be
a list). Errors are ``{"error": "..."}`` with an HTTP status (404: model not found); an error
after a stream has started arrives as one more line ``{"error": "..."}``.

The local server needs no key; when one is given (ollama.com, or an Ollama behind an
authenticating proxy) it is sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import httpx
import numpy as np

from providers.base import (
    BaseModel,
    ChatDelta,
    ChatModel,
    ChatResult,
    EmbeddingModel,
    EmbeddingResult,
    Image2TextModel,
    TextResult,
    ToolCall,
    Usage,
    estimate_tokens,
)
from providers.errors import ErrorCode, ProviderError, classify_message, scrub
from providers.registry import register
from providers.wire import (
    DEFAULT_IMAGE_PROMPT,
    estimated,
    json_lines,
    message_text,
    parse_arguments,
    reading,
)

FACTORY = "Ollama"
DEFAULT_BASE_URL = "http://localhost:11434"

# Ollama cloud's 429 for a plan's weekly/monthly allowance: waiting minutes will not help.
_LONG_LIMIT = re.compile(r"\b(weekly|monthly)\b.*\blimit", re.IGNORECASE)


class _OllamaBase(BaseModel):
    factories: ClassVar[tuple[str, ...]] = (FACTORY,)
    needs_key: ClassVar[bool] = False
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(model_name, **kwargs)
        # Tenants paste the OpenAI-compatible ".../v1" or the ".../api" prefix; our paths add "api/".
        for suffix in ("/v1", "/api"):
            self.base_url = self.base_url.removesuffix(suffix)

    def check(self, response: httpx.Response) -> httpx.Response:
        try:
            return super().check(response)
        except ProviderError as exc:
            if exc.status == 429 and _LONG_LIMIT.search(exc.message):
                exc.code = ErrorCode.QUOTA
            raise


# --------------------------------------------------------------------------- requests


def _image_data(part: dict[str, Any]) -> str:
    """The bare base64 of an OpenAI ``image_url`` part (Ollama cannot fetch URLs itself)."""
    image_url = part.get("image_url")
    url = image_url.get("url", "") if isinstance(image_url, dict) else str(image_url or "")
    if url.startswith("data:") and "," in url:
        return url.split(",", 1)[1]
    raise ProviderError(
        f"{FACTORY} takes images inline as base64 data URLs; got {url[:40]!r}", code=ErrorCode.INVALID_REQUEST
    )


def _tool_call_out(raw: dict[str, Any]) -> dict[str, Any]:
    function = raw.get("function") or {}
    return {"function": {"name": function.get("name", ""), "arguments": parse_arguments(function.get("arguments"))}}


def _messages(system: str | None, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages in Ollama's shape."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    tool_names: dict[str, str] = {}  # tool_call_id -> function name, from the assistant turns seen so far
    for message in messages:
        content = message.get("content")
        item: dict[str, Any] = {"role": message.get("role", "user")}
        if isinstance(content, list):
            texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            images = [_image_data(p) for p in content if isinstance(p, dict) and p.get("type") == "image_url"]
            item["content"] = "\n".join(texts)
            if images:
                item["images"] = images
        else:
            item["content"] = "" if content is None else str(content)
        calls = message.get("tool_calls") or []
        if calls:
            item["tool_calls"] = [_tool_call_out(call) for call in calls]
            for call in calls:
                if call.get("id"):
                    tool_names[call["id"]] = (call.get("function") or {}).get("name", "")
        if item["role"] == "tool":
            name = message.get("name") or tool_names.get(message.get("tool_call_id") or "")
            if name:
                item["tool_name"] = name
        out.append(item)
    return out


def _options(gen_conf: dict[str, Any] | None) -> tuple[dict[str, Any], Any]:
    """(``options``, ``format``) from OpenAI-style generation parameters; others are dropped."""
    conf = {k: v for k, v in (gen_conf or {}).items() if v is not None}
    options: dict[str, Any] = {}
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if key in conf:
            options[key] = float(conf[key])
    if "max_tokens" in conf:
        options["num_predict"] = int(conf["max_tokens"])
    if "seed" in conf:
        options["seed"] = int(conf["seed"])
    if "stop" in conf:  # Ollama rejects a bare string here: "option stop must be of type array"
        stop = conf["stop"]
        options["stop"] = [stop] if isinstance(stop, str) else [str(s) for s in stop]
    response_format = conf.get("response_format")
    fmt: Any = None
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            fmt = "json"
        elif response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            fmt = schema if isinstance(schema, dict) else "json"
    return options, fmt


def _chat_body(
    model: BaseModel,
    system: str | None,
    messages: list[dict[str, Any]],
    gen_conf: dict[str, Any] | None,
    tools: list[dict[str, Any]] | None,
    stream: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model.model_name, "messages": _messages(system, messages), "stream": stream}
    options, fmt = _options(gen_conf)
    if options:
        body["options"] = options
    if fmt is not None:
        body["format"] = fmt
    if tools:
        body["tools"] = tools
    return body


# --------------------------------------------------------------------------- answers


def _usage(data: dict[str, Any], body: dict[str, Any], answer: str) -> Usage:
    """``prompt_eval_count`` / ``eval_count``; a count Ollama left out (it omits the prompt's
    when the whole prompt came from its cache) is estimated, and the usage flagged so."""
    prompt, completion = _count(data.get("prompt_eval_count")), _count(data.get("eval_count"))
    p = prompt if prompt is not None else estimate_tokens(message_text(body["messages"]))
    c = completion if completion is not None else estimate_tokens(answer)
    return Usage(p, c, p + c, estimated=prompt is None or completion is None)


def _count(value: Any) -> int | None:
    """A count Ollama reported (a whole number, not negative), or None."""
    return value if isinstance(value, int) and value >= 0 else None


def _tool_calls(raw_calls: Iterable[dict[str, Any]], start: int = 0) -> list[ToolCall]:
    """Ollama's tool calls; ones without an ``id`` (older servers) get ``call_<n>``, so a tool
    result can name its call and :func:`_messages` can find the function name again."""
    calls = []
    for n, raw in enumerate(raw_calls, start):
        function = raw["function"]
        call_id = raw.get("id") or f"call_{n}"
        calls.append(ToolCall(id=call_id, name=function["name"], arguments=parse_arguments(function.get("arguments"))))
    return calls


def _finish_reason(done_reason: Any, tool_calls: list[ToolCall]) -> str | None:
    """Ollama says "stop" when the model stopped to call tools; we say "tool_calls", as OpenAI does."""
    if tool_calls and done_reason in (None, "", "stop"):
        return "tool_calls"
    return done_reason or None


def _line_error(error: Any, secrets: tuple[str, ...]) -> ProviderError:
    """An ``{"error": ...}`` object on a 200 (a stream that failed after it started)."""
    message = scrub(str(error), *secrets)
    code = classify_message(message)
    return ProviderError(message, code=ErrorCode.SERVER if code is ErrorCode.GENERIC else code)


def _complete(model: BaseModel, body: dict[str, Any]) -> ChatResult:
    data = model.post_json("api/chat", json=body)
    if "error" in data:
        raise _line_error(data["error"], model.secrets)
    with reading("api/chat"):
        message = data["message"]
        text = message.get("content") or ""
        tool_calls = _tool_calls(message.get("tool_calls") or [])
    return ChatResult(text, _usage(data, body, text), tool_calls, _finish_reason(data.get("done_reason"), tool_calls))


def _stream_deltas(lines: Iterable[str], body: dict[str, Any], secrets: tuple[str, ...]) -> Iterator[ChatDelta]:
    text: list[str] = []
    calls: list[ToolCall] = []
    final: dict[str, Any] | None = None
    for chunk in json_lines(lines):
        if not isinstance(chunk, dict):
            raise ProviderError("stream line is not a JSON object", code=ErrorCode.SERVER)
        if "error" in chunk:
            raise _line_error(chunk["error"], secrets)
        with reading("api/chat"):
            message = chunk.get("message") or {}
            piece = message.get("content") or ""
            # Each chunk that has tool calls carries whole calls (not fragments): collect them.
            calls.extend(_tool_calls(message.get("tool_calls") or [], len(calls)))
        if piece:
            text.append(piece)
            yield ChatDelta(text=piece)
        if chunk.get("done"):
            final = chunk
            break
    if final is None:
        raise ProviderError("the stream ended before Ollama said done", code=ErrorCode.SERVER)
    answer = "".join(text)
    yield ChatDelta(
        tool_calls=calls,
        usage=_usage(final, body, answer),
        finish_reason=_finish_reason(final.get("done_reason"), calls),
    )


# --------------------------------------------------------------------------- the classes


@register
class OllamaChat(_OllamaBase, ChatModel):
    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        return _complete(self, _chat_body(self, system, messages, gen_conf, tools, stream=False))

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        """Text deltas as NDJSON lines arrive, then one last delta with tool calls, usage and finish reason."""
        body = _chat_body(self, system, messages, gen_conf, tools, stream=True)
        with self.post_stream("api/chat", json=body) as response:
            yield from _stream_deltas(response.iter_lines(), body, self.secrets)


@register
class OllamaImage2Text(_OllamaBase, Image2TextModel):
    def describe_with_prompt(self, image: bytes, prompt: str | None, mime_type: str = "image/png") -> TextResult:
        message = {
            "role": "user",
            "content": prompt or DEFAULT_IMAGE_PROMPT,
            "images": [base64.b64encode(image).decode("ascii")],
        }
        body = {"model": self.model_name, "messages": [message], "stream": False}
        result = _complete(self, body)
        return TextResult(result.text, result.usage)


@register
class OllamaEmbedding(_OllamaBase, EmbeddingModel):
    """``/api/embed`` (Ollama 0.3+). Ollama has no query/document mode, so queries go the same way."""

    batch_size = 16

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        # truncate: cut each input to the model's context instead of failing (the documented default, made explicit).
        body = {"model": self.model_name, "input": texts, "truncate": True}
        data = self.post_json("api/embed", json=body)
        with reading("api/embed"):
            vectors = np.asarray(data["embeddings"], dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ProviderError(
                f"/api/embed returned {len(vectors)} vectors for {len(texts)} texts", code=ErrorCode.SERVER
            )
        tokens = data.get("prompt_eval_count")
        if isinstance(tokens, int) and tokens > 0:
            usage = Usage(tokens, 0, tokens)
        else:
            usage = estimated(sum(estimate_tokens(t) for t in texts))
        return EmbeddingResult(vectors, usage)
