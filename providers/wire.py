"""Wire helpers shared by the provider families: reading a response whose shape is not what the
provider documents, usage as reported or estimated, the text inside chat messages, tool-call
arguments, and stream decoding.

Stream decoding is here once for every family: :func:`sse_events` (server-sent events, each
``data`` one JSON value) and :func:`json_lines` (newline-delimited JSON, Ollama) decode through
:func:`decode_event`, and anything that is not JSON is :func:`malformed_event` -- the one
"malformed stream event" error (SERVER, so retried: a proxy cut the stream). An ``{"error": ...}``
object sent after a 200 had started the stream becomes :func:`stream_error`. Sending requests
(URL and header hooks, ``post``/``post_json``/``post_stream``) lives on
:class:`providers.base.BaseModel`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import json_repair

from providers.base import ToolCall, Usage, estimate_tokens
from providers.errors import ErrorCode, ProviderError, scrub

DEFAULT_IMAGE_PROMPT = "Describe this image in detail."


@dataclass
class PendingCall:
    """A tool call being assembled from a stream's fragments: its id, name and argument pieces."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class ChatStreamState:
    """What an OpenAI-style chat stream has said so far: text and refusal pieces, tool-call
    fragments by index (``{"index", "id"?, "function": {"name"?, "arguments"?}}``), the end."""

    text: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: dict[int, PendingCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None

    def add_tool_fragment(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index")
        if index is None:  # a server that leaves it out: a new id opens a call, anything else continues the last
            index = len(self.calls) if fragment.get("id") or not self.calls else max(self.calls)
        call = self.calls.setdefault(int(index), PendingCall())
        call.id = fragment.get("id") or call.id
        function = fragment.get("function") or {}
        call.name = function.get("name") or call.name
        if function.get("arguments"):
            call.arguments.append(function["arguments"])

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(c.id, c.name, parse_arguments("".join(c.arguments))) for _, c in sorted(self.calls.items())]


def function_call(raw: dict[str, Any]) -> ToolCall:
    """One whole OpenAI-style tool call ``{"id", "function": {"name", "arguments"}}``."""
    function = raw["function"]
    return ToolCall(id=raw.get("id") or "", name=function["name"], arguments=parse_arguments(function.get("arguments")))


def chat_usage(raw: Any, messages: Iterable[dict[str, Any]], answer: str) -> Usage:
    """Usage as reported (:func:`reported_usage`), else estimated from the messages and the answer."""
    return reported_usage(raw) or estimated(estimate_tokens(message_text(messages)), estimate_tokens(answer))


def rerank_usage(data: dict[str, Any], query: str, texts: Sequence[str]) -> Usage:
    """``usage`` (vLLM, Jina), ``meta.tokens`` (Xinference, SiliconFlow), else an estimate of what a
    cross-encoder reads: the query once beside every document."""
    meta = data.get("meta")
    return (
        reported_usage(data.get("usage"))
        or reported_usage(meta.get("tokens") if isinstance(meta, dict) else None)
        or estimated(sum(estimate_tokens(query) + estimate_tokens(t) for t in texts))
    )


@contextmanager
def reading(path: str) -> Iterator[None]:
    """Turn a response that lacks the fields we need into a ProviderError (SERVER)."""
    try:
        yield
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ProviderError(
            f"/{path} answered in an unexpected shape ({type(exc).__name__}: {exc})", code=ErrorCode.SERVER
        ) from None


def count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def reported_usage(raw: Any) -> Usage | None:
    """Usage as the server reported it (prompt/completion or input/output names), None if it did not.
    Tokens reported only as a total count as prompt tokens."""
    if not isinstance(raw, dict):
        return None
    prompt = count(raw.get("prompt_tokens")) or count(raw.get("input_tokens"))
    completion = count(raw.get("completion_tokens")) or count(raw.get("output_tokens"))
    total = count(raw.get("total_tokens")) or prompt + completion
    if not total:
        return None
    return Usage(prompt or (total - completion), completion, total)


def estimated(prompt: int, completion: int = 0) -> Usage:
    return Usage(prompt, completion, prompt + completion, estimated=True)


def message_text(messages: Iterable[dict[str, Any]]) -> str:
    """The text inside chat messages (string contents and text parts), for estimates."""
    parts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(parts)


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


def malformed_event(what: str) -> ProviderError:
    """The one error for a stream event we cannot decode (SERVER: retried)."""
    return ProviderError(f"malformed stream event ({what})", code=ErrorCode.SERVER)


def decode_event(data: str | bytes) -> Any:
    """One stream event's JSON (:func:`malformed_event` if it is not JSON)."""
    try:
        return json.loads(data)
    except ValueError:
        raise malformed_event(f"{len(data)} bytes are not JSON") from None


def sse_events(lines: Iterable[str]) -> Iterator[Any]:
    """The decoded JSON ``data`` of each server-sent event, up to ``[DONE]``."""
    for data in sse_data(lines):
        yield decode_event(data)


def json_lines(lines: Iterable[str]) -> Iterator[Any]:
    """The decoded JSON of each non-blank line of a newline-delimited JSON stream."""
    for line in lines:
        if line.strip():
            yield decode_event(line)


def stream_error(error: Any, *secrets: str | None) -> ProviderError:
    """An ``{"error": ...}`` event sent after a 200 had already started the stream, scrubbed of
    every secret given. A numeric ``code`` in the HTTP range (OpenRouter) counts as the status."""
    if not isinstance(error, dict):
        return ProviderError(scrub(str(error), *secrets))
    raw = error.get("code")
    status = raw if isinstance(raw, int) and not isinstance(raw, bool) and 400 <= raw < 600 else None
    code = raw if isinstance(raw, str) and raw else error.get("type")
    message = scrub(str(error.get("message") or error), *secrets)
    return ProviderError(message, status=status, provider_code=code or None)


def sse_data(lines: Iterable[str]) -> Iterator[str]:
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
