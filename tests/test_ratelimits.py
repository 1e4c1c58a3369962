"""Reading providers' rate-limit headers (providers/ratelimits.py), in each family's real shapes."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from providers.http import rate_limit_headers
from providers.ratelimits import Advertised, parse_duration, parse_rate_limits

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC).timestamp()


def _read(headers: dict[str, str]) -> Advertised:
    return parse_rate_limits(rate_limit_headers(httpx.Headers(headers)), NOW)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1m30.5s", 90.5),
        ("2h", 7200.0),
        ("0.5", 0.5),
        ("7", 7.0),
        ("soon", None),
        ("", None),
        ("5x", None),
        ("1s garbage", None),
    ],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_openai_headers_on_a_success() -> None:
    """As OpenAI documents them (and Azure, Groq, DeepSeek... copy them)."""
    adv = _read(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "6m0s",
            "content-type": "application/json",
        }
    )
    assert adv == Advertised(
        rpm=60, tpm=150000, remaining_requests=59, remaining_tokens=149984, reset_requests=1.0, reset_tokens=360.0
    )
    assert adv.exhausted_for is None


def test_openai_429_with_a_spent_counter() -> None:
    adv = _read(
        {
            "retry-after-ms": "1250",
            "retry-after": "2",
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "120ms",
        }
    )
    assert adv.rpm == 500 and adv.exhausted_for == pytest.approx(0.12)


def test_anthropic_headers_prefer_the_input_token_limit() -> None:
    adv = _read(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2026-12-07T12:00:03Z",
            "anthropic-ratelimit-tokens-limit": "90000",
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "39000",
            "anthropic-ratelimit-input-tokens-reset": "2026-12-07T12:00:01Z",
            "retry-after": "3",
        }
    )
    assert (adv.rpm, adv.tpm, adv.remaining_tokens) == (50, 40000, 39000)
    assert adv.reset_requests == pytest.approx(3.0) and adv.reset_tokens == pytest.approx(1.0)
    assert adv.exhausted_for == pytest.approx(3.0)


def test_ietf_draft_headers_scale_the_window_to_a_minute() -> None:
    adv = _read(
        {"ratelimit-limit": "10", "ratelimit-remaining": "3", "ratelimit-reset": "4", "ratelimit-policy": "10;w=1"}
    )
    assert adv.rpm == 600 and adv.remaining_requests == 3 and adv.reset_requests == 4.0


def test_unreadable_values_are_ignored() -> None:
    junk = _read(
        {
            "x-ratelimit-limit-requests": "lots",
            "x-ratelimit-remaining-requests": "-1",
            "x-ratelimit-reset-requests": "whenever",
        }
    )
    assert junk == Advertised()


def test_no_headers_no_facts() -> None:
    assert _read({"content-type": "application/json"}) == Advertised()
