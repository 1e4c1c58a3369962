"""Langfuse tracing of provider calls, on when ``LANGFUSE_PUBLIC_KEY``/``LANGFUSE_SECRET_KEY`` are set.

:func:`span` is a context manager around one provider call. With tracing off it costs a
settings look-up and yields a no-op span. With tracing on, each call becomes one Langfuse
*generation* (its own trace, named like ``embedding.encode``, user = the tenant id) that
carries the model (``name@factory``), the metadata the caller gives (counts, never
contents), the token usage, its start and end time, and level ERROR with a scrubbed status
message when the call raised. Inputs and outputs -- texts, vectors, audio -- are never given
to the SDK, so tenants' data does not reach the tracing backend.

The SDK (Langfuse v4/v5, built on OpenTelemetry) batches finished spans in a bounded queue
(OpenTelemetry's ``BatchSpanProcessor``, 2048 spans; more are dropped) and exports them
from its own thread, so a slow or absent Langfuse costs a job nothing. The client is made
once per process on the first traced call -- in a prefork worker that is after the fork --
on its own ``TracerProvider``, leaving the process's global OpenTelemetry set-up alone.
Worker start-up (``workers/startup.py``) calls :func:`preload` before the fork (the SDK's
import only) and :func:`shutdown` when a process ends, which flushes what is queued (bounded
by the SDK's export timeout, ``LANGFUSE_TIMEOUT``, 5 s by default). Keys and host come from
``conf.settings``; the SDK's own tuning variables (``LANGFUSE_FLUSH_INTERVAL``,
``LANGFUSE_TIMEOUT``, ...) apply as documented by Langfuse.

A failure inside the SDK never fails the call it traces: it is logged once per process
(later ones at debug level) and the call goes on untraced.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from conf.settings import get_settings
from providers.base import Usage
from providers.errors import classify, scrub

log = logging.getLogger(__name__)

STATUS_MESSAGE_CHARS = 500

T = TypeVar("T")


class Span:
    """What a traced call reports back: its token usage."""

    def __init__(self) -> None:
        self.usage: Usage | None = None

    def update_usage(self, usage: Usage) -> None:
        self.usage = usage


@contextmanager
def span(
    *, name: str, model: str, tenant_id: str, metadata: dict[str, Any], secrets: tuple[str, ...] = ()
) -> Iterator[Span]:
    """Trace one provider call as a Langfuse generation.

    ``metadata`` must hold counts and flags only (it is sent as is). ``secrets``, the call's
    API key (or the parts of a multi-part credential), are scrubbed from the error message should the provider's text carry it.
    """
    traced = Span()
    client = _client()
    generation = _guard(_start, client, name, model, tenant_id, metadata) if client is not None else None
    if generation is None:
        yield traced
        return
    error: Exception | None = None
    try:
        yield traced
    except Exception as exc:
        error = exc
        raise
    finally:  # also on GeneratorExit (a stream given up): the generation ends, not as an error
        _guard(_finish, generation, traced.usage, error, secrets)


def preload() -> None:
    """Import the SDK now if tracing is on: called in a worker's main process before it forks,
    so that the first traced call of each pool process does not pay for the import."""
    if get_settings().tracing_enabled:
        _guard(_import_sdk)


def flush() -> None:
    """Send what this process has queued, waiting at most the SDK's export timeout."""
    tracer = _tracer
    if tracer is not None and tracer.client is not None and tracer.pid == os.getpid():
        _guard(tracer.client.flush)


def shutdown(**_: object) -> None:
    """Flush and stop this process's client (at process exit; a signal handler, hence ``**_``).

    A later traced call makes a new client. The SDK keeps one exporter per public key per
    process, so that works for another key; the same key stays shut down in this process.
    """
    global _tracer
    with _lock:
        tracer, _tracer = _tracer, None
    if tracer is None or tracer.client is None or tracer.pid != os.getpid():
        return  # nothing made here: a client inherited over fork belongs to the parent
    _guard(tracer.client.shutdown)  # flushes spans (and the SDK's score/media queues), stops its threads
    _guard(tracer.provider.shutdown)  # stops the span export thread


# --- the per-process client ---


@dataclass(frozen=True)
class _Tracer:
    pid: int
    client: Any  # langfuse.Langfuse, or None when making it failed (not retried in this process)
    provider: Any  # opentelemetry.sdk.trace.TracerProvider


_lock = threading.Lock()
_tracer: _Tracer | None = None
_failure_logged = False


def _client() -> Any:
    """This process's Langfuse client; None when tracing is off or the client could not be made."""
    global _tracer
    settings = get_settings()
    if not settings.tracing_enabled:
        return None
    tracer = _tracer
    if tracer is not None and tracer.pid == os.getpid():
        return tracer.client
    with _lock:
        if _tracer is None or _tracer.pid != os.getpid():
            client, provider = _guard(
                _make_client, settings.langfuse_public_key, settings.langfuse_secret_key, settings.langfuse_host
            ) or (None, None)
            _tracer = _Tracer(os.getpid(), client, provider)
        return _tracer.client


def _import_sdk() -> tuple[type, type]:
    # Imported only when tracing is on: the SDK takes a second or so to import.
    from langfuse import Langfuse
    from opentelemetry.sdk.trace import TracerProvider

    return Langfuse, TracerProvider


def _make_client(public_key: str, secret_key: str, host: str) -> tuple[Any, Any]:
    Langfuse, TracerProvider = _import_sdk()
    provider = TracerProvider()
    client = Langfuse(public_key=public_key, secret_key=secret_key, base_url=host.rstrip("/"), tracer_provider=provider)
    return client, provider


def _start(client: Any, name: str, model: str, tenant_id: str, metadata: dict[str, Any]) -> Any:
    from langfuse import propagate_attributes

    with propagate_attributes(user_id=tenant_id, trace_name=name):
        return client.start_observation(
            as_type="generation", name=name, model=model, metadata={"tenant_id": tenant_id, **metadata}
        )


def _finish(generation: Any, usage: Usage | None, error: Exception | None, secrets: tuple[str, ...]) -> None:
    try:
        update: dict[str, Any] = {}
        if usage is not None:
            update["usage_details"] = {
                "input": usage.prompt_tokens,
                "output": usage.completion_tokens,
                "total": usage.total_tokens,
            }
            if usage.estimated:
                update["metadata"] = {"usage_estimated": True}
        if error is not None:
            message = scrub(f"{type(error).__name__}: {error}", *secrets)[:STATUS_MESSAGE_CHARS]
            update.update(level="ERROR", status_message=message)
            update["metadata"] = {**update.get("metadata", {}), "error_code": classify(error).value}
        if update:
            generation.update(**update)
    finally:
        generation.end()


def _guard(fn: Callable[..., T], *args: Any) -> T | None:
    """Call into the SDK; a failure is logged (once per process at warning level), never raised."""
    global _failure_logged
    try:
        return fn(*args)
    except Exception:
        if _failure_logged:
            log.debug("Langfuse tracing failed again", exc_info=True)
        else:
            _failure_logged = True
            log.warning("Langfuse tracing failed; provider calls go on untraced where it fails", exc_info=True)
        return None
