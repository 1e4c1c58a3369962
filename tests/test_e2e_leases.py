"""At most one paid call per chunk attempt: releases, claims and leases, end to end.

Real worker processes, Redis and Postgres; the fake provider counts every call it gets. A
chunk's message carries its release; a worker claims the chunk (a lease it renews) before it
calls the provider; the sweeper re-sends only chunks whose deadline or lease expired, as a new
release, and a message of an older release is dropped without a provider call.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
import redis
from sqlalchemy import select

from tests.conftest import Stack, cancel_unfinished_jobs
from tests.fakeprovider import FakeProvider, fake_tokens
from tests.test_e2e_embedding import (
    JOB_TIMEOUT,
    KEY,
    MODEL,
    assert_vectors,
    chunk_rows,
    corpus,
    embedding_calls,
    env_overrides,
    ledger,
    make_tenant,
    poll_until,
    queue_length,
    texts_of,
    wait_for,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(autouse=True)
def no_leftover_jobs(stack: Stack) -> None:
    """These tests sweep the whole database: another test's stalled chunk would be re-sent to their workers."""
    cancel_unfinished_jobs()


@pytest.fixture
def tenant(stack: Stack, fake_provider: FakeProvider) -> str:
    return make_tenant(fake_provider.base_url)


def results_in_log(log: str, result: str) -> int:
    """How many chunk tasks the worker's log shows ending with ``result``."""
    return sum(
        1
        for line in log.splitlines()
        if "run_chunk[" in line and " succeeded in " in line and line.rstrip().endswith(f"'{result}'")
    )


@contextmanager
def sweeping(every: float = 0.3) -> Iterator[None]:
    """Run the sweeper in the background, as beat would, but often."""
    from tasks.maintenance import sweep_stalled
    from tasks.runtime import current

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            sweep_stalled(current().celery)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def send_release(chunk_id: int, release: int | None) -> None:
    from tasks.app import TASK_NAMES
    from tasks.runtime import current

    app = current().celery

    kwargs = {} if release is None else {"release": release}
    app.send_task(TASK_NAMES["embedding"], args=[chunk_id], kwargs=kwargs, queue="embedding")


def deadline_of(chunk_id: int) -> datetime:
    from models.db import session_scope
    from models.tables import job_chunks

    with session_scope() as session:
        return session.scalar(select(job_chunks.c.deadline_at).where(job_chunks.c.id == chunk_id))


