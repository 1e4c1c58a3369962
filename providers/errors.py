"""Provider errors and the classifier that decides which of them are worth retrying.

Every provider turns a failed call into one exception type::

    ProviderError            status, provider_code, retry_after (seconds), rate_limits
                             (the x-ratelimit-* style headers), scrubbed message
      (raised by providers; httpx.TimeoutException / httpx.TransportError may also escape
       from the transport and are classified directly)

``classify(exc)`` looks at structured facts first -- the exception type, the HTTP status,
the provider's own error code -- and falls back to a table of keywords only for
unstructured errors (a message and nothing else). Only transient codes are retryable
(RATE_LIMIT, SERVER, TIMEOUT, CONNECTION): a quota error is not, even when the provider sends
it as a 429.
"""

from __future__ import annotations

import enum
import re

import httpx


class ErrorCode(enum.StrEnum):
    RATE_LIMIT = "RATE_LIMIT"
    SERVER = "SERVER"
    AUTHENTICATION = "AUTHENTICATION"
    QUOTA = "QUOTA"
    INVALID_REQUEST = "INVALID_REQUEST"
    TIMEOUT = "TIMEOUT"
    CONNECTION = "CONNECTION"
    CONTENT_FILTER = "CONTENT_FILTER"
    REFUSAL = "REFUSAL"  # the call succeeded but the model refused to answer (not an exception's code)
    MODEL = "MODEL"
    GENERIC = "GENERIC"
    MAX_RETRIES = "MAX_RETRIES"
    MAX_ROUNDS = "MAX_ROUNDS"
    BUDGET = "BUDGET"  # the tenant's budget was spent before the call: not made, the item keeps its input

    @property
    def retryable(self) -> bool:
        """Transient: a rate limit, a server failure, or a provider that did not answer (a read
        timeout, a connection refused or reset -- a server failure too, as a gateway's 504 is)."""
        return self in (ErrorCode.RATE_LIMIT, ErrorCode.SERVER, ErrorCode.TIMEOUT, ErrorCode.CONNECTION)


