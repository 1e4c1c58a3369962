"""Baidu ERNIE (Qianfan "wenxinworkshop" v1 API) with an API Key / Secret Key pair.

Wire format (plain ``httpx``, no qianfan SDK)::

    POST https://aip.baidubce.com/oauth/2.0/token?grant_type=client_credentials&client_id={ak}&client_secret={sk}
      -> {"access_token", "expires_in" (seconds, 30 days), ...}
         or HTTP 401 {"error": "invalid_client", "error_description": "unknown client id"}
    POST https://aip.baidubce.com/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}?access_token={token}
      {"messages": [{"role": "user"|"assistant", "content"}], "system"?, "temperature"?, "top_p"?,
       "penalty_score"?, "max_output_tokens"?, "stop"?, "stream"}
      -> {"id", "result", "is_truncated", "finish_reason", "usage": {"prompt_tokens", "completion_tokens",
          "total_tokens"}}; with "stream": server-sent events of such objects (``result`` a piece, ``is_end``)

A failed call is still HTTP 200: ``{"error_code": 18, "error_msg": "Open api qps request limit reached"}``.
The codes are the qianfan SDK's ``APIErrorCode``; they are plain numbers that other providers use
for other things, so they are classified here (``_ERROR_CODES``), not in the shared table.
110/111 (token invalid / expired) fetch a new token and try once more.

The model name selects the endpoint: the preset names below (the qianfan SDK's table, compared
without case), anything else as its own lower-cased name (a custom deployment's endpoint).

The secret key travels in the token request's query string: every error text is scrubbed of it,
of the API key and of the access token, and transport errors of the token request are re-raised
without the request (its URL) attached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from providers.base import (
    ChatDelta,
    ChatModel,
    ChatResult,
    CredentialField,
    Usage,
    estimate_tokens,
)
from providers.errors import ErrorCode, ProviderError, classify, scrub
from providers.http import json_body, parse_retry_after, rate_limit_headers
from providers.registry import register
from providers.wire import (
    estimated,
    message_text,
    reading,
    reported_usage,
    sse_events,
)

# Preset model names whose endpoint is not simply the lower-cased name (qianfan SDK ChatCompletion table).
ENDPOINTS = {
    "ernie-4.0-8k": "completions_pro",
    "ernie-bot-4": "completions_pro",
    "ernie-4.0-8k-preview-0518": "completions_adv_pro",
    "ernie-3.5-8k": "completions",
    "ernie-bot": "completions",
    "ernie 3.5": "completions",
    "ernie-bot-8k": "ernie_bot_8k",
    "ernie-speed-8k": "ernie_speed",
    "ernie-speed": "ernie_speed",
    "ernie speed": "ernie_speed",
    "ernie-lite-8k-0922": "eb-instant",
    "ernie-bot-turbo": "eb-instant",
    "ernie-lite-8k-0308": "ernie-lite-8k",
    "ernie-function-8k": "ernie-func-8k",
    "ernie-functions-8k": "ernie-func-8k",
    "ernie-character-8k": "ernie-char-8k",
    "ernie-character-fiction-8k": "ernie-char-fiction-8k",
    "ernie-4.0-preview": "ernie-4.0-8k-preview",
    "ernie-3.5-preview": "ernie-3.5-8k-preview",
    "ernie speed-appbuilder": "ai_apaas",
    "ernie-lite-appbuilder-8k-0614": "ai_apaas_lite",
    "bloomz-7b": "bloomz_7b1",
    "llama-2-7b-chat": "llama_2_7b",
    "llama-2-13b-chat": "llama_2_13b",
    "llama-2-70b-chat": "llama_2_70b",
    "meta-llama-3-8b": "llama_3_8b",
    "meta-llama-3-70b": "llama_3_70b",
}

# error_code -> what it means for us (qianfan SDK consts.APIErrorCode and the Qianfan error-code page).
_ERROR_CODES: dict[int, ErrorCode] = {
    1: ErrorCode.SERVER,  # unknown error
    2: ErrorCode.SERVER,  # service temporarily unavailable
    3: ErrorCode.INVALID_REQUEST,  # unsupported openapi method
    4: ErrorCode.RATE_LIMIT,  # cluster request limit reached
    6: ErrorCode.AUTHENTICATION,  # no permission to access data
    13: ErrorCode.AUTHENTICATION,  # get service token failed
    14: ErrorCode.AUTHENTICATION,  # IAM certification failed
    15: ErrorCode.AUTHENTICATION,  # app not exists
    17: ErrorCode.QUOTA,  # daily request limit reached
    18: ErrorCode.RATE_LIMIT,  # QPS limit reached
    19: ErrorCode.QUOTA,  # total request limit reached
    100: ErrorCode.INVALID_REQUEST,  # invalid parameter
    110: ErrorCode.AUTHENTICATION,  # access token invalid
    111: ErrorCode.AUTHENTICATION,  # access token expired
    336000: ErrorCode.SERVER,  # internal error
    336001: ErrorCode.INVALID_REQUEST,
    336002: ErrorCode.INVALID_REQUEST,  # invalid JSON
    336003: ErrorCode.INVALID_REQUEST,  # invalid parameter
    336004: ErrorCode.AUTHENTICATION,  # permission error
    336005: ErrorCode.MODEL,  # API name (endpoint) does not exist
    336100: ErrorCode.SERVER,  # server high load, try again later
    336101: ErrorCode.INVALID_REQUEST,
    336104: ErrorCode.INVALID_REQUEST,
    336105: ErrorCode.INVALID_REQUEST,
    336501: ErrorCode.RATE_LIMIT,  # RPM limit
    336502: ErrorCode.RATE_LIMIT,  # TPM limit
}
_TOKEN_REFUSED = {110, 111}
_EARLY_REFRESH_SECONDS = 60.0


def endpoint_for(model_name: str) -> str:
    name = model_name.strip().lower()
    return ENDPOINTS.get(name, name)


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _gen_conf(gen_conf: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI-style ``gen_conf`` as ERNIE takes it, clamped to its ranges: ERNIE refuses temperature 0 (range (0, 1]),
    takes one ``penalty_score`` in [1, 2] instead of presence/frequency penalties, calls max_tokens
    ``max_output_tokens`` ([2, 2048]) and at most 4 stop strings. Seed and response_format are dropped."""
    conf = {k: v for k, v in (gen_conf or {}).items() if v is not None}
    out: dict[str, Any] = {}
    if "temperature" in conf:
        out["temperature"] = _clamp(float(conf["temperature"]), 0.01, 1.0)
    if "top_p" in conf:
        out["top_p"] = _clamp(float(conf["top_p"]), 0.0, 1.0)
    if "presence_penalty" in conf or "frequency_penalty" in conf:
        penalty = (float(conf.get("presence_penalty", 0)) + float(conf.get("frequency_penalty", 0))) / 2 + 1
        out["penalty_score"] = _clamp(penalty, 1.0, 2.0)
    if "max_tokens" in conf:
        out["max_output_tokens"] = int(_clamp(int(conf["max_tokens"]), 2, 2048))
    if "stop" in conf:
        stop = [conf["stop"]] if isinstance(conf["stop"], str) else list(conf["stop"])
        out["stop"] = stop[:4]
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _messages(system: str | None, messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """ERNIE takes the system prompt in its own field and only user/assistant turns."""
    systems = [system] if system else []
    turns: list[dict[str, str]] = []
    for message in messages:
        role = message.get("role")
        if role == "system":
            systems.append(_text(message.get("content")))
        else:
            role = "assistant" if role == "assistant" else "user"
            turns.append({"role": role, "content": _text(message.get("content"))})
    return "\n".join(s for s in systems if s), turns


@register
class ErnieChat(ChatModel):
    """Chat with ERNIE through the v1 API. Tools are not sent: ERNIE's v1 ``functions`` are
    not mapped (the models that take them differ in shape), so ``tools`` is ignored.
    A ``clock`` option (seconds, monotonic) drives the token cache in tests."""

    factories = ("BaiduYiyan",)
    default_base_url = "https://aip.baidubce.com/rpc/2.0/ai_custom/v1/wenxinworkshop"
    credential_fields = (
        CredentialField("ak", help="Qianfan application API Key (client_id)"),
        CredentialField("sk", help="Qianfan application Secret Key (client_secret)"),
    )

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(model_name, **kwargs)
        self._clock: Callable[[], float] = self.options.get("clock", time.monotonic)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0

    @property
    def secrets(self) -> tuple[str, ...]:
        """The key pair and the current access token (it rides in every request's query string)."""
        return super().secrets + ((self._token,) if self._token else ())

    # ----------------------------------------------------------------- the access token

    def _access_token(self) -> str:
        with self._lock:
            if self._token and self._clock() < self._token_expires:
                return self._token
            self._token, self._token_expires = self._fetch_token()
            return self._token

    def _forget(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token_expires = 0.0

    def _token_url(self) -> str:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ProviderError(
                f"BaiduYiyan needs an http(s) base URL; got {self.base_url!r}", code=ErrorCode.INVALID_REQUEST
            )
        return f"{parts.scheme}://{parts.netloc}/oauth/2.0/token"

    def _fetch_token(self) -> tuple[str, float]:
        ak, sk = self.credentials.get("ak"), self.credentials.get("sk")
        if not ak or not sk:
            raise ProviderError("BaiduYiyan needs the credential fields ak and sk", code=ErrorCode.AUTHENTICATION)
        params = {"grant_type": "client_credentials", "client_id": ak, "client_secret": sk}
        failure: ProviderError | None = None
        try:
            response = self.client.post(self._token_url(), params=params)
        except httpx.HTTPError as exc:
            # The exception holds the request, whose URL holds the secret key: keep neither.
            failure = ProviderError(
                scrub(f"token request failed: {type(exc).__name__}: {exc}", *self.secrets), code=classify(exc)
            )
        if failure is not None:
            raise failure
        self.rate_limits = rate_limit_headers(response.headers)
        data = self._json(response)
        if not response.is_success:  # a 401 {"error": "invalid_client", "error_description": "unknown client id"}
            message = str(data.get("error_description") or data.get("error") or f"HTTP {response.status_code}")
            raise ProviderError(
                scrub(f"access token refused: {message}", *self.secrets)[:2000],
                status=response.status_code,
                provider_code=str(data.get("error") or "") or None,
                retry_after=parse_retry_after(response.headers),
                rate_limits=self.rate_limits,
            )
        with reading("oauth/2.0/token"):
            lifetime = float(data.get("expires_in") or 0)
            token = str(data["access_token"])
        return token, self._clock() + max(0.0, lifetime - _EARLY_REFRESH_SECONDS)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = json_body(response)
        except ProviderError:
            if not response.is_success:  # a proxy's HTML error page: the status says it all
                raise ProviderError(f"HTTP {response.status_code}", status=response.status_code) from None
            raise
        if not isinstance(data, dict):
            raise ProviderError("Baidu answered with JSON that is not an object", code=ErrorCode.SERVER)
        return data

    # ----------------------------------------------------------------- errors inside a 200

    def _error(self, response: httpx.Response, data: dict[str, Any]) -> ProviderError:
        number = data.get("error_code")
        message = str(data.get("error_msg") or "Baidu API error")
        return ProviderError(
            scrub(message, *self.secrets)[:2000],
            status=response.status_code,
            provider_code=str(number),
            code=_ERROR_CODES.get(number) if isinstance(number, int) else None,
            retry_after=parse_retry_after(response.headers),
            rate_limits=rate_limit_headers(response.headers),
        )

    def _url(self, token: str) -> str:
        return f"{self.base_url}/chat/{endpoint_for(self.model_name)}?access_token={token}"

    def _call(self, token: str, body: dict[str, Any]) -> tuple[httpx.Response, dict[str, Any]]:
        response = self.check(self.client.post(self._url(token), json=body))
        return response, self._json(response)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the model's endpoint; a refused token is replaced once."""
        token = self._access_token()
        response, data = self._call(token, body)
        if data.get("error_code") in _TOKEN_REFUSED:
            self._forget(token)
            response, data = self._call(self._access_token(), body)
        if "error_code" in data:
            raise self._error(response, data)
        return data

    # ----------------------------------------------------------------- ChatModel

    def _body(
        self, system: str | None, messages: list[dict[str, Any]], gen_conf: dict[str, Any] | None, stream: bool
    ) -> dict[str, Any]:
        system_text, turns = _messages(system, messages)
        body: dict[str, Any] = {"messages": turns}
        if system_text:
            body["system"] = system_text
        body.update(_gen_conf(gen_conf))
        body["stream"] = stream
        return body

    def _usage(self, raw: Any, body: dict[str, Any], answer: str) -> Usage:
        prompt_text = message_text(body["messages"]) + "\n" + body.get("system", "")
        return reported_usage(raw) or estimated(estimate_tokens(prompt_text.strip()), estimate_tokens(answer))

    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        body = self._body(system, messages, gen_conf, stream=False)
        data = self._post(body)
        with reading("chat"):
            text = str(data["result"])
        return ChatResult(text, self._usage(data.get("usage"), body, text), [], data.get("finish_reason") or None)

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        """Text deltas as they arrive, then one last delta with usage and finish reason."""
        body = self._body(system, messages, gen_conf, stream=True)
        for attempt in (1, 2):
            token = self._access_token()
            with self.client.stream("POST", self._url(token), json=body) as response:
                self.check(response)
                if "text/event-stream" in response.headers.get("content-type", ""):
                    yield from self._deltas(response.iter_lines(), body)
                    return
                response.read()  # a refused request is answered with plain JSON
                data = self._json(response)
                if data.get("error_code") in _TOKEN_REFUSED and attempt == 1:
                    self._forget(token)
                    continue
                if "error_code" in data:
                    raise self._error(response, data)
                raise ProviderError("Baidu answered a stream request without a stream", code=ErrorCode.SERVER)

    def _deltas(self, lines: Iterable[str], body: dict[str, Any]) -> Iterator[ChatDelta]:
        pieces: list[str] = []
        usage: Any = None
        finish_reason: str | None = None
        for chunk in sse_events(lines):
            if not isinstance(chunk, dict):
                raise ProviderError("stream event is not an object", code=ErrorCode.SERVER)
            if "error_code" in chunk:
                number = chunk["error_code"]
                raise ProviderError(
                    scrub(str(chunk.get("error_msg") or "Baidu stream error"), *self.secrets),
                    provider_code=str(number),
                    code=_ERROR_CODES.get(number) if isinstance(number, int) else None,
                )
            text = str(chunk.get("result") or "")
            usage = chunk.get("usage") or usage
            finish_reason = chunk.get("finish_reason") or finish_reason
            pieces.append(text)
            if text:
                yield ChatDelta(text=text)
        yield ChatDelta(usage=self._usage(usage, body, "".join(pieces)), finish_reason=finish_reason)
