"""The Cohere family (API v2): chat with tools and streaming, embeddings with a query mode, rerank.

Wire format (docs.cohere.com/reference, API v2; plain ``httpx``, ``Authorization: Bearer``)::

    POST {base}/chat    {"model", "messages", "tools"?, "stream"?, "temperature", "p", "max_tokens",
                         "stop_sequences", "seed", "frequency_penalty", "presence_penalty",
                         "response_format"}
        -> {"id", "finish_reason": "COMPLETE" | "STOP_SEQUENCE" | "MAX_TOKENS" | "TOOL_CALL" | "ERROR" | ...,
            "message": {"role", "content": [{"type": "text", "text"}], "tool_plan"?,
                        "tool_calls"?: [{"id", "type": "function", "function": {"name", "arguments"}}]},
            "usage": {"billed_units": {"input_tokens", "output_tokens"}, "tokens": {...}}}
        stream: server-sent events whose JSON carries a ``type``: message-start, content-start,
        content-delta (``delta.message.content.text``), content-end, tool-plan-delta,
        tool-call-start / tool-call-delta (``delta.message.tool_calls``, one call per ``index``),
        tool-call-end, citation-start/-end, message-end (``delta.finish_reason``, ``delta.usage``)
    POST {base}/embed   {"model", "texts", "input_type": "search_document" | "search_query",
                         "embedding_types": ["float"]}   (at most 96 texts a call)
        -> {"id", "embeddings": {"float": [[...], ...]}, "texts", "meta": {"billed_units": {"input_tokens"}}}
    POST {base}/rerank  {"model", "query", "documents": [...], "top_n"}
        -> {"id", "results": [{"index", "relevance_score"}], "meta": {"billed_units": {"search_units"}}}

The base URL carries the version (``https://api.cohere.com/v2``), as OpenAI's carries ``/v1``.
v2 messages are close to OpenAI's: system/user/assistant/tool roles, OpenAI-style function
tools, ``tool_calls`` and ``tool_call_id``. The differences we map: ``top_p`` is ``p``, ``stop``
is ``stop_sequences`` (at most 5), the penalties range over 0..1 and ``p`` over 0.01..0.99, an
assistant's text beside its tool calls is its ``tool_plan``, and a JSON-schema response format
is ``{"type": "json_object", "json_schema": ...}``. Usage is what the key is billed for
(``billed_units``), else the raw token counts; rerank bills search units, not tokens, so its
usage is estimated.

Errors are ``{"message": ...}`` (sometimes with an ``id``), read by providers.http. Cohere
documents 400, 401, 402 (billing limit reached: QUOTA), 404, 429, 499 and 500. Two need more
than the status: a 429 is a per-minute rate limit, except the monthly call allowance of trial
keys (1,000 calls a month), which waiting minutes never fixes, so a 429 that speaks of the
month is QUOTA; a 499 ("request cancelled") is not ours to have sent -- our own timeouts and
cancellations never see a response -- and Cohere's advice for it is to try again, so it is SERVER.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
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
    RerankModel,
    RerankResult,
    estimate_tokens,
)
from providers.errors import ErrorCode, ProviderError
from providers.jina import rerank_result
from providers.registry import register
from providers.wire import (
    ChatStreamState,
    chat_usage,
    estimated,
    function_call,
    reading,
    reported_usage,
    sse_events,
)

FACTORY = "Cohere"
MAX_RERANK_DOCUMENTS = 1_000

# A 429 about the month is the trial key's monthly allowance, not the per-minute limit.
_MONTHLY = re.compile(r"month", re.IGNORECASE)

# Cohere's finish reasons, named as OpenAI names them; the failed ones raise.
_FINISH = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR_TOXIC": "content_filter",
}
_FAILED = {
    "ERROR": ErrorCode.SERVER,  # "the generation failed due to an internal error"
    "TIMEOUT": ErrorCode.TIMEOUT,
    "ERROR_LIMIT": ErrorCode.INVALID_REQUEST,  # the context limit was reached
}

# (lowest, highest) Cohere accepts. Its documented 400s include "temperature must be between 0
# and 1.0 inclusive"; OpenAI's ranges are wider, so values are clamped rather than sent to fail.
_RANGES = {
    "temperature": (0.0, 1.0),
    "p": (0.01, 0.99),
    "frequency_penalty": (0.0, 1.0),
    "presence_penalty": (0.0, 1.0),
}
_MAX_STOP_SEQUENCES = 5


def _cohere_code(status: int | None, message: str) -> ErrorCode | None:
    """What Cohere's status and text say beyond the status alone (see the module docstring)."""
    if status == 429 and _MONTHLY.search(message):
        return ErrorCode.QUOTA
    if status == 499:
        return ErrorCode.SERVER
    return None


