"""The Anthropic family: Claude through the Messages API (chat and image2text).

Wire format (plain ``httpx``, no SDK)::

    POST {base}/v1/messages
    headers  x-api-key: KEY, anthropic-version: 2023-06-01, content-type: application/json
    body     {"model", "max_tokens" (required), "messages", "system"?, "tools"?, "temperature"?,
              "top_p"?, "stop_sequences"?, "stream"?}

Messages come in OpenAI's shape and are mapped to Anthropic content blocks: system messages move
to the top-level ``system``; images become ``image`` blocks (base64 from data URLs, ``url`` sources
from http(s) URLs); an assistant's ``tool_calls`` become ``tool_use`` blocks; ``role: tool`` messages
become ``tool_result`` blocks in a user turn. Turns of one role in a row are merged, so roles
alternate and the tool results of one assistant turn share the user turn that follows it (results
first, any user text after them).

The answer's ``content`` blocks give the text (``text`` blocks joined) and the tool calls
(``tool_use`` blocks); ``stop_reason`` becomes an OpenAI-style finish reason. Usage is
``input_tokens`` plus the cache reads and writes (all billed input) and ``output_tokens``.

Streaming (``"stream": true``) is server-sent events whose data carries its own ``type``:
message_start (input usage), content_block_start (a tool_use's id and name), content_block_delta
(``text_delta`` / ``input_json_delta``), content_block_stop, message_delta (stop_reason, output
usage), message_stop, ping, and ``error`` -- which may arrive after the 200 (e.g. overloaded_error).

Errors are ``{"type": "error", "error": {"type", "message", "details"?}}``; the base check reads
them, and a ``details.error_code`` (the monthly spend cap's ``enforced_spend_limit_reached`` inside
a 429 rate_limit_error) replaces the broad type as the provider code.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from providers.base import (
    REFUSAL,
    BaseModel,
    ChatDelta,
    ChatModel,
    ChatResult,
    Image2TextModel,
    TextResult,
    ToolCall,
    Usage,
    estimate_tokens,
)
from providers.errors import ErrorCode, ProviderError
from providers.registry import register
from providers.wire import (
    DEFAULT_IMAGE_PROMPT,
    PendingCall,
    count,
    estimated,
    message_text,
    parse_arguments,
    reading,
    sse_events,
    stream_error,
)

ANTHROPIC_VERSION = "2023-06-01"
MESSAGES_PATH = "v1/messages"
# max_tokens is required; without one in gen_conf we ask for this much (never more than the model allows).
DEFAULT_MAX_TOKENS = 4096

# The most output tokens each model may be asked for (platform.claude.com model pages); a larger
# max_tokens is a 400, so we clip to it. Keys match a model id exactly or as a prefix before "-".
MAX_OUTPUT_TOKENS: dict[str, int] = {
    "claude-opus-4-8": 128_000,
    "claude-opus-4-7": 128_000,
    "claude-opus-4-6": 128_000,
    "claude-sonnet-4-6": 128_000,
    "claude-opus-4-5": 64_000,
    "claude-sonnet-4-5": 64_000,
    "claude-haiku-4-5": 64_000,
    "claude-sonnet-4": 64_000,
    "claude-3-7-sonnet": 64_000,
    "claude-opus-4-1": 32_000,
    "claude-opus-4": 32_000,
    "claude-3-5-sonnet": 8_192,
    "claude-3-5-haiku": 8_192,
    "claude-3-haiku": 4_096,
    "claude-3-opus": 4_096,
}

# Claude Opus 4.7 removed the sampling parameters: temperature / top_p / top_k are a 400 there.
# Ids are claude-<family>-<major>[-<minor>][-<date>]; from 4.7 on we send none of them.
_FAMILY_VERSION = re.compile(r"^claude-(?:opus|sonnet|haiku)-(\d+)(?:-(\d{1,2}))?(?:-\d{8})?$")
_NO_SAMPLING_FROM = (4, 7)

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": REFUSAL,
}
# Content blocks already in Anthropic's shape pass through unchanged.
_NATIVE_BLOCKS = frozenset({"image", "document", "tool_use", "tool_result"})


# --------------------------------------------------------------------------- model facts


def _limit_for(model: str) -> int | None:
    """The model's documented output limit (the longest matching key), None if unknown."""
    keys = [k for k in MAX_OUTPUT_TOKENS if model == k or model.startswith(k + "-")]
    return MAX_OUTPUT_TOKENS[max(keys, key=len)] if keys else None


def _takes_sampling(model: str) -> bool:
    match = _FAMILY_VERSION.match(model)
    if not match:
        return True
    return (int(match.group(1)), int(match.group(2) or 0)) < _NO_SAMPLING_FROM


# --------------------------------------------------------------------------- request


