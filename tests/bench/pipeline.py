"""The measurements behind ``python -m tests.bench.run``: three ways to push the same texts
through the same fake provider, and the memory they take.

(a) :func:`noop_celery` -- raw Celery: one no-op task per chunk on a minimal app
    (tests.bench.noop_app), same Redis, same pool and concurrency as (c);
(b) :func:`direct_asyncio` -- an ``httpx.AsyncClient`` loop calling the fake's /v1/embeddings
    with the in-flight limit as its concurrency and the same chunk size;
(c) :func:`modelyard_job` -- the full path: ``submit_embedding`` (timed on its own), real
    ``modelyard worker`` processes, results in Postgres, ``results()`` read back and checked.

Memory and CPU are read from /proc (no psutil): :class:`RssSampler` samples the RSS of a process
tree every 100 ms; the producer's own peak also comes from VmHWM, reset before each phase;
:class:`CpuSplit` says which processes used the CPU during (c) (on a shared machine, "other"
shows how clean the numbers are). :func:`chunk_breakdown` runs ``run_chunk`` inline under
cProfile to show where a chunk's time goes.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import httpx
import numpy as np

from tests.conftest import ROOT, Stack, Worker, apply_env, start_worker
from tests.fakeprovider import fake_tokens, fake_vectors

if TYPE_CHECKING:  # tasks.* reads the environment the bench sets up first
    from tasks.producer import EmbeddingResults

API_KEY = "sk-bench-key-0001"
MODEL = "text-embedding-3-small@OpenAI"
MB = 1024 * 1024

_WORDS = (
    "the a of to in for with from by model data system user tenant worker queue job task result error "
    "token vector search query document passage report invoice customer order payment account server "
    "network request response price market energy policy river mountain city garden teacher student "
    "quickly slowly carefully often never runs reads writes builds ships checks sends finds keeps moves"
).split()
_BASES = [
    " ".join(_WORDS[(b * 31 + k * 17 + k * k) % len(_WORDS)] for k in range(8 + (b * 7) % 60)) for b in range(997)
]


def text_for(i: int) -> str:
    """The benchmark's i-th text (8 to 67 words, unique): cheap, so it can be recomputed to check results."""
    return f"{i}: {_BASES[i % len(_BASES)]}"


