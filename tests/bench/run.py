"""``make bench``: modelyard's embedding throughput next to raw Celery and a direct asyncio loop.

Run from the project root (never part of ``make test``)::

    python -m tests.bench.run [--texts 100000] [--latency 0,50] [--concurrency 8] [--inflight N]
                              [--chunk-size 64] [--pool threads|prefork|threads,prefork] [--workers 1]
                              [--dim 8] [--repeats 1] [--profile] [--skip-baselines] [--skip-builtin]
                              [--skip-limits]

    python -m tests.bench.run --texts 5000 --latency 0 --skip-builtin     # a quick run

Redis and Postgres come from tests/services.py exactly as for the test suite
(``MODELYARD_TEST_REDIS_URL`` / ``MODELYARD_TEST_DATABASE_URL``, else throwaway servers); the
run gets a fresh database and a private Redis db. For each fake-provider latency (the fake runs
as its own process) and each worker configuration it measures, side by side:

(a) raw Celery no-op tasks, one per chunk, same pool and concurrency -- items/s;
(b) a direct asyncio loop calling the fake with ``inflight`` requests at a time -- items/s;
(c) a modelyard embedding job of ``--texts`` texts on ``--workers`` real ``modelyard worker``
    processes: submit time, items/s from submit to the last chunk, ``results()`` time (vectors
    checked against fake_vector for a sample), the workers' peak RSS (sum over their process
    trees and the largest process), the producer's peak RSS during submit and results, and
    where the CPU went (worker, fake, Postgres, Redis, producer, other processes).

Results and their interpretation: tests/bench/RESULTS.md. Exit status 1 if a check of (c) failed.

Then the fleet-wide limiter's scenarios (tests/bench/limits.py, on and off side by side).

``--concurrency`` and ``--pool`` take comma lists (every combination runs); ``--inflight``
(MODELYARD_JOB_MAX_INFLIGHT, default: the concurrency) too. ``--profile`` adds a per-chunk
breakdown of ``run_chunk`` under cProfile. At the end the Builtin-model benchmark
(tests/bench/bench_builtin.py) runs in a subprocess; without torch it prints only our side.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests import services
from tests.bench.pipeline import (
    API_KEY,
    MB,
    Config,
    JobRun,
    child_running,
    chunk_breakdown,
    direct_asyncio,
    modelyard_job,
    noop_celery,
)
from tests.conftest import ROOT, Stack, apply_env
from tests.fakeprovider import spawn_fake_provider


def _ints(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x.strip()]


def _floats(raw: str) -> list[float]:
    return [float(x) for x in raw.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=100_000, help="texts in the modelyard job (and in (a), (b))")
    p.add_argument("--latency", type=_floats, default=[0.0, 50.0], help="fake provider latencies in ms, e.g. 0,50")
    p.add_argument("--concurrency", type=_ints, default=[8], help="worker pool size(s), e.g. 8 or 4,8,16")
    p.add_argument(
        "--inflight",
        type=_ints,
        default=None,
        help="MODELYARD_JOB_MAX_INFLIGHT value(s) (default: equal to the concurrency)",
    )
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--pool", default="threads", help="threads, prefork or a comma list")
    p.add_argument("--workers", type=int, default=1, help="modelyard worker processes (each with --concurrency)")
    p.add_argument("--dim", type=int, default=8, help="the fake's embedding dimension")
    p.add_argument("--repeats", type=int, default=1, help="run each measurement N times and keep the best rate")
    p.add_argument("--skip-baselines", action="store_true", help="skip (a) and (b)")
    p.add_argument("--profile", action="store_true", help="also profile run_chunk inline (per-chunk breakdown)")
    p.add_argument("--skip-builtin", action="store_true", help="skip the Builtin-model benchmark")
    p.add_argument("--skip-limits", action="store_true", help="skip the fleet-wide limiter scenarios")
    args = p.parse_args(argv)
    args.pool = [x.strip() for x in args.pool.split(",") if x.strip()]
    for pool in args.pool:
        if pool not in ("threads", "prefork", "solo"):
            p.error(f"--pool must be threads, prefork or solo, not {pool!r}")
    return args


def make_stack(data_dir: Path) -> Stack:
    """A fresh database (migrated, catalog loaded) and a private Redis db, like the tests' ``stack``."""
    from cryptography.fernet import Fernet

    database_url = services.fresh_database(services.database_url())
    redis_url = services.fresh_redis_db(services.redis_url())
    env = {
        "MODELYARD_DATABASE_URL": database_url,
        "MODELYARD_BROKER_URL": redis_url,
        "MODELYARD_DATA_DIR": str(data_dir),
        "MODELYARD_SECRET_KEY": Fernet.generate_key().decode(),
    }
    apply_env(env)
    from models.db import get_engine
    from models.migrate import upgrade

    upgrade(get_engine())
    return Stack(env=env, data_dir=data_dir, redis_url=redis_url, database_url=database_url)


