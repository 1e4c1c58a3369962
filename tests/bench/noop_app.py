"""A minimal Celery app for the benchmark's baseline (a): no-op tasks on the same Redis.

Run by the benchmark as ``celery -A tests.bench.noop_app worker -P POOL -c N`` with
``BENCH_BROKER_URL`` set. It has modelyard's message semantics (acks late, prefetch 1,
no result backend) and nothing else. Each task only increments a Redis counter, which is
how the benchmark sees that all of them ran.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

QUEUE = "bench-noop"
TASK = "bench.noop"

app = Celery("bench-noop")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_counter: redis.Redis | None = None


@app.task(name=TASK)
def noop(counter_key: str) -> None:
    global _counter
    if _counter is None:  # one client (a thread-safe connection pool) per process
        _counter = redis.Redis.from_url(app.conf.broker_url)
    _counter.incr(counter_key)
