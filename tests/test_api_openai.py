"""The HTTP API driven by the official ``openai`` client: files, batches (embeddings and chat),
embeddings; real API server (uvicorn subprocess), real worker processes, real Redis and
Postgres, the fake provider on loopback."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import numpy as np
import openai
import pytest
from sqlalchemy import func, select

from tests.api_stack import CHAT_MODEL, EMBED_MODEL, ApiServer, make_tenant, make_token, start_api
from tests.conftest import Stack, Worker, empty_broker, start_worker
from tests.fakeprovider import FakeProvider, fake_reply, fake_tokens, fake_vectors

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    from tests.fakeprovider import FakeProvider

    with FakeProvider(keys={"sk-test-valid-key-0001"}) as fp:
        yield fp


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api(stack, tmp_path_factory.mktemp("api"), {"MODELYARD_API_MAX_UPLOAD_BYTES": "200000"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    empty_broker(stack.redis_url)
    w = start_worker(
        stack, tmp_path_factory.mktemp("workers"), queues="embedding,chat,maintenance", pool="threads", concurrency=4
    )
    yield w
    w.stop()


@pytest.fixture(scope="module")
def tenant(stack: Stack, provider: FakeProvider) -> str:
    return make_tenant(provider.base_url)


@pytest.fixture(scope="module")
def client(stack: Stack, api: ApiServer, tenant: str) -> openai.OpenAI:
    token = make_token(stack, tenant, "jobs")["token"]
    return openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=token, max_retries=0, timeout=30)


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def embedding_lines(texts: list[str], model: str = EMBED_MODEL) -> list[dict]:
    return [
        {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": model, "input": t}}
        for i, t in enumerate(texts)
    ]


def poll(client: openai.OpenAI, batch_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.2)


def read_lines(client: openai.OpenAI, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_embedding_batch_round_trip(client: openai.OpenAI, worker: Worker, provider: FakeProvider) -> None:
    """Upload -> batch -> completed -> output file: every custom_id has the fake's vector of its
    own text and the fake's token count as usage; no error file."""
    texts = [f"document number {i} " + "word " * (i % 7) for i in range(150)]
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(embedding_lines(texts)))), purpose="batch")
    assert uploaded.object == "file" and uploaded.purpose == "batch" and uploaded.bytes > 0
    assert client.files.retrieve(uploaded.id).filename == "in.jsonl"
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h", metadata={"project": "docs"}
    )
    assert batch.status in ("in_progress", "completed") and batch.request_counts.total == 150
    done = poll(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (150, 0)
    assert done.error_file_id is None and done.metadata == {"project": "docs"}
    lines = read_lines(client, done.output_file_id)
    assert [line["custom_id"] for line in lines] == [f"req-{i}" for i in range(150)]
    expected = fake_vectors(texts)
    for i, line in enumerate(lines):
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        np.testing.assert_array_equal(np.array(body["data"][0]["embedding"], dtype=np.float32), expected[i])
        assert body["usage"] == {"prompt_tokens": fake_tokens([texts[i]]), "total_tokens": fake_tokens([texts[i]])}
    assert batch.id in [b.id for b in client.batches.list()]


def test_failing_line_goes_to_the_error_file(client: openai.OpenAI, worker: Worker, provider: FakeProvider) -> None:
    """With a chunk refused by the provider (quota), its lines are in the error file with the
    classified code, the others in the output file; request_counts add up."""
    provider.quota(path="embeddings")
    texts = [f"quota case {i}" for i in range(3)]
    f = client.files.create(file=("q.jsonl", jsonl(embedding_lines(texts))), purpose="batch")
    done = poll(
        client, client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id
    )
    assert done.status == "completed"
    assert done.request_counts.failed == 3 and done.output_file_id is None
    errors = read_lines(client, done.error_file_id)
    assert [e["custom_id"] for e in errors] == ["req-0", "req-1", "req-2"]
    assert all(e["error"]["code"] == "QUOTA" and e["response"]["status_code"] == 429 for e in errors)
    assert "quota" in errors[0]["response"]["body"]["error"]["message"].lower()


def test_embeddings_create(client: openai.OpenAI, worker: Worker) -> None:
    """client.embeddings.create (the client asks for base64 by default) and with floats."""
    texts = ["what is a queue", "how do retries work"]
    res = client.embeddings.create(model=EMBED_MODEL, input=texts)
    np.testing.assert_array_equal(np.array([d.embedding for d in res.data], dtype=np.float32), fake_vectors(texts))
    assert res.usage.total_tokens == fake_tokens(texts) and res.model == EMBED_MODEL
    one = client.embeddings.create(model=EMBED_MODEL, input="single text", encoding_format="float")
    np.testing.assert_array_equal(np.array(one.data[0].embedding, dtype=np.float32), fake_vectors(["single text"])[0])


def test_chat_batch(client: openai.OpenAI, worker: Worker) -> None:
    """Chat lines (one with a system message) answer with the fake's reply in the
    chat.completion shape, with that call's usage."""
    conversations = [[{"role": "user", "content": f"question {i} about queues"}] for i in range(3)]
    lines = [
        {
            "custom_id": f"chat-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": CHAT_MODEL,
                "messages": [{"role": "system", "content": "Be brief."}, *msgs],
                "temperature": 0,
            },
        }
        for i, msgs in enumerate(conversations)
    ]
    f = client.files.create(file=("chat.jsonl", jsonl(lines)), purpose="batch")
    done = poll(
        client, client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
    )
    assert done.status == "completed" and done.request_counts.completed == 3, done
    out = read_lines(client, done.output_file_id)
    assert [o["custom_id"] for o in out] == ["chat-0", "chat-1", "chat-2"]
    for o, msgs in zip(out, conversations, strict=True):
        body = o["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == fake_reply(msgs)
        assert body["usage"]["completion_tokens"] == fake_tokens([fake_reply(msgs)])


def test_cancel_and_delete(client: openai.OpenAI, worker: Worker) -> None:
    f = client.files.create(file=("c.jsonl", jsonl(embedding_lines(["a b", "c d"]))), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status in ("cancelled", "completed")
    deleted = client.files.delete(f.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


# --------------------------------------------------------------------------- bad input


def _counts() -> tuple[int, int, int]:
    from models.db import session_scope
    from models.tables import api_batches, api_files, jobs

    with session_scope() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (jobs, api_files, api_batches))


def _queued(stack: Stack) -> int:
    import redis

    r = redis.Redis.from_url(stack.redis_url)
    return sum(int(r.llen(q)) for q in ("embedding", "chat"))


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (
            b'{"custom_id": "a", "body": {"model": "text-embedding-3-small@OpenAI", "input": "x"}}\n{not json\n',
            "line 2: not valid JSON",
        ),
        (jsonl(embedding_lines(["fine"], model="no-such-model@OpenAI")), "no-such-model@OpenAI"),
        (jsonl(embedding_lines(["fine", ""])), "line 2"),
        (jsonl([*embedding_lines(["a"]), *embedding_lines(["b"])]), "custom_id"),
        (b"", "no request lines"),
        (
            jsonl([{"custom_id": "x", "url": "/v1/chat/completions", "body": {"model": EMBED_MODEL, "input": "x"}}]),
            "url",
        ),
    ],
    ids=["malformed-json", "unknown-model", "empty-input", "duplicate-custom-id", "empty-file", "wrong-url"],
)
def test_bad_batch_input_is_one_clear_400_and_nothing_is_written(
    stack: Stack, client: openai.OpenAI, worker: Worker, lines: bytes, needle: str
) -> None:
    f = client.files.create(file=("bad.jsonl", lines), purpose="batch")
    before, queued = _counts(), _queued(stack)
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    assert needle in info.value.body["message"], info.value.body
    assert _counts() == before and _queued(stack) == queued


