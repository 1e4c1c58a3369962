"""The embedded default: no Redis, no Postgres, no API key. SQLite tables and kombu's
SQLAlchemy transport on a SQLite file, both in MODELYARD_DATA_DIR, with a real worker process."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, apply_env
from tests.fakeprovider import fake_tokens, fake_vector

pytestmark = pytest.mark.services  # worker processes on the embedded broker

URL_VARS = ("MODELYARD_DATABASE_URL", "MODELYARD_BROKER_URL", "MODELYARD_SECRET_KEY")


def _embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in URL_VARS}
    env["MODELYARD_DATA_DIR"] = str(data_dir)
    return env


def _run_worker(data_dir: Path, job_id: str, *pool: str) -> tuple[dict, Path]:
    """A worker on the embedded broker until the job ends: (its final status, the worker's log)."""
    from tasks import producer

    log = data_dir / "worker.log"
    with open(log, "wb") as fh:
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "-Q", "embedding", *pool, "-l", "info"],
            cwd=ROOT,
            env=_embedded_env(data_dir),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        return producer.wait(job_id, timeout=120, poll=0.2), log
    finally:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Path]:
    """This process pointed at an embedded data dir; the previous environment restored after."""
    saved = {name: os.environ.get(name) for name in (*URL_VARS, "MODELYARD_DATA_DIR")}
    apply_env({**dict.fromkeys(URL_VARS), "MODELYARD_DATA_DIR": str(tmp_path)})
    yield tmp_path
    apply_env(saved)


def test_embedding_job_through_the_embedded_broker_and_sqlite(embedded: Path, fake_provider) -> None:
    from models.db import get_engine, session_scope
    from models.migrate import upgrade
    from models.tenants import create_tenant, save_llm
    from tasks import producer

    upgrade(get_engine())
    with session_scope() as s:
        tenant = create_tenant(s, "embedded", defaults=False)
        save_llm(
            s,
            tenant,
            "text-embedding-3-small@OpenAI",
            "embedding",
            api_key="sk-test-valid-key-0001",
            api_base=fake_provider.base_url,
        )
    texts = [f"embedded text {i} about {i % 7}" for i in range(150)]
    job_id = producer.submit_embedding(tenant, "text-embedding-3-small@OpenAI", texts, chunk_size=16)

    final, log = _run_worker(embedded, job_id, "-P", "solo")
    assert final["status"] == "succeeded", log.read_text()
    assert (embedded / "broker.sqlite").exists() and (embedded / "modelyard.sqlite").exists()
    res = producer.results(job_id)
    expected = np.stack([fake_vector(t) for t in texts])
    np.testing.assert_allclose(res.vectors, expected, rtol=1e-6)
    assert final["total_tokens"] == fake_tokens(texts)
    assert "sk-test-valid-key-0001" not in log.read_text()


def test_the_embedded_default_still_limits(embedded: Path, fake_provider) -> None:
    """No Redis: the limiter keeps its state in the SQLite database, and a tenant's limit of 120
    requests a minute spaces the calls half a second apart."""
    from models.db import get_engine, session_scope
    from models.migrate import upgrade
    from models.tenants import create_tenant, save_llm, set_llm_limits
    from tasks import producer

    upgrade(get_engine())
    model = "text-embedding-3-small@OpenAI"
    with session_scope() as s:
        tenant = create_tenant(s, "embedded-limits", defaults=False)
        save_llm(s, tenant, model, "embedding", api_key="sk-test-valid-key-0001", api_base=fake_provider.base_url)
        set_llm_limits(s, tenant, model, "embedding", rpm=120)
    job_id = producer.submit_embedding(tenant, model, [f"limited text {i}" for i in range(24)], chunk_size=4)

    final, log = _run_worker(embedded, job_id, "-P", "threads", "-c", "4")
    assert final["status"] == "succeeded", log.read_text()
    times = sorted(c.time for c in fake_provider.calls if c.route == "embeddings")
    assert len(times) == 6
    # Six calls 0.5 s apart span 2.5 s (four threads with no limit would send them at once).
    assert times[-1] - times[0] >= 2.2, [round(b - a, 2) for a, b in itertools.pairwise(times)]


def test_demo_runs_with_no_server_and_prints_search_hits(tmp_path: Path) -> None:
    """`modelyard demo`: the Builtin model embeds the docs corpus in a worker process, then
    similarity queries find relevant passages."""
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", "demo"],
        check=False,
        cwd=ROOT,
        env=_embedded_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    corpus_line = next(line for line in proc.stderr.splitlines() if line.startswith("corpus:"))
    assert int(corpus_line.split()[1]) >= 200
    assert "succeeded" in proc.stderr
    # The retry question finds a passage about retries among its top hits.
    retry_block = proc.stdout.split("? How are rate limit errors retried?")[1].split("?")[0]
    assert "retr" in retry_block.lower(), proc.stdout
    # Honest numbers: the job's tokens and the queries' are told apart, and add up to the ledger
    # (a fresh data dir: the ledger holds this run only); the solo worker says it runs one task at a time.
    said = " ".join(proc.stderr.split())  # rich wraps long lines at 80 columns
    tokens = re.search(
        r"tokens: the job's ([\d,]+) \((\d+) chunk calls\) \+ the 4 search queries' ([\d,]+) "
        r"\(4 calls",
        said,
    )
    ledger = re.search(r"usage ledger[^:]*: [^:]*: (\d+) calls, ([\d,]+) tokens", said)
    assert tokens and ledger, said[-2000:]
    job_tokens, chunks, query_tokens = int(tokens[1].replace(",", "")), int(tokens[2]), int(tokens[3].replace(",", ""))
    assert query_tokens > 0 and int(ledger[1]) == chunks + 4
    assert int(ledger[2].replace(",", "")) == job_tokens + query_tokens
    assert "pool solo, concurrency 1 (tasks at once)" in (tmp_path / "data" / "demo-worker.log").read_text()
