"""The ``modelyard`` command line, run as a user runs it: a subprocess per command against the
test stack's Postgres and Redis (and, for ``embed``, a real worker calling the fake provider).

What it proves: ``--json`` output that scripts can rely on; keys that come in on standard input
and never come out again; ``embed`` reading .txt, .jsonl and stdin; refused inputs creating no
job; and every error being one line on stderr (no traceback) with the documented exit code
(2 bad request, 3 not found, 4 conflict).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from tests.conftest import Stack, Worker, cli, empty_broker, start_worker
from tests.fakeprovider import FakeProvider, fake_tokens, fake_vector

pytestmark = pytest.mark.services

KEY = "sk-test-valid-key-0001"
MODEL = "text-embedding-3-small@OpenAI"


def ok_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstderr: {proc.stderr[-3000:]}\nstdout: {proc.stdout[-2000:]}"
    return json.loads(proc.stdout)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], exit_code: int, *needles: str) -> str:
    """Exactly one line on stderr, no traceback, nothing on stdout, the given exit code."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == exit_code, f"exit {proc.returncode}, expected {exit_code}; stderr: {proc.stderr[-3000:]}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("modelyard: error: "), lines[0]
    assert proc.stdout == ""
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def new_tenant(stack: Stack) -> tuple[str, str]:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    return ok_json(cli(stack, "tenant", "create", name, "--json"))["id"], name


def tenant_with_model(
    base_url: str = "http://127.0.0.1:9/v1", model: str = MODEL, model_type: str = "embedding"
) -> tuple[str, str]:
    """A tenant (id, name) with ``model`` configured, made in this process: setup, not the subject."""
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm

    name = f"cli-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        tenant_id = create_tenant(s, name, defaults=False)
        save_llm(s, tenant_id, model, model_type, api_key=KEY, api_base=base_url)
    return tenant_id, name


@pytest.fixture(scope="module")
def embedding_worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker on the embedding queue for this module's ``embed`` tests (an empty broker first)."""
    empty_broker(stack.redis_url)
    worker = start_worker(stack, tmp_path_factory.mktemp("cli-worker"), queues="embedding", concurrency=2)
    yield worker
    worker.stop()
    empty_broker(stack.redis_url)
    assert KEY not in worker.log_text()


def jobs_of(tenant_id: str) -> int:
    from models.db import session_scope
    from models.tables import jobs

    with session_scope() as s:
        return s.execute(select(func.count()).select_from(jobs).where(jobs.c.tenant_id == tenant_id)).scalar_one()


# --------------------------------------------------------------------------- admin commands


def test_db_upgrade_json_reports_the_catalog_and_is_repeatable(stack: Stack) -> None:
    """``db upgrade --json`` on an already-current schema succeeds and reports the catalog it loaded."""
    out = ok_json(cli(stack, "db", "upgrade", "--json"))
    assert out["status"] == "ok"
    assert out["factories"] > 10 and out["models"] > 100


def test_tenant_create_prints_its_id_and_a_duplicate_is_one_line_conflict(stack: Stack) -> None:
    """``tenant create NAME --json`` prints ``{"id": ...}`` of a row that exists; the same name
    again is refused with exit 4 and one line naming the tenant."""
    tenant_id, name = new_tenant(stack)
    listed = ok_json(cli(stack, "tenant", "list", "--json"))
    assert {"id": tenant_id, "name": name} in [{"id": t["id"], "name": t["name"]} for t in listed]
    assert_one_line_error(cli(stack, "tenant", "create", name, "--json"), 4, name, "already exists")


def test_factories_json_separates_supported_from_catalog_only_types(stack: Stack) -> None:
    """OpenAI's chat/embedding/vision/speech/tts are supported; MinerU is in the catalog (ocr, a type
    modelyard does not run) with no provider class, so it is listed as unsupported; only Builtin is internal."""
    rows = {r["name"]: r for r in ok_json(cli(stack, "factories", "--json"))}
    openai = rows["OpenAI"]
    assert {"chat", "embedding", "image2text", "speech2text", "tts"} <= set(openai["supported_types"])
    assert openai["unsupported_types"] == [] and openai["internal"] is False
    mineru = rows["MinerU"]
    assert mineru["catalog_types"] == ["ocr"]
    assert mineru["supported_types"] == [] and mineru["unsupported_types"] == ["ocr"]
    assert rows["Builtin"]["internal"] is True and "embedding" in rows["Builtin"]["supported_types"]
    assert [name for name, r in rows.items() if r["internal"]] == ["Builtin"]


