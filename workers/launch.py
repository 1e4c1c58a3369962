"""Long-running processes: worker, beat, flower, and the demo."""
from __future__ import annotations

import argparse
from pathlib import Path

from conf.errors import InvalidRequest
from conf.settings import get_settings


def worker(args: argparse.Namespace) -> None:
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
        argv += ["-B", "-s", str(_beat_schedule_file())]
    app.worker_main(argv)


def _beat_schedule_file() -> Path:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir / "celerybeat-schedule"


def beat(args: argparse.Namespace) -> None:
    from workers.celery_main import app

    app.start(["beat", "-l", args.loglevel, "-s", str(_beat_schedule_file())])


def flower(args: argparse.Namespace) -> None:
    from workers.celery_main import app

    argv = ["flower", f"--port={args.port}", f"--address={args.address}"]
    auth = get_settings().flower_basic_auth
    if auth:
        if ":" not in auth:
            raise InvalidRequest("MODELYARD_FLOWER_BASIC_AUTH must be user:password (comma-separate several)")
        argv.append(f"--basic-auth={auth}")
    app.start(argv)


def demo(args: argparse.Namespace) -> int:
    from workers.demo import run_demo

    return run_demo()
