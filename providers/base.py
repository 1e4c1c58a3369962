"""Model-type interfaces. A provider class implements one of these for one family of APIs.

The framework constructs a provider with the key and base URL it resolved (providers never
read the environment) and, optionally, the ``httpx.Client`` to speak through -- the
transport seam that tests use. Every call returns its result together with the token
usage that the provider reported (or an estimate, flagged as such).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

import httpx
import numpy as np

ModelType = Literal["chat", "embedding", "rerank", "image2text", "speech2text", "tts"]
MODEL_TYPES: tuple[str, ...] = get_args(ModelType)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.estimated or other.estimated,
        )


def estimate_tokens(text: str) -> int:
    """A provider-neutral estimate (about four UTF-8 bytes a token) for when none is reported."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 4)) if text else 0


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """Cut ``text`` so that :func:`estimate_tokens` stays within ``max_tokens``."""
    if max_tokens <= 0 or estimate_tokens(text) <= max_tokens:
        return text
    return text.encode("utf-8")[: max_tokens * 4].decode("utf-8", errors="ignore")


@dataclass
class EmbeddingResult:
    vectors: np.ndarray  # float32, shape (n, dim)
    usage: Usage


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


REFUSAL = "refusal"  # the finish reason of an answer the model refused to give


@dataclass
class ChatResult:
    """An answer. When the model refused, ``refusal`` holds its explanation (never empty) and
    ``finish_reason`` is :data:`REFUSAL`; ``text`` is whatever answer text came with it."""

    text: str
    usage: Usage
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    refusal: str | None = None


