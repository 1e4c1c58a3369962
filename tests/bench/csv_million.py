"""The ingestion pipeline's benchmark: a big CSV through the CLI, its results out to .npy and
Parquet, then its million items purged while another job runs.

    python -m tests.bench.csv_million --rows 1000000 --workers 2 --chunk-size 256 --dim 16

Every step is the ``modelyard`` CLI in its own process (``python -m workers ...``), as a pipeline
runs it; each one's peak RSS is sampled from /proc every 100 ms, so "producer memory stays
flat" is a number per step. Results are checked: the .npy rows and the Parquet vectors equal
``fake_vector(text)`` for 1,000 sampled rows, and the ids file has one custom id per row.

Retention: with the million-item job finished, a second job (``--other-rows``) runs alone for
a baseline, then again while ``job delete`` removes the first job's items in batches of
``MODELYARD_PURGE_BATCH_ROWS``; both runs' times and the purge's are reported.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from tests.bench.pipeline import API_KEY, MB, RssSampler, configure_tenant, text_for
from tests.bench.run import machine, make_stack
from tests.conftest import ROOT, apply_env, start_worker
from tests.fakeprovider import fake_vector, spawn_fake_provider

MODEL = "text-embedding-3-small@OpenAI"


def run_cli(env: dict[str, str], *args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stdout) of one ``python -m workers ARGS`` process."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with RssSampler([proc.pid], tree=False) as rss:
        out, err = proc.communicate()
    if proc.returncode not in (0, 5):
        raise RuntimeError(f"modelyard {' '.join(args)} exited {proc.returncode}: {err[-2000:]}")
    return time.perf_counter() - started, rss.peak_total / MB, out


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["doc_id", "body"])
        for i in range(rows):
            writer.writerow([f"doc-{i}", text_for(i)])


def wait_job(job_id: str, timeout: float) -> tuple[float, dict]:
    from tasks import producer

    started = time.perf_counter()
    final = producer.wait(job_id, timeout=timeout, poll=1.0)
    return time.perf_counter() - started, final


def items_bytes() -> int:
    """``job_items`` with its TOAST and indexes, on disk (Postgres)."""
    from sqlalchemy import text

    from models.db import session_scope

    with session_scope() as session:
        return int(session.scalar(text("SELECT pg_total_relation_size('job_items')")))


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (5 min {five:.1f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--other-rows", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--purge-batch", type=int, default=5000)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="modelyard-bench-csv-"))
    stack = make_stack(tmp / "data")
    env = {**os.environ, **stack.env, "MODELYARD_PURGE_BATCH_ROWS": str(args.purge_batch)}
    apply_env({**stack.env, "MODELYARD_PURGE_BATCH_ROWS": str(args.purge_batch)})
    print(f"machine: {machine()}; load at start {load()}")
    rows: list[str] = []
    with spawn_fake_provider(dim=args.dim, keys=[API_KEY]) as fake:
        tenant = configure_tenant(fake.base_url)
        workers = [
            start_worker(stack, tmp, queues="embedding", pool="threads", concurrency=args.concurrency)
            for _ in range(args.workers)
        ]
        try:
            src = tmp / "input.csv"
            write_csv(src, args.rows)
            size_mb = src.stat().st_size / MB
            secs, peak, out = run_cli(
                env,
                "embed",
                "--tenant",
                tenant,
                "--model",
                MODEL,
                str(src),
                "--text-column",
                "body",
                "--id-column",
                "doc_id",
                "--chunk-size",
                str(args.chunk_size),
            )
            job_id = out.strip()
            rows.append(
                f"| submit `embed input.csv` ({size_mb:,.0f} MB) | {secs:,.1f} | {peak:,.0f} | "
                f"{args.rows / secs:,.0f} rows/s; load {load()} |"
            )
            secs, final = wait_job(job_id, timeout=7200)
            assert final["status"] == "succeeded", final["status"]
            rows.append(
                f"| job runs ({args.workers} workers x threads -c {args.concurrency}, chunks of "
                f"{args.chunk_size}) | {secs:,.1f} | - | {args.rows / secs:,.0f} items/s; load {load()} |"
            )

            rows.append(
                f"| `job_items` on disk after the job (dim {args.dim}) | - | - | {items_bytes() / MB:,.0f} MB "
                f"= {items_bytes() / args.rows:,.0f} bytes per text |"
            )

            npy = tmp / "out.npy"
            secs, peak, _ = run_cli(env, "job", "results", job_id, "-o", str(npy))
            rows.append(
                f"| `job results -o out.npy` (+ out.ids.txt) | {secs:,.1f} | {peak:,.0f} | "
                f"{npy.stat().st_size / MB:,.0f} MB; load {load()} |"
            )
            vectors = np.load(npy, mmap_mode="r")
            ids = (tmp / "out.ids.txt").read_text().splitlines()
            sample = np.random.default_rng(7).choice(args.rows, size=min(1000, args.rows), replace=False)
            assert vectors.shape == (args.rows, args.dim) and len(ids) == args.rows
            for i in sample:
                assert ids[i] == f"doc-{i}"
                np.testing.assert_allclose(vectors[i], fake_vector(text_for(int(i)), args.dim), rtol=1e-6)
            del vectors, ids

            parquet = tmp / "out.parquet"
            secs, peak, _ = run_cli(env, "job", "results", job_id, "-o", str(parquet))
            rows.append(
                f"| `job results -o out.parquet` | {secs:,.1f} | {peak:,.0f} | "
                f"{parquet.stat().st_size / MB:,.0f} MB; load {load()} |"
            )
            import pyarrow.parquet as pq

            table = pq.read_table(parquet, columns=["custom_id", "vector"])
            for i in sample[:200]:
                assert table.column("custom_id")[int(i)].as_py() == f"doc-{i}"
                np.testing.assert_allclose(
                    table.column("vector")[int(i)].as_py(), fake_vector(text_for(int(i)), args.dim), rtol=1e-6
                )
            del table

            other = [text_for(10_000_000 + i) for i in range(args.other_rows)]
            other_file = tmp / "other.txt"
            other_file.write_text("\n".join(other) + "\n")
            _, _, out = run_cli(env, "embed", "--tenant", tenant, "--model", MODEL, str(other_file))
            baseline, _ = wait_job(out.strip(), timeout=3600)
            _, _, out = run_cli(
                env,
                "embed",
                "--tenant",
                tenant,
                "--model",
                MODEL,
                str(other_file),
                "--idempotency-key",
                uuid.uuid4().hex,
            )
            other_id = out.strip()
            purge_started = time.perf_counter()
            purge = subprocess.Popen(
                [sys.executable, "-m", "workers", "job", "delete", job_id],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            during, final = wait_job(other_id, timeout=3600)
            purge_out, purge_err = purge.communicate()
            purge_secs = time.perf_counter() - purge_started
            assert purge.returncode == 0, purge_err
            assert final["status"] == "succeeded"
            rows.append(
                f"| `job delete` ({args.rows:,} items, batches of {args.purge_batch:,}) | {purge_secs:,.1f} | - "
                f"| {purge_out.strip()}; load {load()} |"
            )
            rows.append(
                f"| another job of {args.other_rows:,} texts: alone / while the purge runs | "
                f"{baseline:,.1f} / {during:,.1f} | - | it finished during the purge: "
                f"{'yes' if during < purge_secs else 'no (purge ended first)'} |"
            )
        finally:
            for w in workers:
                w.stop()
    print("| step | seconds | peak RSS MB (that process) | note |\n|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
