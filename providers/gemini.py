"""Google's Gemini API (``generativelanguage.googleapis.com``): chat, image2text, embeddings.

Wire format (plain ``httpx``; the key travels in the ``x-goog-api-key`` header, never in the
URL, so it cannot land in a log line)::

    POST {base}/models/{model}:generateContent              {"contents", "systemInstruction"?,
                                                             "generationConfig"?, "tools"?}
    POST {base}/models/{model}:streamGenerateContent?alt=sse  same body; SSE, each event one
                                                             GenerateContentResponse
    POST {base}/models/{model}:batchEmbedContents           {"requests": [{"model", "content",
                                                             "taskType"}]}  (at most 100)

OpenAI-style messages map to ``contents``: ``assistant`` becomes role ``model``, its
``tool_calls`` become ``functionCall`` parts, and ``tool`` messages become ``functionResponse``
parts (the function's name recovered from the assistant's tool-call id). The request and
answer code here also serves Vertex AI (``providers.google_cloud``), which speaks the same
GenerateContent format behind other URLs and OAuth.

Errors come as ``{"error": {"code", "message", "status", "details": [...]}}``. Google sends
RESOURCE_EXHAUSTED (429) both for a per-minute rate limit and for a spent daily or free-tier
quota, with a message that says "quota" either way; :func:`google_error` reads the
``google.rpc.QuotaFailure`` violations to tell them apart, and ``google.rpc.RetryInfo`` for
the wait. Without a QuotaFailure, see :func:`_exhausted_code` for what decides.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

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
from providers.errors import ErrorCode, ProviderError, scrub
from providers.http import error_from_response, error_json, parse_retry_after, rate_limit_headers
from providers.registry import register
from providers.wire import (
    DEFAULT_IMAGE_PROMPT,
    count,
    estimated,
    message_text,
    parse_arguments,
    reading,
    sse_events,
)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
MAX_STOP_SEQUENCES = 5  # GenerationConfig.stopSequences: "up to 5"

# OpenAI-style generation names -> GenerationConfig fields. presence/frequency penalties are
# left out on purpose: Gemini 2.5 and later answer 400 "Penalty is not enabled for models/...".
_GEN_CONF_NAMES = {"temperature": "temperature", "top_p": "topP", "max_tokens": "maxOutputTokens", "seed": "seed"}

_FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length"}
# Candidates withheld by a filter (safety, copyright recitation, blocklists, PII).
_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)

# Google's documented placeholder for a replayed functionCall whose thought signature we did not
# keep (our ToolCall has no place for it): Gemini 3 answers 400 without one. Models before 2.5
# never made signatures, so they get none.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_NO_SIGNATURES = re.compile(r"gemini-(?:1\.|2\.0)")

# A 429 whose quota will not come back within minutes: a daily quota, a limit of 0 (the model
# is not in this tier at all), spent prepaid credits.
_LONG_QUOTA = re.compile(r"per\s*day|daily", re.I)
_NO_CREDIT = re.compile(r"credits? (?:are|is|have been) depleted|prepay", re.I)
# The Gemini API's text for a spent plan quota (a 429 that, without QuotaFailure, names no limit).
_PLAN_QUOTA = re.compile(r"exceeded your current quota", re.I)


# --------------------------------------------------------------------------- errors


def _detail(details: list[Any], kind: str) -> list[dict[str, Any]]:
    return [d for d in details if isinstance(d, dict) and str(d.get("@type", "")).endswith(f"google.rpc.{kind}")]


def _seconds(duration: Any) -> float | None:
    """A protobuf Duration in JSON ("17s", "0.5s") as seconds."""
    if not isinstance(duration, str) or not duration.endswith("s"):
        return None
    try:
        return max(0.0, float(duration[:-1]))
    except ValueError:
        return None


def _exhausted_code(
    message: str, quota_failures: list[dict[str, Any]], infos: list[dict[str, Any]], wait_given: bool
) -> ErrorCode:
    """RESOURCE_EXHAUSTED: QUOTA when the limit that was hit will not reset soon, else RATE_LIMIT.

    With a ``QuotaFailure`` (or ErrorInfo quota metadata) the limit's id decides: a per-day
    limit, or a limit of 0, is QUOTA. Without one, the body and headers decide:

    - a wait given (``RetryInfo`` in the body or a ``Retry-After`` header): RATE_LIMIT, since
      Google said when to come back;
    - "You exceeded your current quota, please check your plan and billing details" with no
      wait (only a ``Help`` link): QUOTA. Reporters see this one last until the daily quota
      resets at midnight Pacific time; retrying within the hour only spends attempts;
    - anything else ("Resource has been exhausted (e.g. check quota).", "Resource exhausted.
      Please try again later."): RATE_LIMIT. That is Vertex AI's shared capacity (dynamic shared
      quota), which Google documents as transient, to be retried with backoff; and should it be a
      daily limit after all, the retries run out and the chunk fails.
    """
    limits: list[tuple[str, str]] = []  # (limit id, limit value)
    for failure in quota_failures:
        for violation in failure.get("violations") or []:
            if isinstance(violation, dict):
                limits.append((str(violation.get("quotaId", "")), str(violation.get("quotaValue", ""))))
    for info in infos:  # the older shape: ErrorInfo metadata quota_limit / quota_limit_value
        metadata = info.get("metadata")
        if isinstance(metadata, dict) and metadata.get("quota_limit"):
            limits.append((str(metadata["quota_limit"]), str(metadata.get("quota_limit_value", ""))))
    if any(_LONG_QUOTA.search(limit_id) or value == "0" for limit_id, value in limits):
        return ErrorCode.QUOTA
    if _NO_CREDIT.search(message):
        return ErrorCode.QUOTA
    if not limits and not wait_given and (_PLAN_QUOTA.search(message) or _LONG_QUOTA.search(message)):
        return ErrorCode.QUOTA
    return ErrorCode.RATE_LIMIT


def google_error(
    status: int | None, body: Any, headers: httpx.Headers | None = None, *secrets: str | None
) -> ProviderError | None:
    """The ProviderError for Google's ``{"error": {...}}`` body (None if ``body`` is not one).

    ``provider_code`` is the ErrorInfo reason (``API_KEY_INVALID``) when there is one, else the
    status name (``RESOURCE_EXHAUSTED``); a RESOURCE_EXHAUSTED carries its classification."""
    if isinstance(body, list) and body:  # streamGenerateContent wraps its error in a list
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    details = error.get("details")
    details = details if isinstance(details, list) else []
    infos = _detail(details, "ErrorInfo")
    quota_failures = _detail(details, "QuotaFailure")
    status_name = error.get("status")
    status_name = status_name if isinstance(status_name, str) else None
    reason = next((str(i["reason"]) for i in infos if i.get("reason")), None)
    if status is None and isinstance(error.get("code"), int):
        status = error["code"]
    message = str(error.get("message") or status_name or f"HTTP {status}")
    quota_ids = [
        str(v.get("quotaId"))
        for f in quota_failures
        for v in f.get("violations") or []
        if isinstance(v, dict) and v.get("quotaId")
    ]
    if quota_ids:
        message += f" [quota: {', '.join(quota_ids)}]"
    retry_after = next(
        (s for s in (_seconds(r.get("retryDelay")) for r in _detail(details, "RetryInfo")) if s is not None), None
    )
    headers = headers if headers is not None else httpx.Headers()
    code = None
    if status == 429 or status_name == "RESOURCE_EXHAUSTED":
        wait_given = retry_after is not None or parse_retry_after(headers) is not None
        code = _exhausted_code(message, quota_failures, infos, wait_given)
    return ProviderError(
        scrub(message, *secrets)[:2000],
        status=status,
        provider_code=reason or status_name,
        retry_after=retry_after if retry_after is not None else parse_retry_after(headers),
        code=code,
        rate_limits=rate_limit_headers(headers),
    )


def error_from_google_response(response: httpx.Response, *secrets: str | None) -> ProviderError:
    return google_error(response.status_code, error_json(response), response.headers, *secrets) or error_from_response(
        response, *secrets
    )


# --------------------------------------------------------------------------- request


def _gen_config(gen_conf: dict[str, Any] | None) -> dict[str, Any]:
    conf = gen_conf or {}
    out = {_GEN_CONF_NAMES[k]: v for k, v in conf.items() if k in _GEN_CONF_NAMES and v is not None}
    stop = conf.get("stop")
    if stop:
        out["stopSequences"] = ([stop] if isinstance(stop, str) else list(stop))[:MAX_STOP_SEQUENCES]
    response_format = conf.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        out["responseMimeType"] = "application/json"
    return out


def _image_part(url: str) -> dict[str, Any]:
    match = re.match(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", url, re.S)
    if not match:
        raise ProviderError("Gemini takes images as data: URLs (base64) only", code=ErrorCode.INVALID_REQUEST)
    return {"inlineData": {"mimeType": match.group(1), "data": match.group(2)}}


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append(_image_part(image.get("url", "") if isinstance(image, dict) else str(image)))
        else:
            raise ProviderError(f"Gemini cannot take a message part of type {kind!r}", code=ErrorCode.INVALID_REQUEST)
    return parts


def _tool_result(content: Any) -> dict[str, Any]:
    """A tool message's content as a functionResponse ``response`` (which must be an object)."""
    text = content if isinstance(content, str) else "".join(p.get("text", "") for p in _parts(content))
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return parsed if isinstance(parsed, dict) else {"result": parsed}


