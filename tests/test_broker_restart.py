"""Workers that outlive their broker: a throwaway ``redis-server`` on its own port is killed
and restarted empty in the middle of a job, with real worker processes consuming from it.

What it proves: the job still finishes with every item and an exact ledger, and the worker
processes carry on (or ``modelyard worker`` restarts its consumer itself) -- no human, no
supervisor. It reports how long the job took to make progress again after the broker came back.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import Stack, Worker, start_worker
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
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def test_broker_restarted_empty_mid_job(stack: Stack, broker: ThrowawayRedis, tmp_path: Path) -> None:
    env = {"MODELYARD_BROKER_URL": broker.url, "MODELYARD_STALL_SECONDS": "600"}
    with FakeProvider(keys={"sk-test-valid-key-0001"}, latency_ms=150) as fake, env_overrides(stack, **env):
        tenant_id = make_tenant(f"{fake.url}/v1")
        workers: list[Worker] = [
            start_worker(stack, tmp_path, queues="embedding,maintenance", pool=pool, concurrency=2, extra_env=env)
            for pool in ("prefork", "threads")
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
            at_kill = progress(job_id)
            broker.start()
            back = time.monotonic()
            while progress(job_id) <= at_kill and time.monotonic() < back + 40:
                time.sleep(0.1)
            resumed = time.monotonic() - back
            final = wait_for(job_id, timeout=300)
            print(f"\nbroker back -> next progress: {resumed:.1f}s; job finished {time.monotonic() - back:.1f}s "
                  f"after the broker came back")
            assert final["status"] == "succeeded", final
            assert final["items"]["succeeded"] == len(items)
            books = ledger(job_id, tenant_id)
            assert books["job_tokens"] == books["event_tokens"] == books["used_tokens"]
            for w in workers:
                assert w.proc.poll() is None, f"worker {w.name} exited {w.proc.returncode}:\n{w.log_text()[-3000:]}"
                assert "Unrecoverable error" not in w.log_text(), w.log_text()[-5000:]
        finally:
            for w in workers:
                w.stop()
