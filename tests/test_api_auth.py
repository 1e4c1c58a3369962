"""Tokens and tenant isolation over HTTP: another tenant's batch, file and job answer 404; a
wrong or revoked token 401; a token without the ``models`` scope cannot set keys; operator
tokens create tenants; no token or provider key in any response, log or task message."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from sqlalchemy import select

from tests.api_stack import EMBED_MODEL, KEY, ApiServer, make_tenant, make_token, start_api
from tests.conftest import Stack, Worker, cli, start_worker
from tests.fakeprovider import FakeProvider

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(keys={KEY}) as fp:
        yield fp


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api(stack, tmp_path_factory.mktemp("api-auth"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = start_worker(stack, tmp_path_factory.mktemp("w"), queues="embedding,maintenance", pool="threads", concurrency=2)
    yield w
    w.stop()


def http(api: ApiServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="module")
def two(stack: Stack, api: ApiServer, provider: FakeProvider, worker: Worker) -> dict:
    a, b = make_tenant(provider.base_url), make_tenant(provider.base_url)
    ta, tb = make_token(stack, a, "jobs"), make_token(stack, b, "jobs,models")
    client_b = openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=tb["token"], max_retries=0)
    line = {"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBED_MODEL, "input": "b"}}
    f = client_b.files.create(file=("b.jsonl", io.BytesIO((json.dumps(line) + "\n").encode())), purpose="batch")
    batch = client_b.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    job = (
        http(api, tb["token"])
        .post("/api/jobs", json={"model_type": "embedding", "model": EMBED_MODEL, "items": [{"text": "hello"}]})
        .json()["job_id"]
    )
    return {"a": a, "b": b, "ta": ta, "tb": tb, "file": f.id, "batch": batch.id, "job": job}


def test_another_tenants_objects_are_not_found(api: ApiServer, two: dict) -> None:
    a = http(api, two["ta"]["token"])
    for path in (
        f"/v1/files/{two['file']}",
        f"/v1/files/{two['file']}/content",
        f"/v1/batches/{two['batch']}",
        f"/api/jobs/{two['job']}",
        f"/api/jobs/{two['job']}/results",
    ):
        r = a.get(path)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["type"] == "not_found_error"
    assert a.post(f"/v1/batches/{two['batch']}/cancel").status_code == 404
    assert a.post(f"/api/jobs/{two['job']}/cancel").status_code == 404
    assert a.delete(f"/v1/files/{two['file']}").status_code == 404
    assert two["batch"] not in [b["id"] for b in a.get("/v1/batches").json()["data"]]
    b = http(api, two["tb"]["token"])  # B itself still sees them
    assert b.get(f"/v1/files/{two['file']}").status_code == 200
    assert b.get(f"/api/jobs/{two['job']}").status_code == 200


def test_wrong_missing_and_revoked_tokens_are_401(stack: Stack, api: ApiServer, two: dict) -> None:
    good = two["ta"]["token"]
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Bearer {good[:-2]}xx"},
        {"Authorization": f"Basic {good}"},
    ):
        r = httpx.get(f"{api.base_url}/v1/batches", headers=headers)
        assert r.status_code == 401
        assert good not in r.text
    victim = make_token(stack, two["a"], "jobs")
    assert http(api, victim["token"]).get("/v1/batches").status_code == 200
    done = cli(stack, "token", "revoke", victim["id"], "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["revoked"] is True
    r = http(api, victim["token"]).get("/v1/batches")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_scopes(stack: Stack, api: ApiServer, two: dict, provider: FakeProvider) -> None:
    jobs_only = http(api, two["ta"]["token"])
    r = jobs_only.put("/api/keys/OpenAI", json={"api_key": KEY})
    assert r.status_code == 403 and "models" in r.json()["error"]["message"]
    assert jobs_only.get("/api/my-llms").status_code == 403
    assert jobs_only.post("/api/tenants", json={"name": "nope"}).status_code == 403
    manager = http(api, two["tb"]["token"])
    mine = manager.get("/api/my-llms").json()
    assert mine["OpenAI"][0]["key_hint"] == KEY[-4:]
    r = manager.post("/api/llms/disable", json={"model": EMBED_MODEL, "type": "embedding"})
    assert r.status_code == 200 and r.json()["status"] == "disabled"
    r = manager.post("/api/jobs", json={"model_type": "embedding", "model": EMBED_MODEL, "items": [{"text": "x"}]})
    assert r.status_code == 400 and "disabled" in r.json()["error"]["message"]
    assert (
        manager.post("/api/llms/enable", json={"model": EMBED_MODEL, "type": "embedding"}).json()["status"] == "enabled"
    )
    operator = make_token(stack, None)
    assert operator["scopes"] == ["admin"] and operator["tenant_id"] is None
    op = http(api, operator["token"])
    created = op.post("/api/tenants", json={"name": f"made-over-http-{two['a']}"})
    assert created.status_code == 200 and created.json()["id"]
    assert op.get("/v1/batches").status_code == 403  # an operator token belongs to no tenant


def test_token_list_shows_name_and_hint_only(stack: Stack, two: dict) -> None:
    done = cli(stack, "token", "list", "--tenant", two["a"], "--json")
    assert done.returncode == 0
    rows = json.loads(done.stdout)
    assert any(r["id"] == two["ta"]["id"] and r["hint"] == two["ta"]["token"][-4:] for r in rows)
    assert two["ta"]["token"] not in done.stdout
    from models.db import session_scope
    from models.tables import api_tokens

    with session_scope() as session:
        stored = [tuple(r) for r in session.execute(select(api_tokens))]
    assert not any(two["ta"]["token"].split("_", 2)[2] in str(row) for row in stored)
    bad = cli(stack, "token", "create", "--tenant", two["a"], "--scope", "root")
    assert bad.returncode == 2 and "unknown scope" in bad.stderr


def test_no_secret_in_responses_logs_or_messages(
    stack: Stack, api: ApiServer, two: dict, worker: Worker, provider: FakeProvider
) -> None:
    """After the requests above (and a failing one that makes the provider echo the key), no
    API token and no provider key appear in the API's log, the worker's log, or any error
    text stored for a job item."""
    provider.echo_key_in_error(path="embeddings")
    b = http(api, two["tb"]["token"])
    r = b.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": "echo"})
    assert r.status_code >= 400 and KEY not in r.text
    from models.db import session_scope
    from models.tables import job_items

    with session_scope() as session:
        messages = [m for (m,) in session.execute(select(job_items.c.error_message)) if m]
    texts = [api.log_text(), worker.log_text(), *messages, r.text]
    for secret in (KEY, two["ta"]["token"], two["tb"]["token"]):
        assert not any(secret in t for t in texts)