@dataclass(frozen=True)
class Config:
    texts: int
    latency_ms: float
    concurrency: int  # worker threads / processes per worker
    inflight: int  # MODELYARD_JOB_MAX_INFLIGHT, and (b)'s concurrency
    chunk_size: int
    pool: str
    workers: int = 1
    dim: int = 8

    @property
    def chunks(self) -> int:
        return -(-self.texts // self.chunk_size)

    def label(self) -> str:
        return f"{self.pool} x{self.workers} -c {self.concurrency} inflight {self.inflight}"


# --------------------------------------------------------------------------- memory from /proc


def _rss_bytes(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _hwm_bytes() -> int:
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _cpu_seconds(pid: int | str) -> float:
    """User + system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat", "rb") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICKS, sum(values) / _TICKS


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def child_running(module: str) -> int | None:
    """The pid of this process's child running ``python -m module`` (the spawned fake provider)."""
    for pid in _descendants([os.getpid()]):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if module.encode() in argv:
            return pid
    return None


class CpuSplit:
    """Where the machine's CPU went during a block, in core-seconds: the worker trees, the fake
    provider, Postgres (our database's backends and the server's own processes), Redis, this
    (producer) process, and everything else (other users of the machine too: a busy "other"
    means the numbers are not clean)."""

    def __init__(self, workers: list[int], fake: int | None, database: str) -> None:
        self.workers, self.fake, self.database = workers, fake, database.encode()

    def _snapshot(self) -> dict[str, float]:
        worker_pids = set(_descendants(self.workers))
        groups = {"worker": 0.0, "fake": 0.0, "postgres": 0.0, "redis": 0.0, "producer": 0.0}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            group = (
                "worker"
                if pid in worker_pids
                else "fake"
                if pid == self.fake
                else "producer"
                if pid == os.getpid()
                else self._server(pid)
            )
            if group:
                groups[group] += _cpu_seconds(pid)
        busy, total = _machine_cpu()
        groups["busy"], groups["total"] = busy, total
        return groups

    def _server(self, pid: int) -> str | None:
        """ "postgres" for a backend serving our database or a server process (WAL writer, checkpointer...),
        "redis" for the Redis server."""
        comm = _comm(pid)
        if comm == "redis-server":
            return "redis"
        if comm == "postgres":
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    title = fh.read()  # "postgres: 15/main: USER DATABASE HOST(PORT) STATE"
            except OSError:
                return None
            words = title.split()
            client = any(w.endswith(b")") and b"(" in w for w in words)  # a backend: "HOST(PORT)"
            return "postgres" if self.database in words or not client else None  # ours, or the server's own
        return None

    def __enter__(self) -> CpuSplit:
        self._start = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._snapshot()
        delta = {k: end[k] - self._start[k] for k in end}
        self.wall_cores = delta.pop("total") / (os.cpu_count() or 1)  # elapsed seconds
        busy = delta.pop("busy")
        # a backend that ended meanwhile (postgres forks one per connection) is lost: clamp at 0
        self.seconds = {k: max(0.0, v) for k, v in delta.items()}
        self.seconds["other"] = max(0.0, busy - sum(self.seconds.values()))
        self.busy_share = busy / max(1e-9, self.wall_cores * (os.cpu_count() or 1))

    def per_chunk_ms(self, chunks: int) -> dict[str, float]:
        return {k: v * 1000 / chunks for k, v in self.seconds.items()}


_TICKS = os.sysconf("SC_CLK_TCK")


def _descendants(roots: list[int]) -> list[int]:
    """``roots`` and every process below them (from each /proc/PID/stat's parent pid)."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        parent[int(name)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    tree, frontier = set(roots), list(roots)
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sorted(tree)


class RssSampler:
    """Samples the RSS of process trees (or only of ``roots``) every ``interval`` seconds.

    ``peak_total`` is the largest sum over the tree seen in one sample; ``peak_per_process``
    the largest RSS each process had (by pid). The tree is re-read every 10th sample, so
    prefork children that are replaced are counted too.
    """

    def __init__(self, roots: list[int], interval: float = 0.1, *, tree: bool = True) -> None:
        self.roots = roots
        self.tree = tree
        self.interval = interval
        self.peak_total = 0
        self.peak_per_process: dict[int, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pids: list[int] = []
        while True:
            if self.samples % 10 == 0:
                pids = _descendants(self.roots) if self.tree else self.roots
            rss = {pid: _rss_bytes(pid) for pid in pids}
            self.peak_total = max(self.peak_total, sum(rss.values()))
            for pid, value in rss.items():
                self.peak_per_process[pid] = max(self.peak_per_process.get(pid, 0), value)
            self.samples += 1
            if self._stop.wait(self.interval):
                return

    @property
    def peak_process(self) -> int:
        return max(self.peak_per_process.values(), default=0)


class ProducerPeak:
    """This process's peak RSS during a block: 100 ms samples and the kernel's VmHWM after a reset."""

    def __enter__(self) -> ProducerPeak:
        self.before = _rss_bytes("self")
        reset_peak_rss()
        self._sampler = RssSampler([os.getpid()], tree=False).__enter__()  # not the fake and workers below us
        return self

    def __exit__(self, *exc: object) -> None:
        self._sampler.__exit__()
        self.peak = max(self._sampler.peak_total, _hwm_bytes())


# --------------------------------------------------------------------------- (a) raw Celery


def _start_noop_worker(broker_url: str, cfg: Config, log_dir: Path) -> subprocess.Popen[bytes]:
    log = log_dir / f"noop-{uuid.uuid4().hex[:6]}.log"
    env = {**os.environ, "BENCH_BROKER_URL": broker_url}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.bench.noop_app",
                "worker",
                "-Q",
                "bench-noop",
                "-P",
                cfg.pool,
                "-c",
                str(cfg.concurrency),
                "-n",
                f"noop-{uuid.uuid4().hex[:6]}@localhost",
                "-l",
                "info",
            ],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"no-op worker exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if "ready." in log.read_text(errors="replace"):
            return proc
        time.sleep(0.2)
    raise RuntimeError(f"no-op worker not ready after 60 s: {log.read_text()[-2000:]}")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def noop_celery(broker_url: str, cfg: Config, log_dir: Path) -> float:
    """(a): items/s of ``cfg.chunks`` no-op tasks, counting ``chunk_size`` items per task.

    All messages are sent at once (the producer's send time is inside the measurement) and
    the clock stops when the worker has run the last one."""
    import redis

    from tests.bench import noop_app

    noop_app.app.conf.broker_url = broker_url
    counter = redis.Redis.from_url(broker_url)
    key = f"bench:noop:{uuid.uuid4().hex}"
    proc = _start_noop_worker(broker_url, cfg, log_dir)
    # A connection of its own: kombu's pools are shared by URL, and apply_env closes modelyard's.
    conn = noop_app.app.connection_for_write()
    try:
        producer = conn.Producer()
        # warm-up: the first task pays for connections in the worker
        noop_app.app.send_task(noop_app.TASK, args=[key + ":warm"], queue=noop_app.QUEUE, producer=producer)
        _wait_counter(counter, key + ":warm", 1, 30)
        started = time.perf_counter()
        for _ in range(cfg.chunks):
            noop_app.app.send_task(noop_app.TASK, args=[key], queue=noop_app.QUEUE, producer=producer)
        _wait_counter(counter, key, cfg.chunks, 600)
        elapsed = time.perf_counter() - started
    finally:
        conn.release()
        _stop_group(proc)
        counter.delete(key, key + ":warm")
        counter.close()
    return cfg.texts / elapsed


def _wait_counter(client, key: str, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while int(client.get(key) or 0) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {int(client.get(key) or 0)} of {target} no-op tasks ran in {timeout:.0f} s")
        time.sleep(0.005)


# --------------------------------------------------------------------------- (b) direct asyncio


def direct_asyncio(base_url: str, cfg: Config) -> float:
    """(b): items/s of an asyncio loop posting ``chunk_size`` texts a request, ``inflight`` at a time."""
    return asyncio.run(_direct(base_url, cfg))


async def _direct(base_url: str, cfg: Config) -> float:
    limit = asyncio.Semaphore(cfg.inflight)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    limits = httpx.Limits(max_connections=cfg.inflight, max_keepalive_connections=cfg.inflight)

    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60.0) as client:

        async def one(start: int) -> int:
            texts = [text_for(i) for i in range(start, min(start + cfg.chunk_size, cfg.texts))]
            async with limit:
                response = await client.post(
                    "/embeddings", json={"model": "text-embedding-3-small", "input": texts, "encoding_format": "float"}
                )
            response.raise_for_status()
            rows = sorted(response.json()["data"], key=lambda row: row["index"])
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
            if vectors.shape != (len(texts), cfg.dim):
                raise RuntimeError(f"got {vectors.shape} vectors for {len(texts)} texts")
            return len(texts)

        await one(0)  # warm-up: open a connection
        started = time.perf_counter()
        done = sum(await asyncio.gather(*(one(s) for s in range(0, cfg.texts, cfg.chunk_size))))
        elapsed = time.perf_counter() - started
    assert done == cfg.texts
    return cfg.texts / elapsed


# --------------------------------------------------------------------------- (c) the full path


@dataclass
class JobRun:
    items_per_s: float
    submit_s: float
    run_s: float  # submit returned -> last chunk finished (the worker's clock)
    results_s: float
    status: str
    worker_peak_total: int
    worker_peak_process: int
    worker_processes: int
    cpu_ms_per_chunk: dict[str, float]  # from submit returned to job done: worker, fake, postgres, redis, ...
    machine_busy: float  # share of all cores busy (any process) over the same time
    producer_rss_before: int
    producer_peak_submit: int
    producer_peak_results: int
    checked: int
    problems: list[str] = field(default_factory=list)


def apply_inflight(stack: Stack, cfg: Config) -> dict[str, str]:
    """The env both the producer (this process) and the workers need for ``cfg``."""
    env = {
        **stack.env,
        "MODELYARD_JOB_MAX_INFLIGHT": str(cfg.inflight),
        "MODELYARD_EMBEDDING_CHUNK_SIZE": str(cfg.chunk_size),
    }
    apply_env(env)
    return env


def configure_tenant(base_url: str) -> str:
    """A new tenant with the embedding model pointed at the fake; returns the tenant id."""
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm

    with session_scope() as session:
        tenant = create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}", defaults=False)
        save_llm(session, tenant, MODEL, "embedding", api_key=API_KEY, api_base=base_url)
    return tenant


class _TokenCounter:
    """The job's input, streamed, counting the tokens the fake will report for it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.tokens = 0

    def __iter__(self) -> Iterator[str]:
        for i in range(self.n):
            text = text_for(i)
            self.tokens += fake_tokens([text])
            yield text


def modelyard_job(
    stack: Stack, base_url: str, cfg: Config, log_dir: Path, *, fake_pid: int | None = None, sample: int = 500
) -> JobRun:
    """(c): one ``cfg.texts`` job through submit, real workers, Postgres and ``results()``."""
    from sqlalchemy import func, select

    from models.db import session_scope
    from models.tables import jobs, usage_events
    from tasks.producer import results, submit_embedding, wait

    env = apply_inflight(stack, cfg)
    tenant = configure_tenant(base_url)
    workers: list[Worker] = []
    try:
        for _ in range(cfg.workers):
            workers.append(
                start_worker(
                    stack, log_dir, queues="embedding", pool=cfg.pool, concurrency=cfg.concurrency, extra_env=env
                )
            )
        # warm-up: every worker thread's first chunk pays for imports, connections and the bundle
        wait(submit_embedding(tenant, MODEL, [text_for(i) for i in range(cfg.inflight * cfg.chunk_size)]), timeout=120)
        with RssSampler([w.proc.pid for w in workers]) as worker_rss:
            texts = _TokenCounter(cfg.texts)
            with ProducerPeak() as submit_mem:
                started = time.perf_counter()
                job_id = submit_embedding(tenant, MODEL, texts)
                submitted_wall = time.time()
                submit_s = time.perf_counter() - started
            database = stack.database_url.rsplit("/", 1)[-1].split("?")[0]
            with CpuSplit([w.proc.pid for w in workers], fake_pid, database) as cpu:
                final = wait(job_id, timeout=3600, poll=0.1)
            with session_scope() as session:
                job = session.execute(select(jobs).where(jobs.c.id == job_id)).one()
                usage_rows = session.scalar(
                    select(func.count()).select_from(usage_events).where(usage_events.c.job_id == job_id)
                )
        run_s = job.finished_at.timestamp() - submitted_wall
        with ProducerPeak() as results_mem:
            started = time.perf_counter()
            res = results(job_id)
            results_s = time.perf_counter() - started
    finally:
        for w in workers:
            w.stop()
    problems = _check(res, cfg, sample)
    if final["status"] != "succeeded":
        problems.append(f"job ended {final['status']}: {final['errors'][:3]}")
    if usage_rows != cfg.chunks:  # exactly once per chunk (no retries are expected here)
        problems.append(f"{usage_rows} usage events for {cfg.chunks} chunks")
    if job.total_tokens != texts.tokens:
        problems.append(f"job counted {job.total_tokens} tokens, the fake reported {texts.tokens}")
    return JobRun(
        items_per_s=cfg.texts / run_s,
        submit_s=submit_s,
        run_s=run_s,
        results_s=results_s,
        status=final["status"],
        worker_peak_total=worker_rss.peak_total,
        worker_peak_process=worker_rss.peak_process,
        worker_processes=len(worker_rss.peak_per_process),
        cpu_ms_per_chunk=cpu.per_chunk_ms(cfg.chunks),
        machine_busy=cpu.busy_share,
        producer_rss_before=submit_mem.before,
        producer_peak_submit=submit_mem.peak,
        producer_peak_results=results_mem.peak,
        checked=min(sample, cfg.texts),
        problems=problems,
    )


def _check(res: EmbeddingResults, cfg: Config, sample: int) -> list[str]:
    problems = []
    if res.vectors.shape != (cfg.texts, cfg.dim):
        return [f"results() gave vectors of shape {res.vectors.shape}, expected {(cfg.texts, cfg.dim)}"]
    if np.isnan(res.vectors).any():
        problems.append(f"{int(np.isnan(res.vectors).any(axis=1).sum())} items have no vector")
    rng = np.random.default_rng(7)
    picks = sorted({0, cfg.texts - 1, *rng.integers(0, cfg.texts, size=max(0, sample - 2)).tolist()})
    expected = fake_vectors([text_for(i) for i in picks], cfg.dim)
    wrong = [i for i, want in zip(picks, expected, strict=True) if not np.array_equal(res.vectors[i], want)]
    if wrong:
        problems.append(
            f"{len(wrong)} of {len(picks)} sampled vectors differ from fake_vector (first: item {wrong[0]})"
        )
    if any(res.custom_ids[i] != str(i) for i in picks):
        problems.append("custom ids out of order")
    if res.errors:
        problems.append(f"{len(res.errors)} item errors, e.g. {next(iter(res.errors.items()))}")
    return problems


# --------------------------------------------------------------------------- where a chunk's time goes


@dataclass
class Breakdown:
    chunks: int
    ms_per_chunk: float  # wall time of run_chunk without the profiler
    cpu_ms_per_chunk: float  # this process's CPU time in it (the fake, Postgres and Redis are elsewhere)
    stages: list[tuple[str, float, int]]  # (function, cumulative ms per chunk under cProfile, calls per chunk)
    profile_text: str


STAGES = (
    ("tasks/runner.py", "run_chunk"),
    ("models/jobs.py", "claim_chunk"),
    ("models/bundle.py", "open"),
    ("tasks/handlers.py", "embedding"),
    ("models/jobs.py", "finish_chunk"),
    ("models/jobs.py", "_write_results"),
    ("models/jobs.py", "release_chunks"),
    ("models/bundle.py", "record_usage"),
    ("sqlalchemy/orm/session.py", "commit"),
    ("tasks/orchestrate.py", "send_chunks"),
    ("celery/app/base.py", "send_task"),
    ("sqlalchemy/engine/base.py", "_execute_context"),
)


def chunk_breakdown(stack: Stack, base_url: str, cfg: Config, chunks: int = 300) -> Breakdown:
    """Run ``run_chunk`` in this process, one chunk at a time, for a job of ``chunks`` chunks
    (no worker: the messages it sends are flushed afterwards). Half the chunks are timed plain,
    half under cProfile; returns the wall time per chunk and the cumulative time of each stage."""
    import redis
    from sqlalchemy import select

    from models.db import session_scope
    from models.tables import job_chunks
    from tasks.handlers import embedding
    from tasks.producer import submit_embedding
    from tasks.runner import run_chunk

    apply_inflight(stack, cfg)
    tenant = configure_tenant(base_url)
    job_id = submit_embedding(tenant, MODEL, (text_for(i) for i in range(chunks * cfg.chunk_size)))

    def next_chunk() -> int | None:
        with session_scope() as session:
            return session.scalar(
                select(job_chunks.c.id)
                .where(job_chunks.c.job_id == job_id, job_chunks.c.status == "queued")
                .order_by(job_chunks.c.seq)
                .limit(1)
            )

    def run(n: int) -> tuple[float, float]:
        wall = cpu = 0.0
        for _ in range(n):
            chunk_id = next_chunk()
            assert chunk_id is not None
            task = SimpleNamespace(request=SimpleNamespace(id=uuid.uuid4().hex, retries=0))
            started, started_cpu = time.perf_counter(), time.process_time()
            outcome = run_chunk(task, chunk_id, embedding)  # type: ignore[arg-type]
            wall += time.perf_counter() - started
            cpu += time.process_time() - started_cpu
            assert outcome == "done", outcome
        return wall, cpu

    run(5)  # warm-up: connections, the bundle, compiled statements
    plain = chunks // 2 - 5
    wall, cpu = run(plain)
    profiled = chunks - 5 - plain
    profiler = cProfile.Profile()
    profiler.enable()
    run(profiled)
    profiler.disable()
    redis.Redis.from_url(stack.redis_url).flushdb()

    stats = pstats.Stats(profiler)
    stages = []
    for path, name in STAGES:
        hits = [
            (v[3], v[1])
            for (file, _line, fn), v in stats.stats.items()  # type: ignore[attr-defined]
            if fn == name and file.endswith(path)
        ]
        if hits:
            cum = sum(h[0] for h in hits)
            calls = sum(h[1] for h in hits)
            stages.append((f"{path}:{name}", cum * 1000 / profiled, round(calls / profiled)))
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
    return Breakdown(
        chunks=plain,
        ms_per_chunk=wall * 1000 / plain,
        cpu_ms_per_chunk=cpu * 1000 / plain,
        stages=stages,
        profile_text=out.getvalue(),
    )
