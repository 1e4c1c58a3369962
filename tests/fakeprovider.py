"""A fake OpenAI-compatible provider: a real HTTP/1.1 server speaking OpenAI's wire format.

Used by unit tests, end-to-end tests (a Celery worker in another process calls it over
loopback) and benchmarks. Its answers are deterministic, so a test can check every result:

- embeddings: :func:`fake_vector` of each text (L2-normalized float32), usage :func:`fake_tokens`
- chat: :func:`fake_reply` (streamed word by word with ``stream: true``); when the request
  carries ``tools``, a call of the first tool with ``{"query": <last user text>}``
- rerank: :func:`fake_score` per document; tts: :func:`fake_audio`; transcription: :func:`fake_transcript`

Three ways to run it::

    with FakeProvider(keys={"sk-test"}, dim=8, latency_ms=0) as fp:      # in-process, background thread
        fp.rate_limit(retry_after=2, path="embeddings"); ...; fp.calls; fp.count("embeddings")

    python -m tests.fakeprovider --port 0 --latency-ms 50 --dim 8 --key K   # prints its base URL first

    with spawn_fake_provider(latency_ms=50, keys=["K"]) as fp:           # the above as a subprocess,
        fp.quota(); fp.calls                                               # scripted over HTTP
    RemoteFakeProvider(url)                                                # script any running one

Routes (``/v1`` prefix optional): POST chat/completions, embeddings, rerank, audio/transcriptions,
audio/speech; GET models. Control routes, without auth and not recorded as calls:
``POST /_script`` (a behaviour list, see :class:`Behaviour`), ``GET /_calls``, ``POST /_reset``,
``POST /_config`` (``{"keys": [...] | null, "latency_ms": n, "limits": {"rpm": n, "tpm": n, ...} | null}``).
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONTROL_ROUTES = ("_script", "_calls", "_reset", "_config")
BEHAVIOURS = ("rate_limit", "quota", "server_error", "malformed_json", "hang", "echo_key_in_error", "error")
AUDIO_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav"}
FAKE_AUDIO_PREFIX = b"FAKEAUDIO:"

QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
)
NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>"
    "\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
)


# --------------------------------------------------------------------------- deterministic answers


def fake_vector(text: str, dim: int = 8) -> np.ndarray:
    """The fake's embedding of ``text``: derived from a hash of it, L2-normalized float32."""
    vector: np.ndarray = fake_vectors([text], dim)[0]
    return vector


def fake_vectors(texts: Sequence[str], dim: int = 8) -> np.ndarray:
    """:func:`fake_vector` of each text, as one ``(len(texts), dim)`` float32 array."""
    digests = b"".join(hashlib.shake_256(text.encode("utf-8")).digest(4 * dim) for text in texts)
    raw = np.frombuffer(digests, dtype="<u4").reshape(len(texts), dim)
    vectors = raw / 2**31 - 1.0
    normalized: np.ndarray = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return normalized


def fake_tokens(texts: Iterable[str]) -> int:
    """The token count the fake reports: whitespace-separated words per text, at least 1 each."""
    return sum(max(1, len(text.split())) for text in texts)


def fake_score(query: str, document: str) -> float:
    """The fake's relevance score: the share of the query's words that the document contains."""
    words = set(query.lower().split())
    return len(words & set(document.lower().split())) / len(words) if words else 0.0


def fake_audio(text: str) -> bytes:
    """What the fake's /audio/speech returns for ``text`` (and /audio/transcriptions reads back)."""
    return FAKE_AUDIO_PREFIX + text.encode("utf-8")


