"""The retry policy (tasks/retry.py): what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import pytest

from providers.errors import ErrorCode
from tasks.retry import retry_countdown

POLICY = {"max_retries": 5, "base_delay": 2.0, "max_delay": 300.0}


@pytest.mark.parametrize("code", [c for c in ErrorCode if not c.retryable])
def test_non_retryable_codes_are_never_retried(code: ErrorCode) -> None:
    assert retry_countdown(code, 0, 1.0, **POLICY) is None


@pytest.mark.parametrize("code", [ErrorCode.RATE_LIMIT, ErrorCode.SERVER, ErrorCode.TIMEOUT, ErrorCode.CONNECTION])
def test_retryable_codes_stop_after_max_retries(code: ErrorCode) -> None:
    assert retry_countdown(code, 4, None, **POLICY) is not None
    assert retry_countdown(code, 5, None, **POLICY) is None


def test_retry_after_is_used_as_given_and_capped() -> None:
    assert retry_countdown(ErrorCode.RATE_LIMIT, 0, 7.5, **POLICY) == 7.5
    assert retry_countdown(ErrorCode.RATE_LIMIT, 3, 0.0, **POLICY) == 0.0
    assert retry_countdown(ErrorCode.RATE_LIMIT, 0, 3600.0, **POLICY) == 300.0


def test_backoff_is_randomized_within_half_to_full_exponential_step() -> None:
    for retries, step in [(0, 2.0), (1, 4.0), (2, 8.0), (3, 16.0)]:
        low = retry_countdown(ErrorCode.SERVER, retries, None, rng=lambda: 0.0, **POLICY)
        high = retry_countdown(ErrorCode.SERVER, retries, None, rng=lambda: 1.0, **POLICY)
        assert (low, high) == (step / 2, step)


def test_backoff_never_exceeds_max_delay() -> None:
    policy = {**POLICY, "max_retries": 50}
    assert retry_countdown(ErrorCode.SERVER, 20, None, rng=lambda: 1.0, **policy) == 300.0


def test_backoff_spreads_a_burst() -> None:
    """Twenty failures at the same moment do not come back at the same moment."""
    delays = {retry_countdown(ErrorCode.RATE_LIMIT, 2, None, **POLICY) for _ in range(20)}
    assert len(delays) > 15
    assert all(4.0 <= d <= 8.0 for d in delays)