@dataclass
class _Conversation:
    """OpenAI-style messages folded into Gemini ``contents`` and system text."""

    signatures: bool
    system: list[str] = field(default_factory=list)
    contents: list[dict[str, Any]] = field(default_factory=list)
    call_names: dict[str, str] = field(default_factory=dict)  # tool-call id -> function name

    def add(self, message: dict[str, Any]) -> None:
        role = message.get("role")
        if role == "system":
            self.system.extend(p["text"] for p in _parts(message.get("content")) if "text" in p)
        elif role == "user":
            self._append("user", _parts(message.get("content")))
        elif role == "assistant":
            self._append("model", _parts(message.get("content")) + self._calls(message.get("tool_calls") or []))
        elif role == "tool":
            self._append("user", [self._response(message)], merge=True)
        else:
            raise ProviderError(f"Gemini cannot take a message with role {role!r}", code=ErrorCode.INVALID_REQUEST)

    def _calls(self, tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        for call in tool_calls:
            function = call.get("function") or {}
            name = function.get("name") or ""
            if call.get("id"):
                self.call_names[call["id"]] = name
            part: dict[str, Any] = {"functionCall": {"name": name, "args": parse_arguments(function.get("arguments"))}}
            if self.signatures and not parts:  # the first call of a step carries the signature
                part["thoughtSignature"] = SKIP_SIGNATURE
            parts.append(part)
        return parts

    def _response(self, message: dict[str, Any]) -> dict[str, Any]:
        name = self.call_names.get(message.get("tool_call_id") or "") or message.get("name")
        if not name:
            raise ProviderError(
                f"tool message answers an unknown tool call {message.get('tool_call_id')!r}",
                code=ErrorCode.INVALID_REQUEST,
            )
        return {"functionResponse": {"name": name, "response": _tool_result(message.get("content"))}}

    def _append(self, role: str, parts: list[dict[str, Any]], merge: bool = False) -> None:
        if not parts:
            return
        last = self.contents[-1] if self.contents else None
        if merge and last and last["role"] == role and all("functionResponse" in p for p in last["parts"]):
            last["parts"].extend(parts)  # parallel calls answered in one turn
        else:
            self.contents.append({"role": role, "parts": parts})


def _function_declaration(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or tool
    declaration = {"name": function["name"], "description": function.get("description") or ""}
    if function.get("parameters"):
        # JSON Schema as OpenAI tools carry it; "parameters" would take only an OpenAPI subset.
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def generate_body(
    model_name: str,
    system: str | None,
    messages: list[dict[str, Any]],
    gen_conf: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The GenerateContentRequest for OpenAI-style arguments (shared with Vertex AI)."""
    conversation = _Conversation(signatures=not _NO_SIGNATURES.search(model_name))
    if system:
        conversation.system.append(system)
    for message in messages:
        conversation.add(message)
    body: dict[str, Any] = {"contents": conversation.contents}
    if conversation.system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(conversation.system)}]}
    config = _gen_config(gen_conf)
    if config:
        body["generationConfig"] = config
    if tools:
        body["tools"] = [{"functionDeclarations": [_function_declaration(t) for t in tools]}]
    return body


# --------------------------------------------------------------------------- answer


def _usage(raw: Any) -> Usage | None:
    """usageMetadata: thinking tokens count as completion, tool-use prompt tokens as prompt."""
    if not isinstance(raw, dict):
        return None
    prompt = count(raw.get("promptTokenCount")) + count(raw.get("toolUsePromptTokenCount"))
    completion = count(raw.get("candidatesTokenCount")) + count(raw.get("thoughtsTokenCount"))
    total = count(raw.get("totalTokenCount")) or prompt + completion
    return Usage(prompt, completion, total) if total else None


def _blocked(what: str, reason: str, message: str = "") -> ProviderError:
    return ProviderError(
        f"Gemini blocked the {what} ({reason})" + (f": {message}" if message else ""),
        provider_code=reason,
        code=ErrorCode.CONTENT_FILTER,
    )


@dataclass
class _Answer:
    """What the model has said so far, from one response or a stream of them."""

    prompt_text: str
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    reason: str | None = None
    usage: Any = None

    def feed(self, data: Any, secrets: tuple[str, ...] = ()) -> str:
        """Fold one GenerateContentResponse in; return its new text."""
        error = google_error(None, data, None, *secrets)
        if error is not None:  # an error event after a 200 had already opened the stream
            raise error
        self.usage = data.get("usageMetadata") or self.usage
        feedback = data.get("promptFeedback") or {}
        if feedback.get("blockReason"):
            raise _blocked("prompt", feedback["blockReason"], feedback.get("blockReasonMessage") or "")
        candidates = data.get("candidates") or []
        if not candidates:
            return ""
        candidate = candidates[0]
        self.reason = candidate.get("finishReason") or self.reason
        new = ""
        for part in (candidate.get("content") or {}).get("parts") or []:
            if part.get("thought"):
                continue
            if "functionCall" in part:
                call = part["functionCall"]
                call_id = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
                self.calls.append(ToolCall(call_id, call["name"], parse_arguments(call.get("args"))))
            elif isinstance(part.get("text"), str):
                new += part["text"]
        self.text.append(new)
        return new

    def finish_reason(self) -> str | None:
        """Raise if a filter withheld the whole answer; else the reason in OpenAI's words."""
        text = "".join(self.text)
        if self.reason in _FILTERED:
            if not text and not self.calls:
                raise _blocked("answer", self.reason)
            return "content_filter"
        if self.calls and self.reason in (None, "STOP"):
            return "tool_calls"
        if self.reason is None:
            return None
        return _FINISH_REASONS.get(self.reason, self.reason.lower())

    def result_usage(self) -> Usage:
        return _usage(self.usage) or estimated(estimate_tokens(self.prompt_text), estimate_tokens("".join(self.text)))


def _prompt_text(system: str | None, messages: list[dict[str, Any]]) -> str:
    return "\n".join(filter(None, [system or "", message_text(messages)]))


# --------------------------------------------------------------------------- the wire


class GeminiWire(BaseModel):
    """URL, auth and error reading for the GenerateContent family: a call's ``path`` is the
    method (``generateContent``). Vertex AI overrides :meth:`request_url` and :meth:`request_headers`."""

    factories = ("Gemini",)
    default_base_url = DEFAULT_BASE_URL
    needs_key = True

    def model_path(self) -> str:
        return quote(self.model_name.removeprefix("models/"), safe="-._~")

    def request_url(self, path: str) -> str:
        return f"{self.http_base()}/models/{self.model_path()}:{path}"

    def request_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key} if self.api_key else {}

    def check(self, response: httpx.Response) -> httpx.Response:
        self.rate_limits = rate_limit_headers(response.headers)
        if response.is_success:
            return response
        raise error_from_google_response(response, *self.secrets)

    def generate(self, body: dict[str, Any], prompt_text: str) -> ChatResult:
        data = self.post_json("generateContent", json=body)
        answer = _Answer(prompt_text)
        with reading("generateContent"):
            answer.feed(data, self.secrets)
        return ChatResult("".join(answer.text), answer.result_usage(), answer.calls, answer.finish_reason())

    def generate_stream(self, body: dict[str, Any], prompt_text: str) -> Iterator[ChatDelta]:
        answer = _Answer(prompt_text)
        with self.post_stream("streamGenerateContent", params={"alt": "sse"}, json=body) as response:
            for chunk in sse_events(response.iter_lines()):
                with reading("streamGenerateContent"):
                    text = answer.feed(chunk, self.secrets)
                if text:
                    yield ChatDelta(text=text)
        yield ChatDelta(tool_calls=answer.calls, usage=answer.result_usage(), finish_reason=answer.finish_reason())


@register
class GeminiChat(GeminiWire, ChatModel):
    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        body = generate_body(self.model_name, system, messages, gen_conf, tools)
        return self.generate(body, _prompt_text(system, messages))

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        """Text deltas as they arrive, then one last delta with tool calls, usage and finish reason."""
        body = generate_body(self.model_name, system, messages, gen_conf, tools)
        yield from self.generate_stream(body, _prompt_text(system, messages))


@register
class GeminiImage2Text(GeminiWire, Image2TextModel):
    def describe_with_prompt(self, image: bytes, prompt: str | None, mime_type: str = "image/png") -> TextResult:
        prompt = prompt or DEFAULT_IMAGE_PROMPT
        parts = [{"text": prompt}, {"inlineData": {"mimeType": mime_type, "data": base64.b64encode(image).decode()}}]
        result = self.generate({"contents": [{"role": "user", "parts": parts}]}, prompt)
        return TextResult(result.text, result.usage)


@register
class GeminiEmbedding(GeminiWire, EmbeddingModel):
    """``batchEmbedContents``: RETRIEVAL_DOCUMENT for documents, RETRIEVAL_QUERY for queries.
    Usage is ``usageMetadata.promptTokenCount`` where the answer reports it (gemini-embedding-2
    does), else estimated."""

    batch_size = 100  # "at most 100 requests can be in one batch"

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, "RETRIEVAL_DOCUMENT")

    def _encode_query_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, "RETRIEVAL_QUERY")

    def _embed(self, texts: list[str], task_type: str) -> EmbeddingResult:
        model = f"models/{self.model_name.removeprefix('models/')}"
        requests = [{"model": model, "content": {"parts": [{"text": t}]}, "taskType": task_type} for t in texts]
        data = self.post_json("batchEmbedContents", json={"requests": requests})
        with reading("batchEmbedContents"):
            vectors = np.asarray([row["values"] for row in data["embeddings"]], dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ProviderError(
                f":batchEmbedContents returned {len(vectors)} vectors for {len(texts)} texts", code=ErrorCode.SERVER
            )
        return EmbeddingResult(
            vectors, _usage(data.get("usageMetadata")) or estimated(sum(estimate_tokens(t) for t in texts))
        )
