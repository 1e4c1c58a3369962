"""The Celery app's shape: queues per model type, routes, reliability settings, beat schedule.
Each runtime (tasks.runtime) makes its own app with :func:`make_app`; no app is made at import.

Reliability: acks late + reject on worker lost (a killed worker's message goes back to the
queue), prefetch 1 (a slow provider call does not hold other messages hostage), and a
visibility timeout above the longest retry countdown (Redis never redelivers a message
that is only waiting for its countdown). No result backend: the database is the truth.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from conf.settings import Settings
from providers.base import MODEL_TYPES

QUEUES = (*MODEL_TYPES, "maintenance")

TASK_NAMES = {model_type: f"modelyard.{model_type}.run_chunk" for model_type in MODEL_TYPES}
SWEEP_TASK = "modelyard.maintenance.sweep_stalled"
REVALIDATE_ALL_TASK = "modelyard.maintenance.revalidate_keys"
REVALIDATE_TASK = "modelyard.maintenance.revalidate_key"
PURGE_TASK = "modelyard.maintenance.purge_expired"
MAINTENANCE_TASKS = (SWEEP_TASK, REVALIDATE_ALL_TASK, REVALIDATE_TASK, PURGE_TASK)
# kombu's retry policy for one publish: 4 tries over about 2 s, then the caller hears of it.
PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.4, "interval_max": 1.0}


def make_app(settings: Settings) -> Celery:
    """An app configured from ``settings``, with no tasks: a worker adds them (tasks.model_tasks and
    tasks.maintenance ``register``); every other process sends by name.
    ``set_as_current=False``: nothing reaches it through Celery's process-wide current app."""
    app = Celery("modelyard", set_as_current=False)
    # kombu's SQLAlchemy transport hands its transport options to create_engine(): it gets
    # none (it has no visibility timeout; the sweeper re-sends what a dead worker held).
    transport_options = {} if settings.embedded_broker else {"visibility_timeout": settings.broker_visibility_timeout}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        transport_options["socket_connect_timeout"] = 5  # an unreachable host fails a publish, never hangs it
    app.conf.update(
        broker_url=settings.broker_url,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        # Each queue on its own direct exchange and routing key: a bare Queue(name) would be bound
        # to the default exchange's key, so one publish there would land in every queue.
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_default_queue="maintenance",
        task_routes={
            **{name: {"queue": t} for t, name in TASK_NAMES.items()},
            **{name: {"queue": "maintenance"} for name in MAINTENANCE_TASKS},
        },
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # A publish to a broker that is down gives up after about 2 s (see tasks.orchestrate).
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        # A task running when the connection drops finishes (its result is in the database);
        # its message is redelivered and skipped as done. Cancelling would waste a paid call.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep-stalled-chunks": {"task": SWEEP_TASK, "schedule": max(5.0, settings.stall_seconds / 4)},
            "revalidate-keys": {"task": REVALIDATE_ALL_TASK, "schedule": settings.key_revalidate_seconds},
            "purge-expired-jobs": {"task": PURGE_TASK, "schedule": 600.0},
        },
        timezone="UTC",
    )
    return app
