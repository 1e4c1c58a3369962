"""Maintenance tasks (the ``maintenance`` queue, driven by celery beat)."""
from __future__ import annotations

import logging

from conf.settings import get_settings
from models.db import session_scope
from models.jobs import stalled_chunks
from tasks.app import SWEEP_TASK, app
from tasks.orchestrate import send_chunks

log = logging.getLogger("modelyard.maintenance")


@app.task(name=SWEEP_TASK)
def sweep_stalled() -> int:
    """Re-send chunks whose messages were lost (a killed worker, a broker restarted empty).

    The database is the source of truth: a chunk still ``queued`` after its deadline gets
    a new message. A duplicate execution is harmless: finishing a chunk is guarded."""
    with session_scope() as session:
        stalled = stalled_chunks(session, get_settings().stall_seconds)
    for chunk_id, model_type in stalled:
        send_chunks(model_type, [chunk_id])
    if stalled:
        log.warning("re-released %d stalled chunks", len(stalled))
    return len(stalled)
