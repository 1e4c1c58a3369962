"""The Celery tasks: one per model type, each on its own queue, each taking a chunk id."""
from __future__ import annotations

from celery import Task

from tasks.app import TASK_NAMES, app
from tasks.handlers import HANDLERS
from tasks.runner import Handler, run_chunk


def _define(model_type: str, handler: Handler) -> Task:
    @app.task(name=TASK_NAMES[model_type], bind=True)
    def run(self: Task, chunk_id: int) -> str:
        return run_chunk(self, chunk_id, handler)

    return run


TASKS = {model_type: _define(model_type, handler) for model_type, handler in HANDLERS.items()}