def test_llm_add_disable_enable_delete_with_the_key_on_stdin(stack: Stack, fake_provider: FakeProvider) -> None:
    """A model's life cycle through the CLI: the key is read from stdin (``--api-key -``), tested
    with one real call, stored encrypted, and never printed by ``llm``/``my-llms`` (only its last
    four characters); disable/enable flip its status; delete removes it, and deleting it again is
    a one-line not-found."""
    from models.db import session_scope
    from models.tables import tenant_llm
    from models.tenants import create_tenant, load_key

    name = f"cli-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        tenant_id = create_tenant(s, name, defaults=False)
    base = fake_provider.base_url
    proc = cli(
        stack,
        "llm",
        "add",
        "--tenant",
        name,
        "--model",
        MODEL,
        "--type",
        "embedding",
        "--api-key",
        "-",
        "--base-url",
        base,
        "--json",
        stdin=KEY + "\n",
    )
    added = ok_json(proc)
    assert KEY not in proc.stdout + proc.stderr
    assert added["model"] == MODEL and added["status"] == "enabled" and added["has_key"] is True
    assert added["api_base"] == base and added["max_tokens"] > 0  # from the catalog
    assert added["key_state"] == "valid" and added["key_hint"] == KEY[-4:]
    assert [c.route for c in fake_provider.calls] == ["embeddings"]  # the key was tested once
    with session_scope() as s:
        row = s.execute(select(tenant_llm).where(tenant_llm.c.tenant_id == tenant_id)).one()
        assert KEY not in row.api_key_enc
        assert load_key(s, row.id)[0] == KEY

    listing = cli(stack, "my-llms", "--tenant", tenant_id, "--json")
    grouped = ok_json(listing)
    assert [(m["model"], m["type"], m["status"], m["has_key"]) for m in grouped["OpenAI"]] == [
        (MODEL, "embedding", "enabled", True)
    ]
    assert KEY not in listing.stdout and "api_key" not in listing.stdout

    flags = ["--tenant", name, "--model", MODEL, "--type", "embedding", "--json"]
    assert ok_json(cli(stack, "llm", "disable", *flags))["status"] == "disabled"
    assert ok_json(cli(stack, "my-llms", "--tenant", name, "--json"))["OpenAI"][0]["status"] == "disabled"
    assert ok_json(cli(stack, "llm", "enable", *flags))["status"] == "enabled"
    assert ok_json(cli(stack, "llm", "delete", *flags)) == {"model": MODEL, "type": "embedding", "deleted": True}
    assert ok_json(cli(stack, "my-llms", "--tenant", name, "--json")) == {}
    assert_one_line_error(cli(stack, "llm", "delete", *flags), 3, MODEL)


def test_llm_add_refusals_are_one_line(stack: Stack) -> None:
    """An empty stdin for ``--api-key -``, a catalog-only (unsupported) factory and type, a factory
    not in the catalog and an unknown tenant each give one line and the right exit code; nothing
    is added."""
    from models.db import session_scope
    from models.tenants import create_tenant, list_tenant_models

    name = f"cli-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        tenant_id = create_tenant(s, name, defaults=False)
    assert_one_line_error(
        cli(
            stack,
            "llm",
            "add",
            "--tenant",
            name,
            "--model",
            MODEL,
            "--type",
            "embedding",
            "--api-key",
            "-",
            "--json",
            stdin="",
        ),
        2,
        "standard input",
    )
    assert_one_line_error(
        cli(
            stack,
            "llm",
            "add",
            "--tenant",
            name,
            "--model",
            "asr@Tencent Cloud",
            "--type",
            "speech2text",
            "--api-key",
            "k",
            "--json",
        ),
        2,
        "Tencent Cloud",
    )
    assert_one_line_error(
        cli(
            stack,
            "llm",
            "add",
            "--tenant",
            name,
            "--model",
            "m@NoSuchFactory",
            "--type",
            "embedding",
            "--api-key",
            "k",
            "--json",
        ),
        3,
        "NoSuchFactory",
    )
    assert_one_line_error(cli(stack, "my-llms", "--tenant", "no-such-tenant", "--json"), 3, "no-such-tenant")
    with session_scope() as s:
        assert list_tenant_models(s, tenant_id) == []


