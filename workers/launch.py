"""Long-running processes: worker, beat, flower, and the demo."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from conf.errors import InvalidRequest
from conf.settings import get_settings
from models.locks import BeatLock

if TYPE_CHECKING:
    from celery import Celery

# A first worker process that exits with an error (not a signal) sooner than this has a setting or
# start-up problem that a restart would not fix (a broker that is down does not end it: Celery waits).
STARTUP_SECONDS = 10.0
# Held for the life of the process (dropping it would release the lock).
_beat_lock = BeatLock()


def worker(args: argparse.Namespace) -> int:
    from tasks.app import QUEUES  # (imports neither the tasks nor prometheus_client)

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if unknown or not queues:
        raise InvalidRequest(f"unknown queue(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(QUEUES)}")
    if not args.no_restart:
        return supervise_worker(args)
    from workers.metrics import prepare_worker

    # In the process that runs Celery (the supervisor's child), before the tasks (and
    # prometheus_client) are imported: a supervisor that served /metrics too would hold the port.
    prepare_worker()
    from workers.startup import worker_app

    runtime = args.runtime
    app = worker_app(runtime)
    settings = runtime.settings
    # Provider calls wait on the network: as many threads as one job may have chunks in flight.
    # The solo pool runs one task at a time whatever -c says: say 1, not a number it ignores.
    concurrency = 1 if args.pool == "solo" else args.concurrency or settings.job_max_inflight_chunks
    _say(
        f"worker: pool {args.pool}, concurrency {concurrency} (tasks at once), queues {','.join(queues)}, "
        f"{'embedded broker' if settings.embedded_broker else 'broker ' + _broker_host(settings.broker_url)}"
    )
    # Gossip and mingle are worker-to-worker chatter modelyard does not use; Gossip's event
    # consumer is where kombu's Redis channel fails on a lost connection (celery/kombu#582).
    argv = [
        "worker",
        "-Q",
        ",".join(queues),
        "-P",
        args.pool,
        "-c",
        str(concurrency),
        "-l",
        args.loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv += ["-n", args.hostname]
    if args.beat:
        if _beat_lock.try_acquire():
            argv += ["-B", "-s", str(_beat_schedule_file())]
        else:
            _say("another beat holds the schedule lock; this worker starts without -B")
    return run_celery(app, argv)


def _broker_host(url: str) -> str:
    """The broker's scheme and host, never its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def run_celery(app: Celery, argv: list[str]) -> int:
    """``app.start(argv)``, keeping the exit code: Celery's ``worker_main`` and ``start`` drop it,
    so a worker that gave up ("Unrecoverable error") used to exit 0 and no supervisor restarted it."""
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = app
    try:
        code = celery_command.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    finally:
        celery_command.params[0].default = None
    return code if isinstance(code, int) else 0


def supervise_worker(args: argparse.Namespace) -> int:
    """Run the Celery worker in a child process and start a new one whenever it exits non-zero
    (a broker that went away and a library that gave up), with a growing pause (1 s doubling to
    30 s, back to 1 s after a child that ran a minute) -- unless the first one fails while
    starting. SIGTERM is passed on to the child; then this process exits with the child's code."""
    argv = [sys.executable, "-m", "workers.cli", *_worker_argv(args), "--no-restart"]
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        # SIGTERM (compose, systemd, kill) is passed on: a second one is harmless to Celery. A
        # terminal's Ctrl-C / Ctrl-\ reach the child directly (one process group): passing them on
        # too would turn its warm shutdown into a cold one.
        if signum == signal.SIGTERM and child is not None and child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_signal)
    pause = 1.0
    first = True
    while True:
        started = time.monotonic()
        child = subprocess.Popen(argv)
        code = _wait(child)
        if stopping or code == 0:
            return code
        if first and code < 128 and time.monotonic() - started < STARTUP_SECONDS:
            _say(f"the worker process failed while starting (status {code}); not restarting it")
            return code
        first = False
        if time.monotonic() - started > 60:
            pause = 1.0
        _say(f"the worker process exited with status {code}; starting a new one in {pause:.0f}s")
        deadline = time.monotonic() + pause
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return code
        pause = min(pause * 2, 30.0)


def _wait(child: subprocess.Popen[bytes]) -> int:
    """The child's exit status, shell-style (128 + N for a child killed by signal N)."""
    code = child.wait()
    return code if code >= 0 else 128 - code


def _worker_argv(args: argparse.Namespace) -> list[str]:
    argv = ["worker", "-Q", args.queues, "-P", args.pool, "-l", args.loglevel]
    if args.concurrency:
        argv += ["-c", str(args.concurrency)]
    if args.hostname:
        argv += ["-n", args.hostname]
    if args.beat:
        argv.append("-B")
    return argv


def _say(message: str) -> None:
    sys.stderr.write(f"modelyard: {message}\n")
    sys.stderr.flush()


def _beat_schedule_file() -> Path:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir / "celerybeat-schedule"


def beat(args: argparse.Namespace) -> int:
    # Before the scheduler opens its schedule file: a standby beat must not touch it.
    _beat_lock.acquire(on_wait=lambda: _say("another beat holds the schedule lock; standing by until it stops"))
    return run_celery(args.runtime.celery, ["beat", "-l", args.loglevel, "-s", str(_beat_schedule_file())])


def flower(args: argparse.Namespace) -> None:
    argv = ["flower", f"--port={args.port}", f"--address={args.address}"]
    auth = args.runtime.settings.flower_basic_auth
    if auth:
        if ":" not in auth:
            raise InvalidRequest("MODELYARD_FLOWER_BASIC_AUTH must be user:password (comma-separate several)")
        argv.append(f"--basic-auth={auth}")
        from workers.metrics import protect_flower_metrics

        protect_flower_metrics()
    args.runtime.celery.start(argv)


def demo(args: argparse.Namespace) -> int:
    from workers.demo import run_demo

    return run_demo()
