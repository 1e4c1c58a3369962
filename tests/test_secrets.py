"""The tenant's API key stays secret: not in task messages (Flower shows their arguments), not
at rest in plain text, not in stored errors, job status, worker logs or CLI output.

The key used here is one the fake provider accepts; the error test makes the provider repeat
it verbatim in its error body, the way some real providers do.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import select

from tests.conftest import Stack, cli
from tests.fakeprovider import FakeProvider

pytestmark = pytest.mark.services

KEY = "sk-test-valid-key-0001"
KEY_TAIL = "valid-key-0001"  # a key half-masked is still a leak
MODEL = "text-embedding-3-small@OpenAI"


def assert_no_key(text: str, where: str) -> None:
    assert KEY not in text, f"the API key is in {where}"
    assert KEY_TAIL not in text, f"part of the API key is in {where}"


def make_tenant(base_url: str) -> str:
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm

    with session_scope() as session:
        tenant_id = create_tenant(session, f"secrets-{uuid.uuid4().hex[:10]}", defaults=False)
        save_llm(session, tenant_id, MODEL, "embedding", api_key=KEY, api_base=base_url)
    return tenant_id


def redis_dump(url: str) -> str:
    """Everything in the broker's Redis database, as one string."""
    client = redis.Redis.from_url(url)
    parts: list[bytes] = []
    for name in client.scan_iter():
        kind = client.type(name)
        parts.append(name)
        if kind == b"string":
            parts.append(client.get(name) or b"")
        elif kind == b"list":
            parts.extend(client.lrange(name, 0, -1))
        elif kind == b"hash":
            for field, value in client.hgetall(name).items():
                parts += [field, value]
        elif kind == b"set":
            parts.extend(client.smembers(name))
        elif kind == b"zset":
            parts.extend(client.zrange(name, 0, -1))
    return b"\n".join(parts).decode("utf-8", errors="replace")


def test_task_messages_carry_the_chunk_id_only(stack: Stack, clean_broker: None, fake_provider: FakeProvider) -> None:
    """With no worker running, the messages a submit sends sit in the ``embedding`` list: each
    one's body is ``[[chunk_id], {"release": 1}, ...]`` for a chunk the job released, and neither the raw
    message nor its decoded body holds the key or the texts."""
    from models.db import session_scope
    from models.tables import job_chunks
    from tasks import producer

    tenant = make_tenant(fake_provider.base_url)
    texts = [f"confidential passage {i}" for i in range(12)]
    job_id = producer.submit_embedding(tenant, MODEL, texts, chunk_size=4)

    raw_messages = redis.Redis.from_url(stack.redis_url).lrange("embedding", 0, -1)
    assert len(raw_messages) == 3
    sent_ids = []
    for raw in raw_messages:
        text = raw.decode()
        message = json.loads(text)
        body = (
            base64.b64decode(message["body"]).decode()
            if message.get("properties", {}).get("body_encoding") == "base64"
            else message["body"]
        )
        args, kwargs, _embed = json.loads(body)
        assert set(kwargs) == {"release"} and kwargs["release"] == 1
        assert len(args) == 1 and isinstance(args[0], int)
        sent_ids.append(args[0])
        for blob, where in ((text, "a raw task message"), (body, "a task body")):
            assert_no_key(blob, where)
            assert "confidential" not in blob, f"input text is in {where}"
    with session_scope() as session:
        released = set(
            session.scalars(
                select(job_chunks.c.id).where(job_chunks.c.job_id == job_id, job_chunks.c.status == "queued")
            )
        )
    assert sorted(sent_ids) == sorted(released)
    assert_no_key(redis_dump(stack.redis_url), "the broker")


