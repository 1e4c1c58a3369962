"""The fleet-wide limiter under load (``python -m tests.bench.limits``; also part of ``make bench``).

The fake provider runs as its own process and enforces an OpenAI-style limit per key (token
buckets holding one second of the rate, 429 with ``retry-after-ms`` and ``x-ratelimit-*``
headers, the limits advertised on every answer), with 50 ms latency. Two ``modelyard worker``
processes (threads pool, 8 threads each) at the project's default settings. Scenarios, each
run with the limiter on and off (``MODELYARD_LIMITS_URL=off``, the behaviour before it) in the
same run:

- rpm: three concurrent 12,800-text jobs on one key, 1,200 requests a minute binding;
- tpm: the same with a tokens-per-minute limit binding (at half the request limit's rate);
- fair: a 1,280-text job submitted 3 s after a 38,400-text job on the same key;
- free: one 38,400-text job with limits configured (the tenant's own) but far from binding,
  against the limiter off -- the limiter's own cost.

Figures: completion time against the ideal (requests / the limit), goodput (successful
requests a second over the limit's), 429s as a share of calls, items failed, each job's time.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests import services
from tests.bench.pipeline import API_KEY, MODEL, configure_tenant, text_for
from tests.bench.run import bench_stack
from tests.conftest import Stack, Worker, apply_env, empty_broker, start_worker
from tests.fakeprovider import RemoteFakeProvider, fake_tokens, spawn_fake_provider

CHUNK = 64  # the default MODELYARD_EMBEDDING_CHUNK_SIZE


@dataclass
class Outcome:
    elapsed: float
    ideal: float | None
    calls: int
    ok_calls: int
    rate_limited: int
    failed_items: int
    job_seconds: list[float]
    limit_per_s: float | None

    @property
    def goodput(self) -> float | None:
        return self.ok_calls / self.elapsed / self.limit_per_s if self.limit_per_s else None


def _jobs_done(job_ids: list[str], timeout: float) -> dict[str, dict]:
    from tasks.producer import status

    deadline, done = time.monotonic() + timeout, {}
    while len(done) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id not in done:
                st = status(job_id)
                if st["status"] in ("succeeded", "partial", "failed", "cancelled"):
                    done[job_id] = st
        time.sleep(0.1)
    return done


def _finished_after(job_id: str, since_wall: float) -> float:
    from sqlalchemy import select

    from models.db import session_scope
    from models.tables import jobs

    with session_scope() as session:
        finished = session.scalar(select(jobs.c.finished_at).where(jobs.c.id == job_id))
    return finished.timestamp() - since_wall if finished else float("nan")


def run_scenario(
    stack: Stack,
    fake: RemoteFakeProvider,
    log_dir: Path,
    *,
    jobs: list[tuple[int, float]],
    fake_limits: dict,
    tenant_limits: dict | None,
    limiter_on: bool,
    timeout: float = 900,
) -> Outcome:
    """``jobs``: (texts, seconds after the first submit) on one tenant's key."""
    from models.db import session_scope
    from models.tenants import set_llm_limits
    from tasks.producer import submit_embedding

    env = {**stack.env, "MODELYARD_LIMITS_URL": "" if limiter_on else "off"}
    apply_env(env)
    fake.configure(limits=fake_limits or None)
    tenant = configure_tenant(fake.base_url)  # the same key every run: its limiter state is flushed below
    if tenant_limits:
        with session_scope() as session:
            set_llm_limits(session, tenant, MODEL, "embedding", **tenant_limits)
    empty_broker(stack.redis_url)  # no queued messages, no limiter state from the last run
    workers: list[Worker] = [
        start_worker(stack, log_dir, queues="embedding", pool="threads", concurrency=8, extra_env=env) for _ in range(2)
    ]
    try:
        fake.reset()
        started = time.perf_counter()
        started_wall = time.time()
        job_ids, offset = [], 0
        for texts, at in jobs:
            time.sleep(max(0.0, at - (time.perf_counter() - started)))
            job_ids.append(submit_embedding(tenant, MODEL, (text_for(offset + i) for i in range(texts))))
            offset += texts
        done = _jobs_done(job_ids, timeout)
        elapsed = time.perf_counter() - started
    finally:
        for w in workers:
            w.stop()
    calls = [c for c in fake.calls if c.route == "embeddings"]
    failed = sum(st["items"]["failed"] for st in done.values()) + sum(
        t for (t, _), j in zip(jobs, job_ids, strict=True) if j not in done
    )
    job_seconds = []
    for (_, at), job_id in zip(jobs, job_ids, strict=True):
        job_seconds.append(_finished_after(job_id, started_wall + at))
    requests = sum(-(-t // CHUNK) for t, _ in jobs)
    rpm, tpm = fake_limits.get("rpm"), fake_limits.get("tpm")
    per_s = None
    if rpm or tpm:
        tokens_per_request = sum(fake_tokens([text_for(i)]) for i in range(offset)) / requests
        candidates = [x for x in (rpm and rpm / 60, tpm and tpm / 60 / tokens_per_request) if x]
        per_s = min(candidates)
    return Outcome(
        elapsed=elapsed,
        ideal=requests / per_s if per_s else None,
        calls=len(calls),
        ok_calls=sum(1 for c in calls if c.status == 200),
        rate_limited=sum(1 for c in calls if c.status == 429),
        failed_items=failed,
        job_seconds=job_seconds,
        limit_per_s=per_s,
    )


def _row(name: str, on: bool, o: Outcome) -> str:
    ideal = f"{o.ideal:.1f}" if o.ideal else "-"
    ratio = f"{o.elapsed / o.ideal:.2f}" if o.ideal else "-"
    goodput = f"{o.goodput:.0%}" if o.goodput else "-"
    jobs = " / ".join(f"{s:.1f}" for s in o.job_seconds)
    return (
        f"| {name} | {'on' if on else 'off'} | {o.elapsed:.1f} | {ideal} | {ratio} | {goodput} | "
        f"{o.rate_limited / max(1, o.calls):.1%} ({o.rate_limited}/{o.calls}) | {o.failed_items} | {jobs} |"
    )


def tpm_for(rate_per_s: float, texts: int) -> int:
    """A tokens-per-minute limit that lets ``rate_per_s`` average chunks through."""
    tokens = sum(fake_tokens([text_for(i)]) for i in range(texts)) / -(-texts // CHUNK)
    return int(tokens * rate_per_s * 60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.limits", description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", default="rpm,tpm,fair,free", help="comma list of rpm, tpm, fair, free")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--texts", type=int, default=12_800, help="texts per job in rpm / tpm")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    try:
        services.redis_url(), services.database_url()
    except services.ServicesUnavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 3
    three = [(args.texts, 0.0)] * 3
    scenarios = {
        "rpm": {"jobs": three, "fake_limits": {"rpm": 1200, "burst_seconds": 1.0}, "tenant_limits": None},
        "tpm": {
            "jobs": three,
            "fake_limits": {"rpm": 1200, "tpm": tpm_for(10, 3 * args.texts), "burst_seconds": 1.0},
            "tenant_limits": None,
        },
        "fair": {
            "jobs": [(38_400, 0.0), (1_280, 3.0)],
            "fake_limits": {"rpm": 1200, "burst_seconds": 1.0},
            "tenant_limits": None,
        },
        "free": {"jobs": [(38_400, 0.0)], "fake_limits": {}, "tenant_limits": {"rpm": 1_000_000, "tpm": 1_000_000_000}},
    }
    with bench_stack("limits") as (stack, tmp):
        print("| scenario | limiter | seconds | ideal s | / ideal | goodput | 429s | items failed | each job's s |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        with spawn_fake_provider(latency_ms=50, keys=[API_KEY]) as fake:
            for name in wanted:
                for _ in range(args.repeats):
                    for on in (True, False):
                        outcome = run_scenario(stack, fake, tmp, **scenarios[name], limiter_on=on)
                        print(_row(name, on, outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
