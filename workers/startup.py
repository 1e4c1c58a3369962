"""Per-process start-up for worker processes.

A prefork child must not reuse the database connections or HTTP sockets it inherited from
its parent: after fork each child gives its runtime its own (Runtime.after_fork).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown

from models import tracing
from tasks.app import SWEEP_TASK
from tasks.broker_epoch import broker_lost_messages
from tasks.runtime import Runtime, runtime_of

log = logging.getLogger("modelyard.worker")


def worker_app(runtime: Runtime) -> Celery:
    """The runtime's Celery app ready to work: its tasks, the start-up hooks and the consumer step.
    Called after workers.metrics.prepare_worker: the task modules import prometheus_client."""
    from tasks import maintenance, model_tasks

    model_tasks.register(runtime.celery)
    maintenance.register(runtime.celery)
    install(runtime)
    runtime.celery.steps["consumer"].add(SweepOnConnect)
    return runtime.celery


def install(runtime: Runtime) -> None:
    """Connect the start-up hooks for ``runtime`` (the process's one)."""

    def after_fork(**_: object) -> None:
        runtime.after_fork()
        tracing.preload()

    worker_process_init.connect(after_fork, weak=False)  # each prefork child, after fork
    # The SDK import, not the client: that is made on the first traced call, after fork.
    worker_init.connect(lambda **_: tracing.preload(), weak=False)  # the main process
    # Send the traces still queued: a prefork child ends with os._exit (no atexit handlers).
    worker_process_shutdown.connect(tracing.shutdown, weak=False)  # each prefork child, on its way out
    worker_shutdown.connect(tracing.shutdown, weak=False)  # the main process
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines only at debug level


class SweepOnConnect(bootsteps.StartStopStep):
    """Ask for a sweep each time the consumer (re)connects to the broker.

    A broker that restarted without persistence has lost the messages of chunks that are
    still ``queued`` in the database; the sweep re-sends the ones it judges lost without
    waiting for beat's next round. Every worker asks (a sweep is cheap and concurrent sweeps
    skip each other's rows); the request expires if no maintenance worker takes it soon."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        try:
            lost = broker_lost_messages(runtime_of(c.app).settings.broker_url)
            c.app.send_task(SWEEP_TASK, kwargs={"lost": lost}, expires=60, retry=False)
        except Exception as exc:  # noqa: BLE001 - the next reconnect or beat's round will ask again
            log.warning("could not ask for a sweep after connecting: %s", type(exc).__name__)
            return
        if lost:
            log.warning(
                "connected to a broker that has lost its messages (or is new): asked for every queued "
                "chunk to be sent again"
            )
        else:
            log.info("connected: asked for a sweep of chunks whose messages may have been lost")
