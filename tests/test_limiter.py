"""The fleet-wide limiter's decisions, the same scenarios against each store: the Redis script
(real Redis, Redis's clock) and the database (real Postgres, this host's clock). The two are
one algorithm written twice (Python and Lua); these tests hold them equal."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator

import pytest

from providers.ratelimits import Advertised
from tasks.limiter import Cost, Limiter, Limits, Settlement

pytestmark = pytest.mark.services

TOL = 0.05  # seconds of clock drift allowed between the test and the store


@pytest.fixture(params=["redis", "database"])
def store(request: pytest.FixtureRequest, stack) -> Iterator[Limiter]:
    if request.param == "redis":
        from tasks.limiter_redis import RedisLimiter

        yield RedisLimiter(stack.redis_url)
    else:
        from tasks.limiter_db import DatabaseLimiter

        yield DatabaseLimiter()


@pytest.fixture
def bucket() -> str:
    return uuid.uuid4().hex


def _take(
    store: Limiter,
    bucket: str,
    limits: Limits,
    cost: Cost = Cost(),
    holder: str = "h",
    max_wait: float = 1.0,
    slot_ttl: float = 30.0,
):
    return store.acquire(bucket, limits, cost, holder, max_wait=max_wait, slot_ttl=slot_ttl)


def _schedule(store: Limiter, bucket: str, limits: Limits, n: int, max_wait: float = 5.0) -> list[float]:
    """When each of ``n`` granted calls may go, relative to the first: the time asked plus the wait
    (so that the store's own speed -- a database under load -- does not matter)."""
    times = []
    for _ in range(n):
        asked = time.monotonic()
        grant = _take(store, bucket, limits, max_wait=max_wait)
        assert grant.granted
        times.append(asked + grant.wait)
    return [t - times[0] for t in times]


def test_requests_are_spaced_evenly_and_a_long_wait_is_not_granted(store: Limiter, bucket: str) -> None:
    limits = Limits(rpm=600)  # one call every 0.1 s
    for n, at in enumerate(_schedule(store, bucket, limits, 5)):
        assert at == pytest.approx(0.1 * n, abs=TOL)
    refused = _take(store, bucket, limits, max_wait=0.0)  # about 0.5 s ahead: more than it may sleep
    assert not refused.granted and 0.3 < refused.wait <= 0.5
    assert "600 requests/min" in refused.reason
    # a refusal took nothing: the next call's place is the same
    assert 0.3 < _take(store, bucket, limits).wait <= 0.5 + TOL


def test_a_call_of_several_requests_costs_them_all(store: Limiter, bucket: str) -> None:
    limits = Limits(rpm=60)
    assert _take(store, bucket, limits, Cost(requests=3), max_wait=10).wait == pytest.approx(0, abs=TOL)
    assert _take(store, bucket, limits, Cost(requests=1), max_wait=10).wait == pytest.approx(3, abs=TOL)


def test_tokens_per_minute_and_the_correction_after_the_call(store: Limiter, bucket: str) -> None:
    limits = Limits(tpm=6000)  # 100 tokens a second
    assert _take(store, bucket, limits, Cost(1, 50)).wait == pytest.approx(0, abs=TOL)
    # the call reported 150 tokens, not 50: the next call waits for all of them
    store.settle(bucket, limits, "h", Settlement(tokens_delta=100))
    grant = _take(store, bucket, limits, Cost(1, 10), max_wait=5)
    assert grant.wait == pytest.approx(1.5, abs=TOL)
    refused = _take(store, bucket, limits, Cost(1, 10), max_wait=0.5)
    assert not refused.granted and "6000 tokens/min" in refused.reason


def test_concurrency_slots_are_shared_released_and_expire(store: Limiter, bucket: str) -> None:
    limits = Limits(concurrency=2)
    assert _take(store, bucket, limits, holder="a").granted
    assert _take(store, bucket, limits, holder="b", slot_ttl=0.3).granted
    full = _take(store, bucket, limits, holder="c")
    assert not full.granted and "2 concurrent" in full.reason
    store.settle(bucket, limits, "a", Settlement())  # a's call ended
    assert _take(store, bucket, limits, holder="c").granted
    assert not _take(store, bucket, limits, holder="d").granted
    time.sleep(0.4)  # b died holding its slot: it expires
    assert _take(store, bucket, limits, holder="d").granted
    assert store.status(bucket, limits)["calls_in_progress"] == 2


def test_a_429_pauses_the_bucket_for_everyone(store: Limiter, bucket: str) -> None:
    limits = Limits(rpm=6000)
    assert _take(store, bucket, limits).granted
    store.settle(bucket, limits, "h", Settlement(pause=0.5, reason="the provider answered 429"))
    paused = _take(store, bucket, limits, max_wait=0.1)
    assert not paused.granted and paused.wait == pytest.approx(0.5, abs=0.1)
    assert "paused" in paused.reason and "429" in paused.reason
    status = store.status(bucket, limits)
    assert status["paused_for"] > 0 and "429" in status["pause_reason"]
    time.sleep(0.55)
    assert _take(store, bucket, limits).granted
    assert store.status(bucket, limits)["paused_for"] is None


def test_advertised_limits_are_adopted_and_the_tenants_own_win(store: Limiter, bucket: str) -> None:
    store.settle(bucket, Limits(), "h", Settlement(advertised=Advertised(rpm=60, tpm=1_000_000)))
    assert _take(store, bucket, Limits()).wait == pytest.approx(0, abs=TOL)
    assert _take(store, bucket, Limits(), max_wait=2).wait == pytest.approx(1.0, abs=TOL)  # 60/min: 1 s apart
    status = store.status(bucket, Limits())
    assert status["advertised"] == {"rpm": 60, "tpm": 1_000_000}
    assert status["in_force"]["rpm_source"] == "provider headers"
    own = Limits(rpm=6000)
    assert store.status(bucket, own)["in_force"] == {"rpm": 6000, "tpm": 1_000_000, "rpm_source": "tenant"}


def test_a_spent_budget_in_the_headers_pauses_until_its_reset(store: Limiter, bucket: str) -> None:
    spent = Advertised(rpm=100, remaining_requests=0, reset_requests=0.4)
    store.settle(bucket, Limits(), "h", Settlement(advertised=spent))
    grant = _take(store, bucket, Limits(), max_wait=0)
    assert not grant.granted and grant.wait == pytest.approx(0.4, abs=0.1)
    assert "budget spent" in grant.reason


def test_with_no_limit_known_a_429_teaches_one(store: Limiter, bucket: str) -> None:
    for _ in range(30):  # no limit: every call goes at once
        assert _take(store, bucket, Limits(), max_wait=0).wait == 0
    assert store.status(bucket, Limits())["in_force"]["rpm"] is None
    store.settle(bucket, Limits(), "h", Settlement(pause=0.01, reason="429"))
    status = store.status(bucket, Limits())
    learned = status["learned_rpm"]
    # 30 calls within a second (a moving average started at zero, corrected): 90% of ~1,800/min
    assert 1200 <= learned <= 1800, learned
    assert status["in_force"] == {"rpm": learned, "tpm": None, "rpm_source": "learned from a 429"}
    time.sleep(0.02)
    first = _take(store, bucket, Limits(), max_wait=5)
    second = _take(store, bucket, Limits(), max_wait=5)
    assert second.wait - first.wait == pytest.approx(60 / learned, abs=TOL)
    # a second 429 while pacing at the learned limit lowers it
    store.settle(bucket, Limits(), "h", Settlement(pause=0.01, reason="429"))
    assert store.status(bucket, Limits())["learned_rpm"] < learned


def test_tenants_sharing_a_key_share_a_bucket_and_other_keys_do_not(store: Limiter) -> None:
    shared, other = uuid.uuid4().hex, uuid.uuid4().hex
    limits = Limits(rpm=60)
    assert _take(store, shared, limits).wait == pytest.approx(0, abs=TOL)
    assert _take(store, shared, limits, max_wait=2).wait == pytest.approx(1, abs=TOL)
    assert _take(store, other, limits).wait == pytest.approx(0, abs=TOL)


def test_a_429_on_the_first_calls_pauses_but_teaches_no_limit(store: Limiter, bucket: str) -> None:
    _take(store, bucket, Limits())
    store.settle(bucket, Limits(), "h", Settlement(pause=0.01, reason="429"))
    assert store.status(bucket, Limits())["learned_rpm"] is None


def test_slots_missed_a_moment_ago_may_be_caught_up_but_no_more(store: Limiter, bucket: str) -> None:
    limits = Limits(rpm=1200)  # 0.05 s apart
    _take(store, bucket, limits)
    time.sleep(1.0)  # idle: at most a quarter second of slots (5) may be used at once, then 0.05 s apart
    at = _schedule(store, bucket, limits, 9)
    assert at[5] <= 0.05 + TOL  # the first six go at once (the current slot and five missed ones)
    for a, b in itertools.pairwise(at[6:]):
        assert b - a == pytest.approx(0.05, abs=TOL)