def fake_transcript(audio: bytes) -> str:
    """The fake's transcription: the text inside :func:`fake_audio` output, else a description."""
    if audio.startswith(FAKE_AUDIO_PREFIX):
        return audio[len(FAKE_AUDIO_PREFIX) :].decode("utf-8", errors="replace")
    return f"audio of {len(audio)} bytes"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _image_notes(content: Any) -> str:
    """`` [image image/png 1234 bytes]`` for each data-URL image part of a message."""
    notes = ""
    for part in content if isinstance(content, list) else []:
        url = (part.get("image_url") or {}).get("url", "") if isinstance(part, dict) else ""
        match = re.match(r"data:([^;,]+);base64,(.*)", url, re.DOTALL)
        if match:
            notes += f" [image {match[1]} {len(base64.b64decode(match[2]))} bytes]"
    return notes


def _last_user_content(messages: list[dict[str, Any]]) -> Any:
    return next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)


def fake_reply(messages: list[dict[str, Any]]) -> str:
    """The fake's chat answer: the last user message echoed, with a note per image it carried."""
    content = _last_user_content(messages)
    return f"You said: {_content_text(content)}{_image_notes(content)}"


# --------------------------------------------------------------------------- scripting


@dataclass
class Behaviour:
    """A one-shot behaviour applied to the next ``times`` requests (to ``path`` only, if given).

    ``kind`` is one of :data:`BEHAVIOURS`; ``params`` are the keyword arguments of the
    :class:`Scripting` method of the same name. JSON form (for ``POST /_script``):
    ``{"kind": "rate_limit", "times": 1, "path": "embeddings", "retry_after": 2}``.
    """

    kind: str
    times: int = 1
    path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "times": self.times, "path": self.path, **self.params}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Behaviour:
        params = {k: v for k, v in raw.items() if k not in ("kind", "times", "path")}
        if raw.get("kind") not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {raw.get('kind')!r}; known: {', '.join(BEHAVIOURS)}")
        return cls(raw["kind"], int(raw.get("times", 1)), raw.get("path"), params)


@dataclass
class Call:
    """One request the fake received (control routes excluded). ``time`` is ``time.time()`` at arrival."""

    method: str
    path: str
    time: float
    key: str | None = None
    model: str | None = None
    n_inputs: int = 0
    summary: str = ""
    status: int = 0
    behaviour: str | None = None

    @property
    def route(self) -> str:
        return route_of(self.path)


def route_of(path: str) -> str:
    """``/v1/embeddings?x=1`` -> ``embeddings``: how calls and scripted paths are matched. Azure's
    deployment paths (``/openai/deployments/NAME/embeddings``) route like OpenAI's."""
    route = path.split("?", 1)[0].strip("/").removeprefix("v1").strip("/")
    if route.startswith("openai/deployments/"):
        route = route.split("/", 3)[3] if route.count("/") >= 3 else ""
    return route


