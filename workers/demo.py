"""``modelyard demo``: the whole path on one machine with no server and no API key.

Migrates the (SQLite) database, creates a tenant with the Builtin all-MiniLM-L6-v2 model,
starts a real worker process on the embedded broker, submits the corpus of modelyard's own
docs as a batch embedding job with a progress bar, then answers similarity queries from
the stored vectors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
from rich.console import Console
from rich.markup import escape

from conf.errors import Conflict
from conf.settings import get_settings
from models.bundle import LLMBundle
from models.db import get_engine, session_scope
from models.jobs import ItemRow
from models.migrate import upgrade
from models.tenants import create_tenant, resolve_tenant, save_llm
from models.usage import usage_summary
from tasks import producer
from workers.corpus import passages
from workers.progress import job_progress

MODEL = "all-MiniLM-L6-v2@Builtin"
QUERIES = (
    "How are rate limit errors retried?",
    "Where are API keys stored and how are they protected?",
    "Which providers offer speech to text models?",
    "What happens when a worker is killed in the middle of a job?",
)
console = Console(stderr=True)
out = Console()


def run_demo() -> int:
    settings = get_settings()
    console.print(
        f"[bold]modelyard demo[/] - data in {settings.data_dir} "
        f"({'embedded broker' if settings.embedded_broker else 'configured broker'})"
    )
    upgrade(get_engine())
    tenant_id = _demo_tenant()
    corpus = list(passages())
    console.print(f"corpus: {len(corpus)} passages of modelyard's own docs, docstrings and catalog")

    worker = _start_worker()
    try:
        started = time.perf_counter()
        job_id = producer.submit_embedding(
            tenant_id, MODEL, (ItemRow(custom_id=src, text=text) for src, text in corpus)
        )
        with job_progress() as progress:
            final = producer.wait(job_id, timeout=900, on_progress=progress)
        elapsed = time.perf_counter() - started
    finally:
        _stop_worker(worker)
    items = final["items"]
    console.print(
        f"job {job_id}: {final['status']}, {items['succeeded']} embedded, {items['failed']} failed, "
        f"{final['total_tokens']:,} tokens in {elapsed:.1f}s"
    )
    if final["status"] != "succeeded":
        for err in final["errors"][:5]:
            console.print(f"  {err['custom_id']}: {err['code']}: {err['message']}", markup=False)
        return 1
    query_tokens = _search(tenant_id, job_id, dict(corpus))
    console.print(
        f"tokens: the job's {final['total_tokens']:,} ({final['chunks']['total']} chunk calls) + the "
        f"{len(QUERIES)} search queries' {query_tokens:,} ({len(QUERIES)} calls, billed to the tenant too)"
    )
    with session_scope() as session:
        for row in usage_summary(session, tenant_id):
            console.print(
                f"usage ledger, all of the demo tenant's runs: {row['model']}: {row['calls']} calls, "
                f"{row['total_tokens']:,} tokens; used_tokens {row['used_tokens']:,}"
            )
    return 0


def _demo_tenant() -> str:
    with session_scope() as session:
        try:
            tenant_id = create_tenant(session, "demo")
        except Conflict:
            tenant_id = resolve_tenant(session, "demo")
    with session_scope() as session:
        save_llm(session, tenant_id, MODEL, "embedding")
    return tenant_id


def _start_worker() -> subprocess.Popen[bytes]:
    log = get_settings().data_dir / "demo-worker.log"
    console.print(f"starting a worker process (log: {log})")
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.cli",
                "worker",
                "-Q",
                "embedding,maintenance",
                "-P",
                "solo",
                "-l",
                "info",
                "-n",
                f"demo-{os.getpid()}@%h",
                "--no-restart",
            ],  # the demo stops it itself
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)  # warm shutdown: finish the current task, then exit
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _search(tenant_id: str, job_id: str, texts: dict[str, str]) -> int:
    """Answer the queries from the job's vectors; returns the tokens the queries' embeddings used."""
    res = producer.results(job_id)
    tokens = 0
    with session_scope() as session:
        bundle = LLMBundle.open(session, tenant_id, "embedding", MODEL)
    for query in QUERIES:
        q = bundle.encode_queries(query)
        tokens += q.usage.total_tokens
        with session_scope() as session:
            bundle.record_usage(session, q.usage, task_attempt=f"demo-query:{uuid.uuid4().hex}")
        scores = res.vectors @ q.vectors[0]
        out.print(f"\n[bold]? {query}[/]")
        for idx in np.argsort(-scores)[:3]:
            cid = res.custom_ids[idx]
            out.print(
                f"  {scores[idx]:.3f}  [dim]{escape(cid)}[/]\n         {escape(texts[cid][:160])}", highlight=False
            )
    return tokens
