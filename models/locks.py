"""The one-beat lock: only one celery beat schedule runs, however many are started.

On Postgres it is a session advisory lock held on a dedicated connection for the life of
the process; the server drops it when the process dies, and a standby takes over. With
the embedded SQLite default it is an ``flock`` on a file in the data dir (one machine).

A watchdog pings the lock's connection; if the connection is lost the lock may already be
someone else's, so the process exits rather than risk two schedules (a supervisor restarts
it, and it stands by).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import IO

from sqlalchemy import Connection, text

from conf.settings import get_settings
from models.db import get_engine

log = logging.getLogger("modelyard.beat")

BEAT_LOCK_ID = 0x6D6F64656C626561  # "modelbea": the advisory lock key
WATCHDOG_SECONDS = 15.0


class BeatLock:
    def __init__(self) -> None:
        self._connection: Connection | None = None
        self._file: IO[str] | None = None

    @property
    def _postgres(self) -> bool:
        return get_engine().dialect.name == "postgresql"

    def try_acquire(self) -> bool:
        if self._postgres:
            connection = get_engine().connect()
            got = bool(connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": BEAT_LOCK_ID}).scalar())
            connection.commit()
            if not got:
                connection.close()
                return False
            self._connection = connection
            threading.Thread(target=self._watch, name="beat-lock-watchdog", daemon=True).start()
            return True
        path = get_settings().data_dir / "beat.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - held open for the life of the process
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def acquire(self, on_wait: Callable[[], None], poll_seconds: float = 5.0) -> None:
        """Block until this process holds the lock; ``on_wait`` is called once if it must stand by."""
        waited = False
        while not self.try_acquire():
            if not waited:
                on_wait()
                waited = True
            time.sleep(poll_seconds)

    def _watch(self) -> None:
        while True:
            time.sleep(WATCHDOG_SECONDS)
            try:
                assert self._connection is not None
                self._connection.execute(text("SELECT 1")).scalar()
                self._connection.commit()
            except Exception as exc:  # noqa: BLE001 - any failure means the lock may be gone
                log.critical("lost the beat schedule lock's database connection (%s); exiting", type(exc).__name__)
                os._exit(75)  # EX_TEMPFAIL: a supervisor restarts us, and we stand by
