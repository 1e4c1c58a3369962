"""The fake provider itself: deterministic answers, OpenAI shapes, scripting in and out of process."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.fakeprovider import (
    Behaviour,
    FakeProvider,
    RemoteFakeProvider,
    fake_score,
    fake_tokens,
    fake_vector,
    fake_vectors,
    spawn_fake_provider,
)

KEY = "sk-fake-0123456789abcdef"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(keys={KEY}, dim=8) as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def test_fake_vector_is_deterministic_normalized_and_text_specific() -> None:
    a, b = fake_vector("alpha", 16), fake_vector("beta", 16)
    assert a.dtype == np.float32 and a.shape == (16,)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(a, fake_vector("alpha", 16))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(fake_vectors(["alpha", "beta"], 16), np.stack([a, b]))


def test_fake_tokens_and_score() -> None:
    assert fake_tokens(["one two three", "", "four"]) == 3 + 1 + 1
    assert fake_score("cats dogs", "dogs only") == 0.5
    assert fake_score("", "anything") == 0.0


def test_embeddings_shape(fake: FakeProvider, client: httpx.Client) -> None:
    response = client.post(f"{fake.base_url}/embeddings", json={"model": "m", "input": "hello world", "dimensions": 4})
    body = response.json()
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert body["object"] == "list" and body["model"] == "m"
    assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    assert np.array_equal(np.asarray(body["data"][0]["embedding"], dtype=np.float32), fake_vector("hello world", 4))
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_bad_requests_get_openai_errors(fake: FakeProvider, client: httpx.Client) -> None:
    empty = client.post(f"{fake.base_url}/embeddings", json={"model": "m", "input": []})
    garbled = client.post(
        f"{fake.base_url}/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    unknown = client.post(f"{fake.base_url}/completions", json={})
    assert (empty.status_code, garbled.status_code, unknown.status_code) == (400, 400, 404)
    assert empty.json()["error"]["type"] == "invalid_request_error"


def test_stream_ends_with_usage_chunk_and_done(fake: FakeProvider, client: httpx.Client) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body["stream_options"] = {"include_usage": True}
    with client.stream("POST", f"{fake.base_url}/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"] == "text/event-stream"
    assert lines[-1] == "data: [DONE]"
    usage_chunk = json.loads(lines[-2].removeprefix("data: "))
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    finish = json.loads(lines[-3].removeprefix("data: "))
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["usage"] is None


def test_keys_can_change_while_running(fake: FakeProvider, client: httpx.Client) -> None:
    assert client.get(f"{fake.base_url}/models").status_code == 200
    fake.keys = {"sk-rotated-key-9876543210"}
    assert client.get(f"{fake.base_url}/models").status_code == 401
    fake.keys = None
    assert client.get(f"{fake.base_url}/models", headers={"Authorization": ""}).status_code == 200


def test_behaviours_are_one_shot_and_counted(fake: FakeProvider, client: httpx.Client) -> None:
    fake.server_error(502, times=2, path="models")
    statuses = [client.get(f"{fake.base_url}/models").status_code for _ in range(3)]
    assert statuses == [502, 502, 200]
    assert [c.behaviour for c in fake.calls] == ["server_error", "server_error", None]
    assert fake.count("models") == 3 and fake.count() == 3
    fake.reset()
    assert fake.calls == []


def test_behaviour_json_round_trip_and_validation() -> None:
    behaviour = Behaviour("rate_limit", 2, "embeddings", {"retry_after": 1.5, "retry_after_ms": None})
    assert Behaviour.from_json(behaviour.to_json()) == behaviour
    with pytest.raises(ValueError, match="unknown behaviour"):
        Behaviour.from_json({"kind": "explode"})


def test_control_routes_over_http(fake: FakeProvider) -> None:
    remote = RemoteFakeProvider(fake.base_url)
    try:
        remote.quota(path="embeddings")
        remote.configure(latency_ms=1)
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as client:
            response = client.post(f"{fake.base_url}/embeddings", json={"model": "m", "input": ["a"]})
        assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"
        assert fake.latency_ms == 1
        assert [(c.route, c.status, c.n_inputs) for c in remote.calls] == [("embeddings", 429, 1)]
        bad = httpx.post(f"{fake.url}/_script", json=[{"kind": "explode"}])
        assert bad.status_code == 400
    finally:
        remote.close()


def test_standalone_process_is_scriptable() -> None:
    with spawn_fake_provider(dim=4, keys=[KEY]) as remote:
        remote.rate_limit(retry_after=3)
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as client:
            limited = client.post(f"{remote.base_url}/embeddings", json={"model": "m", "input": ["a b"]})
            ok = client.post(f"{remote.base_url}/embeddings", json={"model": "m", "input": ["a b"]})
        assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
        assert len(ok.json()["data"][0]["embedding"]) == 4
        calls = remote.calls
        assert [c.status for c in calls] == [429, 200] and calls[1].time >= calls[0].time
        assert remote.count("/v1/embeddings") == 2
