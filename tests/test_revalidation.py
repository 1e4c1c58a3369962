"""Scheduled key revalidation, driven through real ``modelyard beat`` and worker processes on the
test stack's Redis and Postgres, against the fake provider: a key the provider starts refusing
becomes invalid (and submits fail fast with the reason); rate limits and server errors keep the
state; a key accepted again becomes valid. Two beats: only one schedules, the other stands by
and takes over when the first dies. A wrong secret never makes a key invalid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from tests.conftest import ROOT, Stack, Worker, apply_env
from tests.fakeprovider import FakeProvider

if TYPE_CHECKING:
    from tasks.runtime import Runtime

KEY = "sk-test-valid-key-0001"
FAST = {
    "MODELYARD_KEY_REVALIDATE_SECONDS": "1.5",
    "MODELYARD_KEY_REVALIDATE_SPREAD_SECONDS": "0.5",
    "MODELYARD_KEY_VALIDATION_TIMEOUT": "3",
}


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
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "beat", "-l", "debug"],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
def keyed_model(stack: Stack, fake_provider: FakeProvider) -> tuple[str, int]:
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
    return name, tm.id


@pytest.mark.services
def test_beat_and_worker_revalidate_keys_and_only_auth_or_quota_make_them_invalid(
    stack: Stack,
    worker_factory: Callable[..., Worker],
    fake_provider: FakeProvider,
    keyed_model: tuple[str, int],
    tmp_path: Path,
) -> None:
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
        with pytest.raises(InvalidRequest, match=r"invalid.*AUTHENTICATION"):
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


@pytest.mark.services
def test_two_beats_schedule_once_and_the_standby_takes_over(stack: Stack, tmp_path: Path) -> None:
    first = start_beat(stack, tmp_path / "first.log", tmp_path / "first-data")
    eventually(lambda: "Sending due task" in first.text(), what="first beat scheduling")
    second = start_beat(stack, tmp_path / "second.log", tmp_path / "second-data")
    try:
        eventually(lambda: "standing by" in second.text(), what="second beat standing by")
        # A worker asked to embed the beat (-B) does not either while the lock is held.
        env = {**os.environ, **stack.env, **FAST, "MODELYARD_DATA_DIR": str(tmp_path / "worker-data")}
        log = tmp_path / "worker-beat.log"
        with open(log, "wb") as fh:
            embedded = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workers.cli",
                    "worker",
                    "-Q",
                    "maintenance",
                    "-P",
                    "threads",
                    "-c",
                    "1",
                    "--beat",
                    "-n",
                    f"beat-{uuid.uuid4().hex[:8]}@localhost",
                ],
                cwd=ROOT,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:

            def started() -> str:
                text = log.read_text(errors="replace")
                return text if "without -B" in text or "ready." in text else ""

            said = eventually(started, timeout=30, what="worker started")
            assert "another beat holds the schedule lock; this worker starts without -B" in said
        finally:
            os.killpg(embedded.pid, signal.SIGKILL)
            embedded.wait(10)
        time.sleep(4)  # several schedule periods
        assert "Sending due task" not in second.text() and second.proc.poll() is None
        first.proc.kill()  # the lock goes with its connection
        eventually(lambda: "Sending due task" in second.text(), timeout=30, what="standby took over")
    finally:
        first.stop()
        second.stop()


@pytest.mark.services
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
        before.key_state,
        before.key_error,
        before.key_checked_at,
    )


def tenant_rows(tenant_id: str) -> list[Any]:
    from models.db import session_scope
    from models.tables import tenant_llm

    with session_scope() as s:
        return s.execute(select(tenant_llm).where(tenant_llm.c.tenant_id == tenant_id).order_by(tenant_llm.c.id)).all()


@pytest.mark.services
def test_revalidation_records_what_it_learned_on_every_row_of_the_key_and_no_other(
    stack: Stack, fake_provider: FakeProvider, keyed_model: tuple[str, int]
) -> None:
    """The same task the beat schedules, run in this process step by step: only AUTHENTICATION or
    QUOTA make a key invalid, a rate limit or server error stops the round without changing the
    state, a model-specific refusal tries the next model, and a key accepted again is valid."""
    from models.admin import set_api_key
    from models.db import session_scope
    from models.keycheck import keys_to_revalidate
    from models.tenants import create_tenant
    from tasks.maintenance import revalidate_key

    _, row_id = keyed_model
    first = key_row(row_id)
    other = f"reval-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        other_id = create_tenant(s, other, defaults=False)
    set_api_key(other, "OpenAI", KEY, base_url=fake_provider.base_url)  # the same key, saved by another tenant
    theirs = tenant_rows(other_id)
    fake_provider.reset()
    # one revalidation per stored key (not per row), represented by its first row
    scheduled = [k for k in keys_to_revalidate() if k[0] in (first.tenant_id, other_id)]
    assert scheduled == [
        (first.tenant_id, "OpenAI", min(r.id for r in tenant_rows(first.tenant_id))),
        (other_id, "OpenAI", theirs[0].id),
    ]

    def round_(expected: str, calls: int) -> list[Any]:
        assert revalidate_key(row_id) == expected
        assert len(fake_provider.calls) == calls, [(c.model, c.status) for c in fake_provider.calls]
        fake_provider.reset()
        rows = tenant_rows(first.tenant_id)
        assert len(rows) > 10 and {r.api_key_enc for r in rows} == {first.api_key_enc}
        assert len({(r.key_state, r.key_error, r.key_checked_at) for r in rows}) == 1  # every row of the key
        return rows

    fake_provider.rate_limit(1, times=1000)
    rows = round_("RATE_LIMIT", 1)  # a busy provider: no other model is tried this round
    assert (rows[0].key_state, rows[0].key_checked_at) == ("valid", first.key_checked_at)
    assert rows[0].key_error.startswith("RATE_LIMIT") and "key state kept" in rows[0].key_error
    fake_provider.server_error(503, times=1000)
    rows = round_("SERVER", 1)
    assert (rows[0].key_state, rows[0].key_checked_at) == ("valid", first.key_checked_at)
    assert rows[0].key_error.startswith("SERVER")

    fake_provider.error(
        404,
        {
            "error": {
                "message": "The model does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        },
    )
    rows = round_("valid", 2)  # that model is gone, the key is fine: the next model says so
    assert rows[0].key_state == "valid" and rows[0].key_error is None and rows[0].key_checked_at > first.key_checked_at

    fake_provider.keys = {"sk-some-other-key-000"}
    rows = round_("AUTHENTICATION", 1)
    assert rows[0].key_state == "invalid" and rows[0].key_error.startswith("AUTHENTICATION")
    assert KEY not in rows[0].key_error
    assert tenant_rows(other_id) == theirs  # the other tenant's copy of the key was not checked here

    fake_provider.keys = {KEY}
    fake_provider.rate_limit(1, times=1000)
    rows = round_("RATE_LIMIT", 1)
    assert rows[0].key_state == "invalid"  # still: a 429 proves nothing
    rows = round_("valid", 1)
    assert rows[0].key_state == "valid" and rows[0].key_error is None
    fake_provider.quota(times=1000)
    rows = round_("QUOTA", 1)
    assert rows[0].key_state == "invalid" and rows[0].key_error.startswith("QUOTA")


@pytest.mark.services
def test_a_key_replaced_while_it_is_revalidated_is_left_alone(
    stack: Stack, fake_provider: FakeProvider, keyed_model: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old key is refused, but the tenant saved a new one meanwhile: the new one is not marked invalid."""
    from models import crypto, keycheck
    from models.admin import set_api_key
    from tasks.maintenance import revalidate_key

    tenant, row_id = keyed_model
    new_key = "sk-test-replacement-key-42"
    real_try = keycheck.try_model

    def replaced_meanwhile(*args: Any) -> Any:
        set_api_key(tenant, "OpenAI", new_key, check=False)
        return real_try(*args)

    monkeypatch.setattr(keycheck, "try_model", replaced_meanwhile)
    fake_provider.keys = {new_key}
    assert revalidate_key(row_id) == "AUTHENTICATION"
    rows = tenant_rows(key_row(row_id).tenant_id)
    assert {crypto.decrypt(r.api_key_enc) for r in rows} == {new_key}
    assert {(r.key_state, r.key_error) for r in rows} == {("unchecked", None)}


