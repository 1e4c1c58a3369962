"""What a provider's rate-limit headers say, read into one shape for the fleet-wide limiter.

The families and what their headers mean (all names lower-cased, as ``BaseModel.rate_limits``
and ``ProviderError.rate_limits`` keep them):

- OpenAI and the servers that copy it (Azure, Groq, DeepSeek, TogetherAI, ...):
  ``x-ratelimit-limit-requests`` / ``-tokens`` (per minute), ``x-ratelimit-remaining-*``, and
  ``x-ratelimit-reset-*`` as a Go duration (``1s``, ``6m0s``, ``20ms``).
- Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``,
  per minute, the reset an RFC 3339 time. With separate input and output token limits, the
  input limit is the one a call's estimate can be checked against.
- The IETF draft (TEI, some gateways): ``ratelimit-limit``, ``ratelimit-remaining``,
  ``ratelimit-reset`` (seconds), with the window in ``ratelimit-policy: 100;w=60``. A limit
  over another window is scaled to a minute.

``retry-after(-ms)`` is read where the error is made (``providers.http.parse_retry_after``).
A header that cannot be read is ignored: these headers are advice, never a reason to fail.
Caveat: Groq's ``x-ratelimit-limit-requests`` counts per day; read as per minute it is far
above the real rate, so it never holds calls back and the limit learned from a 429 applies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Advertised:
    """Per-minute limits and the state of the provider's own counters, as far as it said."""

    rpm: int | None = None
    tpm: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests: float | None = None  # seconds until the request counter is full again
    reset_tokens: float | None = None

    @property
    def exhausted_for(self) -> float | None:
        """Seconds until calls may go on, when the provider says a counter is at zero."""
        waits = [
            r
            for n, r in ((self.remaining_requests, self.reset_requests), (self.remaining_tokens, self.reset_tokens))
            if n == 0 and r is not None
        ]
        return max(waits) if waits else None


def parse_duration(value: str) -> float | None:
    """``6m0s`` -> 360.0, ``20ms`` -> 0.02, ``1.5`` -> 1.5; None when unreadable."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        n = int(float(value.split(",")[0].split(";")[0].strip()))
    except ValueError:
        return None
    return n if n >= 0 else None


def _reset_at(value: str | None, now: float) -> float | None:
    """A duration or an RFC 3339 time (Anthropic), as seconds from ``now``."""
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        return max(0.0, datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp() - now)
    except ValueError:
        return None


def _window(policy: str | None) -> float:
    match = re.search(r"w=(\d+)", policy or "")
    return float(match[1]) if match and int(match[1]) > 0 else 60.0


def parse_rate_limits(headers: Mapping[str, str], now: float) -> Advertised:
    """Read ``headers`` (lower-cased names) as of ``now`` (epoch seconds)."""
    h = headers.get
    if h("x-ratelimit-limit-requests") or h("x-ratelimit-limit-tokens") or h("x-ratelimit-remaining-requests"):
        return Advertised(
            rpm=_int(h("x-ratelimit-limit-requests")),
            tpm=_int(h("x-ratelimit-limit-tokens")),
            remaining_requests=_int(h("x-ratelimit-remaining-requests")),
            remaining_tokens=_int(h("x-ratelimit-remaining-tokens")),
            reset_requests=_reset_at(h("x-ratelimit-reset-requests"), now),
            reset_tokens=_reset_at(h("x-ratelimit-reset-tokens"), now),
        )
    if any(k.startswith("anthropic-ratelimit-") for k in headers):
        tokens = "input-tokens" if h("anthropic-ratelimit-input-tokens-limit") else "tokens"
        return Advertised(
            rpm=_int(h("anthropic-ratelimit-requests-limit")),
            tpm=_int(h(f"anthropic-ratelimit-{tokens}-limit")),
            remaining_requests=_int(h("anthropic-ratelimit-requests-remaining")),
            remaining_tokens=_int(h(f"anthropic-ratelimit-{tokens}-remaining")),
            reset_requests=_reset_at(h("anthropic-ratelimit-requests-reset"), now),
            reset_tokens=_reset_at(h(f"anthropic-ratelimit-{tokens}-reset"), now),
        )
    if h("ratelimit-limit") is not None:
        limit, window = _int(h("ratelimit-limit")), _window(h("ratelimit-policy"))
        return Advertised(
            rpm=None if limit is None else max(1, int(limit * 60.0 / window)),
            remaining_requests=_int(h("ratelimit-remaining")),
            reset_requests=_reset_at(h("ratelimit-reset"), now),
        )
    return Advertised()