class Scripting:
    """The scripting and inspection API shared by :class:`FakeProvider` and :class:`RemoteFakeProvider`.

    Every method takes ``times`` (how many requests it applies to) and ``path`` (a route such as
    ``"embeddings"`` or ``"/v1/chat/completions"``; None = any route).
    """

    def script(self, *behaviours: Behaviour) -> None:
        raise NotImplementedError

    @property
    def calls(self) -> list[Call]:
        raise NotImplementedError

    def count(self, path: str | None = None) -> int:
        """How many requests arrived (to ``path`` only, if given)."""
        return sum(1 for call in self.calls if path is None or call.route == route_of(path))

    def rate_limit(
        self,
        retry_after: float | None = 2.0,
        *,
        retry_after_ms: int | None = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """429 ``rate_limit_exceeded`` with ``retry-after`` (and ``retry-after-ms``) headers when given."""
        self.script(
            Behaviour("rate_limit", times, path, {"retry_after": retry_after, "retry_after_ms": retry_after_ms})
        )

    def quota(self, *, times: int = 1, path: str | None = None) -> None:
        """429 ``insufficient_quota`` with OpenAI's own text."""
        self.script(Behaviour("quota", times, path))

    def server_error(self, status: int = 500, *, times: int = 1, path: str | None = None) -> None:
        """500 (OpenAI's server_error body), 502 (a proxy's HTML page), 503 (overloaded) or any 5xx."""
        self.script(Behaviour("server_error", times, path, {"status": status}))

    def malformed_json(self, *, times: int = 1, path: str | None = None) -> None:
        """200 with ``application/json`` that is cut off mid-way."""
        self.script(Behaviour("malformed_json", times, path))

    def hang(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Wait ``seconds`` before answering normally (to trigger client timeouts)."""
        self.script(Behaviour("hang", times, path, {"seconds": seconds}))

    def echo_key_in_error(self, status: int = 400, *, times: int = 1, path: str | None = None) -> None:
        """An error whose body repeats the caller's key verbatim (for scrubbing tests)."""
        self.script(Behaviour("echo_key_in_error", times, path, {"status": status}))

    def error(
        self,
        status: int,
        body: dict[str, Any] | str,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Any answer: ``status``, a JSON (dict) or text body, extra headers."""
        self.script(Behaviour("error", times, path, {"status": status, "body": body, "headers": headers or {}}))


# --------------------------------------------------------------------------- answers


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] | None = None  # a server-sent-event stream instead of ``body``


def json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode())


def openai_error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None) -> Reply:
    return json_reply(status, {"error": {"message": message, "type": type_, "param": param, "code": code}})


def _masked(key: str) -> str:
    return f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}" if len(key) > 8 else "***"


def _scripted_reply(behaviour: Behaviour, model: str, key: str | None) -> Reply | None:
    """The answer a behaviour gives (None for ``hang``, which answers normally after waiting)."""
    p = behaviour.params
    if behaviour.kind == "rate_limit":
        wait = p.get("retry_after")
        message = (
            f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): Limit 3, Used 3, "
            f"Requested 1. Please try again in {wait or 1:g}s. Visit https://platform.openai.com/account/rate-limits "
            "to learn more."
        )
        headers = {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0"}
        if wait is not None:
            headers["retry-after"] = f"{wait:g}"
        if p.get("retry_after_ms") is not None:
            headers["retry-after-ms"] = str(p["retry_after_ms"])
        reply = openai_error(429, message, "requests", "rate_limit_exceeded")
        reply.headers.update(headers)
        return reply
    if behaviour.kind == "quota":
        return openai_error(429, QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota")
    if behaviour.kind == "server_error":
        return _server_error(int(p.get("status", 500)))
    if behaviour.kind == "malformed_json":
        return Reply(200, b'{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.12, ')
    if behaviour.kind == "echo_key_in_error":
        message = f"Invalid request: the key {key} (sent as 'Authorization: Bearer {key}') may not use model {model}."
        return openai_error(int(p.get("status", 400)), message, "invalid_request_error")
    if behaviour.kind == "error":
        body = p.get("body", "")
        reply = (
            json_reply(p["status"], body)
            if isinstance(body, dict)
            else Reply(p["status"], str(body).encode(), "text/plain")
        )
        reply.headers.update(p.get("headers") or {})
        return reply
    return None


def _server_error(status: int) -> Reply:
    if status == 502:
        return Reply(502, BAD_GATEWAY_HTML.encode(), "text/html")
    if status == 503:
        return openai_error(503, "The engine is currently overloaded, please try again later.", "server_error")
    return openai_error(
        status, "The server had an error while processing your request. Sorry about that!", "server_error"
    )


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


# A last user message starting with this is refused, as OpenAI refuses: ``content`` null, the
# explanation in ``refusal`` (``delta.refusal`` pieces when streamed), finish reason "stop".
REFUSE_PREFIX = "REFUSE:"
FAKE_REFUSAL = "I'm sorry, I cannot assist with that request."


def _refused(body: dict[str, Any]) -> bool:
    return _content_text(_last_user_content(body.get("messages") or [])).startswith(REFUSE_PREFIX)


def _chat_answer(body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]], str]:
    """(content, tool_calls, finish_reason) for a chat request."""
    messages = body.get("messages") or []
    if _refused(body):
        return None, [], "stop"
    tools = body.get("tools") or []
    if not tools:
        return fake_reply(messages), [], "stop"
    arguments = json.dumps({"query": _content_text(_last_user_content(messages))})
    call_id = "call_" + hashlib.sha256(arguments.encode()).hexdigest()[:24]
    function = {"name": tools[0]["function"]["name"], "arguments": arguments}
    return None, [{"id": call_id, "type": "function", "function": function}], "tool_calls"


def _chat_usage(body: dict[str, Any], content: str | None, tool_calls: list[dict[str, Any]]) -> dict[str, int]:
    prompt = fake_tokens(_content_text(m.get("content")) for m in body.get("messages") or [])
    answer = FAKE_REFUSAL if _refused(body) else content or "".join(c["function"]["arguments"] for c in tool_calls)
    completion = fake_tokens([answer])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(body: dict[str, Any]) -> Reply:
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return openai_error(400, "'messages' must be a non-empty array.", "invalid_request_error", param="messages")
    content, tool_calls, finish = _chat_answer(body)
    usage = _chat_usage(body, content, tool_calls)
    if body.get("stream"):
        return Reply(
            200, content_type="text/event-stream", events=list(_chunks(body, content, tool_calls, finish, usage))
        )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": FAKE_REFUSAL if _refused(body) else None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return json_reply(
        200,
        {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
            "system_fingerprint": "fp_fake",
        },
    )


def _chunks(
    body: dict[str, Any], content: str | None, tool_calls: list[dict[str, Any]], finish: str, usage: dict[str, int]
) -> Iterator[dict[str, Any]]:
    """OpenAI's ``chat.completion.chunk`` sequence: role, text word by word or tool-call fragments,
    the finish reason, then (with ``stream_options.include_usage``) a usage chunk with no choices."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": _completion_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model"),
    }
    base["system_fingerprint"] = "fp_fake"
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            **extra,
        }

    yield chunk({"role": "assistant", "content": "" if content is not None else None, "refusal": None})
    for word in re.findall(r"\S+\s*", content or ""):
        yield chunk({"content": word})
    if _refused(body):
        for word in re.findall(r"\S+\s*", FAKE_REFUSAL):
            yield chunk({"refusal": word})
    for index, call in enumerate(tool_calls):
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        yield chunk({"tool_calls": [head]})
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), 7):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[start : start + 7]}}]})
    yield chunk({}, finish)
    if include_usage:
        yield {**base, "choices": [], "usage": usage}


