"""The Celery tasks: one per model type, each on its own queue, each taking a chunk id."""

from __future__ import annotations

from celery import Task

from tasks.app import TASK_NAMES, app
from tasks.handlers import HANDLERS
from tasks.runner import Handler, run_chunk


def _define(model_type: str, handler: Handler) -> Task:
    # max_retries=None: no limit of Celery's own; LLM_MAX_RETRIES is applied in tasks.runner.
    @app.task(name=TASK_NAMES[model_type], bind=True, max_retries=None)
    # release None: a message sent before messages carried their release (taken as the current one).
    def run(self: Task, chunk_id: int, tries: int = 0, release: int | None = None) -> str:
        return run_chunk(self, chunk_id, handler, tries=tries, release=release)

    return run


for _model_type, _handler in HANDLERS.items():
    _define(_model_type, _handler)  # registers the task with the app