def test_revalidate_keys_spreads_the_checks_evenly_below_the_visibility_timeout(
    monkeypatch: pytest.MonkeyPatch, runtime_from_env: Callable[[], Runtime]
) -> None:
    """No servers: the stored keys are stubbed and the messages kept instead of sent."""
    from types import SimpleNamespace

    from tasks import maintenance
    from tasks.app import REVALIDATE_TASK

    sent: list[tuple[tuple[int, ...], float]] = []
    monkeypatch.setattr(maintenance, "keys_to_revalidate", lambda: [("t", "F", 100 + n) for n in range(4)])

    def send_task(name: str, args: tuple[int, ...], countdown: float) -> None:
        assert name == REVALIDATE_TASK
        sent.append((args, countdown))

    app: Any = SimpleNamespace(send_task=send_task)

    def countdowns(spread: float, period: float) -> list[float]:
        monkeypatch.setenv("MODELYARD_KEY_REVALIDATE_SPREAD_SECONDS", str(spread))
        monkeypatch.setenv("MODELYARD_KEY_REVALIDATE_SECONDS", str(period))
        runtime_from_env()
        sent.clear()
        assert maintenance.revalidate_keys(app) == 4
        assert [args for args, _ in sent] == [(100,), (101,), (102,), (103,)]
        return [countdown for _, countdown in sent]

    assert countdowns(100, 1000) == [0, 25, 50, 75]
    assert countdowns(100, 40) == [0, 10, 20, 30]  # all sent within one revalidation period
    cap = runtime_from_env().settings.broker_visibility_timeout / 2  # a waiting countdown must not be redelivered
    assert countdowns(10 * cap, 100 * cap) == [0, cap / 4, cap / 2, 3 * cap / 4]
    assert countdowns(0, 1000) == [0, 0, 0, 0]
    monkeypatch.setattr(maintenance, "keys_to_revalidate", list)
    assert maintenance.revalidate_keys(app) == 0
