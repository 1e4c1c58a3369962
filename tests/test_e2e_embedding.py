"""Batch embedding jobs end to end: real worker processes, real Redis and Postgres, and the
fake OpenAI-compatible provider on loopback.

Every test submits through the producer API in this process, lets worker subprocesses do the
work, and then checks what a user and an accountant would check: each item's vector, each
item's error, the job's status, and the three token counts that must agree -- the job's
``total_tokens``, the ``usage_events`` ledger and ``tenant_llm.used_tokens``.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import redis
from sqlalchemy import func, select

from tests.conftest import Stack, apply_env
from tests.fakeprovider import FakeProvider, fake_tokens, fake_vectors

pytestmark = [pytest.mark.services, pytest.mark.slow]

KEY = "sk-test-valid-key-0001"  # the key the fake_provider fixture accepts
MODEL = "text-embedding-3-small@OpenAI"
JOB_TIMEOUT = 60.0


# --------------------------------------------------------------------------- helpers


@contextmanager
def env_overrides(stack: Stack, **env: str) -> Iterator[None]:
    """Point this process at ``env`` on top of the stack's, and back afterwards."""
    saved: dict[str, str | None] = {name: os.environ.get(name) for name in env}
    apply_env(env)
    try:
        yield
    finally:
        apply_env({**saved, **stack.env})


def make_tenant(base_url: str, api_key: str = KEY) -> str:
    """A fresh tenant with the embedding model pointed at ``base_url``."""
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm

    with session_scope() as session:
        tenant_id = create_tenant(session, f"e2e-{uuid.uuid4().hex[:10]}", defaults=False)
        save_llm(session, tenant_id, MODEL, "embedding", api_key=api_key, api_base=base_url)
    return tenant_id


def corpus(n: int, prefix: str = "doc") -> list[dict[str, str]]:
    """``n`` distinct texts of varying length, with custom ids that are not the item numbers."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    return [
        {"custom_id": f"{prefix}-{n - i:05d}", "text": f"{prefix} {i}: " + " ".join(words[: 1 + i % len(words)])}
        for i in range(n)
    ]


def texts_of(items: list[dict[str, str]]) -> list[str]:
    return [item["text"] for item in items]


def wait_for(job_id: str, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
    from tasks import producer

    return producer.wait(job_id, timeout=timeout, poll=0.1)


def poll_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def ledger(job_id: str, tenant_id: str) -> dict[str, int]:
    """The job's own token count, its usage events, and the tenant's running counter."""
    from models.db import session_scope
    from models.tables import jobs, tenant_llm, usage_events

    with session_scope() as session:
        job_tokens = session.scalar(select(jobs.c.total_tokens).where(jobs.c.id == job_id))
        events, event_tokens = session.execute(
            select(func.count(), func.coalesce(func.sum(usage_events.c.total_tokens), 0)).where(
                usage_events.c.job_id == job_id
            )
        ).one()
        used = session.scalar(select(tenant_llm.c.used_tokens).where(tenant_llm.c.tenant_id == tenant_id))
    return {
        "job_tokens": int(job_tokens),
        "events": int(events),
        "event_tokens": int(event_tokens),
        "used_tokens": int(used),
    }


def chunk_rows(job_id: str) -> list[Any]:
    from models.db import session_scope
    from models.tables import job_chunks

    with session_scope() as session:
        return session.execute(
            select(
                job_chunks.c.id,
                job_chunks.c.seq,
                job_chunks.c.status,
                job_chunks.c.releases,
                job_chunks.c.first_item,
                job_chunks.c.item_count,
            )
            .where(job_chunks.c.job_id == job_id)
            .order_by(job_chunks.c.seq)
        ).all()


def item_statuses(job_id: str) -> list[str]:
    from tasks import producer

    return [item.status for item in producer.iter_results(job_id)]


def embedding_calls(fp: FakeProvider) -> list[Any]:
    return [call for call in fp.calls if call.route == "embeddings"]


def queue_length(stack: Stack, queue: str = "embedding") -> int:
    return int(redis.Redis.from_url(stack.redis_url).llen(queue))


def max_overlap(starts: list[float], duration: float) -> int:
    """The most intervals ``[start, start + duration)`` that are open at one moment."""
    events = sorted([(t, 1) for t in starts] + [(t + duration, -1) for t in starts], key=lambda e: (e[0], e[1]))
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


def assert_vectors(job_id: str, items: list[dict[str, str]]) -> None:
    """Every item has the fake's vector for its own text, in submission order, with its custom id."""
    from tasks import producer

    res = producer.results(job_id)
    assert res.custom_ids == [item["custom_id"] for item in items]
    assert res.errors == {}
    np.testing.assert_array_equal(res.vectors, fake_vectors(texts_of(items)))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def tenant(stack: Stack, fake_provider: FakeProvider) -> str:
    return make_tenant(fake_provider.base_url)