class ProviderError(Exception):
    """A provider call failed. ``message`` is already scrubbed of secrets."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        provider_code: str | None = None,
        retry_after: float | None = None,
        code: ErrorCode | None = None,
        rate_limits: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.provider_code = provider_code
        self.retry_after = retry_after
        self.code = code  # set when the provider already knows (e.g. a malformed response)
        self.rate_limits = rate_limits or {}  # the rate-limit headers that came with the error

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status}" + (f", {self.provider_code})" if self.provider_code else ")"))
        return " ".join(parts)


# Provider error codes / types that say more than the HTTP status does.
_PROVIDER_CODES: dict[str, ErrorCode] = {
    # OpenAI and OpenAI-compatible servers
    "insufficient_quota": ErrorCode.QUOTA,
    "billing_hard_limit_reached": ErrorCode.QUOTA,
    "billing_not_active": ErrorCode.QUOTA,
    "rate_limit_exceeded": ErrorCode.RATE_LIMIT,
    "invalid_api_key": ErrorCode.AUTHENTICATION,
    "invalid_request_error": ErrorCode.INVALID_REQUEST,
    "context_length_exceeded": ErrorCode.INVALID_REQUEST,
    "model_not_found": ErrorCode.MODEL,
    "content_filter": ErrorCode.CONTENT_FILTER,
    "content_policy_violation": ErrorCode.CONTENT_FILTER,
    "server_error": ErrorCode.SERVER,
    # Anthropic
    "overloaded_error": ErrorCode.SERVER,
    "api_error": ErrorCode.SERVER,
    "rate_limit_error": ErrorCode.RATE_LIMIT,
    "authentication_error": ErrorCode.AUTHENTICATION,
    "permission_error": ErrorCode.AUTHENTICATION,
    "not_found_error": ErrorCode.MODEL,
    "request_too_large": ErrorCode.INVALID_REQUEST,
    "billing_error": ErrorCode.QUOTA,  # 402
    "enforced_spend_limit_reached": ErrorCode.QUOTA,  # error.details.error_code of a spend-cap 429
    # Google (status strings)
    "RESOURCE_EXHAUSTED": ErrorCode.RATE_LIMIT,
    "UNAVAILABLE": ErrorCode.SERVER,
    "INTERNAL": ErrorCode.SERVER,
    "UNAUTHENTICATED": ErrorCode.AUTHENTICATION,
    "PERMISSION_DENIED": ErrorCode.AUTHENTICATION,
    "INVALID_ARGUMENT": ErrorCode.INVALID_REQUEST,
    "NOT_FOUND": ErrorCode.MODEL,
    "DEADLINE_EXCEEDED": ErrorCode.TIMEOUT,
    "API_KEY_INVALID": ErrorCode.AUTHENTICATION,  # Google ErrorInfo reason (inside a 400 INVALID_ARGUMENT)
    # OAuth 2.0 token endpoint errors (RFC 6749 5.2), e.g. a Google service-account JWT exchange
    "invalid_grant": ErrorCode.AUTHENTICATION,
    "invalid_client": ErrorCode.AUTHENTICATION,
    "unauthorized_client": ErrorCode.AUTHENTICATION,
    # AWS
    "ThrottlingException": ErrorCode.RATE_LIMIT,
    "ServiceUnavailableException": ErrorCode.SERVER,
    "InternalServerException": ErrorCode.SERVER,
    "ModelNotReadyException": ErrorCode.SERVER,
    "AccessDeniedException": ErrorCode.AUTHENTICATION,
    "UnrecognizedClientException": ErrorCode.AUTHENTICATION,
    "ValidationException": ErrorCode.INVALID_REQUEST,
    "ResourceNotFoundException": ErrorCode.MODEL,
    "ModelTimeoutException": ErrorCode.TIMEOUT,
    # "A streaming error occurred. Retry your request." (converse-stream's exception frame)
    "ModelStreamErrorException": ErrorCode.SERVER,
    # A 424: "an error while processing the model" -- the model's own failure, worth another try
    "ModelErrorException": ErrorCode.SERVER,
    # A hard account quota (e.g. tokens per day), raised only by a quota increase: not a slow-down
    "ServiceQuotaExceededException": ErrorCode.QUOTA,
    "ExpiredTokenException": ErrorCode.AUTHENTICATION,
    "InvalidSignatureException": ErrorCode.AUTHENTICATION,
    # AWS query APIs (STS AssumeRole): <ErrorResponse><Error><Code>
    "AccessDenied": ErrorCode.AUTHENTICATION,  # also DashScope's 403
    "InvalidClientTokenId": ErrorCode.AUTHENTICATION,
    "SignatureDoesNotMatch": ErrorCode.AUTHENTICATION,
    "ExpiredToken": ErrorCode.AUTHENTICATION,
    "Throttling": ErrorCode.RATE_LIMIT,  # STS (a 400) and DashScope (a 429)
    # Alibaba DashScope (Model Studio): {"code", "message", "request_id"}
    "Throttling.RateQuota": ErrorCode.RATE_LIMIT,  # requests per minute
    "Throttling.AllocationQuota": ErrorCode.RATE_LIMIT,  # tokens per minute ("Allocated quota exceeded")
    "Arrearage": ErrorCode.QUOTA,  # overdue payment
    "AllocationQuota.FreeTierOnly": ErrorCode.QUOTA,  # free tier used up in "free tier only" mode
    "InvalidApiKey": ErrorCode.AUTHENTICATION,
    "AccessDenied.Unpurchased": ErrorCode.AUTHENTICATION,
    "DataInspectionFailed": ErrorCode.CONTENT_FILTER,
    "InvalidParameter": ErrorCode.INVALID_REQUEST,
    "InternalError": ErrorCode.SERVER,
    "InternalError.Algo": ErrorCode.SERVER,
    # VolcEngine Ark: {"error": {"code", "message", "type"}} ("InvalidParameter", "AccessDenied" above)
    "AuthenticationError": ErrorCode.AUTHENTICATION,
    "AccountOverdueError": ErrorCode.QUOTA,  # a 403: the account owes money
    "OperationDenied.ServiceOverdue": ErrorCode.QUOTA,
    "QuotaExceeded": ErrorCode.QUOTA,  # a 429: the free trial quota is used up
    "SetLimitExceeded": ErrorCode.QUOTA,  # a 429: the spending cap the account set itself
    "RateLimitExceeded.EndpointRPMExceeded": ErrorCode.RATE_LIMIT,
    "RateLimitExceeded.EndpointTPMExceeded": ErrorCode.RATE_LIMIT,
    "ModelAccountRpmRateLimitExceeded": ErrorCode.RATE_LIMIT,
    "ModelAccountTpmRateLimitExceeded": ErrorCode.RATE_LIMIT,
    "APIAccountRpmRateLimitExceeded": ErrorCode.RATE_LIMIT,
    "AccountRateLimitExceeded": ErrorCode.RATE_LIMIT,
    "InflightBatchsizeExceeded": ErrorCode.RATE_LIMIT,
    "RequestBurstTooFast": ErrorCode.RATE_LIMIT,
    "ServerOverloaded": ErrorCode.SERVER,  # a 429 that is the server's load, not the caller's rate
    "InternalServiceError": ErrorCode.SERVER,
    "MissingParameter": ErrorCode.INVALID_REQUEST,  # also Tencent Cloud
    "InvalidEndpointOrModel.NotFound": ErrorCode.MODEL,
    "InvalidEndpoint.ClosedEndpoint": ErrorCode.MODEL,
    "ModelNotOpen": ErrorCode.MODEL,
    "SensitiveContentDetected": ErrorCode.CONTENT_FILTER,
    "InputTextSensitiveContentDetected": ErrorCode.CONTENT_FILTER,
    "OutputTextSensitiveContentDetected": ErrorCode.CONTENT_FILTER,
    "InputImageSensitiveContentDetected": ErrorCode.CONTENT_FILTER,
    # Tencent Cloud API 3.0 (Hunyuan): {"Response": {"Error": {"Code", "Message"}}} inside an HTTP 200
    "AuthFailure.SignatureFailure": ErrorCode.AUTHENTICATION,
    "AuthFailure.SignatureExpire": ErrorCode.AUTHENTICATION,  # the clock is more than 5 minutes off
    "AuthFailure.SecretIdNotFound": ErrorCode.AUTHENTICATION,
    "AuthFailure.InvalidSecretId": ErrorCode.AUTHENTICATION,
    "AuthFailure.InvalidAuthorization": ErrorCode.AUTHENTICATION,
    "AuthFailure.TokenFailure": ErrorCode.AUTHENTICATION,
    "AuthFailure.MFAFailure": ErrorCode.AUTHENTICATION,
    "AuthFailure.UnauthorizedOperation": ErrorCode.AUTHENTICATION,
    "UnauthorizedOperation": ErrorCode.AUTHENTICATION,
    "FailedOperation.ServiceNotActivated": ErrorCode.AUTHENTICATION,  # not enabled for this account
    "FailedOperation.ServiceStop": ErrorCode.AUTHENTICATION,  # stopped by the account itself
    "FailedOperation.UserUnAuthError": ErrorCode.AUTHENTICATION,  # account not verified
    "LimitExceeded": ErrorCode.RATE_LIMIT,  # Hunyuan's concurrency limit
    "RequestLimitExceeded": ErrorCode.RATE_LIMIT,
    "RequestLimitExceeded.UinLimitExceeded": ErrorCode.RATE_LIMIT,
    "RequestLimitExceeded.IPLimitExceeded": ErrorCode.RATE_LIMIT,
    "RequestLimitExceeded.GlobalRegionUinLimitExceeded": ErrorCode.RATE_LIMIT,
    "FailedOperation.EngineServerLimitExceeded": ErrorCode.RATE_LIMIT,
    "ResourceInsufficient.ChargeResourceExhaust": ErrorCode.QUOTA,
    "FailedOperation.ServiceStopArrears": ErrorCode.QUOTA,
    "FailedOperation.ResourcePackExhausted": ErrorCode.QUOTA,
    "FailedOperation.FreeResourcePackExhausted": ErrorCode.QUOTA,
    "ResourceUnavailable.InArrears": ErrorCode.QUOTA,
    "ResourceUnavailable.LowBalance": ErrorCode.QUOTA,
    "FailedOperation.EngineServerError": ErrorCode.SERVER,
    "FailedOperation.EngineRequestTimeout": ErrorCode.SERVER,  # "try again later"
    "ServiceUnavailable": ErrorCode.SERVER,
    "InvalidParameterValue": ErrorCode.INVALID_REQUEST,
    "InvalidParameterValue.ParameterValueError": ErrorCode.INVALID_REQUEST,
    "UnknownParameter": ErrorCode.INVALID_REQUEST,
    "InvalidParameterValue.Model": ErrorCode.MODEL,
    "OperationDenied.TextIllegalDetected": ErrorCode.CONTENT_FILTER,
    "OperationDenied.ImageIllegalDetected": ErrorCode.CONTENT_FILTER,
    # New API / one-api gateways: {"error": {"code": "insufficient_user_quota", ...}} (a 403)
    "insufficient_user_quota": ErrorCode.QUOTA,
    "pre_consume_token_quota_failed": ErrorCode.QUOTA,
    # Novita-style gateways (NovitaAI, Jiekou.AI, PPIO) name their errors in "reason"
    "NOT_ENOUGH_BALANCE": ErrorCode.QUOTA,  # a 403
    "BILLING_BALANCE_NOT_ENOUGH": ErrorCode.QUOTA,
    "RATE_LIMIT_EXCEEDED": ErrorCode.RATE_LIMIT,
    "TOKEN_LIMIT_EXCEEDED": ErrorCode.RATE_LIMIT,  # a 429: tokens per minute
    "INVALID_API_KEY": ErrorCode.AUTHENTICATION,
    "FAILED_TO_AUTH": ErrorCode.AUTHENTICATION,
    "MODEL_NOT_FOUND": ErrorCode.MODEL,
    "INVALID_REQUEST_BODY": ErrorCode.INVALID_REQUEST,
    "SERVICE_NOT_AVAILABLE": ErrorCode.SERVER,
}

# Words inside a 429 that mean "you are out of money", not "slow down".
# ("API usage limits": Anthropic's spend-limit text, "You have reached your specified API usage limits".)
_QUOTA_WORDS = re.compile(
    r"quota|billing|credit|balance|insufficient|exceeded your current|api usage limits|欠费|余额", re.I
)
_URL = re.compile(r"https?://\S+")

# Broad categories, not causes: OpenAI sends a missing key as a 401 whose only code is the type
# "invalid_request_error". When the HTTP status is known, it says more than these do.
_CATEGORY_CODES = frozenset({"invalid_request_error", "api_error", "server_error"})


def _says_quota(message: str) -> bool:
    """Quota words outside links: OpenAI's free-tier rate-limit text links to .../account/billing."""
    return bool(_QUOTA_WORDS.search(_URL.sub(" ", message)))


