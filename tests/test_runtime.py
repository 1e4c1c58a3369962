"""The process's runtime (tasks/runtime.py): nothing is made before one is active, activation
is scoped, each runtime's Celery app holds only its own tasks, a forked child gets its own
connections. No services: nothing here connects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conf.settings import NoRuntimeError, get_settings
from models import crypto
from models.db import session_scope
from tasks.runtime import Runtime, current, deactivate


@pytest.fixture
def build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """A runtime on an embedded data dir in tmp_path, with these settings variables; not activated."""
    built: list[Runtime] = []

    def make(**env: str) -> Runtime:
        for name in ("MODELYARD_DATABASE_URL", "MODELYARD_BROKER_URL", "MODELYARD_SECRET_KEY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MODELYARD_DATA_DIR", str(tmp_path))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        runtime = Runtime.from_env()
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


def test_the_accessors_raise_until_a_runtime_is_active(build: Callable[..., Runtime]) -> None:
    runtime = build()
    with runtime.active():
        deactivate()
        for use in (get_settings, current, lambda: crypto.encrypt("x"), lambda: session_scope().__enter__()):
            with pytest.raises(NoRuntimeError, match="no runtime is active"):
                use()
    assert not (runtime.settings.data_dir / "secret.key").exists()  # building one made no key file


def test_activation_is_scoped_and_puts_the_previous_runtime_back(build: Callable[..., Runtime]) -> None:
    first = build(LLM_TIMEOUT_SECONDS="7")
    second = build(LLM_TIMEOUT_SECONDS="9")
    with first.active():
        assert get_settings().llm_timeout_seconds == 7 and current() is first
        with second.active():
            assert get_settings().llm_timeout_seconds == 9 and current() is second
            assert second.http.timeout.read == 9
        assert get_settings() is first.settings and current() is first


def test_each_runtime_app_has_only_the_tasks_registered_on_it(build: Callable[..., Runtime]) -> None:
    from tasks import maintenance, model_tasks
    from tasks.app import SWEEP_TASK, TASK_NAMES

    worker, producer = build(), build()
    model_tasks.register(worker.celery)
    maintenance.register(worker.celery)
    names = {*TASK_NAMES.values(), SWEEP_TASK}
    assert names <= set(worker.celery.tasks)
    assert not names & set(producer.celery.tasks)
    assert worker.celery.runtime is worker


def test_after_fork_the_child_has_its_own_http_client_and_bundles(build: Callable[..., Runtime]) -> None:
    runtime = build()
    with runtime.active():
        http, bundles = runtime.http, runtime.bundles
        runtime.after_fork()
        assert runtime.http is not http and runtime.bundles is not bundles
        assert runtime.bundles.client is runtime.http
        assert not http.is_closed  # the parent's sockets are the parent's: never closed by the child
