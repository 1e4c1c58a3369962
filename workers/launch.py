"""Long-running processes: worker, beat, flower, and the demo."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conf.errors import InvalidRequest
from conf.settings import get_settings
from models.locks import BeatLock

# Held for the life of the process (dropping it would release the lock).
_beat_lock = BeatLock()


def worker(args: argparse.Namespace) -> None:
    from workers.metrics import prepare_worker

    prepare_worker()  # before the tasks (and prometheus_client) are imported
    from tasks.app import QUEUES
    from workers.celery_main import app

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if unknown or not queues:
        raise InvalidRequest(f"unknown queue(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(QUEUES)}")
    # Provider calls wait on the network: as many threads as one job may have chunks in flight.
    concurrency = args.concurrency or get_settings().job_max_inflight_chunks
    argv = ["worker", "-Q", ",".join(queues), "-P", args.pool, "-c", str(concurrency), "-l", args.loglevel]
    if args.hostname:
        argv += ["-n", args.hostname]
    if args.beat:
        if _beat_lock.try_acquire():
            argv += ["-B", "-s", str(_beat_schedule_file())]
        else:
            _say("another beat holds the schedule lock; this worker starts without -B")
    app.worker_main(argv)


def _say(message: str) -> None:
    sys.stderr.write(f"modelyard: {message}\n")
    sys.stderr.flush()


def _beat_schedule_file() -> Path:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir / "celerybeat-schedule"


def beat(args: argparse.Namespace) -> None:
    from workers.celery_main import app

    # Before the scheduler opens its schedule file: a standby beat must not touch it.
    _beat_lock.acquire(on_wait=lambda: _say("another beat holds the schedule lock; standing by until it stops"))
    app.start(["beat", "-l", args.loglevel, "-s", str(_beat_schedule_file())])


def flower(args: argparse.Namespace) -> None:
    from workers.celery_main import app

    argv = ["flower", f"--port={args.port}", f"--address={args.address}"]
    auth = get_settings().flower_basic_auth
    if auth:
        if ":" not in auth:
            raise InvalidRequest("MODELYARD_FLOWER_BASIC_AUTH must be user:password (comma-separate several)")
        argv.append(f"--basic-auth={auth}")
        from workers.metrics import protect_flower_metrics

        protect_flower_metrics()
    app.start(argv)


def demo(args: argparse.Namespace) -> int:
    from workers.demo import run_demo

    return run_demo()