# OpenAI sends a request bigger than the whole per-minute budget as a 429 ``rate_limit_exceeded``:
# "Request too large for gpt-4o ... on tokens per min (TPM): Limit 30000, Requested 46412. The
# input or output tokens must be reduced in order to run successfully." No wait makes it fit.
_TOO_LARGE = re.compile(r"request too large|must be reduced", re.I)


def _rate_limited(message: str) -> ErrorCode:
    """What a rate-limit error (a 429, or a provider's rate-limit code) is: a request too large
    for any window, an exhausted quota, or a rate limit that a wait lifts."""
    if _TOO_LARGE.search(message):
        return ErrorCode.INVALID_REQUEST
    return ErrorCode.QUOTA if _says_quota(message) else ErrorCode.RATE_LIMIT


# Errors that carry nothing but text: the first row with a word in the (lower-cased) message
# names the code, so the order matters ("insufficient quota, rate limit" is QUOTA, not a wait).
_KEYWORDS: list[tuple[tuple[str, ...], ErrorCode]] = [
    (("quota", "billing", "credit", "balance", "insufficient", "欠费"), ErrorCode.QUOTA),
    (
        ("rate limit", "rate_limit", "too many requests", "tpm limit", "rpm limit", "requests per minute"),
        ErrorCode.RATE_LIMIT,
    ),
    (
        ("unauthorized", "authentication", "api key", "apikey", "api_key", "forbidden", "permission"),
        ErrorCode.AUTHENTICATION,
    ),
    (("invalid", "bad request", "malformed", "parameter", "unsupported"), ErrorCode.INVALID_REQUEST),
    (("server error", "internal error", "unavailable", "overloaded", "bad gateway", "gateway"), ErrorCode.SERVER),
    (("timeout", "timed out"), ErrorCode.TIMEOUT),
    (("connection", "connect", "network", "unreachable", "dns"), ErrorCode.CONNECTION),
    (("content filter", "content_filter", "safety", "blocked", "inappropriate", "policy"), ErrorCode.CONTENT_FILTER),
    (("model not found", "no such model", "does not exist", "model_not_found", "not available"), ErrorCode.MODEL),
    (("max rounds", "max_rounds"), ErrorCode.MAX_ROUNDS),
    (("max retries", "max_retries"), ErrorCode.MAX_RETRIES),
]