# --------------------------------------------------------------------------- embed and jobs


def test_embed_files_wait_then_status_results_and_usage(
    stack: Stack, embedding_worker: Worker, fake_provider: FakeProvider, tmp_path: Path
) -> None:
    """``embed a.txt b.jsonl --wait --json`` with a worker running prints the job id and its final
    status; ``job status|wait|results`` and ``results -o out.npy`` return the fake's vectors in
    input order with the right custom ids; ``usage`` shows the tokens the fake reported."""
    tenant_id, name = tenant_with_model(fake_provider.base_url)
    (tmp_path / "a.txt").write_text("alpha text one\n\nbeta text two\ngamma three\n")
    (tmp_path / "b.jsonl").write_text(
        '{"custom_id": "doc-1", "text": "delta four words here"}\n\n{"custom_id": "doc-2", "text": "epsilon"}\n'
    )
    texts = ["alpha text one", "beta text two", "gamma three", "delta four words here", "epsilon"]
    ids = ["a.txt:1", "a.txt:3", "a.txt:4", "doc-1", "doc-2"]

    proc = cli(
        stack,
        "embed",
        "--tenant",
        name,
        "--model",
        MODEL,
        str(tmp_path / "a.txt"),
        str(tmp_path / "b.jsonl"),
        "--wait",
        "--json",
        "--chunk-size",
        "2",
    )
    final = ok_json(proc)
    job_id = final["job_id"]
    assert final["status"] == "succeeded" and final["id"] == job_id
    assert final["items"] == {"total": 5, "succeeded": 5, "failed": 0, "pending": 0}
    assert final["chunks"] == {"total": 3, "done": 3}
    assert KEY not in proc.stdout + proc.stderr

    assert ok_json(cli(stack, "job", "status", job_id, "--json"))["status"] == "succeeded"
    assert ok_json(cli(stack, "job", "wait", job_id, "--timeout", "30", "--json"))["total_tokens"] == fake_tokens(texts)

    lines = cli(stack, "job", "results", job_id, "--json")
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert lines.returncode == 0 and [r["custom_id"] for r in rows] == ids
    for row, text in zip(rows, texts, strict=True):
        assert row["status"] == "succeeded"
        np.testing.assert_allclose(row["embedding"], fake_vector(text), atol=1e-6)

    out = tmp_path / "out.npy"
    assert cli(stack, "job", "results", job_id, "-o", str(out)).returncode == 0
    np.testing.assert_allclose(np.load(out), np.stack([fake_vector(t) for t in texts]), rtol=1e-6)

    usage = ok_json(cli(stack, "usage", "--tenant", tenant_id, "--json"))
    assert usage == [
        {
            "model": MODEL,
            "model_type": "embedding",
            "calls": 3,
            "cached_calls": 0,
            "prompt_tokens": fake_tokens(texts),
            "completion_tokens": 0,
            "total_tokens": fake_tokens(texts),
            "cached_tokens": 0,
            "estimated_calls": 0,
            "unpriced_calls": 0,
            "cost": pytest.approx(fake_tokens(texts) * 2e-8),  # the catalog's published price
            "used_tokens": fake_tokens(texts),
        }
    ]


