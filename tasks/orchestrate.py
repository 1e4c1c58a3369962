"""Sending chunk messages. A message carries the chunk id and which release of the chunk it
is: no key, no input, no secret.

Messages are sent after the transaction that released the chunks has committed. A publish
is retried briefly (``PUBLISH_RETRY_POLICY``, about 2 s); if the broker still does not take
it -- or the process dies in between -- the chunk stays ``queued`` and the sweeper
(tasks.maintenance) sends it again, as a new release: a worker that takes an older release's
message drops it (models.jobs.claim_chunk). A failed send never raises: the work is in the
database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Celery

from models.db import session_scope
from models.jobs import Sent, sweep_soon
from providers.errors import scrub
from tasks.app import PUBLISH_RETRY_POLICY, TASK_NAMES

log = logging.getLogger("modelyard.tasks")


def send_chunks(app: Celery, model_type: str, sent: Iterable[Sent]) -> list[int]:
    """Send one message per (chunk, release) through ``app``; returns the ids whose message could not be sent
    (they are left to the sweeper, made due at once so its next round sends them)."""
    name = TASK_NAMES[model_type]
    pending = list(sent)
    for n, (chunk_id, release) in enumerate(pending):
        try:
            app.send_task(
                name,
                args=[chunk_id],
                kwargs={"release": release},
                queue=model_type,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
        except Exception as exc:  # noqa: BLE001 - any failure to publish leaves the chunk to the sweeper
            unsent = [chunk for chunk, _ in pending[n:]]  # the broker is down: do not wait again for each
            log.warning(
                "could not send %d %s chunk message(s) (%s: %s); the sweeper will send them when the broker is back",
                len(unsent),
                model_type,
                type(exc).__name__,
                scrub(str(exc))[:200],
            )
            _leave_to_sweeper(unsent)
            return unsent
    return []


def _leave_to_sweeper(chunk_ids: list[int]) -> None:
    try:
        with session_scope() as session:
            sweep_soon(session, chunk_ids)
    except Exception as exc:  # noqa: BLE001 - their deadline still brings the sweeper, only later
        log.warning("could not mark chunks %s due for the sweeper (%s)", chunk_ids[:10], type(exc).__name__)