class _Cohere(BaseModel):
    factories: ClassVar[tuple[str, ...]] = (FACTORY,)
    default_base_url: ClassVar[str] = "https://api.cohere.com/v2"
    needs_key: ClassVar[bool] = True

    def check(self, response: httpx.Response) -> httpx.Response:
        try:
            return super().check(response)
        except ProviderError as exc:
            exc.code = exc.code or _cohere_code(exc.status, exc.message)
            raise


# --------------------------------------------------------------------------- chat


def _text_of(content: Any) -> str:
    """A message's text: the string itself, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _wire_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments or {})
    return {
        "id": call.get("id") or "",
        "type": "function",
        "function": {"name": function.get("name"), "arguments": arguments},
    }


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI-style message in v2's terms."""
    role = message.get("role")
    content = message.get("content")
    if role == "assistant":
        text = _text_of(content)
        if not message.get("tool_calls"):
            return {"role": "assistant", "content": text}
        out: dict[str, Any] = {"role": "assistant", "tool_calls": [_wire_call(c) for c in message["tool_calls"]]}
        if text:
            out["tool_plan"] = text  # v2 keeps an assistant's words beside its tool calls here
        return out
    if role == "tool":
        return {"role": "tool", "tool_call_id": message.get("tool_call_id") or "", "content": _text_of(content)}
    if isinstance(content, list):  # text and image_url parts are spelled as OpenAI spells them
        content = [p for p in content if isinstance(p, dict) and p.get("type") in ("text", "image_url")]
    return {"role": role, "content": content if content is not None else ""}