def _from_status(status: int, message: str) -> ErrorCode | None:
    if status == 429:
        return _rate_limited(message)
    if status == 402:
        return ErrorCode.QUOTA
    if status in (401, 403):
        return ErrorCode.AUTHENTICATION
    if status in (408, 504):
        return ErrorCode.TIMEOUT if status == 408 else ErrorCode.SERVER
    if status == 404:
        return ErrorCode.MODEL
    if status >= 500:  # includes Anthropic's 529 overloaded
        return ErrorCode.SERVER
    if 400 <= status < 500:
        if _says_quota(message):  # Anthropic: a 400 "Your credit balance is too low ..."
            return ErrorCode.QUOTA
        lowered = message.lower()
        if "content" in lowered and ("filter" in lowered or "policy" in lowered):
            return ErrorCode.CONTENT_FILTER
        return ErrorCode.INVALID_REQUEST
    return None


def classify_message(message: str) -> ErrorCode:
    """The code the keyword table gives ``message``: used only when nothing structured is known."""
    lowered = message.lower()
    for words, code in _KEYWORDS:
        if any(w in lowered for w in words):
            return code
    return ErrorCode.GENERIC


def classify(exc: BaseException) -> ErrorCode:
    """Name the error: structured facts first, keywords last."""
    if isinstance(exc, ProviderError):
        if exc.code is not None:
            return exc.code
        if exc.provider_code and not (exc.provider_code in _CATEGORY_CODES and exc.status is not None):
            known = _PROVIDER_CODES.get(exc.provider_code)
            # A provider code that means "rate limited" may still be a quota or a request too large.
            if known is ErrorCode.RATE_LIMIT:
                return _rate_limited(exc.message)
            if known is not None:
                return known
        if exc.status is not None:
            by_status = _from_status(exc.status, exc.message)
            if by_status is not None:
                return by_status
        return classify_message(exc.message)
    if isinstance(exc, httpx.TimeoutException):
        return ErrorCode.TIMEOUT
    if isinstance(exc, httpx.TransportError):  # connect errors, resets, protocol errors
        return ErrorCode.CONNECTION
    if isinstance(exc, TimeoutError):
        return ErrorCode.TIMEOUT
    if isinstance(exc, ConnectionError):
        return ErrorCode.CONNECTION
    return classify_message(str(exc))


# Key-shaped strings: a prefix to keep (group "keep") and the secret after it.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(?P<keep>bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?P<keep>)\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"),
    re.compile(
        r"(?i)(?P<keep>(?:api[_-]?key|x-api-key|authorization|secret|token|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"
    ),
]


def scrub(text: str, *secrets: str | None) -> str:
    """Remove the given secrets (and anything shaped like a key) from ``text``."""
    out = text
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        out = pattern.sub(lambda m: m.group("keep") + "***", out)
    return out
