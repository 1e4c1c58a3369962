"""Fleet-wide limits and retries end to end: real worker processes (two where sharing matters),
real Redis and Postgres, the fake provider enforcing OpenAI-style limits at the wire.

Also the retry bug this work fixed: at the documented ``LLM_MAX_RETRIES`` (5, not Celery's own
3) a failing chunk is tried 1 + 5 times, then fails ``MAX_RETRIES``, and the job ends.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Stack, cli
from tests.fakeprovider import FakeProvider
from tests.test_e2e_embedding import MODEL, corpus, embedding_calls, ledger, make_tenant, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

# The documented defaults (an empty value means "not set": the default applies).
DEFAULTS = {
    "LLM_MAX_RETRIES": "",
    "LLM_BASE_DELAY": "",
    "LLM_MAX_DELAY": "",
    "LLM_TIMEOUT_SECONDS": "",
    "MODELYARD_LIMIT_MAX_WAIT": "",
}


def set_limits(tenant_id: str, **limits: int) -> None:
    from models.db import session_scope
    from models.tenants import set_llm_limits

    with session_scope() as session:
        set_llm_limits(session, tenant_id, MODEL, "embedding", **limits)


def chunk_states(job_id: str) -> list[str]:
    from sqlalchemy import select

    from models.db import session_scope
    from models.tables import job_chunks

    with session_scope() as session:
        return list(session.scalars(select(job_chunks.c.status).where(job_chunks.c.job_id == job_id)))


def cli_json(stack: Stack, *args: str) -> Any:
    done = cli(stack, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times)), default=0)


# --------------------------------------------------------------------------- retries at the defaults


def test_at_the_documented_default_a_failing_chunk_gets_six_calls_then_max_retries(
    stack: Stack, worker_factory, fake_provider: FakeProvider
) -> None:
    """LLM_MAX_RETRIES unset (5): six calls, then MAX_RETRIES, a finished job, no chunk left
    queued, and no task that ended in an exception (Celery's own limit is 3: it must not apply)."""
    from tasks import producer

    worker = worker_factory(pool="threads", concurrency=2, extra_env=DEFAULTS)
    # A 503 that asks for a short wait: Retry-After is how the defaults stay fast here.
    fake_provider.error(
        503,
        {"error": {"message": "overloaded", "type": "server_error", "code": None}},
        headers={"retry-after": "0.2"},
        times=100,
        path="embeddings",
    )
    tenant = make_tenant(fake_provider.base_url)
    items = corpus(4)
    job_id = producer.submit_embedding(tenant, MODEL, items)

    final = wait_for(job_id, timeout=90)

    assert final["status"] == "failed", final
    assert len(embedding_calls(fake_provider)) == 6
    errors = producer.results(job_id).errors
    assert {code for code, _ in errors.values()} == {"MAX_RETRIES"}
    assert all("gave up after 6 tries: SERVER" in message for _, message in errors.values())
    assert chunk_states(job_id) == ["failed"]
    time.sleep(1.0)  # a stray seventh call would show up here
    assert len(embedding_calls(fake_provider)) == 6
    log = worker.log_text()
    assert "MaxRetriesExceeded" not in log and "raised unexpected" not in log, log[-3000:]


def test_at_the_documented_defaults_a_server_error_is_retried_after_the_first_backoff_step(
    stack: Stack, worker_factory, fake_provider: FakeProvider
) -> None:
    """A 503 with no Retry-After, every LLM_* setting at its default: the retry comes after the
    first backoff step of LLM_BASE_DELAY (2.0 s), randomized to 1-2 s, and the job succeeds."""
    from tasks import producer

    worker_factory(pool="threads", concurrency=2, extra_env=DEFAULTS)
    fake_provider.server_error(503, times=1, path="embeddings")
    job_id = producer.submit_embedding(make_tenant(fake_provider.base_url), MODEL, corpus(4))

    assert wait_for(job_id)["status"] == "succeeded"
    first, second = embedding_calls(fake_provider)
    assert (first.status, second.status) == (503, 200)
    assert 1.0 <= second.time - first.time <= 3.0, second.time - first.time


def test_a_provider_that_hangs_is_retried_and_the_job_succeeds(
    stack: Stack, worker_factory, fake_provider: FakeProvider
) -> None:
    from tasks import producer

    worker_factory(pool="threads", concurrency=2, extra_env={"LLM_TIMEOUT_SECONDS": "1"})
    fake_provider.hang(3, times=1, path="embeddings")
    tenant = make_tenant(fake_provider.base_url)
    job_id = producer.submit_embedding(tenant, MODEL, corpus(8))

    final = wait_for(job_id)

    assert final["status"] == "succeeded", final
    assert len(embedding_calls(fake_provider)) == 2


def test_out_of_retries_the_error_still_says_timeout_or_connection(
    stack: Stack, worker_factory, fake_provider: FakeProvider
) -> None:
    from tasks import producer

    worker_factory(pool="threads", concurrency=2, extra_env={"LLM_TIMEOUT_SECONDS": "0.5", "LLM_MAX_RETRIES": "1"})
    fake_provider.hang(2, times=10, path="embeddings")
    hanging = producer.submit_embedding(make_tenant(fake_provider.base_url), MODEL, corpus(4))
    refused = producer.submit_embedding(make_tenant("http://127.0.0.1:9/v1"), MODEL, corpus(4))  # nothing listens

    for job_id, what in ((hanging, "TIMEOUT"), (refused, "CONNECTION")):
        assert wait_for(job_id)["status"] == "failed"
        messages = {message for _, message in producer.results(job_id).errors.values()}
        assert len(messages) == 1 and f"gave up after 2 tries: {what}" in messages.pop()
    assert len(embedding_calls(fake_provider)) == 2


# --------------------------------------------------------------------------- the shared limiter


def test_two_worker_processes_share_one_keys_budget(stack: Stack, worker_factory, fake_provider: FakeProvider) -> None:
    """The tenant's limit of 300 requests a minute (5 a second) holds across two worker processes
    with 4 threads each: no 429, never more than the limit in any second, and the job takes as
    long as the limit says it must."""
    from tasks import producer

    fake_provider.latency_ms = 20
    fake_provider.set_limits(rpm=300, burst_seconds=1.0, advertise=False)
    tenant = make_tenant(fake_provider.base_url)
    set_limits(tenant, rpm=300)
    workers = [worker_factory(pool="threads", concurrency=4) for _ in range(2)]
    items = corpus(100)
    started = time.monotonic()
    job_id = producer.submit_embedding(tenant, MODEL, items, chunk_size=4)  # 25 calls: about 5 s at 5 a second

    final = wait_for(job_id)
    elapsed = time.monotonic() - started

    assert final["status"] == "succeeded", final
    calls = embedding_calls(fake_provider)
    assert [c.status for c in calls].count(429) == 0
    assert len(calls) == 25
    assert most_in_one_second([c.time for c in calls]) <= 6
    assert elapsed >= 4.0
    assert all("succeeded" in w.log_text() for w in workers), "both processes ran chunks"


def test_a_429_pauses_the_other_process_too(stack: Stack, worker_factory, fake_provider: FakeProvider) -> None:
    """No limit configured or advertised: one call's 429 (Retry-After 2 s) stops every worker's
    calls on that key until it has passed."""
    from tasks import producer

    fake_provider.latency_ms = 30
    tenant = make_tenant(fake_provider.base_url)
    for _ in range(2):
        worker_factory(pool="threads", concurrency=4)
    body = {
        "error": {
            "message": "Rate limit reached. Please try again in 2s.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    fake_provider.error(429, body, headers={"retry-after": "2"}, times=1, path="embeddings")
    job_id = producer.submit_embedding(tenant, MODEL, corpus(120), chunk_size=4)

    assert wait_for(job_id)["status"] == "succeeded"
    calls = embedding_calls(fake_provider)
    limited = next(c for c in calls if c.status == 429)
    during = [c for c in calls if limited.time + 0.2 < c.time < limited.time + 1.9]
    assert during == [], f"{len(during)} calls during the fleet-wide pause"
    assert [c.status for c in calls].count(429) == 1


def test_a_limit_advertised_in_headers_is_adopted_and_shown(
    stack: Stack, worker_factory, fake_provider: FakeProvider
) -> None:
    from tasks import producer

    fake_provider.latency_ms = 20
    fake_provider.set_limits(rpm=240, burst_seconds=1.0)  # 4 a second, advertised in x-ratelimit-* headers
    tenant = make_tenant(fake_provider.base_url)
    worker_factory(pool="threads", concurrency=8)
    job_id = producer.submit_embedding(tenant, MODEL, corpus(96), chunk_size=4)

    assert wait_for(job_id)["status"] == "succeeded"
    statuses = [c.status for c in embedding_calls(fake_provider)]
    # Before the first answer nothing is known: the first few calls may run into the limit.
    assert statuses.count(429) <= 4, statuses
    assert statuses.count(200) == 24
    (row,) = cli_json(stack, "limits", "--tenant", tenant)
    assert row["advertised"]["rpm"] == 240 and row["in_force"]["rpm_source"] == "provider headers"


def test_waiting_for_budget_is_not_a_try(stack: Stack, worker_factory, fake_provider: FakeProvider) -> None:
    """With LLM_MAX_RETRIES=0 any counted wait would fail a chunk: chunks that wait seconds for
    budget (sent back to the queue) all succeed."""
    from tasks import producer

    tenant = make_tenant(fake_provider.base_url)
    set_limits(tenant, rpm=120)  # one call every 0.5 s; 8 chunks in flight wait up to 4 s
    worker = worker_factory(
        pool="threads", concurrency=8, extra_env={"LLM_MAX_RETRIES": "0", "MODELYARD_LIMIT_MAX_WAIT": "0.5"}
    )
    job_id = producer.submit_embedding(tenant, MODEL, corpus(40), chunk_size=4)

    assert wait_for(job_id)["status"] == "succeeded"
    assert len(embedding_calls(fake_provider)) == 10
    assert "waits" in worker.log_text()  # some chunks went back to the queue to wait


def test_a_slot_held_by_a_killed_worker_expires(stack: Stack, worker_factory, fake_provider: FakeProvider) -> None:
    """max concurrency 1: a worker SIGKILLed in the middle of a call does not hold the slot
    for ever; the next chunk waits until the slot's expiry (2 x timeout + 10 s), then runs."""
    from tasks import producer

    env = {"LLM_TIMEOUT_SECONDS": "2"}  # slot expiry 14 s
    tenant = make_tenant(fake_provider.base_url)
    set_limits(tenant, max_concurrency=1)
    fake_provider.hang(30, times=1, path="embeddings")
    first = worker_factory(pool="threads", concurrency=2, extra_env=env)
    producer.submit_embedding(tenant, MODEL, corpus(4, "first"))
    deadline = time.monotonic() + 20
    while not embedding_calls(fake_provider) and time.monotonic() < deadline:
        time.sleep(0.05)
    held_at = embedding_calls(fake_provider)[0].time
    first.kill()
    worker_factory(pool="threads", concurrency=2, extra_env=env)
    second = producer.submit_embedding(tenant, MODEL, corpus(4, "second"))

    assert wait_for(second, timeout=60)["status"] == "succeeded"
    ran_at = embedding_calls(fake_provider)[-1].time
    assert 12.0 <= ran_at - held_at <= 30.0, ran_at - held_at


def test_tenants_sharing_one_key_share_its_budget(stack: Stack, worker_factory, fake_provider: FakeProvider) -> None:
    from tasks import producer

    fake_provider.set_limits(rpm=240, burst_seconds=1.0, advertise=False)
    tenants = [make_tenant(fake_provider.base_url) for _ in range(2)]
    for tenant in tenants:
        set_limits(tenant, rpm=240)
    worker_factory(pool="threads", concurrency=8)
    jobs = [producer.submit_embedding(t, MODEL, corpus(48, t), chunk_size=4) for t in tenants]

    assert all(wait_for(j)["status"] == "succeeded" for j in jobs)
    calls = embedding_calls(fake_provider)
    assert [c.status for c in calls].count(429) == 0 and len(calls) == 24
    assert most_in_one_second([c.time for c in calls]) <= 5
    assert len({row["key"] for t in tenants for row in cli_json(stack, "limits", "--tenant", t)}) == 1
    assert ledger(jobs[0], tenants[0])["events"] == 12


def test_a_key_that_must_wait_does_not_hold_up_other_keys(
    stack: Stack, worker_factory, fake_provider: FakeProvider
) -> None:
    """Key A allows 6 calls a minute (one every 10 s); key B has no limit. With two worker threads
    and A's chunks queued first, B's job still finishes in seconds: A's chunks go back to the
    queue to wait instead of sleeping on the threads."""
    from tasks import producer

    slow, fast = make_tenant(fake_provider.base_url), make_tenant(fake_provider.base_url, api_key="sk-other-key-0002")
    fake_provider.keys = None  # accept both keys
    set_limits(slow, rpm=6)
    slow_job = producer.submit_embedding(slow, MODEL, corpus(16, "slow"), chunk_size=4)
    fast_job = producer.submit_embedding(fast, MODEL, corpus(16, "fast"), chunk_size=4)
    worker_factory(pool="threads", concurrency=2)
    started = time.monotonic()

    assert wait_for(fast_job, timeout=30)["status"] == "succeeded"
    assert time.monotonic() - started < 10
    from tasks.producer import status

    assert status(slow_job)["items"]["succeeded"] <= 8  # A is still being paced