# --------------------------------------------------------------------------- the happy path


def test_job_succeeds_with_every_vector_in_order_and_tokens_counted_once_per_chunk(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """A few hundred texts in seven chunks: the job succeeds, ``results()`` returns the fake's
    vector of each text in submission order under its custom id, and the job's tokens, the
    usage ledger (one row per chunk) and the tenant's ``used_tokens`` all equal what the
    provider reported."""
    from tasks import producer

    worker_factory(concurrency=2)
    items = corpus(330)
    job_id = producer.submit_embedding(tenant, MODEL, items, chunk_size=50)

    final = wait_for(job_id)

    assert final["status"] == "succeeded", final
    assert final["items"] == {"total": 330, "succeeded": 330, "failed": 0, "pending": 0}
    assert final["chunks"] == {"total": 7, "done": 7}
    assert_vectors(job_id, items)
    expected = fake_tokens(texts_of(items))
    assert ledger(job_id, tenant) == {
        "job_tokens": expected,
        "events": 7,
        "event_tokens": expected,
        "used_tokens": expected,
    }
    assert len(embedding_calls(fake_provider)) == 7
    assert all(call.key == KEY for call in fake_provider.calls)


# --------------------------------------------------------------------------- flow control


def test_no_more_than_max_inflight_chunks_reach_the_provider_at_once(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """With ``MODELYARD_JOB_MAX_INFLIGHT=2`` and four worker processes, the provider never has
    more than two of the job's requests open (each request is open for the fake's latency, and
    the next chunk is released only when one finishes), the database never shows more than two
    chunks queued -- and the job still completes."""
    from tasks import producer

    latency = 0.15
    fake_provider.latency_ms = latency * 1000
    limits = {"MODELYARD_JOB_MAX_INFLIGHT": "2"}
    worker_factory(concurrency=4, extra_env=limits)
    items = corpus(60)
    with env_overrides(stack, **limits):
        job_id = producer.submit_embedding(tenant, MODEL, items, chunk_size=5)

        peak_queued = 0
        deadline = time.monotonic() + JOB_TIMEOUT
        while producer.status(job_id)["status"] not in ("succeeded", "partial", "failed", "cancelled"):
            assert time.monotonic() < deadline, "job did not finish"
            peak_queued = max(peak_queued, sum(1 for c in chunk_rows(job_id) if c.status in ("queued", "running")))
            time.sleep(0.02)

    final = producer.status(job_id)
    assert final["status"] == "succeeded", final
    assert_vectors(job_id, items)
    assert 1 <= peak_queued <= 2
    starts = [call.time for call in embedding_calls(fake_provider)]
    assert len(starts) == 12
    # A request is open at least ``latency`` after it arrived; 10% slack for clock granularity.
    assert max_overlap(starts, latency * 0.9) <= 2


# --------------------------------------------------------------------------- provider errors


def test_rate_limit_with_retry_after_is_retried_after_the_given_wait_and_counted_once(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """A 429 ``rate_limit_exceeded`` with ``Retry-After: 2``: the chunk is retried, the retry
    reaches the provider no sooner than two seconds after the first request, the job succeeds,
    and the tokens are counted once (the 429 spent none)."""
    from tasks import producer

    worker_factory(concurrency=2)
    fake_provider.rate_limit(retry_after=2, path="embeddings")
    items = corpus(20)
    job_id = producer.submit_embedding(tenant, MODEL, items)

    final = wait_for(job_id)

    assert final["status"] == "succeeded", final
    first, retry = embedding_calls(fake_provider)
    assert (first.status, first.behaviour) == (429, "rate_limit")
    assert retry.status == 200
    assert retry.time - first.time >= 2.0
    assert_vectors(job_id, items)
    expected = fake_tokens(texts_of(items))
    assert ledger(job_id, tenant) == {
        "job_tokens": expected,
        "events": 1,
        "event_tokens": expected,
        "used_tokens": expected,
    }


def test_quota_error_is_not_retried_and_fails_only_its_chunk(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """A 429 ``insufficient_quota`` is a quota error, not a rate limit: the chunk that got it is
    not retried (one request per chunk in all), its items fail with QUOTA and the provider's
    message, the other chunks succeed, and the job ends ``partial``. A one-chunk job that gets
    the same error ends ``failed``."""
    from tasks import producer

    worker_factory(concurrency=2)
    fake_provider.quota(path="embeddings")
    items = corpus(25)
    job_id = producer.submit_embedding(tenant, MODEL, items, chunk_size=10)

    final = wait_for(job_id)

    assert final["status"] == "partial", final
    calls = embedding_calls(fake_provider)
    assert len(calls) == 3  # three chunks, no retry
    assert [c.behaviour for c in calls].count("quota") == 1
    failed_chunks = [c for c in chunk_rows(job_id) if c.status == "failed"]
    assert len(failed_chunks) == 1
    bad = failed_chunks[0]
    failed_ids = {items[i]["custom_id"] for i in range(bad.first_item, bad.first_item + bad.item_count)}
    res = producer.results(job_id)
    assert set(res.errors) == failed_ids
    for code, message in res.errors.values():
        assert code == "QUOTA"
        assert "quota" in message.lower()
    assert final["items"]["failed"] == len(failed_ids)
    assert final["items"]["succeeded"] == 25 - len(failed_ids)
    good_texts = [item["text"] for item in items if item["custom_id"] not in failed_ids]
    for k, custom_id in enumerate(res.custom_ids):
        if custom_id not in failed_ids:
            np.testing.assert_array_equal(res.vectors[k], fake_vectors([items[k]["text"]])[0])
        else:
            assert np.isnan(res.vectors[k]).all()
    spent = fake_tokens(good_texts)
    assert ledger(job_id, tenant) == {"job_tokens": spent, "events": 2, "event_tokens": spent, "used_tokens": spent}

    fake_provider.quota(path="embeddings")
    single = producer.submit_embedding(tenant, MODEL, corpus(5, prefix="single"))
    assert wait_for(single)["status"] == "failed"
    assert len(embedding_calls(fake_provider)) == 4


def test_server_errors_are_retried_until_the_provider_recovers(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """Two 500s, then success, with ``LLM_MAX_RETRIES=2``: three requests in all, the job
    succeeds, and only the successful attempt is in the ledger."""
    from tasks import producer

    worker_factory(concurrency=2, extra_env={"LLM_MAX_RETRIES": "2", "LLM_BASE_DELAY": "0.1"})
    fake_provider.server_error(500, times=2, path="embeddings")
    items = corpus(12)
    job_id = producer.submit_embedding(tenant, MODEL, items)

    final = wait_for(job_id)

    assert final["status"] == "succeeded", final
    assert [c.status for c in embedding_calls(fake_provider)] == [500, 500, 200]
    assert_vectors(job_id, items)
    expected = fake_tokens(texts_of(items))
    assert ledger(job_id, tenant) == {
        "job_tokens": expected,
        "events": 1,
        "event_tokens": expected,
        "used_tokens": expected,
    }


def test_server_errors_past_max_retries_fail_the_items_with_max_retries(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """A provider that keeps answering 503, with ``LLM_MAX_RETRIES=2``: exactly three requests
    (the first try and two retries), then the items fail with MAX_RETRIES and a message that
    says what happened, the job ends ``failed``, and no tokens are counted."""
    from tasks import producer

    worker_factory(concurrency=2, extra_env={"LLM_MAX_RETRIES": "2", "LLM_BASE_DELAY": "0.1"})
    fake_provider.server_error(503, times=100, path="embeddings")
    items = corpus(8)
    job_id = producer.submit_embedding(tenant, MODEL, items)

    final = wait_for(job_id)

    assert final["status"] == "failed", final
    assert [c.status for c in embedding_calls(fake_provider)] == [503, 503, 503]
    errors = producer.results(job_id).errors
    assert set(errors) == {item["custom_id"] for item in items}
    for code, message in errors.values():
        assert code == "MAX_RETRIES"
        assert "3 tries" in message and "SERVER" in message
    assert ledger(job_id, tenant) == {"job_tokens": 0, "events": 0, "event_tokens": 0, "used_tokens": 0}
    time.sleep(0.5)  # a stray extra retry would show up here
    assert len(embedding_calls(fake_provider)) == 3


def test_wrong_key_fails_at_once_with_authentication(stack: Stack, worker_factory, fake_provider: FakeProvider) -> None:
    """A key the provider rejects (401 ``invalid_api_key``): one request per chunk, no retry,
    every item fails with AUTHENTICATION, the job ends ``failed``; the message does not repeat
    the key."""
    from tasks import producer

    wrong = "sk-wrong-key-for-this-test-9999"
    tenant = make_tenant(fake_provider.base_url, api_key=wrong)
    worker_factory(concurrency=2)
    items = corpus(10)
    job_id = producer.submit_embedding(tenant, MODEL, items, chunk_size=5)

    final = wait_for(job_id)

    assert final["status"] == "failed", final
    calls = embedding_calls(fake_provider)
    assert [c.status for c in calls] == [401, 401]
    errors = producer.results(job_id).errors
    assert set(errors) == {item["custom_id"] for item in items}
    for code, message in errors.values():
        assert code == "AUTHENTICATION"
        assert message and wrong not in message
    assert ledger(job_id, tenant)["used_tokens"] == 0
    time.sleep(0.5)
    assert len(embedding_calls(fake_provider)) == 2


# --------------------------------------------------------------------------- crashes and duplicates


def test_worker_killed_mid_job_loses_nothing_and_counts_nothing_twice(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """SIGKILL the whole worker (main process and pool children) while chunks are in flight.
    A new worker takes the messages still in the queue; the sweeper re-sends the chunks whose
    messages died with the old worker. The job succeeds, every item has its vector, and the
    ledger holds exactly one event per chunk with exactly the tokens of all texts -- whatever
    was cut off mid-call or executed twice is not counted twice."""
    from tasks import producer
    from tasks.maintenance import sweep_stalled
    from tasks.runtime import current

    fake_provider.latency_ms = 200
    stall = {"MODELYARD_STALL_SECONDS": "2"}
    items = corpus(120)
    with env_overrides(stack, **stall):
        first = worker_factory(concurrency=2, extra_env=stall)
        job_id = producer.submit_embedding(tenant, MODEL, items, chunk_size=5)  # 24 chunks

        poll_until(
            lambda: sum(c.status == "succeeded" for c in chunk_rows(job_id)) >= 3, JOB_TIMEOUT, "three chunks done"
        )
        # Kill while a request is open (it arrived less than the latency ago).
        poll_until(
            lambda: any(time.time() - c.time < 0.15 for c in embedding_calls(fake_provider)), 10, "a request in flight"
        )
        first.kill(signal.SIGKILL)
        after_kill = chunk_rows(job_id)
        assert any(c.status in ("queued", "running") for c in after_kill)
        assert any(c.status == "succeeded" for c in after_kill)
        assert producer.status(job_id)["status"] == "running"

        worker_factory(concurrency=2, extra_env=stall)
        deadline = time.monotonic() + JOB_TIMEOUT
        while producer.status(job_id)["status"] == "running":
            assert time.monotonic() < deadline, f"job stuck: {[(c.seq, c.status) for c in chunk_rows(job_id)]}"
            sweep_stalled(current().celery)
            time.sleep(0.5)

    final = producer.status(job_id)
    assert final["status"] == "succeeded", final
    assert final["items"] == {"total": 120, "succeeded": 120, "failed": 0, "pending": 0}
    assert any(c.releases > 1 for c in chunk_rows(job_id)), "the sweeper re-sent no chunk: nothing was recovered"
    assert_vectors(job_id, items)
    expected = fake_tokens(texts_of(items))
    assert ledger(job_id, tenant) == {
        "job_tokens": expected,
        "events": 24,
        "event_tokens": expected,
        "used_tokens": expected,
    }


def _task_lines(log: str, result: str | None = None) -> list[str]:
    lines = [line for line in log.splitlines() if "modelyard.embedding.run_chunk[" in line and " succeeded in " in line]
    return [line for line in lines if result is None or line.rstrip().endswith(f"'{result}'")]


def test_redelivered_chunk_message_cannot_count_twice(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """One queued chunk with three messages for it -- the original and the same redelivered
    message twice (same task id, sent without a release as older producers did) -- taken by
    three worker processes at once: the first claims the chunk, the other two find it claimed
    and are dropped, so exactly one call reaches the provider and the job's tokens, the ledger
    (one event) and ``used_tokens`` stay exact. A message re-published after the chunk is done
    is skipped without calling the provider."""
    from tasks import producer
    from tasks.app import TASK_NAMES
    from tasks.runtime import current

    app = current().celery

    fake_provider.latency_ms = 800  # long enough that all three executions load the chunk first
    items = corpus(10)
    # No worker yet: the messages pile up, then three processes take them at once.
    job_id = producer.submit_embedding(tenant, MODEL, items)
    (chunk,) = chunk_rows(job_id)
    redelivered = str(uuid.uuid4())
    for _ in range(2):
        app.send_task(TASK_NAMES["embedding"], args=[chunk.id], queue="embedding", task_id=redelivered)
    assert queue_length(stack) == 3

    worker = worker_factory(concurrency=3)
    final = wait_for(job_id)
    poll_until(lambda: len(_task_lines(worker.log_text())) == 3, 20, "all three messages handled")

    assert final["status"] == "succeeded", final
    expected = fake_tokens(texts_of(items))
    exact = {"job_tokens": expected, "events": 1, "event_tokens": expected, "used_tokens": expected}
    assert ledger(job_id, tenant) == exact
    assert_vectors(job_id, items)
    assert len(_task_lines(worker.log_text(), "done")) == 1
    assert len(_task_lines(worker.log_text(), "claimed")) == 2
    assert len(embedding_calls(fake_provider)) == 1

    calls_before = len(embedding_calls(fake_provider))
    late = app.send_task(TASK_NAMES["embedding"], args=[chunk.id], queue="embedding")
    poll_until(
        lambda: any(late.id in line for line in _task_lines(worker.log_text(), "skipped")),
        20,
        "the late message to be skipped",
    )
    assert len(embedding_calls(fake_provider)) == calls_before
    assert ledger(job_id, tenant) == exact


# --------------------------------------------------------------------------- cancel and idempotency


def test_cancel_stops_a_running_job(stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str) -> None:
    """Cancel a running job: it ends ``cancelled``, its pending items are ``cancelled``, only
    requests already under way reach the provider afterwards (at most one per worker process)
    and then no more arrive, although messages for released chunks were still queued. Tokens
    that in-flight requests spent are still counted in the ledger and ``used_tokens``."""
    from tasks import producer

    fake_provider.latency_ms = 300
    worker_factory(concurrency=2)
    items = corpus(120)
    job_id = producer.submit_embedding(tenant, MODEL, items, chunk_size=4)  # 30 chunks, 8 released

    poll_until(lambda: sum(c.status == "succeeded" for c in chunk_rows(job_id)) >= 2, JOB_TIMEOUT, "two chunks done")
    cancelled_at = time.time()
    assert producer.cancel(job_id) == "cancelled"

    assert producer.status(job_id)["status"] == "cancelled"
    poll_until(lambda: queue_length(stack) == 0, 20, "the released messages to be consumed")
    time.sleep(1.0)  # in-flight requests (300 ms) drain
    settled = len(embedding_calls(fake_provider))
    time.sleep(1.0)
    assert len(embedding_calls(fake_provider)) == settled, "provider calls went on after the job was cancelled"

    late_calls = [c for c in embedding_calls(fake_provider) if c.time > cancelled_at]
    assert len(late_calls) <= 2
    assert settled < 30
    final = producer.status(job_id)
    assert final["status"] == "cancelled"
    statuses = item_statuses(job_id)
    assert "pending" not in statuses
    assert statuses.count("cancelled") > 0
    assert statuses.count("succeeded") == final["items"]["succeeded"]
    chunks = chunk_rows(job_id)
    assert {c.status for c in chunks} <= {"succeeded", "cancelled"}
    assert sum(c.status == "cancelled" for c in chunks) > 0
    done_texts = [item["text"] for item, st in zip(items, statuses, strict=True) if st == "succeeded"]
    counts = ledger(job_id, tenant)
    # Chunks that were running when the job was cancelled spent tokens too: the job's total,
    # the ledger and the tenant's counter all include them, once.
    assert counts["job_tokens"] == counts["event_tokens"] == counts["used_tokens"] >= fake_tokens(done_texts)


def test_same_idempotency_key_returns_the_same_job(
    stack: Stack, clean_broker: None, fake_provider: FakeProvider, tenant: str
) -> None:
    """Submitting twice with the same idempotency key returns the first job's id, writes no
    second job or items, and sends no second set of messages; another key makes a new job."""
    from models.db import session_scope
    from models.tables import job_items, jobs
    from tasks import producer

    items = corpus(30)
    first = producer.submit_embedding(tenant, MODEL, items, idempotency_key="ingest-2024-06-01", chunk_size=10)
    sent = queue_length(stack)
    again = producer.submit_embedding(tenant, MODEL, items, idempotency_key="ingest-2024-06-01", chunk_size=10)

    assert again == first
    assert queue_length(stack) == sent == 3
    with session_scope() as session:
        n_jobs = session.scalar(select(func.count()).select_from(jobs).where(jobs.c.tenant_id == tenant))
        n_items = session.scalar(select(func.count()).select_from(job_items).where(job_items.c.job_id == first))
    assert (n_jobs, n_items) == (1, 30)

    other = producer.submit_embedding(tenant, MODEL, items, idempotency_key="ingest-2024-06-02", chunk_size=10)
    assert other != first
    assert queue_length(stack) == 6


def test_query_jobs_use_the_providers_query_mode(stack: Stack, worker_factory, fake_provider: FakeProvider) -> None:
    """Upstage names a query twin for each passage model: a job of ``input_type="query"`` reaches
    the provider as ``...-query`` (the chunk's queries in one batched call), a document job as the
    configured ``-passage``."""
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm
    from tasks import producer

    model = "solar-embedding-1-large-passage@Upstage"
    with session_scope() as session:
        tenant_id = create_tenant(session, f"e2e-{uuid.uuid4().hex[:10]}", defaults=False)
        save_llm(session, tenant_id, model, "embedding", api_key=KEY, api_base=fake_provider.base_url)
    worker_factory(concurrency=2)
    queries = ["where is the key stored", "how are retries timed"]
    final = wait_for(producer.submit_embedding(tenant_id, model, queries, input_type="query"))
    assert final["status"] == "succeeded", final
    assert [(c.model, c.n_inputs) for c in fake_provider.calls] == [("solar-embedding-1-large-query", 2)]
    fake_provider.reset()
    final = wait_for(producer.submit_embedding(tenant_id, model, queries))
    assert final["status"] == "succeeded", final
    assert [(c.model, c.n_inputs) for c in fake_provider.calls] == [("solar-embedding-1-large-passage", 2)]
