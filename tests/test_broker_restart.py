"""Workers that outlive their broker: a throwaway ``redis-server`` on its own port is killed
and restarted empty in the middle of a job, with real worker processes consuming from it.

What it proves: the job still finishes with every item and an exact ledger, and the worker
processes carry on (or ``modelyard worker`` restarts its consumer itself) -- no human, no
supervisor. It reports how long the job took to make progress again after the broker came back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, Stack, Worker, start_worker
from tests.fakeprovider import FakeProvider
from tests.services import _free_port
from tests.test_e2e_embedding import corpus, env_overrides, ledger, make_tenant, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

MODEL = "text-embedding-3-small@OpenAI"


class ThrowawayRedis:
    """A ``redis-server`` on a free port, no persistence: restarting it loses every message."""

    def __init__(self, tmp: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("needs the redis-server binary to start a broker it may kill")
        self.exe, self.dir, self.port = exe, tmp, _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=1).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def progress(job_id: str) -> int:
    from tasks import producer

    st = producer.status(job_id)
    return st["items"]["succeeded"] + st["items"]["failed"]


STALL = ""  # the documented default (600 s): recovery must not wait for it


def test_broker_restarted_empty_mid_job(stack: Stack, broker: ThrowawayRedis, tmp_path: Path) -> None:
    """Kill Redis (SIGKILL, no persistence) while a 600-item job runs on a prefork and a threads
    worker, bring it back empty 3 s later: the same worker processes reconnect, chunks that
    finished meanwhile are re-sent by the sweep each worker asks for on reconnecting, and the
    job finishes with every item and an exact ledger."""
    env = {"MODELYARD_BROKER_URL": broker.url, "MODELYARD_STALL_SECONDS": STALL}
    with FakeProvider(keys={"sk-test-valid-key-0001"}, latency_ms=150) as fake, env_overrides(stack, **env):
        tenant_id = make_tenant(f"{fake.url}/v1")
        workers: list[Worker] = [
            start_worker(
                stack,
                tmp_path,
                queues="embedding,maintenance",
                pool=pool,
                concurrency=2,
                extra_env=env,
                extra_args=args,
            )
            for pool, args in (("prefork", ()), ("threads", ("-B",)))
        ]
        try:
            from tasks import producer

            items = corpus(600, prefix=f"blip-{uuid.uuid4().hex[:6]}")
            job_id = producer.submit_embedding(tenant_id, MODEL, items, chunk_size=5)
            deadline = time.monotonic() + 60
            while progress(job_id) < 150 and time.monotonic() < deadline:
                time.sleep(0.05)
            broker.kill()
            time.sleep(3)
            at_return = progress(job_id)
            broker.start()
            back = time.monotonic()
            while progress(job_id) <= at_return and time.monotonic() < back + 120:
                time.sleep(0.1)
            resumed = time.monotonic() - back
            final = wait_for(job_id, timeout=240)
            print(
                f"\nbroker back -> next progress: {resumed:.1f}s; job finished {time.monotonic() - back:.1f}s "
                f"after the broker came back (MODELYARD_STALL_SECONDS at its default, 600 s)"
            )
            assert resumed < 60, "the job waited for the stall deadline instead of resuming at once"
            assert final["status"] == "succeeded", final
            assert final["items"]["succeeded"] == len(items)
            books = ledger(job_id, tenant_id)
            assert books["job_tokens"] == books["event_tokens"] == books["used_tokens"]
            assert books["events"] == final["chunks"]["total"]
            for w in workers:
                assert w.proc.poll() is None, f"worker {w.name} exited {w.proc.returncode}:\n{w.log_text()[-3000:]}"
                assert "Unrecoverable error" not in w.log_text(), w.log_text()[-5000:]
            assert any("has lost its messages" in w.log_text() for w in workers)
        finally:
            for w in workers:
                w.stop()


# --------------------------------------------------------------------------- submit, broker down


def closed_port_url() -> str:
    return f"redis://127.0.0.1:{_free_port()}/0"


def test_cli_submit_with_the_broker_down_prints_the_job_id_and_a_note(stack: Stack) -> None:
    """The job is saved: its id on stdout, exit 0, a note on stderr, within seconds (no hang);
    its chunks are left due for the sweeper."""
    from tests.test_cli import tenant_with_model

    _tenant_id, name = tenant_with_model()
    env = {**stack.env, "MODELYARD_BROKER_URL": closed_port_url()}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", "embed", "--tenant", name, "--model", MODEL, "-", "--json"],
        check=False,
        input="one\ntwo\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    job_id = json.loads(proc.stdout)["job_id"]
    assert proc.stderr.startswith("modelyard: note: ") and job_id in proc.stderr and "broker" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert took < 20, f"submit took {took:.1f}s with the broker down"
    assert due_chunks(job_id) == 1


def due_chunks(job_id: str) -> int:
    from sqlalchemy import func, select

    from models.db import session_scope
    from models.jobs import utcnow
    from models.tables import job_chunks

    with session_scope() as session:
        return session.scalar(
            select(func.count())
            .select_from(job_chunks)
            .where(job_chunks.c.job_id == job_id, job_chunks.c.status == "queued", job_chunks.c.deadline_at <= utcnow())
        )


def test_api_submit_with_the_broker_down_then_the_job_runs_when_it_is_back(stack: Stack, tmp_path: Path) -> None:
    """``submit_embedding`` returns the id (``unsent`` counts the messages the broker did not
    take); when the broker comes up, a worker that connects asks for a sweep and the job runs
    -- once: the same id, no second job."""
    server = ThrowawayRedis(tmp_path)
    env = {"MODELYARD_BROKER_URL": server.url}
    with FakeProvider(keys={"sk-test-valid-key-0001"}) as fake, env_overrides(stack, **env):
        from tasks import producer

        tenant_id = make_tenant(f"{fake.url}/v1")
        started = time.monotonic()
        job_id = producer.submit_embedding(tenant_id, MODEL, [f"text {i}" for i in range(12)], chunk_size=4)
        assert time.monotonic() - started < 20
        assert job_id.unsent == 3 and due_chunks(job_id) == 3
        assert producer.status(job_id)["status"] == "queued"
        server.start()
        worker = start_worker(stack, tmp_path, queues="embedding,maintenance", pool="threads", extra_env=env)
        try:
            final = wait_for(job_id, timeout=60)
        finally:
            worker.stop()
            server.kill()
        assert final["status"] == "succeeded" and final["items"]["succeeded"] == 12
        assert fake.count("embeddings") == 3


# --------------------------------------------------------------------------- the supervisor


def test_modelyard_worker_restarts_a_celery_process_that_dies(stack: Stack, clean_broker: None, tmp_path: Path) -> None:
    """``modelyard worker`` runs Celery in a child process: the child killed (as a library that
    gives up exits, non-zero), the same ``modelyard worker`` starts a new one, which takes work."""
    with FakeProvider(keys={"sk-test-valid-key-0001"}) as fake:
        tenant_id = make_tenant(f"{fake.url}/v1")
        worker = start_worker(stack, tmp_path, queues="embedding", pool="threads", concurrency=1)
        try:
            child = int(subprocess.check_output(["pgrep", "-P", str(worker.proc.pid)], text=True).split()[0])
            os.kill(child, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while worker.log_text().count(" ready.") < 2 and time.monotonic() < deadline:
                assert worker.proc.poll() is None, worker.log_text()[-3000:]
                time.sleep(0.2)
            log = worker.log_text()
            assert "the worker process exited with status 137; starting a new one" in log, log[-3000:]
            assert log.count(" ready.") == 2, log[-3000:]
            from tasks import producer

            final = wait_for(producer.submit_embedding(tenant_id, MODEL, ["after the restart"]), timeout=60)
            assert final["status"] == "succeeded"
        finally:
            worker.stop()
        assert worker.proc.returncode is not None
