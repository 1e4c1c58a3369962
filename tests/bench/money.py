"""Metrics and the embedding cache under load (``python -m tests.bench.money``).

One embedding job of ``--texts`` texts (chunks of 64) through two ``modelyard worker``
processes (threads pool, 8 threads each) and the fake provider as its own process, in the
same run:

- metrics: the worker's ``/metrics`` off (no ``MODELYARD_METRICS_PORT``: the counters live in
  each process's memory only) against on (counted in the multiprocess directory's
  memory-mapped files, summed by a scrape every second during the job);
- cache: the job with the cache off (``MODELYARD_EMBED_CACHE=off``), the same job cache on and
  cold (every vector looked up, missed, then stored), and the same texts again, fully cached
  (0 provider calls).

Rates are texts / seconds from ``submit_embedding`` returning to the job's end (the producer
polling every 50 ms); the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import httpx

from tests import services
from tests.api_stack import free_port
from tests.bench.pipeline import API_KEY, MODEL, configure_tenant, text_for
from tests.bench.run import bench_stack
from tests.conftest import Stack, Worker, apply_env, start_worker
from tests.fakeprovider import RemoteFakeProvider, spawn_fake_provider


def _wait(job_id: str, timeout: float = 900) -> dict:
    from tasks.producer import status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(job_id, max_errors=5)
        if st["status"] in ("succeeded", "partial", "failed", "cancelled"):
            return st
        time.sleep(0.05)
    raise TimeoutError(job_id)


def _job(tenant: str, texts: int) -> tuple[float, dict]:
    from tasks.producer import submit_embedding

    job_id = submit_embedding(tenant, MODEL, (text_for(i) for i in range(texts)))
    started = time.perf_counter()
    st = _wait(job_id)
    return time.perf_counter() - started, st


def _workers(stack: Stack, log_dir: Path, env: dict[str, str], n: int = 2) -> list[Worker]:
    out = []
    for _ in range(n):
        extra = dict(env)
        if "MODELYARD_METRICS_PORT" in extra:
            extra["MODELYARD_METRICS_PORT"] = str(free_port())
        out.append(start_worker(stack, log_dir, queues="embedding", pool="threads", concurrency=8, extra_env=extra))
    return out


def _scrape_while(workers: list[Worker], stop: threading.Event) -> None:
    ports = [w.env.get("MODELYARD_METRICS_PORT") for w in workers]
    ports = [p for p in ports if p and p != "0"]
    while ports and not stop.wait(1.0):
        for port in ports:
            assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200


def run(
    stack: Stack, fake: RemoteFakeProvider, log_dir: Path, texts: int, env: dict[str, str], passes: int = 1
) -> list[tuple[float, dict, int]]:
    """Each pass: (seconds, final status, provider calls) of the same texts, one tenant."""
    apply_env({"MODELYARD_EMBED_CACHE": None, "MODELYARD_METRICS_PORT": None, **stack.env, **env})
    import redis

    redis.Redis.from_url(stack.redis_url).flushdb()
    tenant = configure_tenant(fake.base_url)
    workers = _workers(stack, log_dir, env)
    stop = threading.Event()
    scraper = threading.Thread(target=_scrape_while, args=(workers, stop), daemon=True)
    scraper.start()
    out = []
    try:
        for _ in range(passes):
            fake.reset()
            seconds, st = _job(tenant, texts)
            out.append((seconds, st, sum(1 for c in fake.calls if c.route == "embeddings")))
    finally:
        stop.set()
        for w in workers:
            w.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.money", description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=20_000)
    p.add_argument("--latency", type=float, default=0.0, help="fake provider latency, ms")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    try:
        services.redis_url(), services.database_url()
    except services.ServicesUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 3
    with bench_stack("money") as (stack, tmp):
        print(f"{args.texts:,} texts, chunks of 64, fake latency {args.latency:g} ms, 2 workers x 8 threads\n")
        print("| scenario | texts/s (runs) | provider calls | job status |")
        print("|---|---|---|---|", flush=True)
        with spawn_fake_provider(latency_ms=args.latency, keys=[API_KEY]) as fake:
            scenarios = [
                ("metrics off (cache off)", {"MODELYARD_EMBED_CACHE": "off"}, 0),
                (
                    "metrics on, scraped every 1 s (cache off)",
                    {"MODELYARD_EMBED_CACHE": "off", "MODELYARD_METRICS_PORT": "0"},
                    0,
                ),
                ("cache on, cold (all missed, then stored)", {}, 0),
                ("cache on, fully cached (same texts again)", {}, 1),
            ]
            for name, env, index in scenarios:
                runs = []
                for _ in range(args.repeats):
                    passes = run(stack, fake, tmp, args.texts, env, passes=index + 1)
                    runs.append(passes[index])
                rates = [args.texts / s for s, _, _ in runs]
                print(
                    f"| {name} | {max(rates):,.0f} ({' / '.join(f'{r:,.0f}' for r in rates)}) | "
                    f"{runs[-1][2]:,} | {runs[-1][1]['status']} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
