"""The database: an engine and its sessions, one :class:`Database` per runtime (tasks.runtime).

SQLite (the embedded default) gets WAL mode and a busy timeout so that a worker and a
producer can write at once; Postgres (``postgresql+psycopg://``) gets a pre-pinged pool.
After a fork the child calls :meth:`Database.forget_after_fork` so it never reuses the
parent's sockets.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from conf.settings import NoRuntimeError


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


class Database:
    """A database's engine and its session factory. Connects on first use; for SQLite the data
    directory is made then, so that building one touches nothing."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        if url.startswith("sqlite"):

            @event.listens_for(self.engine, "do_connect")
            def _make_data_dir(*_: object) -> None:
                data_dir.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's pooled connections without closing them (they are
        the parent's sockets); the pool opens new ones."""
        self.engine.dispose(close=False)

    def close(self) -> None:
        self.engine.dispose()


_active: Database | None = None


def activate_database(database: Database | None) -> None:
    """Make ``database`` the one :func:`session_scope` uses (called by tasks.runtime)."""
    global _active
    _active = database


def get_database() -> Database:
    """The active runtime's database."""
    if _active is None:
        raise NoRuntimeError("no runtime is active in this process (build one with tasks.runtime.Runtime)")
    return _active


def get_engine() -> Engine:
    return get_database().engine


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction on the active runtime's database: commit on success, roll back on any exception."""
    with get_database().session() as session:
        yield session