def test_oversize_upload_is_413_and_leaves_nothing(stack: Stack, client: openai.OpenAI, api: ApiServer) -> None:
    import httpx

    before = _counts()
    with pytest.raises(openai.APIStatusError) as info:
        client.files.create(file=("big.jsonl", b"x" * 300_000), purpose="batch")
    assert info.value.status_code == 413
    # Without a Content-Length the stream is cut at the cap, and the partial file removed.
    token = client.api_key

    def body() -> Iterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="f.jsonl"\r\n\r\n'
        for _ in range(30):
            yield b"y" * 10_000
        yield b"\r\n--B--\r\n"

    r = httpx.post(
        f"{api.base_url}/v1/files",
        content=body(),
        timeout=30,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=B"},
    )
    assert r.status_code == 413 and "upload limit" in r.json()["error"]["message"]
    assert _counts() == before
    assert not list((stack.data_dir / "files").rglob("*.part"))


def test_wrong_content_type_and_purpose(api: ApiServer, client: openai.OpenAI) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {client.api_key}"}
    r = httpx.post(f"{api.base_url}/v1/files", json={"file": "x"}, headers=headers)
    assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")
    assert "purpose" in info.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nothing@OpenAI", input="x")


def test_native_job_status_results_and_npy(client: openai.OpenAI, api: ApiServer, worker: Worker) -> None:
    """POST /api/jobs, then status, JSON-lines results and the .npy array, all the fake's vectors."""
    import httpx

    http = httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {client.api_key}"}, timeout=30)
    texts = ["alpha beta", "gamma", "delta epsilon zeta"]
    r = http.post(
        "/api/jobs",
        json={
            "model_type": "embedding",
            "model": EMBED_MODEL,
            "items": [{"custom_id": f"n{i}", "text": t} for i, t in enumerate(texts)],
        },
    )
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 60
    while (st := http.get(f"/api/jobs/{job_id}").json())["status"] not in ("succeeded", "partial", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert st["status"] == "succeeded" and st["items"]["succeeded"] == 3
    rows = [json.loads(line) for line in http.get(f"/api/jobs/{job_id}/results").text.splitlines()]
    assert [row["custom_id"] for row in rows] == ["n0", "n1", "n2"]
    np.testing.assert_allclose(np.array([row["embedding"] for row in rows]), fake_vectors(texts), atol=1e-6)
    npy = np.load(io.BytesIO(http.get(f"/api/jobs/{job_id}/results", params={"format": "npy"}).content))
    np.testing.assert_array_equal(npy, fake_vectors(texts))
