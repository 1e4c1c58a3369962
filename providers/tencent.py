"""Tencent Hunyuan through the Tencent Cloud API 3.0 (``hunyuan`` 2023-09-01), signed TC3-HMAC-SHA256.

Wire format (plain ``httpx``; the signature is ours)::

    POST https://hunyuan.tencentcloudapi.com/
    Authorization: TC3-HMAC-SHA256 Credential={SecretId}/{UTC date}/hunyuan/tc3_request,
                   SignedHeaders=content-type;host, Signature={hex}
    Content-Type: application/json
    X-TC-Action: ChatCompletions   X-TC-Version: 2023-09-01   X-TC-Timestamp: {unix}   X-TC-Region: {region}?
    {"Model", "Messages": [{"Role", "Content" | "Contents", "ToolCalls"?, "ToolCallId"?}],
     "Temperature"?, "TopP"?, "Stream", "Tools"?}

    -> {"Response": {"Choices": [{"Message": {"Role", "Content", "ToolCalls"?}, "FinishReason"}],
                     "Usage": {"PromptTokens", "CompletionTokens", "TotalTokens"}, "RequestId"}}

A failed call is still HTTP 200: ``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}``; its
``Code`` (``AuthFailure.SignatureFailure``, ``LimitExceeded``, ...) becomes the ProviderError's
``provider_code``, which ``providers.errors`` classifies. With ``Stream`` the answer is server-sent
events of bare chunks (``Choices[].Delta``); an error after the stream began is a chunk with
``ErrorMsg: {"Code": 4000 | 4001, "Msg"}``. The signing steps and the worked example are Tencent
Cloud's "Signature v3" document; ``tc3_authorization`` reproduces that example.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from providers.base import (
    ChatDelta,
    ChatModel,
    ChatResult,
    CredentialField,
    ToolCall,
    Usage,
    estimate_tokens,
)
from providers.errors import ErrorCode, ProviderError, scrub
from providers.http import json_body, parse_retry_after, rate_limit_headers
from providers.registry import register
from providers.wire import (
    PendingCall,
    estimated,
    message_text,
    parse_arguments,
    reading,
    sse_events,
)

SERVICE = "hunyuan"
VERSION = "2023-09-01"
ACTION = "ChatCompletions"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json"
SIGNED_HEADERS = "content-type;host"
# OpenAI-style generation parameters the ChatCompletions action accepts, and their names there.
GEN_CONF_NAMES = {"temperature": "Temperature", "top_p": "TopP"}
# ``ErrorMsg.Code`` inside a stream: 4000 internal error, 4001 model timed out. Both worth a retry.
_STREAM_ERROR_CODES = {4000: ErrorCode.SERVER, 4001: ErrorCode.SERVER}


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def tc3_authorization(
    secret_id: str,
    secret_key: str,
    *,
    service: str,
    host: str,
    payload: bytes,
    timestamp: int,
    content_type: str = CONTENT_TYPE,
) -> str:
    """The ``Authorization`` header of a POST of ``payload`` (sent as ``content_type``) to
    ``https://{host}/`` at ``timestamp``: the signed headers are content-type and host."""
    date = datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")
    canonical_request = "\n".join(
        [
            "POST",
            "/",
            "",  # the query string: always empty for POST
            f"content-type:{content_type}\nhost:{host}\n",
            SIGNED_HEADERS,
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(
        [ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
    )
    signing_key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    signature = hmac.new(signing_key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}"


# --------------------------------------------------------------------------- request


def _content(content: Any) -> dict[str, Any]:
    """``Content`` for text, ``Contents`` (text and image parts) when an image is in it."""
    if not isinstance(content, list):
        return {"Content": "" if content is None else str(content)}
    parts = [p for p in content if isinstance(p, dict)]
    if not any(p.get("type") == "image_url" for p in parts):
        return {"Content": "".join(p.get("text", "") for p in parts if p.get("type") == "text")}
    contents = []
    for part in parts:
        if part.get("type") == "text":
            contents.append({"Type": "text", "Text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            contents.append({"Type": "image_url", "ImageUrl": {"Url": url}})
    return {"Contents": contents}


def _message(message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"Role": message.get("role", "user")}
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:  # an assistant turn that only calls tools carries no text
        out.update(_content(message.get("content")))
    if calls:
        out["ToolCalls"] = [
            {
                "Id": call.get("id", ""),
                "Type": "function",
                "Function": {
                    "Name": call["function"]["name"],
                    "Arguments": _arguments_text(call["function"].get("arguments")),
                },
            }
            for call in calls
        ]
    if message.get("role") == "tool":
        out["ToolCallId"] = message.get("tool_call_id", "")
    return out


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments or {}, ensure_ascii=False)


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style tool as Hunyuan's ``Tool``; its ``Parameters`` is a JSON schema *in a string*."""
    function = tool["function"]
    return {
        "Type": "function",
        "Function": {
            "Name": function["name"],
            "Description": function.get("description", ""),
            "Parameters": json.dumps(
                function.get("parameters") or {"type": "object", "properties": {}}, ensure_ascii=False
            ),
        },
    }


# --------------------------------------------------------------------------- answers


def _usage(raw: Any, messages: list[dict[str, Any]], answer: str) -> Usage:
    if isinstance(raw, dict) and isinstance(raw.get("TotalTokens"), int) and raw["TotalTokens"] > 0:
        prompt, completion = raw.get("PromptTokens"), raw.get("CompletionTokens")
        return Usage(
            prompt if isinstance(prompt, int) else 0,
            completion if isinstance(completion, int) else 0,
            raw["TotalTokens"],
        )
    texts = [{"content": m.get("Content", "")} for m in messages]
    return estimated(estimate_tokens(message_text(texts)), estimate_tokens(answer))


def _tool_call(raw: dict[str, Any]) -> ToolCall:
    function = raw["Function"]
    return ToolCall(id=raw.get("Id") or "", name=function["Name"], arguments=parse_arguments(function.get("Arguments")))


@dataclass
class _Stream:
    """What a Hunyuan stream has said so far. Tool-call pieces are merged by their ``Id``."""

    text: list[str] = field(default_factory=list)
    calls: dict[str, PendingCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None

    def add(self, chunk: dict[str, Any]) -> str:
        self.usage = chunk.get("Usage") or self.usage
        text = ""
        for choice in chunk.get("Choices") or []:
            delta = choice.get("Delta") or {}
            text += delta.get("Content") or ""
            for piece in delta.get("ToolCalls") or []:
                # a piece without an Id continues the last call
                key = piece.get("Id") or (next(reversed(self.calls)) if self.calls else "")
                call = self.calls.setdefault(key, PendingCall())
                call.id = piece.get("Id") or call.id
                function = piece.get("Function") or {}
                call.name = function.get("Name") or call.name
                if function.get("Arguments"):
                    call.arguments.append(function["Arguments"])
            self.finish_reason = choice.get("FinishReason") or self.finish_reason
        self.text.append(text)
        return text

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(c.id, c.name, parse_arguments("".join(c.arguments))) for c in self.calls.values()]


@register
class HunyuanChat(ChatModel):
    """Chat with Hunyuan models (``hunyuan-turbos-latest``, ``hunyuan-lite``, ...) through ChatCompletions.

    Only ``temperature`` and ``top_p`` of the gen conf exist in this API (as ``Temperature``/``TopP``);
    the rest are dropped. A ``clock`` option (seconds since the epoch) fixes the signing time for tests.
    """

    factories = ("Tencent Hunyuan",)
    default_base_url = "https://hunyuan.tencentcloudapi.com"
    credential_fields = (
        CredentialField("secret_id", help="Tencent Cloud API SecretId (AKID...)"),
        CredentialField("secret_key", help="Tencent Cloud API SecretKey"),
        CredentialField("region", required=False, secret=False, help="X-TC-Region, e.g. ap-guangzhou (optional)"),
    )

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(model_name, **kwargs)
        self._clock: Callable[[], float] = self.options.get("clock", time.time)

    # ----------------------------------------------------------------- the signed request

    def _body(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None,
        tools: list[dict[str, Any]] | None,
        stream: bool,
    ) -> dict[str, Any]:
        head = [{"Role": "system", "Content": system}] if system else []
        body: dict[str, Any] = {"Model": self.model_name, "Messages": head + [_message(m) for m in messages]}
        for name, value in (gen_conf or {}).items():
            if name in GEN_CONF_NAMES and value is not None:
                body[GEN_CONF_NAMES[name]] = value
        body["Stream"] = stream
        if tools:
            body["Tools"] = [_tool(t) for t in tools]
        return body

    def _request(self, body: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
        if not self.base_url.startswith(("http://", "https://")):
            raise ProviderError(
                f"Tencent Hunyuan needs an http(s) base URL; got {self.base_url!r}", code=ErrorCode.INVALID_REQUEST
            )
        secret_id, secret_key = self.credentials.get("secret_id"), self.credentials.get("secret_key")
        if not secret_id or not secret_key:
            raise ProviderError(
                "Tencent Hunyuan needs the credential fields secret_id and secret_key", code=ErrorCode.AUTHENTICATION
            )
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        host = urlsplit(self.base_url).netloc.lower()
        timestamp = int(self._clock())
        headers = {
            "Authorization": tc3_authorization(
                secret_id, secret_key, service=SERVICE, host=host, payload=payload, timestamp=timestamp
            ),
            "Content-Type": CONTENT_TYPE,
            "X-TC-Action": ACTION,
            "X-TC-Version": VERSION,
            "X-TC-Timestamp": str(timestamp),
        }
        if self.credentials.get("region"):
            headers["X-TC-Region"] = self.credentials["region"]
        return f"{self.base_url}/", headers, payload

    def _error(self, response: httpx.Response, error: Any, request_id: Any) -> ProviderError:
        """A ``Response.Error`` (sent with HTTP 200) as a ProviderError carrying Tencent's code."""
        error = error if isinstance(error, dict) else {"Message": str(error)}
        message = str(error.get("Message") or "Tencent Cloud API error")
        if request_id:
            message += f" (RequestId {request_id})"
        return ProviderError(
            scrub(message, *self.secrets)[:2000],
            status=response.status_code,
            provider_code=str(error.get("Code") or "") or None,
            retry_after=parse_retry_after(response.headers),
            rate_limits=rate_limit_headers(response.headers),
        )

    def _response(self, response: httpx.Response) -> dict[str, Any]:
        """The ``Response`` object of a JSON answer; its ``Error`` raised."""
        data = json_body(response)
        with reading(ACTION):
            inner = data["Response"]
            if not isinstance(inner, dict):
                raise TypeError("Response is not an object")
        if inner.get("Error"):
            raise self._error(response, inner["Error"], inner.get("RequestId"))
        return inner

    # ----------------------------------------------------------------- ChatModel

    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        body = self._body(system, messages, gen_conf, tools, stream=False)
        url, headers, payload = self._request(body)
        inner = self._response(self.check(self.client.post(url, headers=headers, content=payload)))
        with reading(ACTION):
            choice = inner["Choices"][0]
            message = choice["Message"]
            text = message.get("Content") or ""
            tool_calls = [_tool_call(call) for call in message.get("ToolCalls") or []]
        usage = _usage(inner.get("Usage"), body["Messages"], text)
        return ChatResult(text, usage, tool_calls, choice.get("FinishReason") or None)

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        """Text deltas as they arrive, then one last delta with tool calls, usage and finish reason."""
        body = self._body(system, messages, gen_conf, tools, stream=True)
        url, headers, payload = self._request(body)
        with self.client.stream("POST", url, headers=headers, content=payload) as response:
            self.check(response)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                response.read()  # a refused request is answered with plain JSON, not a stream
                self._response(response)
                raise ProviderError("ChatCompletions answered a stream request without a stream", code=ErrorCode.SERVER)
            yield from self._deltas(response.iter_lines(), body)

    def _deltas(self, lines: Iterable[str], body: dict[str, Any]) -> Iterator[ChatDelta]:
        state = _Stream()
        for chunk in sse_events(lines):
            if isinstance(chunk, dict) and chunk.get("ErrorMsg"):
                error = chunk["ErrorMsg"]
                code = error.get("Code") if isinstance(error, dict) else None
                message = error.get("Msg") if isinstance(error, dict) else error
                raise ProviderError(
                    scrub(str(message or "stream error"), *self.secrets),
                    provider_code=None if code is None else str(code),
                    code=_STREAM_ERROR_CODES.get(code) if isinstance(code, int) else None,
                )
            with reading(ACTION):
                text = state.add(chunk)
            if text:
                yield ChatDelta(text=text)
        usage = _usage(state.usage, body["Messages"], "".join(state.text))
        yield ChatDelta(tool_calls=state.tool_calls(), usage=usage, finish_reason=state.finish_reason)
