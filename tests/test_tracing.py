"""Langfuse tracing of provider calls, checked against a fake Langfuse server on loopback.

The Langfuse SDK (v4+) exports OpenTelemetry spans as OTLP/HTTP protobuf (gzip) to
``{host}/api/public/otel/v1/traces``. :class:`FakeLangfuse` is a real HTTP server that
records those requests; the tests decode them with ``opentelemetry-proto`` (a dependency
of the SDK) and also search the raw bytes, so "this string was never sent" is checked on
everything that went over the wire, headers included.

The provider calls go through a real :class:`models.bundle.LLMBundle` against the fake
OpenAI-compatible provider, in this process (plus one end-to-end test with a worker).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import Stack, apply_env
from tests.fakeprovider import FakeProvider, fake_vectors

pytestmark = pytest.mark.services

MODEL = "text-embedding-3-small@OpenAI"
API_KEY = "sk-test-valid-key-0001"
TEXTS = ["the quick brown fox jumps over the lazy dog", "tenant secret: invoice 4711 for ACME", "third text"]
LANGFUSE_VARS = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_HOST")


@dataclass
class Export:
    """One request the SDK sent: its path, headers and (decompressed) body."""

    path: str
    headers: dict[str, str]
    body: bytes

    def raw(self) -> bytes:
        """Everything sent, as bytes: for "never sent" checks."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items()).encode()
        return head + b"\n" + self.path.encode() + b"\n" + self.body


