"""The runtime: everything a modelyard process shares -- settings, database, HTTP client, Celery
app, cipher, bundles, limiter -- built once at start-up by the entry point and handed down.

Each entry point (``workers.cli.main``, ``workers.celery_main``) builds one with
:meth:`Runtime.from_env` and activates it. Activation is the one process-wide reference:
it installs the runtime's parts where the lower layers read them (``conf.settings.get_settings``,
``models.db.session_scope``, ``models.crypto``, ``models.bundle``); before it, those raise
``NoRuntimeError`` instead of making anything themselves. Celery tasks reach the runtime from
their app (``runtime_of(task.app)``). A forked worker child calls :meth:`Runtime.after_fork`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from celery import Celery

from conf.settings import NoRuntimeError, Settings, activate_settings, load_settings
from models.bundle import Bundles, activate_bundles
from models.crypto import Cipher, activate_cipher
from models.db import Database, activate_database
from providers.http import make_client
from tasks.app import make_app
from tasks.limiter import Limiter
from tasks.limits import make_limiter


class Runtime:
    def __init__(self, settings: Settings, database: Database, celery: Celery) -> None:
        self.settings = settings
        self.database = database
        self.celery = celery
        self.cipher = Cipher(settings)
        # None: the fleet-wide limiter is turned off (MODELYARD_LIMITS_URL=off).
        self.limiter: Limiter | None = make_limiter(settings)
        self.http: httpx.Client = make_client(settings.llm_timeout_seconds)
        self.bundles = Bundles(self.http)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """A runtime for ``settings``; nothing connects until it is used. Its Celery app has no
        tasks: a worker adds them (workers.startup.worker_app), other processes send by name."""
        celery = make_app(settings)
        runtime = cls(settings, Database(settings.database_url, settings.data_dir), celery)
        vars(celery)["runtime"] = runtime  # how a task finds its runtime: runtime_of(task.app)
        return runtime

    @classmethod
    def from_env(cls) -> Runtime:
        """A runtime for the settings the environment holds now (SettingsError names a bad one)."""
        return cls.build(load_settings())

    def activate(self) -> None:
        """Make this the process's runtime: what get_settings, session_scope and the key functions use."""
        global _current
        activate_settings(self.settings)
        activate_database(self.database)
        activate_cipher(self.cipher)
        activate_bundles(self.bundles)
        _current = self

    @contextmanager
    def active(self) -> Iterator[Runtime]:
        """Activate this runtime for a block, then put back the one that was active (if any)."""
        previous = _current
        self.activate()
        try:
            yield self
        finally:
            if previous is None:
                deactivate()
            else:
                previous.activate()

    def after_fork(self) -> None:
        """In a forked child: its own database connections, HTTP client and bundles (the parent's
        sockets are left alone, never closed or shared)."""
        self.database.forget_after_fork()
        self.http = make_client(self.settings.llm_timeout_seconds)
        self.bundles = Bundles(self.http)
        if _current is self:
            activate_bundles(self.bundles)

    def close(self) -> None:
        """Close its connections (deactivating it if it is the active one)."""
        if _current is self:
            deactivate()
        self.http.close()
        self.celery.close()
        self.database.close()


_current: Runtime | None = None


def current() -> Runtime:
    """The active runtime (for code called from outside a task: commands, API handlers, tests)."""
    if _current is None:
        raise NoRuntimeError("no runtime is active in this process (build one with tasks.runtime.Runtime)")
    return _current


def deactivate() -> None:
    """No runtime active: the accessors raise until one is activated."""
    global _current
    activate_settings(None)
    activate_database(None)
    activate_cipher(None)
    activate_bundles(None)
    _current = None


def runtime_of(app: Celery) -> Runtime:
    """The runtime that built ``app``: how a task reaches its settings, limiter and database."""
    runtime = vars(app).get("runtime")
    if not isinstance(runtime, Runtime):
        raise NoRuntimeError("this Celery app was not built by Runtime.build")
    return runtime
