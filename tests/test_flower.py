"""Flower, started by ``modelyard flower``, against the test broker with a real worker.

Flower builds its task list from the events the producer (``task-sent``) and the workers
(``task-received``, ``task-succeeded``...) publish on the broker, and finds workers through a
broadcast ``inspect``. What it proves: ``modelyard flower`` starts Flower on the configured
broker behind ``MODELYARD_FLOWER_BASIC_AUTH``; the worker and the job's tasks show up in its
HTTP API; and what Flower shows its users -- every task's arguments -- holds chunk ids and release numbers only,
never a tenant's API key.
"""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.services

KEY = "sk-test-valid-key-0001"
AUTH = ("user", "pass")
TASK_NAME = "modelyard.embedding.run_chunk"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(probe: Callable[[], Any], what: str, timeout: float = 60.0, log: Callable[[], str] = str) -> Any:
    """Call ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:.0f}s; last answer: {str(last)[:2000]}\n{log()[-3000:]}")


class Flower:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def get(self, path: str, *, auth: tuple[str, str] | None = AUTH) -> httpx.Response:
        return httpx.get(self.url + path, auth=auth, timeout=30)


@pytest.fixture
def flower(stack: Stack, clean_broker: None, tmp_path: Path) -> Iterator[Flower]:
    """``python -m workers.cli flower`` on a free loopback port, with basic auth, once it is up."""
    port = free_port()
    log = tmp_path / "flower.log"
    env = {**os.environ, **stack.env, "MODELYARD_FLOWER_BASIC_AUTH": ":".join(AUTH)}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "flower", "--port", str(port), "--address", "127.0.0.1"],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    fl = Flower(proc, f"http://127.0.0.1:{port}", log)

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"flower exited with {proc.returncode}:\n{fl.log_text()[-3000:]}")
        try:
            return fl.get("/healthcheck", auth=None).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(answers, "Flower did not answer", log=fl.log_text)
        yield fl
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_flower_requires_its_password(flower: Flower) -> None:
    """No credentials, or the wrong ones, get 401 from the API, the dashboard and the Prometheus
    metrics (which Flower itself serves without asking)."""
    for path in ("/api/workers", "/api/tasks", "/", "/metrics"):
        assert flower.get(path, auth=None).status_code == 401, path
        assert flower.get(path, auth=("user", "wrong")).status_code == 401, path
    assert flower.get("/api/tasks").status_code == 200
    metrics = flower.get("/metrics")
    assert metrics.status_code == 200 and "# HELP" in metrics.text


def test_flower_shows_the_worker_and_the_jobs_tasks_without_the_key(
    stack: Stack,
    flower: Flower,
    worker_factory,
    fake_provider,
) -> None:
    """A worker appears in ``/api/workers``; an embedding job's chunks appear in ``/api/tasks``
    as ``modelyard.embedding.run_chunk`` tasks whose arguments are a chunk id of that job and its release (1);
    and the API key is nowhere in what Flower serves."""
    from models.db import session_scope
    from models.tables import job_chunks
    from models.tenants import create_tenant, save_llm
    from tasks import producer

    worker = worker_factory(queues="embedding", concurrency=2)
    with session_scope() as s:
        tenant = create_tenant(s, f"flower-{uuid.uuid4().hex[:8]}", defaults=False)
        save_llm(s, tenant, "text-embedding-3-small@OpenAI", "embedding", api_key=KEY, api_base=fake_provider.base_url)

    workers = eventually(
        lambda: worker.name in flower.get("/api/workers?refresh=1").json() and flower.get("/api/workers").json(),
        f"{worker.name} did not appear in /api/workers",
        log=flower.log_text,
    )
    assert KEY not in str(workers)

    job_id = producer.submit_embedding(
        tenant, "text-embedding-3-small@OpenAI", [f"flower text {i}" for i in range(6)], chunk_size=2
    )
    assert producer.wait(job_id, timeout=60, poll=0.2)["status"] == "succeeded"
    with session_scope() as s:
        chunk_ids = set(s.execute(select(job_chunks.c.id).where(job_chunks.c.job_id == job_id)).scalars())
    assert len(chunk_ids) == 3

    def job_tasks() -> list[dict[str, Any]] | None:
        tasks = [t for t in flower.get("/api/tasks").json().values() if t.get("name") == TASK_NAME]
        done = [t for t in tasks if t.get("state") == "SUCCESS" and t.get("worker") == worker.name]
        return tasks if len(done) >= 3 else None

    tasks = eventually(
        job_tasks, "the job's three tasks did not all show as succeeded in /api/tasks", log=flower.log_text
    )
    shown_args = set()
    for task in tasks:
        args = ast.literal_eval(task["args"])
        assert isinstance(args, (list, tuple)) and len(args) == 1 and isinstance(args[0], int), task["args"]
        assert ast.literal_eval(task["kwargs"]) == {"release": 1}, task["kwargs"]
        shown_args.add(args[0])
    assert shown_args == chunk_ids

    everything = flower.get("/api/tasks").text + flower.get("/api/workers").text
    for task_id in [t["uuid"] for t in tasks]:
        everything += flower.get(f"/api/task/info/{task_id}").text
    assert KEY not in everything
    assert KEY[-8:] not in everything  # not even a masked tail
