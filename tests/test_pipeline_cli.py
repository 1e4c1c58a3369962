"""An ingestion pipeline's day with the ``modelyard`` CLI, run as subprocesses against the test
stack's Postgres and Redis (and a real worker calling the fake provider where a job must run):
finding jobs, retrying what failed, the input and output formats pipelines use, idempotency
keys bound to their request, retention, a closed pipe, ``--version`` and ``python -m workers``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, update

from tests.conftest import ROOT, Stack, Worker, apply_env, cli, start_worker
from tests.fakeprovider import FakeProvider, fake_vector
from tests.test_cli import MODEL, assert_one_line_error, embedding_worker, ok_json, tenant_with_model

pytestmark = pytest.mark.services

__all__ = ["embedding_worker"]  # the module-scoped worker fixture, shared with test_cli's shape


def queued_messages(stack: Stack) -> int:
    import redis

    return int(redis.Redis.from_url(stack.redis_url).llen("embedding"))


def count(table, **where: str) -> int:
    from models.db import session_scope

    cond = [getattr(table.c, k) == v for k, v in where.items()]
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(table).where(*cond)).scalar_one()


def submit(name: str, texts: list[str], **kwargs) -> str:
    """Setup: a job submitted in this process (no worker takes it unless one runs)."""
    from tasks import producer

    return producer.submit_embedding(name, MODEL, texts, **kwargs)


# --------------------------------------------------------------------------- the command itself


def test_version_and_python_m_workers_run_the_cli(stack: Stack) -> None:
    """``modelyard --version`` prints the installed version; ``python -m workers`` is the CLI."""
    from importlib.metadata import version

    proc = subprocess.run(
        [sys.executable, "-m", "workers", "--version"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"modelyard {version('modelyard')}"
    helped = subprocess.run(
        [sys.executable, "-m", "workers", "job", "--help"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0 and all(word in helped.stdout for word in ("list", "retry", "delete"))
    assert (ROOT / "tasks" / "py.typed").exists()


def test_job_results_into_a_closed_pipe_exits_quietly(stack: Stack, clean_broker: None) -> None:
    """``modelyard job results J | head -1``: the reader goes away; no error, no traceback."""
    _, name = tenant_with_model()
    job_id = submit(name, [f"text number {i}" for i in range(6000)])  # ~300 KB of lines: more than a pipe holds
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers", "job", "results", job_id],
        cwd=ROOT,
        env={**os.environ, **stack.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = json.loads(proc.stdout.readline())
    proc.stdout.close()  # what `head -1` does after its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as the shell reports for `cat`
    assert first["custom_id"] == "0" and stderr == ""

    # A short output, buffered until exit (as it is unless PYTHONUNBUFFERED is set), into a pipe
    # already closed: the same quiet exit, not "Exception ignored ... BrokenPipeError" and status 120.
    buffered = {k: v for k, v in {**os.environ, **stack.env}.items() if k != "PYTHONUNBUFFERED"}
    small = subprocess.Popen(
        [sys.executable, "-m", "workers", "job", "list", "--json"],
        cwd=ROOT,
        env=buffered,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert small.stdout is not None and small.stderr is not None
    small.stdout.close()
    assert small.stderr.read().decode() == "" and small.wait(timeout=60) == 141


# --------------------------------------------------------------------------- job list


def test_job_list_newest_first_with_filters_counts_and_tokens(stack: Stack, clean_broker: None) -> None:
    tenant_id, name = tenant_with_model()
    older = submit(name, ["one", "two", "three"])
    newer = submit(name, ["four"])
    from tasks import producer

    producer.cancel(older)
    rows = ok_json(cli(stack, "job", "list", "--tenant", name, "--json"))
    assert [r["id"] for r in rows] == [newer, older]
    assert rows[1]["status"] == "cancelled" and rows[1]["items_total"] == 3
    assert {"tenant", "model", "items_succeeded", "items_failed", "total_tokens", "created_at"} <= set(rows[0])
    assert rows[0]["tenant"] == name and rows[0]["model"] == MODEL and rows[0]["total_tokens"] == 0

    assert [
        r["id"] for r in ok_json(cli(stack, "job", "list", "--tenant", tenant_id, "--status", "cancelled", "--json"))
    ] == [older]
    assert [r["id"] for r in ok_json(cli(stack, "job", "list", "--tenant", name, "--limit", "1", "--json"))] == [newer]
    assert len(ok_json(cli(stack, "job", "list", "--tenant", name, "--since", "1h", "--json"))) == 2
    assert ok_json(cli(stack, "job", "list", "--tenant", name, "--since", "2999-01-01", "--json")) == []
    table = cli(stack, "job", "list", "--tenant", name)
    assert table.returncode == 0 and newer in table.stdout and "cancelled" in table.stdout
    assert_one_line_error(cli(stack, "job", "list", "--since", "yesterday-ish"), 2, "--since")
    assert_one_line_error(cli(stack, "job", "list", "--tenant", "no-such-tenant-x"), 3)


# --------------------------------------------------------------------------- idempotency


def test_an_idempotency_key_with_another_input_is_a_conflict_and_writes_nothing(
    stack: Stack, clean_broker: None, tmp_path: Path
) -> None:
    """Same key, same file: the same job. Same key, a different file: one line, exit 4, still one
    job in the database, no items written and nothing more sent to the broker."""
    from models.tables import job_items, jobs

    tenant_id, name = tenant_with_model()
    first_file, second_file = tmp_path / "monday.txt", tmp_path / "tuesday.txt"
    first_file.write_text("alpha\nbeta\ngamma\n")
    second_file.write_text("alpha\nbeta\nDELTA\n")
    args = ("embed", "--tenant", name, "--model", MODEL, "--idempotency-key", "nightly-7", "--json")
    job_id = ok_json(cli(stack, *args, str(first_file)))["job_id"]
    sent = queued_messages(stack)
    again = cli(stack, *args, str(first_file))
    assert ok_json(again)["job_id"] == job_id and "with this same input: that job, not a new one" in again.stderr
    assert ok_json(cli(stack, *args, "--chunk-size", "1", str(first_file)))["job_id"] == job_id  # not part of it

    line = assert_one_line_error(cli(stack, *args, str(second_file)), 4, "nightly-7", job_id, "different request")
    assert "DELTA" not in line
    assert count(jobs, tenant_id=tenant_id) == 1
    assert count(job_items, job_id=job_id) == 3
    assert queued_messages(stack) == sent
    # The same texts as queries are another request too.
    assert_one_line_error(cli(stack, *args, "--queries", str(first_file)), 4, "nightly-7")


# --------------------------------------------------------------------------- inputs


def _items(job_id: str) -> list[tuple[str, str]]:
    from models.db import session_scope
    from models.tables import job_items

    with session_scope() as s:
        return [
            tuple(r)
            for r in s.execute(
                select(job_items.c.custom_id, job_items.c.text)
                .where(job_items.c.job_id == job_id)
                .order_by(job_items.c.seq)
            )
        ]


def test_embed_reads_csv_tsv_parquet_and_openai_batch_request_lines(
    stack: Stack, clean_broker: None, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, name = tenant_with_model()
    embed = ("embed", "--tenant", name, "--model", MODEL, "--json")
    (tmp_path / "docs.csv").write_text(
        'key,body,lang\nd1,"first, with a comma",en\nd2,"two\nlines",en\n\nd3,third,fr\n', encoding="utf-8"
    )
    job = ok_json(cli(stack, *embed, "--text-column", "body", "--id-column", "key", str(tmp_path / "docs.csv")))
    assert _items(job["job_id"]) == [("d1", "first, with a comma"), ("d2", "two\nlines"), ("d3", "third")]

    (tmp_path / "docs.tsv").write_text("text\tsource\nhello tab\tweb\nsecond\tpdf\n", encoding="utf-8")
    job = ok_json(cli(stack, *embed, str(tmp_path / "docs.tsv")))
    assert _items(job["job_id"]) == [("docs.tsv:2", "hello tab"), ("docs.tsv:3", "second")]

    lines = [
        {
            "custom_id": "r-1",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": "batch line one"},
        },
        {
            "custom_id": "r-2",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": ["batch line two"]},
        },
    ]
    (tmp_path / "batch.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    job = ok_json(cli(stack, *embed, str(tmp_path / "batch.jsonl")))
    assert _items(job["job_id"]) == [("r-1", "batch line one"), ("r-2", "batch line two")]

    pq.write_table(
        pa.table({"custom_id": ["p1", "p2"], "text": ["parquet one", "parquet two"]}), tmp_path / "docs.parquet"
    )
    job = ok_json(cli(stack, *embed, str(tmp_path / "docs.parquet")))
    assert _items(job["job_id"]) == [("p1", "parquet one"), ("p2", "parquet two")]


def test_bad_table_inputs_are_one_line_and_write_no_job(stack: Stack, clean_broker: None, tmp_path: Path) -> None:
    from models.tables import jobs

    tenant_id, name = tenant_with_model()
    embed = ("embed", "--tenant", name, "--model", MODEL)
    (tmp_path / "a.csv").write_text("title,body\nx,hello\n")
    assert_one_line_error(cli(stack, *embed, str(tmp_path / "a.csv")), 2, "a.csv", "no column 'text'", "--text-column")
    (tmp_path / "b.csv").write_text(
        "custom_id,text\na,fine\n,\nb,   \n"
    )  # a blank row is skipped, an empty text is not
    assert_one_line_error(cli(stack, *embed, str(tmp_path / "b.csv")), 2, "b.csv:4", "item 'b'", "text is empty")
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"custom_id": "x", "url": "/v1/chat/completions", "body": {"messages": []}}) + "\n"
    )
    assert_one_line_error(cli(stack, *embed, str(tmp_path / "c.jsonl")), 2, "c.jsonl:1", "/v1/embeddings")
    (tmp_path / "d.jsonl").write_text(json.dumps({"custom_id": "x", "body": {"input": ["a", "b"]}}) + "\n")
    assert_one_line_error(cli(stack, *embed, str(tmp_path / "d.jsonl")), 2, "d.jsonl:1", "one text per line")
    assert count(jobs, tenant_id=tenant_id) == 0


def test_parquet_without_the_extra_names_it(stack: Stack, tmp_path: Path) -> None:
    """With pyarrow not importable, reading or writing Parquet is one line naming the extra."""
    shadow = tmp_path / "shadow" / "pyarrow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no pyarrow here')\n")
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    _, name = tenant_with_model()
    env = {**os.environ, **stack.env, "PYTHONPATH": str(tmp_path / "shadow")}
    for args in (
        ("embed", "--tenant", name, "--model", MODEL, str(tmp_path / "x.parquet")),
        ("job", "results", "nojob", "-o", str(tmp_path / "out.parquet")),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "workers", *args],
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert_one_line_error(proc, 2, "parquet extra", "modelyard[parquet]")


# --------------------------------------------------------------------------- retry, outputs, retention


def test_retry_embeds_only_the_failed_items_and_results_read_together(
    stack: Stack, embedding_worker: Worker, fake_provider: FakeProvider, tmp_path: Path
) -> None:
    """One chunk of three fails (a 400 from the provider): the job ends partial. ``job retry``
    makes a job of its two failed items (same custom ids) linked to it; once it succeeds, the
    retry's results -- JSON lines, .npy with its ids file, Parquet -- hold all six items in the
    original order, with one provider call for the retry: nothing that succeeded is embedded again."""
    import pyarrow.parquet as pq

    _, name = tenant_with_model(fake_provider.base_url)
    texts = [f"retry text {i}" for i in range(6)]
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"custom_id": f"c{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    fake_provider.error(400, {"error": {"message": "bad input", "type": "invalid_request_error"}}, path="embeddings")
    proc = cli(
        stack,
        "embed",
        "--tenant",
        name,
        "--model",
        MODEL,
        str(tmp_path / "in.jsonl"),
        "--chunk-size",
        "2",
        "--wait",
        "--json",
    )
    first = json.loads(proc.stdout)
    assert proc.returncode == 5 and first["status"] == "partial" and first["items"]["failed"] == 2
    failed_ids = sorted(e["custom_id"] for e in first["errors"])
    calls_before = fake_provider.count("embeddings")

    retry = ok_json(cli(stack, "job", "retry", first["job_id"], "--json"))
    assert retry["retry_of"] == first["job_id"]
    done = ok_json(cli(stack, "job", "wait", retry["job_id"], "--timeout", "60", "--json"))
    assert done["status"] == "succeeded" and done["items"]["total"] == 2 and done["retry_of"] == first["job_id"]
    assert fake_provider.count("embeddings") == calls_before + 1
    listed = {r["id"]: r for r in ok_json(cli(stack, "job", "list", "--tenant", name, "--json"))}
    assert listed[retry["job_id"]]["retry_of"] == first["job_id"]

    rows = [json.loads(line) for line in cli(stack, "job", "results", retry["job_id"]).stdout.splitlines()]
    assert [r["custom_id"] for r in rows] == [f"c{i}" for i in range(6)]
    assert all(r["status"] == "succeeded" for r in rows)
    np.testing.assert_allclose([r["embedding"] for r in rows], [fake_vector(t) for t in texts], atol=1e-6)
    original = [json.loads(line) for line in cli(stack, "job", "results", first["job_id"]).stdout.splitlines()]
    assert sorted(r["custom_id"] for r in original if r["status"] == "failed") == failed_ids

    npy = tmp_path / "all.npy"
    assert cli(stack, "job", "results", retry["job_id"], "-o", str(npy)).returncode == 0
    np.testing.assert_allclose(np.load(npy), np.stack([fake_vector(t) for t in texts]), rtol=1e-6)
    assert (tmp_path / "all.ids.txt").read_text().splitlines() == [f"c{i}" for i in range(6)]
    parquet = tmp_path / "all.parquet"
    assert cli(stack, "job", "results", retry["job_id"], "-o", str(parquet)).returncode == 0
    table = pq.read_table(parquet)
    assert table.column("custom_id").to_pylist() == [f"c{i}" for i in range(6)]
    np.testing.assert_allclose(
        np.array(table.column("vector").to_pylist()), np.stack([fake_vector(t) for t in texts]), rtol=1e-6
    )
    partial = tmp_path / "first.parquet"  # the original alone: its failed items have no vector
    assert cli(stack, "job", "results", first["job_id"], "-o", str(partial)).returncode == 0
    first_rows = pq.read_table(partial).to_pylist()
    assert sorted(r["custom_id"] for r in first_rows if r["vector"] is None) == failed_ids
    assert {r["error_code"] for r in first_rows if r["vector"] is None} == {"INVALID_REQUEST"}
    jsonl = tmp_path / "all.jsonl"
    assert cli(stack, "job", "results", retry["job_id"], "-o", str(jsonl)).returncode == 0
    assert [json.loads(x)["custom_id"] for x in jsonl.read_text().splitlines()] == [f"c{i}" for i in range(6)]

    assert_one_line_error(cli(stack, "job", "retry", retry["job_id"]), 2, "no failed items")


def test_retention_purges_items_keeps_usage_and_delete_removes_the_job(
    stack: Stack, embedding_worker: Worker, fake_provider: FakeProvider
) -> None:
    """A job past MODELYARD_JOB_RETENTION loses its items and chunks to the beat task; its row
    (counts, tokens) and its usage rows stay. ``job delete`` removes a job, not its usage;
    a job still running cannot be deleted."""
    from models.db import session_scope
    from models.tables import job_chunks, job_items, jobs, usage_events
    from tasks.app import PURGE_TASK
    from tasks.maintenance import purge_expired
    from tasks.producer import wait
    from tasks.runtime import current

    assert any(entry["task"] == PURGE_TASK for entry in current().celery.conf.beat_schedule.values())
    _, name = tenant_with_model(fake_provider.base_url)
    old = submit(name, [f"old {i}" for i in range(10)], chunk_size=3)
    keep = submit(name, [f"recent {i}" for i in range(5)], chunk_size=3)
    assert wait(old, timeout=60)["status"] == wait(keep, timeout=60)["status"] == "succeeded"
    with session_scope() as s:
        s.execute(update(jobs).where(jobs.c.id == old).values(finished_at=jobs.c.finished_at - timedelta(days=8)))
    usage_before = count(usage_events, job_id=old)
    assert usage_before == 4

    apply_env({"MODELYARD_JOB_RETENTION": "7d", "MODELYARD_PURGE_BATCH_ROWS": "3"})
    try:
        assert purge_expired() == 10 + 4
    finally:
        apply_env({"MODELYARD_JOB_RETENTION": None, "MODELYARD_PURGE_BATCH_ROWS": None})
    assert count(job_items, job_id=old) == 0 and count(job_chunks, job_id=old) == 0
    assert count(job_items, job_id=keep) == 5
    assert count(usage_events, job_id=old) == usage_before
    listed = {r["id"]: r for r in ok_json(cli(stack, "job", "list", "--tenant", name, "--json"))}
    assert listed[old]["purged_at"] is not None and listed[old]["items_succeeded"] == 10
    assert_one_line_error(cli(stack, "job", "retry", old), 4, "purged")
    assert_one_line_error(cli(stack, "job", "results", old), 4, "purged")

    deleted = ok_json(cli(stack, "job", "delete", keep, "--json"))
    assert deleted["deleted"] is True
    assert count(jobs, id=keep) == 0 and count(job_items, job_id=keep) == 0
    with session_scope() as s:
        orphans = s.execute(
            select(func.count())
            .select_from(usage_events)
            .where(usage_events.c.job_id.is_(None), usage_events.c.model == MODEL)
        ).scalar_one()
    assert orphans >= 2  # the deleted job's two calls are still in the ledger
    assert_one_line_error(cli(stack, "job", "delete", keep), 3, keep)


def test_a_running_job_cannot_be_deleted(stack: Stack, clean_broker: None) -> None:
    """(A chat job: no worker of this module takes the chat queue, so it stays queued.)"""
    from models.jobs import ItemRow
    from tasks import producer

    _, name = tenant_with_model(model="gpt-4o@OpenAI", model_type="chat")
    job_id = producer.submit(
        name, "chat", "gpt-4o@OpenAI", [ItemRow("a", payload={"messages": [{"role": "user", "content": "hi"}]})]
    )
    assert_one_line_error(cli(stack, "job", "delete", job_id), 4, "cancel it first")


# --------------------------------------------------------------------------- honest numbers


def test_a_solo_worker_says_it_runs_one_task_at_a_time(stack: Stack, clean_broker: None, tmp_path: Path) -> None:
    worker = start_worker(stack, tmp_path, queues="maintenance", pool="solo", concurrency=8)
    try:
        log = worker.log_text()
    finally:
        worker.stop()
    assert "worker: pool solo, concurrency 1 (tasks at once)" in log
    assert "concurrency: 1 (solo)" in log and "concurrency: 8" not in log
