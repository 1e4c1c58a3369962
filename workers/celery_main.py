"""The entry point for Celery's own command line: ``celery -A workers.celery_main inspect ping``.

Celery's ``-A`` loads a module and takes its ``app``, so this module is a process's start-up:
importing it builds and activates the process's runtime. modelyard's own commands never import
it (``modelyard worker`` builds its runtime in ``workers.cli.main``).
"""

from tasks.runtime import Runtime
from workers.startup import worker_app

runtime = Runtime.from_env()
runtime.activate()
app = worker_app(runtime)

__all__ = ["app"]
