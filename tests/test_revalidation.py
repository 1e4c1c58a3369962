"""Scheduled key revalidation, driven through real ``modelyard beat`` and worker processes on the
test stack's Redis and Postgres, against the fake provider: a key the provider starts refusing
becomes invalid (and submits fail fast with the reason); rate limits and server errors keep the
state; a key accepted again becomes valid. Two beats: only one schedules, the other stands by
and takes over when the first dies. A wrong secret never makes a key invalid."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from tests.conftest import ROOT, Stack, Worker, apply_env
from tests.fakeprovider import FakeProvider

KEY = "sk-test-valid-key-0001"
FAST = {"MODELYARD_KEY_REVALIDATE_SECONDS": "1.5", "MODELYARD_KEY_REVALIDATE_SPREAD_SECONDS": "0.5",
        "MODELYARD_KEY_VALIDATION_TIMEOUT": "3"}


@dataclass
class Beat:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_beat(stack: Stack, log: Path, data_dir: Path) -> Beat:
    env = {**os.environ, **stack.env, **FAST, "MODELYARD_DATA_DIR": str(data_dir)}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "beat", "-l", "debug"], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return Beat(proc, log)


def eventually(check: Callable[[], Any], timeout: float = 40.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout}s: {what}")


def key_row(tenant_llm_id: int) -> Any:
    from models.db import session_scope
    from models.tables import tenant_llm

    with session_scope() as s:
        return s.execute(select(tenant_llm).where(tenant_llm.c.id == tenant_llm_id)).one()


@pytest.fixture
def keyed_model(stack: Stack, fake_provider: FakeProvider) -> Iterator[tuple[str, int]]:
    from models.admin import set_api_key
    from models.db import session_scope
    from models.tenants import create_tenant, get_tenant_model

    name = f"reval-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        tenant_id = create_tenant(s, name, defaults=False)
    set_api_key(name, "OpenAI", KEY, base_url=fake_provider.base_url)
    with session_scope() as s:
        tm = get_tenant_model(s, tenant_id, "text-embedding-3-small@OpenAI", "embedding")
    assert tm.key_state == "valid"
    yield name, tm.id


def test_beat_and_worker_revalidate_keys_and_only_auth_or_quota_make_them_invalid(
        stack: Stack, worker_factory: Callable[..., Worker], fake_provider: FakeProvider,
        keyed_model: tuple[str, int], tmp_path: Path) -> None:
    from conf.errors import InvalidRequest
    from tasks import producer

    tenant, row_id = keyed_model
    worker_factory(queues="maintenance", pool="threads", concurrency=4, extra_env=FAST)
    beat = start_beat(stack, tmp_path / "beat.log", tmp_path / "beat-data")
    try:
        # The provider stops accepting the key: AUTHENTICATION -> invalid, with the reason.
        fake_provider.keys = {"sk-some-other-key-000"}
        row = eventually(lambda: (r := key_row(row_id)).key_state == "invalid" and r, what="key marked invalid")
        assert row.key_error.startswith("AUTHENTICATION") and KEY not in row.key_error
        with pytest.raises(InvalidRequest, match="invalid.*AUTHENTICATION"):
            producer.submit_embedding(tenant, "text-embedding-3-small@OpenAI", ["text"])

        # Rate limited: the state stays invalid (a 429 says nothing about the key) ...
        fake_provider.keys = {KEY}
        fake_provider.rate_limit(1, times=10_000)
        eventually(lambda: (key_row(row_id).key_error or "").startswith("RATE_LIMIT"), what="rate limit noted")
        assert key_row(row_id).key_state == "invalid"
        # ... and once the provider answers again, the key is valid again.
        fake_provider.reset()
        fake_provider.keys = {KEY}
        eventually(lambda: key_row(row_id).key_state == "valid", what="key valid again")
        assert key_row(row_id).key_error is None

        # Server errors keep a valid key valid; quota makes it invalid.
        fake_provider.server_error(503, times=10_000)
        eventually(lambda: (key_row(row_id).key_error or "").startswith("SERVER"), what="server error noted")
        assert key_row(row_id).key_state == "valid"
        fake_provider.reset()
        fake_provider.keys = {KEY}
        fake_provider.quota(times=10_000)
        row = eventually(lambda: (r := key_row(row_id)).key_state == "invalid" and r, what="quota -> invalid")
        assert row.key_error.startswith("QUOTA")
        assert "Sending due task revalidate-keys" in beat.text()
    finally:
        beat.stop()


def test_two_beats_schedule_once_and_the_standby_takes_over(stack: Stack, tmp_path: Path) -> None:
    first = start_beat(stack, tmp_path / "first.log", tmp_path / "first-data")
    eventually(lambda: "Sending due task" in first.text(), what="first beat scheduling")
    second = start_beat(stack, tmp_path / "second.log", tmp_path / "second-data")
    try:
        eventually(lambda: "standing by" in second.text(), what="second beat standing by")
        time.sleep(4)  # several schedule periods
        assert "Sending due task" not in second.text() and second.proc.poll() is None
        first.proc.kill()  # the lock goes with its connection
        eventually(lambda: "Sending due task" in second.text(), timeout=30, what="standby took over")
    finally:
        first.stop()
        second.stop()


def test_a_wrong_secret_never_makes_a_key_invalid(stack: Stack, keyed_model: tuple[str, int]) -> None:
    """Revalidation on a worker whose MODELYARD_SECRET_KEY cannot open the key changes nothing."""
    from tasks.maintenance import revalidate_key

    _, row_id = keyed_model
    before = key_row(row_id)
    apply_env({"MODELYARD_SECRET_KEY": Fernet.generate_key().decode()})
    try:
        assert revalidate_key(row_id) == "secret-key-error"
    finally:
        apply_env({"MODELYARD_SECRET_KEY": stack.env["MODELYARD_SECRET_KEY"]})
    after = key_row(row_id)
    assert (after.key_state, after.key_error, after.key_checked_at) == (
        before.key_state, before.key_error, before.key_checked_at)
