"""Sending chunk messages. Messages carry the chunk id only: no key, no input, no secret.

Messages are sent after the transaction that released the chunks has committed; if the
process dies in between, the chunk stays ``queued`` past its deadline and the sweeper
(tasks.maintenance) sends it again.
"""
from __future__ import annotations

from collections.abc import Iterable

from tasks.app import TASK_NAMES, app


def send_chunks(model_type: str, chunk_ids: Iterable[int]) -> None:
    name = TASK_NAMES[model_type]
    for chunk_id in chunk_ids:
        app.send_task(name, args=[chunk_id], queue=model_type)
