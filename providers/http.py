"""The ``httpx.Client`` providers call through (:func:`make_client`; each runtime makes its
own, and a forked child makes a new one: a connection pool must not be shared across
processes), and the helpers that turn HTTP failures into :class:`~providers.errors.ProviderError`.

The ``Authorization`` header is never logged: we log nothing about requests here, and httpx
itself logs only the URL and status line.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx

from providers.errors import ProviderError, scrub


def make_client(timeout_seconds: float) -> httpx.Client:
    """A client as providers want it: this timeout (connect at most 10 s), no redirects followed
    (a redirect would carry the key's header to another host)."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
    )


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, ``retry-after`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_RATE_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "ratelimit-", "retry-after")


def rate_limit_headers(headers: httpx.Headers) -> dict[str, str]:
    """The rate-limit facts a provider sent: ``retry-after(-ms)``, ``x-ratelimit-*``,
    ``anthropic-ratelimit-*`` and the IETF draft's ``ratelimit-*`` (names lower-cased)."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(_RATE_LIMIT_PREFIXES)}


def error_json(response: httpx.Response) -> Any:
    """An error answer's JSON body, None if it has none (not JSON, or the body could not be read)."""
    try:
        response.read()
        return json.loads(response.text)
    except (httpx.HTTPError, ValueError):
        return None


def error_from_response(response: httpx.Response, *secrets: str | None) -> ProviderError:
    """Build a ProviderError from a non-2xx response, reading the common error body shapes:
    ``{"error": {"message", "type", "code"}}`` (OpenAI, Anthropic, Google), ``{"message", "code"}``,
    ``{"detail": ...}`` (FastAPI servers) or plain text."""
    try:
        response.read()
        text = response.text
    except httpx.HTTPError:
        text = ""
    message, code = _parse_error_body(text)
    if not message:
        message = response.reason_phrase or f"HTTP {response.status_code}"
    return ProviderError(
        scrub(message, *secrets)[:2000],  # scrub first: a cut must not leave half a key behind
        status=response.status_code,
        provider_code=code,
        retry_after=parse_retry_after(response.headers),
        rate_limits=rate_limit_headers(response.headers),
    )


def _parse_error_body(text: str) -> tuple[str, str | None]:
    try:
        body: Any = json.loads(text)
    except (ValueError, TypeError):
        return text.strip(), None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if not isinstance(body, dict):
        return text.strip(), None
    err = body.get("error", body)
    if isinstance(err, str):
        return err, _str_or_none(body.get("code") or body.get("type"))
    if not isinstance(err, dict):
        return text.strip(), None
    message = err.get("message") or err.get("detail") or body.get("detail") or text.strip()
    if not isinstance(message, str):
        message = json.dumps(message)
    # Prefer the most specific code: OpenAI's "code" (insufficient_quota) over its "type".
    # Google puts the HTTP status number in "code" and its own name in "status".
    code = err.get("code") if isinstance(err.get("code"), str) else None
    code = code or err.get("type") or err.get("status") or body.get("code")
    return message, _str_or_none(code)


def _str_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def check(response: httpx.Response, *secrets: str | None) -> httpx.Response:
    """Return the response if it is 2xx, else raise its ProviderError."""
    if response.is_success:
        return response
    raise error_from_response(response, *secrets)


def json_body(response: httpx.Response) -> Any:
    """The response's JSON; a malformed body is a SERVER error (retryable: a proxy hiccup)."""
    from providers.errors import ErrorCode

    try:
        return response.json()
    except ValueError:
        raise ProviderError(
            f"provider returned malformed JSON ({len(response.content)} bytes)",
            status=response.status_code,
            code=ErrorCode.SERVER,
        ) from None
