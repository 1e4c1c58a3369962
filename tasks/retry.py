"""The retry policy: one small pure function, applied in one place (tasks.runner).

Only transient failures are retried, at most ``max_retries`` times: RATE_LIMIT, SERVER, and
a provider that did not answer (TIMEOUT: a read timeout; CONNECTION: refused or reset), which
is a server failure like a gateway's 504 -- the OpenAI, AWS and Google clients retry those
too. When the retries run out the item's error still names what happened
("gave up after 6 tries: TIMEOUT: ..."). The
countdown is the provider's Retry-After when it sent one (capped at ``max_delay``), else
"equal jitter" exponential backoff: half the exponential step plus a random other half, so
that a burst of failures does not come back in lockstep and no retry is near-immediate.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from providers.errors import ErrorCode


def retry_countdown(
    code: ErrorCode,
    retries: int,
    retry_after: float | None,
    *,
    max_retries: int,
    base_delay: float,
    max_delay: float,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before the next try, or None when the error must not be retried."""
    if not code.retryable or retries >= max_retries:
        return None
    if retry_after is not None:
        return min(max(retry_after, 0.0), max_delay)
    step = min(max_delay, base_delay * (2**retries))
    return step / 2 + rng() * step / 2
