"""The error classifier, Retry-After parsing and secret scrubbing, as tables.

Responses are built the way providers send them and go through ``error_from_response``, so
the body parsing in ``providers.http`` is tested together with ``classify``.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx
import pytest

from providers.errors import ErrorCode, ProviderError, classify, classify_message, scrub
from providers.http import error_from_response, json_body, parse_retry_after

KEY = "sk-proj-Abc123Def456Ghi789Jkl"

OPENAI_RPM_FREE_TIER = (
    "Rate limit reached for default-global-with-image-limits in organization org-Yu8p on requests per min. "
    "Limit: 60.000000 / min. Current: 70.000000 / min. Contact support@openai.com if you continue to have issues. "
    "Please add a payment method to your account to increase your rate limit. "
    "Visit https://platform.openai.com/account/billing to add a payment method."
)
OPENAI_QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
)


def openai_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def response(
    status: int, body: dict[str, Any] | list[Any] | str, headers: dict[str, str] | None = None
) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


# (case id, status, body, expected code)
HTTP_CASES: list[tuple[str, int, Any, ErrorCode]] = [
    # RATE_LIMIT
    (
        "openai-tpm",
        429,
        openai_body(
            "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29937, "
            "Requested 385. Please try again in 644ms. Visit https://platform.openai.com/account/rate-limits to learn "
            "more.",
            "tokens",
            "rate_limit_exceeded",
        ),
        ErrorCode.RATE_LIMIT,
    ),
    # The free-tier text links to .../account/billing: still a rate limit, not a quota.
    ("openai-rpm-billing-link", 429, openai_body(OPENAI_RPM_FREE_TIER, "requests"), ErrorCode.RATE_LIMIT),
    (
        "openai-rpm-billing-link-coded",
        429,
        openai_body(OPENAI_RPM_FREE_TIER, "requests", "rate_limit_exceeded"),
        ErrorCode.RATE_LIMIT,
    ),
    (
        "anthropic-rate-limit",
        429,
        {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded"}},
        ErrorCode.RATE_LIMIT,
    ),
    ("bare-429", 429, "Too Many Requests", ErrorCode.RATE_LIMIT),
    # A request bigger than the whole per-minute budget: a 429 rate_limit_exceeded that no wait fixes.
    (
        "openai-request-too-large",
        429,
        openai_body(
            "Request too large for gpt-4o in organization org-Yu8p on tokens per min (TPM): Limit 30000, "
            "Requested 46412. The input or output tokens must be reduced in order to run successfully. "
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            "tokens",
            "rate_limit_exceeded",
        ),
        ErrorCode.INVALID_REQUEST,
    ),
    (
        "google-resource-exhausted",
        429,
        {
            "error": {
                "code": 429,
                "message": "Resource exhausted. Please try again later.",
                "status": "RESOURCE_EXHAUSTED",
            }
        },
        ErrorCode.RATE_LIMIT,
    ),
    # QUOTA: OpenAI's insufficient_quota arrives as a 429 and must not be retried.
    (
        "openai-insufficient-quota",
        429,
        openai_body(OPENAI_QUOTA, "insufficient_quota", "insufficient_quota"),
        ErrorCode.QUOTA,
    ),
    ("openai-insufficient-quota-old", 429, openai_body(OPENAI_QUOTA, "insufficient_quota"), ErrorCode.QUOTA),
    ("payment-required", 402, {"message": "Payment required"}, ErrorCode.QUOTA),
    ("429-balance", 429, {"code": "1113", "message": "Insufficient balance or no resource package."}, ErrorCode.QUOTA),
    # SERVER
    (
        "openai-500",
        500,
        openai_body("The server had an error while processing your request.", "server_error"),
        ErrorCode.SERVER,
    ),
    (
        "anthropic-529-overloaded",
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ErrorCode.SERVER,
    ),
    (
        "502-auth-in-request-id",
        502,
        "<html><head><title>502 Bad Gateway</title></head><body>request id: auth-7f3a unauthorized-proxy</body></html>",
        ErrorCode.SERVER,
    ),
    ("503-unavailable", 503, {"detail": "Service Unavailable"}, ErrorCode.SERVER),
    ("504-gateway-timeout", 504, "upstream timed out", ErrorCode.SERVER),
    # AUTHENTICATION
    (
        "openai-invalid-key",
        401,
        openai_body(
            "Incorrect API key provided: sk-abc***wxyz. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        ),
        ErrorCode.AUTHENTICATION,
    ),
    # OpenAI sends a missing key as a 401 whose only code is the broad type.
    (
        "openai-missing-key",
        401,
        openai_body("You didn't provide an API key.", "invalid_request_error"),
        ErrorCode.AUTHENTICATION,
    ),
    ("vllm-unauthorized", 401, {"error": "Unauthorized"}, ErrorCode.AUTHENTICATION),
    (
        "anthropic-permission",
        403,
        {"type": "error", "error": {"type": "permission_error", "message": "Your API key does not have permission"}},
        ErrorCode.AUTHENTICATION,
    ),
    # INVALID_REQUEST: a 400 that mentions 429 is still a bad request.
    (
        "400-mentions-429",
        400,
        openai_body(
            "max_tokens is too large: 4290. This model supports at most 4096 completion tokens.",
            "invalid_request_error",
        ),
        ErrorCode.INVALID_REQUEST,
    ),
    (
        "context-length",
        400,
        openai_body(
            "This model's maximum context length is 8192 tokens.", "invalid_request_error", "context_length_exceeded"
        ),
        ErrorCode.INVALID_REQUEST,
    ),
    ("fastapi-422", 422, {"detail": [{"loc": ["body", "input"], "msg": "field required"}]}, ErrorCode.INVALID_REQUEST),
    (
        "vllm-bad-request",
        400,
        {"object": "error", "message": "bad input", "type": "BadRequestError", "code": 400},
        ErrorCode.INVALID_REQUEST,
    ),
    # TIMEOUT
    ("request-timeout", 408, "Request Timeout", ErrorCode.TIMEOUT),
    (
        "google-deadline",
        504,
        {"error": {"code": 504, "message": "Deadline", "status": "DEADLINE_EXCEEDED"}},
        ErrorCode.TIMEOUT,
    ),
    # CONTENT_FILTER
    (
        "openai-content-policy",
        400,
        openai_body(
            "Your request was rejected by our safety system.", "invalid_request_error", "content_policy_violation"
        ),
        ErrorCode.CONTENT_FILTER,
    ),
    ("content-policy-words", 400, {"message": "The content violates our usage policy"}, ErrorCode.CONTENT_FILTER),
    # MODEL
    (
        "openai-model-not-found",
        404,
        openai_body(
            "The model `gpt-9` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        ErrorCode.MODEL,
    ),
    ("bare-404", 404, "Not Found", ErrorCode.MODEL),
    (
        "aws-not-found",
        400,
        {"__type": "x", "message": "no model", "code": "ResourceNotFoundException"},
        ErrorCode.MODEL,
    ),
]


@pytest.mark.parametrize(("status", "body", "expected"), [c[1:] for c in HTTP_CASES], ids=[c[0] for c in HTTP_CASES])
def test_classify_http_errors(status: int, body: Any, expected: ErrorCode) -> None:
    error = error_from_response(response(status, body), KEY)
    assert error.status == status
    assert classify(error) is expected


EXCEPTION_CASES: list[tuple[str, BaseException, ErrorCode]] = [
    ("httpx-read-timeout", httpx.ReadTimeout("timed out"), ErrorCode.TIMEOUT),
    ("httpx-connect-timeout", httpx.ConnectTimeout("timed out"), ErrorCode.TIMEOUT),
    ("httpx-pool-timeout", httpx.PoolTimeout("no connection"), ErrorCode.TIMEOUT),
    ("httpx-connect-error", httpx.ConnectError("[Errno 111] Connection refused"), ErrorCode.CONNECTION),
    ("httpx-remote-protocol", httpx.RemoteProtocolError("peer closed connection"), ErrorCode.CONNECTION),
    ("builtin-timeout", TimeoutError(), ErrorCode.TIMEOUT),
    ("builtin-connection", ConnectionRefusedError(), ErrorCode.CONNECTION),
    ("provider-known-code", ProviderError("bad JSON", status=200, code=ErrorCode.SERVER), ErrorCode.SERVER),
    ("stream-error-code", ProviderError("slow down", provider_code="rate_limit_exceeded"), ErrorCode.RATE_LIMIT),
    ("stream-error-category", ProviderError("bad", provider_code="invalid_request_error"), ErrorCode.INVALID_REQUEST),
    ("unknown-code-falls-to-status", ProviderError("x", status=503, provider_code="weird"), ErrorCode.SERVER),
    (
        "aws-throttling",
        ProviderError("Rate exceeded", status=400, provider_code="ThrottlingException"),
        ErrorCode.RATE_LIMIT,
    ),
    # Unstructured: the seed's keyword table.
    ("kw-quota", RuntimeError("Your credit balance is too low"), ErrorCode.QUOTA),
    ("kw-rate-limit", RuntimeError("Too many requests, slow down"), ErrorCode.RATE_LIMIT),
    ("kw-auth", RuntimeError("Unauthorized: bad API key"), ErrorCode.AUTHENTICATION),
    ("kw-invalid", ValueError("invalid parameter: temperature"), ErrorCode.INVALID_REQUEST),
    ("kw-server", RuntimeError("upstream server error"), ErrorCode.SERVER),
    ("kw-timeout", RuntimeError("the call timed out"), ErrorCode.TIMEOUT),
    ("kw-connection", OSError("network is unreachable"), ErrorCode.CONNECTION),
    ("kw-content-filter", RuntimeError("output blocked by the safety system"), ErrorCode.CONTENT_FILTER),
    ("kw-model", RuntimeError("model not found: foo"), ErrorCode.MODEL),
    ("kw-max-rounds", RuntimeError("agent stopped: max rounds reached"), ErrorCode.MAX_ROUNDS),
    ("kw-max-retries", RuntimeError("gave up after max retries"), ErrorCode.MAX_RETRIES),
    ("kw-generic", RuntimeError("something odd happened"), ErrorCode.GENERIC),
    ("provider-error-unstructured", ProviderError("max_rounds exhausted"), ErrorCode.MAX_ROUNDS),
]


@pytest.mark.parametrize(("exc", "expected"), [c[1:] for c in EXCEPTION_CASES], ids=[c[0] for c in EXCEPTION_CASES])
def test_classify_exceptions(exc: BaseException, expected: ErrorCode) -> None:
    assert classify(exc) is expected


def test_every_error_code_is_covered_by_the_tables() -> None:
    covered = {c[-1] for c in HTTP_CASES} | {c[-1] for c in EXCEPTION_CASES}
    # REFUSAL names an answer, not a failed call: the chat handler sets it, classify() never does;
    # BUDGET names a call not made (the tenant's budget was spent): the runner sets it.
    assert covered == set(ErrorCode) - {ErrorCode.REFUSAL, ErrorCode.BUDGET}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_only_transient_codes_are_retryable(code: ErrorCode) -> None:
    transient = (ErrorCode.RATE_LIMIT, ErrorCode.SERVER, ErrorCode.TIMEOUT, ErrorCode.CONNECTION)
    assert code.retryable is (code in transient)


def test_keyword_table_order_quota_before_rate_limit() -> None:
    assert classify_message("rate limit: insufficient quota") is ErrorCode.QUOTA


# --------------------------------------------------------------------------- error bodies


def test_error_from_response_reads_openai_body_and_retry_after() -> None:
    body = openai_body("Rate limit reached", "requests", "rate_limit_exceeded")
    error = error_from_response(response(429, body, {"retry-after": "20"}))
    assert (error.message, error.status, error.provider_code, error.retry_after) == (
        "Rate limit reached",
        429,
        "rate_limit_exceeded",
        20.0,
    )


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        ({"detail": "Model not loaded"}, "Model not loaded", None),
        ({"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}, "busy", "UNAVAILABLE"),
        ([{"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}}], "slow", "RESOURCE_EXHAUSTED"),
        ("plain text failure", "plain text failure", None),
    ],
)
def test_error_body_shapes(body: Any, message: str, code: str | None) -> None:
    error = error_from_response(response(500, body))
    assert (error.message, error.provider_code) == (message, code)


def test_empty_error_body_uses_the_reason_phrase() -> None:
    assert error_from_response(httpx.Response(503)).message == "Service Unavailable"


def test_malformed_json_is_a_server_error() -> None:
    with pytest.raises(ProviderError) as info:
        json_body(httpx.Response(200, content=b'{"data": [1, 2'))
    assert classify(info.value) is ErrorCode.SERVER


def test_provider_error_str_names_status_and_code() -> None:
    assert str(ProviderError("slow down", status=429, provider_code="rate_limit_exceeded")) == (
        "slow down (HTTP 429, rate_limit_exceeded)"
    )


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "644"}, 0.644),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "whenever"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers)) == expected


def test_parse_retry_after_http_date() -> None:
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": future})) == pytest.approx(30, abs=2)
    assert parse_retry_after(httpx.Headers({"retry-after": past})) == 0.0


# --------------------------------------------------------------------------- scrub


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("key my-local-secret was rejected", ("my-local-secret",), "key *** was rejected"),
        ("sent Bearer abcdefgh12345678", (), "sent Bearer ***"),
        ("Authorization: Bearer abcdefgh12345678", (), "Authorization: *** ***"),
        ("bad key sk-live0123456789abcdef here", (), "bad key *** here"),
        ('{"api_key": "0123456789abcdef"}', (), '{"api_key": "***"}'),
        ("x-api-key=AKIA1234567890", (), "x-api-key=***"),
        ("password: hunter2hunter2", (), "password: ***"),
        ("short abc stays", ("abc",), "short abc stays"),
        ("nothing secret here", (None, ""), "nothing secret here"),
    ],
)
def test_scrub(text: str, secrets: tuple[str | None, ...], expected: str) -> None:
    assert scrub(text, *secrets) == expected


def test_scrub_happens_before_the_message_is_cut() -> None:
    secret = "local-server-key-" + "x" * 40  # not key-shaped: only the explicit secret catches it
    body = openai_body("a" * 1990 + secret, "invalid_request_error")
    error = error_from_response(response(400, body), secret)
    assert secret[:10] not in error.message
    assert len(error.message) <= 2000