@contextmanager
def bench_stack(name: str) -> Iterator[tuple[Stack, Path]]:
    """For one bench script: a fresh database and Redis db, the header with the machine and its
    load, the load again at the end; the database dropped after."""
    from tasks.runtime import current

    with tempfile.TemporaryDirectory(prefix=f"modelyard-bench-{name}-") as tmp:
        stack = make_stack(Path(tmp))
        try:
            print(
                f"# {name} bench, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n\n{machine()}; "
                f"load average at the start: {load_average()}\n"
            )
            yield stack, Path(tmp)
            print(f"\nload average at the end: {load_average()}")
        finally:
            current().close()
            services.drop_database(stack.database_url)


def machine() -> str:
    import psycopg
    import redis
    from sqlalchemy import text

    from models.db import session_scope

    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    with session_scope() as session:
        pg = session.scalar(text("SHOW server_version"))
    rv = redis.Redis.from_url(services.redis_url()).info("server")["redis_version"]
    import celery

    return (
        f"{os.cpu_count()} cores, {mem_kb / 1024 / 1024:.1f} GiB RAM, {platform.platform()}; Python "
        f"{platform.python_version()}, Postgres {pg}, Redis {rv}, celery {celery.__version__}, psycopg {psycopg.__version__}"
    )


def _mb(n: int) -> str:
    return f"{n / MB:.0f}"