def test_embed_reads_standard_input(stack: Stack, embedding_worker: Worker, fake_provider: FakeProvider) -> None:
    """``embed ... -`` reads texts (or JSON lines) from stdin; without ``--wait`` it prints only the
    job id, and ``job wait`` then sees it through."""
    _, name = tenant_with_model(fake_provider.base_url)
    submitted = ok_json(
        cli(
            stack,
            "embed",
            "--tenant",
            name,
            "--model",
            MODEL,
            "-",
            "--json",
            stdin="first line from a pipe\nsecond line\n",
        )
    )
    assert list(submitted) == ["job_id"]
    final = ok_json(cli(stack, "job", "wait", submitted["job_id"], "--timeout", "60", "--json"))
    assert final["status"] == "succeeded" and final["items"]["succeeded"] == 2
    rows = [json.loads(line) for line in cli(stack, "job", "results", submitted["job_id"]).stdout.splitlines()]
    assert [r["custom_id"] for r in rows] == ["stdin:1", "stdin:2"]
    np.testing.assert_allclose(rows[1]["embedding"], fake_vector("second line"), atol=1e-6)

    jsonl = ok_json(
        cli(
            stack,
            "embed",
            "--tenant",
            name,
            "--model",
            MODEL,
            "-",
            "--wait",
            "--json",
            stdin='{"custom_id": "q", "text": "piped json"}\n',
        )
    )
    assert jsonl["status"] == "succeeded" and jsonl["items"]["total"] == 1


@pytest.mark.parametrize(
    ("filename", "content", "exit_code", "needle"),
    [
        (None, None, 3, "no such file"),
        ("bad.jsonl", '{"text": "fine"}\n{"text": "broken\n', 2, "bad.jsonl:2: not valid JSON"),
        (
            "empty.jsonl",
            '{"text": "fine"}\n{"custom_id": "e", "text": "   "}\n',
            2,
            "empty.jsonl:2 (item 'e'): text is empty",
        ),
        ("notext.jsonl", '{"custom_id": "x", "body": "no text key"}\n', 2, 'expected an object with "text"'),
        ("table.xlsx", "a,b\n", 2, "expected a .txt, .jsonl, .csv, .tsv or .parquet file"),
    ],
    ids=["missing-file", "bad-json-line", "empty-text", "no-text-field", "wrong-extension"],
)
def test_bad_embed_input_is_one_line_and_creates_no_job(
    stack: Stack, tmp_path: Path, filename: str | None, content: str | None, exit_code: int, needle: str
) -> None:
    """A bad input anywhere (even after a good file and good lines) refuses the whole submission:
    one line on stderr that names the problem, a non-zero exit, and no job row for the tenant."""
    tenant_id, name = tenant_with_model()
    good = tmp_path / "good.txt"
    good.write_text("a good line\n")
    path = tmp_path / (filename or "missing.txt")
    if content is not None:
        path.write_text(content)
    proc = cli(stack, "embed", "--tenant", name, "--model", MODEL, str(good), str(path), "--json")
    assert_one_line_error(proc, exit_code, needle)
    assert jobs_of(tenant_id) == 0


def test_embed_with_a_disabled_model_is_refused(stack: Stack, tmp_path: Path) -> None:
    """A disabled model takes no new jobs: one line naming it, exit 2, no job."""
    from models.db import session_scope
    from models.tenants import set_llm_status

    tenant_id, name = tenant_with_model()
    with session_scope() as s:
        set_llm_status(s, tenant_id, MODEL, "embedding", enabled=False)
    (tmp_path / "a.txt").write_text("text\n")
    assert_one_line_error(
        cli(stack, "embed", "--tenant", name, "--model", MODEL, str(tmp_path / "a.txt")), 2, "disabled"
    )
    assert jobs_of(tenant_id) == 0