def _response_format(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        return {"type": "json_object", "json_schema": schema} if schema else {"type": "json_object"}
    return None


def _gen_conf(gen_conf: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI-style generation settings in Cohere's names and ranges; anything else is dropped."""
    conf = {k: v for k, v in (gen_conf or {}).items() if v is not None}
    out: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "p"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
    ):
        if ours in conf:
            low, high = _RANGES[theirs]
            out[theirs] = min(high, max(low, float(conf[ours])))
    for key in ("max_tokens", "seed"):
        if key in conf:
            out[key] = int(conf[key])
    stop = conf.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if stops:
        out["stop_sequences"] = stops[:_MAX_STOP_SEQUENCES]
    response_format = _response_format(conf.get("response_format"))
    if response_format:
        out["response_format"] = response_format
    return out


def _chat_body(
    model: BaseModel,
    system: str | None,
    messages: list[dict[str, Any]],
    gen_conf: dict[str, Any] | None,
    tools: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    head = [{"role": "system", "content": system}] if system else []
    body: dict[str, Any] = {"model": model.model_name, "messages": head + [_message(m) for m in messages]}
    body.update(_gen_conf(gen_conf))
    if tools:
        body["tools"] = tools  # v2 takes OpenAI-style function tools as they are
    return body


def _finish(reason: Any) -> str | None:
    """Cohere's finish reason in OpenAI's words; a failed generation raises."""
    if reason is None:
        return None
    name = str(reason).upper()
    if name in _FAILED:
        raise ProviderError(
            f"Cohere ended the generation with finish_reason {name}", provider_code=name, code=_FAILED[name]
        )
    return _FINISH.get(name, name.lower())


def _billed(raw: Any) -> dict[str, Any] | None:
    """Usage as billed (``billed_units``), else as counted (``tokens``)."""
    if not isinstance(raw, dict):
        return None
    return next((raw[k] for k in ("billed_units", "tokens") if reported_usage(raw.get(k))), None)


def _read_event(state: ChatStreamState, event: dict[str, Any]) -> str:
    """Fold one stream event into ``state``; return its new text."""
    kind = event.get("type")
    delta = event.get("delta") or {}
    message = delta.get("message") or {}
    if kind == "content-delta":
        text = (message.get("content") or {}).get("text") or ""  # a reasoning model's "thinking" is not text
        state.text.append(text)
        return text
    if kind in ("tool-call-start", "tool-call-delta"):
        call = message.get("tool_calls") or {}
        state.add_tool_fragment({"index": event.get("index"), "id": call.get("id"), "function": call.get("function")})
    elif kind == "message-end":
        state.finish_reason = delta.get("finish_reason")
        state.usage = delta.get("usage")
    return ""


def _stream_deltas(lines: Iterable[str], body: dict[str, Any]) -> Iterator[ChatDelta]:
    state = ChatStreamState()
    for event in sse_events(lines):
        with reading("chat"):
            text = _read_event(state, event)
        if text:
            yield ChatDelta(text=text)
    finish = _finish(state.finish_reason)
    usage = chat_usage(_billed(state.usage), body["messages"], "".join(state.text))
    yield ChatDelta(tool_calls=state.tool_calls(), usage=usage, finish_reason=finish)


@register
class CohereChat(_Cohere, ChatModel):
    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        body = _chat_body(self, system, messages, gen_conf, tools)
        data = self.post_json("chat", json=body)
        with reading("chat"):
            message = data["message"]
            text = "".join(p["text"] for p in message.get("content") or [] if p.get("type") == "text")
            tool_calls = [function_call(call) for call in message.get("tool_calls") or []]
        finish = _finish(data.get("finish_reason"))
        return ChatResult(text, chat_usage(_billed(data.get("usage")), body["messages"], text), tool_calls, finish)

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        """Text deltas as they arrive, then one last delta with tool calls, usage and finish reason."""
        body = _chat_body(self, system, messages, gen_conf, tools)
        body["stream"] = True
        with self.post_stream("chat", json=body) as response:
            yield from _stream_deltas(response.iter_lines(), body)


# --------------------------------------------------------------------------- embeddings


@register
class CohereEmbedding(_Cohere, EmbeddingModel):
    batch_size = 96  # "Maximum number of texts per call is 96"

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, "search_document")

    def _encode_query_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, "search_query")

    def _embed(self, texts: list[str], input_type: str) -> EmbeddingResult:
        body = {"model": self.model_name, "texts": texts, "input_type": input_type, "embedding_types": ["float"]}
        data = self.post_json("embed", json=body)
        with reading("embed"):
            vectors = np.asarray(data["embeddings"]["float"], dtype=np.float32)
            reported = reported_usage((data.get("meta") or {}).get("billed_units"))
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ProviderError(f"/embed returned {len(vectors)} vectors for {len(texts)} texts", code=ErrorCode.SERVER)
        return EmbeddingResult(vectors, reported or estimated(sum(estimate_tokens(t) for t in texts)))


# --------------------------------------------------------------------------- rerank


@register
class CohereRerank(_Cohere, RerankModel):
    def similarity(self, query: str, texts: Sequence[str]) -> RerankResult:
        """Scores in the documents' order. Rerank bills search units, not tokens: usage is
        ``meta.tokens`` when Cohere sends it, else estimated (the query read beside every document).
        Above :data:`MAX_RERANK_DOCUMENTS` documents (Cohere's advised ceiling a request) the
        documents are split into requests and the scores merged."""
        return self.in_batches(query, texts, MAX_RERANK_DOCUMENTS, self._rerank)

    def _rerank(self, query: str, texts: list[str]) -> RerankResult:
        body = {"model": self.model_name, "query": query, "documents": texts, "top_n": len(texts)}
        data = self.post_json("rerank", json=body)
        meta = data.get("meta")
        return rerank_result(data, "results", meta.get("tokens") if isinstance(meta, dict) else None, query, texts)