def _gen_params(model: str, gen_conf: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI-style gen_conf in Anthropic's names; what would fail the call is left out.

    Kept: max_tokens (required: defaulted, clipped to the model's limit), temperature (clipped to
    Anthropic's 0..1), top_p (only without temperature: newer models reject both at once),
    stop -> stop_sequences. Dropped: presence/frequency penalties, seed, response_format."""
    conf = gen_conf or {}
    limit = _limit_for(model)
    asked = conf.get("max_tokens")
    max_tokens = asked if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0 else DEFAULT_MAX_TOKENS
    params: dict[str, Any] = {"max_tokens": min(max_tokens, limit) if limit else max_tokens}
    if _takes_sampling(model):
        if isinstance(conf.get("temperature"), (int, float)):
            params["temperature"] = min(max(float(conf["temperature"]), 0.0), 1.0)
        elif isinstance(conf.get("top_p"), (int, float)):
            params["top_p"] = float(conf["top_p"])
    stop = conf.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str) and s.strip()]
    if stops:
        params["stop_sequences"] = stops
    return params


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type = header.split(";")[0].strip().lower() or "image/png"
        media_type = "image/jpeg" if media_type == "image/jpg" else media_type
        if media_type not in _IMAGE_TYPES:
            raise ProviderError(
                f"Anthropic takes JPEG, PNG, GIF or WebP images, not {media_type}", code=ErrorCode.INVALID_REQUEST
            )
        if ";base64" not in header:
            data = base64.b64encode(urllib.parse.unquote_to_bytes(data)).decode("ascii")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise ProviderError("an image must be a data: URL or an http(s) URL", code=ErrorCode.INVALID_REQUEST)


def _blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI-style message content as Anthropic content blocks (empty text left out: the API rejects it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for given in content if isinstance(content, list) else [content]:
        part = {"type": "text", "text": given} if isinstance(given, str) else given
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            blocks.append(_image_block(image.get("url", "") if isinstance(image, dict) else str(image or "")))
        elif kind in _NATIVE_BLOCKS:
            blocks.append(part)
    return blocks


def _text(content: Any) -> str:
    return "\n".join(b["text"] for b in _blocks(content) if b["type"] == "text")


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "tool_use",
        "id": call.get("id") or "",
        "name": function.get("name") or "",
        "input": parse_arguments(function.get("arguments")),
    }


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id") or ""}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        block["content"] = _blocks(content)
    return block


def _conversation(system: str | None, messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, Anthropic messages): system messages lifted out, roles alternating."""
    system_parts = [system] if system else []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": list(blocks)})

    for message in messages:
        role = message.get("role")
        if role == "system":
            text = _text(message.get("content"))
            if text:
                system_parts.append(text)
        elif role == "tool":
            add("user", [_tool_result(message)])
        elif role == "assistant":
            add("assistant", _blocks(message.get("content")) + [_tool_use(c) for c in message.get("tool_calls") or []])
        else:
            add("user", _blocks(message.get("content")))
    return "\n\n".join(system_parts), turns


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI function tool as an Anthropic tool (one already in Anthropic's shape passes)."""
    if "input_schema" in tool:
        return tool
    function = tool.get("function") or tool
    out: dict[str, Any] = {"name": function.get("name") or ""}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


# --------------------------------------------------------------------------- response


def _usage(raw: Any) -> Usage | None:
    """Anthropic's usage; cache writes and reads are input tokens too. None when nothing was reported."""
    if not isinstance(raw, dict):
        return None
    prompt = sum(count(raw.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    completion = count(raw.get("output_tokens"))
    return Usage(prompt, completion, prompt + completion) if prompt + completion else None


def _finish_reason(stop_reason: Any) -> str | None:
    if not stop_reason:
        return None
    return _FINISH_REASONS.get(str(stop_reason), str(stop_reason))


def _refusal(finish: str | None, stop_details: Any) -> str | None:
    """What a ``stop_reason: "refusal"`` says: ``stop_details.explanation`` when sent (with its
    ``category``), else a line saying that Claude refused."""
    if finish != REFUSAL:
        return None
    details = stop_details if isinstance(stop_details, dict) else {}
    explanation = details.get("explanation")
    category = details.get("category")
    text = explanation if isinstance(explanation, str) and explanation.strip() else "Claude refused to answer"
    return f"{text} (category: {category})" if isinstance(category, str) and category else text


def _spend_code(response: httpx.Response) -> str | None:
    """``error.details.error_code`` of an error body (says more than the error's type), if any."""
    try:
        details = response.json()["error"]["details"]
        code = details.get("error_code")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return code if isinstance(code, str) and code else None


class AnthropicMessages(BaseModel):
    """What chat and image2text share: the request, the call, the answer."""

    factories = ("Anthropic",)
    default_base_url = "https://api.anthropic.com"
    needs_key = True

    def request_url(self, path: str) -> str:
        """``{base}/v1/...`` whether or not the tenant's base URL already ends in ``/v1``."""
        return f"{self.http_base().removesuffix('/v1')}/{path}"

    def request_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers

    def check(self, response: httpx.Response) -> httpx.Response:
        try:
            return super().check(response)
        except ProviderError as exc:
            exc.provider_code = _spend_code(response) or exc.provider_code
            raise

    def _body(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None,
        tools: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        system_text, turns = _conversation(system, messages)
        if not turns:
            raise ProviderError(
                "Anthropic needs at least one user or assistant message", code=ErrorCode.INVALID_REQUEST
            )
        body: dict[str, Any] = {"model": self.model_name, **_gen_params(self.model_name, gen_conf)}
        if system_text:
            body["system"] = system_text
        body["messages"] = turns
        if tools:
            body["tools"] = [_tool(t) for t in tools]
        return body

    def _estimate(self, body: dict[str, Any], answer: str) -> Usage:
        prompt = "\n".join(p for p in (body.get("system"), message_text(body["messages"])) if p)
        return estimated(estimate_tokens(prompt), estimate_tokens(answer))

    def _complete(self, body: dict[str, Any]) -> ChatResult:
        data = self.post_json(MESSAGES_PATH, json=body)
        with reading(MESSAGES_PATH):
            blocks = data["content"]
            text = "".join(b["text"] for b in blocks if b["type"] == "text")
            calls = [
                ToolCall(b["id"], b["name"], parse_arguments(b.get("input"))) for b in blocks if b["type"] == "tool_use"
            ]
            finish = _finish_reason(data.get("stop_reason"))
        refusal = _refusal(finish, data.get("stop_details"))
        return ChatResult(text, _usage(data.get("usage")) or self._estimate(body, text), calls, finish, refusal)

    def _stream(self, body: dict[str, Any]) -> Iterator[ChatDelta]:
        body = {**body, "stream": True}
        with self.post_stream(MESSAGES_PATH, json=body) as response:
            yield from self._deltas(response.iter_lines(), body)

    def _deltas(self, lines: Iterable[str], body: dict[str, Any]) -> Iterator[ChatDelta]:
        text: list[str] = []
        calls: dict[int, PendingCall] = {}
        usage: dict[str, Any] = {}
        stop_reason: Any = None
        stop_details: Any = None
        for event in sse_events(lines):
            with reading(MESSAGES_PATH):
                kind = event.get("type")
                piece = ""
                if kind == "error":
                    raise stream_error(event.get("error"), self.api_key)
                if kind == "message_start":
                    usage.update(event["message"].get("usage") or {})
                elif kind == "content_block_start":
                    block = event["content_block"]
                    if block["type"] == "tool_use":
                        calls[int(event["index"])] = PendingCall(block["id"], block["name"])
                elif kind == "content_block_delta":
                    delta = event["delta"]
                    if delta["type"] == "text_delta":
                        piece = delta["text"]
                    elif delta["type"] == "input_json_delta":
                        calls[int(event["index"])].arguments.append(delta["partial_json"])
                elif kind == "message_delta":
                    stop_reason = event["delta"].get("stop_reason") or stop_reason
                    stop_details = event["delta"].get("stop_details") or stop_details
                    usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            if piece:
                text.append(piece)
                yield ChatDelta(text=piece)
        tool_calls = [ToolCall(c.id, c.name, parse_arguments("".join(c.arguments))) for _, c in sorted(calls.items())]
        answer = "".join(text)
        finish = _finish_reason(stop_reason)
        yield ChatDelta(
            tool_calls=tool_calls,
            usage=_usage(usage) or self._estimate(body, answer),
            finish_reason=finish,
            refusal=_refusal(finish, stop_details),
        )


@register
class AnthropicChat(AnthropicMessages, ChatModel):
    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        return self._complete(self._body(system, messages, gen_conf, tools))

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        """Text deltas as they arrive, then one last delta with tool calls, usage and finish reason."""
        return self._stream(self._body(system, messages, gen_conf, tools))


@register
class AnthropicImage2Text(AnthropicMessages, Image2TextModel):
    def describe_with_prompt(self, image: bytes, prompt: str | None, mime_type: str = "image/png") -> TextResult:
        """One user turn: the image first (Anthropic's advice), then the prompt."""
        data_url = f"data:{mime_type};base64,{base64.b64encode(image).decode('ascii')}"
        content = [
            {"type": "image_url", "image_url": {"url": data_url}},
            {"type": "text", "text": prompt or DEFAULT_IMAGE_PROMPT},
        ]
        result = self._complete(self._body(None, [{"role": "user", "content": content}], None, None))
        return TextResult(result.text, result.usage)
