"""The Celery entry point: ``celery -A workers.celery_main worker`` (what ``modelyard worker`` runs)."""

from tasks import maintenance, model_tasks  # noqa: F401 - registers the tasks
from tasks.app import app
from workers import startup

startup.install()
startup.add_consumer_steps(app)

__all__ = ["app"]
