"""Sending chunk messages. A message carries the chunk id and which release of the chunk it
is: no key, no input, no secret.

Messages are sent after the transaction that released the chunks has committed; if the
process dies in between, the chunk stays ``queued`` past its deadline and the sweeper
(tasks.maintenance) sends it again, as a new release: a worker that takes an older release's
message drops it (models.jobs.claim_chunk).
"""
from __future__ import annotations

from collections.abc import Iterable

from models.jobs import Sent
from tasks.app import TASK_NAMES, app


def send_chunks(model_type: str, sent: Iterable[Sent]) -> None:
    name = TASK_NAMES[model_type]
    for chunk_id, release in sent:
        app.send_task(name, args=[chunk_id], kwargs={"release": release}, queue=model_type)
