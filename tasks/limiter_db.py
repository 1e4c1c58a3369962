"""The limiter's state in the database, for deployments without Redis (the embedded default,
a RabbitMQ broker): one ``limiter_buckets`` row per bucket, read and written under a row lock
(``SELECT ... FOR UPDATE`` on Postgres; SQLite's write lock, taken at ``BEGIN IMMEDIATE``).
Time is this host's clock: keep the fleet's clocks in sync (NTP), as for any database.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.db import session_scope
from models.tables import limiter_buckets
from tasks import limiter
from tasks.limiter import Cost, Grant, Limits, Settlement

log = logging.getLogger("modelyard.limits")
T = TypeVar("T")


class DatabaseLimiter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def _locked(self, bucket: str, change: Callable[[dict[str, Any], float], T]) -> T:
        with session_scope() as session:
            state = self._lock_row(session, bucket)
            before = copy.deepcopy(state)
            result = change(state, self.clock())
            if state != before:
                session.execute(
                    update(limiter_buckets)
                    .where(limiter_buckets.c.bucket == bucket)
                    .values(state=state, updated_at=self.clock())
                )
        return result

    @staticmethod
    def _lock_row(session: Session, bucket: str) -> dict[str, Any]:
        query = select(limiter_buckets.c.state).where(limiter_buckets.c.bucket == bucket).with_for_update()
        state = session.scalar(query)
        if state is None:
            try:
                with session.begin_nested():
                    session.execute(insert(limiter_buckets).values(bucket=bucket, state={}, updated_at=time.time()))
            except IntegrityError:  # another worker made it first
                pass
            state = session.scalar(query)
        return dict(state or {})

    def acquire(
        self, bucket: str, limits: Limits, cost: Cost, holder: str, *, max_wait: float, slot_ttl: float
    ) -> Grant:
        return self._locked(
            bucket, lambda s, now: limiter.acquire(s, limits, cost, holder, now, max_wait=max_wait, slot_ttl=slot_ttl)
        )

    def settle(self, bucket: str, limits: Limits, holder: str, outcome: Settlement) -> None:
        for note in self._locked(bucket, lambda s, now: limiter.settle(s, limits, holder, outcome, now)):
            log.warning("limits %s: %s", bucket[:12], note)

    def status(self, bucket: str, limits: Limits) -> dict[str, Any]:
        with session_scope() as session:
            state = session.scalar(select(limiter_buckets.c.state).where(limiter_buckets.c.bucket == bucket))
        return limiter.describe(state or {}, limits, self.clock())