def embeddings(body: dict[str, Any], dim: int) -> Reply:
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        return openai_error(
            400,
            "'input' must be a non-empty string or array of non-empty strings.",
            "invalid_request_error",
            param="input",
        )
    dim = int(body.get("dimensions") or dim)
    vectors = fake_vectors(texts, dim).tolist()
    data = [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(vectors)]
    tokens = fake_tokens(texts)
    return json_reply(
        200,
        {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


def rerank(body: dict[str, Any]) -> Reply:
    query, documents = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not isinstance(documents, list) or not documents:
        return openai_error(400, "'query' and a non-empty 'documents' array are required.", "invalid_request_error")
    texts = [d.get("text", "") if isinstance(d, dict) else str(d) for d in documents]
    scored = sorted(range(len(texts)), key=lambda i: -fake_score(query, texts[i]))
    top = scored[: int(body.get("top_n") or len(texts))]
    results = [
        {"index": i, "document": {"text": texts[i]}, "relevance_score": fake_score(query, texts[i])} for i in top
    ]
    usage = {"total_tokens": fake_tokens([query, *texts])}
    return json_reply(
        200, {"id": f"rerank-{uuid.uuid4().hex[:16]}", "model": body.get("model"), "usage": usage, "results": results}
    )


def transcription(fields: dict[str, tuple[str | None, bytes]]) -> Reply:
    if "file" not in fields or "model" not in fields:
        return openai_error(400, "'file' and 'model' are required multipart fields.", "invalid_request_error")
    text = fake_transcript(fields["file"][1])
    audio_tokens, text_tokens = max(1, len(fields["file"][1]) // 100), fake_tokens([text])
    usage = {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
        "output_tokens": text_tokens,
        "total_tokens": audio_tokens + text_tokens,
    }
    return json_reply(200, {"text": text, "usage": usage})


def speech(body: dict[str, Any]) -> Reply:
    if not isinstance(body.get("input"), str) or not body.get("voice"):
        return openai_error(400, "'input' and 'voice' are required.", "invalid_request_error")
    audio_format = body.get("response_format") or "mp3"
    return Reply(200, fake_audio(body["input"]), AUDIO_TYPES.get(audio_format, "application/octet-stream"))


def models() -> Reply:
    names = ("fake-chat", "fake-embedding", "fake-rerank", "fake-whisper", "fake-tts")
    data = [{"id": n, "object": "model", "created": 1700000000, "owned_by": "fakeprovider"} for n in names]
    return json_reply(200, {"object": "list", "data": data})


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) for each part of a ``multipart/form-data`` body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str):
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def _read_body(raw: bytes, content_type: str) -> tuple[Any, bool]:
    """(the parsed body -- JSON, or :func:`parse_multipart` fields -- or None, whether it was malformed)."""
    if content_type.startswith("multipart/form-data"):
        return parse_multipart(content_type, raw), False
    if not raw:
        return None, False
    try:
        return json.loads(raw), False
    except ValueError:
        return None, True


def _request_tokens(route: str, body: Any) -> int:
    """What a request costs against a tokens-per-minute limit: the tokens the fake will report."""
    if not isinstance(body, dict):
        return 1
    if route == "embeddings":
        inputs = body.get("input")
        return fake_tokens([inputs] if isinstance(inputs, str) else [str(t) for t in inputs or []])
    if route == "chat/completions":
        return fake_tokens(_content_text(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))
    return 1


def summarize(route: str, body: Any) -> tuple[str | None, int, str]:
    """(model, number of inputs, a short summary) of a request body, for :class:`Call`."""
    if not isinstance(body, dict):
        return None, 0, ""
    if route == "embeddings":
        inputs = body.get("input")
        n = 1 if isinstance(inputs, str) else len(inputs) if isinstance(inputs, list) else 0
        return body.get("model"), n, f"{n} inputs"
    if route == "rerank":
        documents = body.get("documents") or []
        return body.get("model"), len(documents), f"query={str(body.get('query'))[:40]!r}, {len(documents)} documents"
    if route == "chat/completions":
        messages = body.get("messages") or []
        last = _content_text(messages[-1].get("content")) if messages and isinstance(messages[-1], dict) else ""
        return body.get("model"), len(messages), ("stream: " if body.get("stream") else "") + last[:80]
    if route == "audio/speech":
        return body.get("model"), 1, str(body.get("input"))[:80]
    if route == "audio/transcriptions":
        model = body.get("model", (None, b""))[1].decode("utf-8", errors="replace") or None
        filename, audio = body.get("file", (None, b""))
        return model, 1, f"{filename} ({len(audio)} bytes)"
    return body.get("model"), 0, ""


# --------------------------------------------------------------------------- rate limits


class RateLimits:
    """An OpenAI-style limit per key: token buckets for requests and tokens per minute that hold
    ``burst_seconds`` of the rate and refill continuously; a call over either answers 429
    ``rate_limit_exceeded`` with ``retry-after-ms`` and ``x-ratelimit-*`` headers (on successes
    too when ``advertise``). ``max_concurrency``: more calls at once answer 429 "overloaded",
    as text-embeddings-inference does. Counts what it refused in ``refused``."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        burst_seconds: float = 1.0,
        advertise: bool = True,
        max_concurrency: int | None = None,
    ) -> None:
        self.rpm, self.tpm, self.burst_seconds, self.advertise = rpm, tpm, burst_seconds, advertise
        self.max_concurrency = max_concurrency
        self._lock = threading.Lock()
        self._levels: dict[tuple[str | None, str], tuple[float, float]] = {}  # (key, kind) -> (level, at)
        self.in_flight = 0
        self.max_in_flight = 0
        self.refused = 0

    def _level(self, key: str | None, kind: str, per_minute: int, now: float) -> float:
        capacity = max(1.0, per_minute * self.burst_seconds / 60.0)
        level, at = self._levels.get((key, kind), (capacity, now))
        return min(capacity, level + (now - at) * per_minute / 60.0)

    def admit(self, key: str | None, tokens: int, model: str) -> Reply | None:
        """None when the call may go on (the caller then calls :meth:`done`); else the 429."""
        now = time.monotonic()
        with self._lock:
            if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
                self.refused += 1
                return openai_error(429, "Model is overloaded", "overloaded")
            for kind, limit, cost in (("requests", self.rpm, 1), ("tokens", self.tpm, tokens)):
                if limit is None:
                    continue
                level = self._level(key, kind, limit, now)
                if level < min(cost, max(1.0, limit * self.burst_seconds / 60.0)):
                    self.refused += 1
                    wait = (min(cost, limit) - level) * 60.0 / limit
                    unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
                    reply = openai_error(
                        429,
                        f"Rate limit reached for {model} in organization org-fake on {unit}: Limit {limit}, "
                        f"Used {limit}, Requested {cost}. Please try again in {wait:.3f}s.",
                        kind,
                        "rate_limit_exceeded",
                    )
                    reply.headers.update(
                        {
                            "retry-after-ms": str(max(1, int(wait * 1000))),
                            "retry-after": str(max(1, round(wait))),
                            **self._headers(key, now),
                        }
                    )
                    return reply
            for kind, limit, cost in (("requests", self.rpm, 1), ("tokens", self.tpm, tokens)):
                if limit is not None:
                    self._levels[(key, kind)] = (self._level(key, kind, limit, now) - cost, now)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return None

    def done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _headers(self, key: str | None, now: float) -> dict[str, str]:
        if not self.advertise:
            return {}
        headers: dict[str, str] = {}
        for kind, limit in (("requests", self.rpm), ("tokens", self.tpm)):
            if limit is None:
                continue
            level = self._level(key, kind, limit, now)
            capacity = max(1.0, limit * self.burst_seconds / 60.0)
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(limit - (capacity - level))))
            headers[f"x-ratelimit-reset-{kind}"] = f"{max(0.0, (capacity - level) * 60.0 / limit):.3f}s"
        return headers

    def success_headers(self, key: str | None) -> dict[str, str]:
        with self._lock:
            return self._headers(key, time.monotonic())


# --------------------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: FakeProvider


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the calls are recorded instead
        pass

    def _handle(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = route_of(self.path)
        try:
            reply = fake.control(self.command, route, raw) if route in CONTROL_ROUTES else fake.answer(self, route, raw)
        except Exception as exc:  # noqa: BLE001 -- a bug in the fake: say so, do not drop the connection
            reply = openai_error(500, f"fakeprovider bug: {type(exc).__name__}: {exc}", "server_error")
        try:
            self._send(reply)
        except ConnectionError:  # the client gave up (a timeout test)
            self.close_connection = True

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.events is None:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for event in [*(json.dumps(e, separators=(",", ":")) for e in reply.events), "[DONE]"]:
            data = f"data: {event}\n\n".encode()
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")


class FakeProvider(Scripting):
    """The fake server, run in-process on 127.0.0.1 in a background thread.

    ``keys``: the accepted API keys (None = accept any, even none). ``latency_ms``: added to
    every request. ``dim``: embedding dimension (a request's ``dimensions`` overrides it).
    ``keys`` and ``latency_ms`` may be changed while it runs.
    """

    def __init__(
        self,
        *,
        keys: Iterable[str] | None = None,
        dim: int = 8,
        latency_ms: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.keys: set[str] | None = None if keys is None else set(keys)
        self.dim = dim
        self.latency_ms = latency_ms
        self._address = (host, port)
        self._lock = threading.Lock()
        self._script: list[Behaviour] = []
        self._calls: list[Call] = []
        self.limits: RateLimits | None = None
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> Self:
        self._stopping.clear()
        self._server = _Server(self._address, _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging requests
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the control routes live here)."""
        if self._server is None:
            raise RuntimeError("FakeProvider is not running")
        return f"http://{self._address[0]}:{self._server.server_port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what a provider is configured with."""
        return self.url + "/v1"

    # ---- scripting and inspection

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def reset(self) -> None:
        """Forget the script and the recorded calls."""
        with self._lock:
            self._script.clear()
            self._calls.clear()

    # ---- serving

    def _take(self, route: str) -> Behaviour | None:
        with self._lock:
            for behaviour in self._script:
                if behaviour.path is None or route_of(behaviour.path) == route:
                    behaviour.times -= 1
                    if behaviour.times <= 0:
                        self._script.remove(behaviour)
                    return behaviour
        return None

    def _auth_error(self, key: str | None) -> Reply | None:
        if self.keys is None or key in self.keys:
            return None
        if not key:
            return openai_error(401, NO_KEY_MESSAGE, "invalid_request_error")
        message = (
            f"Incorrect API key provided: {_masked(key)}. "
            "You can find your API key at https://platform.openai.com/account/api-keys."
        )
        return openai_error(401, message, "invalid_request_error", "invalid_api_key")

    def answer(self, handler: BaseHTTPRequestHandler, route: str, raw: bytes) -> Reply:
        """Record the call, wait the latency, then: 401, a scripted behaviour, or the normal answer."""
        content_type = handler.headers.get("Content-Type") or ""
        body, bad_json = _read_body(raw, content_type)
        key = _bearer(handler.headers.get("Authorization")) or handler.headers.get("api-key")  # OpenAI / Azure
        call = Call(handler.command, handler.path, time.time(), key, *summarize(route, body))
        with self._lock:
            self._calls.append(call)
        reply = self._auth_error(key) or self._scripted(call, route, key)
        if reply is None and bad_json:
            reply = openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        limits = self.limits
        if reply is None and limits is not None:
            reply = limits.admit(key, _request_tokens(route, body), call.model or "fake-model")
            if reply is None:  # admitted: the call is in flight for its latency
                try:
                    self._wait_latency()
                    reply = self._route(handler.command, route, body)
                finally:
                    limits.done()
                reply.headers.update(limits.success_headers(key))
                call.status = reply.status
                return reply
        self._wait_latency()
        if reply is None:
            reply = self._route(handler.command, route, body)
        call.status = reply.status
        return reply

    def _wait_latency(self) -> None:
        if self.latency_ms:
            self._stopping.wait(self.latency_ms / 1000.0)

    def set_limits(self, **config: Any) -> None:
        """Enforce :class:`RateLimits` (``rpm``, ``tpm``, ``burst_seconds``, ``advertise``,
        ``max_concurrency``); no arguments: none."""
        self.limits = RateLimits(**config) if config else None

    def _scripted(self, call: Call, route: str, key: str | None) -> Reply | None:
        behaviour = self._take(route)
        if behaviour is None:
            return None
        call.behaviour = behaviour.kind
        if behaviour.kind == "hang":
            self._stopping.wait(float(behaviour.params.get("seconds", 0)))
        return _scripted_reply(behaviour, call.model or "fake-model", key)

    def _route(self, method: str, route: str, body: Any) -> Reply:
        body = body if isinstance(body, dict) else {}
        if method == "GET" and route == "models":
            return models()
        if method == "POST" and route == "chat/completions":
            return chat_completion(body)
        if method == "POST" and route == "embeddings":
            return embeddings(body, self.dim)
        if method == "POST" and route == "rerank":
            return rerank(body)
        if method == "POST" and route == "audio/transcriptions":
            return transcription(body)
        if method == "POST" and route == "audio/speech":
            return speech(body)
        return openai_error(404, f"Invalid URL ({method} /v1/{route})", "invalid_request_error")

    def control(self, method: str, route: str, raw: bytes) -> Reply:
        """The ``/_script``, ``/_calls``, ``/_reset`` and ``/_config`` routes."""
        if method == "GET" and route == "_calls":
            return json_reply(200, {"calls": [asdict(c) for c in self.calls]})
        if method != "POST":
            return openai_error(405, f"use POST for /{route}", "invalid_request_error")
        payload = json.loads(raw or b"{}")
        if route == "_script":
            items = payload.get("behaviours", []) if isinstance(payload, dict) else payload
            try:
                self.script(*(Behaviour.from_json(item) for item in items))
            except (ValueError, TypeError, AttributeError) as exc:
                return openai_error(400, str(exc), "invalid_request_error")
        elif route == "_reset":
            self.reset()
        elif route == "_config":
            if "keys" in payload:
                self.keys = None if payload["keys"] is None else set(payload["keys"])
            if "latency_ms" in payload:
                self.latency_ms = float(payload["latency_ms"])
            if "limits" in payload:
                self.set_limits(**(payload["limits"] or {}))
        return json_reply(200, {"ok": True})


# --------------------------------------------------------------------------- out of process


class RemoteFakeProvider(Scripting):
    """Scripts and inspects a fake running elsewhere (another process) through its control routes."""

    def __init__(self, url: str, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        self._client = client or httpx.Client(timeout=10.0)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def script(self, *behaviours: Behaviour) -> None:
        response = self._client.post(f"{self.url}/_script", json={"behaviours": [b.to_json() for b in behaviours]})
        response.raise_for_status()

    @property
    def calls(self) -> list[Call]:
        response = self._client.get(f"{self.url}/_calls")
        response.raise_for_status()
        return [Call(**raw) for raw in response.json()["calls"]]

    def reset(self) -> None:
        self._client.post(f"{self.url}/_reset").raise_for_status()

    def configure(self, **settings: Any) -> None:
        """``keys=[...]`` (or None: accept any), ``latency_ms=n`` and/or ``limits={...}`` (see
        :class:`RateLimits`; None: none) on the running server."""
        self._client.post(f"{self.url}/_config", json=settings).raise_for_status()

    def close(self) -> None:
        self._client.close()


def command(*, port: int = 0, latency_ms: float = 0.0, dim: int = 8, keys: Iterable[str] = ()) -> list[str]:
    """The command line that runs the fake as its own process."""
    args = [sys.executable, "-m", "tests.fakeprovider", "--port", str(port), "--latency-ms", str(latency_ms)]
    args += ["--dim", str(dim)]
    for key in keys:
        args += ["--key", key]
    return args


@contextmanager
def spawn_fake_provider(
    *, port: int = 0, latency_ms: float = 0.0, dim: int = 8, keys: Iterable[str] = ()
) -> Iterator[RemoteFakeProvider]:
    """Run the fake as a subprocess for the duration of the block; yields its remote control."""
    process = subprocess.Popen(
        command(port=port, latency_ms=latency_ms, dim=dim, keys=keys), cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline().strip()
        if not first_line.startswith("http"):
            raise RuntimeError(f"fakeprovider did not start (exit code {process.poll()}, said {first_line!r})")
        remote = RemoteFakeProvider(first_line)
        try:
            yield remote
        finally:
            remote.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeprovider", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument("--dim", type=int, default=8, help="embedding dimension")
    parser.add_argument("--key", action="append", dest="keys", help="an accepted API key (repeat; none = accept any)")
    args = parser.parse_args(argv)
    fake = FakeProvider(keys=args.keys, dim=args.dim, latency_ms=args.latency_ms, host=args.host, port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fake.start()
    print(fake.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