def print_header() -> None:
    print(
        "| latency | worker config | (a) celery no-op | (b) asyncio direct | (c) modelyard | (c)/(a) | (c)/(b) "
        "| submit s | results s | worker peak MB (tree / max proc) | producer peak MB (before / submit / results) "
        "| CPU ms/chunk: worker / fake / postgres / redis / producer / other | machine busy | check |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def print_row(cfg: Config, a: float | None, b: float | None, c: JobRun) -> None:
    def rate(x: float | None) -> str:
        return f"{x:,.0f}" if x else "-"

    def ratio(x: float | None) -> str:
        return f"{c.items_per_s / x:.0%}" if x else "-"

    check = "ok" if not c.problems else "; ".join(c.problems)
    cpu = " / ".join(
        f"{c.cpu_ms_per_chunk[k]:.1f}" for k in ("worker", "fake", "postgres", "redis", "producer", "other")
    )
    print(
        f"| {cfg.latency_ms:g} ms | {cfg.label()} | {rate(a)} | {rate(b)} | {rate(c.items_per_s)} | {ratio(a)} "
        f"| {ratio(b)} | {c.submit_s:.1f} | {c.results_s:.1f} | {_mb(c.worker_peak_total)} / {_mb(c.worker_peak_process)} "
        f"({c.worker_processes} proc) | {_mb(c.producer_rss_before)} / {_mb(c.producer_peak_submit)} / "
        f"{_mb(c.producer_peak_results)} | {cpu} | {c.machine_busy:.0%} | {check} |",
        flush=True,
    )


def configs(args: argparse.Namespace, latency: float) -> list[Config]:
    return [
        Config(args.texts, latency, concurrency, inflight, args.chunk_size, pool, args.workers, args.dim)
        for pool in args.pool
        for concurrency in args.concurrency
        for inflight in args.inflight or [concurrency]
    ]


def run_latency(args: argparse.Namespace, stack: Stack, log_dir: Path, latency: float) -> bool:
    """Every configuration against one fake provider at ``latency`` ms; True if a check failed."""
    failed = False
    direct: dict[int, float] = {}  # (b) depends only on the in-flight limit
    with spawn_fake_provider(latency_ms=latency, dim=args.dim, keys=[API_KEY]) as fake:
        fake_pid = child_running("tests.fakeprovider")
        for cfg in configs(args, latency):
            a = b = None
            if not args.skip_baselines:
                a = max(noop_celery(stack.redis_url, cfg, log_dir) for _ in range(args.repeats))
                if cfg.inflight not in direct:
                    direct[cfg.inflight] = max(direct_asyncio(fake.base_url, cfg) for _ in range(args.repeats))
                b = direct[cfg.inflight]
            runs = [modelyard_job(stack, fake.base_url, cfg, log_dir, fake_pid=fake_pid) for _ in range(args.repeats)]
            c = max(runs, key=lambda run: run.items_per_s)
            c.worker_peak_total = max(run.worker_peak_total for run in runs)  # memory: the worst run
            c.worker_peak_process = max(run.worker_peak_process for run in runs)
            c.problems = [p for run in runs for p in run.problems]
            failed |= bool(c.problems)
            print_row(cfg, a, b, c)
    return failed


def print_breakdown(args: argparse.Namespace, stack: Stack) -> None:
    with spawn_fake_provider(latency_ms=0, dim=args.dim, keys=[API_KEY]) as fake:
        cfg = Config(args.texts, 0, args.concurrency[0], args.concurrency[0], args.chunk_size, "inline")
        bd = chunk_breakdown(stack, fake.base_url, cfg)
    print(
        f"\n## run_chunk inline, one chunk at a time, fake at 0 ms: {bd.ms_per_chunk:.1f} ms per chunk, "
        f"{bd.cpu_ms_per_chunk:.1f} ms of it CPU in this process ({bd.chunks} chunks)\n"
    )
    print("| stage | ms per chunk (cProfile) | calls per chunk |\n|---|---|---|")
    for name, ms, calls in bd.stages:
        print(f"| {name} | {ms:.2f} | {calls} |")
    print("\n```\n" + bd.profile_text.strip() + "\n```")


def load_average() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def run_builtin() -> None:
    print("\n## Builtin model (tests/bench/bench_builtin.py)\n", flush=True)
    proc = subprocess.run([sys.executable, "-m", "tests.bench.bench_builtin"], cwd=ROOT, check=False)
    if proc.returncode != 0:
        print(f"(the Builtin benchmark exited with {proc.returncode}; see its output above)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    try:
        services.redis_url(), services.database_url()
    except services.ServicesUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 3
    failed = False
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        stack = make_stack(Path(tmp))
        log_dir = Path(tmp)
        try:
            print(f"# modelyard bench, {started}\n\n{machine()}; load average at the start: {load_average()}\n")
            print(f"command: python -m tests.bench.run {' '.join(argv if argv is not None else sys.argv[1:])}")
            print(
                f"{args.texts:,} texts, chunk size {args.chunk_size}, embedding dim {args.dim}, "
                f"{-(-args.texts // args.chunk_size):,} chunks; items/s = texts / seconds\n"
            )
            print_header()
            for latency in args.latency:
                failed |= run_latency(args, stack, log_dir, latency)
            if args.profile:
                print_breakdown(args, stack)
            print(f"\nload average at the end: {load_average()}")
        finally:
            from tasks.runtime import current

            current().close()
            services.drop_database(stack.database_url)
    if not args.skip_limits:
        print("\n## Fleet-wide limits (tests/bench/limits.py)\n", flush=True)
        failed |= subprocess.run([sys.executable, "-m", "tests.bench.limits"], cwd=ROOT, check=False).returncode != 0
    if not args.skip_builtin:
        run_builtin()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
