"""LLMBundle: a tenant's resolved model -- configuration, decrypted key, provider instance,
input truncation, usage recording and tracing in one object.

Bundles are cached per runtime (:class:`Bundles`), keyed by the ``tenant_llm`` row; a changed key (its
``key_version``) or base URL makes a new one. The key lives only in the provider instance
inside the worker process; it is never written to a message, a result or a log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
from sqlalchemy.orm import Session

from conf.catalog import find_model
from conf.errors import InvalidRequest
from conf.settings import NoRuntimeError
from models import tracing
from models.crypto import keyed_hash
from models.prices import price_of
from models.tenants import TenantModel, get_tenant_model, load_key
from models.usage import record_usage
from providers.base import (
    AudioResult,
    BaseModel,
    ChatDelta,
    ChatModel,
    ChatResult,
    EmbeddingModel,
    EmbeddingResult,
    Image2TextModel,
    RerankModel,
    RerankResult,
    Speech2TextModel,
    TextResult,
    TTSModel,
    Usage,
    truncate_to_tokens,
)
from providers.registry import UnsupportedModel, get_provider_class


class _Billed(Protocol):
    """A provider call's result: whatever it holds, it carries the usage to trace."""

    @property
    def usage(self) -> Usage: ...


R = TypeVar("R", bound=_Billed)
P = TypeVar("P", bound=BaseModel)


class LLMBundle:
    def __init__(self, tenant_model: TenantModel, api_key: str | None, *, client: httpx.Client | None = None) -> None:
        self.tenant_model = tenant_model
        cls = get_provider_class(tenant_model.model_type, tenant_model.factory)
        # One of the model-type interfaces in providers.base, chosen by the tenant's model type.
        self.provider: BaseModel = cls(
            tenant_model.llm_name, api_key=api_key, base_url=tenant_model.api_base or None, client=client
        )
        # The fleet-wide limiter's name for this key and model (a keyed hash, never the key).
        self.limit_bucket = keyed_hash(
            tenant_model.factory, self.provider.base_url, api_key or "", tenant_model.llm_name
        )
        catalog = find_model(tenant_model.full_name)
        if catalog is not None and catalog.batch_size:
            self.provider.batch_size = catalog.batch_size

    @classmethod
    def open(cls, session: Session, tenant_id: str, model_type: str, model: str) -> LLMBundle:
        """Resolve ``model`` (``name@factory``) for a tenant: enabled, key decrypted."""
        tm = get_tenant_model(session, tenant_id, model, model_type)
        if tm.status != "enabled":
            raise InvalidRequest(f"model {model} ({model_type}) is disabled for this tenant")
        try:
            return _bundles().get(session, tm)
        except UnsupportedModel as exc:  # a catalog entry no provider serves: refused, never a crash
            raise InvalidRequest(str(exc)) from None

    def _as(self, kind: type[P]) -> P:
        """The provider as the model-type interface a call needs (a bundle opened for another type has none)."""
        if not isinstance(self.provider, kind):
            raise TypeError(f"{self.model} is a {self.tenant_model.model_type} model, not {kind.model_type}")
        return self.provider

    @property
    def model(self) -> str:
        return self.tenant_model.full_name

    @property
    def secrets(self) -> tuple[str, ...]:
        """The key (each secret field of a multi-part credential), for scrubbing error texts; never to be stored."""
        return self.provider.secrets

    # --- provider calls: each returns the provider's result with its usage; nothing recorded ---

    def encode(self, texts: Sequence[str], *, query: bool = False) -> EmbeddingResult:
        limit = self.tenant_model.max_tokens
        clipped = [truncate_to_tokens(t, limit) for t in texts] if limit else list(texts)
        return self._traced("encode", len(clipped), lambda: self._as(EmbeddingModel).encode(clipped, query=query))

    def encode_queries(self, text: str) -> EmbeddingResult:
        limit = self.tenant_model.max_tokens
        clipped = truncate_to_tokens(text, limit) if limit else text
        return self._traced("encode_queries", 1, lambda: self._as(EmbeddingModel).encode_queries(clipped))

    def similarity(self, query: str, texts: Sequence[str]) -> RerankResult:
        return self._traced("similarity", len(texts), lambda: self._as(RerankModel).similarity(query, texts))

    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        return self._traced("chat", len(messages), lambda: self._as(ChatModel).chat(system, messages, gen_conf, tools))

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        with self._trace("chat_stream", n=len(messages)) as span:
            for delta in self._as(ChatModel).chat_stream(system, messages, gen_conf, tools):
                if delta.usage is not None:
                    span.update_usage(delta.usage)
                yield delta

    def describe(self, image: bytes, prompt: str | None = None, mime_type: str = "image/png") -> TextResult:
        return self._traced(
            "describe", 1, lambda: self._as(Image2TextModel).describe_with_prompt(image, prompt, mime_type)
        )

    def transcription(self, audio: bytes, filename: str = "audio.wav") -> TextResult:
        return self._traced("transcription", 1, lambda: self._as(Speech2TextModel).transcription(audio, filename))

    def tts(self, text: str, voice: str | None = None, audio_format: str = "mp3") -> AudioResult:
        return self._traced("tts", 1, lambda: self._as(TTSModel).tts(text, voice, audio_format))

    def _traced(self, operation: str, n: int, call: Callable[[], R]) -> R:
        """Run one provider call inside a tracing span that reports its usage."""
        with self._trace(operation, n=n) as span:
            result = call()
            span.update_usage(result.usage)
        return result

    @contextmanager
    def _trace(self, operation: str, *, n: int) -> Iterator[tracing.Span]:
        with tracing.span(
            name=f"{self.tenant_model.model_type}.{operation}",
            model=self.model,
            tenant_id=self.tenant_model.tenant_id,
            metadata={"inputs": n},
            secrets=self.secrets,
        ) as span:
            yield span

    # --- the ledger ---

    def record_usage(
        self,
        session: Session,
        usage: Usage,
        *,
        task_attempt: str,
        job_id: str | None = None,
        latency_ms: float | None = None,
        cached: bool = False,
        cached_tokens: int = 0,
    ) -> Recorded | None:
        """Append the usage event, priced now, and add the tokens to ``used_tokens``, in the
        caller's transaction. None (and nothing changed) if this attempt was already counted."""
        price, _ = price_of(session, self.model)
        cost = price.cost(usage) if price is not None else None
        if not record_usage(
            session,
            self.tenant_model,
            usage,
            task_attempt=task_attempt,
            job_id=job_id,
            latency_ms=latency_ms,
            cost=cost,
            cached=cached,
            cached_tokens=cached_tokens,
        ):
            return None
        return Recorded(usage.total_tokens, cost)


