"""Test fixtures: real Redis and Postgres (found or started by tests/services.py), a fresh
database per run, real worker processes, and the fake provider on loopback.

The ``stack`` fixture sets the environment and builds this process's runtime from it (settings,
database, broker, HTTP client); a test that changes the environment builds another
(:func:`apply_env`). Unit tests that need no services never touch it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.fernet import Fernet

from tests import services

if TYPE_CHECKING:
    from tasks.runtime import Runtime

pytest_plugins = ["tests.service_guard", "pytester"]
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    env: dict[str, str]
    data_dir: Path
    redis_url: str
    database_url: str


def apply_env(env: dict[str, str | None]) -> Runtime:
    """Point this (test) process at ``env`` (None removes a variable): a runtime built from the
    environment then, activated in place of the one before (which is closed)."""
    from conf.settings import NoRuntimeError
    from tasks.runtime import Runtime, current

    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        previous: Runtime | None = current()
    except NoRuntimeError:
        previous = None
    runtime = Runtime.from_env()
    runtime.activate()
    if previous is not None:
        previous.close()
    return runtime


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    try:
        redis_base, db_base = services.redis_url(), services.database_url()
    except services.ServicesUnavailable as exc:
        pytest.exit(str(exc), returncode=3)
    database_url = services.fresh_database(db_base)
    redis_url = services.fresh_redis_db(redis_base)
    data_dir = tmp_path_factory.mktemp("modelyard-data")
    env = {
        "MODELYARD_DATABASE_URL": database_url,
        "MODELYARD_BROKER_URL": redis_url,
        "MODELYARD_DATA_DIR": str(data_dir),
        "MODELYARD_SECRET_KEY": Fernet.generate_key().decode(),
        "LLM_BASE_DELAY": "0.2",
        "LLM_MAX_DELAY": "5",
        "LLM_MAX_RETRIES": "3",
        "LLM_TIMEOUT_SECONDS": "5",
        "MODELYARD_STALL_SECONDS": "30",
    }
    from models.migrate import upgrade

    upgrade(apply_env(env).database.engine)
    yield Stack(env=env, data_dir=data_dir, redis_url=redis_url, database_url=database_url)
    from tasks.runtime import current

    current().close()
    services.drop_database(database_url)


@pytest.fixture
def runtime_from_env() -> Iterator[Callable[[], Runtime]]:
    """Builds and activates a runtime from the environment as it is then, as a new process would
    (call it again after changing the environment). Each is closed after the test, and the runtime
    active before the test is active again."""
    from tasks.runtime import Runtime

    with ExitStack() as built:

        def build() -> Runtime:
            runtime = Runtime.from_env()
            built.callback(runtime.close)
            built.enter_context(runtime.active())
            return runtime

        yield build


def cancel_unfinished_jobs() -> None:
    """Cancel the jobs earlier tests left unfinished in the session's database: a worker asks
    for a sweep when it connects, and another test's stalled chunk would be re-sent to it."""
    from sqlalchemy import select

    from models.db import session_scope
    from models.jobs import TERMINAL, cancel_job
    from models.tables import jobs

    with session_scope() as session:
        for job_id in session.scalars(select(jobs.c.id).where(jobs.c.status.not_in(TERMINAL))).all():
            cancel_job(session, job_id)


def empty_broker(redis_url: str) -> None:
    """Drop every message (and limiter state) between tests, as a broker that *kept* its data:
    the sentinel that says so is put back (tasks.broker_epoch), so that a worker starting next
    does not take the emptied queue for a broker restart and re-send every queued chunk. The
    jobs whose messages were dropped are cancelled."""
    import redis

    from tasks.broker_epoch import EPOCH_KEY

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.set(EPOCH_KEY, "tests")
    client.close()
    cancel_unfinished_jobs()


def footprint(stack: Stack) -> dict[str, int]:
    """Rows in the job tables and messages waiting on every model queue."""
    import redis
    from sqlalchemy import func, select

    from models.db import session_scope
    from models.tables import job_chunks, job_items, jobs
    from providers.base import MODEL_TYPES

    with session_scope() as session:
        counts = {t.name: session.scalar(select(func.count()).select_from(t)) for t in (jobs, job_items, job_chunks)}
    client = redis.Redis.from_url(stack.redis_url)
    counts["queued messages"] = sum(client.llen(q) for q in MODEL_TYPES)
    client.close()
    return counts


@pytest.fixture
def unchanged(stack: Stack, clean_broker: None) -> Iterator[None]:
    """Asserts that the test wrote no job rows and sent no message."""
    before = footprint(stack)
    yield
    assert footprint(stack) == before


@pytest.fixture
def clean_broker(stack: Stack) -> Iterator[None]:
    """An empty broker before and after the test (no leftover retries or messages)."""
    empty_broker(stack.redis_url)
    yield
    empty_broker(stack.redis_url)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    name: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker's whole process group (the main process and its pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)


def start_worker(
    stack: Stack,
    log_dir: Path,
    *,
    queues: str = "embedding,maintenance",
    pool: str = "prefork",
    concurrency: int = 2,
    extra_env: dict[str, str] | None = None,
    timeout: float = 60.0,
    extra_args: tuple[str, ...] = (),
) -> Worker:
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log = log_dir / f"{name.split('@')[0]}.log"
    env = {**os.environ, **stack.env, **(extra_env or {})}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.cli",
                "worker",
                "-Q",
                queues,
                "-P",
                pool,
                "-c",
                str(concurrency),
                "-n",
                name,
                "-l",
                "info",
                *extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(proc, name, log, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{worker.log_text()[-3000:]}")
        if "ready." in worker.log_text():
            return worker
        time.sleep(0.2)
    worker.stop()
    raise RuntimeError(f"worker not ready after {timeout}s:\n{worker.log_text()[-3000:]}")


@pytest.fixture
def worker_factory(stack: Stack, clean_broker: None, tmp_path: Path) -> Iterator:
    started: list[Worker] = []

    def factory(**kwargs) -> Worker:
        w = start_worker(stack, tmp_path, **kwargs)
        started.append(w)
        return w

    yield factory
    for w in started:
        w.stop()


def cli(
    stack: Stack, *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``modelyard ARGS`` as a user runs it (``python -m workers.cli``, what the script runs), in a
    child process against the test stack, with ``env`` on top of the stack's environment."""
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        check=False,
        cwd=ROOT,
        env={**os.environ, **stack.env, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def fake_provider() -> Iterator:
    from tests.fakeprovider import FakeProvider

    with FakeProvider(keys={"sk-test-valid-key-0001"}) as fp:
        yield fp


def pytest_report_header(config: pytest.Config) -> str:
    return f"modelyard services: {services.describe()}"
