"""A running chunk's lease, renewed by a small heartbeat thread while its worker lives.

The claim (models.jobs.claim_chunk) holds the chunk for ``Settings.chunk_lease_seconds``;
this renews it every third of that, so a long call (or many calls: a model that takes few
inputs per request makes several for one chunk) keeps the chunk, and only a dead worker's
chunk is ever re-sent by the sweeper.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from models.db import session_scope
from models.jobs import renew_lease

log = logging.getLogger("modelyard.tasks")


@contextmanager
def holding(chunk_id: int, release: int, lease_seconds: float) -> Iterator[None]:
    """Renew the chunk's lease in the background until the block ends."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_seconds / 3):
            try:
                with session_scope() as session:
                    if not renew_lease(session, chunk_id, release, lease_seconds):
                        return  # finished, cancelled, sent back to the queue, or re-sent
            except Exception as exc:  # noqa: BLE001 - a database blip: try again at the next beat
                log.warning("chunk %s: could not renew its lease: %s", chunk_id, type(exc).__name__)

    thread = threading.Thread(target=beat, name=f"lease-{chunk_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