def test_chunks_waiting_in_a_long_queue_past_their_deadline_reach_the_provider_once(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """The issue's case: chunks wait in the queue, and run, longer than the stall deadline
    (four worker processes, eight chunks in flight, 1.5 s provider calls, a 1 s deadline, the
    sweeper every 0.3 s). The sweeper re-sends the waiting chunks as new releases, and the old
    messages, taken later, are dropped; running chunks hold their lease and are not re-sent.
    The provider gets exactly one call per chunk (the code before releases and leases made 23
    calls for these 16 chunks), the job succeeds and the ledger is exact."""
    from tasks import producer

    fake_provider.latency_ms = 1500
    stall = {"MODELYARD_STALL_SECONDS": "1"}
    items = corpus(80)
    with env_overrides(stack, **stall):
        worker = worker_factory(concurrency=4, extra_env=stall)
        with sweeping():
            job_id = producer.submit_embedding(tenant, MODEL, items, chunk_size=5)  # 16 chunks, 8 in flight
            final = wait_for(job_id, timeout=JOB_TIMEOUT * 2)

    assert final["status"] == "succeeded", final
    chunks = chunk_rows(job_id)
    resends = sum(c.releases - 1 for c in chunks)
    assert resends > 0, "nothing waited past its deadline"
    calls = embedding_calls(fake_provider)
    # The duplicate-call count: provider calls beyond one per chunk.
    print(
        f"\n16 chunks, {resends} re-sends, {len(calls)} provider calls, "
        f"{results_in_log(worker.log_text(), 'superseded')} superseded messages dropped"
    )
    assert len(calls) == len(chunks) == 16
    assert results_in_log(worker.log_text(), "superseded") >= 1
    assert_vectors(job_id, items)
    expected = fake_tokens(texts_of(items))
    assert ledger(job_id, tenant) == {
        "job_tokens": expected,
        "events": 16,
        "event_tokens": expected,
        "used_tokens": expected,
    }


def test_a_superseded_message_is_dropped_without_a_provider_call(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """A one-chunk job whose first message waits past its deadline (no worker yet): the sweep
    sends release 2. The worker takes release 1 and drops it ("superseded", logged), and
    release 2 makes the one provider call. A message without a release (as sent before
    releases existed) is still taken, as the current release."""
    from tasks import producer
    from tasks.maintenance import sweep_stalled
    from tasks.runtime import current

    legacy_items = corpus(5, prefix="legacy")
    legacy_job = producer.submit_embedding(tenant, MODEL, legacy_items)
    redis.Redis.from_url(stack.redis_url).delete("embedding")  # its message, as an older producer sent it:
    send_release(chunk_rows(legacy_job)[0].id, None)

    stall = {"MODELYARD_STALL_SECONDS": "0.5"}
    items = corpus(10)
    with env_overrides(stack, **stall):
        job_id = producer.submit_embedding(tenant, MODEL, items)
        (chunk,) = chunk_rows(job_id)
        assert chunk.releases == 1
        time.sleep(0.7)
        assert sweep_stalled(current().celery) == 1
        assert sweep_stalled(current().celery) == 0  # its new deadline is ahead
    assert chunk_rows(job_id)[0].releases == 2
    assert queue_length(stack) == 3  # the legacy message, release 1 still waiting, then release 2
    from models.db import session_scope
    from models.jobs import postpone_chunk

    with session_scope() as session:  # release 2 now waits in the queue: not for the sweep a starting worker asks for
        postpone_chunk(session, chunk.id, 2, 600)

    worker = worker_factory(concurrency=1)
    final = wait_for(job_id)
    assert wait_for(legacy_job)["status"] == "succeeded"
    poll_until(lambda: results_in_log(worker.log_text(), "superseded") == 1, 20, "release 1 to be dropped")

    assert final["status"] == "succeeded", final
    assert len(embedding_calls(fake_provider)) == 2  # one per job
    assert "message of release 1 dropped without a provider call: superseded" in worker.log_text()
    assert results_in_log(worker.log_text(), "done") == 2
    assert_vectors(job_id, items)
    assert_vectors(legacy_job, legacy_items)
    expected = fake_tokens(texts_of(items))
    assert ledger(job_id, tenant)["event_tokens"] == expected


def test_a_worker_killed_mid_call_has_its_chunk_rerun_after_the_lease_expires_not_before(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    """SIGKILL the worker while its provider call hangs. Its chunk keeps its lease (2 x
    LLM_TIMEOUT_SECONDS + 10 = 14 s here): a redelivered copy of the same release is dropped
    ("claimed") and the sweeper, running every 0.3 s, does not re-send it. Once the lease has
    expired the sweeper sends release 2, which makes the second (and last) provider call."""
    from tasks import producer

    env = {"LLM_TIMEOUT_SECONDS": "2", "MODELYARD_STALL_SECONDS": "1"}
    lease = 2 * 2 + 10
    fake_provider.hang(60, path="embeddings")
    items = corpus(10)
    with env_overrides(stack, **env):
        first = worker_factory(concurrency=1, extra_env=env)
        job_id = producer.submit_embedding(tenant, MODEL, items)
        (chunk,) = chunk_rows(job_id)
        poll_until(lambda: embedding_calls(fake_provider), 20, "the first call")
        first.kill(signal.SIGKILL)
        expires = deadline_of(chunk.id).timestamp()
        first_call = embedding_calls(fake_provider)[0].time
        assert lease - 1 <= expires - first_call <= lease + 0.5  # claimed just before the call

        second = worker_factory(concurrency=1, extra_env=env)
        with sweeping():
            send_release(chunk.id, 1)  # the killed worker's message, redelivered
            poll_until(
                lambda: results_in_log(second.log_text(), "claimed") == 1, 20, "the redelivered message to be dropped"
            )
            final = wait_for(job_id, timeout=lease + JOB_TIMEOUT)

    assert final["status"] == "succeeded", final
    calls = embedding_calls(fake_provider)
    assert len(calls) == 2, [(c.time - first_call, c.status) for c in calls]
    rerun = calls[1].time
    print(
        f"\nlease {lease}s: re-run {rerun - first_call:.1f}s after the first call, "
        f"{rerun - expires:.1f}s after the lease expired"
    )
    assert rerun >= expires, "re-run before the lease expired"
    assert rerun - expires < 5
    assert chunk_rows(job_id)[0].releases == 2  # one re-send
    assert_vectors(job_id, items)
    expected = fake_tokens(texts_of(items))
    assert ledger(job_id, tenant) == {
        "job_tokens": expected,
        "events": 1,
        "event_tokens": expected,
        "used_tokens": expected,
    }


def test_a_long_running_chunk_renews_its_lease_and_is_never_resent(
    stack: Stack, worker_factory, fake_provider: FakeProvider
) -> None:
    """A chunk of 140 texts for a model whose requests carry at most 10 (Tongyi-Qianwen's
    text-embedding-v3) makes 14 calls: 1.2 s each, longer than the 14 s lease. The worker's heartbeat renews the lease, so the sweeper (every 0.3 s, 1 s stall
    deadline) never re-sends the chunk: 14 calls in all, one release."""
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm
    from tasks import producer

    model = "text-embedding-v3@Tongyi-Qianwen"
    with session_scope() as session:
        tenant_id = create_tenant(session, f"e2e-{uuid.uuid4().hex[:10]}", defaults=False)
        save_llm(session, tenant_id, model, "embedding", api_key=KEY, api_base=fake_provider.base_url)
    env = {"LLM_TIMEOUT_SECONDS": "2", "MODELYARD_STALL_SECONDS": "1"}
    fake_provider.latency_ms = 1200
    texts = [f"text number {i}" for i in range(140)]
    with env_overrides(stack, **env):
        worker_factory(concurrency=2, extra_env=env)
        with sweeping():
            job_id = producer.submit_embedding(tenant_id, model, texts, chunk_size=140)
            final = wait_for(job_id, timeout=JOB_TIMEOUT)

    assert final["status"] == "succeeded", final
    calls = embedding_calls(fake_provider)
    assert calls[-1].time - calls[0].time > 14, "the chunk ran shorter than its lease"
    assert len(calls) == 14
    assert chunk_rows(job_id)[0].releases == 1  # never re-sent