@dataclass(frozen=True)
class Recorded:
    """A usage event written: its billed tokens and its cost (None: the model has no price)."""

    tokens: int
    cost: float | None


class Bundles:
    """A runtime's bundles keyed by ``tenant_llm.id``, their providers calling through ``client``;
    a bundle is made again when its key or base URL changes."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._bundles: dict[int, tuple[tuple[int, str, int], LLMBundle]] = {}

    def get(self, session: Session, tm: TenantModel) -> LLMBundle:
        stamp = (tm.key_version, tm.api_base, tm.max_tokens)
        with self._lock:
            cached = self._bundles.get(tm.id)
        if cached is not None and cached[0] == stamp:
            cached[1].tenant_model = tm  # fresh counters and status
            return cached[1]
        api_key, _ = load_key(session, tm.id)
        bundle = LLMBundle(tm, api_key, client=self.client)
        with self._lock:
            self._bundles[tm.id] = (stamp, bundle)
        return bundle


_active: Bundles | None = None


def activate_bundles(bundles: Bundles | None) -> None:
    """Make ``bundles`` the ones :meth:`LLMBundle.open` uses (called by tasks.runtime)."""
    global _active
    _active = bundles


def _bundles() -> Bundles:
    if _active is None:
        raise NoRuntimeError("no runtime is active in this process (build one with tasks.runtime.Runtime)")
    return _active
