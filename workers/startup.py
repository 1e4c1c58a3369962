"""Per-process start-up for worker processes.

A prefork child must not reuse the database connections or HTTP sockets it inherited from
its parent: after fork each child makes its own engine and its own httpx client (one per
process, arq-style), with the timeout from settings.
"""
from __future__ import annotations

import logging

from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown

from conf.settings import get_settings
from models import tracing
from models.bundle import clear_bundle_cache
from models.db import reset_engine
from providers import http


def init_process(**_: object) -> None:
    reset_engine()
    http.configure(get_settings().llm_timeout_seconds)
    clear_bundle_cache()
    tracing.preload()  # the SDK import, not the client: that is made on the first traced call, after fork


def install() -> None:
    """Connect the start-up hooks (idempotent: Celery deduplicates by receiver identity)."""
    worker_process_init.connect(init_process, weak=False)  # each prefork child, after fork
    worker_init.connect(init_process, weak=False)  # the main process (solo / threads pools)
    # Send the traces still queued: a prefork child ends with os._exit (no atexit handlers).
    worker_process_shutdown.connect(tracing.shutdown, weak=False)  # each prefork child, on its way out
    worker_shutdown.connect(tracing.shutdown, weak=False)  # the main process
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines only at debug level