@dataclass
class ChatDelta:
    """One piece of a streamed answer; the last one carries ``usage`` and ``finish_reason`` (and
    ``refusal``, as :class:`ChatResult` does)."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str | None = None
    refusal: str | None = None


@dataclass
class RerankResult:
    scores: np.ndarray  # float32, one per document, in the documents' order
    usage: Usage


@dataclass
class TextResult:
    """The answer of image2text and speech2text."""

    text: str
    usage: Usage


@dataclass
class AudioResult:
    audio: bytes
    content_type: str
    usage: Usage


@dataclass(frozen=True)
class CredentialField:
    """One named part of a multi-part credential (Azure's ``api_version``, Bedrock's ``secret_key``).

    ``secret`` fields are scrubbed from error texts; ``required`` ones must be given."""

    name: str
    required: bool = True
    secret: bool = True
    help: str = ""


def encode_credentials(fields: Mapping[str, str]) -> str:
    """The one string stored (encrypted) for a multi-part credential: a JSON object."""
    return json.dumps(dict(sorted(fields.items())), separators=(",", ":"))


def decode_credentials(api_key: str | None) -> dict[str, str]:
    """The named fields of a stored multi-part credential ({} if there is none or it is a plain key)."""
    if not api_key or not api_key.startswith("{"):
        return {}
    try:
        raw = json.loads(api_key)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in raw.items() if v is not None} if isinstance(raw, dict) else {}


class BaseModel:
    """What every provider class declares.

    ``factories``: the catalog factory names this class serves (one class may serve many).
    ``model_type``: one of :data:`MODEL_TYPES`. ``needs_key``: whether calls need an API key.
    ``default_base_url``: used when the tenant configured none.
    ``credential_fields``: for a multi-part credential, its named fields; the framework then
    hands the provider :func:`encode_credentials` of them as ``api_key`` and the provider reads
    :attr:`credentials`. Empty (the default) means one plain API key.
    ``batch_size``: the most inputs one request carries, for a class that slices its inputs (0: it
    does not); the catalog may set it per instance.
    """

    factories: ClassVar[tuple[str, ...]] = ()
    model_type: ClassVar[str] = ""
    needs_key: ClassVar[bool] = True
    default_base_url: ClassVar[str] = ""
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()
    batch_size: int = 0

    def __init__(
        self,
        model_name: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: httpx.Client | None = None,
        **options: Any,
    ) -> None:
        self.model_name = model_name
        self.api_key = api_key
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self._client = client
        self.options = options
        self.credentials = decode_credentials(api_key) if self.credential_fields else {}
        # The last rate-limit headers the provider sent (on success or error), for a rate limiter.
        self.rate_limits: dict[str, str] = {}

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} was made without an HTTP client (pass client=)")
        return self._client

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret this instance holds: the key, and each secret field of a multi-part credential."""
        values = [self.api_key] if self.api_key else []
        secret_names = {f.name for f in self.credential_fields if f.secret}
        values += [v for k, v in self.credentials.items() if k in secret_names and v]
        return tuple(values)

    def check(self, response: httpx.Response) -> httpx.Response:
        """Keep the response's rate-limit headers; return it if 2xx, else raise its scrubbed ProviderError.
        A family whose error bodies say more than the common shapes overrides this."""
        from providers.http import check, rate_limit_headers

        self.rate_limits = rate_limit_headers(response.headers)
        return check(response, *self.secrets)

    # --- the request plumbing every HTTP family shares: hooks (where, how authenticated) and sending.

    def http_base(self) -> str:
        """``base_url``, refused (INVALID_REQUEST) unless it is an http(s) URL."""
        from providers.errors import ErrorCode, ProviderError

        if not self.base_url.startswith(("http://", "https://")):
            name = self.factories[0] if self.factories else type(self).__name__
            raise ProviderError(
                f"{name} needs a base URL (http:// or https://); got {self.base_url!r}", code=ErrorCode.INVALID_REQUEST
            )
        return self.base_url

    def request_url(self, path: str) -> str:
        """Hook: where a call to ``path`` goes. Default ``{base_url}/{path}``; a family whose URLs
        differ overrides it (Azure: deployment and api-version; Gemini: ``models/{model}:{method}``)."""
        return f"{self.http_base()}/{path}"

    def request_headers(self) -> dict[str, str]:
        """Hook: the headers that authenticate a call. Default ``Authorization: Bearer {api_key}``
        (none without a key); a family that authenticates otherwise overrides it."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST to :meth:`request_url` with :meth:`request_headers`; the response, through :meth:`check`.
        ``kwargs`` go to httpx (``json=``, ``files=``, ``params=``...)."""
        return self.check(self.client.post(self.request_url(path), headers=self.request_headers(), **kwargs))

    def post_json(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """:meth:`post`, and the answer's JSON object (SERVER if it is not one)."""
        from providers.errors import ErrorCode, ProviderError
        from providers.http import json_body

        data = json_body(self.post(path, **kwargs))
        if not isinstance(data, dict):
            raise ProviderError(f"/{path} answered with JSON that is not an object", code=ErrorCode.SERVER)
        return data

    @contextmanager
    def post_stream(self, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed POST (as :meth:`post`), its status checked before the body is read."""
        with self.client.stream("POST", self.request_url(path), headers=self.request_headers(), **kwargs) as response:
            yield self.check(response)


class EmbeddingModel(BaseModel):
    model_type = "embedding"
    batch_size = 16

    def encode(self, texts: Sequence[str], *, query: bool = False) -> EmbeddingResult:
        """Embed documents, or with ``query`` search queries (in the provider's query mode, where it
        has one). Slices by ``batch_size``; subclasses implement :meth:`_encode_batch` and, for a
        query mode, :meth:`_encode_query_batch`."""
        if not texts:
            raise ValueError("encode needs at least one text")
        one_batch = self._encode_query_batch if query else self._encode_batch
        parts: list[np.ndarray] = []
        usage = Usage()
        for start in range(0, len(texts), self.batch_size):
            result = one_batch(list(texts[start : start + self.batch_size]))
            parts.append(np.asarray(result.vectors, dtype=np.float32))
            usage = usage + result.usage
        return EmbeddingResult(np.concatenate(parts, axis=0), usage)

    def encode_queries(self, text: str) -> EmbeddingResult:
        """Embed one search query (``encode(texts, query=True)`` embeds many in batches)."""
        return self.encode([text], query=True)

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        raise NotImplementedError

    def _encode_query_batch(self, texts: list[str]) -> EmbeddingResult:
        """One batch of queries; a provider without a query mode embeds them as documents."""
        return self._encode_batch(texts)


class ChatModel(BaseModel):
    model_type = "chat"

    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        raise NotImplementedError

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        raise NotImplementedError


class RerankModel(BaseModel):
    model_type = "rerank"

    def similarity(self, query: str, texts: Sequence[str]) -> RerankResult:
        raise NotImplementedError

    def in_batches(
        self, query: str, texts: Sequence[str], size: int, one_batch: Callable[[str, list[str]], RerankResult]
    ) -> RerankResult:
        """``one_batch`` over consecutive slices of at most ``size`` documents, scores merged in the
        documents' order and usage summed: for an API that takes at most ``size`` documents a
        request. A score is the query's against one document, so splitting does not change it."""
        if not texts:
            raise ValueError("similarity needs at least one text")
        parts = [one_batch(query, list(texts[start : start + size])) for start in range(0, len(texts), size)]
        scores = np.concatenate([np.asarray(p.scores, dtype=np.float32) for p in parts])
        return RerankResult(scores, sum((p.usage for p in parts), Usage()))


class Image2TextModel(BaseModel):
    model_type = "image2text"

    def describe(self, image: bytes, mime_type: str = "image/png") -> TextResult:
        return self.describe_with_prompt(image, None, mime_type)

    def describe_with_prompt(self, image: bytes, prompt: str | None, mime_type: str = "image/png") -> TextResult:
        raise NotImplementedError


class Speech2TextModel(BaseModel):
    model_type = "speech2text"

    def transcription(self, audio: bytes, filename: str = "audio.wav") -> TextResult:
        raise NotImplementedError


class TTSModel(BaseModel):
    model_type = "tts"

    def tts(self, text: str, voice: str | None = None, audio_format: str = "mp3") -> AudioResult:
        raise NotImplementedError