class FakeLangfuse:
    """A real HTTP server that answers like Langfuse's OTLP endpoint and records every request."""

    def __init__(self) -> None:
        self.exports: list[Export] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with fake._lock:
                    fake.exports.append(Export(self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def raw(self) -> bytes:
        with self._lock:
            return b"\n".join(e.raw() for e in self.exports)

    def spans(self) -> list[dict[str, Any]]:
        """Every exported span, decoded: name, times, status and attributes (values as Python)."""
        with self._lock:
            exports = list(self.exports)
        out = []
        for export in exports:
            assert export.path == "/api/public/otel/v1/traces", export.path
            request = ExportTraceServiceRequest()
            request.ParseFromString(export.body)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        out.append(
                            {
                                "name": s.name,
                                "start": s.start_time_unix_nano,
                                "end": s.end_time_unix_nano,
                                "status_code": s.status.code,
                                "attributes": {a.key: _value(a.value) for a in s.attributes},
                            }
                        )
        return out

    def generations(self) -> list[dict[str, Any]]:
        return [s for s in self.spans() if s["attributes"].get("langfuse.observation.type") == "generation"]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def _metadata(attributes: dict[str, Any], key: str) -> Any:
    """The SDK writes each metadata key as its own attribute, JSON-encoded."""
    return json.loads(attributes[f"langfuse.observation.metadata.{key}"])


@pytest.fixture
def fake_langfuse() -> Iterator[FakeLangfuse]:
    server = FakeLangfuse()
    yield server
    server.stop()


@pytest.fixture
def tracing_env(stack: Stack) -> Iterator:
    """Returns ``use(host, keys=True)``: this process's Langfuse settings (no keys: tracing off).

    Afterwards the process's tracing client is shut down and the Langfuse variables removed.
    Each test uses a fresh public key: the SDK keeps one exporter per key per process.
    """
    from models import tracing

    def use(host: str, *, keys: bool = True) -> None:
        for name in LANGFUSE_VARS:
            os.environ.pop(name, None)
        env = {**stack.env, "LANGFUSE_HOST": host}
        if keys:
            env.update(LANGFUSE_PUBLIC_KEY=f"pk-lf-{uuid.uuid4().hex}", LANGFUSE_SECRET_KEY=f"sk-lf-{uuid.uuid4().hex}")
        apply_env(env)

    yield use
    tracing.shutdown()
    for name in LANGFUSE_VARS:
        os.environ.pop(name, None)
    apply_env(stack.env)


@pytest.fixture
def tenant_model(stack: Stack, fake_provider: FakeProvider) -> tuple[str, str]:
    """A fresh tenant with ``MODEL`` configured against the fake provider: (tenant id, model)."""
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm

    with session_scope() as session:
        tenant_id = create_tenant(session, f"tracing-{uuid.uuid4().hex[:8]}", defaults=False)
        save_llm(session, tenant_id, MODEL, "embedding", api_key=API_KEY, api_base=fake_provider.base_url)
    return tenant_id, MODEL


def _bundle(tenant_id: str, model: str):
    from models.bundle import LLMBundle
    from models.db import session_scope

    with session_scope() as session:
        return LLMBundle.open(session, tenant_id, "embedding", model)


def test_a_provider_call_becomes_one_generation_with_model_usage_and_counts(
    tracing_env, fake_langfuse: FakeLangfuse, tenant_model: tuple[str, str]
) -> None:
    """With both keys set, one encode call is exported as one Langfuse generation that names
    the model and the operation, carries the tenant and the input count as metadata, the
    provider's token usage as input/output/total, and a start and end time."""
    from models import tracing

    tracing_env(fake_langfuse.url)
    tenant_id, model = tenant_model
    result = _bundle(tenant_id, model).encode(TEXTS)
    tracing.flush()

    np.testing.assert_allclose(result.vectors, fake_vectors(TEXTS), rtol=1e-6)
    assert result.usage.total_tokens > 0
    [generation] = fake_langfuse.generations()
    attrs = generation["attributes"]
    assert generation["name"] == "embedding.encode"
    assert attrs["langfuse.observation.model.name"] == MODEL
    assert json.loads(attrs["langfuse.observation.usage_details"]) == {
        "input": result.usage.prompt_tokens,
        "output": result.usage.completion_tokens,
        "total": result.usage.total_tokens,
    }
    assert _metadata(attrs, "tenant_id") == tenant_id
    assert _metadata(attrs, "inputs") == len(TEXTS)
    assert attrs["user.id"] == tenant_id
    assert attrs.get("langfuse.observation.level") in (None, "DEFAULT")
    assert 0 < generation["start"] <= generation["end"]


def test_no_input_output_or_api_key_is_sent(
    tracing_env, fake_langfuse: FakeLangfuse, tenant_model: tuple[str, str]
) -> None:
    """Tenants' data stays home: nothing the SDK sent (headers, path, body) contains the input
    texts, the API key, or any input/output attribute -- only counts and usage."""
    from models import tracing

    tracing_env(fake_langfuse.url)
    _bundle(*tenant_model).encode(TEXTS)
    tracing.flush()

    [generation] = fake_langfuse.generations()
    assert not any(
        k.startswith(("langfuse.observation.input", "langfuse.observation.output")) for k in generation["attributes"]
    )
    raw = fake_langfuse.raw()
    for text in TEXTS:
        assert text.encode() not in raw
    assert b"invoice 4711" not in raw
    assert API_KEY.encode() not in raw


def test_a_failed_call_is_an_error_generation_without_the_key(
    tracing_env, fake_langfuse: FakeLangfuse, fake_provider: FakeProvider, tenant_model: tuple[str, str]
) -> None:
    """A provider error still ends the generation, at level ERROR with a status message and
    the error code -- and the key that the provider echoed in its error text is not in it."""
    from models import tracing
    from providers.errors import ProviderError

    tracing_env(fake_langfuse.url)
    fake_provider.echo_key_in_error(status=400)
    with pytest.raises(ProviderError):
        _bundle(*tenant_model).encode(TEXTS)
    tracing.flush()

    [generation] = fake_langfuse.generations()
    attrs = generation["attributes"]
    assert attrs["langfuse.observation.level"] == "ERROR"
    assert "Invalid request" in attrs["langfuse.observation.status_message"]
    assert _metadata(attrs, "error_code") == "INVALID_REQUEST"
    assert "langfuse.observation.usage_details" not in attrs
    assert API_KEY.encode() not in fake_langfuse.raw()


def test_without_keys_nothing_is_sent_and_the_span_is_a_no_op(
    tracing_env, fake_langfuse: FakeLangfuse, tenant_model: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Without the Langfuse keys (only the host set) calls work and nothing reaches Langfuse;
    the SDK is not even touched (a client, even a disabled one, logs its start-up), and the
    span just holds the usage it was given."""
    from models import tracing
    from providers.base import Usage

    caplog.set_level(logging.DEBUG, logger="langfuse")
    tracing_env(fake_langfuse.url, keys=False)
    result = _bundle(*tenant_model).encode(TEXTS)
    with tracing.span(name="embedding.encode", model=MODEL, tenant_id="t", metadata={"inputs": 1}) as span:
        span.update_usage(Usage(1, 0, 1))
    assert type(span) is tracing.Span and span.usage == Usage(1, 0, 1)
    tracing.flush()
    tracing.shutdown()

    assert result.vectors.shape == (len(TEXTS), 8)
    assert fake_langfuse.exports == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("langfuse")] == []


def test_calls_succeed_when_langfuse_is_down(tracing_env, tenant_model: tuple[str, str]) -> None:
    """With the keys set but nothing listening at the Langfuse host, provider calls still
    succeed (export happens in the SDK's thread), and flushing at shutdown returns."""
    from models import tracing

    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tracing_env(f"http://127.0.0.1:{port}")
    bundle = _bundle(*tenant_model)
    for _ in range(3):
        result = bundle.encode(TEXTS)
        np.testing.assert_allclose(result.vectors, fake_vectors(TEXTS), rtol=1e-6)
    tracing.shutdown()


@pytest.mark.slow
def test_a_worker_flushes_its_traces_when_it_stops(
    stack: Stack, worker_factory, fake_langfuse: FakeLangfuse, tenant_model: tuple[str, str]
) -> None:
    """End to end: a prefork worker traced to Langfuse, with the SDK's periodic flush set far
    in the future, still delivers one generation per chunk -- sent by the flush at process
    shutdown (a prefork child exits without running atexit handlers). The worker is stopped
    the way a warm shutdown is meant to be asked for: SIGTERM to its main process."""
    from tasks import producer

    tenant_id, model = tenant_model
    worker = worker_factory(
        concurrency=1,
        extra_env={
            "LANGFUSE_PUBLIC_KEY": f"pk-lf-{uuid.uuid4().hex}",
            "LANGFUSE_SECRET_KEY": f"sk-lf-{uuid.uuid4().hex}",
            "LANGFUSE_HOST": fake_langfuse.url,
            "LANGFUSE_FLUSH_INTERVAL": "3600",
        },
    )
    # The same texts twice, two chunks: with the cache off, so that both reach the provider.
    job_id = producer.submit_embedding(tenant_id, model, TEXTS * 2, chunk_size=3, cache=False)
    assert producer.wait(job_id, timeout=60)["status"] == "succeeded"
    assert fake_langfuse.exports == []  # nothing yet: the periodic flush is an hour away

    worker.proc.send_signal(signal.SIGTERM)  # the main process only: a warm shutdown that closes the pool
    worker.proc.wait(timeout=60)

    generations = fake_langfuse.generations()
    assert len(generations) == 2, worker.log_text()[-3000:]
    assert {g["name"] for g in generations} == {"embedding.encode"}
    assert all(_metadata(g["attributes"], "inputs") == 3 for g in generations)
    assert API_KEY.encode() not in fake_langfuse.raw()
