"""Reading an OpenAI batch input file as a stream of job items.

Each line is ``{"custom_id", "method": "POST", "url": <the batch's endpoint>, "body": {...}}``
with ``body.model`` a ``NAME@FACTORY`` that every line shares (a batch is one job of one
model). Embeddings lines carry one text in ``body.input``; chat lines carry ``messages`` and
the usual sampling fields. A bad line raises InvalidRequest naming the line, and since the
producer inserts items inside one transaction, nothing of the batch is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from conf.errors import InvalidRequest
from models.jobs import ItemRow

MODEL_TYPES = {"/v1/embeddings": "embedding", "/v1/chat/completions": "chat"}
EMBEDDING_FIELDS = {"model", "input", "encoding_format", "user"}
CHAT_GEN_CONF = {
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "seed",
}
CHAT_FIELDS = {"model", "messages", "tools", "tool_choice", "user", "n", "stream"} | CHAT_GEN_CONF


@dataclass
class BatchInput:
    model: str
    encoding_format: str
    items: Iterator[ItemRow]


def read_batch(fh: IO[bytes], endpoint: str) -> BatchInput:
    """The first line's model (every line must name it) and the items, read lazily."""
    lines = _lines(fh)
    try:
        lineno, first = next(lines)
    except StopIteration:
        raise InvalidRequest("the input file has no request lines") from None
    body = _request(first, lineno, endpoint)
    model = body["model"]
    encoding = body.get("encoding_format", "float")

    def items() -> Iterator[ItemRow]:
        yield _item(first, body, lineno, endpoint)
        for n, obj in lines:
            line_body = _request(obj, n, endpoint)
            if line_body["model"] != model:
                raise InvalidRequest(
                    f"line {n}: every request in a batch must use one model; line {lineno} uses "
                    f"{model!r}, this one {line_body['model']!r}"
                )
            if endpoint == "/v1/embeddings" and line_body.get("encoding_format", "float") != encoding:
                raise InvalidRequest(f"line {n}: every request in a batch must use one encoding_format")
            yield _item(obj, line_body, n, endpoint)

    return BatchInput(model, encoding, items())


def _lines(fh: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, raw in enumerate(fh, start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise InvalidRequest(f"line {lineno}: not valid UTF-8") from None
        if not text:
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise InvalidRequest(f"line {lineno}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
        if not isinstance(obj, dict):
            raise InvalidRequest(f"line {lineno}: expected a JSON object")
        yield lineno, obj


def _request(obj: dict[str, Any], n: int, endpoint: str) -> dict[str, Any]:
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 256:
        raise InvalidRequest(f'line {n}: "custom_id" must be a string of 1 to 256 characters')
    if obj.get("method", "POST") != "POST":
        raise InvalidRequest(f'line {n}: "method" must be POST')
    if obj.get("url", endpoint) != endpoint:
        raise InvalidRequest(f'line {n}: "url" is {str(obj.get("url"))[:80]!r} but the batch\'s endpoint is {endpoint}')
    body = obj.get("body")
    if not isinstance(body, dict):
        raise InvalidRequest(f'line {n}: "body" must be an object')
    if not isinstance(body.get("model"), str) or "@" not in body["model"]:
        raise InvalidRequest(f"line {n}: body.model must be NAME@FACTORY, e.g. text-embedding-3-small@OpenAI")
    allowed = EMBEDDING_FIELDS if endpoint == "/v1/embeddings" else CHAT_FIELDS
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(f"line {n}: body.{unknown[0]} is not supported (supported: {', '.join(sorted(allowed))})")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise InvalidRequest(f"line {n}: body.encoding_format must be float or base64")
    return body


def _item(obj: dict[str, Any], body: dict[str, Any], n: int, endpoint: str) -> ItemRow:
    custom_id = obj["custom_id"]
    if endpoint == "/v1/embeddings":
        text = body.get("input")
        if isinstance(text, list) and len(text) == 1:
            text = text[0]
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest(f"line {n}: body.input must be one non-empty string (one text per request line)")
        return ItemRow(custom_id=custom_id, text=text)
    return ItemRow(custom_id=custom_id, payload=_chat_payload(body, n))


def _chat_payload(body: dict[str, Any], n: int) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise InvalidRequest(f'line {n}: body.messages must be a non-empty list of {{"role", "content"}} objects')
    if body.get("stream"):
        raise InvalidRequest(f"line {n}: body.stream is not supported in a batch")
    if body.get("n", 1) != 1:
        raise InvalidRequest(f"line {n}: body.n must be 1")
    system = [m.get("content") for m in messages if m.get("role") in ("system", "developer")]
    if not all(isinstance(s, str) for s in system):
        raise InvalidRequest(f"line {n}: a system message's content must be a string")
    payload: dict[str, Any] = {"messages": [m for m in messages if m.get("role") not in ("system", "developer")]}
    if not payload["messages"]:
        raise InvalidRequest(f"line {n}: body.messages needs a user message")
    if system:
        payload["system"] = "\n\n".join(system)
    gen_conf = {k: v for k, v in body.items() if k in CHAT_GEN_CONF}
    if gen_conf:
        payload["gen_conf"] = gen_conf
    if body.get("tools"):
        payload["tools"] = body["tools"]
    return payload