def test_key_at_rest_is_encrypted(stack: Stack, fake_provider: FakeProvider) -> None:
    """``tenant_llm.api_key_enc`` is a Fernet token under MODELYARD_SECRET_KEY: not the key, not
    an encoding of it, and it decrypts back to the key."""
    from models import crypto
    from models.db import session_scope
    from models.tables import tenant_llm

    tenant = make_tenant(fake_provider.base_url)
    with session_scope() as session:
        stored = session.scalar(select(tenant_llm.c.api_key_enc).where(tenant_llm.c.tenant_id == tenant))
    assert stored and stored != KEY
    assert_no_key(stored, "api_key_enc")
    assert_no_key(base64.urlsafe_b64decode(stored + "=" * (-len(stored) % 4)).decode("latin-1"), "decoded api_key_enc")
    assert crypto.decrypt(stored) == KEY


def test_provider_error_that_echoes_the_key_is_scrubbed_everywhere(
    stack: Stack, worker_factory, fake_provider: FakeProvider
) -> None:
    """The provider answers 400 with the key in its error message. The job fails with the
    provider's message kept but the key removed: in the stored item error, in ``status()``, in
    ``job status --json`` and ``job results``, in the worker's log, and in the broker."""
    from models.db import session_scope
    from models.tables import job_items
    from tasks import producer

    tenant = make_tenant(fake_provider.base_url)
    worker = worker_factory(concurrency=2)
    fake_provider.echo_key_in_error(path="embeddings")
    job_id = producer.submit_embedding(tenant, MODEL, ["a passage", "another passage"])
    final = producer.wait(job_id, timeout=60, poll=0.1)

    assert final["status"] == "failed", final
    assert [c.behaviour for c in fake_provider.calls] == ["echo_key_in_error"]
    with session_scope() as session:
        stored = session.execute(
            select(job_items.c.error_code, job_items.c.error_message).where(job_items.c.job_id == job_id)
        ).all()
    assert {code for code, _ in stored} == {"INVALID_REQUEST"}
    for _, message in stored:
        assert "may not use model" in message  # the provider's message is kept ...
        assert_no_key(message, "the stored item error")  # ... without the key
    assert_no_key(json.dumps(producer.status(job_id)), "status()")

    status = cli(stack, "job", "status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["errors"][0]["code"] == "INVALID_REQUEST"
    assert_no_key(status.stdout + status.stderr, "`job status --json`")
    results = cli(stack, "job", "results", job_id)
    assert results.returncode == 0, results.stderr
    assert_no_key(results.stdout + results.stderr, "`job results`")

    log = worker.log_text()
    assert "may not use model" in log  # the failure was logged ...
    assert_no_key(log, "the worker log")  # ... without the key
    assert_no_key(redis_dump(stack.redis_url), "the broker")


def test_cli_never_prints_the_key(stack: Stack, clean_broker: None, fake_provider: FakeProvider) -> None:
    """Configuring the key through the CLI, then listing the tenant's models and a job: no
    output (JSON or table, stdout or stderr) contains the key."""
    from models.db import session_scope
    from models.tenants import create_tenant
    from tasks import producer

    name = f"cli-secrets-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        create_tenant(session, name, defaults=False)
    outputs: dict[str, Any] = {}
    outputs["llm add"] = cli(
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
        KEY,
        "--base-url",
        fake_provider.base_url,
        "--json",
    )
    outputs["my-llms --json"] = cli(stack, "my-llms", "--tenant", name, "--json")
    outputs["my-llms"] = cli(stack, "my-llms", "--tenant", name)
    outputs["my-llms --details"] = cli(stack, "my-llms", "--tenant", name, "--details")
    job_id = producer.submit_embedding(name, MODEL, ["text"])
    outputs["job status --json"] = cli(stack, "job", "status", job_id, "--json")

    for what, proc in outputs.items():
        assert proc.returncode == 0, f"{what}: {proc.stderr}"
        assert_no_key(proc.stdout + proc.stderr, f"`{what}`")
    (row,) = json.loads(outputs["my-llms --json"].stdout)["OpenAI"]
    assert row["model"] == MODEL and row["has_key"] is True