def test_job_cancel_of_a_queued_job(stack: Stack) -> None:
    """A job nobody consumes (a chat job: no chat worker in this module) stays queued;
    ``job cancel --json`` prints it cancelled with its items cancelled, and cancelling again is harmless."""
    from models.jobs import ItemRow
    from tasks import producer

    tenant_id, _ = tenant_with_model(model="gpt-4o-mini@OpenAI", model_type="chat")
    items = [ItemRow(f"m{i}", payload={"messages": [{"role": "user", "content": f"question {i}"}]}) for i in range(3)]
    job_id = producer.submit(tenant_id, "chat", "gpt-4o-mini@OpenAI", items)
    assert ok_json(cli(stack, "job", "status", job_id, "--json"))["status"] == "queued"
    cancelled = ok_json(cli(stack, "job", "cancel", job_id, "--json"))
    assert cancelled["status"] == "cancelled" and cancelled["items"]["succeeded"] == 0
    assert ok_json(cli(stack, "job", "cancel", job_id, "--json"))["status"] == "cancelled"
    rows = [json.loads(line) for line in cli(stack, "job", "results", job_id).stdout.splitlines()]
    assert [(r["custom_id"], r["status"]) for r in rows] == [
        ("m0", "cancelled"),
        ("m1", "cancelled"),
        ("m2", "cancelled"),
    ]


@pytest.mark.parametrize("action", ["status", "wait", "results", "cancel"])
def test_unknown_job_is_exit_3_with_one_line(stack: Stack, action: str) -> None:
    """Every ``job`` action on an id that does not exist: exit 3, one line naming the id."""
    assert_one_line_error(cli(stack, "job", action, "no-such-job", "--json"), 3, "no-such-job")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["llm", "add", "--tenant", "t"], "required: --model, --type"),
        (["worker", "-P", "gevent"], "invalid choice: 'gevent'"),
        (["job", "status"], "required: JOB"),
    ],
    ids=["missing-options", "bad-choice", "missing-argument"],
)
def test_usage_errors_are_one_line_too(stack: Stack, argv: list[str], needle: str) -> None:
    """A command line argparse rejects is reported like any other error: one line (not the usage
    block), exit 2, pointing at the subcommand's --help."""
    line = assert_one_line_error(cli(stack, *argv), 2, needle)
    assert f"modelyard {argv[0]}" in line and "--help" in line


def test_limits_are_set_changed_cleared_and_shown(stack: Stack, fake_provider: FakeProvider) -> None:
    tenant, _ = new_tenant(stack)
    added = ok_json(
        cli(
            stack,
            "llm",
            "add",
            "--tenant",
            tenant,
            "--model",
            MODEL,
            "--type",
            "embedding",
            "--api-key",
            "-",
            "--base-url",
            fake_provider.base_url,
            "--rpm",
            "600",
            "--max-concurrency",
            "3",
            "--json",
            stdin=KEY + "\n",
        )
    )
    assert added["limits"] == {"rpm": 600, "tpm": None, "max_concurrency": 3}
    changed = ok_json(
        cli(
            stack,
            "llm",
            "set-limits",
            "--tenant",
            tenant,
            "--model",
            MODEL,
            "--type",
            "embedding",
            "--tpm",
            "90000",
            "--rpm",
            "0",
            "--json",
        )
    )
    assert changed["limits"] == {"rpm": None, "tpm": 90000, "max_concurrency": 3}
    rows = ok_json(cli(stack, "limits", "--tenant", tenant, "--json"))
    (row,) = [r for r in rows if r["model"] == MODEL]  # beside the tenant's default (Builtin) model
    assert row["configured"] == {"tpm": 90000, "concurrency": 3}
    assert row["in_force"] == {"rpm": None, "tpm": 90000, "rpm_source": None} and row["paused_for"] is None
    assert len(row["key"]) == 8 and KEY not in json.dumps(row)
    table = cli(stack, "limits", "--tenant", tenant)
    assert table.returncode == 0 and "90000 tpm" in table.stdout and KEY not in table.stdout


@pytest.mark.parametrize("argv", [["--rpm", "-5"], ["--tpm", "many"], ["--max-concurrency", str(2**40)]])
def test_bad_limits_are_one_line_and_change_nothing(stack: Stack, argv: list[str]) -> None:
    tenant, _ = new_tenant(stack)
    proc = cli(stack, "llm", "set-limits", "--tenant", tenant, "--model", MODEL, "--type", "embedding", *argv)
    assert_one_line_error(proc, 2, argv[0])
    missing = cli(
        stack, "llm", "set-limits", "--tenant", tenant, "--model", "nope@OpenAI", "--type", "chat", "--rpm", "5"
    )
    assert_one_line_error(missing, 3)
