"""The per-process database engine and sessions.

SQLite (the embedded default) gets WAL mode and a busy timeout so that a worker and a
producer can write at once; Postgres (``postgresql+psycopg://``) gets a pre-pinged pool.
After a fork, call :func:`reset_engine` so the child never reuses the parent's sockets.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from conf.settings import get_settings

_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None
_lock = threading.Lock()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" hook below issues BEGIN
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
                dbapi_conn.execute(f"PRAGMA {pragma}")

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # Take the write lock up front: a deferred transaction that upgrades later can
            # fail with "database is locked" regardless of the busy timeout.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # hide_parameters: an error's text never carries the statement's values (other items' inputs).
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, hide_parameters=True)


def get_engine() -> Engine:
    global _engine, _sessions
    if _engine is None:
        with _lock:
            if _engine is None:
                settings = get_settings()
                if settings.database_url.startswith("sqlite"):
                    settings.data_dir.mkdir(parents=True, exist_ok=True)
                _engine = make_engine(settings.database_url)
                _sessions = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def reset_engine() -> None:
    """Forget the engine (after fork: the parent's pooled connections are not closed here)."""
    global _engine, _sessions
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = None
    _sessions = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    get_engine()
    assert _sessions is not None
    session = _sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
